//! The proxy's timers: retransmission of control messages, and the
//! once-a-second sweep that expires silent sessions, lapsed registrations,
//! unanswered calls and idle rate-limit buckets.

use super::{ClientSession, Proxy, Queued, SWEEP_INTERVAL};
use crate::call::Cause;
use crate::session::SessionId;
use crate::wire::inner::Inner;
use crate::wire::MAX_DATAGRAM;
use std::cmp::Reverse;
use std::time::Instant;

impl Proxy {
    /// When [`Proxy::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Instant {
        match self.retransmit_at.peek() {
            Some(Reverse((t, _))) => (*t).min(self.next_sweep),
            None => self.next_sweep,
        }
    }

    /// Runs the timers due at `now`: retransmissions, then (once a second)
    /// expiry of sessions, registrations and unanswered calls.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, sid))) = self.retransmit_at.peek().copied() {
            if t > now {
                break;
            }
            self.retransmit_at.pop();
            self.retransmit(now, sid);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_INTERVAL;
            self.sweep(now);
        }
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
        } = s;
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
        if let Some(next) = reliable.next_due() {
            self.retransmit_at.push(Reverse((next, sid)));
        }
        for lost in gone {
            log::info!(
                "session {sid}: control message {} never acknowledged",
                lost.id
            );
            if let Some(call) = lost.call {
                self.abandon_call(now, call, sid, Cause::NetworkFailure);
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let timeout = self.cfg.session_timeout;
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            log::info!("session {id} expired (silent for {}s)", timeout.as_secs());
            self.stats.sessions_expired += 1;
            self.end_session(now, id, Cause::NetworkFailure);
        }
        self.registry.sweep(now);
        self.limiter.sweep(now);
        self.flush_refusal_log(now);
        self.run_call_timers(now);
    }
}
