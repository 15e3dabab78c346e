//! Reliable delivery of control messages over the unreliable transport.
//!
//! Each control message gets a per-sender id; the receiver acknowledges
//! every copy it gets (its ack may have been lost) and acts on an id once.
//! The sender retransmits with exponential backoff until acknowledged or
//! until it gives up; the owner then ends the call the message was about
//! (a peer that acknowledges nothing for that long is unreachable).

use super::CallIdOpt;
use crate::session::ReplayWindow;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// First retransmission timeout.
pub const INITIAL_RTO: Duration = Duration::from_millis(250);
/// Longest retransmission timeout.
pub const MAX_RTO: Duration = Duration::from_secs(3);
/// Transmissions (the first and the retries) before giving up. With the
/// timeouts above the copies leave at 0, 0.25, 0.75, 1.75, 3.75, 6.75, 9.75
/// and 12.75 s, and the sender gives up at 15.75 s.
pub const MAX_TRANSMISSIONS: u8 = 8;
/// Most control messages one sender holds unacknowledged on one session
/// (spec "Constants"). A message beyond it is refused by
/// [`ReliableSender::push`]: a peer that acknowledges nothing cannot make
/// its sender hold, or retransmit, more than this.
pub const MAX_PENDING: usize = 32;
/// Room kept beyond [`MAX_PENDING`] for messages that end a call (Hangup,
/// Reject), taken with [`ReliableSender::push_final`]: a party that fills
/// the other's queue (a burst of CallData, say) cannot make it miss the end
/// of a call. Still bounded: one session holds at most
/// `MAX_PENDING + FINAL_RESERVE` messages.
pub const FINAL_RESERVE: usize = 8;

/// Longest a message that ends a call (Hangup, Reject) waits behind the
/// call's earlier unacknowledged messages (DTMF, say) before it is sent
/// anyway and they are dropped: long enough for four transmissions of a
/// message whose first copy was lost (0, 0.25, 0.75, 1.75 s; the fifth
/// leaves at 3.75 s).
pub const HANGUP_HOLD: Duration = Duration::from_secs(4);

#[derive(Debug)]
struct Pending {
    body: Vec<u8>,
    call: CallIdOpt,
    due: Instant,
    rto: Duration,
    sent: u8,
    /// Not sent yet: waits behind earlier messages of its call (see
    /// [`ReliableSender::push_after`]); `due` is the end of its hold.
    held: bool,
    /// When it was queued.
    since: Instant,
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
///
/// Holds at most [`MAX_PENDING`] messages. Every operation costs O(log n)
/// in the messages pending: they are indexed by id (for acks) and by due
/// time (so [`poll`](Self::poll) touches only what is due).
#[derive(Debug, Default)]
pub struct ReliableSender {
    next_id: u32,
    pending: HashMap<u32, Pending>,
    /// (due, id) of every pending message, earliest first.
    by_due: BTreeSet<(Instant, u32)>,
}

impl ReliableSender {
    /// An empty sender; ids start at 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a message that is being sent now; returns its id, or `None`
    /// (and queues nothing) if [`MAX_PENDING`] messages are unacknowledged.
    pub fn push(&mut self, now: Instant, body: Vec<u8>, call: CallIdOpt) -> Option<u32> {
        if self.room() == 0 {
            return None;
        }
        Some(self.insert(now, body, call))
    }

    /// Like [`push`](Self::push), for a message that ends a call: it may
    /// also use the [`FINAL_RESERVE`] beyond [`MAX_PENDING`].
    pub fn push_final(&mut self, now: Instant, body: Vec<u8>, call: CallIdOpt) -> Option<u32> {
        if self.pending.len() >= MAX_PENDING + FINAL_RESERVE {
            return None;
        }
        Some(self.insert(now, body, call))
    }

    /// Like [`push_final`](Self::push_final), for the message that ends a
    /// call, which must arrive after what was sent before it about that call
    /// (digits sent just before a Hangup, whose first copy was lost). If
    /// earlier messages of `call` are unacknowledged it is held: not sent
    /// now (the second value is false: the caller must not send it), and
    /// released (due at once, sent by [`poll`](Self::poll)) when the last of
    /// them is acknowledged or given up, or after [`HANGUP_HOLD`] at the
    /// latest, when those still unacknowledged are dropped. Otherwise it is
    /// sent now (true), like `push_final`.
    pub fn push_after(
        &mut self,
        now: Instant,
        body: Vec<u8>,
        call: CallIdOpt,
    ) -> Option<(u32, bool)> {
        if self.pending.len() >= MAX_PENDING + FINAL_RESERVE {
            return None;
        }
        let id = self.insert(now, body, call);
        let behind = call.is_some_and(|c| self.earlier_of(c, id));
        if behind {
            let p = self.pending.get_mut(&id).expect("just inserted");
            self.by_due.remove(&(p.due, id));
            p.held = true;
            p.sent = 0;
            p.due = now + HANGUP_HOLD;
            self.by_due.insert((p.due, id));
        }
        Some((id, !behind))
    }

