//! anypsp on the real sync engine (docs/anypsp-protocol.md Section 16):
//! the test bed's proxies replicate through `Replicator`s whose messages
//! travel the bed's peer links. Issue 7 tests (4), (5), (7), (8), (9).

use anytun::call::Cause;
use anytun::client::Event;
use anytun::session::ProxyId;
use anytun::sync::bridge::codec::{session_key, SCOPE_SESSIONS};
use anytun::sync::msg::{caps, Hello, Msg, Push};
use anytun::sync::{Entry, Scope, Stamp, SyncDrop, Version};
use anytun::testbed::Bed;
use anytun::wire::DropReason;
use std::time::Duration;

/// Runs in steps of `step` until `f` holds, at most `max`; the time it
/// took.
fn run_until_true(
    bed: &mut Bed,
    step: Duration,
    max: Duration,
    f: impl Fn(&Bed) -> bool,
) -> Option<Duration> {
    let start = bed.now;
    while bed.now - start < max {
        if f(bed) {
            return Some(bed.now - start);
        }
        bed.run_for(step);
    }
    f(bed).then(|| bed.now - start)
}

/// (4) A partition with changes on both sides, healed: identical table
/// digests on every proxy, and the proxies' own state agrees.
#[test]
fn a_partition_with_changes_on_both_sides_heals_to_identical_tables() {
    let names = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut bed = Bed::new(3, &names, 21);
    // alice, dave on proxy 1; bob, erin on 2; carol, frank on 3. erin and
    // frank connect during the partition.
    let wall = bed.unix_start;
    for n in ["alice", "bob", "carol", "dave"] {
        let now = bed.now;
        bed.site(n).client.connect(now, wall);
    }
    bed.run_for(Duration::from_millis(300));
    bed.register("bob", "bob");
    bed.register("alice", "alice");
    bed.run_for(Duration::from_secs(1));
    assert!(bed.same_digests(), "in sync before the cut");
    // Cut proxy 1 from 2 and 3.
    bed.partitions.insert((0, 1));
    bed.partitions.insert((0, 2));
    bed.run_for(Duration::from_millis(100));
    // Side A (proxy 1): dave registers, a revocation of carol (served on
    // side B) is made here.
    bed.register("dave", "dave");
    bed.revoke(0, "carol");
    // Side B (proxies 2, 3): frank's session comes up, erin registers,
    // and carol... is still up there: she calls bob.
    let now = bed.now;
    let wall = bed.unix_start + (now - bed.now).as_nanos();
    bed.site("frank").client.connect(now, wall + 2_000_000_000);
    bed.site("erin").client.connect(now, wall + 2_000_000_000);
    bed.run_for(Duration::from_millis(300));
    assert!(bed.site("frank").client.session().is_some());
    bed.register("erin", "erin");
    let call = bed.establish_call("carol", "bob");
    assert!(bed.proxy(1).call_count() >= 1, "the call is up on side B");
    assert!(!bed.same_digests(), "the sides diverged");
    bed.run_for(Duration::from_secs(5));
    // Heal.
    bed.partitions.clear();
    let t = run_until_true(
        &mut bed,
        Duration::from_millis(100),
        Duration::from_secs(60),
        Bed::same_digests,
    );
    let t = t.expect("identical digests after the heal");
    println!(
        "partition healed: identical digests after {} ms",
        t.as_millis()
    );
    bed.run_for(Duration::from_secs(1));
    assert!(bed.same_digests());
    // The revocation made on side A ended carol's session everywhere, and
    // with it her call; dave's, erin's and frank's changes reached all.
    let l = bed.live();
    let carol = bed.site("carol").client.session();
    for &i in &l {
        let p = bed.proxy(i);
        if let Some(c) = carol {
            assert_eq!(
                p.serving_proxy(c),
                None,
                "carol's session on proxy {}",
                i + 1
            );
        }
        assert_eq!(p.call_count(), 0, "carol's call ended on proxy {}", i + 1);
        assert!(!bed.stores[i].iter().any(|(n, _)| n.as_str() == "carol"));
    }
    let counts: Vec<(usize, usize)> = l
        .iter()
        .map(|i| {
            (
                bed.proxy(*i).session_count(),
                bed.proxy(*i).registration_count(),
            )
        })
        .collect();
    assert!(counts.iter().all(|c| *c == counts[0]), "{counts:?}");
    // alice, bob, dave, erin, frank; bindings alice, bob, dave, erin.
    assert_eq!(counts[0], (5, 4));
    for n in ["alice", "bob", "dave", "erin", "frank"] {
        let views = bed.serving_views(n);
        let first = views.values().next().copied().flatten();
        assert!(
            first.is_some() && views.values().all(|v| *v == first),
            "{n}: {views:?}"
        );
    }
    let _ = call;
    assert_eq!(bed.nonce_reuses, 0);
}

