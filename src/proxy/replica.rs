//! The proxy side of anypsp (docs/anypsp-protocol.md section 15): state that other
//! proxies replicated here ([`Proxy::apply_remote`]) and the messages that
//! cross between proxies ([`PeerMessage`]: a control message for a client
//! another proxy serves, a client packet forwarded to its session's home).
//!
//! Rules. The proxy that serves a client (the one its packets reach now)
//! sends it its control messages and retransmits them; any other proxy
//! hands such a message to the serving one. A request is handled by the
//! proxy that receives it, on its (replicated) copy of the call and
//! registration state. Voice takes the shortest path: the proxy that
//! receives a frame seals it for the other party with its own sender id and
//! sends it straight to that party. Remote entries never cause control
//! traffic by themselves: applying a change sends nothing.

pub use super::peer_msg::PeerMessage;
use super::{ClientSession, Keys, Proxy, ProxyEvent, SessionRecord, Transmit};
use crate::call::reliable::ReliableSender;
use crate::session::{EpochsExhausted, ProxyId, SessionCrypto, SessionId};
use crate::wire::control::ControlMsg;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Default bound of the peer-bound queue (messages).
pub const DEFAULT_MAX_PEER_QUEUE: usize = 4096;

/// Packets forwarded to their home per source IP address: bucket size.
/// Forwarding is needed only in the moment between a session's creation
/// and its replication (tens of milliseconds), so a legitimate client needs
/// a few packets; a forger gets no more than this (plus the rate).
pub const FORWARD_BURST: u32 = 64;

/// Packets forwarded to their home per source IP address: sustained rate
/// per second.
pub const FORWARD_RATE_PER_S: u32 = 50;

/// Packets forwarded to their home by this proxy, all sources together:
/// bucket size. Per-source buckets bound nothing against a forger who
/// spoofs many sources; this one does. Honest forwarding (a client whose
/// route moved in the tens of milliseconds before its new session
/// replicated) stays far below it.
pub const FORWARD_TOTAL_BURST: u32 = 256;

/// Packets forwarded to their home, all sources together: sustained rate
/// per second.
pub const FORWARD_TOTAL_RATE_PER_S: u32 = 500;

/// Most forwarded packets waiting for the peer links. They have a queue of
/// their own, drained after the authenticated peer traffic (Control,
/// Media), so forged forwards can neither delay nor crowd out a control
/// message.
pub const MAX_FORWARD_QUEUE: usize = 1024;

/// The serving proxy reports a client's counter floor (in
/// `SessionUpdated`) each time the client's newest counter crosses a
/// multiple of this: a replica accepts a replayed client packet only if it is
/// among about this many newest (about 5 s of voice at 50 packets/s).
pub const FLOOR_STEP: u64 = 256;

/// A replica that got a newest client packet it may not take over on yet
/// asks the serving proxy again after this long (at most), while the
/// client's packets keep coming and no answer came.
pub const PROBE_RETRY: Duration = Duration::from_millis(100);

/// A probe the serving proxy leaves unanswered this long means it is dead
/// or cut off (a live one answers every probe, confirming or refusing):
/// the client's next newest packet takes the session over. Several
/// proxy-to-proxy round trips; the peer link is reliable (TCP).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// A newest client packet at a replica, waiting for the serving proxy to
/// confirm that it never saw its counter (spec 15.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingMove {
    /// Where it came from (the address the session moves to).
    pub(crate) src: SocketAddr,
    /// The local address it was sent to.
    pub(crate) dst_ip: Option<IpAddr>,
    /// Its client counter.
    pub(crate) counter: u64,
    /// When the serving proxy was last asked.
    pub(crate) probed: Option<Instant>,
    /// When the oldest probe still unanswered was sent.
    pub(crate) unanswered: Option<Instant>,
}

/// A control message for a client served elsewhere crosses at most this
/// many proxies (views of who serves a client may differ for a moment
/// during a take-over; the limit ends any loop).
pub const MAX_CONTROL_HOPS: u8 = 2;

