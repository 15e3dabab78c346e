//! The sweep of a resync (docs/anypsp-protocol.md 17.3): a resync writes
//! again everything the proxy serves, but an entry whose end was lost with
//! the overflowed events is not listed and would stay in every proxy's
//! tables for ever (a ghost). So while a resync runs, every entry this
//! node writes is marked; once the pass has listed everything, the entries
//! this node owns in the proxy's scopes that were not marked are deleted
//! (tombstones), a chunk at a time. O(n) once per resync, never per event.

use super::codec::*;
use super::Replicator;
use crate::sync::table::Pos;
use crate::sync::{Key, Scope, WallMs};
use std::collections::HashSet;

/// The scopes a resync lists (sessions with their registrations, calls):
/// only they are swept. Handshake stamps and subscribers are not the
/// proxy's served state and are never swept.
const SWEPT: [Scope; 3] = [SCOPE_SESSIONS, SCOPE_REGISTRATIONS, SCOPE_CALLS];

/// A resync's marks, and where its sweep stands.
#[derive(Debug, Default)]
pub(super) struct Sweep {
    /// Entries written since the resync began (listed, or changed by an
    /// event meanwhile): (scope, key).
    marks: HashSet<(Scope, Key)>,
    /// The listing is done: sweeping `SWEPT[scope]` after `after`.
    at: Option<(usize, Option<Pos>)>,
}

impl Replicator {
    /// A resync pass begins (or starts over): from now on every entry this
    /// node writes is marked, until the sweep after the pass is done.
    pub fn begin_resync(&mut self) {
        self.sweep = Some(Sweep::default());
    }

    /// The pass has listed everything the proxy serves: the sweep may
    /// start ([`Replicator::sweep_step`]). Entries written while it runs
    /// are still marked, so a change made meanwhile is never swept.
    pub fn end_resync(&mut self) {
        if let Some(s) = &mut self.sweep {
            s.at.get_or_insert((0, None));
        }
    }

    /// True while a resync is marking or sweeping.
    pub fn resyncing(&self) -> bool {
        self.sweep.is_some()
    }

    /// Sweeps at most `limit` entries (live or not) of the swept scopes,
    /// deleting this node's unmarked live ones. Returns true while more
    /// remains (false when done, or when no sweep is under way).
    ///
    /// `held` says whether the proxy still holds a call. A call another
    /// proxy set up is not listed by the resync (the proxy lists only the
    /// calls it owns), yet this node may be its entries' last writer (the
    /// callee's proxy writes the answer and the ringing leg): such a call
    /// is live, not a ghost, and deleting it would end it on every proxy.
    pub fn sweep_step(
        &mut self,
        now: WallMs,
        limit: usize,
        held: &dyn Fn(crate::session::CallId) -> bool,
    ) -> bool {
        self.tick(now);
        let me = self.node();
        let Some(sweep) = self.sweep.take() else {
            return false;
        };
        let Some((mut scope_i, mut after)) = sweep.at.clone() else {
            // Still listing.
            self.sweep = Some(sweep);
            return true;
        };
        let mut left = limit.max(1);
        while left > 0 && scope_i < SWEPT.len() {
            let scope = SWEPT[scope_i];
            let mut ghosts = Vec::new();
            let mut last = None;
            if let Some(t) = self.engine.table(scope) {
                for (pos, e) in t.iter_after(after.as_ref()).take(left) {
                    left -= 1;
                    last = Some(pos.clone());
                    if e.owner == me
                        && !e.is_tombstone()
                        && self.ghost(&sweep.marks, scope, &e.key, held)
                    {
                        ghosts.push(e.key.clone());
                    }
                }
            }
            match last {
                Some(p) => after = Some(p),
                None => {
                    scope_i += 1;
                    after = None;
                }
            }
            // Deleted before the walk goes on (a tombstone keeps its
            // place, so the walk is not disturbed).
            self.delete_ghosts(now, scope, ghosts);
        }
        if scope_i < SWEPT.len() {
            self.sweep = Some(Sweep {
                marks: sweep.marks,
                at: Some((scope_i, after)),
            });
            true
        } else {
            false
        }
    }

