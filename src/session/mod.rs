//! A session's transport state: ids, direction keys, counters, replay windows.
//!
//! The same [`SessionCrypto`] serves both ends: a client seals with sender id 0
//! and accepts any proxy's sender id; a proxy seals with its own id and accepts
//! only the client's. [`SessionState`] is the plain-data form a session takes
//! when it is handed to another proxy.

pub mod id;
pub mod replay;

pub use id::{CallId, ProxyId, SenderId, SessionId};
pub use replay::ReplayWindow;

use crate::crypto::{DirectionKey, PublicKey};
use crate::wire::transport::{TransportHeader, HEADER_LEN, MAX_INNER, TAG_LEN};
use crate::wire::DropReason;

/// When a proxy takes over a session with a counter floor for its own sender
/// id, it starts this far above it, because its last sends may not have been
/// recorded in the floor it was given. 2^32 packets is 2.7 years of voice.
pub const RESUME_MARGIN: u64 = 1 << 32;

/// Cryptographic state of one session at one end.
#[derive(Debug)]
pub struct SessionCrypto {
    id: SessionId,
    me: SenderId,
    send: DirectionKey,
    recv: DirectionKey,
    send_counter: u64,
    windows: Windows,
    /// Counter floors of other proxies that sent on this session, carried
    /// through so a later export still names them (a session may go A, B,
    /// then back to A, and A must not restart below what it used).
    other_floors: Vec<(ProxyId, u64)>,
}

/// Replay windows by sender. A client hears from several proxies over a
/// session's life, each with its own counter; a proxy hears only the client.
#[derive(Debug)]
// The proxy's window stays inline (no box): it is read on every packet.
#[allow(clippy::large_enum_variant)]
enum Windows {
    FromClient(ReplayWindow),
    FromProxies(Vec<(SenderId, ReplayWindow)>),
}

/// A successfully opened transport packet.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The decrypted inner message (mutable, so an end-to-end layer inside
    /// can be decrypted in place too).
    pub plaintext: &'a mut [u8],
    /// True if this packet's counter is the newest ever seen from its sender.
    /// Only such packets may move a client's address: an older packet
    /// re-sent from elsewhere (a replay of one the receiver has not seen yet)
    /// must not steal the binding.
    pub newest: bool,
}

impl SessionCrypto {
    /// The client's end of a session.
    pub fn client(id: SessionId, client_to_proxy: [u8; 32], proxy_to_client: [u8; 32]) -> Self {
        Self {
            id,
            me: SenderId::CLIENT,
            send: DirectionKey::new(client_to_proxy),
            recv: DirectionKey::new(proxy_to_client),
            send_counter: 0,
            windows: Windows::FromProxies(Vec::new()),
            other_floors: Vec::new(),
        }
    }

    /// A proxy's end of a session.
    pub fn proxy(
        id: SessionId,
        me: ProxyId,
        client_to_proxy: [u8; 32],
        proxy_to_client: [u8; 32],
    ) -> Self {
        Self {
            id,
            me: me.sender(),
            send: DirectionKey::new(proxy_to_client),
            recv: DirectionKey::new(client_to_proxy),
            send_counter: 0,
            windows: Windows::FromClient(ReplayWindow::new()),
            other_floors: Vec::new(),
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The counter the next sealed packet will use.
    pub fn send_counter(&self) -> u64 {
        self.send_counter
    }

    /// Seals one transport packet into `out`. `write_inner` writes the inner
    /// message into the slice it is given and returns its length, so the
    /// message is built in place with no copy. Returns the datagram length,
    /// or `None` if the message did not fit or the counter is exhausted.
    pub fn seal(
        &mut self,
        out: &mut [u8],
        write_inner: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        if self.send_counter >= replay::COUNTER_LIMIT || out.len() < HEADER_LEN + 1 + TAG_LEN {
            return None;
        }
        let room = (out.len() - HEADER_LEN - TAG_LEN).min(MAX_INNER);
        let (head, rest) = out.split_at_mut(HEADER_LEN);
        let n = write_inner(&mut rest[..room]).filter(|&n| n >= 1 && n <= room)?;
        let header = TransportHeader {
            sender: self.me,
            session: self.id,
            counter: self.send_counter,
        };
        let head: &mut [u8; HEADER_LEN] = head.try_into().ok()?;
        header.write(head);
        let tag = self.send.seal(header.nonce(), head, &mut rest[..n]);
        rest[n..n + TAG_LEN].copy_from_slice(&tag);
        // The counter moves only after a successful seal, and never back.
        self.send_counter += 1;
        Some(HEADER_LEN + n + TAG_LEN)
    }

    /// Authenticates and decrypts a transport packet in place.
    pub fn open<'a>(
        &mut self,
        header: &TransportHeader,
        datagram: &'a mut [u8],
    ) -> Result<Opened<'a>, DropReason> {
        let window = match &mut self.windows {
            Windows::FromClient(w) if header.sender == SenderId::CLIENT => Some(w),
            Windows::FromProxies(ws) if header.sender.proxy().is_some() => ws
                .iter_mut()
                .find(|(s, _)| *s == header.sender)
                .map(|(_, w)| w),
            _ => return Err(DropReason::BadSender),
        };
        if let Some(w) = &window {
            if !w.check(header.counter) {
                return Err(DropReason::Replay);
            }
        } else if header.counter >= replay::COUNTER_LIMIT {
            return Err(DropReason::Replay);
        }
        let (head, body) = datagram.split_at_mut(HEADER_LEN);
        let plaintext = self
            .recv
            .open(header.nonce(), head, body)
            .map_err(|_| DropReason::BadTag)?;
        let newest = match window {
            Some(w) => {
                let newest = header.counter >= w.top();
                w.mark(header.counter);
                newest
            }
            None => {
                // First authentic packet from this proxy: its window starts now.
                let mut w = ReplayWindow::new();
                w.mark(header.counter);
                if let Windows::FromProxies(ws) = &mut self.windows {
                    ws.push((header.sender, w));
                }
                true
            }
        };
        Ok(Opened { plaintext, newest })
    }

