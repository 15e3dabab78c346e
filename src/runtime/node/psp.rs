//! The node's main task: drives the [`Replicator`] from the peer links and
//! the proxy's events, applies what it replicates in bounded batches, hands
//! proxy peer messages to the core, adopts the clients of a peer whose link
//! stays down, and starts serving UDP once synced (or past the startup
//! timeout). docs/anypsp-protocol.md section 16.

use super::mux::{self, Channel};
use super::{unix_ms, NodeError, NodeStats, Readiness, ResyncFlag, SyncSetup, Udp};
use crate::call::Name;
use crate::crypto::PublicKey;
use crate::metrics::{Metrics, PeerSnapshot, SyncSnapshot};
use crate::proxy::{ApplyError, Proxy, ProxyEvent, ServedCursor};
use crate::runtime::peers::{MembershipChange, PeerEvent, Peers, PeersHandle};
use crate::runtime::proxy::{ProxyRuntime, SharedCore};
use crate::session::ProxyId;
use crate::sync::bridge::{Apply, Replicator};
use crate::sync::members;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

mod reload;
mod resync;

/// What the after-lock hook hands to this task.
pub(super) enum Local {
    /// A proxy event.
    Event(ProxyEvent),
    /// A client key's newest handshake time stamp grew here.
    Handshake(PublicKey, [u8; 12]),
    /// A subscriber was added (`live`) or revoked in this proxy's store.
    Subscriber(Name, PublicKey, bool),
    /// A proxy peer message (`Proxy::poll_peer_transmit`): it goes out
    /// after the sync messages of the changes before it, so a peer learns
    /// a call before the Invite handed to it (docs/anypsp-protocol.md 16.8).
    Peer(ProxyId, Vec<u8>),
}

/// A new peer list for the node (a configuration reload), and where to
/// say what changed.
pub(super) struct Reload {
    pub peers: Vec<members::Member>,
    pub done: tokio::sync::oneshot::Sender<Result<MembershipChange, NodeError>>,
}

