//! The client core against failures, in the simulator: lost DTMF packets,
//! a peer that vanishes, a proxy that restarts, a second login with the
//! same key, a busy device, and a client that shuts down.

use anytun::call::Cause;
use anytun::client::{Client, ClientConfig, Event};
use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::session::{EpochLease, ProxyId};
use anytun::sim::{name, Net, Node};
use std::time::Duration;

fn has<F: Fn(&Event) -> bool>(events: &[Event], f: F) -> bool {
    events.iter().any(f)
}

fn ended(events: &[Event]) -> Option<Cause> {
    events.iter().find_map(|e| match e {
        Event::CallEnded { cause, .. } => Some(*cause),
        _ => None,
    })
}

/// The subscribers of `net` as they are now (each node for its own name).
fn subscribers_of(net: &Net) -> Subscribers {
    Subscribers::new(
        net.nodes
            .iter()
            .map(|n| (name(n.name), n.client.public_key())),
    )
}

/// `123#` with the packet carrying `1` lost on its first trip: the
/// retransmission comes after `2`, `3` and `#`, yet bob hears `123#`.
#[test]
fn dtmf_arrives_in_order_when_one_packet_is_lost() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let now = net.now;
    net.node("alice")
        .client
        .send_dtmf(now, call, '1', 100)
        .unwrap();
    // Lose it: take it off alice's queue without delivering it.
    let mut buf = [0u8; anytun::wire::MAX_DATAGRAM];
    assert!(net.node("alice").client.poll_transmit(&mut buf).is_some());
    for d in ['2', '3', '#'] {
        net.node("alice")
            .client
            .send_dtmf(now, call, d, 100)
            .unwrap();
        net.pump();
    }
    net.advance(Duration::from_secs(2));
    let digits: String = net
        .node("bob")
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Dtmf { digit, .. } => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, "123#");
}

/// alice's device vanishes mid-call without a word (SIGKILL, power cut):
/// bob's client notices that nothing comes from her and ends the call in
/// seconds, not when her session times out at the proxy (180 s).
#[test]
fn a_vanished_peer_ends_the_call_within_seconds() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let _call = net.establish_call("alice", "bob");
    let i = net.idx("alice");
    let _gone = net.nodes.remove(i);
    let mut waited = Duration::ZERO;
    while ended(&net.node("bob").events).is_none() && waited < Duration::from_secs(30) {
        net.advance(Duration::from_millis(100));
        waited += Duration::from_millis(100);
    }
    let cause = ended(&net.node("bob").events);
    assert!(cause.is_some(), "bob still in the call after {waited:?}");
    assert!(
        waited <= Duration::from_secs(11),
        "noticed only after {waited:?}"
    );
    println!("vanished peer noticed after {waited:?}, cause {cause:?}");
    // bob told the proxy: nothing is left of the call there either.
    assert_eq!(net.proxy.call_count(), 0);
}

/// Both sides quiet (nobody talks, no audio file) is not a vanished peer:
/// the call stays up.
#[test]
fn a_quiet_call_stays_up() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let _call = net.establish_call("alice", "bob");
    net.advance(Duration::from_secs(120));
    assert_eq!(ended(&net.node("alice").events), None);
    assert_eq!(ended(&net.node("bob").events), None);
    assert_eq!(net.proxy.call_count(), 1);
}

fn restart_proxy(net: &mut Net) {
    let subs = subscribers_of(net);
    let cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), net.network.clone());
    net.proxy = Proxy::with_wall_clock(cfg, subs, net.now, net.unix_nanos);
    net.proxy.epochs().grant(EpochLease::ephemeral());
}