    /// Whether an unmarked live entry of ours is a ghost. A registration
    /// whose session another proxy serves now is left to that proxy (a
    /// take-over does not write the session's bindings again).
    fn ghost(
        &self,
        marks: &HashSet<(Scope, Key)>,
        scope: Scope,
        key: &Key,
        held: &dyn Fn(crate::session::CallId) -> bool,
    ) -> bool {
        if marked(marks, scope, key) {
            return false;
        }
        if let Some(call) = call_of_key(key).or_else(|| leg_of_key(key).map(|(c, _)| c)) {
            return !held(call);
        }
        match registration_of_key(key) {
            Some((session, _)) => self
                .engine
                .get(SCOPE_SESSIONS, &session_key(session))
                .is_none_or(|e| e.is_tombstone() || e.owner == self.node()),
            None => true,
        }
    }

    fn delete_ghosts(&mut self, now: WallMs, scope: Scope, keys: Vec<Key>) {
        for k in keys {
            self.stats.swept += 1;
            if let Some(id) = session_of_key(&k) {
                self.session_down(now, id);
            } else if let Some((session, h)) = registration_of_key(&k) {
                self.regs.remove(&(session.raw(), h));
                self.remove(now, scope, k);
            } else if let Some(call) = call_of_key(&k) {
                self.call_ended(now, call);
            } else {
                if let Some((call, callee)) = leg_of_key(&k) {
                    self.legs.remove(&(call.0, callee.raw()));
                }
                self.remove(now, scope, k);
            }
        }
    }

    /// Marks `key` as written by this resync (when one runs).
    pub(super) fn mark(&mut self, scope: Scope, key: &Key) {
        if let Some(s) = &mut self.sweep {
            if SWEPT.contains(&scope) {
                s.marks.insert((scope, key.clone()));
            }
        }
    }
}