/// (5) A proxy restarted empty pulls the full table (its replicator turns
/// synced) before it serves; then it serves a call with no nonce reused and
/// no handshake or set-up repeated.
#[test]
fn a_restarted_proxy_pulls_the_table_before_it_serves_and_reuses_no_nonce() {
    let mut bed = Bed::new(3, &["alice", "bob"], 22);
    bed.connect_all();
    bed.register("bob", "bob");
    let call = bed.establish_call("alice", "bob");
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    // alice's proxy dies; her route moves to proxy 2.
    bed.kill(0);
    bed.set_route("alice", Some(1));
    bed.talk("alice", "bob", call, 50..100, |_, _| {});
    bed.run_for(Duration::from_secs(2));
    bed.restart(0);
    assert!(!bed.synced(0), "synced before any exchange");
    assert_eq!(bed.proxy(0).session_count(), 0);
    let t = run_until_true(
        &mut bed,
        Duration::from_millis(1),
        Duration::from_secs(30),
        |b| b.synced(0),
    )
    .expect("the restarted proxy syncs");
    println!(
        "restarted proxy synced after {} ms (peer latency 10 ms)",
        t.as_millis()
    );
    // At the moment it turns synced, it holds what the others hold.
    assert_eq!(bed.digests(0), bed.digests(1));
    assert_eq!(bed.proxy(0).session_count(), 2);
    assert_eq!(bed.proxy(0).registration_count(), 1);
    assert_eq!(bed.proxy(0).call_count(), 1);
    // Now it may serve: alice's route comes back to it (A -> B -> A).
    bed.set_route("alice", Some(0));
    bed.talk("alice", "bob", call, 100..200, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    let p1 = ProxyId::new(1).unwrap();
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p1)));
    let heard = &bed.sites[1].heard;
    let missing: Vec<u32> = (100..200)
        .filter(|s| !heard.iter().any(|f| f.seq == *s))
        .collect();
    assert!(
        missing.is_empty(),
        "frames lost: {missing:?}; nonce reuses {}; bob drops {:?}",
        bed.nonce_reuses,
        bed.sites[1].client.drops()
    );
    assert!(bed
        .site("bob")
        .heard
        .iter()
        .filter(|f| f.seq >= 100)
        .all(|f| f.via == p1.sender() || f.via == ProxyId::new(2).unwrap().sender()));
    assert_eq!(bed.connected("alice"), 1, "alice repeated her handshake");
    assert_eq!(bed.connected("bob"), 1);
    assert_eq!(bed.proxy(0).stats().handshakes_accepted, 0);
    let ended = bed
        .site("alice")
        .events
        .iter()
        .filter(|e| matches!(e, Event::CallEnded { .. }))
        .count();
    assert_eq!(ended, 0);
    assert_eq!(bed.nonce_reuses, 0, "a nonce was reused");
}

