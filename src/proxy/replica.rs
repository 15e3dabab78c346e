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

use super::{ClientSession, Proxy, ProxyEvent, SessionRecord, Transmit};
use crate::call::reliable::{ReliableReceiver, ReliableSender};
use crate::session::{EpochsExhausted, ProxyId, SessionCrypto, SessionId};
use crate::wire::control::ControlMsg;
use crate::wire::MAX_DATAGRAM;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

/// The serving proxy reports a client's counter floor (in
/// `SessionUpdated`) each time the client's newest counter crosses a
/// multiple of this: a replica accepts a replayed client packet only if it is
/// among about this many newest (about 5 s of voice at 50 packets/s).
pub const FLOOR_STEP: u64 = 256;

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
    /// [`FORWARD_RATE_PER_S`] / [`FORWARD_BURST`].
    pub forward_limited: u64,
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
    /// Replicated changes installed.
    pub applied: u64,
    /// Replicated changes refused (see [`ApplyError`]).
    pub apply_refused: u64,
}

/// A message from one proxy to another, carried over the anypsp link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    /// A control message for client session `to`, which the receiver
    /// serves: it sends it (reliably) as if it had made it.
    Control {
        /// The client's session.
        to: SessionId,
        /// Proxies it crossed so far (at most [`MAX_CONTROL_HOPS`]).
        hops: u8,
        /// The encoded [`ControlMsg`].
        body: Vec<u8>,
    },
    /// A client's transport packet for a session the sender does not hold,
    /// sent to the session's home, which handles it as if received.
    Forward {
        /// The client's address.
        src: SocketAddr,
        /// The (anycast) address it was sent to.
        dst_ip: Option<IpAddr>,
        /// The datagram, unchanged.
        datagram: Vec<u8>,
    },
    /// A voice frame for client session `to`, which the receiver serves
    /// (relay-via-serving mode only, for strict uRPF networks): the
    /// receiver seals it for `to` and sends it.
    Media {
        /// The receiving client's session.
        to: SessionId,
        /// The call.
        call: crate::session::CallId,
        /// The end-to-end blob, still sealed end to end.
        e2e: Vec<u8>,
    },
}

const TAG_CONTROL: u8 = 1;
const TAG_FORWARD: u8 = 2;
const TAG_MEDIA: u8 = 3;

fn put_ip(v: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        None => v.push(0),
        Some(IpAddr::V4(a)) => {
            v.push(4);
            v.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            v.push(6);
            v.extend_from_slice(&a.octets());
        }
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Some(h)
}

fn get_ip(b: &mut &[u8]) -> Option<Option<IpAddr>> {
    let fam = take(b, 1)?[0];
    Some(match fam {
        0 => None,
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(take(b, 4)?).ok()?,
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(take(b, 16)?).ok()?,
        ))),
        _ => return None,
    })
}

