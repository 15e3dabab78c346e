//! anypsp: a control message handed to a serving proxy in the instant it
//! dies is not lost with it (spec 15.5, 15.7): the handing proxy keeps it
//! until the serving proxy acknowledges it, and re-handles it when that
//! proxy is reported dead or a take-over replaces it.

use anytun::call::Cause;
use anytun::client::Event;
use anytun::session::ProxyId;
use anytun::testbed::Bed;
use std::time::Duration;

/// Runs until bob's proxy (index 1) has handed one more control message to
/// alice's (the peer link takes 10 ms), then kills alice's proxy: the
/// message is on the link, lost with the proxy. alice's route moves to
/// proxy 3.
fn kill_with_a_message_on_the_link(bed: &mut Bed) {
    let handed = bed.proxy(1).psp_stats().control_to_peer;
    // bob's packet takes 5 ms to his proxy.
    bed.run_for(Duration::from_millis(7));
    assert_eq!(bed.proxy(1).psp_stats().control_to_peer, handed + 1);
    bed.kill(0);
    bed.set_route("alice", Some(2));
}

#[test]
fn the_callee_answering_as_the_callers_proxy_dies_still_reaches_the_caller() {
    let (mut bed, call) = Bed::ringing_across(31);
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    kill_with_a_message_on_the_link(&mut bed);
    bed.run_for(Duration::from_millis(1500));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Answered { .. })),
        1,
        "alice did not hear bob's Answer"
    );
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Connected { .. })),
        1
    );
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..50), Vec::<u32>::new());
    assert_eq!(bed.missing("bob", "alice", 0..50), Vec::<u32>::new());
    assert!(bed.proxy(1).psp_stats().control_rehandled >= 1);
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::CallEnded { .. })),
        0
    );
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn the_callee_hanging_up_as_the_callers_proxy_dies_still_ends_the_call() {
    let (mut bed, call) = Bed::ringing_across(32);
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Answered { .. })),
        1
    );
    let now = bed.now;
    bed.site("bob")
        .client
        .hangup(now, call, Cause::Normal)
        .unwrap();
    kill_with_a_message_on_the_link(&mut bed);
    bed.run_for(Duration::from_millis(1500));
    let ended: Vec<Cause> = bed
        .site("alice")
        .events
        .iter()
        .filter_map(|e| match e {
            Event::CallEnded { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        vec![Cause::Normal],
        "alice did not hear bob's Hangup"
    );
    assert!(bed.proxy(1).psp_stats().control_rehandled >= 1);
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn a_live_serving_proxy_acknowledges_what_it_is_handed() {
    let (mut bed, call) = Bed::ringing_across(33);
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(200));
    let p2 = bed.proxy(1);
    // Invite (proxy 1 to 2), Ringing and Answer (proxy 2 to 1), each
    // acknowledged: nothing is held, nothing re-handled.
    assert_eq!(p2.handed_unacked(), 0);
    assert_eq!(bed.proxy(0).handed_unacked(), 0);
    assert_eq!(p2.psp_stats().control_rehandled, 0);
    assert!(bed.proxy(0).psp_stats().control_acks_in >= 1);
    assert!(p2.psp_stats().control_acks_in >= 2);
    let _ = ProxyId::new(1);
}

/// alice and bob in a call, alice on proxy 1 (index 0), bob on proxy 2.
/// Proxy 1 dies and alice's route moves to proxy index `new`; no link
/// reports it dead in this test. alice talks; her new proxy probes proxy 1,
/// unanswered, and takes her over `PROBE_TIMEOUT` after her first frame.
/// bob hangs up 100 ms after the kill, inside that window: his proxy hands
/// the Hangup to the dead one. Returns the causes of alice's call ends.
fn hangup_in_the_probe_window(new: usize, seed: u64) -> (Bed, Vec<Cause>) {
    let (mut bed, call) = Bed::ringing_across(seed);
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(200));
    bed.peer_detect = Duration::from_secs(60);
    bed.kill(0);
    bed.set_route("alice", Some(new));
    let ended = |bed: &mut Bed| bed.count("alice", |e| matches!(e, Event::CallEnded { .. }));
    for seq in 0..50 {
        if ended(&mut bed) > 0 {
            break;
        }
        if seq == 5 {
            let now = bed.now;
            bed.site("bob")
                .client
                .hangup(now, call, Cause::Normal)
                .unwrap();
        }
        bed.send_voice("alice", call, seq);
        bed.run_for(Duration::from_millis(20));
    }
    bed.run_for(Duration::from_millis(500));
    assert!(bed.proxy(new).psp_stats().probes_unanswered >= 1);
    assert_eq!(bed.proxy(1).psp_stats().adopted, 0, "no link reported it");
    let causes = bed
        .site("alice")
        .events
        .iter()
        .filter_map(|e| match e {
            Event::CallEnded { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect();
    (bed, causes)
}

#[test]
fn a_hangup_handed_to_a_dead_proxy_in_the_probe_window_reaches_the_client_via_a_third() {
    let (bed, causes) = hangup_in_the_probe_window(2, 34);
    assert_eq!(
        causes,
        vec![Cause::Normal],
        "alice did not hear bob's Hangup"
    );
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn a_hangup_handed_to_a_dead_proxy_in_the_probe_window_is_sent_by_the_hander_taking_over() {
    let (bed, causes) = hangup_in_the_probe_window(1, 35);
    assert_eq!(
        causes,
        vec![Cause::Normal],
        "alice did not hear bob's Hangup"
    );
    assert_eq!(bed.nonce_reuses, 0);
}
