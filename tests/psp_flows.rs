//! anypsp on the test bed: every call flow between clients served by
//! different proxies (issue 7 test 1), routes that move mid-call and
//! between a request and its answer (test 3), client links that lose and
//! reorder datagrams; voice compared sample for sample.

use anytun::call::Cause;
use anytun::client::Event;
use anytun::session::ProxyId;
use anytun::testbed::Bed;
use std::time::Duration;

#[test]
fn call_between_clients_served_by_different_proxies() {
    let (mut bed, call) = Bed::call_across(1);
    let p1 = ProxyId::new(1).unwrap();
    let p2 = ProxyId::new(2).unwrap();
    // Every live proxy sees alice served by 1 and bob by 2.
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p1)));
    assert!(bed.serving_views("bob").values().all(|v| *v == Some(p2)));

    // Voice: straight from the receiving proxy to the other party, sealed
    // with that proxy's sender id; nothing crosses between proxies.
    let peer_before = bed.peer_messages;
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.peer_messages, peer_before, "voice crossed a peer link");
    assert!(bed.missing("alice", "bob", 0..50).is_empty());
    assert!(bed.missing("bob", "alice", 0..50).is_empty());
    assert!(bed.site("bob").heard.iter().all(|f| f.via == p1.sender()));
    assert!(bed.site("alice").heard.iter().all(|f| f.via == p2.sender()));
    assert_eq!(bed.proxy(0).stats().media_relayed, 50);
    assert_eq!(bed.proxy(1).stats().media_relayed, 50);

    // DTMF both ways (control, handed to the serving proxy).
    let now = bed.now;
    bed.site("alice")
        .client
        .send_dtmf(now, call, '7', 120)
        .unwrap();
    bed.site("bob")
        .client
        .send_dtmf(now, call, '#', 80)
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::Dtmf { digit: '7', .. })),
        1
    );
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Dtmf { digit: '#', .. })),
        1
    );

    // Hangup from bob reaches alice through proxy 1; the call is gone on
    // every proxy.
    let now = bed.now;
    bed.site("bob")
        .client
        .hangup(now, call, Cause::Normal)
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("alice", |e| matches!(
            e,
            Event::CallEnded {
                cause: Cause::Normal,
                ..
            }
        )),
        1
    );
    for p in 0..3 {
        assert_eq!(bed.proxy(p).call_count(), 0, "proxy {p} holds the call");
    }
    assert_eq!(bed.connected("alice") + bed.connected("bob"), 2);
    // Proxy 3 holds every entry (replicated) but serves nobody: remote
    // entries made it send nothing, to clients or to peers.
    let p3 = bed.proxy(2);
    // 2 sessions up, 1 registration, call started, ringing, answered, ended.
    assert_eq!(p3.psp_stats().applied, 7, "{:?}", p3.psp_stats());
    assert_eq!(p3.psp_stats().apply_refused, 0);
    assert_eq!(p3.stats().packets_out, 0);
    assert_eq!(p3.psp_stats().control_to_peer, 0);
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn a_route_flipped_mid_call_moves_the_side_without_new_handshake_or_setup() {
    let (mut bed, call) = Bed::call_across(2);
    let handshakes = bed.handshakes();
    bed.talk("alice", "bob", call, 0..25, |_, _| {});
    // alice's anycast route now reaches proxy 2 (index 1), which serves bob.
    bed.set_route("alice", Some(1));
    bed.talk("alice", "bob", call, 25..50, |_, _| {});
    // ... and back to proxy 1, then to proxy 2 again (A -> B -> A -> B):
    // every proxy keeps sealing in its own epoch, no nonce repeats.
    bed.set_route("alice", Some(0));
    bed.talk("alice", "bob", call, 50..60, |_, _| {});
    bed.set_route("alice", Some(1));
    bed.talk("alice", "bob", call, 60..70, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.handshakes(), handshakes);
    bed.assert_nothing_repeated("alice", "bob");
    // A graceful move loses no frame.
    assert_eq!(bed.missing("alice", "bob", 0..70), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..70), Vec::<u32>::new());
    // Proxy 2 took alice over (twice), proxy 1 back once; every proxy knows.
    let p2 = ProxyId::new(2).unwrap();
    assert_eq!(bed.proxy(1).psp_stats().takeovers, 2);
    assert_eq!(bed.proxy(0).psp_stats().takeovers, 1);
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p2)));
    // From then on alice's frames reach bob sealed by proxy 2.
    let bob_heard = &bed.site("bob").heard;
    let via = |r: std::ops::Range<u32>, p: ProxyId| {
        bob_heard
            .iter()
            .filter(|f| r.contains(&f.seq))
            .all(|f| f.via == p.sender())
    };
    let p1 = ProxyId::new(1).unwrap();
    assert!(via(26..50, p2) && via(51..60, p1) && via(61..70, p2));
    // Control still flows (now sent by proxy 2 to alice), then hangup.
    let now = bed.now;
    bed.site("bob")
        .client
        .send_dtmf(now, call, '5', 100)
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Dtmf { digit: '5', .. })),
        1
    );
    let now = bed.now;
    bed.site("alice")
        .client
        .hangup(now, call, Cause::Normal)
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::CallEnded { .. })),
        1
    );
    for p in 0..3 {
        assert_eq!(bed.proxy(p).call_count(), 0);
    }
    assert_eq!(bed.nonce_reuses, 0);
    assert!(bed.nonces.len() > 200);
}

