//! Call routing when devices die, refuse, race or flood: the proxy side of
//! forking, busy, media timeout and per-client bounds. Deterministic, in the
//! in-memory simulator (`anytun::sim`), with simulated time.

use anytun::call::Cause;
use anytun::client::{Client, ClientConfig, Event};
use anytun::crypto::SecretKey;
use anytun::proxy::Subscribers;
use anytun::session::CallId;
use anytun::sim::{name, Net};
use anytun::wire::DropReason;
use std::time::Duration;

/// alice, and bob with two devices ("bob" and "bob2", both authorised for
/// the name bob), all connected and both devices registered as bob.
fn forked(tune: impl FnOnce(&mut anytun::proxy::ProxyConfig)) -> Net {
    let mut net = Net::with_config(&["alice", "bob", "bob2"], tune);
    let key = |net: &mut Net, n: &str| net.node(n).client.public_key();
    let subs = Subscribers::new(vec![
        (name("alice"), key(&mut net, "alice")),
        (name("bob"), key(&mut net, "bob")),
        (name("bob"), key(&mut net, "bob2")),
    ]);
    let now = net.now;
    net.proxy.set_subscribers(now, subs);
    net.connect_all();
    net.register("bob", "bob");
    net.register("bob2", "bob");
    assert_eq!(net.proxy.registration_count(), 2);
    net
}

/// Makes client `who` one without the client-side call rules (no
/// end-to-end keepalive on a quiet call, no media timeout of its own), like
/// a third-party or older client, so the proxy's own rule is what acts.
/// Call before connecting.
fn plain_client(net: &mut Net, who: &str) {
    let mut cfg = ClientConfig::new(SecretKey::generate(), net.network.public());
    cfg.media_timeout = Duration::from_secs(3600);
    cfg.call_keepalive = Duration::from_secs(3600);
    net.node(who).client = Client::new(cfg);
    let subs = Subscribers::new(
        net.nodes
            .iter()
            .map(|n| (name(n.name), n.client.public_key())),
    );
    let now = net.now;
    net.proxy.set_subscribers(now, subs);
}

fn dial(net: &mut Net, from: &str, to: &str) -> CallId {
    let now = net.now;
    let call = net
        .node(from)
        .client
        .call(now, name(to), None, vec!["ulaw".into()])
        .unwrap();
    net.pump();
    call
}

fn ended(net: &mut Net, who: &str, call: CallId) -> Vec<Cause> {
    net.node(who)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::CallEnded { call: c, cause } if *c == call => Some(*cause),
            _ => None,
        })
        .collect()
}

fn incoming(net: &mut Net, who: &str, call: CallId) -> bool {
    net.node(who)
        .events
        .iter()
        .any(|e| matches!(e, Event::IncomingCall { call: c, .. } if *c == call))
}

/// Lets `secs` of simulated time pass while each of `talkers` sends a voice
/// frame every 100 ms (a live call carries media both ways).
fn talk(net: &mut Net, call: CallId, talkers: &[&str], secs: u64, seq: &mut u32) {
    for _ in 0..secs * 10 {
        for who in talkers {
            // Not after the call ended (at the proxy's 1 s sweep).
            if ended(net, who, call).is_empty() {
                net.send_voice(who, call, *seq, &[7; 160]);
            }
        }
        *seq += 1;
        net.advance(Duration::from_millis(100));
    }
}

/// No call state at all is left at the proxy: table, per-session index,
/// deadlines.
fn assert_no_call_state(net: &Net) {
    let s = net.proxy.routing_sizes();
    assert_eq!(
        (s.calls, s.session_calls, s.call_deadlines),
        (0, 0, 0),
        "{s:?}"
    );
}

/// Advances in 100 ms steps until `who` sees `call` end; returns the cause
/// and how long it took. Panics after `limit`.
fn wait_end(net: &mut Net, who: &str, call: CallId, limit: Duration) -> (Cause, Duration) {
    let start = net.now;
    while net.now - start <= limit {
        if let Some(c) = ended(net, who, call).first() {
            return (*c, net.now - start);
        }
        net.advance(Duration::from_millis(100));
    }
    panic!("{who}: call not ended within {limit:?}");
}

