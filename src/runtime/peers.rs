//! The tokio shell of the anypsp peer links: dials every configured peer,
//! accepts inbound links, reconnects with backoff, keeps one link per peer
//! (the tie-break of [`prefer_new`]), and a bounded outgoing queue per peer.
//!
//! The sync engine hands it opaque messages per peer ([`PeersHandle::send`],
//! which never blocks: a full queue is reported so that the engine falls
//! back to anti-entropy for that peer) and receives [`PeerEvent`]s on a
//! bounded channel. A slow or dead peer fills only its own queue.
//!
//! It runs on the tokio runtime it is given and [`Peers::shutdown`] joins
//! every task it started, so it can live inside another process.
//! Protocol: docs/anypsp-link.md.

use crate::session::ProxyId;
use crate::sync::link::{prefer_new, Link, LinkConfig, LinkError, LinkEvent, LinkInfo, LocalNode};
use crate::sync::members::{Member, Membership};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Settings of the peer-link shell.
#[derive(Clone, Debug)]
pub struct PeersConfig {
    /// TCP address to accept peer links on.
    pub listen: SocketAddr,
    /// Timers and limits of each link.
    pub link: LinkConfig,
    /// Most messages queued for one peer.
    pub queue_messages: usize,
    /// Most bytes queued for one peer.
    pub queue_bytes: usize,
    /// Capacity of the event channel to the engine (messages wait in TCP
    /// buffers, and then in the peer's queue, when it is full).
    pub events_capacity: usize,
    /// First reconnect delay; doubles per failed attempt ...
    pub backoff_min: Duration,
    /// ... up to this.
    pub backoff_max: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Most inbound connections that have not authenticated yet; more are
    /// closed at once (counted as `busy`).
    pub max_handshakes: usize,
    /// How long a closing link may take to flush its last bytes.
    pub linger: Duration,
    /// A node waits this long before dialing a peer with a lower node id,
    /// so that the lower id's dial (the tie-break winner) usually comes up
    /// alone and no link is torn down with messages in flight.
    pub dial_grace: Duration,
}

impl PeersConfig {
    /// Defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            link: LinkConfig::default(),
            queue_messages: 4096,
            queue_bytes: 16 << 20,
            events_capacity: 1024,
            backoff_min: Duration::from_millis(100),
            // A partitioned peer is dialed again at least every ~2 s (one
            // SYN each): a healed partition is noticed within that, not
            // after up to 3 s of a dropped connect plus 6 s of backoff.
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_handshakes: 64,
            linger: Duration::from_secs(1),
            dial_grace: Duration::from_millis(250),
        }
    }
}

/// What the shell tells the sync engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A link to `node` is up (again, or anew: a link that replaces
    /// another reports `Up` once more). Start anti-entropy with it.
    Up {
        /// The peer.
        node: ProxyId,
        /// Its link.
        info: LinkInfo,
    },
    /// The peer's link went down; messages queued for it stay queued.
    Down {
        /// The peer.
        node: ProxyId,
        /// Why.
        reason: LinkError,
    },
    /// A whole message from `node`.
    Message {
        /// The peer.
        node: ProxyId,
        /// The message, as the peer's engine gave it.
        bytes: Vec<u8>,
    },
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// No such active peer.
    #[error("node {0} is not an active peer")]
    UnknownPeer(ProxyId),
    /// The peer's queue is full: fall back to anti-entropy for it.
    #[error("queue of node {node} is full ({depth} messages)")]
    Full {
        /// The peer.
        node: ProxyId,
        /// Messages in its queue.
        depth: usize,
    },
    /// Larger than the link's message limit.
    #[error("message of {0} bytes exceeds the link's limit")]
    TooLarge(usize),
}

/// Why the shell could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// The listener could not be bound.
    #[error("cannot listen for peer links on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The private key is not the local record's.
    #[error(transparent)]
    Membership(#[from] crate::sync::members::MembershipError),
    /// A new membership names another local node than the running one.
    #[error("the new membership is for node {new}, this shell runs node {running}")]
    LocalChanged {
        /// The running node.
        running: ProxyId,
        /// The node the new membership names.
        new: ProxyId,
    },
}

/// What [`Peers::set_membership`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// Peers now dialed and accepted.
    pub added: Vec<ProxyId>,
    /// Peers removed or revoked (or whose address or key changed, which
    /// also appear in `added`): their links were closed with `removed`.
    pub removed: Vec<ProxyId>,
}

