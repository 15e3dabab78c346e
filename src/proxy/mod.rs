//! The proxy's protocol core: a state machine over caller-supplied buffers.
//!
//! [`Proxy::handle_datagram`] takes one received datagram and may write one
//! answer into the caller's buffer right away (the data path: a relayed voice
//! frame, an ack, a handshake response). Anything else it has to send (call
//! set-up fanned out to several devices, retransmissions) is queued and
//! drained with [`Proxy::poll_transmit`]. Timers run when the shell calls
//! [`Proxy::handle_timeout`] at or after [`Proxy::poll_timeout`].
//!
//! Where things live: sessions in `sessions` (this file), names in
//! [`registry`], calls in [`calls`].

mod accept;
pub mod calls;
pub mod decisions;
pub mod events;
pub mod handed;
mod keys;
mod peer_msg;
pub mod registry;
pub mod replica;
mod served;
pub mod stats;
pub mod subscribers;
mod timers;

pub use events::{ProxyEvent, SessionRecord};
pub use replica::{ApplyError, PeerMessage, PspStats};
pub use served::ServedCursor;
pub use stats::ProxyStats;
pub use subscribers::Subscribers;

use crate::call::reliable::{ReliableReceiver, ReliableSender};
use crate::call::{Cause, Name};
use crate::crypto::mac::{CookieSecret, NetworkMacs};
use crate::crypto::{PublicKey, SecretKey};
use crate::handshake::dos::{DosConfig, LoadMeter, RateLimiter, TokenBucket};
use crate::handshake::replay::{ReplayTable, WallClock};
use crate::session::{
    CallId, Epochs, EpochsExhausted, ProxyId, SessionCrypto, SessionId, SessionState,
};
use crate::wire::control::{CauseOctet, ControlMsg};
use crate::wire::inner::Inner;
use crate::wire::transport::TransportHeader;
use crate::wire::{classify, DropReason, MessageType, MAX_DATAGRAM};
use calls::CallTable;
use keys::Keys;
use registry::Registry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How a proxy behaves.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// This proxy's id, unique in the network.
    pub proxy_id: ProxyId,
    /// The network's static private key (shared by every proxy).
    pub network_key: SecretKey,
    /// Keepalive interval told to clients, in seconds.
    pub keepalive_s: u16,
    /// A session with no authenticated packet for this long is dropped.
    pub session_timeout: Duration,
    /// Longest registration granted.
    pub max_register_expires_s: u32,
    /// A call not answered within this time fails with "no answer".
    pub ring_timeout: Duration,
    /// Most sessions held at once.
    pub max_sessions: usize,
    /// Handshake DoS limits.
    pub dos: DosConfig,
    /// An answered call that carries no voice or call data from one of its
    /// two sides for this long ends for both with cause 102 (recovery on
    /// timer expiry), as Asterisk's `rtptimeout` does. Zero disables it.
    pub media_timeout: Duration,
    /// A device offered a call that neither rings nor sends anything at all
    /// within this time is dropped from the offer (taken to be dead).
    pub leg_timeout: Duration,
    /// Most calls held at once (ringing or answered); more are refused
    /// with cause 34 (no circuit/channel available).
    pub max_calls: usize,
    /// Most calls one session is part of, as caller or offered/answering
    /// device. A caller over it is refused with cause 47 (resource
    /// unavailable); a device over it is not rung (busy, 17, if none is).
    pub max_calls_per_session: usize,
    /// Most devices one call rings (a name with more bindings rings the
    /// most recently registered ones).
    pub max_forks: usize,
    /// Most names one session may hold registered.
    pub max_names_per_session: usize,
    /// Most devices (sessions) one name may have registered.
    pub max_devices_per_name: usize,
    /// Most client keys the handshake replay table holds (see
    /// [`crate::handshake::replay::ReplayTable`]).
    pub replay_max_keys: usize,
    /// Most events held for [`Proxy::poll_event`]; on overflow the oldest
    /// is dropped and [`Proxy::resync_needed`] turns true.
    pub max_events: usize,
    /// Most messages held for [`Proxy::poll_peer_transmit`]; more are
    /// dropped and counted in [`PspStats::peer_queue_full`].
    pub max_peer_queue: usize,
    /// Voice for a party served by another proxy goes through that proxy
    /// (one more hop) instead of straight from this one: for networks whose
    /// routers drop packets from the anycast address on paths they route
    /// elsewhere (strict uRPF). Off by default (docs/anypsp-protocol.md 15.8).
    pub relay_via_serving: bool,
}

