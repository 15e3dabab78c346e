//! Call and client edge cases found in review, each a failing-then-fixed (or
//! still failing, ignored with the reason) case in the in-memory simulator.

use anytun::client::Event;
use anytun::sim::{name, Net};
use anytun::wire::MAX_DATAGRAM;
use std::time::Duration;

fn digits(net: &mut Net, who: &str) -> String {
    net.node(who)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Dtmf { digit, .. } => Some(*digit),
            _ => None,
        })
        .collect()
}

fn setup() -> (Net, anytun::session::CallId) {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let now = net.now;
    let call = net
        .node("alice")
        .client
        .call(now, name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    net.pump();
    (net, call)
}

/// bob answers and sends a digit at once; his Answer packet is lost on its
/// first trip, so the proxy gets the digit (CallData) while the call is still
/// ringing. The proxy acknowledges it and drops it: the digit is gone for good
/// although it was sent reliably.
#[test]
fn digit_sent_right_after_a_lost_answer_is_not_lost_at_the_proxy() {
    let (mut net, call) = setup();
    let now = net.now;
    net.node("bob").client.answer(now, call, "ulaw").unwrap();
    let mut buf = [0u8; MAX_DATAGRAM];
    assert!(net.node("bob").client.poll_transmit(&mut buf).is_some()); // Answer lost
    net.node("bob")
        .client
        .send_dtmf(now, call, '1', 100)
        .unwrap();
    net.pump();
    net.advance(Duration::from_secs(4));
    assert!(net
        .node("alice")
        .events
        .iter()
        .any(|e| matches!(e, Event::Answered { .. })));
    assert_eq!(digits(&mut net, "alice"), "1");
}

/// bob answers and sends a digit at once; the proxy's Answer to alice is
/// lost on its first trip, so alice gets the digit (CallData) while her call
/// is still dialing. Her client acknowledges it and drops it.
#[test]
fn digit_arriving_before_a_lost_answer_is_not_lost_at_the_caller() {
    let (mut net, call) = setup();
    let now = net.now;
    net.node("bob").client.answer(now, call, "ulaw").unwrap();
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = net.node("bob").client.poll_transmit(&mut buf).unwrap();
    let src = net.node("bob").addr;
    net.deliver_to_proxy(src, &buf[..n]); // bob's ack comes back at once
                                          // The proxy's Answer to alice is lost.
    let mut out = [0u8; MAX_DATAGRAM];
    let mut lost = 0;
    while net.proxy.poll_transmit(&mut out).is_some() {
        lost += 1;
    }
    assert_eq!(lost, 1);
    net.node("bob")
        .client
        .send_dtmf(now, call, '1', 100)
        .unwrap();
    net.pump();
    net.advance(Duration::from_secs(4));
    assert!(net
        .node("alice")
        .events
        .iter()
        .any(|e| matches!(e, Event::Answered { .. })));
    assert!(!net
        .node("alice")
        .events
        .iter()
        .any(|e| matches!(e, Event::CallEnded { .. })));
    assert_eq!(digits(&mut net, "alice"), "1");
}

/// The path to a full proxy (max_sessions reached) breaks for a few seconds;
/// the proxy still holds the clients' old sessions when they reconnect. The
/// new login of a key that already holds a session replaces it, so it must
/// not be refused as "busy"; and a "busy" answer while reconnecting must not
/// stop a client for good (it is transient).
#[test]
fn reconnect_to_a_full_proxy_replaces_the_old_session() {
    let mut net = Net::with_config(&["alice", "bob"], |c| c.max_sessions = 2);
    net.connect_all();
    net.register("bob", "bob");
    net.drop_downstream = true;
    // Loss is noticed a keepalive interval plus `loss_timeout` later.
    net.advance(Duration::from_secs(40));
    assert!(net
        .node("bob")
        .events
        .iter()
        .any(|e| matches!(e, Event::Reconnecting(_))));
    net.drop_downstream = false;
    net.advance(Duration::from_secs(10));
    let ev = format!("{:?}", net.node("bob").events);
    assert!(
        !net.node("bob")
            .events
            .iter()
            .any(|e| matches!(e, Event::Disconnected(_))),
        "bob gave up: {ev}"
    );
    assert!(net.node("bob").client.session().is_some(), "{ev}");
    assert_eq!(net.proxy.registration_count(), 1);
}

/// The proxy restarts with room for one session; alice and bob both
/// reconnect, one of them is told "busy". Busy is transient: that client must
/// keep trying (as it does when it hears nothing) and get in once the other
/// is gone, not stop for good with `Disconnected(Busy)` (`anytun answer`
/// would exit and never register again).
#[test]
fn busy_while_reconnecting_is_retried() {
    use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
    use anytun::session::{EpochLease, ProxyId};
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    net.advance(Duration::from_secs(7));
    let subs = Subscribers::new(
        net.nodes
            .iter()
            .map(|n| (name(n.name), n.client.public_key())),
    );
    let mut cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), net.network.clone());
    cfg.max_sessions = 1;
    cfg.session_timeout = Duration::from_secs(10);
    net.proxy = Proxy::with_wall_clock(cfg, subs, net.now, net.unix_nanos);
    net.proxy.epochs().grant(EpochLease::ephemeral());
    net.advance(Duration::from_secs(30));
    let inside = if net.node("alice").client.session().is_some() {
        "alice"
    } else {
        "bob"
    };
    let outside = if inside == "alice" { "bob" } else { "alice" };
    assert!(net.node(inside).client.session().is_some());
    // The one inside vanishes; its session times out at the proxy.
    net.kill(inside);
    net.advance(Duration::from_secs(30));
    let ev = format!("{:?}", net.node(outside).events);
    assert!(net.node(outside).client.session().is_some(), "{ev}");
}

