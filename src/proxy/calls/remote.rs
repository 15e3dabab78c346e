//! Replicated call changes (anypsp, docs/anypsp-protocol.md 15.3): calls set
//! up on another proxy, installed here quietly, and the events that re-create
//! the calls owned here for a resync.

use super::{Call, Leg, Legs, Timer};
use crate::call::Cause;
use crate::proxy::replica::ApplyError;
use crate::proxy::{Proxy, ProxyEvent};
use crate::session::{CallId, ProxyId, SessionId};
use std::time::Instant;
/// Replicated call changes (anypsp): installed quietly, no message sent
/// and no event emitted.
impl Proxy {
    pub(in crate::proxy) fn apply_call_started(
        &mut self,
        now: Instant,
        call: CallId,
        caller: SessionId,
        callees: &[SessionId],
        owner: Option<ProxyId>,
    ) -> Result<(), ApplyError> {
        if self.calls.contains(&call) {
            return Ok(());
        }
        if self.calls.len() >= self.cfg.max_calls {
            return Err(ApplyError::Full);
        }
        let legs = callees
            .iter()
            .take(self.cfg.max_forks)
            .map(|s| Leg {
                session: *s,
                invited: now,
                deadline: None,
            })
            .collect();
        let legs = Legs::Offering {
            legs,
            cause: Cause::Unavailable,
            // Not timed here (remote): its owner's ring_timeout ends it.
            ring_until: now + self.cfg.ring_timeout,
            rung: false,
        };
        let c = Call {
            caller,
            legs,
            remote: true,
            forked: callees.len() > 1,
            owner,
        };
        self.calls.insert(call, c);
        Ok(())
    }

    pub(in crate::proxy) fn apply_call_ringing(&mut self, call: CallId, callee: SessionId) {
        let Some(Call {
            legs: Legs::Offering { legs, rung, .. },
            ..
        }) = self.calls.calls.get_mut(&call)
        else {
            return;
        };
        *rung = true;
        if let Some(leg) = legs.iter_mut().find(|l| l.session == callee) {
            if let Some(t) = leg.deadline.take() {
                self.calls.timers.remove(&(t, call, Timer::Leg(callee)));
            }
        }
    }

    pub(in crate::proxy) fn apply_leg_dropped(&mut self, call: CallId, callee: SessionId) {
        self.calls.remove_leg(call, callee, Cause::Unavailable);
    }

    pub(in crate::proxy) fn apply_call_answered(
        &mut self,
        now: Instant,
        call: CallId,
        caller: SessionId,
        callee: SessionId,
    ) -> Result<(), ApplyError> {
        match self.calls.get(&call) {
            Some(c) if c.peer_of(callee) == Some(caller) => Ok(()),
            Some(c) if c.leg(callee).is_some() => {
                self.calls.answer(call, callee, now, self.cfg.media_timeout);
                Ok(())
            }
            Some(_) => Ok(()),
            None => {
                // Its start never reached us (lost, or we joined late): the
                // answered call is enough to relay its media.
                if self.calls.len() >= self.cfg.max_calls {
                    return Err(ApplyError::Full);
                }
                let media = self.cfg.media_timeout;
                let check = (!media.is_zero()).then(|| now + media);
                let c = Call {
                    caller,
                    legs: Legs::Answered {
                        callee,
                        heard: [now, now],
                        check,
                    },
                    remote: true,
                    forked: false,
                    owner: None,
                };
                self.calls.insert(call, c);
                Ok(())
            }
        }
    }

    pub(in crate::proxy) fn apply_call_ended(&mut self, call: CallId) {
        self.calls.remove(call);
    }

    /// The calls this proxy owns (set up here, not replicas) among the
    /// next `limit` call ids after `after` (in order), pushed to `out` as
    /// the events that would replicate them now (`at_unix_ms` for their
    /// times). Returns the last id visited (None: no call left). O(log n +
    /// limit): one chunk of a resync, never for what a client sends.
    pub(in crate::proxy) fn owned_call_events_from(
        &self,
        after: Option<CallId>,
        limit: usize,
        at_unix_ms: u64,
        out: &mut Vec<ProxyEvent>,
    ) -> Option<CallId> {
        let from = match after {
            Some(c) => std::ops::Bound::Excluded(c),
            None => std::ops::Bound::Unbounded,
        };
        let mut last = None;
        for id in self
            .calls
            .ids
            .range((from, std::ops::Bound::Unbounded))
            .take(limit)
        {
            last = Some(*id);
            let Some(c) = self.calls.calls.get(id).filter(|c| !c.remote) else {
                continue;
            };
            out.push(match &c.legs {
                Legs::Offering { legs, .. } => ProxyEvent::CallStarted {
                    call: *id,
                    caller: c.caller,
                    callees: legs.iter().map(|l| l.session).collect(),
                    at_unix_ms,
                    owner: Some(self.cfg.proxy_id),
                },
                Legs::Answered { callee, .. } => ProxyEvent::CallAnswered {
                    call: *id,
                    caller: c.caller,
                    callee: *callee,
                    at_unix_ms,
                },
            });
        }
        last
    }
}