/// anypsp counters of one proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PspStats {
    /// Sessions this proxy took over (an authenticated packet from a client
    /// another proxy served).
    pub takeovers: u64,
    /// Transport packets for a session not held here forwarded to its home.
    pub forwarded_to_home: u64,
    /// Packets not forwarded to their home: their source was over
    /// [`FORWARD_RATE_PER_S`] / [`FORWARD_BURST`], or all sources together
    /// over [`FORWARD_TOTAL_RATE_PER_S`] / [`FORWARD_TOTAL_BURST`].
    pub forward_limited: u64,
    /// Packets not forwarded to their home: the forward queue
    /// ([`MAX_FORWARD_QUEUE`]) was full.
    pub forward_queue_full: u64,
    /// Forwarded packets received and handled as if from the client.
    pub forwarded_in: u64,
    /// Forwarded packets whose session the home does not hold either.
    pub forwarded_unknown: u64,
    /// Control messages handed to the serving proxy of their client.
    pub control_to_peer: u64,
    /// Control messages received from peers for clients served here.
    pub control_from_peer: u64,
    /// Sessions adopted because their serving proxy went down.
    pub adopted: u64,
    /// Control messages dropped after [`MAX_CONTROL_HOPS`] proxies.
    pub control_lost: u64,
    /// Peer messages not queued because they were for a proxy that is not a
    /// configured peer (see [`Proxy::set_peers`]).
    pub not_a_peer: u64,
    /// Peer messages dropped because the peer-bound queue was full.
    pub peer_queue_full: u64,
    /// Peer messages that did not parse (dropped).
    pub peer_malformed: u64,
    /// Probes sent: a newest client packet for a session another proxy
    /// serves, to be confirmed by it before this proxy takes over.
    pub probes_sent: u64,
    /// Probes this proxy, serving the session, confirmed (it never saw the
    /// counter: the client moved).
    pub probes_confirmed: u64,
    /// Probes this proxy refused (it saw that counter or a newer one: a
    /// replay or a delayed copy; or it does not serve the session).
    pub probes_refused: u64,
    /// Sessions taken over because their serving proxy left a probe
    /// unanswered for [`PROBE_TIMEOUT`] (dead or cut off).
    pub probes_unanswered: u64,
    /// Client call requests (Ringing, Answer, Reject, Hangup, CallData) for
    /// a call not held here, handed to the call's owner (spec 15.4).
    pub requests_to_owner: u64,
    /// Call requests handed here by a peer, handled as if from the client.
    pub requests_from_peer: u64,
    /// Control messages handed to a serving proxy that did not acknowledge
    /// them (it died, or a take-over replaced it), handled again here (spec
    /// 15.5).
    pub control_rehandled: u64,
    /// Acknowledgements received for control messages handed to peers.
    pub control_acks_in: u64,
    /// Acknowledgements sent for control messages handed here.
    pub control_acks_out: u64,
    /// Acknowledgements not sent: more than
    /// [`MAX_ACKS_OWED`](super::handed::MAX_ACKS_OWED) owed to one peer.
    pub acks_not_owed: u64,
    /// Handed control messages forgotten unacknowledged, beyond
    /// [`MAX_HANDED_PER_PEER`](super::handed::MAX_HANDED_PER_PEER) for one
    /// peer.
    pub handed_forgotten: u64,
    /// Replicated changes installed.
    pub applied: u64,
    /// Replicated changes refused (see [`ApplyError`]).
    pub apply_refused: u64,
    /// Replicated registrations dropped here unrefreshed
    /// [`REPLICA_GRACE`](super::registry::REPLICA_GRACE) past their expiry,
    /// their session served by another proxy (which alone expires them).
    pub replica_bindings_dropped: u64,
    /// Answers and refusals of forked calls handed to their owner (or its
    /// successor) and handled again, that proxy reported down before its
    /// decision arrived: decided here, or handed to the next successor
    /// (spec 15.4).
    pub decisions_taken_back: u64,
}

/// Most (call, owner) pairs remembered from Invites handed over by peers
/// (oldest forgotten first): the owner of a call whose replication has not
/// arrived, for [`PeerMessage::Request`].
pub const MAX_CALL_OWNERS: usize = 1 << 16;

/// Why a replicated change was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// It names a session this proxy does not hold (anti-entropy brings it).
    UnknownSession(SessionId),
    /// The session or call table is full (`max_sessions`, `max_calls`).
    Full,
    /// No send epoch left to import the session with (spec 8.7).
    Epochs(EpochsExhausted),
    /// The registry refused the binding (per-session or per-name limit).
    Limit,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownSession(s) => write!(f, "unknown session {s}"),
            Self::Full => f.write_str("table full"),
            Self::Epochs(_) => f.write_str("no send epoch left"),
            Self::Limit => f.write_str("registration limit"),
        }
    }
}

