//! A session's transport state: ids, direction keys, counters, replay windows.
//!
//! The same [`SessionCrypto`] serves both ends: a client seals with sender id 0
//! and accepts any proxy's sender id; a proxy seals with its own id and accepts
//! only the client's. [`SessionState`] is the plain-data form a session takes
//! when it is handed to another proxy.
//!
//! A proxy's send state is only ever built from a fresh [`Epoch`] (see
//! [`epoch`]): that is what keeps its (key, nonce) pairs unique whatever
//! state a session arrives with.

pub mod epoch;
pub mod id;
pub mod replay;

pub use epoch::{Epoch, EpochLease, Epochs, EpochsExhausted};
pub use id::{CallId, ProxyId, SenderId, SessionId};
pub use replay::ReplayWindow;

use crate::crypto::{DirectionKey, PublicKey};
use crate::wire::transport::{TransportHeader, HEADER_LEN, MAX_INNER, TAG_LEN};
use crate::wire::DropReason;

/// Counters one epoch covers: a proxy's counter is `epoch << 32 | seq`.
pub const EPOCH_SPAN: u64 = 1 << 32;

/// Cryptographic state of one session at one end.
#[derive(Debug)]
pub struct SessionCrypto {
    id: SessionId,
    me: SenderId,
    send: DirectionKey,
    recv: DirectionKey,
    send_counter: u64,
    /// One past the last counter of the current range: the end of the
    /// epoch for a proxy, [`replay::COUNTER_LIMIT`] for a client.
    send_end: u64,
    /// A proxy's allocator, for a fresh epoch when `seq` runs out.
    epochs: Option<Epochs>,
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
    /// The client's end of a session. Its counter starts at 0: a client's
    /// send state exists only for the keys of one handshake, which are fresh
    /// (spec 7.2).
    pub fn client(id: SessionId, client_to_proxy: [u8; 32], proxy_to_client: [u8; 32]) -> Self {
        Self {
            id,
            me: SenderId::CLIENT,
            send: DirectionKey::new(client_to_proxy),
            recv: DirectionKey::new(proxy_to_client),
            send_counter: 0,
            send_end: replay::COUNTER_LIMIT,
            epochs: None,
            windows: Windows::FromProxies(Vec::new()),
            other_floors: Vec::new(),
        }
    }

