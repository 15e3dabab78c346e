//! Call routing: where an Invite goes, who may answer, and who hears what.
//!
//! A call is offered to every device registered under the callee's name; the
//! first to answer wins and the others are told "answered elsewhere". After
//! the answer the proxy relays voice and end-to-end messages between exactly
//! two sessions and cannot read them.

use super::Proxy;
use crate::call::{Cause, Name};
use crate::session::{CallId, SessionId};
use crate::wire::control::ControlMsg;
use std::time::Instant;

/// One call at the proxy.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) caller: SessionId,
    pub(crate) legs: Legs,
    pub(crate) started: Instant,
}

/// Who the caller is connected to.
#[derive(Debug, Clone)]
pub(crate) enum Legs {
    /// Ringing at these devices; `cause` is the last refusal heard, reported
    /// if all of them refuse.
    Offering {
        pending: Vec<SessionId>,
        cause: Cause,
    },
    /// Answered by one device.
    Answered(SessionId),
}

impl Call {
    /// The other party of an answered call, if `me` is one of its two parties.
    pub(crate) fn peer_of(&self, me: SessionId) -> Option<SessionId> {
        match self.legs {
            Legs::Answered(callee) if me == self.caller => Some(callee),
            Legs::Answered(callee) if me == callee => Some(self.caller),
            _ => None,
        }
    }

    fn is_pending(&self, s: SessionId) -> bool {
        matches!(&self.legs, Legs::Offering { pending, .. } if pending.contains(&s))
    }
}

impl Proxy {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_invite(
        &mut self,
        now: Instant,
        from: SessionId,
        call: CallId,
        to: Name,
        caller_name: Option<Name>,
        codecs: Vec<String>,
        e2e: Vec<u8>,
    ) {
        let reject = |p: &mut Proxy, cause: Cause| {
            p.stats.calls_failed += 1;
            p.send_control(now, from, ControlMsg::Reject { call, cause });
        };
        let Some(key) = self.sessions.get(&from).map(|s| s.client_key) else {
            return;
        };
        if self.calls.contains_key(&call) {
            return reject(self, Cause::TemporaryFailure);
        }
        // The caller's name is checked against the store: a client can only
        // call as a name its key is authorised for.
        let caller_name = match caller_name {
            Some(n) if self.subscribers.may_use(&key, &n) => n,
            Some(_) => return reject(self, Cause::NotAuthorized),
            None => match self.subscribers.default_name(&key) {
                Some(n) => n.clone(),
                None => return reject(self, Cause::NotAuthorized),
            },
        };
        let targets: Vec<SessionId> = self
            .registry
            .lookup(&to, now)
            .into_iter()
            .filter(|s| *s != from && self.sessions.contains_key(s))
            .collect();
        if targets.is_empty() {
            let cause = if self.subscribers.has_name(&to) {
                Cause::Unavailable
            } else {
                Cause::NotFound
            };
            log::info!("call {call} {caller_name} -> {to}: {cause}");
            return reject(self, cause);
        }
        log::info!(
            "call {call} {caller_name} -> {to}: offering to {} device(s)",
            targets.len()
        );
        self.stats.calls_started += 1;
        self.calls.insert(
            call,
            Call {
                caller: from,
                legs: Legs::Offering {
                    pending: targets.clone(),
                    cause: Cause::NoAnswer,
                },
                started: now,
            },
        );
        for t in targets {
            let invite = ControlMsg::Invite {
                call,
                to: to.clone(),
                from: Some(caller_name.clone()),
                peer_key: key.0,
                codecs: codecs.clone(),
                e2e: e2e.clone(),
            };
            self.send_control(now, t, invite);
        }
    }

    pub(super) fn on_ringing(&mut self, now: Instant, from: SessionId, call: CallId) {
        match self.calls.get(&call) {
            Some(c) if c.is_pending(from) => {
                let caller = c.caller;
                self.send_control(now, caller, ControlMsg::Ringing { call });
            }
            _ => self.stats.drops.add(crate::wire::DropReason::UnknownCall),
        }
    }