/// issue 6.1: bob2 is killed while registered; alice calls bob, bob answers.
/// The dead leg must not end the answered call, and the proxy must stop
/// sending the Invite to it once the call is answered.
#[test]
fn dead_device_never_ends_the_answered_call() {
    let mut net = forked(|_| {});
    net.kill("bob2");
    net.advance(Duration::from_secs(1));
    let call = dial(&mut net, "alice", "bob");
    assert!(incoming(&mut net, "bob", call));
    let invite_len = net.dead_rx("bob2").first().expect("bob2 was rung").1;
    net.advance(Duration::from_millis(500));
    let now = net.now;
    net.node("bob").client.answer(now, call, "ulaw").unwrap();
    net.pump();
    let answered_at = net.now;
    let mut seq = 0;
    talk(&mut net, call, &["alice", "bob"], 60, &mut seq);
    assert!(
        ended(&mut net, "alice", call).is_empty(),
        "alice's call ended"
    );
    assert!(ended(&mut net, "bob", call).is_empty(), "bob's call ended");
    assert_eq!(net.node("bob").heard.len(), seq as usize);
    assert_eq!(net.node("alice").heard.len(), seq as usize);
    assert_eq!(net.proxy.call_count(), 1);
    // After the answer only the (small) "answered elsewhere" Hangup goes to
    // the dead device, at most MAX_TRANSMISSIONS times; no Invite copy.
    let after: Vec<usize> = net
        .dead_rx("bob2")
        .iter()
        .filter(|(t, _)| *t > answered_at)
        .map(|(_, len)| *len)
        .collect();
    assert!(
        after.iter().all(|len| *len < invite_len),
        "Invite ({invite_len} bytes) still sent after the answer: {after:?}"
    );
    assert!(
        after.len() <= 8,
        "{} datagrams to the dead leg",
        after.len()
    );
    let bob2 = net.session_info("bob2").id;
    assert_eq!(net.proxy.calls_of_session(bob2), 0);
    assert_eq!(net.proxy.pending_control(bob2), 0);
}

/// issue 6.4: a call to a name whose only device is dead fails fast with
/// "unavailable" (it took 15.75 s): at once when the device has been silent
/// for more than two keepalive intervals, within a few seconds otherwise.
#[test]
fn call_to_a_dead_device_fails_fast_with_unavailable() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    net.kill("bob");
    net.advance(Duration::from_secs(1));
    let call = dial(&mut net, "alice", "bob");
    let (cause, took) = wait_end(&mut net, "alice", call, Duration::from_secs(20));
    eprintln!("call to a just-killed only device: {cause} after {took:?}");
    assert_eq!(cause, Cause::Unavailable);
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    assert_eq!(net.proxy.call_count(), 0);

    // Silent for more than two keepalive intervals (2 x 15 s): not rung.
    net.advance(Duration::from_secs(31));
    let rung_before = net.dead_rx("bob").len();
    let call = dial(&mut net, "alice", "bob");
    assert_eq!(ended(&mut net, "alice", call), vec![Cause::Unavailable]);
    assert_eq!(
        net.dead_rx("bob").len(),
        rung_before,
        "a silent device was rung"
    );
    assert_no_call_state(&net);
}

/// issue 6.5: busy is reported as busy, promptly, even when another device
/// of the callee is dead (today: cause 38 after 15.75 s).
#[test]
fn busy_refusal_reaches_the_caller_promptly() {
    // bob2 died a moment ago: it is rung, but its leg is dropped within
    // seconds and the busy refusal wins over the dead leg.
    let mut net = forked(|_| {});
    net.kill("bob2");
    net.advance(Duration::from_secs(1));
    let call = dial(&mut net, "alice", "bob");
    let now = net.now;
    net.node("bob")
        .client
        .reject(now, call, Cause::Busy)
        .unwrap();
    net.pump();
    let (cause, took) = wait_end(&mut net, "alice", call, Duration::from_secs(20));
    eprintln!("busy device + just-killed device: {cause} after {took:?}");
    assert_eq!(cause, Cause::Busy);
    assert!(took <= Duration::from_secs(5), "took {took:?}");

    // bob2 silent for long: busy at once.
    net.advance(Duration::from_secs(31));
    let call = dial(&mut net, "alice", "bob");
    let now = net.now;
    net.node("bob")
        .client
        .reject(now, call, Cause::Busy)
        .unwrap();
    net.pump();
    assert_eq!(ended(&mut net, "alice", call), vec![Cause::Busy]);
    assert_no_call_state(&net);
}