    /// The exportable state of a proxy's end of the session.
    pub fn export(&self, client_key: PublicKey) -> SessionState {
        let client_floor = match &self.windows {
            Windows::FromClient(w) => w.top(),
            Windows::FromProxies(_) => 0,
        };
        let mut proxy_floors = self.other_floors.clone();
        if let Some(me) = self.me.proxy() {
            proxy_floors.retain(|(p, _)| *p != me);
            proxy_floors.push((me, self.send_counter));
        }
        SessionState {
            id: self.id,
            client_key,
            client_to_proxy: *self.recv.raw(),
            proxy_to_client: *self.send.raw(),
            client_counter_floor: client_floor,
            proxy_counter_floors: proxy_floors,
        }
    }

    /// Installs a session exported by another proxy (or by this one before a
    /// restart) for sending as `me`.
    pub fn import(state: &SessionState, me: ProxyId) -> Self {
        let mut s = Self::proxy(state.id, me, state.client_to_proxy, state.proxy_to_client);
        s.windows = Windows::FromClient(ReplayWindow::with_floor(state.client_counter_floor));
        if let Some((_, floor)) = state.proxy_counter_floors.iter().find(|(p, _)| *p == me) {
            s.send_counter = floor.saturating_add(RESUME_MARGIN);
        }
        s.other_floors = state
            .proxy_counter_floors
            .iter()
            .copied()
            .filter(|(p, _)| *p != me)
            .collect();
        s
    }
}