/// One peer's state, for status and metrics.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    /// The peer.
    pub node: ProxyId,
    /// Its configured address.
    pub address: SocketAddr,
    /// Its current link, when connected.
    pub link: Option<LinkInfo>,
    /// Why its last link ended or its last connect failed.
    pub last_error: Option<String>,
    /// Messages waiting in its queue.
    pub queue_depth: usize,
    /// Bytes waiting in its queue.
    pub queue_bytes: usize,
    /// Bytes received from it (TCP payload, framing included).
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Messages received from it.
    pub messages_in: u64,
    /// Messages sent to it.
    pub messages_out: u64,
    /// Messages refused because its queue was full.
    pub overflows: u64,
    /// Links that came up with it.
    pub connects: u64,
}

/// Tells one link task to close, and why.
#[derive(Default)]
struct Kill {
    notify: Notify,
    reason: Mutex<Option<LinkError>>,
}

impl Kill {
    fn fire(&self, reason: LinkError) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.notify.notify_one();
    }

    fn reason(&self) -> LinkError {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(LinkError::Duplicate)
    }
}

#[derive(Default)]
struct PeerState {
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    current: Option<(u64, LinkInfo, Arc<Kill>)>,
    last_error: Option<String>,
    bytes_in: u64,
    bytes_out: u64,
    messages_in: u64,
    messages_out: u64,
    overflows: u64,
    connects: u64,
}

struct Peer {
    member: Member,
    state: Mutex<PeerState>,
    /// Wakes the current link's task: the queue has messages.
    wake: Notify,
    /// Whether a link is registered; the dialer waits for `false`.
    connected: watch::Sender<bool>,
    /// Set when the peer leaves the membership: its dialer ends.
    removed: watch::Sender<bool>,
}