impl PeerMessage {
    /// Encodes: a tag byte, then for `Control` the session id (8 bytes, big
    /// endian), the hop count and the body; for `Forward` the source
    /// address (family 4/6, address, port), the destination address
    /// (family 0/4/6, address) and the datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MAX_DATAGRAM + 32);
        match self {
            Self::Control { to, hops, body } => {
                v.push(TAG_CONTROL);
                v.extend_from_slice(&to.raw().to_be_bytes());
                v.push(*hops);
                v.extend_from_slice(body);
            }
            Self::Forward {
                src,
                dst_ip,
                datagram,
            } => {
                v.push(TAG_FORWARD);
                put_ip(&mut v, Some(src.ip()));
                v.extend_from_slice(&src.port().to_be_bytes());
                put_ip(&mut v, *dst_ip);
                v.extend_from_slice(datagram);
            }
            Self::Media { to, call, e2e } => {
                v.push(TAG_MEDIA);
                v.extend_from_slice(&to.raw().to_be_bytes());
                v.extend_from_slice(&call.0.to_be_bytes());
                v.extend_from_slice(e2e);
            }
        }
        v
    }

    /// Parses what [`PeerMessage::encode`] wrote; `None` if malformed.
    pub fn parse(mut b: &[u8]) -> Option<Self> {
        let b = &mut b;
        match take(b, 1)?[0] {
            TAG_CONTROL => {
                let to = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                let to = SessionId::from_raw(to)?;
                let hops = take(b, 1)?[0];
                if b.is_empty() || b.len() > MAX_DATAGRAM {
                    return None;
                }
                Some(Self::Control {
                    to,
                    hops,
                    body: b.to_vec(),
                })
            }
            TAG_FORWARD => {
                let ip = get_ip(b)??;
                let port = u16::from_be_bytes(take(b, 2)?.try_into().ok()?);
                let dst_ip = get_ip(b)?;
                if b.is_empty() || b.len() > MAX_DATAGRAM {
                    return None;
                }
                Some(Self::Forward {
                    src: SocketAddr::new(ip, port),
                    dst_ip,
                    datagram: b.to_vec(),
                })
            }
            TAG_MEDIA => {
                let to = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                let to = SessionId::from_raw(to)?;
                let call = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                if b.len() > MAX_DATAGRAM {
                    return None;
                }
                Some(Self::Media {
                    to,
                    call: crate::session::CallId(call),
                    e2e: b.to_vec(),
                })
            }
            _ => None,
        }
    }
}

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

    /// The proxy serving session `id` as this proxy sees it.
    pub fn serving_proxy(&self, id: SessionId) -> Option<ProxyId> {
        self.sessions.get(&id).map(|s| s.serving)
    }

    /// The next message for a peer proxy: (peer, bytes of a
    /// [`PeerMessage`]). The shell sends it over the anypsp link.
    pub fn poll_peer_transmit(&mut self) -> Option<(ProxyId, Vec<u8>)> {
        self.peer_out.pop_front()
    }

    /// Sets the peer proxies (the membership): peer messages go only to
    /// them, so a proxy alone (the default: none) never queues any, and a
    /// forged session id naming an unknown home is not forwarded.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = ProxyId>) {
        let me = self.cfg.proxy_id;
        self.peers = peers.into_iter().filter(|p| *p != me).collect();
    }

    /// Messages waiting for peers.
    pub fn peer_queue_len(&self) -> usize {
        self.peer_out.len()
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
        if !self.forward_limiter.allow(now, src.ip()) {
            self.psp.forward_limited += 1;
            return;
        }
        let msg = PeerMessage::Forward {
            src,
            dst_ip,
            datagram: d.to_vec(),
        };
        if self.send_peer(home, &msg) {
            self.psp.forwarded_to_home += 1;
        }
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
            PeerMessage::Control { to, hops, body } => {
                let Ok(msg) = ControlMsg::parse(&body) else {
                    self.psp.peer_malformed += 1;
                    return None;
                };
                let me = self.cfg.proxy_id;
                match self.sessions.get(&to) {
                    None => {}
                    Some(s) if s.serving != me && hops < MAX_CONTROL_HOPS => {
                        // Our views differ (a take-over in flight): pass it on.
                        let next = s.serving;
                        let fwd = PeerMessage::Control {
                            to,
                            hops: hops + 1,
                            body,
                        };
                        self.send_peer(next, &fwd);
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

    /// Installs a change another proxy reported (its [`ProxyEvent`]). A
    /// session is imported in a fresh send epoch (nonce-safe by
    /// construction) and kept ready to take over, but this proxy runs no
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
                ..
            } => self.apply_call_started(now, *call, *caller, callees),
            ProxyEvent::CallRinging { call, callee } => {
                self.apply_call_ringing(*call, *callee);
                Ok(())
            }
            ProxyEvent::CallLegDropped { call, callee } => {
                self.apply_leg_dropped(*call, *callee);
                Ok(())
            }
            ProxyEvent::CallAnswered {
                call,
                caller,
                callee,
                ..
            } => self.apply_call_answered(now, *call, *caller, *callee),
            ProxyEvent::CallEnded { call, .. } => {
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
            s.crypto.raise_client_floor(r.state.client_counter_floor);
            s.adopted = false;
            if s.serving == me {
                // Another proxy took the client over: it serves it now. What
                // we had not delivered goes to it, so the client gets it.
                s.serving = r.serving;
                let pending = s.reliable.drain();
                self.timers.set(id, None);
                self.expiry.set(id, None);
                for body in pending {
                    let msg = PeerMessage::Control {
                        to: id,
                        hops: 0,
                        body,
                    };
                    self.send_peer(r.serving, &msg);
                }
            } else {
                s.serving = r.serving;
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
        let crypto = SessionCrypto::import(&r.state, &self.epochs).map_err(ApplyError::Epochs)?;
        if let Some(old) = self.by_key.get(&r.state.client_key).copied() {
            if old != id && self.sessions.get(&old).is_some_and(|s| s.serving != me) {
                self.forget_session(old);
            }
        }
        self.sessions.insert(
            id,
            ClientSession {
                crypto,
                client_key: r.state.client_key,
                addr: r.addr,
                local_ip: r.local_ip,
                last_seen: now,
                reliable: ReliableSender::new(),
                received: ReliableReceiver::new(),
                serving: r.serving,
                adopted: false,
            },
        );
        self.by_key.insert(r.state.client_key, id);
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
        if self.by_key.get(&s.client_key) == Some(&id) {
            self.by_key.remove(&s.client_key);
        }
        self.timers.set(id, None);
        self.expiry.set(id, None);
        self.registry.remove_session(id);
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
            if s.serving == peer {
                s.serving = me;
                s.adopted = true;
                adopted.push(*id);
            }
        }
        for id in &adopted {
            self.arm_expiry(*id, now);
        }
        self.psp.adopted += adopted.len() as u64;
        let queued = std::mem::take(&mut self.peer_out);
        for (to, bytes) in queued {
            if to != peer {
                self.peer_out.push_back((to, bytes));
                continue;
            }
            if let Some(PeerMessage::Control { to, body, .. }) = PeerMessage::parse(&bytes) {
                if let Ok(msg) = ControlMsg::parse(&body) {
                    self.send_control(now, to, msg);
                }
            }
        }
        adopted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::CallId;

    fn samples() -> Vec<PeerMessage> {
        let sid = SessionId::new(ProxyId::new(7).unwrap(), 0x1234_5678_9abc);
        vec![
            PeerMessage::Control {
                to: sid,
                hops: 1,
                body: vec![1, 2, 3],
            },
            PeerMessage::Forward {
                src: "198.51.100.7:4000".parse().unwrap(),
                dst_ip: Some("203.0.113.1".parse().unwrap()),
                datagram: vec![4; 40],
            },
            PeerMessage::Forward {
                src: "[2001:db8::1]:4000".parse().unwrap(),
                dst_ip: None,
                datagram: vec![4; 40],
            },
            PeerMessage::Media {
                to: sid,
                call: CallId(99),
                e2e: vec![5; 60],
            },
        ]
    }

    #[test]
    fn peer_messages_round_trip() {
        for m in samples() {
            assert_eq!(PeerMessage::parse(&m.encode()), Some(m));
        }
    }

    #[test]
    fn truncated_or_garbage_peer_messages_are_refused_without_panic() {
        for m in samples() {
            let b = m.encode();
            for n in 0..b.len() {
                // Every strict prefix that cuts a fixed field is refused;
                // none panics.
                let _ = PeerMessage::parse(&b[..n]);
            }
            let mut bad = b.clone();
            bad[0] = 0xEE;
            assert_eq!(PeerMessage::parse(&bad), None);
        }
        assert_eq!(PeerMessage::parse(&[]), None);
        assert_eq!(PeerMessage::parse(&[TAG_FORWARD, 5, 0, 0]), None);
        let sid = SessionId::new(ProxyId::new(7).unwrap(), 1)
            .raw()
            .to_be_bytes();
        let ok = [
            vec![TAG_MEDIA],
            sid.to_vec(),
            vec![0; 8],
            vec![0; MAX_DATAGRAM],
        ]
        .concat();
        assert!(PeerMessage::parse(&ok).is_some());
        let oversized = [ok, vec![0]].concat();
        assert_eq!(PeerMessage::parse(&oversized), None);
    }
}