/// A session in plain data, as one proxy hands it to another. Its Debug
/// form leaves out the direction keys.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The session id (names the home proxy).
    pub id: SessionId,
    /// The client's authenticated static key.
    pub client_key: PublicKey,
    /// Key of the client-to-proxy direction.
    pub client_to_proxy: [u8; 32],
    /// Key of the proxy-to-client direction.
    pub proxy_to_client: [u8; 32],
    /// The top of the client's replay window (newest counter seen plus
    /// one). An importing proxy treats every counter below it as seen.
    pub client_counter_floor: u64,
    /// The send counters proxies have used on this session.
    pub proxy_counter_floors: Vec<(ProxyId, u64)>,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The direction keys are secret: never in logs or panic messages.
        f.debug_struct("SessionState")
            .field("id", &self.id)
            .field("client_key", &self.client_key)
            .field("client_counter_floor", &self.client_counter_floor)
            .field("proxy_counter_floors", &self.proxy_counter_floors)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::inner::Inner;

    fn pair() -> (SessionCrypto, SessionCrypto) {
        let id = SessionId::new(ProxyId::new(1).unwrap(), 77);
        (
            SessionCrypto::client(id, [1; 32], [2; 32]),
            SessionCrypto::proxy(id, ProxyId::new(1).unwrap(), [1; 32], [2; 32]),
        )
    }

    fn seal_keepalive(s: &mut SessionCrypto) -> Vec<u8> {
        let mut buf = [0u8; 128];
        let n = s.seal(&mut buf, |b| Inner::Keepalive.encode(b)).unwrap();
        buf[..n].to_vec()
    }

    fn open(s: &mut SessionCrypto, pkt: &[u8]) -> Result<bool, DropReason> {
        let mut d = pkt.to_vec();
        let h = TransportHeader::parse(&d)?;
        s.open(&h, &mut d).map(|o| o.newest)
    }

    #[test]
    fn both_directions_and_replay() {
        let (mut c, mut p) = pair();
        let a = seal_keepalive(&mut c);
        assert_eq!(open(&mut p, &a), Ok(true));
        assert_eq!(open(&mut p, &a), Err(DropReason::Replay));
        let b = seal_keepalive(&mut p);
        assert_eq!(open(&mut c, &b), Ok(true));
        assert_eq!(open(&mut c, &b), Err(DropReason::Replay));
        // A client may not accept its own packets back, nor a proxy another
        // proxy's: each direction has one kind of sender.
        let a2 = seal_keepalive(&mut c);
        assert_eq!(open(&mut c, &a2), Err(DropReason::BadSender));
    }

    #[test]
    fn forged_and_truncated_refused_without_burning_counters() {
        let (mut c, mut p) = pair();
        let good = seal_keepalive(&mut c);
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(open(&mut p, &forged), Err(DropReason::BadTag));
        assert_eq!(
            open(&mut p, &good[..good.len() - 1]),
            Err(DropReason::Truncated)
        );
        // The forgery did not mark the counter: the real packet still counts.
        assert_eq!(open(&mut p, &good), Ok(true));
    }

    #[test]
    fn older_packet_is_accepted_but_not_newest() {
        let (mut c, mut p) = pair();
        let first = seal_keepalive(&mut c);
        let second = seal_keepalive(&mut c);
        assert_eq!(open(&mut p, &second), Ok(true));
        assert_eq!(open(&mut p, &first), Ok(false));
    }

    /// Two proxies send on one session with their own counters: nonces never
    /// collide, and the client accepts both streams.
    #[test]
    fn two_proxies_share_a_session_without_nonce_reuse() {
        let (mut client, p1) = pair();
        let state = p1.export(PublicKey([9; 32]));
        let mut p1 = SessionCrypto::import(&state, ProxyId::new(1).unwrap());
        let mut p2 = SessionCrypto::import(&state, ProxyId::new(2).unwrap());
        let mut nonces = std::collections::HashSet::new();
        for _ in 0..1000 {
            for p in [&mut p1, &mut p2] {
                let pkt = seal_keepalive(p);
                let h = TransportHeader::parse(&pkt).unwrap();
                assert!(nonces.insert(h.nonce()), "nonce reused");
                assert_eq!(open(&mut client, &pkt), Ok(true));
            }
        }
        assert_eq!(nonces.len(), 2000);
        // p1 resumed above the floor it exported, not at zero.
        assert_eq!(p1.send_counter(), RESUME_MARGIN + 1000);
        assert_eq!(p2.send_counter(), 1000);
    }

    /// A session handed from proxy 1 to 2 and back to 1 must not send
    /// with counters proxy 1 already used.
    #[test]
    fn round_trip_hand_off_never_reuses_a_nonce() {
        let (mut client, mut p1) = pair();
        let mut nonces = std::collections::HashSet::new();
        let mut send = |p: &mut SessionCrypto, client: &mut SessionCrypto| {
            let pkt = seal_keepalive(p);
            let h = TransportHeader::parse(&pkt).unwrap();
            assert!(nonces.insert(h.nonce()), "nonce reused: {h:?}");
            assert_eq!(open(client, &pkt), Ok(true));
        };
        for _ in 0..10 {
            send(&mut p1, &mut client);
        }
        let key = PublicKey([9; 32]);
        let mut p2 = SessionCrypto::import(&p1.export(key), ProxyId::new(2).unwrap());
        for _ in 0..10 {
            send(&mut p2, &mut client);
        }
        let mut p1_again = SessionCrypto::import(&p2.export(key), ProxyId::new(1).unwrap());
        assert!(
            p1_again.send_counter() >= 10,
            "proxy 1 resumes above its old counters"
        );
        for _ in 0..10 {
            send(&mut p1_again, &mut client);
        }
    }

    #[test]
    fn client_refuses_reserved_sender_ids() {
        let (mut c, _) = pair();
        let id = c.id();
        let mut bad = SessionCrypto::proxy(id, ProxyId::new(1).unwrap(), [1; 32], [2; 32]);
        bad.me = SenderId(0xFFFF);
        let pkt = seal_keepalive(&mut bad);
        assert_eq!(open(&mut c, &pkt), Err(DropReason::BadSender));
    }

    #[test]
    fn import_keeps_client_replays_out() {
        let (mut c, mut p) = pair();
        let old = seal_keepalive(&mut c);
        assert_eq!(open(&mut p, &old), Ok(true));
        let state = p.export(PublicKey([9; 32]));
        let mut other = SessionCrypto::import(&state, ProxyId::new(2).unwrap());
        assert_eq!(open(&mut other, &old), Err(DropReason::Replay));
        let fresh = seal_keepalive(&mut c);
        assert_eq!(open(&mut other, &fresh), Ok(true));
    }
}