    /// Whether a message of `call` other than `id` and not held is pending.
    /// O(pending), which `MAX_PENDING + FINAL_RESERVE` bounds.
    fn earlier_of(&self, call: crate::session::CallId, id: u32) -> bool {
        self.pending
            .iter()
            .any(|(i, p)| *i != id && !p.held && p.call == Some(call))
    }

    /// After a message of `call` left the queue: the messages held behind
    /// it are due at once if nothing else of the call is pending.
    fn release(&mut self, call: CallIdOpt) {
        let Some(call) = call else {
            return;
        };
        if self
            .pending
            .values()
            .any(|p| !p.held && p.call == Some(call))
        {
            return;
        }
        for (id, p) in &mut self.pending {
            if p.held && p.call == Some(call) && p.due != p.since {
                self.by_due.remove(&(p.due, *id));
                p.due = p.since;
                self.by_due.insert((p.due, *id));
            }
        }
    }

    fn insert(&mut self, now: Instant, body: Vec<u8>, call: CallIdOpt) -> u32 {
        let id = self.take_id();
        let due = now + INITIAL_RTO;
        self.pending.insert(
            id,
            Pending {
                body,
                call,
                due,
                rto: INITIAL_RTO,
                sent: 1,
                held: false,
                since: now,
            },
        );
        self.by_due.insert((due, id));
        id
    }

    /// Assigns the next message id without queuing anything: for a message
    /// sent once and never retransmitted (the session ends with it). Ids
    /// are never 0; with at most `MAX_PENDING + FINAL_RESERVE` in flight, a
    /// free one is found within that many steps plus one, even after
    /// wrapping.
    pub fn take_id(&mut self) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.pending.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    /// Handles an acknowledgement. Returns true if it matched a message.
    pub fn ack(&mut self, id: u32) -> bool {
        match self.pending.remove(&id) {
            Some(p) => {
                self.by_due.remove(&(p.due, id));
                self.release(p.call);
                true
            }
            None => false,
        }
    }

    /// Takes every unacknowledged message body out, in id order (for
    /// handing them to the proxy that now serves the client, anypsp).
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        self.by_due.clear();
        let mut v: Vec<(u32, Vec<u8>)> = self.pending.drain().map(|(id, p)| (id, p.body)).collect();
        v.sort_by_key(|(id, _)| *id);
        v.into_iter().map(|(_, b)| b).collect()
    }

    /// Messages not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// How many more messages [`push`](Self::push) would accept now.
    pub fn room(&self) -> usize {
        MAX_PENDING.saturating_sub(self.pending.len())
    }