/// Two live devices: one busy, the other declines: the caller hears busy
/// (the most telling refusal), not whichever came last.
#[test]
fn busy_wins_over_a_later_refusal() {
    let mut net = forked(|_| {});
    let call = dial(&mut net, "alice", "bob");
    let now = net.now;
    net.node("bob")
        .client
        .reject(now, call, Cause::Busy)
        .unwrap();
    net.pump();
    assert!(ended(&mut net, "alice", call).is_empty());
    net.node("bob2")
        .client
        .reject(now, call, Cause::Rejected)
        .unwrap();
    net.pump();
    assert_eq!(ended(&mut net, "alice", call), vec![Cause::Busy]);
    assert_no_call_state(&net);
}

/// issue 6.3: the caller vanishes mid-call (SIGKILL). A callee without a
/// media rule of its own learns it from the proxy within the media timeout
/// (+1 s sweep), with cause 102, and the proxy keeps nothing about the call.
#[test]
fn vanished_caller_ends_the_call_within_the_media_timeout() {
    let mut net = Net::new(&["alice", "bob"]);
    plain_client(&mut net, "bob");
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let mut seq = 0;
    talk(&mut net, call, &["alice", "bob"], 2, &mut seq);
    net.kill("alice");
    let timeout = anytun::proxy::ProxyConfig::new(
        anytun::session::ProxyId::new(1).unwrap(),
        anytun::crypto::SecretKey::generate(),
    )
    .media_timeout;
    assert!(timeout > Duration::ZERO);
    let start = net.now;
    while ended(&mut net, "bob", call).is_empty() {
        assert!(
            net.now - start <= timeout + Duration::from_secs(1),
            "no hangup"
        );
        talk(&mut net, call, &["bob"], 1, &mut seq);
    }
    assert_eq!(ended(&mut net, "bob", call), vec![Cause::Timeout]);
    eprintln!("vanished caller: callee told after {:?}", net.now - start);
    assert_eq!(net.proxy.call_count(), 0);
    let (a, b) = (net.session_info("alice").id, net.session_info("bob").id);
    assert_eq!(net.proxy.calls_of_session(a), 0);
    assert_eq!(net.proxy.calls_of_session(b), 0);
    assert_eq!(net.proxy.pending_control(b), 0);
    // The Hangup to the dead caller is given up on (bounded), and then
    // nothing about the call is left at all.
    net.advance(Duration::from_secs(17));
    assert_eq!(net.proxy.pending_control(a), 0);
    assert_no_call_state(&net);
}

/// media_timeout = 0 disables the rule: a silent call stays up.
#[test]
fn media_timeout_zero_disables_it() {
    let mut net = Net::with_config(&["alice", "bob"], |c| c.media_timeout = Duration::ZERO);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    net.advance(Duration::from_secs(60));
    assert!(ended(&mut net, "bob", call).is_empty());
    assert_eq!(net.proxy.call_count(), 1);
}

/// A one-sided call (only alice talks, bob sends nothing at all, not even
/// the clients' end-to-end keepalive) ends too: the rule is "nothing from
/// one side", not "nothing at all".
#[test]
fn one_silent_side_ends_the_call() {
    let mut net = Net::new(&["alice", "bob"]);
    plain_client(&mut net, "alice");
    plain_client(&mut net, "bob");
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let (mut seq, start) = (0, net.now);
    while ended(&mut net, "alice", call).is_empty() {
        assert!(net.now - start <= Duration::from_secs(16), "no hangup");
        talk(&mut net, call, &["alice"], 1, &mut seq);
    }
    assert!(
        net.now - start >= Duration::from_secs(15),
        "ended too early"
    );
    assert_eq!(ended(&mut net, "alice", call), vec![Cause::Timeout]);
    assert_eq!(ended(&mut net, "bob", call), vec![Cause::Timeout]);
    assert_no_call_state(&net);
}

