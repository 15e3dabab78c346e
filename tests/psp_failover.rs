//! anypsp on the test bed: the proxy serving one side of a call dies (mid
//! call, or while it rings) and the call goes on with no handshake and no
//! set-up repeated (spec 15.7, 15.9; issue 7 test 2).

use anytun::call::Cause;
use anytun::client::Event;
use anytun::session::{CallId, ProxyId};
use anytun::testbed::Bed;
use std::time::Duration;

/// alice (proxy 1, index 0) and bob (proxy 2, index 1) in a call; the
/// proxy `dead` serving `side` dies at frame 50 and `side` reaches proxy 3
/// after `routing_frames` frames.
fn kill_side_mid_call(seed: u64, routing_frames: u32, side: &str, dead: usize) -> (Bed, CallId) {
    let (mut bed, call) = Bed::call_across(seed);
    bed.talk_through_kill(call, side, dead, routing_frames, 2);
    (bed, call)
}

#[test]
fn the_serving_proxy_killed_mid_call_the_call_goes_on() {
    let (mut bed, call) = kill_side_mid_call(3, 0, "alice", 0);
    bed.assert_nothing_repeated("alice", "bob");
    // Apart from routing time nothing is lost, in either direction.
    assert_eq!(bed.missing("alice", "bob", 0..100), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..100), Vec::<u32>::new());
    let gap_a = bed.largest_gap_ms("bob");
    let gap_b = bed.largest_gap_ms("alice");
    println!("voice gap after a kill, routing time apart: alice->bob {gap_a} ms, bob->alice {gap_b} ms (frame interval 20 ms)");
    assert!(gap_a <= 20 && gap_b <= 20);
    let p3 = ProxyId::new(3).unwrap();
    assert_eq!(bed.proxy(2).psp_stats().takeovers, 1);
    // Its probes to the dead proxy went unanswered: that is what let it
    // take alice over (spec 15.9), PROBE_TIMEOUT after her first packet.
    assert_eq!(bed.proxy(2).psp_stats().probes_unanswered, 1);
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p3)));
    // Control after the kill: DTMF and hangup through the new serving proxy.
    let now = bed.now;
    bed.site("bob")
        .client
        .send_dtmf(now, call, '9', 100)
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Dtmf { digit: '9', .. })),
        1
    );
    let now = bed.now;
    bed.site("bob")
        .client
        .hangup(now, call, Cause::Normal)
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::CallEnded { .. })),
        1
    );
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn the_callees_serving_proxy_killed_mid_call_the_call_goes_on() {
    let (mut bed, call) = kill_side_mid_call(9, 0, "bob", 1);
    bed.assert_nothing_repeated("alice", "bob");
    assert_eq!(bed.missing("alice", "bob", 0..100), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..100), Vec::<u32>::new());
    assert!(bed.largest_gap_ms("alice") <= 20 && bed.largest_gap_ms("bob") <= 20);
    let p3 = ProxyId::new(3).unwrap();
    assert!(bed.serving_views("bob").values().all(|v| *v == Some(p3)));
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
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn a_kill_with_routing_time_loses_only_what_was_sent_into_the_dead_route() {
    let (bed, _call) = kill_side_mid_call(4, 10, "alice", 0);
    bed.assert_nothing_repeated("alice", "bob");
    // Frames 50..60 went into a cut route (200 ms of routing time); bob's
    // frames never crossed the dead proxy.
    assert_eq!(
        bed.missing("alice", "bob", 0..100),
        (50..60).collect::<Vec<u32>>()
    );
    assert_eq!(bed.missing("bob", "alice", 0..100), Vec::<u32>::new());
    let gap = bed.largest_gap_ms("bob");
    println!("alice->bob gap with 200 ms routing time: {gap} ms");
    assert!(gap <= 220, "gap {gap} ms beyond routing time");
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn the_callers_proxy_killed_during_ringing_the_call_is_answered_and_goes_on() {
    let mut bed = Bed::new(3, &["alice", "bob"], 6);
    bed.connect_all();
    bed.register("bob", "bob");
    let now = bed.now;
    let call = bed
        .site("alice")
        .client
        .call(now, anytun::testbed::name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Ringing { .. })),
        1
    );
    // Proxy 1 (alice's, and the call's owner) dies while bob rings; alice's
    // route moves to proxy 3. alice is silent while it rings.
    bed.kill(0);
    bed.set_route("alice", Some(2));
    bed.run_for(Duration::from_millis(1500));
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(300));
    bed.assert_nothing_repeated("alice", "bob");
    assert!(bed.proxy(1).psp_stats().adopted >= 1);
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    let p3 = ProxyId::new(3).unwrap();
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p3)));
    assert_eq!(bed.nonce_reuses, 0);
}