impl ProxyConfig {
    /// A configuration with the defaults a small network wants.
    pub fn new(proxy_id: ProxyId, network_key: SecretKey) -> Self {
        Self {
            proxy_id,
            network_key,
            keepalive_s: 15,
            session_timeout: Duration::from_secs(180),
            max_register_expires_s: 3600,
            ring_timeout: Duration::from_secs(60),
            max_sessions: 1 << 20,
            dos: DosConfig::default(),
            media_timeout: Duration::from_secs(15),
            leg_timeout: Duration::from_secs(4),
            max_calls: 1 << 18,
            max_calls_per_session: 16,
            max_forks: 16,
            max_names_per_session: 16,
            max_devices_per_name: 16,
            replay_max_keys: crate::handshake::replay::DEFAULT_MAX_KEYS,
            max_events: events::DEFAULT_MAX_EVENTS,
            max_peer_queue: replica::DEFAULT_MAX_PEER_QUEUE,
            relay_via_serving: false,
        }
    }
}

/// A datagram to send. Its bytes are in the buffer the caller passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// Which local address to send it from: the address the client sent its
    /// last packet to (the anycast address), so its NAT binding holds.
    pub src_ip: Option<IpAddr>,
    /// Length of the datagram at the front of the buffer.
    pub len: usize,
}

/// One client's session at this proxy.
#[derive(Debug)]
pub(crate) struct ClientSession {
    /// Whole if served here or used here; compact for a replica never used
    /// here (spec 16.9).
    pub(crate) crypto: Keys,
    pub(crate) client_key: PublicKey,
    /// Where the client's newest authenticated packet came from.
    pub(crate) addr: SocketAddr,
    /// Which local address it was sent to.
    pub(crate) local_ip: Option<IpAddr>,
    pub(crate) last_seen: Instant,
    pub(crate) reliable: ReliableSender,
    /// The client's control messages seen here; made on the first one (a
    /// replica's stays `None`, spec 16.9).
    pub(crate) received: Option<Box<ReliableReceiver>>,
    /// The proxy serving the client now (this one, or another whose state
    /// was replicated here: then this proxy runs no timers for it and sends
    /// it no control message itself).
    pub(crate) serving: ProxyId,
    /// Served here only provisionally, because its serving proxy went down
    /// (`peer_down`): the client's next newest packet takes it over for good.
    pub(crate) adopted: bool,
    /// The highest client counter floor a replicated record reported (the
    /// serving proxy had seen every client counter below it; spec 15.9).
    pub(crate) floor: u64,
    /// A newest client packet that would take this replica over, waiting for
    /// the serving proxy to confirm it never saw its counter (spec 15.9).
    pub(crate) pending_move: Option<replica::PendingMove>,
}

#[derive(Debug)]
struct Queued {
    dst: SocketAddr,
    src_ip: Option<IpAddr>,
    data: Vec<u8>,
}

/// Read-only facts about a session, for status output and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: SessionId,
    /// The client's static key.
    pub client_key: PublicKey,
    /// The client's current address.
    pub addr: SocketAddr,
    /// The local address it talks to.
    pub local_ip: Option<IpAddr>,
    /// The proxy serving it (this one, or another whose replica this is;
    /// docs/anypsp-protocol.md 15.1).
    pub serving: ProxyId,
}

/// The proxy state machine.
pub struct Proxy {
    cfg: ProxyConfig,
    macs: NetworkMacs,
    cookies: CookieSecret,
    load: LoadMeter,
    limiter: RateLimiter,
    subscribers: Subscribers,
    /// Replay state of handshake initiations (see [`ReplayTable`]). Kept
    /// after sessions end: replay protection must outlive sessions.
    replay: ReplayTable,
    /// The proxy's wall clock, for handshake timestamps.
    wall: WallClock,
    /// Refused handshakes not yet logged (logged in aggregate).
    refusal_log: accept::RefusalLog,
    /// Boxed: growing the table past a power of two moves every entry,
    /// and at ~2 KB each that held the core lock (and so the voice path)
    /// for ~170 ms at 57 000 sessions (benches/bulk_sync.rs); boxed, a
    /// move is 16 bytes.
    sessions: HashMap<SessionId, Box<ClientSession>>,
    /// The ids of `sessions` in order, kept in step with it: the cursor of
    /// a chunked resync walks it (`Proxy::served_events_from`).
    session_order: BTreeSet<SessionId>,
    /// Where every session's send epoch comes from (spec 8.8).
    epochs: Epochs,
    by_key: HashMap<PublicKey, SessionId>,
    registry: Registry,
    calls: CallTable,
    queue: VecDeque<Queued>,
    /// One retransmission deadline per session with messages pending.
    timers: timers::SessionTimers,
    /// When each session is next checked for silence (at most one entry per
    /// session; rechecked, not moved, when packets arrive).
    expiry: timers::SessionTimers,
    next_sweep: Instant,
    stats: ProxyStats,
    /// Counters as of the last summary log line.
    summary: timers::Summary,
    /// State changes for replication (bounded).
    events: events::EventQueue,
    /// Authenticated messages for peer proxies (Control, Media; bounded by
    /// `max_peer_queue`).
    peer_out: VecDeque<(ProxyId, Vec<u8>)>,
    /// Forwarded client packets for their home (unauthenticated; bounded by
    /// [`replica::MAX_FORWARD_QUEUE`], drained after `peer_out`).
    forward_out: VecDeque<(ProxyId, Vec<u8>)>,
    /// anypsp counters.
    psp: PspStats,
    /// Per-source limit on packets forwarded to their home (they cannot be
    /// authenticated here).
    forward_limiter: RateLimiter,
    /// Limit on packets forwarded to their home, all sources together.
    forward_total: TokenBucket,
    /// The owner of each call whose Invite a peer handed here (bounded by
    /// [`replica::MAX_CALL_OWNERS`], oldest first in `call_owner_order`).
    call_owners: HashMap<CallId, ProxyId>,
    call_owner_order: VecDeque<CallId>,
    /// Forked calls' answers and refusals handed to their owners, kept
    /// until decided (spec 15.4).
    decisions: decisions::PendingDecisions,
    /// Control messages handed to peers, kept until acknowledged, and the
    /// acknowledgements owed to peers (spec 15.5).
    handed: handed::Handed,
    /// The peer proxies this one may send peer messages to (see
    /// [`Proxy::set_peers`]); none by default (a proxy alone).
    peers: std::collections::HashSet<ProxyId>,
    /// Peers reported down ([`Proxy::peer_down`]) and not up again
    /// ([`Proxy::peer_up`]), and the members (this proxy and the peers)
    /// that are not: the lowest of these decides for a dead owner (spec
    /// 15.4).
    down: BTreeSet<ProxyId>,
    live: BTreeSet<ProxyId>,
}

