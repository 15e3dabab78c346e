//! Call routing: where an Invite goes, who may answer, and who hears what.
//!
//! A call is offered to every live device registered under the callee's
//! name (at most `max_forks`); the first to answer wins and the others are
//! told "answered elsewhere" (26). After the answer the proxy relays voice and
//! end-to-end messages between exactly two sessions and cannot read them.
//!
//! What a client can make the proxy hold is bounded (calls per session, the
//! whole table, devices rung per call) and everything a client triggers
//! costs O(log n): a per-session index finds a session's calls, and one
//! ordered timer index holds every call's deadlines (ring timeout, each
//! leg's "ring or be dropped" deadline, the media check). A leg that fails
//! or loses is removed from its call and never touches the answered call; a
//! call that ends leaves nothing behind (table, indexes, timers, pending
//! control messages about it other than the Hangup that says it is over).

mod remote;
mod sizes;

pub use sizes::RoutingSizes;

use super::{Proxy, ProxyEvent};
use crate::call::{Cause, Name};
use crate::session::{CallId, ProxyId, SessionId};
use crate::wire::control::ControlMsg;
use crate::wire::DropReason;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// One call at the proxy.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    caller: SessionId,
    legs: Legs,
    /// Set up on another proxy and replicated here (anypsp): its ring and
    /// leg deadlines run there, not here.
    remote: bool,
    /// Replicated, and offered to more than one device: its devices'
    /// answers and refusals are decided by its owner alone (spec 15.4).
    forked: bool,
    /// The proxy that set the call up (this one unless `remote`), as the
    /// replicated call names it; `None` for a replica whose start never
    /// reached here (answered already: nothing left to decide).
    owner: Option<ProxyId>,
}

/// Who the caller is connected to.
#[derive(Debug, Clone)]
enum Legs {
    /// Ringing at these devices.
    Offering {
        legs: Vec<Leg>,
        /// The most telling refusal heard so far (see [`refusal_rank`]),
        /// reported when no device is left.
        cause: Cause,
        /// When the ring timeout fires.
        ring_until: Instant,
        /// Ringing was already forwarded to the caller (once is enough).
        rung: bool,
    },
    /// Answered by one device.
    Answered {
        callee: SessionId,
        /// When media (voice or call data) last came from [caller, callee].
        heard: [Instant; 2],
        /// When the media timer is due, if it runs.
        check: Option<Instant>,
    },
}

/// One device being offered a call.
#[derive(Debug, Clone)]
struct Leg {
    session: SessionId,
    invited: Instant,
    /// When the leg is dropped unless it rang or was heard from; `None`
    /// once it rang.
    deadline: Option<Instant>,
}

/// What a call deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Ring,
    Leg(SessionId),
    Media,
}

impl Call {
    /// The other party of an answered call, if `me` is one of its two parties.
    pub(crate) fn peer_of(&self, me: SessionId) -> Option<SessionId> {
        match self.legs {
            Legs::Answered { callee, .. } if me == self.caller => Some(callee),
            Legs::Answered { callee, .. } if me == callee => Some(self.caller),
            _ => None,
        }
    }

    /// True while `s` is a device this call is still being offered to.
    pub(crate) fn is_leg(&self, s: SessionId) -> bool {
        self.leg(s).is_some()
    }

    /// True if an answer or refusal from device `s` must go to the call's
    /// owner: the call was set up elsewhere and rings several devices, which
    /// may answer on different proxies at once. Deciding at the owner makes
    /// the first answer to reach it win and keeps every refusal's cause.
    pub(crate) fn owner_decides(&self, s: SessionId) -> bool {
        self.remote && self.forked && self.is_leg(s)
    }

    /// The proxy that set the call up, if known.
    pub(crate) fn owner(&self) -> Option<ProxyId> {
        self.owner
    }

    fn leg(&self, s: SessionId) -> Option<&Leg> {
        match &self.legs {
            Legs::Offering { legs, .. } => legs.iter().find(|l| l.session == s),
            Legs::Answered { .. } => None,
        }
    }

    /// Every session with a role in the call.
    fn parties(&self) -> Vec<SessionId> {
        let mut v = vec![self.caller];
        match &self.legs {
            Legs::Offering { legs, .. } => v.extend(legs.iter().map(|l| l.session)),
            Legs::Answered { callee, .. } => v.push(*callee),
        }
        v
    }