/// (7) A captured handshake initiation replayed to a second proxy is
/// refused there (the newest time stamp was replicated), and counted.
/// Without replication (a partition) the same replay is accepted: the
/// replication is what refuses it.
#[test]
fn a_captured_handshake_replayed_to_another_proxy_is_refused() {
    let mut bed = Bed::new(3, &["alice", "bob"], 23);
    bed.partitions.insert((0, 2));
    bed.partitions.insert((1, 2));
    bed.connect_all();
    bed.run_for(Duration::from_secs(1));
    let init = bed.site("alice").sent[0].clone();
    let src = bed.site("alice").addr;
    let p1 = bed.proxy(1);
    let (accepted, stale) = (
        p1.stats().handshakes_accepted,
        p1.stats().drops.get(DropReason::StaleTimestamp),
    );
    bed.inject(1, src, init.clone());
    bed.run_for(Duration::from_millis(50));
    let p1 = bed.proxy(1);
    assert_eq!(
        p1.stats().handshakes_accepted,
        accepted,
        "the replay made a session"
    );
    assert_eq!(p1.stats().drops.get(DropReason::StaleTimestamp), stale + 1);
    // Proxy 3 is cut off: the time stamp never reached it.
    let before = bed.proxy(2).stats().handshakes_accepted;
    bed.inject(2, src, init);
    bed.run_for(Duration::from_millis(50));
    assert_eq!(bed.proxy(2).stats().handshakes_accepted, before + 1);
}

fn drops(bed: &Bed, i: usize, r: SyncDrop) -> u64 {
    bed.rep(i).engine().stats().drops(r)
}

/// (8) A peer sending garbage, replayed messages, or messages under
/// another node's id: refused and counted, tables and proxies intact.
#[test]
fn hostile_sync_messages_are_refused_counted_and_change_nothing() {
    let mut bed = Bed::new(3, &["alice", "bob"], 24);
    bed.keep_sync = true;
    bed.connect_all();
    bed.register("bob", "bob");
    bed.run_for(Duration::from_secs(1));
    assert!(bed.same_digests());
    let digests = bed.digests(1);
    let state = |b: &Bed| (b.proxy(1).session_count(), b.proxy(1).registration_count());
    let before = state(&bed);
    let wall = bed.wall_ms();
    // Garbage.
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![2],
        vec![0xEE, 1, 2, 3],
        vec![2, 1, 0xFF, 0xFF, 0xFF],
        vec![0; 70_000],
    ];
    let n = garbage.len() as u64;
    let total = |b: &Bed| SyncDrop::ALL.iter().map(|r| drops(b, 1, *r)).sum::<u64>();
    let t0 = total(&bed);
    for g in garbage {
        bed.inject_sync(0, 1, g);
    }
    bed.run_for(Duration::from_millis(50));
    assert_eq!(total(&bed) - t0, n, "each garbage message counted once");
    // Another node's id: a Hello naming node 3 on node 1's link, and a
    // message from a node that is no peer (id 9).
    let hello = Msg::Hello(Hello {
        node: 3,
        caps: caps::V1,
        scopes: vec![],
    })
    .encode();
    bed.inject_sync(0, 1, hello.clone());
    bed.inject_sync(8, 1, hello);
    bed.run_for(Duration::from_millis(50));
    assert_eq!(drops(&bed, 1, SyncDrop::WrongNode), 1);
    assert_eq!(drops(&bed, 1, SyncDrop::UnknownPeer), 1);
    // An entry forged under another owner's name (version not drawn by
    // its owner) and one from a clock far ahead.
    let sid = bed.site("alice").client.session().unwrap();
    let forged = |owner: u16, node: u16, ms: u64| Entry {
        key: session_key(sid),
        owner,
        stamp: Stamp {
            epoch: 9,
            version: Version {
                ms,
                logical: 0,
                node,
            },
        },
        value: Some(vec![1; 10].into()),
    };
    for e in [forged(3, 1, wall), forged(1, 1, wall + 3_600_000)] {
        let m = Msg::Push(Push {
            req: None,
            entries: vec![(SCOPE_SESSIONS, e)],
        })
        .encode();
        bed.inject_sync(0, 1, m);
    }
    bed.run_for(Duration::from_millis(50));
    assert_eq!(drops(&bed, 1, SyncDrop::BadEntry), 1);
    assert_eq!(drops(&bed, 1, SyncDrop::ClockSkew), 1);
    // Replays of every message proxy 1 sent proxy 2 so far.
    let applied = bed.rep(1).engine().stats().applied;
    let replays: Vec<Vec<u8>> = bed
        .sync_log
        .iter()
        .filter(|(f, t, _)| (*f, *t) == (0, 1))
        .map(|(_, _, m)| m.clone())
        .collect();
    assert!(replays.len() >= 3);
    for m in replays {
        bed.inject_sync(0, 1, m);
    }
    bed.run_for(Duration::from_millis(50));
    assert_eq!(
        bed.rep(1).engine().stats().applied,
        applied,
        "a replay changed an entry"
    );
    assert_eq!(bed.digests(1), digests, "tables changed");
    assert_eq!(state(&bed), before, "the proxy changed");
    assert_eq!(bed.rep(1).stats().bad_entries, 0);
    // A well-formed entry with a value that does not parse as a session:
    // the engine stores it (a peer is trusted for entries), the bridge
    // refuses to apply it and counts it; the proxy is untouched.
    let m = Msg::Push(Push {
        req: None,
        entries: vec![(SCOPE_SESSIONS, forged(1, 1, wall + 1))],
    })
    .encode();
    bed.inject_sync(0, 1, m);
    bed.run_for(Duration::from_millis(50));
    assert_eq!(bed.rep(1).stats().bad_entries, 1);
    assert_eq!(state(&bed), before);
    assert_eq!(
        bed.proxy(1).serving_proxy(sid),
        Some(ProxyId::new(1).unwrap())
    );
    let _ = Scope(0);
}