/// issue 6.2: two devices answer at nearly the same moment. The loser gets
/// one Hangup(answered elsewhere, 26) and the proxy keeps nothing for it
/// about the call; a loser that vanishes right after answering never
/// touches the answered call (today: ended with cause 38 after 15.75 s).
#[test]
fn losing_device_of_a_double_answer_is_cleared() {
    let mut net = forked(|_| {});
    let call = dial(&mut net, "alice", "bob");
    let now = net.now;
    net.node("bob").client.answer(now, call, "ulaw").unwrap();
    net.node("bob2").client.answer(now, call, "ulaw").unwrap();
    net.pump();
    // bob's Answer reached the proxy first (the simulator delivers in node order).
    assert_eq!(
        ended(&mut net, "bob2", call),
        vec![Cause::AnsweredElsewhere]
    );
    assert!(ended(&mut net, "bob", call).is_empty());
    let bob2 = net.session_info("bob2").id;
    assert_eq!(net.proxy.calls_of_session(bob2), 0);
    assert_eq!(net.proxy.pending_control(bob2), 0);

    // Again, but the loser vanishes as soon as its Answer is out.
    let call = dial(&mut net, "alice", "bob");
    let now = net.now;
    net.node("bob").client.answer(now, call, "ulaw").unwrap();
    net.node("bob2").client.answer(now, call, "ulaw").unwrap();
    net.drop_downstream = true;
    net.pump();
    net.drop_downstream = false;
    net.kill("bob2");
    // The Answer to alice was lost with the rest: its retransmission lands.
    net.advance(Duration::from_secs(1));
    let mut seq = 0;
    talk(&mut net, call, &["alice", "bob"], 20, &mut seq);
    assert!(
        ended(&mut net, "alice", call).is_empty(),
        "alice's call ended"
    );
    assert!(ended(&mut net, "bob", call).is_empty(), "bob's call ended");
    assert_eq!(net.node("bob").heard.len(), seq as usize);
    // One Hangup (<= 8 copies), not one per Answer.
    assert!(net.dead_rx("bob2").len() <= 8);
    assert_eq!(net.proxy.calls_of_session(bob2), 0);
    assert_eq!(net.proxy.pending_control(bob2), 0);
}

/// issue 5.1: calls per session, calls per callee device, the global calls
/// table: what exceeds a bound is refused with a cause and counted, and
/// nothing grows with the flood.
#[test]
fn call_bounds_hold_under_a_flood() {
    let mut net = Net::with_config(&["alice", "carol", "bob"], |c| {
        c.max_calls_per_session = 4;
        c.max_calls = 10;
    });
    net.connect_all();
    net.register("bob", "bob");
    let mut calls = Vec::new();
    for _ in 0..50 {
        calls.push(dial(&mut net, "alice", "bob"));
    }
    let causes: Vec<Vec<Cause>> = calls.iter().map(|c| ended(&mut net, "alice", *c)).collect();
    let refused = causes.iter().filter(|c| !c.is_empty()).count();
    assert_eq!(refused, 46, "{causes:?}");
    assert!(
        causes
            .iter()
            .flatten()
            .all(|c| *c == Cause::ResourceUnavailable),
        "{causes:?}"
    );
    assert_eq!(net.proxy.call_count(), 4);
    let limited = net.proxy.stats().drops.get(DropReason::CallLimit);
    assert_eq!(limited, 46);
    // bob is in 4 calls now (its own bound): carol finds it busy.
    let c = dial(&mut net, "carol", "bob");
    assert_eq!(ended(&mut net, "carol", c), vec![Cause::Busy]);
    // Flood of calls to a name that does not exist: refused, nothing kept.
    for _ in 0..1000 {
        dial(&mut net, "carol", "nobody");
    }
    assert_eq!(net.proxy.call_count(), 4);
    let sizes = net.proxy.routing_sizes();
    assert_eq!(sizes.calls, 4);
    assert_eq!(sizes.session_calls, 8);
    assert!(sizes.call_deadlines <= 4 * 3, "{sizes:?}");

    // The global table: with bob registered from a second client, calls
    // from several sessions fill it to max_calls and no further (34).
    let mut net = Net::with_config(&["a", "b", "c", "d", "bob"], |c| {
        c.max_calls_per_session = 100;
        c.max_calls = 10;
    });
    net.connect_all();
    net.register("bob", "bob");
    let mut refused = Vec::new();
    for who in ["a", "b", "c", "d"] {
        for _ in 0..5 {
            let c = dial(&mut net, who, "bob");
            refused.extend(ended(&mut net, who, c));
        }
    }
    assert_eq!(net.proxy.call_count(), 10);
    assert_eq!(refused.len(), 10);
    assert!(refused.iter().all(|c| c.code() == 34), "{refused:?}");
}