/// How often expiry sweeps run.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Proxy {
    /// A proxy with no sessions, starting at `now`. Its wall clock (for
    /// handshake timestamps) is the system's, read once here; see
    /// [`Proxy::with_wall_clock`] to give it one. It has no send epochs:
    /// handshakes are answered `Busy` and imports refused until the shell
    /// grants a lease through [`Proxy::epochs`] (tests:
    /// `proxy.epochs().grant(EpochLease::ephemeral())`).
    pub fn new(cfg: ProxyConfig, subscribers: Subscribers, now: Instant) -> Self {
        let network_public = cfg.network_key.public();
        let proxy_id = cfg.proxy_id;
        let wall = WallClock::system(now);
        let replay = ReplayTable::new(wall.at(now), cfg.replay_max_keys);
        let cfg_max_events = cfg.max_events;
        Self {
            macs: NetworkMacs::new(&network_public),
            cookies: CookieSecret::new(now),
            load: LoadMeter::new(cfg.dos.under_load_handshakes_per_s),
            limiter: RateLimiter::new(cfg.dos.per_ip_rate_per_s, cfg.dos.per_ip_burst),
            cfg,
            subscribers,
            replay,
            wall,
            refusal_log: accept::RefusalLog::default(),
            sessions: HashMap::new(),
            session_order: BTreeSet::new(),
            epochs: Epochs::new(proxy_id),
            by_key: HashMap::new(),
            registry: Registry::default(),
            calls: CallTable::default(),
            queue: VecDeque::new(),
            timers: timers::SessionTimers::default(),
            expiry: timers::SessionTimers::default(),
            next_sweep: now + SWEEP_INTERVAL,
            stats: ProxyStats::default(),
            summary: timers::Summary::default(),
            events: events::EventQueue::new(cfg_max_events),
            peer_out: VecDeque::new(),
            forward_out: VecDeque::new(),
            call_owners: HashMap::new(),
            call_owner_order: VecDeque::new(),
            decisions: decisions::PendingDecisions::default(),
            handed: handed::Handed::default(),
            psp: PspStats::default(),
            peers: Default::default(),
            down: BTreeSet::new(),
            live: BTreeSet::from([proxy_id]),
            forward_limiter: RateLimiter::new(replica::FORWARD_RATE_PER_S, replica::FORWARD_BURST),
            forward_total: TokenBucket::new(
                replica::FORWARD_TOTAL_RATE_PER_S,
                replica::FORWARD_TOTAL_BURST,
            ),
        }
    }

    /// This proxy's id (its sender id, and its node id in anypsp).
    pub fn proxy_id(&self) -> ProxyId {
        self.cfg.proxy_id
    }

    /// The network's public key (what clients must be configured with).
    pub fn network_public(&self) -> PublicKey {
        self.cfg.network_key.public()
    }

    /// This proxy's send-epoch allocator. The shell grants leases through
    /// it (a clone is a handle to the same allocator) when
    /// [`Epochs::wants_lease`] says so.
    pub fn epochs(&self) -> &Epochs {
        &self.epochs
    }

    /// Counters since start.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Entries in the retransmission timer structure: at most one per
    /// session (for tests and status).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// Control messages sent to session `sid` and not yet acknowledged (at
    /// most [`MAX_PENDING`](crate::call::reliable::MAX_PENDING)).
    pub fn control_pending(&self, sid: SessionId) -> usize {
        self.sessions
            .get(&sid)
            .map_or(0, |s| s.reliable.in_flight())
    }

    /// How many more control messages could be queued to session `sid` now
    /// (0 if it does not exist). Call set-up checks it to refuse a leg
    /// rather than offer a call it cannot deliver.
    pub fn control_room(&self, sid: SessionId) -> usize {
        self.sessions.get(&sid).map_or(0, |s| s.reliable.room())
    }

    /// Counts a datagram the shell dropped before handing it to the core
    /// (e.g. [`DropReason::Oversized`]: larger than its receive buffer).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.drops.add(reason);
    }

    /// Sessions held now.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Calls in progress (ringing or answered).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// What this proxy carries: how many sessions it serves itself (not
    /// replicas it holds for a peer; adopted ones included) have a role
    /// in a call, as caller, offered device or answering callee. Zero
    /// means a restart of this proxy would cut no call it carries (the
    /// hosted proxy's deferred reload waits for that). O(1).
    pub fn carried_sessions(&self) -> usize {
        self.calls.served_in_calls()
    }

    /// Tells the call table whether session `id` is served here now; run
    /// after every change of a session's `serving` or of the session map.
    /// O(1).
    pub(crate) fn note_serving(&mut self, id: SessionId) {
        let me = self.cfg.proxy_id;
        let served = self.sessions.get(&id).is_some_and(|s| s.serving == me);
        self.calls.set_served(id, served);
    }

    /// [`carried_sessions`](Self::carried_sessions) counted afresh over
    /// every session, for tests (the test bed checks they agree). O(n).
    #[doc(hidden)]
    pub fn carried_sessions_counted(&self) -> usize {
        let me = self.cfg.proxy_id;
        self.sessions
            .iter()
            .filter(|(id, s)| s.serving == me && self.calls_of_session(**id) > 0)
            .count()
    }

    /// Whether this proxy holds call `id` (set up here or replicated).
    /// O(1).
    pub fn holds_call(&self, id: CallId) -> bool {
        self.calls.get(&id).is_some()
    }

    /// Authorised (name, key) pairs in the subscriber snapshot.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Registered (name, device) bindings.
    pub fn registration_count(&self) -> usize {
        self.registry.len()
    }

    /// Facts about every session, replicas of sessions other proxies serve
    /// included (see [`SessionInfo::serving`]).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions
            .iter()
            .map(|(id, s)| SessionInfo {
                id: *id,
                client_key: s.client_key,
                addr: s.addr,
                local_ip: s.local_ip,
                serving: s.serving,
            })
            .collect()
    }

    /// A page of [`sessions`](Self::sessions) in session id order: at most
    /// `limit` sessions with an id above `after` (all from the first when
    /// `None`), each with its registered names and its calls. Costs
    /// O(log n + limit), so a listing of any size holds the core for one
    /// page at a time.
    pub fn sessions_page(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Vec<(SessionInfo, Vec<crate::call::Name>, usize)> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.session_order
            .range((from, Bound::Unbounded))
            .filter_map(|id| {
                let s = self.sessions.get(id)?;
                let info = SessionInfo {
                    id: *id,
                    client_key: s.client_key,
                    addr: s.addr,
                    local_ip: s.local_ip,
                    serving: s.serving,
                };
                let names = self.registry.bindings_of(*id).into_iter().map(|b| b.0);
                Some((info, names.collect(), self.calls_of_session(*id)))
            })
            .take(limit)
            .collect()
    }

    /// Replaces the subscriber snapshot. Sessions of keys no longer present
    /// end at once and registrations no longer allowed are dropped, so
    /// removing a subscriber revokes it.
    pub fn set_subscribers(&mut self, now: Instant, subscribers: Subscribers) {
        self.subscribers = subscribers;
        let revoked: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !self.subscribers.is_authorized(&s.client_key))
            .map(|(id, _)| *id)
            .collect();
        for id in revoked {
            // The other party of its calls sees the session vanish: a network
            // failure from where it stands.
            self.end_session(now, id, Cause::NetworkFailure);
        }
        let (subs, sessions) = (&self.subscribers, &self.sessions);
        let gone = self.registry.retain(|name, sid| {
            sessions
                .get(&sid)
                .is_some_and(|s| subs.may_use(&s.client_key, name))
        });
        let me = self.cfg.proxy_id;
        for (name, session) in gone {
            // A binding of a session served elsewhere goes here only: its
            // serving proxy, told of the same revocation, removes it for all.
            if self.sessions.get(&session).is_none_or(|s| s.serving == me) {
                self.emit(ProxyEvent::Unregistered { name, session });
            }
        }
    }

    /// The exportable state of a session (for handing it to another proxy).
    pub fn export_session(&self, id: SessionId) -> Option<SessionState> {
        self.sessions
            .get(&id)
            .map(|s| s.crypto.export(s.client_key))
    }

    /// Installs a session exported by another proxy (or by this one, before
    /// or after a restart). Its packets will then be accepted here and
    /// answered with this proxy's sender id, in a fresh send epoch. Refused,
    /// with nothing changed, if the epoch lease has none left (spec 8.7).
    pub fn import_session(
        &mut self,
        now: Instant,
        state: &SessionState,
        addr: SocketAddr,
    ) -> Result<(), EpochsExhausted> {
        let crypto = SessionCrypto::import(state, &self.epochs)?;
        if let Some(old) = self.by_key.get(&state.client_key).copied() {
            if old != state.id {
                self.end_session(now, old, Cause::NetworkFailure);
            }
        }
        let session = Box::new(ClientSession {
            crypto: Keys::whole(crypto),
            client_key: state.client_key,
            addr,
            local_ip: None,
            last_seen: now,
            reliable: ReliableSender::new(),
            received: None,
            serving: self.cfg.proxy_id,
            adopted: false,
            floor: state.client_counter_floor,
            pending_move: None,
        });
        self.by_key.insert(state.client_key, state.id);
        self.session_order.insert(state.id);
        if self.sessions.insert(state.id, session).is_some() {
            // The replaced state's pending messages are gone with it.
            self.timers.set(state.id, None);
        }
        self.note_serving(state.id);
        self.arm_expiry(state.id, now);
        self.emit_session(now, state.id, true);
        Ok(())
    }

    /// Test hook: moves the proxy's `seq` on session `id` forward within its
    /// epoch (see [`SessionCrypto::skip_seq_for_test`]).
    #[doc(hidden)]
    pub fn skip_seq_for_test(&mut self, id: SessionId, seq: u32) {
        if let Some(c) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.crypto.whole_mut())
        {
            c.skip_seq_for_test(seq);
        }
    }

    fn drop_packet(&mut self, reason: DropReason) -> Option<Transmit> {
        self.stats.drops.add(reason);
        None
    }

    /// Handles one received datagram. `dst_ip` is the local address it was
    /// sent to (from IP_PKTINFO); `out` must hold [`MAX_DATAGRAM`] bytes.
    /// Returns a datagram written to `out`, if one should be sent now.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst_ip: Option<IpAddr>,
        datagram: &mut [u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        self.stats.packets_in += 1;
        let result = match classify(datagram) {
            Ok(MessageType::Transport) => self.on_transport(now, src, dst_ip, datagram, out),
            Ok(MessageType::HandshakeInit) => self.on_init(now, src, dst_ip, datagram, out),
            Ok(MessageType::HandshakeResponse | MessageType::CookieReply) => {
                Err(DropReason::Unexpected)
            }
            Err(r) => Err(r),
        };
        match result {
            Ok(Some(t)) => {
                self.stats.packets_out += 1;
                Some(t)
            }
            Ok(None) => None,
            Err(reason) => self.drop_packet(reason),
        }
    }

    fn on_transport(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst_ip: Option<IpAddr>,
        d: &mut [u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let header = TransportHeader::parse(d)?;
        let sid = header.session;
        let me = self.cfg.proxy_id;
        let Some(session) = self.sessions.get_mut(&sid) else {
            // Not held (yet): its home may have it (anypsp forward to home).
            self.forward_to_home(now, sid, src, dst_ip, d);
            return Err(DropReason::UnknownSession);
        };
        // A compact replica is made whole on its client's first packet here.
        let crypto = session
            .crypto
            .get(&self.epochs)
            .map_err(|_| DropReason::CannotAnswer)?;
        let floor_before = crypto.client_floor();
        let opened = crypto.open(&header, d)?;
        // A replica takes over (and moves the address) only on a packet the
        // serving proxy never saw: a replay of a recent packet is the newest
        // here too. Confirmed by the serving proxy (Probe/Confirm), or by
        // its death (adopted), or by a counter a FLOOR_STEP past the last
        // floor it reported (spec 15.9).
        let mut unconfirmed = opened.newest
            && session.serving != me
            && !session.adopted
            && header.counter < session.floor.saturating_add(replica::FLOOR_STEP);
        let mut probe = None;
        if unconfirmed {
            let m = session.pending_move.get_or_insert(replica::PendingMove {
                src,
                dst_ip,
                counter: header.counter,
                probed: None,
                unanswered: None,
            });
            (m.src, m.dst_ip, m.counter) = (src, dst_ip, header.counter);
            if m.unanswered
                .is_some_and(|t| now >= t + replica::PROBE_TIMEOUT)
            {
                // The serving proxy answers no more: dead or cut off.
                unconfirmed = false;
                self.psp.probes_unanswered += 1;
            } else if m.probed.is_none_or(|t| now >= t + replica::PROBE_RETRY) {
                m.probed = Some(now);
                m.unanswered.get_or_insert(now);
                probe = Some(session.serving);
            }
        }
        let newest = opened.newest && !unconfirmed;
        // The serving proxy reports the client's counter floor every
        // FLOOR_STEP packets, so a replica refuses what it saw (spec 15.9).
        let floor_due = session.serving == me
            && session.crypto.client_floor() / replica::FLOOR_STEP
                != floor_before / replica::FLOOR_STEP;
        // The address is learned only from an authenticated packet that is
        // the newest so far: a replayed or delayed packet cannot move it.
        let mut changed = false;
        if newest && (session.addr != src || session.local_ip != dst_ip) {
            if session.addr != src {
                log::debug!("session {sid} moved {} -> {src}", session.addr);
                self.stats.address_changes += 1;
            }
            session.addr = src;
            session.local_ip = dst_ip;
            changed = true;
        }
        // Take-over (anypsp): the client now reaches this proxy, so this
        // proxy serves it. Only the newest packet counts, so a delayed copy
        // cannot pull a session back and forth.
        let take_over = newest && (session.serving != me || session.adopted);
        // Taken from a live serving proxy without its confirmation (its probe
        // unanswered, or a counter far past its floor): what was handed to
        // it and not acknowledged may be lost with it (spec 15.5).
        let replaced = (take_over && session.serving != me).then_some(session.serving);
        if take_over {
            session.adopted = false;
            session.pending_move = None;
            log::debug!("session {sid}: taken over from proxy {}", session.serving);
            session.serving = me;
        }
        session.last_seen = now;
        if take_over {
            self.psp.takeovers += 1;
            self.note_serving(sid);
            self.arm_expiry(sid, now);
        }
        if changed || take_over || floor_due {
            self.emit_session(now, sid, false);
        }
        if let Some(old) = replaced {
            self.rehand_session(now, sid, old);
        }
        if let Some(serving) = probe {
            let msg = PeerMessage::Probe {
                to: sid,
                counter: header.counter,
            };
            if self.send_peer(serving, &msg) {
                self.psp.probes_sent += 1;
            }
        }
        self.on_opened(now, sid, opened.plaintext, out)
    }

    /// Acts on the authenticated inner message of session `sid`.
    fn on_opened(
        &mut self,
        now: Instant,
        sid: SessionId,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let session = self
            .sessions
            .get_mut(&sid)
            .ok_or(DropReason::UnknownSession)?;
        match Inner::parse(plaintext)? {
            Inner::Keepalive => {
                // Answered, so the client can tell a dead path from a quiet one.
                let len = session
                    .crypto
                    .seal(out, |b| Inner::Keepalive.encode(b))
                    .ok_or(DropReason::CannotAnswer)?;
                Ok(Some(Transmit {
                    dst: session.addr,
                    src_ip: session.local_ip,
                    len,
                }))
            }
            Inner::Ack { msg_id } => {
                if session.reliable.ack(msg_id) {
                    self.rearm(sid);
                }
                Ok(None)
            }
            Inner::Control { msg_id, body } => {
                // Backpressure: a new message is acted on only if its reply
                // to the sender could be queued. Otherwise it is neither
                // acknowledged nor marked seen: an honest client retransmits
                // it after acknowledging what it was sent; a client that
                // acknowledges nothing gets nothing more.
                let new = !session.received.as_ref().is_some_and(|r| r.seen(msg_id));
                if session.reliable.room() == 0 && new {
                    return Err(DropReason::ControlBacklog);
                }
                let parsed = new.then(|| ControlMsg::parse(body));
                // CallData from a device whose Answer was lost (and is being
                // retransmitted) is not acknowledged: the device sends it
                // again after its Answer, rather than the proxy dropping a
                // digit for good.
                if let Some(Ok(ControlMsg::CallData { call, .. })) = &parsed {
                    if self.calls.get(call).is_some_and(|c| c.is_leg(sid)) {
                        return Err(DropReason::AnswerPending);
                    }
                }
                let first = session
                    .received
                    .get_or_insert_with(Box::default)
                    .first_time(msg_id);
                let len = session
                    .crypto
                    .seal(out, |b| Inner::Ack { msg_id }.encode(b))
                    .ok_or(DropReason::CannotAnswer)?;
                let ack = Transmit {
                    dst: session.addr,
                    src_ip: session.local_ip,
                    len,
                };
                if let (true, Some(parsed)) = (first, parsed) {
                    match parsed {
                        Ok(msg) => self.on_control(now, sid, msg),
                        Err(r) => self.stats.drops.add(r),
                    }
                }
                Ok(Some(ack))
            }
            Inner::Media { call, e2e } => self.relay_media(now, sid, call, e2e, out),
        }
    }

    /// The voice path: one lookup of the call (which also notes that media
    /// came from this side, for the media timeout), one seal for the other
    /// party, written straight into `out`.
    fn relay_media(
        &mut self,
        now: Instant,
        from: SessionId,
        call: CallId,
        e2e: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let peer = self
            .calls
            .media_peer(call, from, now)
            .ok_or(DropReason::UnknownCall)?;
        let to = peer;
        let peer = self
            .sessions
            .get_mut(&peer)
            .ok_or(DropReason::UnknownCall)?;
        if self.cfg.relay_via_serving && peer.serving != self.cfg.proxy_id {
            // Strict uRPF mode: the serving proxy seals and sends it.
            let serving = peer.serving;
            let msg = PeerMessage::Media {
                to,
                call,
                e2e: e2e.to_vec(),
            };
            self.send_peer(serving, &msg);
            return Ok(None);
        }
        // Shortest path: a compact replica is made whole on its first frame.
        let len = peer
            .crypto
            .get(&self.epochs)
            .ok()
            .and_then(|c| c.seal(out, |b| Inner::Media { call, e2e }.encode(b)))
            .ok_or(DropReason::CannotAnswer)?;
        self.stats.media_relayed += 1;
        Ok(Some(Transmit {
            dst: peer.addr,
            src_ip: peer.local_ip,
            len,
        }))
    }

    fn on_control(&mut self, now: Instant, from: SessionId, msg: ControlMsg) {
        // A call whose replication has not arrived, or a forked call's
        // answer or refusal: its owner (or the owner's successor) decides.
        if self.request_to_owner(from, &msg) {
            return;
        }
        self.handle_control(now, from, msg);
    }

    /// The cause of a client's Reject or Hangup: an octet outside Q.850's
    /// 1..=127 is taken as the defined cause [`CauseOctet::cause`] gives,
    /// counted in [`ProxyStats::causes_out_of_range`] and logged, so what
    /// the proxy passes on is always a Q.850 cause.
    fn received_cause(&mut self, from: SessionId, call: CallId, octet: CauseOctet) -> Cause {
        octet.cause().unwrap_or_else(|e| {
            self.stats.causes_out_of_range += 1;
            log::debug!("session {from}, call {call}: {e}");
            e.mapped
        })
    }

    /// Acts on a client's control message (received here, or handed here by
    /// a peer as a `Request`).
    fn handle_control(&mut self, now: Instant, from: SessionId, msg: ControlMsg) {
        match msg {
            ControlMsg::Register { expires_s, name } => {
                self.on_register(now, from, name, expires_s)
            }
            ControlMsg::Invite {
                call,
                to,
                from: caller_name,
                codecs,
                e2e,
                ..
            } => self.on_invite(now, from, call, to, caller_name, codecs, e2e),
            ControlMsg::Ringing { call } => self.on_ringing(now, from, call),
            ControlMsg::Answer { call, e2e, .. } => self.on_answer(now, from, call, e2e),
            ControlMsg::Reject { call, cause } => {
                let cause = self.received_cause(from, call, cause);
                self.on_reject(now, from, call, cause)
            }
            ControlMsg::Hangup { call, cause } => {
                let cause = self.received_cause(from, call, cause);
                self.on_hangup(now, from, call, cause)
            }
            ControlMsg::CallData { call, e2e } => self.on_call_data(now, from, call, e2e),
            ControlMsg::Registered { .. }
            | ControlMsg::RegisterFailed { .. }
            | ControlMsg::SessionReplaced => self.stats.drops.add(DropReason::Unexpected),
        }
    }

    fn on_register(&mut self, now: Instant, from: SessionId, name: Name, expires_s: u32) {
        let Some(key) = self.sessions.get(&from).map(|s| s.client_key) else {
            return;
        };
        if !self.subscribers.may_use(&key, &name) {
            // Client-controlled: counted, and logged at debug only.
            log::debug!("session {from}: register {name} refused, key not authorised for it");
            self.stats.registrations_refused += 1;
            let cause = crate::wire::control::RegisterCause::NotAuthorized;
            self.send_control(now, from, ControlMsg::RegisterFailed { cause, name });
            return;
        }
        let granted = expires_s.min(self.cfg.max_register_expires_s);
        if granted == 0 {
            if self.registry.unregister(&name, from) {
                self.emit(ProxyEvent::Unregistered {
                    name: name.clone(),
                    session: from,
                });
            }
        } else {
            let expires = now + Duration::from_secs(u64::from(granted));
            let (names, devices) = (
                self.cfg.max_names_per_session,
                self.cfg.max_devices_per_name,
            );
            if let Err(e) = self
                .registry
                .register(name.clone(), from, expires, names, devices)
            {
                log::debug!("session {from}: register {name} refused: {e}");
                self.stats.drops.add(DropReason::RegistrationLimit);
                let cause = crate::wire::control::RegisterCause::Limit;
                self.send_control(now, from, ControlMsg::RegisterFailed { cause, name });
                return;
            }
            self.stats.registrations += 1;
            let expires_unix_ms = self.wall_ms(now).saturating_add(u64::from(granted) * 1000);
            self.emit(ProxyEvent::Registered {
                name: name.clone(),
                session: from,
                expires_unix_ms,
            });
        }
        let reply = ControlMsg::Registered {
            expires_s: granted,
            name,
        };
        self.send_control(now, from, reply);
    }

    /// Queues a control message to a session, reliably. Returns false if
    /// it was not queued: the session is gone, the message does not fit in
    /// a datagram, or the session already has
    /// [`MAX_PENDING`](crate::call::reliable::MAX_PENDING) messages
    /// unacknowledged (the last two are counted in
    /// [`ProxyStats::control_not_queued`]). Check [`Proxy::control_room`]
    /// first where a refusal must be reported to someone.
    pub(crate) fn send_control(&mut self, now: Instant, to: SessionId, msg: ControlMsg) -> bool {
        let Some(s) = self.sessions.get_mut(&to) else {
            return false;
        };

        let mut body = vec![0u8; MAX_DATAGRAM];
        let Some(n) = msg.encode(&mut body) else {
            // Its fields come from clients: debug only, and counted.
            log::debug!("control message to {to} does not fit, not sent: {msg:?}");
            self.stats.control_not_queued += 1;
            return false;
        };
        body.truncate(n);
        if s.serving != self.cfg.proxy_id {
            // anypsp: the serving proxy sends a client its control messages
            // (and retransmits them); this one hands the message over.
            let serving = s.serving;
            return self.hand_control(now, serving, to, 0, body);
        }
        // The end of a call may use the reserve beyond the queue's bound, so
        // a party that filled the other's queue cannot hide it.
        let ends_call = matches!(msg, ControlMsg::Hangup { .. } | ControlMsg::Reject { .. });
        // It also waits behind the call's earlier unacknowledged messages
        // (digits sent just before a Hangup), so they arrive before it.
        let pushed = if ends_call {
            s.reliable.push_after(now, body.clone(), msg.call())
        } else {
            s.reliable
                .push(now, body.clone(), msg.call())
                .map(|id| (id, true))
        };
        let Some((msg_id, send_now)) = pushed else {
            log::debug!("control message to {to} not queued: its queue is full");
            self.stats.control_not_queued += 1;
            return false;
        };
        if !send_now {
            self.rearm(to);
            return true;
        }
        queue_sealed(
            &mut self.queue,
            s,
            Inner::Control {
                msg_id,
                body: &body,
            },
        );
        self.rearm(to);
        true
    }

    /// Sends the next queued datagram into `out`, if any.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<Transmit> {
        let q = self.queue.pop_front()?;
        let len = q.data.len().min(out.len());
        out[..len].copy_from_slice(&q.data[..len]);
        self.stats.packets_out += 1;
        Some(Transmit {
            dst: q.dst,
            src_ip: q.src_ip,
            len,
        })
    }

    /// A newer handshake with the same client key replaces session `old`
    /// (one key, one session: the key is the device's identity). The old
    /// session is told with [`ControlMsg::SessionReplaced`] before it is
    /// forgotten, so its client stops at once instead of noticing silence
    /// and logging in again (which would evict the new one in turn). Sent
    /// twice under one message id (the client acts on it once), never
    /// retransmitted: the session is gone.
    pub(super) fn replace_session(&mut self, now: Instant, old: SessionId) {
        if let Some(s) = self.sessions.get_mut(&old) {
            // A compact replica is made whole to be told (spec 15.2); without
            // an epoch left it is not told.
            let _ = s.crypto.get(&self.epochs);
            let mut body = [0u8; 1];
            if let Some(n) = ControlMsg::SessionReplaced.encode(&mut body) {
                // Never retransmitted: an id, not a place in the (bounded)
                // queue, which may be full.
                let msg_id = s.reliable.take_id();
                for _ in 0..2 {
                    let inner = Inner::Control {
                        msg_id,
                        body: &body[..n],
                    };
                    queue_sealed(&mut self.queue, s, inner);
                }
            }
        }
        self.end_session(now, old, Cause::NetworkFailure);
    }

    /// Ends a session: its registrations go, its calls end for the other side.
    fn end_session(&mut self, now: Instant, id: SessionId, cause: Cause) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        self.session_order.remove(&id);
        if self.by_key.get(&s.client_key) == Some(&id) {
            self.by_key.remove(&s.client_key);
        }
        self.note_serving(id);
        self.timers.set(id, None);
        self.expiry.set(id, None);
        self.registry.remove_session(id);
        self.emit(ProxyEvent::SessionDown { id, cause });
        self.session_gone_from_calls(now, id, cause);
    }
}

fn queue_sealed(queue: &mut VecDeque<Queued>, s: &mut ClientSession, inner: Inner<'_>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    if let Some(n) = s.crypto.seal(&mut buf, |b| inner.encode(b)) {
        buf.truncate(n);
        queue.push_back(Queued {
            dst: s.addr,
            src_ip: s.local_ip,
            data: buf,
        });
    }
}