/// Every live proxy holds no call, and every scope's digest is the same
/// on all of them.
fn settled(bed: &Bed) {
    for p in bed.live() {
        assert_eq!(bed.proxy(p).call_count(), 0, "proxy {p} holds a call");
    }
    assert!(bed.same_digests());
}

/// The callee, on another proxy, refuses: the caller hears the callee's
/// cause through its own proxy, and the call is gone everywhere.
#[test]
fn a_reject_across_proxies_reaches_the_caller_with_its_cause() {
    let (mut bed, call) = Bed::ringing_across(21);
    let now = bed.now;
    bed.site("bob")
        .client
        .reject(now, call, Cause::Busy)
        .unwrap();
    bed.run_for(Duration::from_millis(300));
    assert_eq!(bed.ended_causes("alice"), [Cause::Busy]);
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Answered { .. })),
        0
    );
    // The refusal crossed from bob's proxy to alice's (the call's owner).
    assert!(bed.proxy(1).psp_stats().control_to_peer >= 1);
    bed.run_for(Duration::from_secs(2));
    settled(&bed);
    // A second call after the refusal still works, in the same sessions.
    let call = bed.call("alice", "bob");
    bed.answer("bob", call);
    bed.talk("alice", "bob", call, 0..20, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..20), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..20), Vec::<u32>::new());
    assert_eq!(bed.connected("alice") + bed.connected("bob"), 2);
    assert_eq!(bed.nonce_reuses, 0);
}

/// Forking to devices of one name on three proxies. bobt (on the call's
/// owner, proxy 1) refuses, which alone ends nothing. bob (proxy 2) and
/// bobm (proxy 3) answer 1 ms apart, each on a proxy that holds the call
/// as a replica: the owner decides, so the first answer to reach it wins,
/// the other device hears "answered elsewhere", and voice flows between
/// the caller and the winner sample for sample. Before the owner decided,
/// each device's proxy accepted its own answer: both devices were told the
/// call was answered elsewhere and alice talked to nobody.
#[test]
fn forking_to_devices_on_several_proxies_first_answer_wins() {
    let (mut bed, call) = Bed::forked_across(22);
    let now = bed.now;
    bed.site("bobt")
        .client
        .reject(now, call, Cause::Rejected)
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(bed.ended_causes("alice"), []);
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(1));
    let now = bed.now;
    bed.site("bobm").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(300));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Answered { .. })),
        1
    );
    assert_eq!(bed.ended_causes("bob"), [], "the winner's call ended");
    assert_eq!(bed.ended_causes("bobm"), [Cause::AnsweredElsewhere]);
    assert_eq!(
        bed.ended_causes("bobt"),
        [],
        "bobt refused: told nothing more"
    );
    assert!(bed.proxy(2).psp_stats().requests_to_owner >= 1);
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    for d in ["bobm", "bobt"] {
        assert!(bed.site(d).heard.is_empty(), "{d} heard voice");
    }
    bed.hangup("bob", call);
    assert_eq!(bed.ended_causes("alice"), [Cause::Normal]);
    bed.run_for(Duration::from_secs(2));
    settled(&bed);
    assert_eq!(bed.nonce_reuses, 0);
}