    /// Every deadline of the call that may be in the timer index.
    fn timers(&self, id: CallId) -> Vec<(Instant, CallId, Timer)> {
        match &self.legs {
            Legs::Offering { .. } if self.remote => Vec::new(),
            Legs::Offering {
                legs, ring_until, ..
            } => std::iter::once((*ring_until, id, Timer::Ring))
                .chain(
                    legs.iter()
                        .filter_map(|l| l.deadline.map(|t| (t, id, Timer::Leg(l.session)))),
                )
                .collect(),
            Legs::Answered { check, .. } => {
                check.map(|t| (t, id, Timer::Media)).into_iter().collect()
            }
        }
    }
}

/// How telling a refusal is, for choosing the one the caller hears when no
/// device is left: "busy" beats a decision (declined, no common codec...),
/// which beats a device that failed or vanished.
fn refusal_rank(c: Cause) -> u8 {
    match c {
        Cause::Busy => 2,
        Cause::Unavailable | Cause::NetworkFailure | Cause::Timeout | Cause::NoAnswer => 0,
        _ => 1,
    }
}

/// The calls, with the per-session index and the deadline index kept in
/// step with them.
#[derive(Debug, Default)]
pub(crate) struct CallTable {
    calls: HashMap<CallId, Call>,
    /// The ids of `calls` in order: the cursor of a chunked resync walks it.
    ids: BTreeSet<CallId>,
    /// The calls each session has a role in (at most
    /// `max_calls_per_session` each).
    by_session: HashMap<SessionId, Vec<CallId>>,
    timers: BTreeSet<(Instant, CallId, Timer)>,
    /// The sessions this proxy serves (told by [`Proxy::note_serving`]),
    /// and how many of them have a role in a call: what the proxy carries
    /// ([`Proxy::carried_sessions`]), kept in step in O(1) per change.
    served: HashSet<SessionId>,
    served_in_calls: usize,
}

impl CallTable {
    /// Calls held.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    /// The call `id`.
    pub(crate) fn get(&self, id: &CallId) -> Option<&Call> {
        self.calls.get(id)
    }

    fn contains(&self, id: &CallId) -> bool {
        self.calls.contains_key(id)
    }

    fn calls_of(&self, s: SessionId) -> usize {
        self.by_session.get(&s).map_or(0, Vec::len)
    }

    fn index(&mut self, s: SessionId, id: CallId) {
        let v = self.by_session.entry(s).or_default();
        if v.is_empty() && self.served.contains(&s) {
            self.served_in_calls += 1;
        }
        v.push(id);
    }

    fn unindex(&mut self, s: SessionId, id: CallId) {
        if let Some(v) = self.by_session.get_mut(&s) {
            v.retain(|c| *c != id);
            if v.is_empty() {
                self.by_session.remove(&s);
                if self.served.contains(&s) {
                    self.served_in_calls -= 1;
                }
            }
        }
    }

    /// Records whether session `s` is served by this proxy now. O(1).
    pub(crate) fn set_served(&mut self, s: SessionId, served: bool) {
        let changed = if served {
            self.served.insert(s)
        } else {
            self.served.remove(&s)
        };
        if changed && self.by_session.contains_key(&s) {
            if served {
                self.served_in_calls += 1;
            } else {
                self.served_in_calls -= 1;
            }
        }
    }

    /// Sessions served here with a role in a call. O(1).
    pub(crate) fn served_in_calls(&self) -> usize {
        self.served_in_calls
    }

    /// [`served_in_calls`](Self::served_in_calls) counted afresh, for
    /// tests. O(n).
    #[cfg(test)]
    pub(crate) fn served_in_calls_counted(&self) -> usize {
        self.served
            .iter()
            .filter(|s| self.by_session.contains_key(s))
            .count()
    }

    fn insert(&mut self, id: CallId, call: Call) {
        for s in call.parties() {
            self.index(s, id);
        }
        self.timers.extend(call.timers(id));
        self.ids.insert(id);
        self.calls.insert(id, call);
    }

