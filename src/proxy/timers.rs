//! The proxy's timers: retransmission of control messages, and the
//! once-a-second sweep that expires silent sessions, lapsed registrations,
//! unanswered calls and idle rate-limit buckets.
//!
//! Retransmission timers are armed per SESSION, not per message: each
//! session has at most one entry (the earliest retransmission its
//! [`ReliableSender`](crate::call::reliable::ReliableSender) has due), so
//! the timer structure never holds more entries than there are sessions,
//! and each event costs O(log n). Silence is checked the same way: one
//! deadline per session, looked at when it falls due (a packet does not
//! move it; the check re-arms it from the session's last packet), so the
//! sweep touches only sessions that may have expired, never all of them.

use super::registry::Lapse;
use super::{ClientSession, Proxy, Queued, SWEEP_INTERVAL};
use crate::call::Cause;
use crate::session::SessionId;
use crate::wire::inner::Inner;
use crate::wire::{DropReason, MAX_DATAGRAM};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How often, at most, the proxy logs a summary of what clients caused that
/// is only counted per event (messages never acknowledged, control refused
/// for backlog, sessions expired).
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// One armed deadline per session, ordered by time.
#[derive(Debug, Default)]
pub(crate) struct SessionTimers {
    armed: HashMap<SessionId, Instant>,
    by_time: BTreeSet<(Instant, SessionId)>,
}

impl SessionTimers {
    /// Arms `sid` at `at` (or disarms it), replacing its previous deadline.
    pub(crate) fn set(&mut self, sid: SessionId, at: Option<Instant>) {
        let old = match at {
            Some(t) => self.armed.insert(sid, t),
            None => self.armed.remove(&sid),
        };
        if old == at {
            return;
        }
        if let Some(o) = old {
            self.by_time.remove(&(o, sid));
        }
        if let Some(t) = at {
            self.by_time.insert((t, sid));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Removes and returns a session whose deadline is at or before `now`.
    fn pop_due(&mut self, now: Instant) -> Option<SessionId> {
        let &(t, sid) = self.by_time.first()?;
        if t > now {
            return None;
        }
        self.by_time.pop_first();
        self.armed.remove(&sid);
        Some(sid)
    }

    /// Entries held (at most one per session).
    pub(crate) fn len(&self) -> usize {
        self.by_time.len()
    }
}

/// Counters as of the last summary line.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Summary {
    undelivered: u64,
    not_queued: u64,
    backlog: u64,
    expired: u64,
    next: Option<Instant>,
}

impl Proxy {
    /// When [`Proxy::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Instant {
        match self.timers.next() {
            Some(t) => t.min(self.next_sweep),
            None => self.next_sweep,
        }
    }

