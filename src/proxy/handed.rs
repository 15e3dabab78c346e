//! Control messages this proxy handed to a serving proxy and that proxy has
//! not acknowledged yet (spec 15.5): kept so that they can be handled again
//! if it dies with them (`peer_down`) or a take-over replaces it.

use crate::session::{ProxyId, SessionId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A handed message older than this is forgotten, never handled again: by
/// then the serving proxy would have given up retransmitting it (15.75 s,
/// `call::reliable`), so a copy would be stale (an Invite of a call long
/// over). It also ends what a live peer never acknowledges (a link that
/// broke and reconnected lost the message or its ack).
pub const HANDED_TTL: Duration = Duration::from_secs(16);

/// Most control messages kept unacknowledged per peer. A live peer
/// acknowledges each within a link round trip, so this is reached only by a
/// peer that stopped answering; beyond it the oldest is forgotten (counted
/// in `PspStats::handed_forgotten`). The same as the default peer queue.
pub const MAX_HANDED_PER_PEER: usize = 4096;

/// Most sequence numbers in one `Acks` peer message.
pub const MAX_ACKS_PER_MESSAGE: usize = 128;

/// Most acknowledgements owed to one peer, waiting for
/// `poll_peer_transmit`. Beyond it they are dropped (the peer may then
/// hand a message again: a duplicate, never a loss).
pub const MAX_ACKS_OWED: usize = 4096;

/// One handed-over message: for which session, and what.
#[derive(Debug)]
pub(crate) struct HandedMsg {
    pub(crate) to: SessionId,
    pub(crate) body: Vec<u8>,
    /// When it was handed.
    pub(crate) at: Instant,
}

/// The handed-over messages, by (peer, sequence number), with an index by
/// session. Every operation costs O(log n) per message.
#[derive(Debug, Default)]
pub(crate) struct Handed {
    next_seq: u64,
    msgs: BTreeMap<(ProxyId, u64), HandedMsg>,
    by_session: BTreeSet<(SessionId, ProxyId, u64)>,
    per_peer: HashMap<ProxyId, usize>,
    /// Acknowledgements owed, per peer, in arrival order.
    owed: BTreeMap<ProxyId, Vec<u64>>,
}

impl Handed {
    /// The sequence number for the next message handed to any peer (never
    /// 0, never reused in this proxy's life).
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Keeps message `seq`, handed to `peer` at `now`, until acknowledged
    /// (or [`HANDED_TTL`]). Returns true if the peer's oldest message was
    /// forgotten to make room.
    pub(crate) fn keep(
        &mut self,
        now: Instant,
        peer: ProxyId,
        seq: u64,
        to: SessionId,
        body: Vec<u8>,
    ) -> bool {
        // Numbers grow with time: the peer's expired messages come first.
        while let Some((&(_, old), m)) = self.msgs.range((peer, 0)..=(peer, u64::MAX)).next() {
            if now.saturating_duration_since(m.at) < HANDED_TTL {
                break;
            }
            self.remove(peer, old);
        }
        let n = self.per_peer.entry(peer).or_default();
        let full = *n >= MAX_HANDED_PER_PEER;
        *n += 1;
        if full {
            let oldest = self
                .msgs
                .range((peer, 0)..=(peer, u64::MAX))
                .next()
                .map(|(k, _)| k.1);
            if let Some(old) = oldest {
                self.remove(peer, old);
            }
        }
        self.by_session.insert((to, peer, seq));
        self.msgs
            .insert((peer, seq), HandedMsg { to, body, at: now });
        full
    }

    /// `peer` acknowledged `seq`: forgotten. False if not held.
    pub(crate) fn remove(&mut self, peer: ProxyId, seq: u64) -> bool {
        self.unlink(peer, seq).is_some()
    }

    /// Removes message `seq` handed to `peer` from every index.
    fn unlink(&mut self, peer: ProxyId, seq: u64) -> Option<HandedMsg> {
        let m = self.msgs.remove(&(peer, seq))?;
        self.by_session.remove(&(m.to, peer, seq));
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
        Some(m)
    }

    /// Takes every message handed to `peer`, oldest first (those older than
    /// [`HANDED_TTL`] at `now` are dropped).
    pub(crate) fn take_peer(&mut self, now: Instant, peer: ProxyId) -> Vec<HandedMsg> {
        let seqs: Vec<u64> = self
            .msgs
            .range((peer, 0)..=(peer, u64::MAX))
            .map(|(k, _)| k.1)
            .collect();
        self.take(now, peer, seqs)
    }

    /// Takes every message for session `to` handed to `peer`, oldest first
    /// (as [`Handed::take_peer`]).
    pub(crate) fn take_session(
        &mut self,
        now: Instant,
        to: SessionId,
        peer: ProxyId,
    ) -> Vec<HandedMsg> {
        let seqs: Vec<u64> = self
            .by_session
            .range((to, peer, 0)..=(to, peer, u64::MAX))
            .map(|k| k.2)
            .collect();
        self.take(now, peer, seqs)
    }

    fn take(&mut self, now: Instant, peer: ProxyId, seqs: Vec<u64>) -> Vec<HandedMsg> {
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let Some(m) = self.unlink(peer, seq) else {
                continue;
            };
            if now.saturating_duration_since(m.at) < HANDED_TTL {
                out.push(m);
            }
        }
        out
    }

    /// Messages held unacknowledged, all peers together.
    pub(crate) fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Owes `peer` an acknowledgement of `seq`. False if too many are owed
    /// already (dropped).
    pub(crate) fn owe(&mut self, peer: ProxyId, seq: u64) -> bool {
        let v = self.owed.entry(peer).or_default();
        if v.len() >= MAX_ACKS_OWED {
            return false;
        }
        v.push(seq);
        true
    }

    /// The next batch of acknowledgements owed to one peer (at most
    /// [`MAX_ACKS_PER_MESSAGE`]), if any.
    pub(crate) fn next_acks(&mut self) -> Option<(ProxyId, Vec<u64>)> {
        let mut e = self.owed.first_entry()?;
        let peer = *e.key();
        let v = e.get_mut();
        if v.len() <= MAX_ACKS_PER_MESSAGE {
            return Some((peer, e.remove()));
        }
        let rest = v.split_off(MAX_ACKS_PER_MESSAGE);
        let batch = std::mem::replace(v, rest);
        Some((peer, batch))
    }

    /// Forgets the acknowledgements owed to `peer` (it died).
    pub(crate) fn forget_owed(&mut self, peer: ProxyId) {
        self.owed.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u64) -> SessionId {
        SessionId::new(ProxyId::new(1).unwrap(), n)
    }

    #[test]
    fn kept_until_acknowledged_and_taken_by_peer_or_session() {
        let (p, q) = (ProxyId::new(2).unwrap(), ProxyId::new(3).unwrap());
        let now = Instant::now();
        let mut h = Handed::default();
        let s: Vec<u64> = (0..4).map(|_| h.next_seq()).collect();
        h.keep(now, p, s[0], sid(1), vec![1]);
        h.keep(now, p, s[1], sid(2), vec![2]);
        h.keep(now, q, s[2], sid(1), vec![3]);
        h.keep(now, p, s[3], sid(1), vec![4]);
        assert!(h.remove(p, s[1]));
        assert!(!h.remove(p, s[1]));
        let got: Vec<Vec<u8>> = h
            .take_session(now, sid(1), p)
            .into_iter()
            .map(|m| m.body)
            .collect();
        assert_eq!(got, vec![vec![1], vec![4]]);
        assert_eq!(h.len(), 1);
        assert_eq!(h.take_peer(now, q).len(), 1);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn bounded_per_peer_oldest_forgotten() {
        let p = ProxyId::new(2).unwrap();
        let now = Instant::now();
        let mut h = Handed::default();
        let mut forgotten = 0;
        for i in 0..MAX_HANDED_PER_PEER + 10 {
            let seq = h.next_seq();
            forgotten += usize::from(h.keep(now, p, seq, sid(i as u64 + 1), vec![0]));
        }
        assert_eq!(forgotten, 10);
        assert_eq!(h.len(), MAX_HANDED_PER_PEER);
        // The oldest went: the first left is number 11.
        let first = h.take_peer(now, p).into_iter().next().unwrap();
        assert_eq!(first.to, sid(11));
    }

    #[test]
    fn stale_messages_are_never_handled_again() {
        let p = ProxyId::new(2).unwrap();
        let t0 = Instant::now();
        let mut h = Handed::default();
        let a = h.next_seq();
        h.keep(t0, p, a, sid(1), vec![1]);
        let b = h.next_seq();
        h.keep(t0 + Duration::from_secs(10), p, b, sid(1), vec![2]);
        // At 17 s the first is past HANDED_TTL: dropped, the second taken.
        let got = h.take_session(t0 + Duration::from_secs(17), sid(1), p);
        assert_eq!(
            got.into_iter().map(|m| m.body).collect::<Vec<_>>(),
            vec![vec![2]]
        );
        assert_eq!(h.len(), 0);
        // Expired ones also go when the peer is handed something new.
        let d = h.next_seq();
        h.keep(t0, p, d, sid(1), vec![3]);
        let c = h.next_seq();
        h.keep(t0 + HANDED_TTL, p, c, sid(2), vec![4]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn acks_leave_in_batches() {
        let p = ProxyId::new(2).unwrap();
        let mut h = Handed::default();
        for seq in 1..=(MAX_ACKS_PER_MESSAGE as u64 + 5) {
            assert!(h.owe(p, seq));
        }
        let (to, a) = h.next_acks().unwrap();
        assert_eq!((to, a.len(), a[0]), (p, MAX_ACKS_PER_MESSAGE, 1));
        let (_, b) = h.next_acks().unwrap();
        assert_eq!(b.len(), 5);
        assert!(h.next_acks().is_none());
    }
}
