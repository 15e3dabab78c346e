//! Reliable delivery of control messages over the unreliable transport.
//!
//! Each control message gets a per-sender id; the receiver acknowledges
//! every copy it gets (its ack may have been lost) and acts on an id once.
//! The sender retransmits with exponential backoff until acknowledged or
//! until it gives up; the owner then ends the call the message was about
//! (a peer that acknowledges nothing for that long is unreachable).

use super::CallIdOpt;
use crate::session::ReplayWindow;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First retransmission timeout.
pub const INITIAL_RTO: Duration = Duration::from_millis(250);
/// Longest retransmission timeout.
pub const MAX_RTO: Duration = Duration::from_secs(3);
/// Transmissions (the first and the retries) before giving up. With the
/// timeouts above the copies leave at 0, 0.25, 0.75, 1.75, 3.75, 6.75, 9.75
/// and 12.75 s, and the sender gives up at 15.75 s.
pub const MAX_TRANSMISSIONS: u8 = 8;

#[derive(Debug)]
struct Pending {
    id: u32,
    body: Vec<u8>,
    call: CallIdOpt,
    due: Instant,
    rto: Duration,
    sent: u8,
}

/// A control message the sender gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    /// Its message id.
    pub id: u32,
    /// The call it was about, if any.
    pub call: CallIdOpt,
}

/// The sending half: assigns ids and retransmits.
#[derive(Debug, Default)]
pub struct ReliableSender {
    next_id: u32,
    pending: VecDeque<Pending>,
}

impl ReliableSender {
    /// An empty sender; ids start at 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a message that is being sent now; returns its id.
    pub fn push(&mut self, now: Instant, body: Vec<u8>, call: CallIdOpt) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let id = self.next_id;
        self.pending.push_back(Pending {
            id,
            body,
            call,
            due: now + INITIAL_RTO,
            rto: INITIAL_RTO,
            sent: 1,
        });
        id
    }

    /// Handles an acknowledgement. Returns true if it matched a message.
    pub fn ack(&mut self, id: u32) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.id != id);
        self.pending.len() != before
    }

    /// Messages not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// When the next retransmission is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.due).min()
    }

    /// Calls `resend(id, body)` for every message that is due and returns
    /// the ones that have now been sent [`MAX_TRANSMISSIONS`] times unanswered.
    pub fn poll(&mut self, now: Instant, mut resend: impl FnMut(u32, &[u8])) -> Vec<Undelivered> {
        let mut gone = Vec::new();
        self.pending.retain_mut(|p| {
            if p.due > now {
                return true;
            }
            if p.sent >= MAX_TRANSMISSIONS {
                gone.push(Undelivered {
                    id: p.id,
                    call: p.call,
                });
                return false;
            }
            resend(p.id, &p.body);
            p.sent += 1;
            p.rto = (p.rto * 2).min(MAX_RTO);
            p.due = now + p.rto;
            true
        });
        gone
    }

    /// Drops every pending message about `call` (the call is over).
    pub fn forget_call(&mut self, call: crate::session::CallId) {
        self.pending.retain(|p| p.call != Some(call));
    }
}

/// The receiving half: recognises repeats.
#[derive(Debug, Default)]
pub struct ReliableReceiver {
    seen: ReplayWindow,
}

impl ReliableReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// True the first time `id` arrives, false for a repeat (which must still
    /// be acknowledged, but not acted on again).
    pub fn first_time(&mut self, id: u32) -> bool {
        self.seen.mark(u64::from(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmits_with_backoff_then_gives_up() {
        let t0 = Instant::now();
        let mut s = ReliableSender::new();
        let id = s.push(t0, vec![1, 2], None);
        assert_eq!(id, 1);
        let mut resent = Vec::new();
        let mut t = t0;
        let mut gone = Vec::new();
        for _ in 0..200 {
            t += Duration::from_millis(100);
            gone.extend(s.poll(t, |i, b| resent.push((i, b.to_vec(), t))));
        }
        assert_eq!(resent.len(), MAX_TRANSMISSIONS as usize - 1);
        let gaps: Vec<_> = resent.windows(2).map(|w| w[1].2 - w[0].2).collect();
        assert!(
            gaps.windows(2).all(|g| g[1] >= g[0]),
            "backoff grows: {gaps:?}"
        );
        assert!(gaps
            .iter()
            .all(|g| *g <= MAX_RTO + Duration::from_millis(100)));
        assert_eq!(gone, vec![Undelivered { id: 1, call: None }]);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn ack_stops_retransmission() {
        let t0 = Instant::now();
        let mut s = ReliableSender::new();
        let a = s.push(t0, vec![1], None);
        let b = s.push(t0, vec![2], None);
        assert!(s.ack(a));
        assert!(!s.ack(a));
        let mut resent = Vec::new();
        s.poll(t0 + INITIAL_RTO, |i, _| resent.push(i));
        assert_eq!(resent, vec![b]);
    }

    #[test]
    fn receiver_acts_once() {
        let mut r = ReliableReceiver::new();
        assert!(r.first_time(1));
        assert!(r.first_time(3));
        assert!(!r.first_time(1));
        assert!(r.first_time(2));
        assert!(!r.first_time(3));
    }
}