/// Whether the resync listed (or an event wrote) this entry. A call leg is
/// not listed on its own: it lives as long as its call head does.
fn marked(marks: &HashSet<(Scope, Key)>, scope: Scope, key: &Key) -> bool {
    if marks.contains(&(scope, key.clone())) {
        return true;
    }
    match leg_of_key(key) {
        Some((call, _)) => marks.contains(&(SCOPE_CALLS, call_key(call))),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Apply, Replicator};
    use super::*;
    use crate::call::Name;
    use crate::crypto::PublicKey;
    use crate::proxy::{ProxyEvent, SessionRecord};
    use crate::session::{ProxyId, SessionId, SessionState};
    use crate::sync::Config;

    const T0: WallMs = 1_800_000_000_000;

    fn sid(n: u64) -> SessionId {
        SessionId::new(ProxyId::new(1).unwrap(), n)
    }

    fn up(id: SessionId, serving: u16) -> ProxyEvent {
        ProxyEvent::SessionUp(SessionRecord {
            state: SessionState {
                id,
                client_key: PublicKey([id.raw() as u8; 32]),
                client_to_proxy: [1; 32],
                proxy_to_client: [2; 32],
                client_counter_floor: 0,
                proxy_counter_floors: Vec::new(),
            },
            addr: "192.0.2.7:4000".parse().unwrap(),
            local_ip: None,
            serving: ProxyId::new(serving).unwrap(),
            expires_unix_ms: T0 + 600_000,
        })
    }

    fn reg(name: &str, session: SessionId) -> ProxyEvent {
        ProxyEvent::Registered {
            name: Name::new(name).unwrap(),
            session,
            expires_unix_ms: T0 + 600_000,
        }
    }

    fn call(c: u64, caller: SessionId, callee: SessionId) -> [ProxyEvent; 2] {
        let call = crate::session::CallId(c);
        [
            ProxyEvent::CallStarted {
                call,
                caller,
                callees: vec![callee],
                at_unix_ms: T0,
                owner: None,
            },
            ProxyEvent::CallRinging { call, callee },
        ]
    }

    fn pair() -> [Replicator; 2] {
        [1u16, 2].map(|me| {
            let mut r = Replicator::new(Config::new(me, [9; 32]), T0);
            r.add_peer(3 - me).unwrap();
            r.peer_connected(T0, 3 - me);
            r
        })
    }

    fn settle(reps: &mut [Replicator; 2], now: WallMs) -> [Vec<Apply>; 2] {
        let mut applied = [Vec::new(), Vec::new()];
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some((to, m)) = reps[i].poll_transmit() {
                    moved = true;
                    let _ = reps[usize::from(to) - 1].handle_message(now, i as u16 + 1, &m);
                }
            }
            for (i, r) in reps.iter_mut().enumerate() {
                while let Some(a) = r.poll_apply() {
                    applied[i].push(a);
                }
            }
            if !moved {
                return applied;
            }
        }
    }

    fn live(r: &Replicator, scope: Scope, k: &Key) -> bool {
        r.engine().get(scope, k).is_some_and(|e| !e.is_tombstone())
    }

    fn same_tables(reps: &[Replicator; 2]) {
        for sc in SCOPES {
            assert_eq!(
                reps[0].engine().digest(sc),
                reps[1].engine().digest(sc),
                "scope {sc:?}"
            );
        }
    }

    /// What vanished from the proxy while its events were lost is deleted
    /// by the resync, on every proxy; what it serves, what another proxy
    /// took over, and the legs of live calls stay. Before the sweep, the
    /// resync only wrote: s1, s3, alice and call 8 stayed for ever.
    #[test]
    fn a_resync_deletes_what_vanished_while_events_were_lost() {
        let mut reps = pair();
        let (s1, s2, s3, s4) = (sid(1), sid(2), sid(3), sid(4));
        let mut evs = vec![up(s1, 1), up(s2, 1), up(s3, 1), reg("alice", s1)];
        evs.push(reg("bob", s2));
        evs.extend(call(7, s2, s3));
        evs.extend(call(8, s1, s3));
        for e in &evs {
            reps[0].on_proxy_event(T0, e);
        }
        // s4 is served by node 2, but node 1 wrote carol's binding for it.
        reps[1].on_proxy_event(T0, &up(s4, 2));
        settle(&mut reps, T0);
        reps[0].on_proxy_event(T0, &reg("carol", s4));
        settle(&mut reps, T0);
        assert!(live(&reps[1], SCOPE_SESSIONS, &session_key(s1)));
        // The proxy now serves s2 with bob, and call 7 (s3 gone, its leg
        // still in the call); s1, alice, s3 and call 8 ended unseen.
        let mut served = vec![up(s2, 1), reg("bob", s2)];
        served.push(call(7, s2, s3)[0].clone());
        reps[0].resync(T0 + 1000, served, &|_| false);
        let applied = settle(&mut reps, T0 + 1000);
        assert!(reps[0].stats().swept >= 3, "{:?}", reps[0].stats());
        let n = Name::new("alice").unwrap();
        let c = crate::session::CallId;
        for r in &reps {
            assert!(!live(r, SCOPE_SESSIONS, &session_key(s1)), "ghost s1");
            assert!(!live(r, SCOPE_SESSIONS, &session_key(s3)), "ghost s3");
            assert!(!live(r, SCOPE_REGISTRATIONS, &registration_key(s1, &n)));
            assert!(!live(r, SCOPE_CALLS, &call_key(c(8))), "ghost call 8");
            assert!(!live(r, SCOPE_CALLS, &leg_key(c(8), s3)), "its leg");
            assert!(live(r, SCOPE_SESSIONS, &session_key(s2)));
            assert!(live(r, SCOPE_CALLS, &call_key(c(7))));
            assert!(
                live(r, SCOPE_CALLS, &leg_key(c(7), s3)),
                "a live call's leg"
            );
            let carol = registration_key(s4, &Name::new("carol").unwrap());
            assert!(live(r, SCOPE_REGISTRATIONS, &carol), "node 2's session");
        }
        assert!(applied[1]
            .iter()
            .any(|a| matches!(a, Apply::Proxy(ProxyEvent::SessionDown { id, .. }) if *id == s1)));
        same_tables(&reps);
        assert!(!reps[0].resyncing());
    }

    /// A call another proxy set up, whose entries this node wrote last
    /// (the callee's proxy writes the ringing leg and the answer), is not
    /// listed by this proxy's resync: it is live while the proxy holds it,
    /// and stays on every proxy. Before, the sweep deleted it everywhere
    /// (an answered call erased by one resync at the callee's proxy).
    #[test]
    fn a_held_call_of_another_proxy_that_this_node_wrote_is_not_swept() {
        let mut reps = pair();
        let (s1, s2) = (sid(1), sid(2));
        reps[0].on_proxy_event(T0, &up(s1, 1));
        reps[1].on_proxy_event(T0, &up(s2, 2));
        // Node 1 writes call 9's head and leg (as the callee's proxy
        // does when its device rings and answers).
        for e in call(9, s2, s1) {
            reps[0].on_proxy_event(T0, &e);
        }
        settle(&mut reps, T0);
        let c9 = call_key(crate::session::CallId(9));
        assert!(live(&reps[1], SCOPE_CALLS, &c9));
        // The resync lists s1 only (call 9 is not this proxy's to list).
        reps[0].resync(T0 + 1000, vec![up(s1, 1)], &|c| c.0 == 9);
        settle(&mut reps, T0 + 1000);
        for r in &reps {
            assert!(live(r, SCOPE_CALLS, &c9), "a held call swept");
            assert!(
                live(r, SCOPE_CALLS, &leg_key(crate::session::CallId(9), s1)),
                "its leg swept"
            );
        }
        assert_eq!(reps[0].stats().swept, 0);
        // The same resync once the proxy no longer holds it: a ghost.
        reps[0].resync(T0 + 2000, vec![up(s1, 1)], &|_| false);
        settle(&mut reps, T0 + 2000);
        assert!(!live(&reps[1], SCOPE_CALLS, &c9), "an unheld call stays");
    }

    /// In chunks of one entry: an entry written by an event while the sweep
    /// runs is never swept, and the walk ends.
    #[test]
    fn a_change_made_during_a_chunked_sweep_is_kept() {
        let mut reps = pair();
        for n in 1..=20 {
            reps[0].on_proxy_event(T0, &up(sid(n), 1));
        }
        reps[0].begin_resync();
        for n in 1..=10 {
            reps[0].on_proxy_event(T0, &up(sid(n), 1));
        }
        reps[0].end_resync();
        assert!(reps[0].sweep_step(T0, 1, &|_| false));
        // New while the sweep runs: must stay.
        reps[0].on_proxy_event(T0, &up(sid(30), 1));
        let mut steps = 1;
        while reps[0].sweep_step(T0, 1, &|_| false) {
            steps += 1;
            assert!(steps < 1000, "the sweep never ends");
        }
        assert!(steps >= 20, "{steps} steps of one entry for 21 entries");
        assert_eq!(reps[0].stats().swept, 10);
        for n in 1..=10 {
            assert!(live(&reps[0], SCOPE_SESSIONS, &session_key(sid(n))));
        }
        for n in 11..=20 {
            assert!(!live(&reps[0], SCOPE_SESSIONS, &session_key(sid(n))));
        }
        assert!(live(&reps[0], SCOPE_SESSIONS, &session_key(sid(30))));
        settle(&mut reps, T0);
        same_tables(&reps);
    }
}