    /// A proxy's end of a session, sending as the proxy whose allocator
    /// gave `epoch`, with counters from `epoch << 32` on.
    pub fn proxy(
        id: SessionId,
        epoch: Epoch,
        client_to_proxy: [u8; 32],
        proxy_to_client: [u8; 32],
    ) -> Self {
        let (epoch, epochs) = epoch.into_parts();
        Self {
            id,
            me: epochs.me().sender(),
            send: DirectionKey::new(proxy_to_client),
            recv: DirectionKey::new(client_to_proxy),
            send_counter: u64::from(epoch) * EPOCH_SPAN,
            send_end: (u64::from(epoch) + 1) * EPOCH_SPAN,
            epochs: Some(epochs),
            windows: Windows::FromClient(ReplayWindow::new()),
            other_floors: Vec::new(),
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The counter the next sealed packet will use (for a proxy, unless
    /// the epoch runs out first).
    pub fn send_counter(&self) -> u64 {
        self.send_counter
    }

    /// Test hook: moves a proxy's `seq` (the low 32 bits of its counter)
    /// within its current epoch, forward only, to reach the epoch's end
    /// without sending 2^32 packets.
    #[doc(hidden)]
    pub fn skip_seq_for_test(&mut self, seq: u32) {
        if self.epochs.is_some() {
            let counter = (self.send_end - EPOCH_SPAN) | u64::from(seq);
            self.send_counter = self.send_counter.max(counter);
        }
    }

    /// Moves a proxy whose epoch is used up to a fresh one. False for a
    /// client, or when the allocator has none left (the packet is then not
    /// sent: never a reused counter).
    #[cold]
    fn next_epoch(&mut self) -> bool {
        let Some(epoch) = self.epochs.as_ref().and_then(Epochs::take) else {
            return false;
        };
        let (epoch, _) = epoch.into_parts();
        self.send_counter = u64::from(epoch) * EPOCH_SPAN;
        self.send_end = self.send_counter + EPOCH_SPAN;
        true
    }

    /// Seals one transport packet into `out`. `write_inner` writes the inner
    /// message into the slice it is given and returns its length, so the
    /// message is built in place with no copy. Returns the datagram length,
    /// or `None` if the message did not fit or the counter is exhausted (a
    /// proxy's epoch ended and its allocator has no fresh one).
    pub fn seal(
        &mut self,
        out: &mut [u8],
        write_inner: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        if out.len() < HEADER_LEN + 1 + TAG_LEN
            || (self.send_counter >= self.send_end && !self.next_epoch())
        {
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

    /// Newest client counter seen plus one (0 at a client's end).
    pub fn client_floor(&self) -> u64 {
        match &self.windows {
            Windows::FromClient(w) => w.top(),
            Windows::FromProxies(_) => 0,
        }
    }

    /// Refuses client counters below `floor` from now on: the floor the
    /// serving proxy reported, so a client packet it saw cannot be replayed
    /// here (no effect at a client's end).
    pub fn raise_client_floor(&mut self, floor: u64) {
        if let Windows::FromClient(w) = &mut self.windows {
            w.raise_floor(floor);
        }
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
    /// restart) for sending as the proxy of `epochs`, with a fresh epoch
    /// (spec 8.7). Uniqueness rests on the epoch alone; as a second line of
    /// defence the epoch is also above any floor the state lists for this
    /// proxy. Refused if the lease has no such epoch.
    pub fn import(state: &SessionState, epochs: &Epochs) -> Result<Self, EpochsExhausted> {
        let me = epochs.me();
        let floor = state
            .proxy_counter_floors
            .iter()
            .filter(|(p, _)| *p == me)
            .map(|&(_, f)| f)
            .max()
            .unwrap_or(0);
        let epoch = epochs
            .take_at_least(floor.div_ceil(EPOCH_SPAN))
            .ok_or(EpochsExhausted)?;
        let mut s = Self::proxy(
            state.id,
            epoch,
            state.client_to_proxy,
            state.proxy_to_client,
        );
        s.windows = Windows::FromClient(ReplayWindow::with_floor(state.client_counter_floor));
        s.other_floors = state
            .proxy_counter_floors
            .iter()
            .copied()
            .filter(|(p, _)| *p != me)
            .collect();
        Ok(s)
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
    /// The next send counter of each proxy that has sent on this session,
    /// as far as the exporter knows. Informational: an importer never
    /// resumes from it (it takes a fresh epoch), it only starts above it.
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

    fn epochs(p: u16) -> Epochs {
        Epochs::ephemeral(ProxyId::new(p).unwrap())
    }

    fn pair() -> (SessionCrypto, SessionCrypto) {
        let id = SessionId::new(ProxyId::new(1).unwrap(), 77);
        (
            SessionCrypto::client(id, [1; 32], [2; 32]),
            SessionCrypto::proxy(id, epochs(1).take().unwrap(), [1; 32], [2; 32]),
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
        let (e1, e2) = (epochs(1), epochs(2));
        e1.take_at_least(40).unwrap();
        let mut p1 = SessionCrypto::import(&state, &e1).unwrap();
        let mut p2 = SessionCrypto::import(&state, &e2).unwrap();
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
        // Each resumed in a fresh epoch of its own allocator.
        assert_eq!(p1.send_counter(), 41 * EPOCH_SPAN + 1000);
        assert_eq!(p2.send_counter(), EPOCH_SPAN + 1000);
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
        let mut p2 = SessionCrypto::import(&p1.export(key), &epochs(2)).unwrap();
        for _ in 0..10 {
            send(&mut p2, &mut client);
        }
        // Even with an allocator that knows nothing of proxy 1's past (a
        // lost lease file), the floor carried in the state keeps it above.
        let mut p1_again = SessionCrypto::import(&p2.export(key), &epochs(1)).unwrap();
        assert_eq!(
            p1_again.send_counter(),
            2 * EPOCH_SPAN,
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
        let mut bad = SessionCrypto::proxy(id, epochs(1).take().unwrap(), [1; 32], [2; 32]);
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
        let mut other = SessionCrypto::import(&state, &epochs(2)).unwrap();
        assert_eq!(open(&mut other, &old), Err(DropReason::Replay));
        let fresh = seal_keepalive(&mut c);
        assert_eq!(open(&mut other, &fresh), Ok(true));
    }

    /// When `seq` runs out the session moves to a fresh epoch; the client
    /// takes the jump forward, and nothing repeats.
    #[test]
    fn seq_wrap_moves_to_a_fresh_epoch() {
        let id = SessionId::new(ProxyId::new(1).unwrap(), 77);
        let mut client = SessionCrypto::client(id, [1; 32], [2; 32]);
        let alloc = epochs(1);
        let other = SessionCrypto::proxy(id, alloc.take().unwrap(), [5; 32], [6; 32]);
        let mut p = SessionCrypto::proxy(id, alloc.take().unwrap(), [1; 32], [2; 32]);
        assert_eq!(p.send_counter(), 2 * EPOCH_SPAN);
        p.skip_seq_for_test(u32::MAX - 1);
        let mut counters = Vec::new();
        for _ in 0..4 {
            let pkt = seal_keepalive(&mut p);
            counters.push(TransportHeader::parse(&pkt).unwrap().counter);
            assert_eq!(open(&mut client, &pkt), Ok(true));
        }
        assert_eq!(
            counters,
            [
                3 * EPOCH_SPAN - 2,
                3 * EPOCH_SPAN - 1,
                // Epoch 3 went to no one else: the next fresh one is 3.
                3 * EPOCH_SPAN,
                3 * EPOCH_SPAN + 1
            ]
        );
        drop(other);
        // The allocator handed epoch 3 to this session: nobody gets it again.
        assert_eq!(alloc.take().unwrap().get(), 4);
    }

    /// A wrap with no epoch left refuses to seal rather than reuse.
    #[test]
    fn seq_wrap_without_an_epoch_refuses() {
        let id = SessionId::new(ProxyId::new(1).unwrap(), 77);
        let alloc = Epochs::new(ProxyId::new(1).unwrap());
        alloc.grant(EpochLease::durable(7, 8));
        let mut p = SessionCrypto::proxy(id, alloc.take().unwrap(), [1; 32], [2; 32]);
        p.skip_seq_for_test(u32::MAX);
        let mut buf = [0u8; 128];
        assert!(p.seal(&mut buf, |b| Inner::Keepalive.encode(b)).is_some());
        assert_eq!(p.seal(&mut buf, |b| Inner::Keepalive.encode(b)), None);
        assert_eq!(p.send_counter(), 8 * EPOCH_SPAN, "never back");
        // A renewed lease lets it go on, in the new epoch.
        alloc.grant(EpochLease::durable(8, 9));
        let pkt = seal_keepalive(&mut p);
        assert_eq!(
            TransportHeader::parse(&pkt).unwrap().counter,
            8 * EPOCH_SPAN
        );
    }

    /// An import finds no epoch in an exhausted lease, or none above the
    /// floor it carries for this proxy: refused.
    #[test]
    fn import_refused_without_a_fresh_epoch() {
        let (_, p) = pair();
        let state = p.export(PublicKey([9; 32]));
        let alloc = Epochs::new(ProxyId::new(2).unwrap());
        assert_eq!(
            SessionCrypto::import(&state, &alloc).err(),
            Some(EpochsExhausted)
        );
        alloc.grant(EpochLease::durable(1, 5));
        let mut high = state.clone();
        high.proxy_counter_floors
            .push((ProxyId::new(2).unwrap(), 5 * EPOCH_SPAN + 1));
        assert_eq!(
            SessionCrypto::import(&high, &alloc).err(),
            Some(EpochsExhausted)
        );
        assert_eq!(alloc.remaining(), 4, "a refused import burns nothing");
    }
}