/// Proxy 2 (bob's, the callee's; the call's owner is alice's proxy 1)
/// dies while bob rings; bob's route moves to proxy 3. bob answers
/// `answer_after` the kill: before the other proxies notice the death
/// (1 s) or after. The answer reaches alice, the call goes on, nothing is
/// repeated; voice both ways sample for sample.
fn the_callees_proxy_killed_during_ringing(seed: u64, answer_after: Duration) {
    let (mut bed, call) = Bed::ringing_across(seed);
    bed.kill(1);
    bed.set_route("bob", Some(2));
    bed.run_for(answer_after);
    bed.answer("bob", call);
    bed.run_for(Duration::from_millis(1500));
    bed.assert_nothing_repeated("alice", "bob");
    assert_eq!(bed.proxy(2).stats().handshakes_accepted, 0);
    let p3 = ProxyId::new(3).unwrap();
    assert!(
        bed.serving_views("bob").values().all(|v| *v == Some(p3)),
        "{:?}",
        bed.serving_views("bob")
    );
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    // bob's frames reach alice sealed by proxy 3, which serves him now.
    assert!(bed.site("alice").heard.iter().all(|f| f.via == p3.sender()));
    bed.hangup("alice", call);
    assert_eq!(bed.ended_causes("bob"), [Cause::Normal]);
    for p in [0, 2] {
        assert_eq!(bed.proxy(p).call_count(), 0, "proxy {p} holds the call");
    }
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn the_callees_proxy_killed_during_ringing_answered_before_the_death_is_noticed() {
    the_callees_proxy_killed_during_ringing(13, Duration::from_millis(100));
}

#[test]
fn the_callees_proxy_killed_during_ringing_answered_after_the_death_is_noticed() {
    the_callees_proxy_killed_during_ringing(14, Duration::from_millis(1500));
}

/// The caller's serving proxy killed mid-call while the client links lose
/// 2 % and reorder (up to 30 ms of jitter): the call goes on with nothing
/// repeated, and a frame is missing only where the bed lost a datagram on
/// its way (routing time apart: the route moves at once).
#[test]
fn the_serving_proxy_killed_mid_call_over_lossy_reordering_client_links() {
    let (mut bed, call) = Bed::call_across(15);
    bed.access_loss_permille = 20;
    bed.access_jitter = Duration::from_millis(30);
    bed.talk_through_kill(call, "alice", 0, 0, 2);
    bed.run_for(Duration::from_secs(1));
    bed.assert_nothing_repeated("alice", "bob");
    for (from, to) in [("alice", "bob"), ("bob", "alice")] {
        let missing = bed.missing(from, to, 0..100);
        let up = bed.site(from).voice_lost_up.clone();
        let down = bed.site(to).lost_down;
        assert!(up.iter().all(|s| missing.contains(s)), "{up:?} {missing:?}");
        assert!(
            missing.len() as u64 <= up.len() as u64 + down,
            "{from}->{to}: {missing:?} missing, {up:?} lost up, {down} lost down"
        );
    }
    let p3 = ProxyId::new(3).unwrap();
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p3)));
    bed.hangup("bob", call);
    bed.run_for(Duration::from_secs(2));
    assert_eq!(bed.ended_causes("alice"), [Cause::Normal]);
    assert!(bed.access_lost > 0);
    assert_eq!(bed.nonce_reuses, 0);
}