/// Every device on every proxy refuses: the caller hears the most telling
/// refusal (busy over a decline), once. Before the owner decided, bob's
/// "busy", handled on his own proxy, reached the others as a leg dropped
/// with no cause, and alice heard bobm's "rejected".
#[test]
fn forking_to_devices_on_several_proxies_all_refuse() {
    let (mut bed, call) = Bed::forked_across(23);
    for (d, cause) in [
        ("bobt", Cause::Rejected),
        ("bob", Cause::Busy),
        ("bobm", Cause::Rejected),
    ] {
        assert_eq!(bed.ended_causes("alice"), [], "ended before {d} refused");
        let now = bed.now;
        bed.site(d).client.reject(now, call, cause).unwrap();
        bed.run_for(Duration::from_millis(200));
    }
    assert_eq!(bed.ended_causes("alice"), [Cause::Busy]);
    bed.run_for(Duration::from_secs(2));
    settled(&bed);
    assert_eq!(bed.nonce_reuses, 0);
}

/// A call forked to bob and bobm, both on proxy 2 (which alone was handed
/// the Invites by the owner, proxy 1); bobm's route moves to proxy 3, which
/// holds the call only through replication. bob answers, and bobm 1 ms
/// later, on proxy 3: both answers must reach the owner, named in the
/// replicated call (spec 15.4, 16.2), so that the first wins and bobm hears
/// "answered elsewhere". Before, proxy 3 knew no owner, decided bobm's
/// answer itself, and both devices won (each told the other lost).
#[test]
fn a_forked_calls_device_moved_after_its_invite_is_decided_by_the_owner() {
    let mut bed = Bed::new(3, &["alice", "bob", "bobm"], 24);
    bed.set_route("bobm", Some(1));
    bed.allow(1, "bobm", "bob");
    bed.connect_all();
    for d in ["bob", "bobm"] {
        bed.register(d, "bob");
    }
    bed.run_for(Duration::from_secs(1));
    let call = bed.call("alice", "bob");
    for d in ["bob", "bobm"] {
        let rung = bed.count(d, |e| matches!(e, Event::IncomingCall { .. }));
        assert_eq!(rung, 1, "{d} rung");
    }
    bed.set_route("bobm", Some(2));
    let handed = bed.proxy(2).psp_stats().requests_to_owner;
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(1));
    let now = bed.now;
    bed.site("bobm").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(300));
    let p3 = ProxyId::new(3);
    assert!(bed.serving_views("bobm").values().all(|v| *v == p3));
    assert_eq!(bed.proxy(2).psp_stats().requests_to_owner, handed + 1);
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Answered { .. })),
        1
    );
    assert_eq!(bed.ended_causes("bob"), [], "the winner's call ended");
    assert_eq!(bed.ended_causes("bobm"), [Cause::AnsweredElsewhere]);
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    assert!(bed.site("bobm").heard.is_empty(), "bobm heard voice");
    bed.hangup("bob", call);
    assert_eq!(bed.ended_causes("alice"), [Cause::Normal]);
    bed.run_for(Duration::from_secs(2));
    settled(&bed);
    assert_eq!(bed.nonce_reuses, 0);
}

/// When, in the set-up, a route moves.
#[derive(Clone, Copy, Debug)]
enum When {
    /// Right after the caller sent its Invite (the Invite still reaches the
    /// old proxy; the Ringing and everything after meet the new route).
    AfterInvite,
    /// While the callee rings, before it answers.
    WhileRinging,
}