/// alice sends `1 2 3` (the packet with `1` lost) and hangs up at once. bob
/// received `2` and `3` (held, waiting for `1`) when the Hangup arrives:
/// they must be delivered, not dropped with the call.
#[test]
fn held_digits_are_delivered_when_the_call_ends() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let now = net.now;
    net.node("alice")
        .client
        .send_dtmf(now, call, '1', 100)
        .unwrap();
    let mut buf = [0u8; MAX_DATAGRAM];
    assert!(net.node("alice").client.poll_transmit(&mut buf).is_some()); // lost
    for d in ['2', '3'] {
        net.node("alice")
            .client
            .send_dtmf(now, call, d, 100)
            .unwrap();
        net.pump();
    }
    net.node("alice")
        .client
        .hangup(now, call, anytun::call::Cause::Normal)
        .unwrap();
    net.pump();
    net.advance(Duration::from_secs(3));
    let ended_at = net
        .node("bob")
        .events
        .iter()
        .position(|e| matches!(e, Event::CallEnded { .. }))
        .expect("bob's call ended");
    let got = digits(&mut net, "bob");
    assert!(got.ends_with("23"), "bob got {got:?}");
    let last_digit = net
        .node("bob")
        .events
        .iter()
        .rposition(|e| matches!(e, Event::Dtmf { .. }))
        .unwrap();
    assert!(last_digit < ended_at, "digits after the call ended");
}

/// bob's `anytun answer` is stopped (SIGTERM) while alice's call rings. alice
/// must not be told "normal call clearing" (16) for a call that never
/// connected: the device went away, so the call failed as unavailable (20)
/// or rejected (21).
#[test]
fn a_callee_stopping_while_ringing_is_not_normal_clearing() {
    let (mut net, call) = setup();
    let now = net.now;
    net.node("bob").client.shutdown(now);
    net.pump();
    let cause = net
        .node("alice")
        .events
        .iter()
        .find_map(|e| match e {
            Event::CallEnded { call: c, cause } if *c == call => Some(*cause),
            _ => None,
        })
        .expect("alice's call ended");
    assert_ne!(cause, anytun::call::Cause::Normal);
}