/// A call forked to bob (proxy 2), bobm (proxy 3) and bobt (proxy 1); its
/// owner, proxy 1 (alice's and bobt's), dies while they ring; alice moves
/// to proxy 2, bobt to proxy 3. Once the death is noticed, the devices'
/// proxies decide the call's answers themselves (spec 15.4): bob answers,
/// alice hears it once, bobm hears "answered elsewhere", they talk.
#[test]
fn a_forked_calls_owner_killed_during_ringing_the_call_is_answered() {
    let (mut bed, call) = Bed::forked_across(16);
    bed.kill(0);
    bed.set_route("alice", Some(1));
    bed.set_route("bobt", Some(2));
    bed.run_for(Duration::from_millis(1500));
    bed.answer("bob", call);
    bed.run_for(Duration::from_millis(500));
    bed.assert_nothing_repeated("alice", "bob");
    assert_eq!(bed.ended_causes("bobm"), [Cause::AnsweredElsewhere]);
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    bed.hangup("alice", call);
    assert_eq!(bed.ended_causes("bob"), [Cause::Normal]);
    assert_eq!(bed.nonce_reuses, 0);
}

/// A forked call (bob on proxy 2, bobm on 3, bobt on 1, the owner): bob
/// answers and his proxy hands the answer to the owner, which dies with it
/// on the link. When the death is noticed, bob's proxy decides the answer
/// itself: alice hears it once, bobm hears "answered elsewhere", they talk.
/// Before, the answer was lost: bob talked to nobody and alice kept
/// hearing it ring.
#[test]
fn a_forked_calls_answer_handed_to_its_dying_owner_is_decided_by_the_devices_proxy() {
    let (mut bed, call) = Bed::forked_across(17);
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    let handed = bed.proxy(1).psp_stats().requests_to_owner;
    // bob's packet takes 5 ms to his proxy, the request 10 ms more.
    bed.run_for(Duration::from_millis(7));
    assert_eq!(bed.proxy(1).psp_stats().requests_to_owner, handed + 1);
    bed.kill(0);
    bed.set_route("alice", Some(1));
    bed.set_route("bobt", Some(2));
    bed.run_for(Duration::from_millis(1500));
    assert_eq!(bed.proxy(1).psp_stats().decisions_taken_back, 1);
    bed.assert_nothing_repeated("alice", "bob");
    assert_eq!(bed.ended_causes("bobm"), [Cause::AnsweredElsewhere]);
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    bed.hangup("bob", call);
    assert_eq!(bed.ended_causes("alice"), [Cause::Normal]);
    assert_eq!(bed.nonce_reuses, 0);
}

/// A forked call (bob on proxy 2, bobm on 3, bobt on 1, the owner); the
/// owner dies while they ring and every proxy notices. bobm answers on
/// proxy 3, and bob 1 ms later on proxy 2, within the replication delay:
/// the decision passed to ONE successor, the lowest live member (proxy 2),
/// so one answer wins everywhere (spec 15.4). Before, each device's proxy
/// decided its own device's answer: both won, each told the other lost.
#[test]
fn a_forked_calls_owner_dead_two_answers_on_two_proxies_one_wins() {
    let (mut bed, call) = Bed::forked_across(18);
    bed.kill(0);
    bed.set_route("alice", Some(2));
    bed.set_route("bobt", Some(2));
    bed.run_for(Duration::from_millis(1500));
    let handed = bed.proxy(2).psp_stats().requests_to_owner;
    let now = bed.now;
    bed.site("bobm").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(1));
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(500));
    assert_eq!(bed.proxy(2).psp_stats().requests_to_owner, handed + 1);
    let won: Vec<&str> = ["bob", "bobm"]
        .into_iter()
        .filter(|d| bed.ended_causes(d).is_empty())
        .collect();
    assert_eq!(won.len(), 1, "winners {won:?}");
    let (winner, loser) = if won[0] == "bob" {
        ("bob", "bobm")
    } else {
        ("bobm", "bob")
    };
    assert_eq!(bed.ended_causes(loser), [Cause::AnsweredElsewhere]);
    bed.assert_nothing_repeated("alice", winner);
    bed.talk("alice", winner, call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", winner, 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing(winner, "alice", 0..50), Vec::<u32>::new());
    assert!(bed.site(loser).heard.is_empty(), "{loser} heard voice");
    bed.hangup("alice", call);
    assert_eq!(bed.ended_causes(winner), [Cause::Normal]);
    assert_eq!(bed.nonce_reuses, 0);
}