impl std::error::Error for ApplyError {}

impl Proxy {
    /// anypsp counters.
    pub fn psp_stats(&self) -> &PspStats {
        &self.psp
    }

    /// Whether this proxy holds session `id` with whole keys (served or used
    /// here), not in the compact replica form (spec 16.9). `None` if not
    /// held.
    pub fn session_is_whole(&self, id: SessionId) -> Option<bool> {
        self.sessions.get(&id).map(|s| s.crypto.is_whole())
    }

    /// The proxy serving session `id` as this proxy sees it.
    pub fn serving_proxy(&self, id: SessionId) -> Option<ProxyId> {
        self.sessions.get(&id).map(|s| s.serving)
    }

    /// The next message for a peer proxy: (peer, bytes of a
    /// [`PeerMessage`]). The shell sends it over the anypsp link.
    /// Authenticated peer traffic (Control, Media) leaves first; forwarded
    /// client packets (unauthenticated) only when none is waiting.
    /// Acknowledgements of handed control messages leave first, all those
    /// owed to a peer at this moment in one message (spec 15.5).
    pub fn poll_peer_transmit(&mut self) -> Option<(ProxyId, Vec<u8>)> {
        if let Some((peer, seqs)) = self.handed.next_acks() {
            self.psp.control_acks_out += seqs.len() as u64;
            return Some((peer, PeerMessage::Acks { seqs }.encode()));
        }
        self.peer_out
            .pop_front()
            .or_else(|| self.forward_out.pop_front())
    }