    /// Runs the timers due at `now`: retransmissions, then (once a second)
    /// expiry of sessions, registrations and unanswered calls.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.handle_timeout_limited(now, usize::MAX) {}
    }

    /// Like [`Proxy::handle_timeout`], but serves at most `max_sessions`
    /// sessions' due retransmissions (each at most
    /// [`MAX_PENDING`](crate::call::reliable::MAX_PENDING) messages), so a
    /// shell can release its lock and send between rounds. Returns true if
    /// more is due at `now`.
    pub fn handle_timeout_limited(&mut self, now: Instant, max_sessions: usize) -> bool {
        for _ in 0..max_sessions {
            let Some(sid) = self.timers.pop_due(now) else {
                break;
            };
            self.retransmit(now, sid);
        }
        if self.timers.next().is_some_and(|t| t <= now) {
            return true;
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_INTERVAL;
            self.sweep(now);
        }
        false
    }

    /// Arms the silence check of a new session that was last heard at `seen`.
    pub(super) fn arm_expiry(&mut self, sid: SessionId, seen: Instant) {
        self.expiry.set(sid, Some(seen + self.cfg.session_timeout));
    }

    /// Re-arms `sid`'s timer at its earliest retransmission (or disarms it).
    pub(super) fn rearm(&mut self, sid: SessionId) {
        let due = self.sessions.get(&sid).and_then(|s| s.reliable.next_due());
        self.timers.set(sid, due);
    }

    fn retransmit(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let ClientSession {
            crypto,
            reliable,
            addr,
            local_ip,
            ..
        } = &mut **s;
        let mut resent = 0;
        let queue = &mut self.queue;
        let gone = reliable.poll(now, |msg_id, body| {
            resent += 1;
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let inner = Inner::Control { msg_id, body };
            if let Some(n) = crypto.seal(&mut buf, |b| inner.encode(b)) {
                buf.truncate(n);
                queue.push_back(Queued {
                    dst: *addr,
                    src_ip: *local_ip,
                    data: buf,
                });
            }
        });
        self.stats.control_retransmits += resent;
        self.rearm(sid);
        for lost in gone {
            // The peer decides whether it acknowledges: per message this is
            // debug only; the counter and the periodic summary tell operators.
            log::debug!(
                "session {sid}: control message {} never acknowledged",
                lost.id
            );
            self.stats.control_undelivered += 1;
            if let Some(call) = lost.call {
                self.abandon_call(now, call, sid, Cause::NetworkFailure);
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let timeout = self.cfg.session_timeout;
        let mut expired = Vec::new();
        let mut heard = Vec::new();
        while let Some(id) = self.expiry.pop_due(now) {
            match self.sessions.get(&id) {
                // Served by another proxy now: its silence is that proxy's
                // to judge (its SessionDown removes the replica here).
                Some(s) if s.serving != self.cfg.proxy_id => {}
                Some(s) if now.saturating_duration_since(s.last_seen) > timeout => expired.push(id),
                // Heard from since it was armed (or exactly at the limit):
                // check again a timeout after its last packet.
                Some(s) => heard.push((id, s.last_seen)),
                None => {}
            }
        }
        for (id, seen) in heard {
            // Strictly later than now, so a session is checked once a sweep.
            let at = (seen + timeout).max(now + Duration::from_millis(1));
            self.expiry.set(id, Some(at));
        }
        for id in expired {
            log::debug!("session {id} expired (silent for {}s)", timeout.as_secs());
            self.stats.sessions_expired += 1;
            self.end_session(now, id, Cause::NetworkFailure);
        }
        // Only the proxy serving a session expires its bindings: a copy
        // here with a faster clock must not delete a live one everywhere.
        let (sessions, me) = (&self.sessions, self.cfg.proxy_id);
        let served_here = |id: SessionId| sessions.get(&id).is_none_or(|s| s.serving == me);
        for lapse in self.registry.sweep(now, served_here) {
            match lapse {
                Lapse::Expired(name, session) => {
                    self.emit(crate::proxy::ProxyEvent::Unregistered { name, session })
                }
                Lapse::Dropped(..) => self.psp.replica_bindings_dropped += 1,
            }
        }
        self.limiter.sweep(now);
        self.forward_limiter.sweep(now);
        self.flush_refusal_log(now);
        self.run_call_timers(now);
        self.log_summary(now);
    }

    /// At most once per [`SUMMARY_INTERVAL`], one info line with what
    /// clients caused since the last one, if anything.
    fn log_summary(&mut self, now: Instant) {
        let last = self.summary;
        if last.next.is_some_and(|t| now < t) {
            return;
        }
        let s = &self.stats;
        let cur = Summary {
            undelivered: s.control_undelivered,
            not_queued: s.control_not_queued,
            backlog: s.drops.get(DropReason::ControlBacklog),
            expired: s.sessions_expired,
            next: Some(now + SUMMARY_INTERVAL),
        };
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let (u, q, b, e) = (
            d(cur.undelivered, last.undelivered),
            d(cur.not_queued, last.not_queued),
            d(cur.backlog, last.backlog),
            d(cur.expired, last.expired),
        );
        if u + q + b + e > 0 {
            log::info!(
                "in the last {} s: {u} control messages never acknowledged, {q} not queued \
                 (recipient's queue full), {b} received and refused for backlog, {e} sessions \
                 expired",
                SUMMARY_INTERVAL.as_secs()
            );
        }
        self.summary = cur;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_session_rearming_replaces() {
        let t0 = Instant::now();
        let mut t = SessionTimers::default();
        let (a, b) = (
            SessionId::from_raw(1 << 48 | 1).unwrap(),
            SessionId::from_raw(1 << 48 | 2).unwrap(),
        );
        for i in 0..100u64 {
            t.set(a, Some(t0 + Duration::from_millis(i)));
        }
        t.set(b, Some(t0));
        assert_eq!(t.len(), 2);
        assert_eq!(t.next(), Some(t0));
        assert_eq!(t.pop_due(t0), Some(b));
        assert_eq!(t.pop_due(t0), None, "a is due later");
        t.set(a, None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.next(), None);
    }
}
