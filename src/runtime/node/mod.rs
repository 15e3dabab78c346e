//! A [`Node`]: everything one proxy runs, on a thread pool of its own that
//! can live inside another process (the daemon `anytund`, or the Asterisk
//! module): its own tokio runtime (named threads, a small configurable
//! number), the UDP relay ([`ProxyRuntime`]), and, when it is a member of
//! an anypsp network, the peer links ([`Peers`]) and the task that drives
//! replication ([`psp`]).
//!
//! No process-global state and no signal handlers: the host decides when to
//! stop, and [`Node::stop`] stops every task and joins every thread the node
//! started. A node with peers pulls the tables from them before it serves
//! UDP (docs/anypsp-protocol.md section 16): it starts the links, waits until
//! it has reconciled with every peer or until the startup timeout, and only
//! then binds (when deferred) and serves. [`Readiness`] says when a route
//! may be announced.

pub mod mux;
mod psp;

use super::peers::{MembershipChange, Peers, PeersConfig, PeersError, PeersHandle};
use super::proxy::{AfterLock, BoundSockets, ProxyRuntime, SharedCore};
use super::udp::BindOptions;
use super::RuntimeError;
use crate::crypto::SecretKey;
use crate::proxy::Proxy;
use crate::session::ProxyId;
use crate::sync::link::{LinkConfig, LocalNode};
use crate::sync::members::{Member, Membership, MembershipError};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// Threads of a node's runtime.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Worker threads (at least 1).
    pub worker_threads: usize,
    /// Thread name (Linux shows 15 bytes of it).
    pub thread_name: String,
    /// How long [`Node::stop`] waits for its tasks to end by themselves
    /// before it aborts them; it then waits for every thread, however long
    /// a blocking call on one takes, and warns when that passed this too.
    pub stop_timeout: Duration,
    /// Most sessions (or calls) a resync lists per hold of the core lock
    /// ([`RESYNC_CHUNK`] by default; tests make it small so that a pass
    /// spans many turns of the sync task).
    pub resync_chunk: usize,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            worker_threads: 2,
            thread_name: "anytun-node".into(),
            stop_timeout: Duration::from_secs(5),
            resync_chunk: RESYNC_CHUNK,
        }
    }
}

/// Where the node's UDP sockets come from.
pub enum Udp {
    /// Bound already ([`Node::bind_udp`]): a taken port was refused before
    /// anything else was created.
    Bound(BoundSockets),
    /// Bound only once the node is synced, so that with `SO_REUSEPORT` the
    /// kernel sends it no client before it holds the tables.
    Deferred {
        /// The addresses.
        listen: Vec<SocketAddr>,
        /// Socket options.
        opts: BindOptions,
    },
}

/// Membership of an anypsp network.
pub struct SyncSetup {
    /// This node's static key for peer links.
    pub node_key: SecretKey,
    /// TCP address to accept peer links on.
    pub listen: SocketAddr,
    /// The peers (node id, address, public key).
    pub peers: Vec<Member>,
    /// Key of the sync engine's range fingerprints ([`fingerprint_key`]).
    pub fp_key: [u8; 32],
    /// Longest wait for peers before serving anyway.
    pub startup_timeout: Duration,
    /// Not yet synced and no link to any configured peer for this long
    /// (since start, or since the last link went down): the node counts as
    /// ready alone ([`Readiness::solo`]), so a lone survivor that restarts
    /// announces instead of keeping the network dark
    /// (docs/anypsp-protocol.md 17.3).
    pub solo_grace: Duration,
    /// A peer link down this long: its clients are adopted
    /// (`Proxy::peer_down`).
    pub peer_detect: Duration,
    /// Link timers.
    pub link: LinkConfig,
    /// Most replicated items applied per hold of the core lock
    /// ([`APPLY_BATCH`] by default).
    pub apply_batch: usize,
    /// Where subscriber changes replicated from peers go (the host writes
    /// them into its store, then hands the proxy its new `Subscribers`);
    /// `None`: they are dropped (logged).
    pub subscribers: Option<mpsc::Sender<psp::RemoteSubscriber>>,
}

pub use psp::RemoteSubscriber;

/// Label of the fingerprint key's derivation (docs/anypsp-protocol.md 16.2).
pub const FP_KEY_LABEL: &[u8] = b"anypsp/1 fingerprint key";