/// (9) A revocation on one proxy ends that key's sessions on all proxies
/// (and the call the key was in).
#[test]
fn a_revocation_on_one_proxy_ends_the_sessions_on_all() {
    let mut bed = Bed::new(3, &["alice", "bob", "carol"], 25);
    bed.connect_all();
    bed.register("bob", "bob");
    let call = bed.establish_call("alice", "bob");
    bed.talk("alice", "bob", call, 0..10, |_, _| {});
    let sid = bed.site("alice").client.session().unwrap();
    for i in 0..3 {
        assert!(bed.proxy(i).serving_proxy(sid).is_some());
    }
    // Revoked on proxy 3, which does not serve alice (proxy 1 does).
    bed.revoke(2, "alice");
    bed.run_for(Duration::from_millis(500));
    for i in 0..3 {
        assert_eq!(
            bed.proxy(i).serving_proxy(sid),
            None,
            "alice's session on proxy {}",
            i + 1
        );
        assert!(
            !bed.stores[i].iter().any(|(n, _)| n.as_str() == "alice"),
            "store {}",
            i + 1
        );
        assert_eq!(bed.proxy(i).call_count(), 0, "the call on proxy {}", i + 1);
        assert_eq!(bed.proxy(i).session_count(), 2, "bob and carol stay");
    }
    let ended = bed
        .site("bob")
        .events
        .iter()
        .filter(|e| matches!(e, Event::CallEnded { .. }))
        .count();
    assert_eq!(ended, 1, "bob was told the call ended");
    // alice cannot come back: her handshake is refused everywhere.
    let (now, wall) = (bed.now, bed.unix_start + 10_000_000_000);
    bed.site("alice").client.connect(now, wall);
    bed.run_for(Duration::from_millis(300));
    let refused: u64 = (0..3)
        .map(|i| bed.proxy(i).stats().refused_unknown_key)
        .sum();
    assert!(refused >= 1);
    assert!(bed.same_digests());
    let _ = Cause::Normal;
}