/// issue 5.1: names per session and devices per name are bounded; what
/// exceeds them gets RegisterFailed and is counted.
#[test]
fn registration_bounds_hold() {
    const DEVICES: [&str; 6] = ["d0", "d1", "d2", "d3", "d4", "d5"];
    let mut net = Net::with_config(&DEVICES, |c| {
        c.max_names_per_session = 3;
        c.max_devices_per_name = 4;
    });
    let keys: Vec<_> = DEVICES
        .iter()
        .map(|d| net.node(d).client.public_key())
        .collect();
    // Every device may use "shared"; d0 may also use n0..n9.
    let mut subs: Vec<_> = keys.iter().map(|k| (name("shared"), *k)).collect();
    subs.extend((0..10).map(|i| (name(&format!("n{i}")), keys[0])));
    let now = net.now;
    net.proxy.set_subscribers(now, Subscribers::new(subs));
    net.connect_all();
    for i in 0..10 {
        net.register("d0", &format!("n{i}"));
    }
    let failed = |net: &mut Net, who: &str| {
        net.node(who)
            .events
            .iter()
            .filter(|e| matches!(e, Event::RegisterFailed { .. }))
            .count()
    };
    assert_eq!(failed(&mut net, "d0"), 7);
    assert_eq!(net.proxy.registration_count(), 3);
    // A refresh of a name it holds is not a new registration.
    net.register("d0", "n0");
    assert_eq!(failed(&mut net, "d0"), 7);
    for d in &DEVICES[1..] {
        net.register(d, "shared");
    }
    assert_eq!(failed(&mut net, "d5"), 1, "the fifth device of a name");
    assert_eq!(net.proxy.registration_count(), 3 + 4);
    assert_eq!(
        net.proxy.stats().drops.get(DropReason::RegistrationLimit),
        8
    );
    let sizes = net.proxy.routing_sizes();
    assert_eq!(sizes.registrations, 7);
    assert_eq!(sizes.registration_expiries, 7);
    // Unregistering frees room.
    let now = net.now;
    net.node("d1").client.register(now, name("shared"), 0);
    net.pump();
    net.register("d5", "shared");
    assert_eq!(failed(&mut net, "d5"), 1);
    assert_eq!(net.proxy.registration_count(), 7);
}

/// The same with default clients: the callee's own media rule (10 s, cause
/// 38) fires before the proxy's; either way nothing of the call is left at
/// the proxy once the callee's Hangup is in.
#[test]
fn vanished_caller_with_default_clients_leaves_nothing() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let mut seq = 0;
    talk(&mut net, call, &["alice", "bob"], 2, &mut seq);
    net.kill("alice");
    let (cause, took) = wait_end(&mut net, "bob", call, Duration::from_secs(20));
    assert!(
        cause == Cause::NetworkFailure || cause == Cause::Timeout,
        "{cause:?}"
    );
    eprintln!("vanished caller, default clients: {cause} after {took:?}");
    assert!(took <= Duration::from_secs(16), "took {took:?}");
    net.pump();
    assert_no_call_state(&net);
    let b = net.session_info("bob").id;
    assert_eq!(net.proxy.calls_of_session(b), 0);
}