/// The sync engine's fingerprint key, derived from the network's secret
/// key: keyed BLAKE2s-256 with the network private key as key and
/// [`FP_KEY_LABEL`] as message. Every proxy of a network holds that key,
/// so they agree on it without configuring another secret; the label keeps
/// it apart from every other use of the key, and it reveals nothing of it.
pub fn fingerprint_key(network_key: &SecretKey) -> [u8; 32] {
    use blake2::digest::{Mac, Update};
    let mut mac =
        <blake2::Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(network_key.as_bytes())
            .expect("32-byte key fits BLAKE2s");
    Update::update(&mut mac, FP_KEY_LABEL);
    mac.finalize().into_bytes().into()
}

/// Whether the node may be announced (docs/anypsp-protocol.md 16.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// It serves UDP.
    pub serving: bool,
    /// Its tables are reconciled with every peer it is linked to (always
    /// true without peers).
    pub synced: bool,
    /// Peers configured.
    pub peers: usize,
    /// Peers whose link is up.
    pub peers_up: usize,
    /// Peers reconciled with.
    pub peers_synced: usize,
    /// Ready alone: never synced, and no configured peer was reachable for
    /// [`SyncSetup::solo_grace`]. Stays set once set (as `synced` does):
    /// peers that come back pull this node's table.
    pub solo: bool,
    /// It failed to start serving (the UDP bind failed): why.
    pub failed: Option<String>,
}

impl Readiness {
    /// Healthy and synced (or alone past the solo grace): announce the
    /// route.
    pub fn ready(&self) -> bool {
        self.serving && (self.synced || self.solo) && self.failed.is_none()
    }
}

/// Counters of the node's own plumbing (not the core's).
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Link messages with an unknown channel byte (dropped).
    pub unknown_channel: AtomicU64,
    /// Proxy events not handed to the sync task because its channel was
    /// full (the sync task resyncs instead).
    pub events_overflowed: AtomicU64,
    /// Resyncs started: passes over the proxy's tables (after an
    /// overflow or an engine reset), each in chunks.
    pub resyncs: AtomicU64,
    /// Resync passes that listed everything (not started over).
    pub resyncs_done: AtomicU64,
    /// Chunks of those passes: holds of the core lock to list at most
    /// [`RESYNC_CHUNK`] sessions (or calls) each.
    pub resync_chunks: AtomicU64,
    /// Longest hold of the core lock to list one resync chunk,
    /// microseconds.
    pub resync_hold_max_us: AtomicU64,
    /// Proxy peer messages the link shell refused (queue full, unknown
    /// peer).
    pub peer_send_failed: AtomicU64,
    /// Proxy peer messages received before the node served UDP (dropped).
    pub peer_messages_early: AtomicU64,
    /// Times a peer's link stayed down past `peer_detect`.
    pub peers_declared_down: AtomicU64,
    /// Replicated items applied to the core.
    pub applied: AtomicU64,
    /// Replicated sessions held back because the send-epoch lease was
    /// spent (applied once it is renewed).
    pub apply_waited_for_lease: AtomicU64,
    /// Lock holds used to apply them.
    pub apply_batches: AtomicU64,
    /// Longest hold of the core lock to apply a batch, microseconds.
    pub apply_hold_max_us: AtomicU64,
    /// Longest turn of the sync task without yielding, microseconds (the
    /// time one worker thread was taken from the voice path).
    pub turn_max_us: AtomicU64,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The runtime's threads could not be started.
    #[error("cannot start the node's threads: {0}")]
    Runtime(std::io::Error),
    /// [`Node::start`] was called twice.
    #[error("the node is already started")]
    AlreadyStarted,
    /// A UDP socket could not be bound.
    #[error(transparent)]
    Bind(#[from] RuntimeError),
    /// The peer links could not start (their listener).
    #[error(transparent)]
    Peers(#[from] PeersError),
    /// The membership is invalid.
    #[error("membership: {0}")]
    Membership(#[from] MembershipError),
    /// The proxy id is reserved.
    #[error("proxy id {0} is reserved")]
    BadId(u16),
    /// [`Node::set_peers`] on a node that is not a member of an anypsp
    /// network, or that has stopped.
    #[error("the node has no peer links (no [sync], or stopped)")]
    NotMember,
}

/// What [`Node::stop`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Every task ended within the stop timeout (every thread is joined
    /// anyway; false says the stop took longer than asked).
    pub joined: bool,
    /// Peer-link tasks joined.
    pub link_tasks: usize,
}

/// Most proxy events in flight between the core and the sync task; beyond
/// it events are dropped and the sync task rescans (resync).
pub const EVENT_CHANNEL: usize = 65_536;

/// Most sessions (then calls) listed per hold of the core lock by a
/// resync (`Proxy::served_events_from`), so that a resync of any size holds
/// the voice path for one chunk at a time.
pub const RESYNC_CHUNK: usize = 256;

/// Default of [`SyncSetup::apply_batch`]: most replicated items applied per
/// hold of the core lock, so that a bulk sync never holds the voice path
/// for long.
pub const APPLY_BATCH: usize = 256;

/// Set when proxy events were lost on the way to the sync task (or in the
/// core's own queue): the sync task must compare everything.
#[derive(Default)]
struct ResyncFlag {
    set: AtomicBool,
    notify: Notify,
}

impl ResyncFlag {
    fn raise(&self) {
        if !self.set.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }
    fn take(&self) -> bool {
        self.set.swap(false, Ordering::AcqRel)
    }
}

/// Reports the host's subscriber changes to the node's sync task.
#[derive(Clone)]
pub struct LocalSubscribers(mpsc::Sender<psp::Local>);

impl LocalSubscribers {
    /// A subscriber (name, key) was added (`live`) or revoked in the
    /// host's store: replicate it. False if the sync task's channel is full
    /// (report it again later) or the node stopped.
    pub fn changed(
        &self,
        name: crate::call::Name,
        key: crate::crypto::PublicKey,
        live: bool,
    ) -> bool {
        self.0
            .try_send(psp::Local::Subscriber(name, key, live))
            .is_ok()
    }

    /// A reporter whose changes go nowhere (tests of the host side).
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self(mpsc::channel(1).0)
    }
}