/// Same as above, but asks for the whole of what alice sent: her Hangup
/// makes her client (and the proxy, for what it relays) forget the
/// unacknowledged digit `1`, so bob never gets it although DTMF is sent
/// reliably. Digits sent before a Hangup should arrive before it.
/// Fixed: the Hangup waits in the sender's reliable queue behind the call's
/// unacknowledged messages (bounded by `HANGUP_HOLD`), at the client and at
/// the proxy.
#[test]
fn digits_sent_before_a_hangup_all_arrive() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let now = net.now;
    net.node("alice")
        .client
        .send_dtmf(now, call, '1', 100)
        .unwrap();
    let mut buf = [0u8; MAX_DATAGRAM];
    assert!(net.node("alice").client.poll_transmit(&mut buf).is_some()); // lost
    for d in ['2', '3'] {
        net.node("alice")
            .client
            .send_dtmf(now, call, d, 100)
            .unwrap();
        net.pump();
    }
    net.node("alice")
        .client
        .hangup(now, call, anytun::call::Cause::Normal)
        .unwrap();
    net.pump();
    net.advance(Duration::from_secs(3));
    assert_eq!(digits(&mut net, "bob"), "123");
}

/// The proxy's side of the same: alice's digit `1` reaches the proxy, but
/// the proxy's CallData to bob is lost on its first trip; alice then sends
/// `2` and `3` and hangs up. The proxy dropped the unacknowledged `1` to bob
/// when the call ended (`forget_call`), so bob never got it. Now its Hangup
/// to bob waits behind it.
#[test]
fn digits_relayed_before_a_hangup_all_arrive() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let now = net.now;
    net.node("alice")
        .client
        .send_dtmf(now, call, '1', 100)
        .unwrap();
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = net.node("alice").client.poll_transmit(&mut buf).unwrap();
    let src = net.node("alice").addr;
    net.deliver_to_proxy(src, &buf[..n]); // the ack goes back to alice
    let mut out = [0u8; MAX_DATAGRAM];
    assert!(net.proxy.poll_transmit(&mut out).is_some()); // `1` to bob: lost
    for d in ['2', '3'] {
        net.node("alice")
            .client
            .send_dtmf(now, call, d, 100)
            .unwrap();
        net.pump();
    }
    net.node("alice")
        .client
        .hangup(now, call, anytun::call::Cause::Normal)
        .unwrap();
    net.pump();
    net.advance(Duration::from_secs(3));
    assert_eq!(digits(&mut net, "bob"), "123");
    assert!(net
        .node("bob")
        .events
        .iter()
        .any(|e| matches!(e, Event::CallEnded { .. })));
    assert_eq!(net.proxy.call_count(), 0);
}

/// alice has two calls with bob and floods the second with DTMF while bob's
/// client has stopped acknowledging: bob's queue at the proxy fills with
/// the second call's digits (the excess is counted as not queued). alice then
/// hangs up the FIRST call: its Hangup still gets a place in bob's queue (the
/// reserve kept for messages that end a call), so bob is not left in a ghost
/// call. Before the reserve it was dropped like the excess digits.
#[test]
fn a_full_queue_never_swallows_the_hangup() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let first = net.establish_call("alice", "bob");
    let second = net.establish_call("alice", "bob");
    let bob = net.session_info("bob").id;
    net.kill("bob");
    for _ in 0..40 {
        let now = net.now;
        net.node("alice")
            .client
            .send_dtmf(now, second, '5', 40)
            .unwrap();
        net.pump();
    }
    let full = net.proxy.control_pending(bob);
    let dropped = net.proxy.stats().control_not_queued;
    assert_eq!(full, anytun::call::reliable::MAX_PENDING);
    assert!(dropped > 0, "the flood filled bob's queue");
    let now = net.now;
    net.node("alice")
        .client
        .hangup(now, first, anytun::call::Cause::Normal)
        .unwrap();
    net.pump();
    assert_eq!(
        net.proxy.control_pending(bob),
        full + 1,
        "the Hangup is queued"
    );
    assert_eq!(net.proxy.stats().control_not_queued, dropped);
}