    /// Removes a call with its index entries and deadlines.
    fn remove(&mut self, id: CallId) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        self.ids.remove(&id);
        for s in call.parties() {
            self.unindex(s, id);
        }
        for t in call.timers(id) {
            self.timers.remove(&t);
        }
        Some(call)
    }

    /// Removes one leg of an offering call (with its index entry and
    /// deadline); records `cause` if it is the most telling refusal so far.
    /// Returns how many legs are left, or `None` if the call is not
    /// offering (then nothing changed).
    fn remove_leg(&mut self, id: CallId, s: SessionId, refusal: Cause) -> Option<usize> {
        let Some(Call {
            legs: Legs::Offering { legs, cause, .. },
            ..
        }) = self.calls.get_mut(&id)
        else {
            return None;
        };
        if let Some(i) = legs.iter().position(|l| l.session == s) {
            let leg = legs.remove(i);
            if let Some(t) = leg.deadline {
                self.timers.remove(&(t, id, Timer::Leg(s)));
            }
            if refusal_rank(refusal) >= refusal_rank(*cause) {
                *cause = refusal;
            }
        }
        let left = legs.len();
        self.unindex(s, id);
        Some(left)
    }

    /// Marks the call answered by `winner`; returns the losing devices
    /// (already removed from the index and the deadlines).
    fn answer(
        &mut self,
        id: CallId,
        winner: SessionId,
        now: Instant,
        media: Duration,
    ) -> Vec<SessionId> {
        let Some(call) = self.calls.get_mut(&id) else {
            return Vec::new();
        };
        for t in call.timers(id) {
            self.timers.remove(&t);
        }
        let check = (!media.is_zero()).then(|| now + media);
        let old = std::mem::replace(
            &mut call.legs,
            Legs::Answered {
                callee: winner,
                heard: [now, now],
                check,
            },
        );
        if let Some(t) = check {
            self.timers.insert((t, id, Timer::Media));
        }
        let losers: Vec<SessionId> = match old {
            Legs::Offering { legs, .. } => legs
                .into_iter()
                .map(|l| l.session)
                .filter(|s| *s != winner)
                .collect(),
            Legs::Answered { .. } => Vec::new(),
        };
        for s in &losers {
            self.unindex(*s, id);
        }
        losers
    }

    /// The voice path's lookup: the other party of `from` in `call`, noting
    /// that media came from `from`'s side now. O(1), allocates nothing.
    pub(crate) fn media_peer(
        &mut self,
        call: CallId,
        from: SessionId,
        now: Instant,
    ) -> Option<SessionId> {
        let c = self.calls.get_mut(&call)?;
        let Legs::Answered { callee, heard, .. } = &mut c.legs else {
            return None;
        };
        if from == c.caller {
            heard[0] = now;
            Some(*callee)
        } else if from == *callee {
            heard[1] = now;
            Some(c.caller)
        } else {
            None
        }
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
            log::debug!("call {call} from session {from} to {to}: {cause}");
            p.stats.calls_failed += 1;
            p.send_control(
                now,
                from,
                ControlMsg::Reject {
                    call,
                    cause: cause.into(),
                },
            );
        };
        let limited = |p: &mut Proxy, cause: Cause| {
            p.stats.drops.add(DropReason::CallLimit);
            reject(p, cause)
        };
        let Some(key) = self.sessions.get(&from).map(|s| s.client_key) else {
            return;
        };
        if self.calls.contains(&call) {
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
        if self.calls.calls_of(from) >= self.cfg.max_calls_per_session {
            return limited(self, Cause::ResourceUnavailable);
        }
        if self.calls.len() >= self.cfg.max_calls {
            return limited(self, Cause::NoCircuit);
        }
        // A device silent for over two keepalive intervals has missed two
        // keepalives: it is gone, and ringing it would only delay the
        // caller's answer (it would be dropped after `leg_timeout`).
        let silent = Duration::from_secs(2 * u64::from(self.cfg.keepalive_s) + 1);
        let sessions = &self.sessions;
        let me = self.cfg.proxy_id;
        // A device served by another proxy is judged there (its SessionDown
        // removes it here).
        let live: Vec<SessionId> = self
            .registry
            .lookup(&to, now, |s| {
                sessions.get(&s).is_none_or(|x| x.serving == me)
            })
            .into_iter()
            .filter(|s| {
                *s != from
                    && sessions.get(s).is_some_and(|x| {
                        x.serving != me || now.saturating_duration_since(x.last_seen) <= silent
                    })
            })
            .collect();
        if live.is_empty() {
            let cause = if self.subscribers.has_name(&to) {
                Cause::Unavailable
            } else {
                Cause::NotFound
            };
            return reject(self, cause);
        }
        let max = self.cfg.max_calls_per_session;
        let targets: Vec<SessionId> = live
            .into_iter()
            .filter(|s| self.calls.calls_of(*s) < max)
            .take(self.cfg.max_forks)
            .collect();
        if targets.is_empty() {
            // Every device of the name is in its most calls: user busy.
            return limited(self, Cause::Busy);
        }
        log::debug!(
            "call {call} {caller_name} -> {to}: offering to {} device(s)",
            targets.len()
        );
        self.stats.calls_started += 1;
        let legs = targets
            .iter()
            .map(|s| Leg {
                session: *s,
                invited: now,
                deadline: Some(now + self.cfg.leg_timeout),
            })
            .collect();
        let offering = Legs::Offering {
            legs,
            cause: Cause::Unavailable,
            ring_until: now + self.cfg.ring_timeout,
            rung: false,
        };
        self.calls.insert(
            call,
            Call {
                caller: from,
                legs: offering,
                remote: false,
                forked: false,
                owner: Some(me),
            },
        );
        self.emit(ProxyEvent::CallStarted {
            call,
            caller: from,
            callees: targets.clone(),
            at_unix_ms: self.wall_ms(now),
            owner: Some(me),
        });
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
        let Some(Call {
            legs: Legs::Offering { legs, rung, .. },
            ..
        }) = self.calls.calls.get_mut(&call)
        else {
            return self.stats.drops.add(DropReason::UnknownCall);
        };
        let Some(leg) = legs.iter_mut().find(|l| l.session == from) else {
            return self.stats.drops.add(DropReason::UnknownCall);
        };
        let first_ring = leg.deadline.is_some() || !*rung;
        if let Some(t) = leg.deadline.take() {
            self.calls.timers.remove(&(t, call, Timer::Leg(from)));
        }
        if first_ring {
            self.emit(ProxyEvent::CallRinging { call, callee: from });
        }
        let Some(Call {
            caller,
            legs: Legs::Offering { rung, .. },
            ..
        }) = self.calls.calls.get_mut(&call)
        else {
            return;
        };
        // Forwarded once: the caller reports ringing once, and a device
        // repeating Ringing must not make the proxy queue more messages.
        if !*rung {
            *rung = true;
            let caller = *caller;
            self.send_control(now, caller, ControlMsg::Ringing { call });
        }
    }

    pub(super) fn on_answer(&mut self, now: Instant, from: SessionId, call: CallId, e2e: Vec<u8>) {
        let Some(c) = self.calls.get(&call) else {
            return self.stats.drops.add(DropReason::UnknownCall);
        };
        if c.leg(from).is_none() {
            // Not (or no longer) offered the call: lost the race, refused,
            // or was dropped. Each of those was already told the call is
            // over (or said so itself), so nothing more is sent.
            return self.stats.drops.add(DropReason::UnknownCall);
        }
        let caller = c.caller;
        let Some(peer_key) = self.sessions.get(&from).map(|s| s.client_key.0) else {
            return;
        };
        let losers = self.calls.answer(call, from, now, self.cfg.media_timeout);
        self.stats.calls_answered += 1;
        self.emit(ProxyEvent::CallAnswered {
            call,
            caller,
            callee: from,
            at_unix_ms: self.wall_ms(now),
        });
        log::debug!("call {call} answered by session {from}");
        let answer = ControlMsg::Answer {
            call,
            peer_key,
            e2e,
        };
        self.send_control(now, caller, answer);
        for other in losers {
            // Its Invite is not sent again; only the Hangup that ends it.
            self.forget_call(other, call);
            let cause = Cause::AnsweredElsewhere;
            self.send_control(
                now,
                other,
                ControlMsg::Hangup {
                    call,
                    cause: cause.into(),
                },
            );
        }
    }

    pub(super) fn on_reject(&mut self, now: Instant, from: SessionId, call: CallId, cause: Cause) {
        match self.calls.get(&call) {
            Some(c) if c.leg(from).is_some() => self.drop_leg(now, call, from, cause, None),
            _ => self.stats.drops.add(DropReason::UnknownCall),
        }
    }

    /// Removes device `s` from an offering call: it refused with `refusal`
    /// (or failed), and is told `notify` if given. When no device is left
    /// the caller gets Reject with the most telling refusal.
    fn drop_leg(
        &mut self,
        now: Instant,
        call: CallId,
        s: SessionId,
        refusal: Cause,
        notify: Option<Cause>,
    ) {
        self.forget_call(s, call);
        if let Some(cause) = notify {
            self.send_control(
                now,
                s,
                ControlMsg::Hangup {
                    call,
                    cause: cause.into(),
                },
            );
        }
        let was_leg = self.calls.get(&call).is_some_and(|c| c.leg(s).is_some());
        let left = self.calls.remove_leg(call, s, refusal);
        if was_leg {
            self.emit(ProxyEvent::CallLegDropped { call, callee: s });
        }
        if left != Some(0) {
            return;
        }
        let Some(c) = self.calls.remove(call) else {
            return;
        };
        let Legs::Offering { cause, .. } = c.legs else {
            return;
        };
        self.refuse_offered(now, c.caller, call, cause);
    }

    /// Ends an offered call nobody answered: the event, the count, and a
    /// Reject with `cause` to its `caller`.
    fn refuse_offered(&mut self, now: Instant, caller: SessionId, call: CallId, cause: Cause) {
        self.emit(ProxyEvent::CallEnded {
            call,
            cause,
            at_unix_ms: self.wall_ms(now),
        });
        self.stats.calls_failed += 1;
        // A Ringing still pending to the caller is moot now.
        self.forget_call(caller, call);
        self.send_control(
            now,
            caller,
            ControlMsg::Reject {
                call,
                cause: cause.into(),
            },
        );
    }

    pub(super) fn on_hangup(&mut self, now: Instant, from: SessionId, call: CallId, cause: Cause) {
        let Some(c) = self.calls.get(&call) else {
            return self.stats.drops.add(DropReason::UnknownCall);
        };
        if c.leg(from).is_some() {
            // A callee hanging up before answering is refusing.
            return self.drop_leg(now, call, from, cause, None);
        }
        if from != c.caller && c.peer_of(from).is_none() {
            return self.stats.drops.add(DropReason::UnknownCall);
        }
        self.end_call(now, call, Some(from), cause);
    }

    pub(super) fn on_call_data(
        &mut self,
        now: Instant,
        from: SessionId,
        call: CallId,
        e2e: Vec<u8>,
    ) {
        match self.calls.media_peer(call, from, now) {
            Some(peer) => {
                self.send_control(now, peer, ControlMsg::CallData { call, e2e });
            }
            None => self.stats.drops.add(DropReason::UnknownCall),
        }
    }

    /// Drops pending control messages to `s` about `call`.
    fn forget_call(&mut self, s: SessionId, call: CallId) {
        if let Some(x) = self.sessions.get_mut(&s) {
            x.reliable.forget_call(call);
        }
    }

    /// Ends a call for every party but `by` (who ended it): each gets
    /// Hangup(cause) instead of whatever was still pending about the call.
    fn end_call(&mut self, now: Instant, call: CallId, by: Option<SessionId>, cause: Cause) {
        let Some(c) = self.calls.remove(call) else {
            return;
        };
        self.emit(ProxyEvent::CallEnded {
            call,
            cause,
            at_unix_ms: self.wall_ms(now),
        });
        // The two parties of an answered call still get what was sent to
        // them about it (digits sent just before the Hangup): the Hangup
        // waits behind it in their queue (`push_after`). What was pending
        // to an offered device (its Invite) or to the one who ended the
        // call is moot.
        let answered = matches!(c.legs, Legs::Answered { .. });
        for s in c.parties() {
            if !answered || Some(s) == by {
                self.forget_call(s, call);
            }
            if Some(s) != by {
                self.send_control(
                    now,
                    s,
                    ControlMsg::Hangup {
                        call,
                        cause: cause.into(),
                    },
                );
            }
        }
    }

    /// A control message about `call` to `to` was never acknowledged: that
    /// party is unreachable. A device being offered the call is dropped from
    /// it; a party of the call ends it for the others. Anyone else (a device
    /// that lost the race or was dropped, being told so) changes nothing.
    pub(super) fn abandon_call(&mut self, now: Instant, call: CallId, to: SessionId, cause: Cause) {
        match self.calls.get(&call) {
            Some(c) if c.leg(to).is_some() => self.drop_leg(now, call, to, cause, None),
            Some(c) if c.caller == to || c.peer_of(to).is_some() => {
                self.end_call(now, call, Some(to), cause)
            }
            _ => {}
        }
    }

    /// A session ended: every call it was part of ends (or loses a device).
    /// O(its calls), through the per-session index.
    pub(super) fn session_gone_from_calls(&mut self, now: Instant, gone: SessionId, cause: Cause) {
        let calls = self
            .calls
            .by_session
            .get(&gone)
            .cloned()
            .unwrap_or_default();
        for call in calls {
            self.abandon_call(now, call, gone, cause);
        }
    }

    /// Runs the call deadlines that are due: ring timeout, legs that neither
    /// rang nor were heard from, and the media check of answered calls.
    /// O(log n) per deadline.
    pub(super) fn run_call_timers(&mut self, now: Instant) {
        while let Some(&(t, call, timer)) = self.calls.timers.first() {
            if t > now {
                break;
            }
            self.calls.timers.pop_first();
            match timer {
                Timer::Ring => self.ring_timeout(now, call),
                Timer::Leg(s) => self.leg_timeout(now, call, s),
                Timer::Media => self.media_check(now, call),
            }
        }
    }

    /// Nobody answered in time: the devices get Hangup(19), the caller
    /// Reject(17) if a device was busy, else Reject(19).
    fn ring_timeout(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.remove(call) else {
            return;
        };
        let Legs::Offering { legs, cause, .. } = c.legs else {
            return;
        };
        for l in legs {
            self.forget_call(l.session, call);
            let cause = Cause::NoAnswer;
            self.send_control(
                now,
                l.session,
                ControlMsg::Hangup {
                    call,
                    cause: cause.into(),
                },
            );
        }
        let cause = if cause == Cause::Busy {
            Cause::Busy
        } else {
            Cause::NoAnswer
        };
        self.refuse_offered(now, c.caller, call, cause);
    }

    /// A leg's deadline: if the device neither rang nor sent anything since
    /// it was invited, it is taken to be dead and dropped (it counts as
    /// "unavailable"; it is told Hangup(102) in case it is alive after all).
    fn leg_timeout(&mut self, now: Instant, call: CallId, s: SessionId) {
        let Some(leg) = self.calls.get(&call).and_then(|c| c.leg(s)) else {
            return;
        };
        let invited = leg.invited;
        // A device served by another proxy is heard there, not here: it
        // stays until the ring timeout (or its proxy drops it).
        let me = self.cfg.proxy_id;
        let heard = self
            .sessions
            .get(&s)
            .is_some_and(|x| x.last_seen >= invited || x.serving != me);
        if heard {
            // Alive (it acknowledged or sent something): it keeps ringing
            // until the ring timeout; its deadline is spent.
            if let Some(Call {
                legs: Legs::Offering { legs, .. },
                ..
            }) = self.calls.calls.get_mut(&call)
            {
                if let Some(l) = legs.iter_mut().find(|l| l.session == s) {
                    l.deadline = None;
                }
            }
            return;
        }
        log::debug!("call {call}: session {s} neither rang nor answered, dropped from the offer");
        self.stats.fork_legs_dropped += 1;
        self.drop_leg(now, call, s, Cause::Unavailable, Some(Cause::Timeout));
    }

    /// The media check of an answered call: if one side sent nothing for
    /// `media_timeout`, the call ends for both with cause 102 (recovery on
    /// timer expiry); otherwise the check is due again when that could
    /// first happen.
    fn media_check(&mut self, now: Instant, call: CallId) {
        let timeout = self.cfg.media_timeout;
        let me = self.cfg.proxy_id;
        let sessions = &self.sessions;
        let Some(Call {
            caller,
            legs:
                Legs::Answered {
                    heard,
                    check,
                    callee,
                },
            ..
        }) = self.calls.calls.get_mut(&call)
        else {
            return;
        };
        // anypsp: a side's frames reach the proxy that serves it (voice
        // takes the shortest path), so each proxy judges the silence of the
        // sides it serves; a side served elsewhere counts as heard now.
        let here = |s: &SessionId| sessions.get(s).is_none_or(|x| x.serving == me);
        let side = |i: usize, s: &SessionId| if here(s) { heard[i] } else { now };
        let oldest = side(0, caller).min(side(1, callee));
        if now.saturating_duration_since(oldest) < timeout {
            let next = oldest + timeout;
            *check = Some(next);
            self.calls.timers.insert((next, call, Timer::Media));
            return;
        }
        *check = None;
        log::debug!("call {call}: no media from one side for {timeout:?}, ended");
        self.stats.media_timeouts += 1;
        self.end_call(now, call, None, Cause::Timeout);
    }
}

#[cfg(test)]
mod tests;