    pub(super) fn on_answer(&mut self, now: Instant, from: SessionId, call: CallId, e2e: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&call) else {
            self.stats.drops.add(crate::wire::DropReason::UnknownCall);
            return;
        };
        let others = match &c.legs {
            Legs::Offering { pending, .. } if pending.contains(&from) => pending
                .iter()
                .copied()
                .filter(|s| *s != from)
                .collect::<Vec<_>>(),
            _ => {
                // Lost the race (or not a callee at all): tell it the call is gone.
                let cause = Cause::AnsweredElsewhere;
                self.send_control(now, from, ControlMsg::Hangup { call, cause });
                return;
            }
        };
        c.legs = Legs::Answered(from);
        let caller = c.caller;
        self.stats.calls_answered += 1;
        let Some(peer_key) = self.sessions.get(&from).map(|s| s.client_key.0) else {
            return;
        };
        log::info!("call {call} answered by session {from}");
        let answer = ControlMsg::Answer {
            call,
            peer_key,
            e2e,
        };
        self.send_control(now, caller, answer);
        for other in others {
            let cause = Cause::AnsweredElsewhere;
            self.send_control(now, other, ControlMsg::Hangup { call, cause });
        }
    }

    pub(super) fn on_reject(&mut self, now: Instant, from: SessionId, call: CallId, cause: Cause) {
        let Some(c) = self.calls.get_mut(&call) else {
            self.stats.drops.add(crate::wire::DropReason::UnknownCall);
            return;
        };
        let Legs::Offering {
            pending,
            cause: last,
        } = &mut c.legs
        else {
            self.stats.drops.add(crate::wire::DropReason::UnknownCall);
            return;
        };
        if !pending.contains(&from) {
            self.stats.drops.add(crate::wire::DropReason::UnknownCall);
            return;
        }
        pending.retain(|s| *s != from);
        *last = cause;
        if pending.is_empty() {
            let caller = c.caller;
            self.calls.remove(&call);
            self.stats.calls_failed += 1;
            self.send_control(now, caller, ControlMsg::Reject { call, cause });
        }
    }

    pub(super) fn on_hangup(&mut self, now: Instant, from: SessionId, call: CallId, cause: Cause) {
        let Some(c) = self.calls.get(&call) else {
            self.stats.drops.add(crate::wire::DropReason::UnknownCall);
            return;
        };
        if c.is_pending(from) {
            // A callee hanging up before answering is refusing.
            return self.on_reject(now, from, call, cause);
        }
        if from != c.caller && c.peer_of(from).is_none() {
            self.stats.drops.add(crate::wire::DropReason::UnknownCall);
            return;
        }
        self.end_call(now, call, from, cause);
    }

    pub(super) fn on_call_data(
        &mut self,
        now: Instant,
        from: SessionId,
        call: CallId,
        e2e: Vec<u8>,
    ) {
        match self.calls.get(&call).and_then(|c| c.peer_of(from)) {
            Some(peer) => {
                self.send_control(now, peer, ControlMsg::CallData { call, e2e });
            }
            None => self.stats.drops.add(crate::wire::DropReason::UnknownCall),
        }
    }

    /// Ends a call for everyone but `by`, who ended it.
    fn end_call(&mut self, now: Instant, call: CallId, by: SessionId, cause: Cause) {
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&by) {
            s.reliable.forget_call(call);
        }
        let mut notify = match c.legs {
            Legs::Offering { pending, .. } => pending,
            Legs::Answered(callee) => vec![callee],
        };
        notify.push(c.caller);
        for s in notify.into_iter().filter(|s| *s != by) {
            self.send_control(now, s, ControlMsg::Hangup { call, cause });
        }
    }

    /// A control message about `call` to `to` was never acknowledged: that
    /// party is unreachable, so the call ends for the others.
    pub(super) fn abandon_call(&mut self, now: Instant, call: CallId, to: SessionId, cause: Cause) {
        match self.calls.get(&call) {
            Some(c) if c.is_pending(to) => self.on_reject(now, to, call, cause),
            Some(_) => self.end_call(now, call, to, cause),
            None => {}
        }
    }

    /// A session ended: every call it was part of ends (or loses a device).
    pub(super) fn session_gone_from_calls(&mut self, now: Instant, gone: SessionId, cause: Cause) {
        let affected: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.caller == gone || c.is_pending(gone) || c.peer_of(gone).is_some())
            .map(|(id, _)| *id)
            .collect();
        for call in affected {
            self.abandon_call(now, call, gone, cause);
        }
    }

    /// Calls ringing longer than the ring timeout fail with "no answer".
    pub(super) fn expire_unanswered(&mut self, now: Instant) {
        let timeout = self.cfg.ring_timeout;
        let expired: Vec<(CallId, SessionId)> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                matches!(c.legs, Legs::Offering { .. })
                    && now.saturating_duration_since(c.started) > timeout
            })
            .map(|(id, c)| (*id, c.caller))
            .collect();
        for (call, caller) in expired {
            self.end_call(now, call, caller, Cause::NoAnswer);
            self.stats.calls_failed += 1;
            self.send_control(
                now,
                caller,
                ControlMsg::Reject {
                    call,
                    cause: Cause::NoAnswer,
                },
            );
        }
    }
}