/// One proxy and its threads.
pub struct Node {
    rt: Option<tokio::runtime::Runtime>,
    opts: NodeOptions,
    stats: Arc<NodeStats>,
    ready_tx: watch::Sender<Readiness>,
    serving: Arc<OnceLock<Arc<ProxyRuntime>>>,
    core: Option<Arc<SharedCore>>,
    peers: Option<PeersHandle>,
    peer_addr: Option<SocketAddr>,
    stop_tx: watch::Sender<bool>,
    main: Option<tokio::task::JoinHandle<usize>>,
    /// Local changes into the sync task (members only).
    locals: Option<mpsc::Sender<psp::Local>>,
    /// New peer lists into the sync task (members only).
    reloads: Option<mpsc::Sender<psp::Reload>>,
}

impl Node {
    /// Starts the node's threads; nothing runs on them yet.
    pub fn new(opts: NodeOptions) -> Result<Self, NodeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.max(1))
            .thread_name(opts.thread_name.clone())
            // spawn_blocking threads (the SQLite store) are few and short.
            .max_blocking_threads(4)
            .enable_all()
            .build()
            .map_err(NodeError::Runtime)?;
        Ok(Self {
            rt: Some(rt),
            opts,
            stats: Arc::default(),
            ready_tx: watch::channel(Readiness::default()).0,
            serving: Arc::default(),
            core: None,
            peers: None,
            peer_addr: None,
            stop_tx: watch::channel(false).0,
            main: None,
            locals: None,
            reloads: None,
        })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime lives until stop")
    }

    /// A handle on the node's runtime (to run host tasks on its threads).
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt().handle().clone()
    }

    /// Binds UDP sockets on the node's runtime (see [`Udp::Bound`]).
    pub fn bind_udp(
        &self,
        listen: &[SocketAddr],
        opts: BindOptions,
    ) -> Result<BoundSockets, RuntimeError> {
        let _guard = self.rt().enter();
        BoundSockets::bind(listen, opts)
    }

    /// Starts `core`: the peer links and the sync task at once (when `sync`
    /// is given), UDP once synced or after the startup timeout. The node
    /// id is the core's proxy id. Returns once the links are listening;
    /// watch [`readiness`](Self::readiness) for the rest.
    pub fn start(
        &mut self,
        core: Proxy,
        udp: Udp,
        sync: Option<SyncSetup>,
    ) -> Result<(), NodeError> {
        if self.main.is_some() {
            return Err(NodeError::AlreadyStarted);
        }
        let handle = self.handle();
        let id = core.proxy_id();
        let resync = Arc::new(ResyncFlag::default());
        let mut psp_parts = None;
        let mut subscribers = None;
        let core = match sync {
            None => SharedCore::new(core, None),
            Some(s) => {
                let local = Member {
                    node: id,
                    address: s.listen,
                    public_key: s.node_key.public(),
                    region: String::new(),
                    failure_domain: String::new(),
                    failover: Vec::new(),
                    revoked: false,
                };
                let members = Membership::new(local, s.peers.clone())?;
                let mut pc = PeersConfig::new(s.listen);
                pc.link = s.link.clone();
                let (peers, link_events) =
                    Peers::start(&handle, LocalNode::new(id, s.node_key.clone()), members, pc)?;
                let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL);
                self.locals = Some(ev_tx.clone());
                subscribers = s.subscribers.clone();
                let after = after_lock(ev_tx, resync.clone(), self.stats.clone());
                let mut core = core;
                core.set_peers(s.peers.iter().filter(|m| !m.revoked).map(|m| m.node));
                let shared = SharedCore::new(core, Some(after));
                self.peers = Some(peers.handle());
                self.peer_addr = Some(peers.local_addr());
                let (reload_tx, reload_rx) = mpsc::channel(4);
                self.reloads = Some(reload_tx);
                psp_parts = Some((s, peers, link_events, ev_rx, reload_rx));
                shared
            }
        };
        self.core = Some(core.clone());
        let ctx = psp::Ctx {
            id,
            core,
            stats: self.stats.clone(),
            ready: self.ready_tx.clone(),
            serving: self.serving.clone(),
            stop: self.stop_tx.subscribe(),
            resync,
            resync_chunk: self.opts.resync_chunk.max(1),
            subscribers,
        };
        self.main = Some(handle.spawn(psp::main(ctx, udp, psp_parts)));
        Ok(())
    }

    /// Applies a new peer list (a configuration reload; docs/anypsp-link.md
    /// 3.2) without a restart: peers left out or revoked have their link
    /// closed (`removed`) and are refused from then on (counted as
    /// `unknown_peer` or `revoked`), their clients are adopted at once
    /// (`Proxy::peer_down`); new peers are dialed and accepted; a peer
    /// whose address or key changed is linked anew; unchanged peers keep
    /// their links. The node's own id, key and listen address stay.
    /// Returns what changed once the sync task has applied it.
    ///
    /// # Errors
    /// [`NodeError::NotMember`] without `[sync]` or once stopped;
    /// [`NodeError::Membership`] for an invalid list (nothing changed).
    pub async fn set_peers(&self, peers: Vec<Member>) -> Result<MembershipChange, NodeError> {
        let rx = self.ask_reload(peers).await?;
        rx.await.map_err(|_| NodeError::NotMember)?
    }

    /// As [`set_peers`](Self::set_peers), blocking the calling thread
    /// (which must not be one of a tokio runtime's: the C ABI's caller).
    ///
    /// # Errors
    /// As [`set_peers`](Self::set_peers).
    pub fn set_peers_blocking(&self, peers: Vec<Member>) -> Result<MembershipChange, NodeError> {
        let tx = self.reloads.as_ref().ok_or(NodeError::NotMember)?;
        let (done, rx) = tokio::sync::oneshot::channel();
        tx.blocking_send(psp::Reload { peers, done })
            .map_err(|_| NodeError::NotMember)?;
        rx.blocking_recv().map_err(|_| NodeError::NotMember)?
    }

    async fn ask_reload(
        &self,
        peers: Vec<Member>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<MembershipChange, NodeError>>, NodeError>
    {
        let tx = self.reloads.as_ref().ok_or(NodeError::NotMember)?;
        let (done, rx) = tokio::sync::oneshot::channel();
        tx.send(psp::Reload { peers, done })
            .await
            .map_err(|_| NodeError::NotMember)?;
        Ok(rx)
    }

    /// Where the host reports its store's subscriber changes, to be
    /// replicated; `None` for a node without peers.
    pub fn local_subscribers(&self) -> Option<LocalSubscribers> {
        self.locals.clone().map(LocalSubscribers)
    }

    /// The core, shared (for host tasks: subscriber updates, status).
    pub fn shared_core(&self) -> Option<Arc<SharedCore>> {
        self.core.clone()
    }

    /// Whether the node replicates (it has a `[sync]` membership).
    pub fn is_member(&self) -> bool {
        self.locals.is_some()
    }

    /// The address peer links are accepted on (with the real port).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The UDP addresses served, once serving.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.serving
            .get()
            .map(|r| r.local_addrs())
            .unwrap_or_default()
    }

    /// Readiness now; `subscribe` it to wait for changes.
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.ready_tx.subscribe()
    }

    /// Runs `f` on the core (status, subscriber updates). `None` before
    /// [`start`](Self::start).
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Proxy) -> R) -> Option<R> {
        self.core.as_ref().map(|c| c.with_core(f))
    }

    /// The core's counters as of its last lock hold (no lock taken).
    pub fn snapshot(&self) -> Option<crate::metrics::Snapshot> {
        self.core.as_ref().map(|c| c.snapshot())
    }

    /// The metrics board (serve it with
    /// [`metrics::http::serve`](crate::metrics::http::serve)): the core's
    /// counters, the sync state, readiness.
    pub fn metrics_board(&self) -> Option<Arc<crate::metrics::Metrics>> {
        self.core.as_ref().map(|c| c.metrics_board())
    }

    /// The UDP runtime, once serving (for metrics).
    pub fn proxy_runtime(&self) -> Option<Arc<ProxyRuntime>> {
        self.serving.get().cloned()
    }

    /// The peer links (status, counters), when a member of a network.
    pub fn peers(&self) -> Option<&PeersHandle> {
        self.peers.as_ref()
    }

    /// The node's plumbing counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Stops every task (links close with `shutdown`) and joins every
    /// thread the node started. Must not be called from one of the node's
    /// own threads or inside another tokio runtime's task.
    pub fn stop(mut self) -> StopReport {
        let _ = self.stop_tx.send(true);
        let rt = self.rt.take().expect("runtime lives until stop");
        let mut link_tasks = 0;
        let mut joined = true;
        if let Some(main) = self.main.take() {
            match rt.block_on(async { tokio::time::timeout(self.opts.stop_timeout, main).await }) {
                Ok(Ok(n)) => link_tasks = n,
                Ok(Err(_)) => log::error!("node task panicked"),
                Err(_) => {
                    log::error!(
                        "node tasks did not stop within {:?}",
                        self.opts.stop_timeout
                    );
                    joined = false;
                }
            }
        }
        // Everything else (UDP tasks) is aborted here.
        self.serving = Arc::default();
        self.core = None;
        if !join_runtime(rt, self.opts.stop_timeout) {
            joined = false;
        }
        StopReport { joined, link_tasks }
    }
}