impl Peer {
    fn new(member: Member) -> Self {
        Self {
            member,
            state: Mutex::new(PeerState::default()),
            wake: Notify::new(),
            connected: watch::channel(false).0,
            removed: watch::channel(false).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeerState> {
        // A panic elsewhere must not stop the links; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counters by [`LinkError`] (index order of [`LinkError::ALL`]).
struct Counters(Vec<AtomicU64>);

impl Counters {
    fn new() -> Self {
        Self(LinkError::ALL.iter().map(|_| AtomicU64::new(0)).collect())
    }
    fn add(&self, e: LinkError) {
        self.0[e.index()].fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> Vec<(LinkError, u64)> {
        LinkError::ALL
            .iter()
            .map(|&e| (e, self.0[e.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

impl Shared {
    fn peer(&self, node: ProxyId) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .cloned()
    }

    fn members(&self) -> Arc<Membership> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Shared {
    local: Arc<LocalNode>,
    members: RwLock<Arc<Membership>>,
    cfg: PeersConfig,
    peers: RwLock<HashMap<ProxyId, Arc<Peer>>>,
    /// Links refused or failed before they came up, by reason.
    refused: Counters,
    /// Links closed after they were up, by reason.
    closed: Counters,
    events: mpsc::Sender<PeerEvent>,
    stop: watch::Receiver<bool>,
    dial_seq: AtomicU64,
    conn_ids: AtomicU64,
    tasks: Arc<AtomicUsize>,
}

/// A cloneable handle: queue messages, read status and counters.
#[derive(Clone)]
pub struct PeersHandle(Arc<Shared>);

impl PeersHandle {
    /// Queues `msg` for `node` without blocking.
    pub fn send(&self, node: ProxyId, msg: Vec<u8>) -> Result<(), QueueError> {
        let s = &self.0;
        if msg.len() > s.cfg.link.max_message {
            return Err(QueueError::TooLarge(msg.len()));
        }
        let peer = s.peer(node).ok_or(QueueError::UnknownPeer(node))?;
        {
            let mut st = peer.lock();
            if st.queue.len() >= s.cfg.queue_messages
                || st.queued_bytes + msg.len() > s.cfg.queue_bytes
            {
                st.overflows += 1;
                return Err(QueueError::Full {
                    node,
                    depth: st.queue.len(),
                });
            }
            st.queued_bytes += msg.len();
            st.queue.push_back(msg);
        }
        peer.wake.notify_one();
        Ok(())
    }

    /// Every active peer's state, by node id.
    pub fn status(&self) -> Vec<PeerStatus> {
        let peers: Vec<_> = self
            .0
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut v: Vec<_> = peers
            .iter()
            .map(|p| {
                let st = p.lock();
                PeerStatus {
                    node: p.member.node,
                    address: p.member.address,
                    link: st.current.as_ref().map(|c| c.1.clone()),
                    last_error: st.last_error.clone(),
                    queue_depth: st.queue.len(),
                    queue_bytes: st.queued_bytes,
                    bytes_in: st.bytes_in,
                    bytes_out: st.bytes_out,
                    messages_in: st.messages_in,
                    messages_out: st.messages_out,
                    overflows: st.overflows,
                    connects: st.connects,
                }
            })
            .collect();
        v.sort_by_key(|p| p.node);
        v
    }

    /// Links refused (or failed) before they came up, by reason.
    pub fn refused(&self) -> Vec<(LinkError, u64)> {
        self.0.refused.snapshot()
    }

    /// Links closed after they were up, by reason.
    pub fn closed(&self) -> Vec<(LinkError, u64)> {
        self.0.closed.snapshot()
    }

    /// How many refusals of `reason` so far.
    pub fn refused_count(&self, reason: LinkError) -> u64 {
        self.0.refused.0[reason.index()].load(Ordering::Relaxed)
    }

    /// How many closes of `reason` so far.
    pub fn closed_count(&self, reason: LinkError) -> u64 {
        self.0.closed.0[reason.index()].load(Ordering::Relaxed)
    }

    /// Tasks of this shell still running (0 after [`Peers::shutdown`]).
    pub fn live_tasks(&self) -> usize {
        self.0.tasks.load(Ordering::SeqCst)
    }
}

/// The running shell.
pub struct Peers {
    handle: PeersHandle,
    rt: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    local_addr: SocketAddr,
}

/// What [`Peers::shutdown`] joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Top-level tasks joined (the listener and one dialer per peer; each
    /// joins the link tasks it started before it ends).
    pub joined: usize,
    /// Of which ended by a panic.
    pub panicked: usize,
}

/// Counts a task as live until dropped.
struct TaskGuard(Arc<AtomicUsize>);

impl TaskGuard {
    fn new(c: &Arc<AtomicUsize>) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Self(c.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Peers {
    /// Binds the listener and starts the tasks on `rt`: one listener, one
    /// dialer per active peer. Returns the shell and the engine's end of the
    /// event channel.
    pub fn start(
        rt: &tokio::runtime::Handle,
        local: LocalNode,
        members: Membership,
        cfg: PeersConfig,
    ) -> Result<(Self, mpsc::Receiver<PeerEvent>), PeersError> {
        let listener =
            std::net::TcpListener::bind(cfg.listen).map_err(|source| PeersError::Bind {
                addr: cfg.listen,
                source,
            })?;
        Self::start_with_listener(rt, listener, local, members, cfg)
    }

    /// As [`start`](Self::start), on a listener already bound (its address
    /// wins over `cfg.listen`).
    pub fn start_with_listener(
        rt: &tokio::runtime::Handle,
        std_listener: std::net::TcpListener,
        local: LocalNode,
        members: Membership,
        cfg: PeersConfig,
    ) -> Result<(Self, mpsc::Receiver<PeerEvent>), PeersError> {
        members.check_local_key(&local.key)?;
        let bind_err = |source| PeersError::Bind {
            addr: cfg.listen,
            source,
        };
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = std_listener.local_addr().map_err(bind_err)?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::channel(cfg.events_capacity.max(1));
        let peers = members
            .active_peers()
            .map(|m| (m.node, Arc::new(Peer::new(m.clone()))))
            .collect();
        let shared = Arc::new(Shared {
            local: Arc::new(local),
            members: RwLock::new(Arc::new(members)),
            cfg,
            peers: RwLock::new(peers),
            refused: Counters::new(),
            closed: Counters::new(),
            events: events_tx,
            stop: stop_rx,
            dial_seq: AtomicU64::new(0),
            conn_ids: AtomicU64::new(0),
            tasks: Arc::new(AtomicUsize::new(0)),
        });
        let mut tasks = JoinSet::new();
        let g = TaskGuard::new(&shared.tasks);
        tasks.spawn_on(accept_loop(shared.clone(), listener, g), rt);
        for peer in shared
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let g = TaskGuard::new(&shared.tasks);
            tasks.spawn_on(dial_loop(shared.clone(), peer.clone(), g), rt);
        }
        Ok((
            Self {
                handle: PeersHandle(shared),
                rt: rt.clone(),
                stop: stop_tx,
                tasks,
                local_addr,
            },
            events_rx,
        ))
    }

    /// A handle for the engine (cloneable, usable from any thread).
    pub fn handle(&self) -> PeersHandle {
        self.handle.clone()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Applies a new membership (a configuration reload): links to peers
    /// that left it or were revoked close with `removed` and are no longer
    /// dialed or accepted, their queues are dropped; new peers are dialed.
    /// A peer whose address or key changed is removed and added again.
    /// Handshakes that start from now on are checked against the new
    /// membership.
    pub fn set_membership(&mut self, members: Membership) -> Result<MembershipChange, PeersError> {
        let shared = &self.handle.0;
        if members.local().node != shared.local.id {
            return Err(PeersError::LocalChanged {
                running: shared.local.id,
                new: members.local().node,
            });
        }
        members.check_local_key(&shared.local.key)?;
        let active: HashMap<ProxyId, Member> = members
            .active_peers()
            .map(|m| (m.node, m.clone()))
            .collect();
        let mut change = MembershipChange::default();
        let mut peers = shared.peers.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<ProxyId> = peers
            .iter()
            .filter(|(id, p)| {
                active.get(id).is_none_or(|m| {
                    m.address != p.member.address || m.public_key != p.member.public_key
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(p) = peers.remove(&id) {
                p.removed.send_replace(true);
                if let Some((_, _, kill)) = &p.lock().current {
                    kill.fire(LinkError::Removed);
                }
                change.removed.push(id);
            }
        }
        *shared.members.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(members);
        for (id, m) in active {
            if let std::collections::hash_map::Entry::Vacant(e) = peers.entry(id) {
                let p = Arc::new(Peer::new(m));
                e.insert(p.clone());
                let g = TaskGuard::new(&shared.tasks);
                self.tasks
                    .spawn_on(dial_loop(shared.clone(), p, g), &self.rt);
                change.added.push(id);
            }
        }
        drop(peers);
        // Reap the dialers of earlier removals, so reloads do not pile up.
        while let Some(r) = self.tasks.try_join_next() {
            if r.is_err() {
                log::error!("anypsp: a peer task panicked");
            }
        }
        change.added.sort_unstable();
        change.removed.sort_unstable();
        Ok(change)
    }

    /// Closes every link (telling each peer `shutdown`), stops dialing and
    /// accepting, and joins every task.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let _ = self.stop.send(true);
        let mut report = ShutdownReport {
            joined: 0,
            panicked: 0,
        };
        while let Some(r) = self.tasks.join_next().await {
            report.joined += 1;
            report.panicked += usize::from(r.is_err());
        }
        report
    }
}

/// Resolves once the shell is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|&s| s).await;
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, _g: TaskGuard) {
    let mut stop = shared.stop.clone();
    let mut conns = JoinSet::new();
    let handshakes = Arc::new(Semaphore::new(shared.cfg.max_handshakes));
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, _)) => match handshakes.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let _ = stream.set_nodelay(true);
                        let link = Link::accept(
                            shared.cfg.link.clone(),
                            shared.local.clone(),
                            shared.members(),
                            Instant::now(),
                        );
                        let g = TaskGuard::new(&shared.tasks);
                        let s = shared.clone();
                        conns.spawn(async move {
                            let _g = g;
                            run_link(s, stream, link, Some(permit)).await;
                        });
                    }
                    Err(_) => shared.refused.add(LinkError::Busy),
                },
                Err(e) => {
                    // Out of descriptors or the like: do not spin.
                    log::warn!("anypsp: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn dial_loop(shared: Arc<Shared>, peer: Arc<Peer>, _g: TaskGuard) {
    let mut stop = shared.stop.clone();
    let mut connected = peer.connected.subscribe();
    let mut removed = peer.removed.subscribe();
    let cfg = &shared.cfg;
    let mut backoff = cfg.backoff_min;
    loop {
        if *stop.borrow() || *removed.borrow() {
            return;
        }
        if *connected.borrow_and_update() {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = removed.wait_for(|&r| r) => return,
                _ = connected.wait_for(|&c| !c) => continue,
            }
        }
        if shared.local.id > peer.member.node && !cfg.dial_grace.is_zero() {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = removed.wait_for(|&r| r) => return,
                _ = tokio::time::sleep(cfg.dial_grace) => {}
            }
            if *connected.borrow_and_update() {
                continue;
            }
        }
        let attempt = tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = removed.wait_for(|&r| r) => return,
            r = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(peer.member.address)) => r,
        };
        let outcome = match attempt {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let seq = shared.dial_seq.fetch_add(1, Ordering::Relaxed) + 1;
                match Link::dial(
                    cfg.link.clone(),
                    shared.local.clone(),
                    &peer.member,
                    seq,
                    Instant::now(),
                ) {
                    Ok(link) => run_link(shared.clone(), stream, link, None).await,
                    Err(e) => Some(e),
                }
            }
            Ok(Err(e)) => {
                peer.lock().last_error = Some(format!("connect: {e}"));
                Some(LinkError::Io)
            }
            Err(_) => {
                peer.lock().last_error = Some("connect: timed out".into());
                Some(LinkError::Io)
            }
        };
        // A link that was up resets the backoff; one that lost the
        // tie-break retries soon (the winner may not be registered yet).
        let delay = match outcome {
            None | Some(LinkError::Duplicate) => {
                backoff = cfg.backoff_min;
                cfg.backoff_min
            }
            Some(_) => {
                let d = backoff;
                backoff = (backoff * 2).min(cfg.backoff_max);
                // Up to 25 % jitter, so that restarted peers do not dial in
                // lockstep.
                d + d.mul_f64(f64::from((crate::crypto::random_u64() % 256) as u32) / 1024.0)
            }
        };
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = removed.wait_for(|&r| r) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

type WriteFuture = Pin<Box<dyn Future<Output = (OwnedWriteHalf, std::io::Result<()>)> + Send>>;

/// Bytes of link output above which no more queued messages are sealed
/// until the socket has taken them.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// Runs one connection until its link closes. Returns `None` if the link
/// was up, else why it failed.
async fn run_link(
    shared: Arc<Shared>,
    stream: TcpStream,
    mut link: Link,
    mut permit: Option<OwnedSemaphorePermit>,
) -> Option<LinkError> {
    let conn = shared.conn_ids.fetch_add(1, Ordering::Relaxed);
    let (mut rd, wr) = stream.into_split();
    let mut wr = Some(wr);
    let mut writing: Option<WriteFuture> = None;
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut stop = shared.stop.clone();
    let kill = Arc::new(Kill::default());
    // The peer once the link is up and registered (it feeds from the queue).
    let mut peer: Option<Arc<Peer>> = None;
    // The peer once authenticated, registered or not: a link that lost the
    // tie-break still delivers what arrived on it.
    let mut source: Option<Arc<Peer>> = None;
    let mut was_up = false;
    let mut eof = false;
    let mut io_error: Option<String> = None;
    let mut linger_until: Option<Instant> = None;
    // Bytes moved before the peer was known; added to it at registration.
    let (mut pending_in, mut pending_out) = (0u64, 0u64);
    loop {
        // Seal queued messages while the socket keeps up.
        if let Some(p) = peer.as_ref().filter(|_| link.is_up()) {
            let mut st = p.lock();
            let mut sent = 0;
            while link.output_len() < OUTPUT_HIGH_WATER {
                let Some(msg) = st.queue.pop_front() else {
                    break;
                };
                st.queued_bytes -= msg.len();
                if link.send(&msg, Instant::now()).is_err() {
                    // Closed (nonce limit): the message waits for the next link.
                    st.queued_bytes += msg.len();
                    st.queue.push_front(msg);
                    break;
                }
                sent += 1;
            }
            st.messages_out += sent;
        }
        if writing.is_none() && link.output_len() > 0 {
            if let Some(mut w) = wr.take() {
                let buf = link.take_output();
                let n = buf.len() as u64;
                match &peer {
                    Some(p) => p.lock().bytes_out += n,
                    None => pending_out += n,
                }
                writing = Some(Box::pin(async move {
                    let r = w.write_all(&buf).await;
                    (w, r)
                }));
            }
        }
        if link.closed().is_some() {
            if writing.is_none() || io_error.is_some() {
                break;
            }
            linger_until.get_or_insert_with(|| Instant::now() + shared.cfg.linger);
        }
        let deadline = link.poll_timeout().or(linger_until);
        let open = link.closed().is_none();
        tokio::select! {
            _ = stopped(&mut stop), if open => link.close(LinkError::Shutdown),
            _ = kill.notify.notified(), if open => link.close(kill.reason()),
            _ = async { peer.as_ref().expect("guarded").wake.notified().await }, if open && peer.is_some() => {}
            r = rd.read(&mut rbuf), if open && !eof => match r {
                Ok(0) => {
                    eof = true;
                    link.handle_eof();
                }
                Ok(n) => {
                    match &peer {
                        Some(p) => p.lock().bytes_in += n as u64,
                        None => pending_in += n as u64,
                    }
                    link.handle_input(&rbuf[..n], Instant::now());
                }
                Err(e) => {
                    io_error = Some(format!("read: {e}"));
                    link.close(LinkError::Io);
                }
            },
            (w, r) = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                writing = None;
                wr = Some(w);
                if let Err(e) = r {
                    io_error = Some(format!("write: {e}"));
                    link.close(LinkError::Io);
                    let _ = link.take_output();
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                if link.closed().is_some() {
                    break; // lingered long enough
                }
                link.handle_timeout(Instant::now());
            }
        }
        while let Some(ev) = link.poll_event() {
            match ev {
                LinkEvent::Up(info) => {
                    was_up = true;
                    permit.take();
                    source = shared.peer(info.peer);
                    match register(&shared, conn, &info, &kill) {
                        Ok(p) => {
                            {
                                let mut st = p.lock();
                                st.bytes_in += pending_in;
                                st.bytes_out += pending_out;
                            }
                            peer = Some(p);
                            let node = info.peer;
                            deliver(&shared, &mut stop, PeerEvent::Up { node, info }).await;
                        }
                        Err(reason) => link.close(reason),
                    }
                }
                LinkEvent::Message(bytes) => {
                    if let Some(p) = &source {
                        p.lock().messages_in += 1;
                        let node = p.member.node;
                        deliver(&shared, &mut stop, PeerEvent::Message { node, bytes }).await;
                    }
                }
                LinkEvent::Closed(c) => {
                    if c.was_up {
                        shared.closed.add(c.reason);
                    } else {
                        shared.refused.add(c.reason);
                    }
                    let text = match &io_error {
                        Some(e) => format!("{}: {e}", c.reason),
                        None if c.by_peer => format!("{} (said the peer)", c.reason),
                        None => c.reason.to_string(),
                    };
                    let who = peer
                        .clone()
                        .or_else(|| link.info().and_then(|i| shared.peer(i.peer)));
                    if let Some(p) = who {
                        p.lock().last_error = Some(text);
                    }
                }
            }
        }
    }
    drop(writing);
    let reason = link.closed().map_or(LinkError::Io, |c| c.reason);
    if let Some(p) = peer {
        let was_current = {
            let mut st = p.lock();
            let mine = st.current.as_ref().is_some_and(|c| c.0 == conn);
            if mine {
                st.current = None;
            }
            mine
        };
        if was_current {
            p.connected.send_replace(false);
            let node = p.member.node;
            deliver(&shared, &mut stop, PeerEvent::Down { node, reason }).await;
        }
    }
    if was_up {
        None
    } else {
        Some(reason)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
    }
}

/// Makes `conn` the peer's link if it wins the tie-break (closing the
/// loser), or says why not: `duplicate` (it lost) or `removed` (the peer
/// left the membership while the handshake ran).
fn register(
    shared: &Shared,
    conn: u64,
    info: &LinkInfo,
    kill: &Arc<Kill>,
) -> Result<Arc<Peer>, LinkError> {
    let peer = shared.peer(info.peer).ok_or(LinkError::Removed)?;
    let mut st = peer.lock();
    if let Some((_, existing, other)) = &st.current {
        if !prefer_new(existing, info) {
            return Err(LinkError::Duplicate);
        }
        other.fire(LinkError::Duplicate);
    }
    st.current = Some((conn, info.clone(), kill.clone()));
    st.connects += 1;
    drop(st);
    peer.connected.send_replace(true);
    peer.wake.notify_one();
    Ok(peer)
}

/// Hands an event to the engine, waiting for room unless stopping.
async fn deliver(shared: &Shared, stop: &mut watch::Receiver<bool>, ev: PeerEvent) {
    tokio::select! {
        _ = shared.events.send(ev) => {}
        _ = stopped(stop) => {}
    }
}