/// The proxy restarts and forgets every session. An idle registered
/// client notices, connects again and registers its name again within
/// seconds; callers can reach it again.
#[test]
fn an_idle_client_recovers_from_a_proxy_restart() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    net.advance(Duration::from_secs(7));
    restart_proxy(&mut net);
    let mut waited = Duration::ZERO;
    while net.proxy.registration_count() == 0 && waited < Duration::from_secs(60) {
        net.advance(Duration::from_millis(100));
        waited += Duration::from_millis(100);
    }
    println!("re-registered {waited:?} after the proxy restart");
    assert_eq!(net.proxy.registration_count(), 1, "never re-registered");
    // keepalive (15 s) + loss detection + handshake.
    assert!(waited <= Duration::from_secs(20), "took {waited:?}");
    // alice recovered too and can call bob.
    net.advance(Duration::from_secs(20));
    assert!(net.node("alice").client.session().is_some());
    let call = net.establish_call("alice", "bob");
    assert!(has(&net.node("alice").events, |e| matches!(
        e,
        Event::Answered { call: c, .. } if *c == call
    )));
}

/// A call in progress while the proxy restarts ends promptly on both ends
/// with "network failure" (a single proxy keeps no calls across a
/// restart), and both clients are back in service soon after.
#[test]
fn a_call_during_a_proxy_restart_ends_promptly_on_both_ends() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let mut seq = 0u32;
    for _ in 0..100 {
        net.send_voice("alice", call, seq, &[1; 160]);
        net.send_voice("bob", call, seq, &[2; 160]);
        seq += 1;
        net.advance(Duration::from_millis(20));
    }
    restart_proxy(&mut net);
    let mut waited = Duration::ZERO;
    while (ended(&net.node("alice").events).is_none() || ended(&net.node("bob").events).is_none())
        && waited < Duration::from_secs(60)
    {
        // Both keep sending voice until their client says the call is over.
        for who in ["alice", "bob"] {
            if ended(&net.node(who).events).is_none() {
                let now = net.now;
                let mut out = [0u8; anytun::wire::MAX_DATAGRAM];
                let _ = net
                    .node(who)
                    .client
                    .send_voice(now, call, seq, 0, &[3; 160], &mut out);
            }
        }
        seq += 1;
        net.advance(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    println!("call ended on both ends {waited:?} after the proxy restart");
    assert_eq!(
        ended(&net.node("alice").events),
        Some(Cause::NetworkFailure)
    );
    assert_eq!(ended(&net.node("bob").events), Some(Cause::NetworkFailure));
    assert!(waited <= Duration::from_secs(6), "took {waited:?}");
    let mut more = Duration::ZERO;
    while net.proxy.registration_count() == 0 && more < Duration::from_secs(30) {
        net.advance(Duration::from_millis(100));
        more += Duration::from_millis(100);
    }
    println!("bob registered again {:?} after the restart", waited + more);
    assert_eq!(net.proxy.registration_count(), 1);
    assert!(waited + more <= Duration::from_secs(10));
}

/// A second login with bob's key replaces bob's session: the old client is
/// told at once, reports it and does not log in again (no eviction
/// ping-pong); the new one keeps the session and the name.
#[test]
fn a_second_login_with_the_same_key_tells_the_old_session() {
    let mut net = Net::new(&["alice", "bob"]);
    let bob_key = SecretKey::generate();
    let cfg = ClientConfig::new(bob_key.clone(), net.network.public());
    net.node("bob").client = Client::new(cfg.clone());
    let subs = subscribers_of(&net);
    let now = net.now;
    net.proxy.set_subscribers(now, subs);
    net.connect_all();
    net.register("bob", "bob");
    net.nodes.push(Node {
        name: "bob",
        addr: "198.51.100.99:41000".parse().unwrap(),
        client: Client::new(cfg),
        events: Vec::new(),
        heard: Vec::new(),
        sent: Vec::new(),
        clock_offset_ns: 0,
    });
    net.advance(Duration::from_secs(1));
    let (now, t) = (net.now, net.unix_nanos);
    net.nodes[2].client.connect(now, t);
    net.nodes[2].client.register(now, name("bob"), 300);
    net.pump();
    let old = &net.nodes[1];
    let err = old
        .events
        .iter()
        .find_map(|e| match e {
            Event::Disconnected(err) => Some(err.to_string()),
            _ => None,
        })
        .expect("the old session is told at once");
    assert!(err.contains("replaced by a newer login"), "{err}");
    assert!(old.client.session().is_none());
    let sent_before = old.sent.len();
    net.advance(Duration::from_secs(120));
    assert_eq!(
        net.nodes[1].sent.len(),
        sent_before,
        "the old client logged in again"
    );
    assert!(net.nodes[2].client.session().is_some());
    assert_eq!(net.proxy.session_count(), 2);
    assert_eq!(net.proxy.registration_count(), 1);
}

/// A device at its call limit (`anytun answer` takes one call at a time)
/// refuses another Invite with busy at once, and is free again after.
#[test]
fn a_client_at_its_call_limit_refuses_with_busy_at_once() {
    let mut net = Net::new(&["alice", "bob", "carol"]);
    let key = SecretKey::generate();
    let mut cfg = ClientConfig::new(key, net.network.public());
    cfg.max_calls = 1;
    net.node("bob").client = Client::new(cfg);
    let subs = subscribers_of(&net);
    let now = net.now;
    net.proxy.set_subscribers(now, subs);
    net.connect_all();
    net.register("bob", "bob");
    let first = net.establish_call("alice", "bob");
    let second = net
        .node("carol")
        .client
        .call(now, name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    net.pump();
    assert!(has(&net.node("carol").events, |e| matches!(
        e,
        Event::CallEnded { call, cause: Cause::Busy } if *call == second
    )));
    assert!(!has(&net.node("bob").events, |e| matches!(
        e,
        Event::IncomingCall { call, .. } if *call == second
    )));
    // Bob's application is told whom it refused, and why.
    assert!(has(&net.node("bob").events, |e| matches!(
        e,
        Event::CallRefused { call, from, cause: Cause::Busy }
            if *call == second && from.as_str() == "carol"
    )));
    net.node("alice")
        .client
        .hangup(now, first, Cause::Normal)
        .unwrap();
    net.pump();
    let third = net.establish_call("carol", "bob");
    assert!(has(&net.node("carol").events, |e| matches!(
        e,
        Event::Answered { call, .. } if *call == third
    )));
}

/// `shutdown` ends the calls and the registrations; `pending_control`
/// stays above 0 until the proxy acknowledges them (retransmitted through
/// loss), which is what a stopping client waits for.
#[test]
fn shutdown_hangs_up_and_unregisters_until_acknowledged() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let _call = net.establish_call("alice", "bob");
    assert_eq!(net.proxy.registration_count(), 1);
    let now = net.now;
    net.drop_downstream = true;
    net.node("bob").client.shutdown(now);
    net.pump();
    // The proxy acted, but its acknowledgements were lost.
    assert_eq!(net.proxy.call_count(), 0);
    assert_eq!(net.proxy.registration_count(), 0);
    assert_eq!(net.node("bob").client.pending_control(), 2);
    net.drop_downstream = false;
    net.advance(Duration::from_millis(300));
    assert_eq!(net.node("bob").client.pending_control(), 0);
    assert_eq!(ended(&net.node("alice").events), Some(Cause::Normal));
}

/// A call that ends leaves nothing behind on the client: what was still
/// being retransmitted about it (here a DTMF digit whose packet was lost)
/// is dropped, not sent for another 15 s.
#[test]
fn an_ended_call_leaves_nothing_to_retransmit() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let now = net.now;
    net.node("bob")
        .client
        .send_dtmf(now, call, '5', 100)
        .unwrap();
    let mut buf = [0u8; anytun::wire::MAX_DATAGRAM];
    assert!(net.node("bob").client.poll_transmit(&mut buf).is_some()); // lost
    assert_eq!(net.node("bob").client.pending_control(), 1);
    net.node("alice")
        .client
        .hangup(now, call, Cause::Normal)
        .unwrap();
    net.pump();
    assert_eq!(ended(&net.node("bob").events), Some(Cause::Normal));
    assert_eq!(net.node("bob").client.pending_control(), 0);
    assert_eq!(net.node("bob").client.calls().len(), 0);
    assert_eq!(net.proxy.call_count(), 0);
}