/// Figures (printed; run with --nocapture): how soon a new session is held
/// by every proxy of the bed, and the sync bytes one session set-up
/// (handshake and Register) costs. Asserts that every session reached
/// every proxy and the tables ended identical.
#[test]
fn figures_new_session_visible_everywhere_and_sync_bytes_per_setup() {
    const N: usize = 200;
    let names: Vec<&'static str> = (0..N)
        .map(|i| &*Box::leak(format!("u{i}").into_boxed_str()))
        .collect();
    let mut bed = Bed::new(3, &names, 26);
    bed.run_for(Duration::from_millis(100));
    let mut visible = Vec::with_capacity(N);
    let (bytes0, msgs0) = (bed.sync_bytes, bed.sync_messages);
    for (i, n) in names.iter().enumerate() {
        let (now, wall) = (bed.now, bed.unix_start + (i as u128 + 1) * 1_000_000_000);
        bed.site(n).client.connect(now, wall);
        let t = run_until_true(
            &mut bed,
            Duration::from_millis(1),
            Duration::from_secs(5),
            |b| (0..3).all(|p| b.proxy(p).session_count() > i),
        );
        visible.push(t.expect("the session reached every proxy").as_micros());
        let now = bed.now;
        bed.site(n)
            .client
            .register(now, anytun::testbed::name(n), 300);
        bed.run_for(Duration::from_millis(50));
    }
    let (bytes, msgs) = (bed.sync_bytes - bytes0, bed.sync_messages - msgs0);
    bed.run_for(Duration::from_secs(1));
    assert!(bed.same_digests());
    assert!((0..3).all(|p| bed.proxy(p).registration_count() == N));
    visible.sort_unstable();
    let pct = |q: usize| visible[(visible.len() - 1) * q / 100] as f64 / 1000.0;
    println!(
        "new session held by all 3 proxies, from the client's connect (access 5 ms, peer 10 ms one way, 1 ms steps): p50 {} ms, p99 {} ms, max {} ms over {N} sessions",
        pct(50),
        pct(99),
        pct(100)
    );
    println!(
        "sync traffic per session set-up (handshake + Register, all 3 proxies, anti-entropy rounds of the period included): {} bytes in {:.1} messages, i.e. {} bytes per receiving proxy",
        bytes / N as u64,
        msgs as f64 / N as f64,
        bytes / N as u64 / 2
    );
}

/// A proxy restarted empty takes back the sessions it served before (their
/// records outlived it in the other proxies' tables, naming it as serving):
/// its clients, whose route comes back to it, go on with no new handshake
/// and no nonce reused.
#[test]
fn a_restarted_proxy_takes_back_its_clients_without_a_new_handshake() {
    let mut bed = Bed::new(3, &["alice", "bob"], 27);
    bed.connect_all();
    bed.register("alice", "alice");
    bed.register("bob", "bob");
    bed.run_for(Duration::from_secs(1));
    let sid = bed.site("alice").client.session().unwrap();
    // alice's proxy dies and comes back 1.5 s later; her route never moves.
    // The others adopt her session meanwhile (peer down after 1 s).
    bed.kill(0);
    bed.run_for(Duration::from_millis(1500));
    bed.restart(0);
    run_until_true(
        &mut bed,
        Duration::from_millis(1),
        Duration::from_secs(30),
        |b| b.synced(0),
    )
    .expect("synced");
    let p1 = ProxyId::new(1).unwrap();
    assert_eq!(bed.proxy(0).serving_proxy(sid), Some(p1), "not taken back");
    // Idle (keepalives only) for longer than the session timeout: the
    // proxies that adopted her must have let her go, not judge her
    // silence and end her session.
    bed.run_for(Duration::from_secs(240));
    for i in 0..3 {
        assert_eq!(
            bed.proxy(i).serving_proxy(sid),
            Some(p1),
            "view of proxy {}",
            i + 1
        );
    }
    // alice calls bob (on proxy 2) through her restarted proxy.
    let call = bed.establish_call("alice", "bob");
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    for (from, to) in [(0, 1), (1, 0)] {
        let heard = &bed.sites[to].heard;
        let missing: Vec<u32> = (0..50)
            .filter(|s| !heard.iter().any(|f| f.seq == *s))
            .collect();
        assert!(missing.is_empty(), "{from} -> {to}: {missing:?}");
    }
    assert_eq!(bed.connected("alice"), 1, "alice repeated her handshake");
    assert_eq!(bed.proxy(0).stats().handshakes_accepted, 0);
    assert_eq!(bed.nonce_reuses, 0);
}

