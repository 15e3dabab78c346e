use super::*;
use crate::session::ProxyId;

impl CallTable {
    /// The indexes hold exactly what the calls say.
    fn check(&self) {
        let mut want: Vec<(SessionId, CallId)> = Vec::new();
        let mut timers = BTreeSet::new();
        for (id, c) in &self.calls {
            want.extend(c.parties().into_iter().map(|s| (s, *id)));
            timers.extend(c.timers(*id));
        }
        let mut have: Vec<(SessionId, CallId)> = self
            .by_session
            .iter()
            .flat_map(|(s, v)| v.iter().map(move |c| (*s, *c)))
            .collect();
        want.sort();
        have.sort();
        assert_eq!(have, want);
        assert!(self.by_session.values().all(|v| !v.is_empty()));
        assert_eq!(self.timers, timers);
        assert_eq!(self.served_in_calls, self.served_in_calls_counted());
    }
}

fn offering(caller: SessionId, legs: &[SessionId], now: Instant) -> Call {
    let legs = legs
        .iter()
        .map(|s| Leg {
            session: *s,
            invited: now,
            deadline: Some(now + Duration::from_secs(4)),
        })
        .collect();
    Call {
        caller,
        remote: false,
        forked: false,
        owner: None,
        legs: Legs::Offering {
            legs,
            cause: Cause::Unavailable,
            ring_until: now + Duration::from_secs(60),
            rung: false,
        },
    }
}

#[test]
fn indexes_follow_every_change() {
    let now = Instant::now();
    let p = ProxyId::new(1).unwrap();
    let s = |i| SessionId::new(p, i);
    let mut t = CallTable::default();
    t.insert(CallId(1), offering(s(1), &[s(2), s(3), s(4)], now));
    t.insert(CallId(2), offering(s(1), &[s(2)], now));
    t.check();
    assert_eq!(t.calls_of(s(1)), 2);
    assert_eq!(t.calls_of(s(2)), 2);
    // A refusal: busy outranks a later failure, and a later decision.
    assert_eq!(t.remove_leg(CallId(1), s(3), Cause::Busy), Some(2));
    assert_eq!(t.remove_leg(CallId(1), s(3), Cause::Busy), Some(2));
    t.check();
    let losers = t.answer(CallId(1), s(2), now, Duration::from_secs(15));
    assert_eq!(losers, vec![s(4)]);
    t.check();
    assert_eq!(t.calls_of(s(4)), 0);
    assert_eq!(t.media_peer(CallId(1), s(1), now), Some(s(2)));
    assert_eq!(t.media_peer(CallId(1), s(4), now), None);
    assert_eq!(t.media_peer(CallId(2), s(1), now), None, "not answered");
    // remove_leg on an answered call changes nothing.
    assert_eq!(t.remove_leg(CallId(1), s(2), Cause::Busy), None);
    t.check();
    assert!(t.remove(CallId(1)).is_some());
    assert_eq!(
        t.remove_leg(CallId(2), s(2), Cause::NetworkFailure),
        Some(0)
    );
    assert!(t.remove(CallId(2)).is_some());
    t.check();
    assert!(t.by_session.is_empty() && t.timers.is_empty() && t.calls.is_empty());
    assert!(t.ids.is_empty());
}

#[test]
fn sessions_served_here_in_calls_are_counted_as_they_change() {
    let now = Instant::now();
    let p = ProxyId::new(1).unwrap();
    let s = |i| SessionId::new(p, i);
    let mut t = CallTable::default();
    // s(1) and s(2) served here; s(3) a replica of a peer's session.
    t.set_served(s(1), true);
    t.set_served(s(2), true);
    assert_eq!(t.served_in_calls(), 0, "no call yet");
    t.insert(CallId(1), offering(s(3), &[s(2), s(4)], now));
    t.check();
    assert_eq!(t.served_in_calls(), 1, "s(2) is rung");
    t.insert(CallId(2), offering(s(1), &[s(2)], now));
    t.check();
    assert_eq!(t.served_in_calls(), 2);
    // s(2) loses call 1 (answered by s(4)) but is still in call 2.
    t.answer(CallId(1), s(4), now, Duration::ZERO);
    t.check();
    assert_eq!(t.served_in_calls(), 2);
    // Taken over by a peer: not carried here any more; back again.
    t.set_served(s(2), false);
    t.check();
    assert_eq!(t.served_in_calls(), 1);
    t.set_served(s(2), true);
    t.set_served(s(2), true);
    t.check();
    assert_eq!(t.served_in_calls(), 2, "told twice, counted once");
    // s(4) (answering call 1) becomes served here: carried.
    t.set_served(s(4), true);
    assert_eq!(t.served_in_calls(), 3);
    t.remove(CallId(2));
    t.check();
    assert_eq!(t.served_in_calls(), 1, "only s(4) in call 1");
    t.remove(CallId(1));
    t.check();
    assert_eq!(t.served_in_calls(), 0);
}

#[test]
fn refusal_ranking() {
    let now = Instant::now();
    let p = ProxyId::new(1).unwrap();
    let s = |i| SessionId::new(p, i);
    let mut t = CallTable::default();
    t.insert(CallId(1), offering(s(1), &[s(2), s(3), s(4)], now));
    t.remove_leg(CallId(1), s(2), Cause::Busy);
    t.remove_leg(CallId(1), s(3), Cause::Rejected);
    t.remove_leg(CallId(1), s(4), Cause::NetworkFailure);
    let Some(Call {
        legs: Legs::Offering { cause, .. },
        ..
    }) = t.get(&CallId(1))
    else {
        panic!("offering");
    };
    assert_eq!(*cause, Cause::Busy);
}