/// alice (proxy 1) calls bob (proxy 2); `who`'s route moves to proxy index
/// `to` at `when`; bob answers; they talk, send a digit each way and bob
/// hangs up. Every step must happen once, no frame may be lost, and `who`
/// ends served by `to`.
fn route_moves_during_setup(seed: u64, who: &str, to: usize, when: When) {
    let mut bed = Bed::new(3, &["alice", "bob"], seed);
    bed.connect_all();
    bed.register("bob", "bob");
    let handshakes = bed.handshakes();
    let now = bed.now;
    let call = bed
        .site("alice")
        .client
        .call(now, anytun::testbed::name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    if let When::AfterInvite = when {
        // The Invite leaves alice now (5 ms to her proxy).
        bed.run_for(Duration::ZERO);
        bed.set_route(who, Some(to));
    }
    bed.run_for(Duration::from_millis(300));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::IncomingCall { .. })),
        1
    );
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Ringing { .. })),
        1
    );
    if let When::WhileRinging = when {
        bed.set_route(who, Some(to));
        bed.run_for(Duration::from_millis(500));
    }
    bed.answer("bob", call);
    bed.run_for(Duration::from_millis(300));
    bed.assert_nothing_repeated("alice", "bob");
    assert_eq!(bed.handshakes(), handshakes);
    let serving = ProxyId::new(to as u16 + 1).unwrap();
    assert!(
        bed.serving_views(who).values().all(|v| *v == Some(serving)),
        "{who} not served by {serving:?} everywhere: {:?}",
        bed.serving_views(who)
    );
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    let now = bed.now;
    bed.site("alice")
        .client
        .send_dtmf(now, call, '1', 100)
        .unwrap();
    bed.site("bob")
        .client
        .send_dtmf(now, call, '2', 100)
        .unwrap();
    bed.run_for(Duration::from_millis(300));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::Dtmf { digit: '1', .. })),
        1
    );
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Dtmf { digit: '2', .. })),
        1
    );
    bed.hangup("bob", call);
    bed.run_for(Duration::from_millis(300));
    assert_eq!(bed.ended_causes("alice"), [Cause::Normal]);
    assert_eq!(bed.ended_causes("bob"), []);
    bed.run_for(Duration::from_secs(2));
    settled(&bed);
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn the_callers_route_moving_right_after_its_invite() {
    route_moves_during_setup(31, "alice", 2, When::AfterInvite);
}

#[test]
fn the_callers_route_moving_to_the_callees_proxy_while_it_rings() {
    route_moves_during_setup(32, "alice", 1, When::WhileRinging);
}

#[test]
fn the_callees_route_moving_right_after_the_invite() {
    route_moves_during_setup(33, "bob", 2, When::AfterInvite);
}

#[test]
fn the_callees_route_moving_between_ringing_and_answer() {
    route_moves_during_setup(34, "bob", 0, When::WhileRinging);
}

/// Client links that lose 5 % of datagrams and delay each by up to 30 ms
/// more (frames 20 ms apart overtake each other), both ways, for the whole
/// call flow across two proxies, with a route move mid-call. Each control
/// step reaches its party exactly once (retransmitted past the losses);
/// every frame heard is intact and heard once; a frame is missing only if
/// the bed lost a datagram on its way.
#[test]
fn a_call_across_lossy_reordering_client_links() {
    let mut bed = Bed::new(3, &["alice", "bob"], 41);
    bed.connect_all();
    bed.access_loss_permille = 50;
    bed.access_jitter = Duration::from_millis(30);
    bed.register("bob", "bob");
    bed.run_for(Duration::from_secs(3));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::Registered { .. })),
        1
    );
    let call = bed.call("alice", "bob");
    bed.run_for(Duration::from_secs(2));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Ringing { .. })),
        1
    );
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_secs(2));
    bed.assert_nothing_repeated("alice", "bob");
    bed.talk("alice", "bob", call, 0..300, |bed, seq| {
        if seq == 150 {
            bed.set_route("alice", Some(2));
        }
        if seq == 200 {
            let now = bed.now;
            bed.site("alice")
                .client
                .send_dtmf(now, call, '3', 100)
                .unwrap();
        }
    });
    bed.run_for(Duration::from_secs(2));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::Dtmf { digit: '3', .. })),
        1
    );
    bed.assert_nothing_repeated("alice", "bob");
    for (from, to) in [("alice", "bob"), ("bob", "alice")] {
        let missing = bed.missing(from, to, 0..300);
        let up = bed.site(from).voice_lost_up.clone();
        let down = bed.site(to).lost_down;
        println!(
            "{from}->{to}: {} of 300 frames missing ({} lost on {from}'s link, {down} datagrams lost on {to}'s)",
            missing.len(),
            up.len()
        );
        assert!(up.iter().all(|s| missing.contains(s)), "{up:?} {missing:?}");
        assert!(missing.len() as u64 <= up.len() as u64 + down);
        let order: Vec<u32> = bed.site(to).heard.iter().map(|f| f.seq).collect();
        let overtaken = order.windows(2).filter(|w| w[1] < w[0]).count();
        println!("{to} heard {overtaken} frames after a later one");
        assert!(overtaken > 0, "no reordering on {to}'s links");
    }
    bed.hangup("alice", call);
    bed.run_for(Duration::from_secs(3));
    assert_eq!(bed.ended_causes("bob"), [Cause::Normal]);
    assert_eq!(bed.ended_causes("alice"), []);
    settled(&bed);
    assert!(bed.access_lost > 10, "{} datagrams lost", bed.access_lost);
    assert_eq!(bed.nonce_reuses, 0);
}