/// A subscriber change replicated from a peer, for the host to write into
/// its store (and then hand the proxy its new `Subscribers`).
#[derive(Clone, Debug)]
pub struct RemoteSubscriber {
    /// The name.
    pub name: Name,
    /// The client key.
    pub key: PublicKey,
    /// Authorised (true) or revoked (false).
    pub live: bool,
    /// Changes handed to the host and not yet in the proxy's snapshot: the
    /// host calls [`RemoteSubscriber::done`] once the proxy holds this one.
    /// The node serves only when it is zero, so a client whose key came
    /// from a peer is never refused in the moment after "synced".
    pub pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl RemoteSubscriber {
    /// The proxy's `Subscribers` now reflect this change (or it was refused
    /// for good): one fewer pending.
    pub fn done(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the node's main task shares with [`super::Node`].
pub(super) struct Ctx {
    pub id: ProxyId,
    pub core: Arc<SharedCore>,
    pub stats: Arc<NodeStats>,
    pub ready: watch::Sender<Readiness>,
    pub serving: Arc<OnceLock<Arc<ProxyRuntime>>>,
    pub stop: watch::Receiver<bool>,
    pub resync: Arc<ResyncFlag>,
    /// Most sessions (or calls) listed, or entries swept, per resync chunk.
    pub resync_chunk: usize,
    /// Where replicated subscriber changes go (the host's store).
    pub subscribers: Option<mpsc::Sender<RemoteSubscriber>>,
}

/// The parts of a member node.
pub(super) type Member = (
    SyncSetup,
    Peers,
    mpsc::Receiver<PeerEvent>,
    mpsc::Receiver<Local>,
    mpsc::Receiver<Reload>,
);

/// Most link events or local changes taken per loop turn, so that neither
/// source starves the other or the timers, and the task yields its worker
/// thread often (a sync message can hold hundreds of entries).
const TURN: usize = 32;

/// Longest time the metrics board's sync snapshot lags the sync task when
/// only figures (not link or sync state) changed.
const BOARD_EVERY: Duration = Duration::from_millis(500);

/// How often progress is logged while waiting for peers.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs the node until stop; returns the peer-link tasks joined.
pub(super) async fn main(ctx: Ctx, udp: Udp, member: Option<Member>) -> usize {
    let mut stop = ctx.stop.clone();
    let Some((setup, mut peers, links, locals, reloads)) = member else {
        // Alone: nothing to wait for.
        ctx.ready.send_modify(|r| r.synced = true);
        match serve(&ctx, udp) {
            Ok(()) => ctx.core.metrics_board().set_ready(true),
            Err(e) => fail(&ctx, e),
        }
        let _ = stop.wait_for(|s| *s).await;
        return 0;
    };
    let mut p = Psp::new(&ctx, setup, peers.handle());
    let chans = Chans {
        links,
        locals,
        reloads,
    };
    p.run(&ctx, &mut stop, udp, &mut peers, chans).await;
    let report = peers.shutdown().await;
    report.joined
}

/// Starts serving UDP; the readiness says so.
fn serve(ctx: &Ctx, udp: Udp) -> Result<(), String> {
    let sockets = match udp {
        Udp::Bound(s) => s,
        Udp::Deferred { listen, opts } => {
            crate::runtime::proxy::BoundSockets::bind(&listen, opts).map_err(|e| e.to_string())?
        }
    };
    let rt = Arc::new(ProxyRuntime::serve_shared(ctx.core.clone(), sockets));
    log::info!("proxy {} serving UDP on {:?}", ctx.id, rt.local_addrs());
    let _ = ctx.serving.set(rt);
    ctx.ready.send_modify(|r| r.serving = true);
    Ok(())
}

fn fail(ctx: &Ctx, e: String) {
    log::error!("proxy {} cannot serve: {e}", ctx.id);
    ctx.ready.send_modify(|r| r.failed = Some(e));
}

/// What the node's main task listens to.
struct Chans {
    links: mpsc::Receiver<PeerEvent>,
    locals: mpsc::Receiver<Local>,
    reloads: mpsc::Receiver<Reload>,
}

struct Psp {
    rep: Replicator,
    /// This node as a member (for a new [`Membership`] on reload).
    local: members::Member,
    peers: PeersHandle,
    configured: BTreeSet<ProxyId>,
    up: BTreeSet<ProxyId>,
    /// Peers whose link is down, since when (not yet declared down).
    down_since: BTreeMap<ProxyId, Instant>,
    detect: Duration,
    startup_timeout: Duration,
    /// No peer linked this long, not synced: ready alone (spec 17.3).
    solo_grace: Duration,
    /// Since when no configured peer has a link up (None: one has).
    dark_since: Option<Instant>,
    /// Ready alone (latched).
    solo: bool,
    /// Addresses of the configured peers (for status).
    addrs: BTreeMap<ProxyId, std::net::SocketAddr>,
    /// Wall ms of the last message heard per peer, across reconnects.
    heard: BTreeMap<ProxyId, u64>,
    board: Arc<Metrics>,
    next_board: Instant,
    apply_batch: usize,
    /// Proxy peer messages the link shell refused (not yet published).
    peer_send_failed: u64,
    /// Items held back, in order, until the epoch lease is renewed.
    held: std::collections::VecDeque<Apply>,
    /// When held items are tried again.
    retry_at: Option<Instant>,
    /// Where the resync under way stands (None: none under way, or its
    /// listing is done and the bridge sweeps: `Replicator::resyncing`).
    resync_at: Option<ServedCursor>,
    /// Subscriber changes handed to the host, not yet in the proxy.
    subs_pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Psp {
    fn new(ctx: &Ctx, setup: SyncSetup, peers: PeersHandle) -> Self {
        let now = unix_ms();
        let mut cfg = crate::sync::Config::new(ctx.id.get(), setup.fp_key);
        cfg.seed = crate::crypto::random_u64();
        let mut rep = Replicator::new(cfg, now);
        let active = || setup.peers.iter().filter(|m| !m.revoked);
        let configured: BTreeSet<ProxyId> = active().map(|m| m.node).collect();
        let addrs = active().map(|m| (m.node, m.address)).collect();
        let local = members::Member {
            node: ctx.id,
            address: setup.listen,
            public_key: setup.node_key.public(),
            region: String::new(),
            failure_domain: String::new(),
            failover: Vec::new(),
            revoked: false,
        };
        for p in &configured {
            if let Err(e) = rep.add_peer(p.get()) {
                log::error!("anypsp: peer {p} not added to the sync engine: {e:?}");
            }
        }
        // A peer never seen is "down" from the start: if it does not come
        // up, its clients (replicated to us later) are not adopted by this
        // rule, only by take-over; nothing to declare yet.
        Self {
            rep,
            local,
            peers,
            configured,
            up: BTreeSet::new(),
            down_since: BTreeMap::new(),
            detect: setup.peer_detect,
            startup_timeout: setup.startup_timeout,
            solo_grace: setup.solo_grace,
            dark_since: Some(Instant::now()),
            solo: false,
            addrs,
            heard: BTreeMap::new(),
            board: ctx.core.metrics_board(),
            next_board: Instant::now(),
            apply_batch: setup.apply_batch.max(1),
            peer_send_failed: 0,
            held: std::collections::VecDeque::new(),
            retry_at: None,
            resync_at: None,
            subs_pending: Arc::default(),
        }
    }

    async fn run(
        &mut self,
        ctx: &Ctx,
        stop: &mut watch::Receiver<bool>,
        mut udp: Udp,
        shell: &mut Peers,
        chans: Chans,
    ) {
        let Chans {
            mut links,
            mut locals,
            mut reloads,
        } = chans;
        let mut reloads_open = true;
        let started = Instant::now();
        let startup_deadline = started + self.startup_timeout;
        let mut serving = false;
        let mut next_progress = started + PROGRESS_EVERY;
        let mut proxy_msgs: Vec<(ProxyId, Vec<u8>)> = Vec::new();
        loop {
            if !serving {
                // Synced, and everything pulled is in the core: no item
                // waits for the epoch lease and every replicated subscriber
                // is in the proxy's snapshot (spec 17.4).
                let all = self.up.len() == self.configured.len()
                    && self.rep.synced()
                    && self.held.is_empty()
                    && self.subs_pending.load(Ordering::Acquire) == 0;
                let now = Instant::now();
                if all || now >= startup_deadline {
                    if all {
                        log::info!(
                            "anypsp: synced with {} peer(s) in {} ms; serving",
                            self.up.len(),
                            started.elapsed().as_millis()
                        );
                    } else {
                        log::warn!(
                            "anypsp: startup timeout ({} ms): {}; serving anyway",
                            self.startup_timeout.as_millis(),
                            self.progress()
                        );
                    }
                    serving = true;
                    let u = std::mem::replace(
                        &mut udp,
                        Udp::Deferred {
                            listen: Vec::new(),
                            opts: Default::default(),
                        },
                    );
                    if let Err(e) = serve(ctx, u) {
                        fail(ctx, e);
                    }
                } else if now >= next_progress {
                    log::info!("anypsp: {}", self.progress());
                    next_progress = now + PROGRESS_EVERY;
                }
            }
            self.publish(ctx);
            let wake = self.next_deadline(serving, startup_deadline, next_progress);
            let turn;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                n = links.recv() => {
                    turn = Instant::now();
                    let Some(ev) = n else { break };
                    self.on_link(ctx, ev, &mut proxy_msgs);
                    for _ in 1..TURN {
                        match links.try_recv() {
                            Ok(ev) => self.on_link(ctx, ev, &mut proxy_msgs),
                            Err(_) => break,
                        }
                    }
                }
                n = locals.recv() => {
                    turn = Instant::now();
                    let Some(l) = n else { break };
                    let now = unix_ms();
                    self.on_local(now, l);
                    for _ in 1..TURN {
                        match locals.try_recv() {
                            Ok(l) => self.on_local(now, l),
                            Err(_) => break,
                        }
                    }
                }
                r = reloads.recv(), if reloads_open => {
                    turn = Instant::now();
                    match r {
                        Some(r) => {
                            let change = self.reload(ctx, shell, r.peers);
                            let _ = r.done.send(change);
                        }
                        None => reloads_open = false,
                    }
                }
                _ = ctx.resync.notify.notified() => turn = Instant::now(),
                _ = sleep_until(wake) => turn = Instant::now(),
            }
            if ctx.resync.take() {
                self.start_resync(ctx, &mut locals);
            }
            self.resync_chunk(ctx);
            self.timers(ctx);
            if !proxy_msgs.is_empty() {
                match ctx.serving.get() {
                    Some(rt) => rt.handle_peer_messages(&proxy_msgs).await,
                    None => {
                        ctx.stats
                            .peer_messages_early
                            .fetch_add(proxy_msgs.len() as u64, Ordering::Relaxed);
                    }
                }
                proxy_msgs.clear();
            }
            self.transmit();
            if self.peer_send_failed > 0 {
                ctx.stats.peer_send_failed.fetch_add(
                    std::mem::take(&mut self.peer_send_failed),
                    Ordering::Relaxed,
                );
            }
            let us = turn.elapsed().as_micros() as u64;
            ctx.stats.turn_max_us.fetch_max(us, Ordering::Relaxed);
            self.apply(ctx).await;
            self.transmit();
            // Let the UDP tasks have this worker between turns.
            tokio::task::yield_now().await;
        }
    }

    fn progress(&self) -> String {
        let synced = self
            .up
            .iter()
            .filter(|p| self.rep.peer_synced(p.get()))
            .count();
        format!(
            "waiting for peers: {}/{} linked, {}/{} synced",
            self.up.len(),
            self.configured.len(),
            synced,
            self.configured.len()
        )
    }

    /// Publishes the sync state: to the readiness (route, ready file,
    /// `anytun_proxy_status`) and the metrics board (`/status`, scrapes).
    /// The board is written at once when the link or sync state changed,
    /// and before the readiness, so whoever sees the readiness change finds
    /// `/status` saying the same; otherwise at most every
    /// [`BOARD_EVERY`] (per-peer lag and queue figures change with every
    /// message). The loop wakes for that tick even when idle.
    fn publish(&mut self, ctx: &Ctx) {
        self.check_solo();
        let synced_peers = self
            .up
            .iter()
            .filter(|p| self.rep.peer_synced(p.get()))
            .count();
        let new = (
            self.configured.len(),
            self.up.len(),
            synced_peers,
            self.rep.synced(),
            self.solo,
        );
        let mut r = ctx.ready.borrow().clone();
        let changed = (r.peers, r.peers_up, r.peers_synced, r.synced, r.solo) != new;
        if new.3 && !r.synced {
            log::info!(
                "anypsp: synced: tables reconciled with every linked peer ({} of {})",
                new.1,
                new.0
            );
        }
        (r.peers, r.peers_up, r.peers_synced, r.synced, r.solo) = new;
        let now = Instant::now();
        if changed || now >= self.next_board {
            self.next_board = now + BOARD_EVERY;
            self.board.set_sync(Some(self.sync_snapshot(ctx)));
        }
        self.board.set_ready(r.ready());
        if changed {
            ctx.ready.send_modify(|x| {
                (x.peers, x.peers_up, x.peers_synced, x.synced, x.solo) = new;
            });
        }
    }

    /// The solo rule (docs/anypsp-protocol.md 17.3): a node that never
    /// synced and has had no link to any configured peer for
    /// `solo_grace` counts as ready alone, so the last proxy standing
    /// that restarts announces rather than keep the network dark. A peer
    /// that links within the grace resets it: then the node waits for
    /// the sync as before.
    fn check_solo(&mut self) {
        if self.up.is_empty() {
            let since = *self.dark_since.get_or_insert_with(Instant::now);
            if !self.solo && !self.rep.synced() && since.elapsed() >= self.solo_grace {
                self.solo = true;
                log::warn!(
                    "anypsp: no peer reachable for {} ms (of {} configured): ready alone \
                     with the table this proxy has (sync.solo_grace_ms); peers that come \
                     back pull it",
                    self.solo_grace.as_millis(),
                    self.configured.len()
                );
            }
        } else {
            self.dark_since = None;
        }
    }

    /// The sync state for `/status` and the per-peer gauges.
    fn sync_snapshot(&self, ctx: &Ctx) -> SyncSnapshot {
        let shell: BTreeMap<ProxyId, _> = self
            .peers
            .status()
            .into_iter()
            .map(|p| (p.node, p))
            .collect();
        let engine = self.rep.engine();
        let peers = self
            .configured
            .iter()
            .map(|id| {
                let st = engine.peer_status(id.get());
                let sh = shell.get(id);
                PeerSnapshot {
                    node: id.get(),
                    addr: self.addrs[id],
                    connected: self.up.contains(id),
                    ready: st.as_ref().is_some_and(|s| s.ready),
                    queued_bytes: st.as_ref().map_or(0, |s| s.queued_bytes)
                        + sh.map_or(0, |s| s.queue_bytes),
                    queued_messages: sh.map_or(0, |s| s.queue_depth),
                    last_heard_ms: self.heard.get(id).copied(),
                    last_error: sh.and_then(|s| s.last_error.clone()),
                    connects: sh.map_or(0, |s| s.connects),
                    overflows: sh.map_or(0, |s| s.overflows),
                }
            })
            .collect();
        let names = [
            "",
            "sessions",
            "registrations",
            "calls",
            "handshakes",
            "subscribers",
        ];
        let entries = engine
            .scopes()
            .map(|sc| {
                let name = names.get(usize::from(sc.0)).copied().unwrap_or("other");
                let n = engine.table(sc).map_or(0, |t| t.len() as u64);
                (name.to_owned(), n)
            })
            .collect();
        let fingerprints = engine
            .scopes()
            .map(|sc| {
                let name = names.get(usize::from(sc.0)).copied().unwrap_or("other");
                (name.to_owned(), format!("{:032x}", engine.digest(sc).1))
            })
            .collect();
        let stats = engine.stats();
        let drops = crate::sync::SyncDrop::ALL
            .iter()
            .map(|d| (d.label().to_owned(), stats.drops(*d)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let links_refused = self
            .peers
            .refused()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(e, n)| (e.to_string(), n))
            .collect();
        SyncSnapshot {
            synced: self.rep.synced(),
            solo: self.solo,
            peers,
            entries,
            fingerprints,
            applied: ctx.stats.applied.load(Ordering::Relaxed),
            refused: ctx.core.with_core(|p| p.psp_stats().apply_refused),
            drops,
            links_refused,
        }
    }

    fn next_deadline(&self, serving: bool, startup: Instant, progress: Instant) -> Option<Instant> {
        let now_ms = unix_ms();
        let engine = self
            .rep
            .poll_timeout()
            .map(|t| Instant::now() + Duration::from_millis(t.saturating_sub(now_ms)));
        let detect = self.down_since.values().min().map(|t| *t + self.detect);
        let startup = (!serving).then_some(startup.min(progress));
        let solo = self
            .dark_since
            .filter(|_| !self.solo && !self.rep.synced())
            .map(|t| t + self.solo_grace);
        [
            engine,
            detect,
            startup,
            solo,
            Some(self.next_board),
            self.retry_at,
            // A resync under way goes on at once (after a yield).
            (self.resync_at.is_some() || self.rep.resyncing()).then(Instant::now),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_link(&mut self, ctx: &Ctx, ev: PeerEvent, proxy_msgs: &mut Vec<(ProxyId, Vec<u8>)>) {
        let node = match &ev {
            PeerEvent::Up { node, .. } | PeerEvent::Down { node, .. } => node,
            PeerEvent::Message { node, .. } => node,
        };
        if !self.configured.contains(node) {
            // Removed or revoked by a reload while this was on its way.
            return;
        }
        if let PeerEvent::Message { node, .. } = &ev {
            self.heard.insert(*node, unix_ms());
        }
        match ev {
            PeerEvent::Up { node, .. } => {
                log::info!("anypsp: link to peer {node} up");
                self.up.insert(node);
                self.down_since.remove(&node);
                ctx.core.with_core(|p| p.peer_up(node));
                self.rep.peer_connected(unix_ms(), node.get());
            }
            PeerEvent::Down { node, reason } => {
                // A peer stopping in order says so; anything else is news.
                if reason == crate::sync::link::LinkError::Shutdown {
                    log::info!("anypsp: link to peer {node} down ({reason})");
                } else {
                    log::warn!("anypsp: link to peer {node} down ({reason})");
                }
                self.up.remove(&node);
                self.down_since.entry(node).or_insert_with(Instant::now);
                self.rep.peer_disconnected(node.get());
            }
            PeerEvent::Message { node, bytes } => match mux::split(&bytes) {
                Ok((Channel::Sync, body)) => {
                    if let Err(e) = self.rep.handle_message(unix_ms(), node.get(), body) {
                        log::debug!("anypsp: sync message from {node} dropped: {e:?}");
                    }
                }
                Ok((Channel::Proxy, body)) => proxy_msgs.push((node, body.to_vec())),
                Err(e) => {
                    log::debug!("anypsp: message from {node}: {e}");
                    ctx.stats.unknown_channel.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }

    fn on_local(&mut self, now: u64, l: Local) {
        match l {
            Local::Peer(to, bytes) => {
                self.transmit();
                if let Err(e) = self.peers.send(to, mux::wrap(Channel::Proxy, &bytes)) {
                    log::debug!("anypsp: peer message to {to} not queued: {e}");
                    self.peer_send_failed += 1;
                }
            }
            Local::Event(e) => self.rep.on_proxy_event(now, &e),
            Local::Handshake(k, ts) => self.rep.on_handshake(now, &k, ts),
            Local::Subscriber(name, key, live) => self.rep.on_subscriber(now, &name, &key, live),
        }
    }

    /// Engine timers, and peers whose link stayed down past `detect`.
    fn timers(&mut self, ctx: &Ctx) {
        let now_ms = unix_ms();
        if self.rep.poll_timeout().is_some_and(|t| t <= now_ms) {
            self.rep.handle_timeout(now_ms);
        }
        let now = Instant::now();
        let due: Vec<ProxyId> = self
            .down_since
            .iter()
            .filter(|(_, t)| **t + self.detect <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.down_since.remove(&peer);
            let adopted = ctx.core.with_core(|p| p.peer_down(Instant::now(), peer));
            ctx.stats
                .peers_declared_down
                .fetch_add(1, Ordering::Relaxed);
            let level = if adopted > 0 {
                log::Level::Warn
            } else {
                log::Level::Info
            };
            log::log!(
                level,
                "anypsp: peer {peer} down for {} ms: serving its {adopted} client(s) provisionally",
                self.detect.as_millis()
            );
        }
    }

    /// Sync messages onto the links. A full link queue loses the message;
    /// the engine's periodic reconciliation repairs it.
    fn transmit(&mut self) {
        while let Some((to, bytes)) = self.rep.poll_transmit() {
            let Some(peer) = ProxyId::new(to) else {
                continue;
            };
            if let Err(e) = self.peers.send(peer, mux::wrap(Channel::Sync, &bytes)) {
                log::debug!("anypsp: sync message to {peer} not queued: {e}");
            }
        }
    }

    /// Applies what the engine replicated, at most `apply_batch` items per
    /// hold of the core lock, yielding between holds so the voice path and
    /// the links run in between. A session that cannot be imported because
    /// the send-epoch lease is spent is held back with everything after it
    /// (order matters: a registration follows its session) and tried again
    /// shortly, once the host has renewed the lease.
    async fn apply(&mut self, ctx: &Ctx) {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.retry_at = None;
        let mut batch = Vec::with_capacity(self.apply_batch.min(4096));
        loop {
            batch.clear();
            let mut resync = false;
            let mut subs = Vec::new();
            while batch.len() < self.apply_batch {
                let next = match self.held.pop_front() {
                    Some(a) => Some(a),
                    None => self.rep.poll_apply(),
                };
                match next {
                    Some(Apply::Resync) => resync = true,
                    Some(Apply::Subscriber { name, key, live }) => subs.push(RemoteSubscriber {
                        name,
                        key,
                        live,
                        pending: self.subs_pending.clone(),
                    }),
                    Some(a) => batch.push(a),
                    None => break,
                }
            }
            if batch.is_empty() && !resync && subs.is_empty() {
                return;
            }
            for s in subs {
                match &ctx.subscribers {
                    // Waits for the store when it lags: back-pressure on
                    // replication, never on the voice path.
                    Some(tx) => {
                        s.pending.fetch_add(1, Ordering::AcqRel);
                        if let Err(e) = tx.send(s).await {
                            // The host's store task is gone: nothing will
                            // ever apply it, so it must not hold serving.
                            e.0.done();
                        }
                    }
                    None => log::debug!("anypsp: subscriber {} from a peer: no store", s.name),
                }
            }
            if !batch.is_empty() {
                let mut held_from = Instant::now();
                let (done, rest) = ctx.core.with_core(|p| {
                    let now = Instant::now();
                    held_from = now;
                    let mut done = 0u64;
                    let mut it = batch.drain(..);
                    for a in it.by_ref() {
                        if !apply_one(p, now, &a) {
                            // Everything from here waits for the lease.
                            let mut rest = vec![a];
                            rest.extend(it.by_ref());
                            return (done, rest);
                        }
                        done += 1;
                    }
                    (done, Vec::new())
                });
                let us = held_from.elapsed().as_micros() as u64;
                ctx.stats.apply_hold_max_us.fetch_max(us, Ordering::Relaxed);
                ctx.stats.applied.fetch_add(done, Ordering::Relaxed);
                ctx.stats.apply_batches.fetch_add(1, Ordering::Relaxed);
                if !rest.is_empty() {
                    ctx.stats
                        .apply_waited_for_lease
                        .fetch_add(1, Ordering::Relaxed);
                    for a in rest.into_iter().rev() {
                        self.held.push_front(a);
                    }
                    self.retry_at = Some(Instant::now() + LEASE_RETRY);
                    log::debug!(
                        "anypsp: epoch lease spent; {} item(s) wait",
                        self.held.len()
                    );
                    return;
                }
            }
            if resync {
                // Started by the main loop, which holds the local queue.
                ctx.resync.raise();
            }
            self.transmit();
            tokio::task::yield_now().await;
        }
    }
}

/// How soon items held back for the epoch lease are tried again.
const LEASE_RETRY: Duration = Duration::from_millis(100);

/// One replicated item into the core; false if it must wait for the
/// epoch lease.
fn apply_one(p: &mut Proxy, now: Instant, a: &Apply) -> bool {
    match a {
        Apply::Proxy(e) => {
            if let Err(ApplyError::Epochs(_)) = p.apply_remote(now, e) {
                return false;
            }
        }
        Apply::Handshake { key, ts } => {
            let wall = crate::runtime::unix_nanos();
            p.replay_table_mut().merge(&[0; 12], [(*key, *ts)], wall);
        }
        // Taken out of the batch before (they go to the host's store).
        Apply::Subscriber { .. } | Apply::Resync => {}
    }
    true
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