    /// Sets the peer proxies (the membership): peer messages go only to
    /// them, so a proxy alone (the default: none) never queues any, and a
    /// forged session id naming an unknown home is not forwarded.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = ProxyId>) {
        let me = self.cfg.proxy_id;
        self.peers = peers.into_iter().filter(|p| *p != me).collect();
        let down = &self.down;
        self.live = self
            .peers
            .iter()
            .copied()
            .filter(|p| !down.contains(p))
            .chain([me])
            .collect();
    }

    /// The link layer has a working link to peer `peer` again (after
    /// [`Proxy::peer_down`]: it restarted, or the partition healed): it
    /// decides its own calls again, and may succeed a dead owner (spec
    /// 15.4).
    pub fn peer_up(&mut self, peer: ProxyId) {
        if self.down.remove(&peer) && self.peers.contains(&peer) {
            self.live.insert(peer);
        }
    }

    /// Messages waiting for peers (both queues).
    pub fn peer_queue_len(&self) -> usize {
        self.peer_out.len() + self.forward_out.len()
    }

    /// Control messages handed to serving proxies and not acknowledged by
    /// them yet (spec 15.5).
    pub fn handed_unacked(&self) -> usize {
        self.handed.len()
    }

    /// Hands control message `body` for session `to` to its serving proxy
    /// `peer`, and keeps it until `peer` acknowledges it. False if not
    /// queued (counted in [`Proxy::send_peer`]).
    pub(super) fn hand_control(
        &mut self,
        now: Instant,
        peer: ProxyId,
        to: SessionId,
        hops: u8,
        body: Vec<u8>,
    ) -> bool {
        let seq = self.handed.next_seq();
        let msg = PeerMessage::Control {
            to,
            hops,
            seq,
            body,
        };
        if !self.send_peer(peer, &msg) {
            return false;
        }
        let PeerMessage::Control { body, .. } = msg else {
            return true;
        };
        if self.handed.keep(now, peer, seq, to, body) {
            self.psp.handed_forgotten += 1;
        }
        true
    }

    /// Handles again control messages that a serving proxy did not
    /// acknowledge (dead, or replaced by a take-over): sent from here if
    /// this proxy serves their client now, else handed to the one that does.
    fn rehandle(&mut self, now: Instant, msgs: Vec<super::handed::HandedMsg>) {
        for m in msgs {
            let Ok(msg) = ControlMsg::parse(&m.body) else {
                continue;
            };
            if self.send_control(now, m.to, msg) {
                self.psp.control_rehandled += 1;
            }
        }
    }

    /// Session `sid` is no longer served by `old` (a take-over): what was
    /// handed to `old` for it and not acknowledged is handled again.
    pub(super) fn rehand_session(&mut self, now: Instant, sid: SessionId, old: ProxyId) {
        let msgs = self.handed.take_session(now, sid, old);
        self.rehandle(now, msgs);
    }

    /// Queues a message for `to`; false (and counted) if the queue is full.
    pub(super) fn send_peer(&mut self, to: ProxyId, msg: &PeerMessage) -> bool {
        if !self.peers.contains(&to) {
            self.psp.not_a_peer += 1;
            return false;
        }
        if self.peer_out.len() >= self.cfg.max_peer_queue {
            self.psp.peer_queue_full += 1;
            return false;
        }
        if matches!(msg, PeerMessage::Control { .. }) {
            self.psp.control_to_peer += 1;
        }
        self.peer_out.push_back((to, msg.encode()));
        true
    }

    /// A transport packet for session `sid`, which this proxy does not
    /// hold: its home (named in the id) may, if replication has not reached
    /// here yet. Forwarded once (the home never forwards it again).
    pub(super) fn forward_to_home(
        &mut self,
        now: Instant,
        sid: SessionId,
        src: SocketAddr,
        dst_ip: Option<IpAddr>,
        d: &[u8],
    ) {
        let home = sid.home();
        if home == self.cfg.proxy_id {
            return;
        }
        if !self.peers.contains(&home) {
            // A forged id naming no proxy of ours: nothing to forward to.
            self.psp.not_a_peer += 1;
            return;
        }
        // Per source first, so one source over its own limit spends none
        // of the network-wide tokens.
        if !self.forward_limiter.allow(now, src.ip()) || !self.forward_total.allow(now) {
            self.psp.forward_limited += 1;
            return;
        }
        if self.forward_out.len() >= MAX_FORWARD_QUEUE {
            self.psp.forward_queue_full += 1;
            return;
        }
        let msg = PeerMessage::Forward {
            src,
            dst_ip,
            datagram: d.to_vec(),
        };
        self.forward_out.push_back((home, msg.encode()));
        self.psp.forwarded_to_home += 1;
    }

    /// Handles a message from peer proxy `from` (already authenticated by
    /// the link). A forwarded client packet is handled as if received from
    /// the client; its answer, if any, is written to `out` (send it to the
    /// client from `src_ip`, as for [`Proxy::handle_datagram`]).
    pub fn handle_peer_message(
        &mut self,
        now: Instant,
        from: ProxyId,
        bytes: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let Some(msg) = PeerMessage::parse(bytes) else {
            log::debug!("malformed message from peer {from}");
            self.psp.peer_malformed += 1;
            return None;
        };
        match msg {
            PeerMessage::Control {
                to,
                hops,
                seq,
                body,
            } => {
                // Taken: the sender may forget it, whatever becomes of it here.
                if !self.handed.owe(from, seq) {
                    self.psp.acks_not_owed += 1;
                }
                let Ok(msg) = ControlMsg::parse(&body) else {
                    self.psp.peer_malformed += 1;
                    return None;
                };
                match (&msg, hops) {
                    // The sender handled the Invite: it owns the call.
                    (ControlMsg::Invite { call, .. }, 0) => self.note_call_owner(*call, from),
                    // The device's part in the call is over (it lost, or
                    // the call ended): the decider spoke, even if its
                    // decision never replicates here (it died first).
                    (ControlMsg::Hangup { call, .. }, _) => self.decisions.settled(*call, Some(to)),
                    _ => {}
                }
                let me = self.cfg.proxy_id;
                match self.sessions.get(&to) {
                    None => {}
                    Some(s) if s.serving != me && hops < MAX_CONTROL_HOPS => {
                        // Our views differ (a take-over in flight): pass it on.
                        let next = s.serving;
                        self.hand_control(now, next, to, hops + 1, body);
                    }
                    Some(s) if s.serving == me => {
                        self.psp.control_from_peer += 1;
                        self.send_control(now, to, msg);
                    }
                    Some(_) => {
                        log::debug!("control message for {to} out of hops, dropped");
                        self.psp.control_lost += 1;
                    }
                }
                None
            }
            PeerMessage::Acks { seqs } => {
                for seq in seqs {
                    if self.handed.remove(from, seq) {
                        self.psp.control_acks_in += 1;
                    }
                }
                None
            }
            PeerMessage::Request { from: sid, body } => {
                let Ok(msg) = ControlMsg::parse(&body) else {
                    self.psp.peer_malformed += 1;
                    return None;
                };
                if self.sessions.contains_key(&sid) {
                    self.psp.requests_from_peer += 1;
                    // Passed on if this proxy is not the call's decider in
                    // its own view (the sender thinks the owner dead, this
                    // one does not): never two deciders (spec 15.4).
                    self.on_control(now, sid, msg);
                } else {
                    log::debug!("request from unknown session {sid} via peer {from}, dropped");
                    self.stats
                        .drops
                        .add(crate::wire::DropReason::UnknownSession);
                }
                None
            }
            PeerMessage::Probe { to, counter } => {
                let me = self.cfg.proxy_id;
                // Only the proxy that really serves the client knows what it
                // saw (an adopter does not).
                let unseen = self.sessions.get(&to).is_some_and(|s| {
                    s.serving == me && !s.adopted && counter >= s.crypto.client_floor()
                });
                let reply = if unseen {
                    self.psp.probes_confirmed += 1;
                    PeerMessage::Confirm { to, counter }
                } else {
                    self.psp.probes_refused += 1;
                    PeerMessage::Refuse { to, counter }
                };
                self.send_peer(from, &reply);
                None
            }
            PeerMessage::Confirm { to, counter } => {
                self.confirmed_move(now, from, to, counter);
                None
            }
            PeerMessage::Refuse { to, counter } => {
                let s = self.sessions.get_mut(&to)?;
                if s.serving == from {
                    // Alive and answering: no take-over on silence. A newer
                    // packet waiting is asked about at its next packet.
                    if s.pending_move.is_some_and(|m| m.counter <= counter) {
                        s.pending_move = None;
                    } else if let Some(m) = &mut s.pending_move {
                        m.probed = None;
                        m.unanswered = None;
                    }
                }
                None
            }
            PeerMessage::Media { to, call, e2e } => {
                let me = self.cfg.proxy_id;
                let s = self.sessions.get_mut(&to).filter(|s| s.serving == me)?;
                let inner = crate::wire::inner::Inner::Media { call, e2e: &e2e };
                let len = s.crypto.seal(out, |b| inner.encode(b))?;
                self.stats.media_relayed += 1;
                self.stats.packets_out += 1;
                Some(Transmit {
                    dst: s.addr,
                    src_ip: s.local_ip,
                    len,
                })
            }
            PeerMessage::Forward {
                src,
                dst_ip,
                mut datagram,
            } => {
                let held = crate::wire::transport::TransportHeader::parse(&datagram)
                    .is_ok_and(|h| self.sessions.contains_key(&h.session));
                if !held {
                    self.psp.forwarded_unknown += 1;
                    return None;
                }
                self.psp.forwarded_in += 1;
                self.handle_datagram(now, src, dst_ip, &mut datagram, out)
            }
        }
    }

    /// The serving proxy `from` confirmed that it never saw client counter
    /// `counter` of session `to`: the client moved here, so this proxy
    /// takes it over, at the address of its newest packet here.
    fn confirmed_move(&mut self, now: Instant, from: ProxyId, to: SessionId, counter: u64) {
        let me = self.cfg.proxy_id;
        let Some(s) = self.sessions.get_mut(&to) else {
            return;
        };
        // Only the proxy serving it may confirm, and only what was asked.
        if s.serving != from || s.serving == me {
            return;
        }
        let Some(m) = s.pending_move.take_if(|m| m.counter >= counter) else {
            return;
        };
        if s.addr != m.src {
            log::debug!("session {to} moved {} -> {}", s.addr, m.src);
            self.stats.address_changes += 1;
        }
        log::debug!("session {to}: taken over from proxy {from} (confirmed)");
        s.addr = m.src;
        s.local_ip = m.dst_ip;
        s.serving = me;
        s.adopted = false;
        s.last_seen = now;
        self.psp.takeovers += 1;
        self.note_serving(to);
        self.arm_expiry(to, now);
        self.emit_session(now, to, false);
    }

    /// Installs a change another proxy reported (its [`ProxyEvent`]). A
    /// session is kept as a compact replica, imported in a fresh send epoch
    /// (nonce-safe by construction) on its first use here, ready to take
    /// over (spec 15.2), but this proxy runs no
    /// timers and no expiry for it while another serves it. Nothing is sent
    /// and no event is emitted (no echo), but for a session taken back after
    /// a restart (spec 15.3), which emits `SessionUpdated`.
    pub fn apply_remote(&mut self, now: Instant, change: &ProxyEvent) -> Result<(), ApplyError> {
        let r = self.apply(now, change);
        match r {
            Ok(()) => self.psp.applied += 1,
            Err(e) => {
                log::debug!("replicated change not applied: {e}");
                self.psp.apply_refused += 1;
            }
        }
        r
    }

    fn apply(&mut self, now: Instant, change: &ProxyEvent) -> Result<(), ApplyError> {
        let me = self.cfg.proxy_id;
        match change {
            ProxyEvent::SessionUp(r) | ProxyEvent::SessionUpdated(r) => self.apply_session(now, r),
            ProxyEvent::SessionDown { id, .. } => {
                if self.sessions.get(id).is_some_and(|s| s.serving != me) {
                    self.forget_session(*id);
                }
                Ok(())
            }
            ProxyEvent::Registered {
                name,
                session,
                expires_unix_ms,
            } => {
                if !self.sessions.contains_key(session) {
                    return Err(ApplyError::UnknownSession(*session));
                }
                let left = expires_unix_ms.saturating_sub(self.wall_ms(now));
                let expires = now + Duration::from_millis(left);
                let (names, devices) = (
                    self.cfg.max_names_per_session,
                    self.cfg.max_devices_per_name,
                );
                self.registry
                    .register(name.clone(), *session, expires, names, devices)
                    .map_err(|_| ApplyError::Limit)
            }
            ProxyEvent::Unregistered { name, session } => {
                self.registry.unregister(name, *session);
                Ok(())
            }
            ProxyEvent::CallStarted {
                call,
                caller,
                callees,
                owner,
                ..
            } => self.apply_call_started(now, *call, *caller, callees, *owner),
            ProxyEvent::CallRinging { call, callee } => {
                self.apply_call_ringing(*call, *callee);
                Ok(())
            }
            ProxyEvent::CallLegDropped { call, callee } => {
                self.decisions.settled(*call, Some(*callee));
                self.apply_leg_dropped(*call, *callee);
                Ok(())
            }
            ProxyEvent::CallAnswered {
                call,
                caller,
                callee,
                ..
            } => {
                self.decisions.settled(*call, None);
                self.apply_call_answered(now, *call, *caller, *callee)
            }
            ProxyEvent::CallEnded { call, .. } => {
                self.decisions.settled(*call, None);
                self.apply_call_ended(*call);
                Ok(())
            }
        }
    }

    fn apply_session(&mut self, now: Instant, r: &SessionRecord) -> Result<(), ApplyError> {
        let me = self.cfg.proxy_id;
        let id = r.state.id;
        if let Some(s) = self.sessions.get_mut(&id) {
            if r.serving == me {
                // Our own change coming back, or a view older than ours.
                return Ok(());
            }
            s.addr = r.addr;
            s.local_ip = r.local_ip;
            s.last_seen = now;
            s.crypto.update(&r.state);
            s.floor = s.floor.max(r.state.client_counter_floor);
            s.adopted = false;
            if s.serving != r.serving {
                // A probe asked the previous serving proxy: moot now.
                s.pending_move = None;
            }
            if s.serving == me {
                // Another proxy took the client over: it serves it now. What
                // we had not delivered goes to it, so the client gets it.
                s.serving = r.serving;
                let pending = s.reliable.drain();
                self.timers.set(id, None);
                self.expiry.set(id, None);
                self.note_serving(id);
                for body in pending {
                    self.hand_control(now, r.serving, id, 0, body);
                }
            } else if s.serving != r.serving {
                // A third proxy took the client over from the one we handed
                // messages to, perhaps because it died with them: they go
                // to the new one (at least once, spec 15.5).
                let old = std::mem::replace(&mut s.serving, r.serving);
                self.rehand_session(now, id, old);
            }
            return Ok(());
        }
        // Not held, yet named as served here: this proxy served it before a
        // restart (its record outlived it in the other proxies' tables).
        // It takes the session back, imported in a fresh epoch of its
        // durable lease, so the client's next packet is served here with
        // no new handshake; unless the record says it has expired.
        let ours = r.serving == me;
        if ours && r.expires_unix_ms <= self.wall_ms(now) {
            return Err(ApplyError::UnknownSession(id));
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(ApplyError::Full);
        }
        // A replica stays compact until first used here (spec 16.9); one
        // taken back is served at once.
        let crypto = if ours {
            Keys::whole(SessionCrypto::import(&r.state, &self.epochs).map_err(ApplyError::Epochs)?)
        } else {
            Keys::compact(&r.state)
        };
        if let Some(old) = self.by_key.get(&r.state.client_key).copied() {
            if old != id && self.sessions.get(&old).is_some_and(|s| s.serving != me) {
                self.forget_session(old);
            }
        }
        self.session_order.insert(id);
        self.sessions.insert(
            id,
            Box::new(ClientSession {
                crypto,
                client_key: r.state.client_key,
                addr: r.addr,
                local_ip: r.local_ip,
                last_seen: now,
                reliable: ReliableSender::new(),
                received: None,
                serving: r.serving,
                adopted: false,
                floor: r.state.client_counter_floor,
                pending_move: None,
            }),
        );
        self.by_key.insert(r.state.client_key, id);
        self.note_serving(id);
        if ours {
            // Its silence is judged here again, and the proxies that
            // adopted it while we were down (`peer_down`) must learn that
            // we serve it, or they would judge its silence too and end it:
            // the one event `apply_remote` emits.
            self.arm_expiry(id, now);
            self.emit_session(now, id, false);
        }
        Ok(())
    }

    /// Removes a replicated session quietly: its registrations go; its
    /// calls end through their own replicated events.
    fn forget_session(&mut self, id: SessionId) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        self.session_order.remove(&id);
        if self.by_key.get(&s.client_key) == Some(&id) {
            self.by_key.remove(&s.client_key);
        }
        self.timers.set(id, None);
        self.expiry.set(id, None);
        self.registry.remove_session(id);
        self.note_serving(id);
    }

    /// The link layer found peer `peer` dead (its link timed out or was
    /// refused). Until a client of it reaches some proxy and is taken over
    /// there, this proxy serves it provisionally: control messages for it
    /// are sent straight to its address from here (and retransmitted), not
    /// into the dead link, and its silence is judged here. Messages still
    /// queued for the dead peer are handled likewise; forwarded packets for
    /// it are dropped. Returns how many sessions were adopted. Scans every
    /// session once: an infrastructure event, never caused by a client.
    pub fn peer_down(&mut self, now: Instant, peer: ProxyId) -> usize {
        let me = self.cfg.proxy_id;
        if peer == me {
            return 0;
        }
        let mut adopted = Vec::new();
        for (id, s) in &mut self.sessions {
            // Served from here: made whole (an epoch each), or left to the
            // proxy that takes it over if the lease has none left.
            if s.serving == peer && s.crypto.get(&self.epochs).is_ok() {
                s.serving = me;
                s.adopted = true;
                adopted.push(*id);
            }
        }
        for id in &adopted {
            self.note_serving(*id);
            self.arm_expiry(*id, now);
        }
        self.psp.adopted += adopted.len() as u64;
        self.forward_out.retain(|(to, _)| *to != peer);
        // Control messages still queued for it are among those it did not
        // acknowledge: all of these are handled again, oldest first.
        self.peer_out.retain(|(to, _)| *to != peer);
        self.handed.forget_owed(peer);
        // Requests about its calls go to its successor from now on: the
        // lowest member not reported down (spec 15.4).
        if self.peers.contains(&peer) {
            self.down.insert(peer);
            self.live.remove(&peer);
        }
        let msgs = self.handed.take_peer(now, peer);
        self.rehandle(now, msgs);
        // Answers and refusals handed to it and not decided by it (as far
        // as we heard) go to its successor, or are decided here if that is
        // this proxy.
        for (from, body) in self.decisions.take_owner(peer) {
            if let Ok(msg) = ControlMsg::parse(&body) {
                self.psp.decisions_taken_back += 1;
                self.on_control(now, from, msg);
            }
        }
        adopted.len()
    }
}