/// Shuts `rt` down and joins every worker and blocking thread it started,
/// waiting as long as a blocking call on one of them takes (the subscriber
/// store's statements give up after their busy timeout): a host that
/// unloads the code the threads run must never be left with one. Never
/// `shutdown_timeout`, which returns with the threads still running.
/// False (and a warning) when that took longer than `warn_after`.
fn join_runtime(rt: tokio::runtime::Runtime, warn_after: Duration) -> bool {
    let started = std::time::Instant::now();
    // Dropping the runtime aborts its tasks and joins all its threads.
    drop(rt);
    let took = started.elapsed();
    if took >= warn_after {
        log::warn!("the node's threads took {took:?} to end (a blocking call was running)");
        return false;
    }
    true
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(rt) = self.rt.take() {
            join_runtime(rt, self.opts.stop_timeout);
        }
    }
}

/// The after-lock hook of a member: proxy events and peer messages go to
/// the sync task in the order the core made them (when its channel is
/// full: a resync for events; a peer message is lost and counted). Runs
/// under the core lock: nothing in it waits.
fn after_lock(
    events: mpsc::Sender<psp::Local>,
    resync: Arc<ResyncFlag>,
    stats: Arc<NodeStats>,
) -> AfterLock {
    Box::new(move |p: &mut Proxy| {
        if p.resync_needed() {
            // The core's own queue overflowed: events are missing.
            resync.raise();
        }
        let push = |l| {
            if events.try_send(l).is_err() {
                stats.events_overflowed.fetch_add(1, Ordering::Relaxed);
                resync.raise();
            }
        };
        while let Some(e) = p.poll_event() {
            push(psp::Local::Event(e));
        }
        while let Some((k, ts)) = p.poll_handshake_change() {
            push(psp::Local::Handshake(k, ts));
        }
        // After the events of this hold: a peer learns a change before the
        // peer message it caused (a call before the Invite handed to it).
        while let Some((to, bytes)) = p.poll_peer_transmit() {
            if events.try_send(psp::Local::Peer(to, bytes)).is_err() {
                stats.peer_send_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Milliseconds since the Unix epoch (the sync engine's clock).
pub(crate) fn unix_ms() -> u64 {
    u64::try_from(super::unix_nanos() / 1_000_000).unwrap_or(u64::MAX)
}

/// The proxy id a node runs as (its node id).
pub fn node_id(id: u16) -> Result<ProxyId, NodeError> {
    ProxyId::new(id).ok_or(NodeError::BadId(id))
}
