//! Causes across the test bed: the proxy's ring timeout, and cause octets
//! outside Q.850 (1..=127) from a client or a proxy that broke the rule.

use super::Bed;
use crate::call::Cause;
use crate::client::Event;
use crate::wire::control::{CauseOctet, ControlMsg};
use std::path::Path;
use std::time::Duration;

/// `ProxyConfig::ring_timeout` (anytund's `ring_timeout_s`) shorter than
/// the default minute: the unanswered call ends then, with no answer (19),
/// for the caller and the device that rang, not before.
#[test]
fn a_shorter_ring_timeout_ends_an_unanswered_call_with_no_answer() {
    let cfg = crate::config::parse("ring_timeout_s = 3", Path::new("/anytund.toml")).unwrap();
    // As the daemon (runtime::host) sets it.
    let ring = Duration::from_secs(u64::from(cfg.ring_timeout_s));
    let mut bed = Bed::with_config(3, &["alice", "bob"], 5, move |c| c.ring_timeout = ring);
    bed.connect_all();
    bed.register("bob", "bob");
    let start = bed.now;
    bed.call("alice", "bob");
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::IncomingCall { .. })),
        1
    );
    // Still ringing a second before the timeout (the sweep runs each second).
    bed.run_until(start + ring - Duration::from_secs(1));
    assert!(bed.ended_causes("alice").is_empty());
    assert!(bed.ended_causes("bob").is_empty());
    bed.run_until(start + ring + Duration::from_millis(1500));
    assert_eq!(bed.ended_causes("alice"), [Cause::NoAnswer]);
    assert_eq!(bed.ended_causes("bob"), [Cause::NoAnswer]);
}

/// A client hangs up an answered call with octet 200 and refuses a
/// ringing one with 0: the proxy counts each and passes on the defined
/// cause (127, interworking; 16, normal clearing), never the octet: the
/// receiving client, which would map and count an octet itself, counts
/// none.
#[test]
fn a_client_s_out_of_range_cause_is_passed_on_as_a_defined_one() {
    let (mut bed, call) = Bed::call_across(8);
    let now = bed.now;
    let cause = CauseOctet(200);
    bed.site("alice")
        .client
        .send_control(now, ControlMsg::Hangup { call, cause })
        .unwrap();
    bed.run_for(Duration::from_millis(500));
    assert_eq!(bed.ended_causes("bob"), [Cause::Interworking]);
    assert_eq!(bed.site("bob").client.causes_out_of_range(), 0);
    let counted = |bed: &Bed| {
        (0..3)
            .map(|i| bed.proxy(i).stats().causes_out_of_range)
            .sum::<u64>()
    };
    assert_eq!(counted(&bed), 1);

    let (mut bed, call) = Bed::ringing_across(9);
    let now = bed.now;
    let cause = CauseOctet(0);
    bed.site("bob")
        .client
        .send_control(now, ControlMsg::Reject { call, cause })
        .unwrap();
    bed.run_for(Duration::from_millis(500));
    assert_eq!(bed.ended_causes("alice"), [Cause::Normal]);
    assert_eq!(bed.site("alice").client.causes_out_of_range(), 0);
    assert_eq!(counted(&bed), 1);
}

/// A Hangup from the proxy whose octet is no Q.850 cause still ends the
/// call, with the defined cause, and is counted by the client.
#[test]
fn a_client_ends_a_call_on_an_out_of_range_cause_from_its_proxy() {
    for (octet, want) in [
        (0, Cause::Normal),
        (128, Cause::Interworking),
        (255, Cause::Interworking),
    ] {
        let (mut bed, call) = Bed::call_across(10);
        let now = bed.now;
        let bob = &mut bed.site("bob").client;
        let before = bob.causes_out_of_range();
        let cause = CauseOctet(octet);
        bob.on_control(now, ControlMsg::Hangup { call, cause });
        assert_eq!(bob.causes_out_of_range(), before + 1, "{octet}");
        let ended: Vec<Cause> = std::iter::from_fn(|| bob.poll_event())
            .filter_map(|e| match e {
                Event::CallEnded { cause, .. } => Some(cause),
                _ => None,
            })
            .collect();
        assert_eq!(ended, [want], "{octet}");
        assert!(bob.calls().is_empty(), "{octet}");
    }
}
