//! Engine changes into [`Apply`] items (docs/anypsp-protocol.md Section
//! 16): decoding, parking registrations until their session, and the merge
//! rules that last-writer-wins alone would break (max-register of handshake
//! time stamps; an ended call stays ended).

use super::codec::*;
use super::{Apply, Replicator};
use crate::proxy::ProxyEvent;
use crate::session::{ProxyId, SessionId};
use crate::sync::{Entry, Event, Scope};

impl Replicator {
    /// Drains the engine's events into the apply queue.
    pub(super) fn pump(&mut self) {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Changed {
                    scope,
                    entry,
                    previous,
                } => self.remote(scope, entry, previous),
                // The Changed that follows carries the new record.
                Event::OwnershipLost { .. } => {}
                Event::Reset { .. } => self.queue_resync(),
                Event::Overflow => {
                    // Changes were lost on the way to us: re-apply every
                    // entry held (O(n), bounded by the tables) and rewrite
                    // ours.
                    self.reapply_all();
                    self.queue_resync();
                }
                Event::PeerReady { .. }
                | Event::LookupDone { .. }
                | Event::RequestTimedOut { .. } => {}
            }
        }
        self.update_synced();
    }

    fn reapply_all(&mut self) {
        for scope in SCOPES {
            let entries: Vec<Entry> = match self.engine.table(scope) {
                Some(t) => t.iter().cloned().collect(),
                None => continue,
            };
            for e in entries {
                if !e.is_tombstone() {
                    self.remote(scope, e, None);
                }
            }
        }
    }

    fn bad(&mut self) {
        self.stats.bad_entries += 1;
    }

    /// One remote entry stored by the engine.
    pub(super) fn remote(&mut self, scope: Scope, e: Entry, prev: Option<Entry>) {
        let prev_live = prev.as_ref().and_then(|p| p.value.clone());
        match (scope, e.key.kind) {
            (SCOPE_SESSIONS, kind::SESSION) => self.remote_session(e, prev_live.is_some()),
            (SCOPE_REGISTRATIONS, kind::REGISTRATION) => self.remote_registration(e, prev_live),
            (SCOPE_CALLS, kind::CALL) => self.remote_call(e, prev),
            (SCOPE_CALLS, kind::CALL_LEG) => self.remote_leg(e),
            (SCOPE_HANDSHAKES, kind::HANDSHAKE) => self.remote_handshake(e, prev_live),
            (SCOPE_SUBSCRIBERS, kind::SUBSCRIBER) => self.remote_subscriber(e),
            _ => self.bad(),
        }
    }

    fn remote_session(&mut self, e: Entry, had: bool) {
        let Some(id) = session_of_key(&e.key) else {
            return self.bad();
        };
        match &e.value {
            Some(v) => {
                let Some(r) = decode_session(id, v) else {
                    return self.bad();
                };
                self.applies.push_back(Apply::Proxy(if had {
                    ProxyEvent::SessionUpdated(r)
                } else {
                    ProxyEvent::SessionUp(r)
                }));
                self.release_parked(id);
            }
            None => {
                self.applies
                    .push_back(Apply::Proxy(ProxyEvent::SessionDown {
                        id,
                        cause: Self::remote_cause(),
                    }));
                // The proxy drops the session's bindings with it.
                for h in self.session_regs(id) {
                    self.regs.remove(&(id.raw(), h));
                }
                self.unpark_drop(id);
            }
        }
    }

    /// Registrations parked for `id` follow its SessionUp, in key order.
    fn release_parked(&mut self, id: SessionId) {
        let ks: Vec<[u8; 16]> = self
            .parked
            .range((id.raw(), [0; 16])..=(id.raw(), [0xff; 16]))
            .map(|(_, h)| *h)
            .collect();
        for h in ks {
            self.parked.remove(&(id.raw(), h));
            let v = self.live_value(SCOPE_REGISTRATIONS, &reg_key_hashed(id, &h));
            if let Some((name, exp)) = v.and_then(|v| decode_registration(&v)) {
                self.stats.unparked += 1;
                self.applies.push_back(Apply::Proxy(ProxyEvent::Registered {
                    name,
                    session: id,
                    expires_unix_ms: exp,
                }));
            }
        }
    }

    fn session_live(&self, id: SessionId) -> bool {
        self.live_value(SCOPE_SESSIONS, &session_key(id)).is_some()
    }

    fn remote_registration(&mut self, e: Entry, prev: Option<Box<[u8]>>) {
        let Some((sid, h)) = registration_of_key(&e.key) else {
            return self.bad();
        };
        match &e.value {
            Some(v) => {
                let Some((name, exp)) = decode_registration(v) else {
                    return self.bad();
                };
                if name_hash(&name) != h {
                    return self.bad();
                }
                self.regs.insert((sid.raw(), h), name.clone());
                if self.session_live(sid) {
                    self.applies.push_back(Apply::Proxy(ProxyEvent::Registered {
                        name,
                        session: sid,
                        expires_unix_ms: exp,
                    }));
                } else if self.parked.insert((sid.raw(), h)) {
                    // Anti-entropy never sends a stored entry again: it
                    // waits here (bounded by the engine's table) for its
                    // session.
                    self.stats.parked += 1;
                }
            }
            None => {
                self.parked.remove(&(sid.raw(), h));
                let name = self
                    .regs
                    .remove(&(sid.raw(), h))
                    .or_else(|| prev.and_then(|v| decode_registration(&v)).map(|x| x.0));
                if let Some(name) = name {
                    self.applies
                        .push_back(Apply::Proxy(ProxyEvent::Unregistered {
                            name,
                            session: sid,
                        }));
                }
            }
        }
    }

    fn remote_call(&mut self, e: Entry, prev: Option<Entry>) {
        let Some(call) = call_of_key(&e.key) else {
            return self.bad();
        };
        match &e.value {
            Some(v) => {
                if prev.as_ref().is_some_and(Entry::is_tombstone) {
                    // A call id is never reused: a write that beats the
                    // call's end was concurrent with it. Ended wins
                    // (Section 16.4): end it again, everywhere.
                    self.stats.rewrites += 1;
                    let now = self.now;
                    self.remove(now, SCOPE_CALLS, e.key);
                    return;
                }
                let Some(h) = decode_call(v) else {
                    return self.bad();
                };
                self.applies.push_back(Apply::Proxy(match h.answered {
                    Some((callee, at)) => ProxyEvent::CallAnswered {
                        call,
                        caller: h.caller,
                        callee,
                        at_unix_ms: at,
                    },
                    None => ProxyEvent::CallStarted {
                        call,
                        caller: h.caller,
                        callees: h.callees,
                        at_unix_ms: h.started_unix_ms,
                        // A format-1 head names no owner: while the call
                        // rings, its writer is the proxy that set it up
                        // (Section 16.4).
                        owner: h.owner.or_else(|| ProxyId::new(e.owner)),
                    },
                }));
            }
            None => {
                let legs: Vec<(u64, u64)> = self
                    .legs
                    .range((call.0, 0)..=(call.0, u64::MAX))
                    .copied()
                    .collect();
                for l in legs {
                    self.legs.remove(&l);
                }
                self.applies.push_back(Apply::Proxy(ProxyEvent::CallEnded {
                    call,
                    cause: Self::remote_cause(),
                    at_unix_ms: e.stamp.version.ms,
                }));
            }
        }
    }

    fn remote_leg(&mut self, e: Entry) {
        let Some((call, callee)) = leg_of_key(&e.key) else {
            return self.bad();
        };
        let Some(v) = &e.value else {
            self.legs.remove(&(call.0, callee.raw()));
            return;
        };
        let Some(state) = decode_leg(v) else {
            return self.bad();
        };
        if self
            .engine
            .get(SCOPE_CALLS, &call_key(call))
            .is_some_and(Entry::is_tombstone)
        {
            // The call is over: the leg goes too (its end was concurrent).
            self.stats.rewrites += 1;
            let now = self.now;
            self.remove(now, SCOPE_CALLS, e.key);
            return;
        }
        self.legs.insert((call.0, callee.raw()));
        self.applies
            .push_back(Apply::Proxy(if state == LEG_RINGING {
                ProxyEvent::CallRinging { call, callee }
            } else {
                ProxyEvent::CallLegDropped { call, callee }
            }));
    }

    fn remote_handshake(&mut self, e: Entry, prev: Option<Box<[u8]>>) {
        let Some(key) = handshake_of_key(&e.key) else {
            return self.bad();
        };
        let Some(ts) = e.value.as_deref().and_then(decode_handshake) else {
            return self.bad();
        };
        if let Some(p) = prev.and_then(|v| decode_handshake(&v)) {
            if p > ts {
                // Max-register: ours is newer; write it back so the
                // maximum wins everywhere (Section 16.5).
                self.stats.rewrites += 1;
                let now = self.now;
                self.put(now, SCOPE_HANDSHAKES, e.key, &encode_handshake(&p));
                return;
            }
        }
        self.applies.push_back(Apply::Handshake { key, ts });
    }

    fn remote_subscriber(&mut self, e: Entry) {
        let Some(key) = subscriber_of_key(&e.key) else {
            return self.bad();
        };
        let Some((name, live)) = e.value.as_deref().and_then(decode_subscriber) else {
            return self.bad();
        };
        if subscriber_key(&name, &key) != e.key {
            return self.bad();
        }
        self.applies
            .push_back(Apply::Subscriber { name, key, live });
    }
}