/// A forked call (bob on proxy 2, bobm on 3, bobt on 1, the owner); proxy 3
/// wrongly reports the owner down (its link timed out; the owner lives).
/// bobm answers on proxy 3, which hands it to the successor it sees, proxy
/// 2; bob answers 1 ms later on proxy 2. Proxy 2 sees the owner alive and
/// passes bobm's answer on to it: the owner alone decides, one answer wins
/// (spec 15.4). Without the pass-on, proxy 2 decided bobm's answer as the
/// owner decided bob's: both won.
#[test]
fn a_false_suspicion_of_a_forked_calls_owner_leaves_one_decider() {
    let (mut bed, call) = Bed::forked_across(19);
    bed.report_down(2, 0);
    bed.run_for(Duration::from_millis(10));
    let now = bed.now;
    bed.site("bobm").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(1));
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(500));
    assert!(bed.proxy(1).psp_stats().requests_from_peer >= 1);
    assert_eq!(bed.ended_causes("bob"), [], "the winner's call ended");
    assert_eq!(bed.ended_causes("bobm"), [Cause::AnsweredElsewhere]);
    bed.assert_nothing_repeated("alice", "bob");
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    bed.hangup("alice", call);
    assert_eq!(bed.ended_causes("bob"), [Cause::Normal]);
    assert_eq!(bed.nonce_reuses, 0);
}

/// A forked call (bob on proxy 2, bobm on 3, bobt on 1, the owner), with
/// replication to proxies 2 and 3 lost for a moment. bobm answers, bob 3 ms
/// later; the owner lets bobm win, hands bob "answered elsewhere" through
/// proxy 2, and dies before its decision replicates. Once the death is
/// noticed, the requests still kept go to the successor (proxy 2), which
/// must not undo what the owner told bob: the owner's Hangup to bob
/// settled bob's answer at proxy 2 (spec 15.4), so bobm wins again and
/// talks with alice. Before, proxy 2 decided bob's kept answer: bob, told
/// he lost, won, and bobm, told he won, lost.
#[test]
fn a_dead_owners_hangup_to_a_losing_device_settles_its_answer() {
    let (mut bed, call) = Bed::forked_across(21);
    bed.sync_lost_to.extend([1, 2]);
    let now = bed.now;
    bed.site("bobm").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(3));
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(40));
    assert_eq!(bed.ended_causes("bob"), [Cause::AnsweredElsewhere]);
    bed.kill(0);
    bed.sync_lost_to.clear();
    bed.set_route("alice", Some(1));
    bed.set_route("bobt", Some(2));
    bed.run_for(Duration::from_millis(1500));
    assert_eq!(bed.ended_causes("bobm"), [], "the owner's winner lost");
    assert_eq!(bed.ended_causes("bob"), [Cause::AnsweredElsewhere]);
    assert_eq!(bed.ended_causes("alice"), []);
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Answered { .. })),
        1
    );
    bed.talk("alice", "bobm", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bobm", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bobm", "alice", 0..50), Vec::<u32>::new());
    assert!(bed.site("bob").heard.is_empty(), "bob heard voice");
    bed.hangup("alice", call);
    assert_eq!(bed.ended_causes("bobm"), [Cause::Normal]);
    assert_eq!(bed.nonce_reuses, 0);
}
