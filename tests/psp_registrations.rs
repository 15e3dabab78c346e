//! anypsp on the test bed: a registration is expired only by the proxy
//! serving its session (docs/anypsp-protocol.md 16.7). Its replicas keep it
//! until that proxy refreshes or removes it, or until `REPLICA_GRACE` past
//! its expiry on their own clock, and then drop it silently.

use anytun::call::Cause;
use anytun::client::Event;
use anytun::proxy::registry::REPLICA_GRACE;
use anytun::testbed::{name, Bed};
use std::time::Duration;

/// bob registers "bob" for `secs` (his client refreshes at 80 % of it).
fn register_for(bed: &mut Bed, secs: u32) {
    let now = bed.now;
    bed.site("bob").client.register(now, name("bob"), secs);
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::Registered { .. })),
        1
    );
}

/// Proxy 3's clock runs 50 s ahead (within the sync engine's drift bound).
/// bob, served by proxy 2, registers for 100 s: proxy 3's copy reaches its
/// expiry on its own clock 50 s later, 30 s before bob refreshes. It must
/// not expire it. Before the fix its `Unregistered` became a take-over and
/// delete of the entry, which removed bob's live binding on every proxy,
/// and alice's call found nobody.
#[test]
fn a_replica_with_a_fast_clock_does_not_expire_a_live_registration() {
    let mut bed = Bed::new(3, &["alice", "bob"], 51);
    bed.set_clock_offset(2, 50_000);
    bed.connect_all();
    register_for(&mut bed, 100);
    bed.run_for(Duration::from_secs(55));
    for p in 0..3 {
        assert_eq!(bed.proxy(p).registration_count(), 1, "proxy {p}");
    }
    // alice moves to the proxy with the fast clock and calls from there:
    // its lookup finds bob's binding, 5 s past its expiry on its clock but
    // within the grace, his session served by proxy 2.
    bed.set_route("alice", Some(2));
    let call = bed.call("alice", "bob");
    assert_eq!(bed.ended_causes("alice"), [], "bob not found");
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::IncomingCall { .. })),
        1
    );
    bed.answer("bob", call);
    bed.talk("alice", "bob", call, 0..20, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..20), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..20), Vec::<u32>::new());
    bed.hangup("alice", call);
    assert_eq!(bed.ended_causes("bob"), [Cause::Normal]);
    // bob's refresh (at 80 s) reaches every copy; nothing was dropped.
    bed.run_for(Duration::from_secs(40));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::Registered { .. })),
        2
    );
    for p in 0..3 {
        assert_eq!(bed.proxy(p).registration_count(), 1, "proxy {p}");
        assert_eq!(bed.proxy(p).psp_stats().replica_bindings_dropped, 0);
    }
    assert!(bed.same_digests());
    assert_eq!(bed.nonce_reuses, 0);
}

/// bob's serving proxy (2) is cut off from the others after he registers
/// for 100 s: his refresh cannot reach them. Their copies outlive the
/// expiry by the grace, then go silently (no tombstone: a deletion made
/// there would, once the partition heals, win over the refresh and remove
/// the live binding everywhere). Healed, the refresh reaches them.
#[test]
fn an_unrefreshed_replica_goes_silently_past_the_grace_and_comes_back_with_the_refresh() {
    let mut bed = Bed::new(3, &["alice", "bob"], 52);
    bed.connect_all();
    register_for(&mut bed, 100);
    bed.run_for(Duration::from_secs(1));
    bed.partitions.insert((1, 0));
    bed.partitions.insert((1, 2));
    let grace = REPLICA_GRACE.as_secs();
    bed.run_for(Duration::from_secs(100 + grace - 3));
    for p in 0..3 {
        assert_eq!(bed.proxy(p).registration_count(), 1, "proxy {p}");
    }
    bed.run_for(Duration::from_secs(5));
    assert_eq!(bed.proxy(1).registration_count(), 1, "bob's proxy");
    for p in [0, 2] {
        assert_eq!(bed.proxy(p).registration_count(), 0, "proxy {p}");
        assert_eq!(bed.proxy(p).psp_stats().replica_bindings_dropped, 1);
    }
    bed.partitions.clear();
    bed.run_for(Duration::from_secs(5));
    for p in 0..3 {
        assert_eq!(bed.proxy(p).registration_count(), 1, "proxy {p}");
    }
    assert!(bed.same_digests());
    // alice (proxy 1) reaches bob.
    let call = bed.call("alice", "bob");
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::IncomingCall { .. })),
        1
    );
    bed.hangup("alice", call);
    assert_eq!(bed.nonce_reuses, 0);
}