/// Seeded loss on the peer links applies to replication too: lost pushes
/// are repaired by anti-entropy, and every proxy ends with every session
/// and registration.
#[test]
fn replication_over_lossy_peer_links_converges() {
    let names = ["a1", "a2", "a3", "a4", "a5", "a6"];
    let mut bed = Bed::new(3, &names, 28);
    bed.peer_loss_permille = 300;
    bed.connect_all();
    for n in names {
        bed.register(n, n);
    }
    let lost_some = !(0..3).all(|i| bed.proxy(i).registration_count() == names.len());
    let t = run_until_true(
        &mut bed,
        Duration::from_millis(100),
        Duration::from_secs(120),
        |b| b.same_digests() && (0..3).all(|i| b.proxy(i).registration_count() == names.len()),
    )
    .expect("converges despite 30 % loss");
    assert!(lost_some, "the seed lost no push: the test shows nothing");
    println!("30 % loss on peer links: converged {} ms after the last change (lost pushes seen: {lost_some})", t.as_millis());
    for i in 0..3 {
        assert_eq!(bed.proxy(i).session_count(), names.len());
    }
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn a_replica_stays_compact_until_used_and_is_made_whole_by_its_clients_packet() {
    // Spec 16.9: a replica keeps the replicated record (no send epoch)
    // until first used here.
    let mut bed = Bed::new(3, &["alice", "bob"], 41);
    let epoch_before = bed.proxy(2).epochs().next();
    bed.connect_all();
    bed.register("bob", "bob");
    bed.run_for(Duration::from_millis(500));
    let a = bed.site("alice").client.session().unwrap();
    let b = bed.site("bob").client.session().unwrap();
    // Proxy 3 serves no one: both replicas compact, no epoch taken.
    assert_eq!(bed.proxy(2).session_is_whole(a), Some(false));
    assert_eq!(bed.proxy(2).session_is_whole(b), Some(false));
    assert_eq!(bed.proxy(2).epochs().next(), epoch_before);
    // Each serving proxy holds its own whole, the other's compact.
    assert_eq!(bed.proxy(0).session_is_whole(a), Some(true));
    assert_eq!(bed.proxy(0).session_is_whole(b), Some(false));
    // A call: the shortest path seals each side's frames at the other's
    // proxy, which makes the replica there whole.
    let call = bed.establish_call("alice", "bob");
    bed.talk("alice", "bob", call, 0..5, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.proxy(0).session_is_whole(b), Some(true));
    assert_eq!(bed.proxy(1).session_is_whole(a), Some(true));
    assert_eq!(bed.proxy(2).session_is_whole(a), Some(false));
    // alice's route moves to proxy 3: her packet there makes her session
    // whole, and relaying her frame to bob his (an epoch each); once proxy
    // 1 confirms, proxy 3 serves her; voice goes on.
    bed.set_route("alice", Some(2));
    bed.talk("alice", "bob", call, 5..30, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.proxy(2).session_is_whole(a), Some(true));
    assert_eq!(bed.proxy(2).session_is_whole(b), Some(true));
    assert_eq!(bed.proxy(2).epochs().next(), epoch_before + 2);
    let p3 = ProxyId::new(3).unwrap();
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p3)));
    let heard: Vec<u32> = bed.site("bob").heard.iter().map(|f| f.seq).collect();
    assert!((0..30).all(|s| heard.contains(&s)), "{heard:?}");
    assert_eq!(bed.nonce_reuses, 0);
}