    /// When the next retransmission is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.by_due.first().map(|(t, _)| *t)
    }

    /// Calls `resend(id, body)` for every message that is due and returns
    /// the ones that have now been sent [`MAX_TRANSMISSIONS`] times unanswered.
    /// Touches only the messages that are due.
    pub fn poll(&mut self, now: Instant, mut resend: impl FnMut(u32, &[u8])) -> Vec<Undelivered> {
        let mut gone = Vec::new();
        while let Some(&(due, id)) = self.by_due.first() {
            if due > now {
                break;
            }
            self.by_due.pop_first();
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.held {
                // Released, or its hold is over: what is still ahead of it
                // about its call is dropped (it would arrive after the end).
                p.held = false;
                let call = p.call;
                if let Some(c) = call {
                    let by_due = &mut self.by_due;
                    self.pending.retain(|i, q| {
                        let keep = *i == id || q.call != Some(c);
                        if !keep {
                            by_due.remove(&(q.due, *i));
                        }
                        keep
                    });
                }
                let Some(p) = self.pending.get_mut(&id) else {
                    continue;
                };
                resend(id, &p.body);
                p.sent = 1;
                p.rto = INITIAL_RTO;
                p.due = now + p.rto;
                self.by_due.insert((p.due, id));
                continue;
            }
            if p.sent >= MAX_TRANSMISSIONS {
                let call = p.call;
                gone.push(Undelivered { id, call });
                self.pending.remove(&id);
                self.release(call);
                continue;
            }
            resend(id, &p.body);
            p.sent += 1;
            p.rto = (p.rto * 2).min(MAX_RTO);
            // Strictly later than `now`, so the loop ends.
            p.due = now + p.rto;
            self.by_due.insert((p.due, id));
        }
        gone
    }

    /// Drops every pending message about `call` (the call is over). Costs
    /// O(pending), which [`MAX_PENDING`] bounds.
    pub fn forget_call(&mut self, call: crate::session::CallId) {
        let by_due = &mut self.by_due;
        self.pending.retain(|id, p| {
            let keep = p.call != Some(call);
            if !keep {
                by_due.remove(&(p.due, *id));
            }
            keep
        });
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

    /// True if `id` has arrived before (or is too old to tell): a repeat,
    /// to be acknowledged but not acted on. Records nothing.
    pub fn seen(&self, id: u32) -> bool {
        !self.seen.check(u64::from(id))
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
        assert_eq!(id, Some(1));
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
        let a = s.push(t0, vec![1], None).unwrap();
        let b = s.push(t0, vec![2], None).unwrap();
        assert!(s.ack(a));
        assert!(!s.ack(a));
        let mut resent = Vec::new();
        s.poll(t0 + INITIAL_RTO, |i, _| resent.push(i));
        assert_eq!(resent, vec![b]);
    }

    #[test]
    fn pending_is_bounded() {
        let t0 = Instant::now();
        let mut s = ReliableSender::new();
        for i in 0..(MAX_PENDING as u8 + 10) {
            let _ = s.push(t0, vec![i], None);
        }
        assert_eq!(s.in_flight(), MAX_PENDING);
        assert_eq!(s.room(), 0);
        assert_eq!(s.push(t0, vec![0], None), None, "refused when full");
        // An ack makes room for exactly one more.
        assert!(s.ack(5));
        assert!(s.push(t0, vec![0], None).is_some());
        assert_eq!(s.push(t0, vec![0], None), None);
    }

    #[test]
    fn poll_touches_only_what_is_due_and_forget_call_unindexes() {
        let t0 = Instant::now();
        let mut s = ReliableSender::new();
        let call = crate::session::CallId(9);
        let a = s.push(t0, vec![1], Some(call)).unwrap();
        let b = s.push(t0 + Duration::from_secs(1), vec![2], None).unwrap();
        assert_eq!(s.next_due(), Some(t0 + INITIAL_RTO));
        let mut resent = Vec::new();
        s.poll(t0 + INITIAL_RTO, |i, _| resent.push(i));
        assert_eq!(resent, vec![a], "b is not due yet");
        s.forget_call(call);
        assert_eq!(s.in_flight(), 1);
        assert_eq!(
            s.next_due(),
            Some(t0 + Duration::from_secs(1) + INITIAL_RTO)
        );
        assert!(s.ack(b));
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn the_end_of_a_call_waits_behind_its_earlier_messages() {
        let t0 = Instant::now();
        let mut s = ReliableSender::new();
        let (call, other) = (crate::session::CallId(9), crate::session::CallId(8));
        let digit = s.push(t0, vec![1], Some(call)).unwrap();
        let unrelated = s.push(t0, vec![2], Some(other)).unwrap();
        // Held: not to be sent now.
        let (hangup, now) = s.push_after(t0, vec![3], Some(call)).unwrap();
        assert!(!now);
        // Another call's end is not held.
        let (_, now) = s.push_after(t0, vec![4], Some(other)).unwrap();
        assert!(!now, "behind `unrelated`");
        let (_, now) = s
            .push_after(t0, vec![5], Some(crate::session::CallId(7)))
            .unwrap();
        assert!(now);
        let mut sent = Vec::new();
        s.poll(t0 + Duration::from_millis(100), |i, _| sent.push(i));
        assert!(sent.is_empty(), "nothing due, the hangup is held");
        // The digit is acknowledged: the hangup is due at once.
        assert!(s.ack(digit));
        assert!(s.next_due() <= Some(t0));
        s.poll(t0 + Duration::from_millis(100), |i, _| sent.push(i));
        assert_eq!(sent, vec![hangup]);
        // The other hold ends at HANGUP_HOLD with `unrelated` still
        // unacknowledged: sent, and `unrelated` dropped.
        let mut sent = Vec::new();
        let end = t0 + HANGUP_HOLD;
        s.poll(end, |i, b| sent.push((i, b.to_vec())));
        assert!(sent.iter().any(|(_, b)| b == &vec![4]));
        assert!(!s.ack(unrelated), "dropped at the end of the hold");
    }

    #[test]
    fn ids_skip_those_still_pending_after_wrapping() {
        let t0 = Instant::now();
        let mut s = ReliableSender::new();
        let first = s.push(t0, vec![1], None).unwrap();
        s.next_id = u32::MAX;
        // Wraps past 0 (never used) and past the id still pending.
        assert_eq!(s.push(t0, vec![2], None), Some(first + 1));
    }

    #[test]
    fn receiver_acts_once() {
        let mut r = ReliableReceiver::new();
        assert!(!r.seen(1));
        assert!(r.first_time(1));
        assert!(r.seen(1) && !r.seen(2));
        assert!(r.first_time(3));
        assert!(!r.first_time(1));
        assert!(r.first_time(2));
        assert!(!r.first_time(3));
    }
}
