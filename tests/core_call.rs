//! The protocol cores driven together over an in-memory network: handshake,
//! registration, calls, voice, DTMF, failures. Deterministic, no sockets.

use anytun::call::Cause;
use anytun::client::{ClientConfig, ClientError, Event};
use anytun::crypto::SecretKey;
use anytun::session::{ProxyId, SessionCrypto};
use anytun::sim::{name, Net};
use anytun::wire::inner::Inner;
use anytun::wire::transport::TransportHeader;
use anytun::wire::DropReason;
use std::time::Duration;

fn has<F: Fn(&Event) -> bool>(events: &[Event], f: F) -> bool {
    events.iter().any(f)
}

#[test]
fn call_by_name_with_voice_both_ways() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    assert!(has(&net.node("bob").events, |e| matches!(
        e,
        Event::Registered { expires_s: 300, .. }
    )));
    let call = net.establish_call("alice", "bob");
    let alice = &net.node("alice").events;
    assert!(has(alice, |e| matches!(e, Event::Ringing { .. })));
    assert!(has(
        alice,
        |e| matches!(e, Event::Answered { codec, .. } if codec == "ulaw")
    ));
    let bob = &net.node("bob").events;
    assert!(has(
        bob,
        |e| matches!(e, Event::IncomingCall { from, .. } if from.as_str() == "alice")
    ));

    for seq in 0..50u32 {
        let a = vec![(seq % 251) as u8; 160];
        let b = vec![(seq % 13) as u8 + 100; 160];
        net.send_voice("alice", call, seq, &a);
        net.send_voice("bob", call, seq, &b);
    }
    let heard_by_bob = &net.node("bob").heard;
    assert_eq!(heard_by_bob.len(), 50);
    for (i, h) in heard_by_bob.iter().enumerate() {
        assert_eq!(h.seq, i as u32);
        assert_eq!(h.payload, vec![(i % 251) as u8; 160]);
    }
    assert_eq!(net.node("alice").heard.len(), 50);
    assert_eq!(net.proxy.stats().media_relayed, 100);

    // DTMF end to end, reliably.
    let now = net.now;
    net.node("alice")
        .client
        .send_dtmf(now, call, '7', 120)
        .unwrap();
    net.pump();
    assert!(has(&net.node("bob").events, |e| matches!(
        e,
        Event::Dtmf {
            digit: '7',
            duration_ms: 120,
            ..
        }
    )));

    net.node("bob")
        .client
        .hangup(now, call, Cause::Normal)
        .unwrap();
    net.pump();
    assert!(has(&net.node("alice").events, |e| matches!(
        e,
        Event::CallEnded {
            cause: Cause::Normal,
            ..
        }
    )));
    assert_eq!(net.proxy.call_count(), 0);
}

#[test]
fn the_proxy_cannot_read_voice() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let marker = b"PLAINTEXT-VOICE-MARKER-0123456789";
    let contains = |b: &[u8]| b.windows(marker.len()).any(|w| w == marker);
    let mut pkt = net.send_voice("alice", call, 1, marker);
    // Not on the wire in clear...
    assert!(!contains(&pkt));
    // ...and not after the proxy's own decryption either: open the packet
    // with the proxy's session keys, as the proxy does, and look inside.
    let sid = net.node("alice").client.session().unwrap();
    let state = net.proxy.export_session(sid).unwrap();
    let header = TransportHeader::parse(&pkt).unwrap();
    // The proxy's keys, with a fresh replay window (the proxy itself has
    // already seen this counter).
    let mut fresh = SessionCrypto::proxy(
        header.session,
        anytun::session::Epochs::ephemeral(ProxyId::new(9).unwrap())
            .take()
            .unwrap(),
        state.client_to_proxy,
        state.proxy_to_client,
    );
    let opened = fresh.open(&header, &mut pkt).unwrap();
    let Ok(Inner::Media { e2e, .. }) = Inner::parse(opened.plaintext) else {
        panic!("a voice frame");
    };
    assert!(!contains(e2e), "the proxy could read the voice");
    // Bob, who holds the end-to-end keys, got it intact.
    assert_eq!(net.node("bob").heard[0].payload, marker.to_vec());
}

#[test]
fn forked_call_rings_every_device_first_answer_wins() {
    let mut net = Net::new(&["alice", "bob", "bob2"]);
    // bob2 is a second device of bob: authorise its key for "bob" too.
    let keys: Vec<_> = ["alice", "bob", "bob2"]
        .iter()
        .map(|n| (*n, net.node(n).client.public_key()))
        .collect();
    let subs = anytun::proxy::Subscribers::new(vec![
        (name("alice"), keys[0].1),
        (name("bob"), keys[1].1),
        (name("bob"), keys[2].1),
    ]);
    let now = net.now;
    net.proxy.set_subscribers(now, subs);
    net.connect_all();
    net.register("bob", "bob");
    net.register("bob2", "bob");
    let call = net
        .node("alice")
        .client
        .call(now, name("bob"), None, vec!["alaw".into()])
        .unwrap();
    net.pump();
    assert!(has(&net.node("bob").events, |e| matches!(
        e,
        Event::IncomingCall { .. }
    )));
    assert!(has(&net.node("bob2").events, |e| matches!(
        e,
        Event::IncomingCall { .. }
    )));
    net.node("bob2").client.answer(now, call, "alaw").unwrap();
    net.pump();
    assert!(has(&net.node("bob").events, |e| matches!(
        e,
        Event::CallEnded {
            cause: Cause::AnsweredElsewhere,
            ..
        }
    )));
    // The late answer from bob loses.
    assert!(net.node("bob").client.answer(now, call, "alaw").is_err());
    net.send_voice("alice", call, 0, &[1; 160]);
    assert_eq!(net.node("bob2").heard.len(), 1);
    assert_eq!(net.node("bob").heard.len(), 0);
}

#[test]
fn call_failures_have_causes() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    let now = net.now;
    // bob exists but is not registered.
    let c1 = net
        .node("alice")
        .client
        .call(now, name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    // nobody is called carol.
    let c2 = net
        .node("alice")
        .client
        .call(now, name("carol"), None, vec!["ulaw".into()])
        .unwrap();
    // alice may not call as bob.
    let c3 = net
        .node("alice")
        .client
        .call(now, name("bob"), Some(name("bob")), vec!["ulaw".into()])
        .unwrap();
    net.pump();
    let ev = &net.node("alice").events;
    assert!(has(
        ev,
        |e| matches!(e, Event::CallEnded { call, cause: Cause::Unavailable } if *call == c1)
    ));
    assert!(has(
        ev,
        |e| matches!(e, Event::CallEnded { call, cause: Cause::NotFound } if *call == c2)
    ));
    assert!(has(
        ev,
        |e| matches!(e, Event::CallEnded { call, cause: Cause::NotAuthorized } if *call == c3)
    ));
    // Registering a name the key is not authorised for fails.
    net.register("alice", "bob");
    assert!(has(&net.node("alice").events, |e| matches!(
        e,
        Event::RegisterFailed { .. }
    )));
    // Rejected with busy.
    net.register("bob", "bob");
    let c4 = net
        .node("alice")
        .client
        .call(now, name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    net.pump();
    net.node("bob").client.reject(now, c4, Cause::Busy).unwrap();
    net.pump();
    assert!(has(
        &net.node("alice").events,
        |e| matches!(e, Event::CallEnded { call, cause: Cause::Busy } if *call == c4)
    ));
    // Codec not offered.
    let c5 = net
        .node("alice")
        .client
        .call(now, name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    net.pump();
    assert!(matches!(
        net.node("bob").client.answer(now, c5, "opus"),
        Err(ClientError::CodecNotOffered(_))
    ));
}

#[test]
fn control_messages_survive_loss_by_retransmission() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let now = net.now;
    net.drop_downstream = true;
    let call = net
        .node("alice")
        .client
        .call(now, name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    net.pump();
    assert!(net
        .node("bob")
        .events
        .iter()
        .all(|e| !matches!(e, Event::IncomingCall { .. })));
    net.advance(Duration::from_millis(600));
    net.drop_downstream = false;
    net.advance(Duration::from_secs(4));
    let incoming = net
        .node("bob")
        .events
        .iter()
        .filter(|e| matches!(e, Event::IncomingCall { .. }))
        .count();
    assert_eq!(incoming, 1, "delivered once despite retransmissions");
    assert!(net.proxy.stats().control_retransmits > 0);
    let _ = call;
}

#[test]
fn replayed_and_forged_packets_are_dropped_and_counted() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let pkt = net.send_voice("alice", call, 1, &[5; 160]);
    let src = net.node("alice").addr;
    net.deliver_to_proxy(src, &pkt);
    assert_eq!(net.proxy.stats().drops.get(DropReason::Replay), 1);
    // A fresh counter (so the replay check passes) with a flipped byte.
    let mut forged = net.send_voice_unsent("alice", call, 2);
    let at = forged.len() - 20;
    forged[at] ^= 0xFF;
    net.deliver_to_proxy(src, &forged);
    assert_eq!(net.proxy.stats().drops.get(DropReason::BadTag), 1);
    net.deliver_to_proxy(src, &pkt[..30]);
    assert_eq!(net.proxy.stats().drops.get(DropReason::Truncated), 1);
    assert_eq!(net.node("bob").heard.len(), 1);
}

#[test]
fn address_moves_only_on_newest_authenticated_packet() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let old = net.send_voice("alice", call, 1, &[1; 160]);
    let attacker: std::net::SocketAddr = "192.0.2.66:6666".parse().unwrap();
    // A replay from elsewhere, and a forgery from elsewhere: no move.
    net.deliver_to_proxy(attacker, &old);
    let mut forged = old.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    net.deliver_to_proxy(attacker, &forged);
    let alice_addr = net.node("alice").addr;
    assert_eq!(net.session_info("alice").addr, alice_addr);
    // An older-but-unseen packet from a new address is accepted but does
    // not move the binding either.
    let a = net.send_voice_unsent("alice", call, 2);
    let b = net.send_voice_unsent("alice", call, 3);
    net.deliver_to_proxy(alice_addr, &b);
    net.deliver_to_proxy(attacker, &a);
    assert_eq!(net.session_info("alice").addr, alice_addr);
    assert_eq!(net.proxy.stats().address_changes, 0);
    // The real client moving (NAT rebinding) does move it.
    let moved: std::net::SocketAddr = "198.51.100.10:50000".parse().unwrap();
    net.node("alice").addr = moved;
    net.send_voice("alice", call, 4, &[4; 160]);
    assert_eq!(net.session_info("alice").addr, moved);
    assert_eq!(net.proxy.stats().address_changes, 1);
    // And bob's voice now reaches alice at the new address.
    net.send_voice("bob", call, 1, &[9; 160]);
    assert_eq!(
        net.node("alice").heard.last().unwrap().payload,
        vec![9; 160]
    );
}

#[test]
fn unknown_key_refused_with_clear_error() {
    let mut net = Net::new(&["alice"]);
    let stranger = SecretKey::generate();
    let cfg = ClientConfig::new(stranger, net.network.public());
    net.node("alice").client = anytun::client::Client::new(cfg);
    let (now, t) = (net.now, net.unix_nanos);
    net.node("alice").client.connect(now, t);
    net.pump();
    let ev = &net.node("alice").events;
    let err = ev
        .iter()
        .find_map(|e| match e {
            Event::Disconnected(err) => Some(err.to_string()),
            _ => None,
        })
        .expect("refused");
    assert!(err.contains("not in the subscriber store"), "{err}");
    assert_eq!(net.proxy.stats().handshakes_refused, 1);
}

#[test]
fn wrong_network_key_times_out_with_clear_error() {
    let mut net = Net::new(&["alice"]);
    let key = SecretKey::generate();
    let subs = anytun::proxy::Subscribers::new(vec![(name("alice"), key.public())]);
    let now = net.now;
    net.proxy.set_subscribers(now, subs);
    let wrong_network = SecretKey::generate().public();
    net.node("alice").client = anytun::client::Client::new(ClientConfig::new(key, wrong_network));
    let t = net.unix_nanos;
    net.node("alice").client.connect(now, t);
    net.advance(Duration::from_secs(12));
    let err = net
        .node("alice")
        .events
        .iter()
        .find_map(|e| match e {
            Event::Disconnected(err) => Some(err.to_string()),
            _ => None,
        })
        .expect("gave up");
    assert!(err.contains("network public key"), "{err}");
    assert_eq!(net.proxy.stats().drops.get(DropReason::BadMac1), 4);
    assert_eq!(net.proxy.session_count(), 0);
}

#[test]
fn replayed_handshake_initiation_is_refused() {
    let mut net = Net::new(&["alice"]);
    net.connect_all();
    let init = net.node("alice").sent[0].clone();
    let src = net.node("alice").addr;
    net.deliver_to_proxy(src, &init);
    assert_eq!(net.proxy.stats().drops.get(DropReason::StaleTimestamp), 1);
    assert_eq!(net.proxy.stats().handshakes_accepted, 1);
}

#[test]
fn under_load_a_cookie_round_trip_is_required() {
    let mut net = Net::new(&["alice"]);
    // Rebuild the proxy with a zero threshold: every handshake is "under load".
    let subs = anytun::proxy::Subscribers::new(vec![(
        name("alice"),
        net.node("alice").client.public_key(),
    )]);
    let mut cfg = anytun::proxy::ProxyConfig::new(
        anytun::session::ProxyId::new(1).unwrap(),
        net.network.clone(),
    );
    cfg.dos.under_load_handshakes_per_s = 0;
    net.proxy = anytun::proxy::Proxy::with_wall_clock(cfg, subs, net.now, net.unix_nanos);
    net.proxy
        .epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    let (now, t) = (net.now, net.unix_nanos);
    net.node("alice").client.connect(now, t);
    net.pump();
    assert_eq!(net.proxy.stats().cookie_replies, 1);
    assert!(net.node("alice").client.session().is_none());
    net.advance(Duration::from_millis(20));
    assert!(
        net.node("alice").client.session().is_some(),
        "{:?}",
        net.node("alice").events
    );
    // A cookie is bound to the address: from elsewhere it is not valid.
    let init = net.node("alice").sent.last().unwrap().clone();
    let before = net.proxy.stats().cookie_replies;
    net.deliver_to_proxy("192.0.2.99:1".parse().unwrap(), &init);
    assert_eq!(net.proxy.stats().cookie_replies, before + 1);
}

#[test]
fn silent_client_expires_and_its_calls_end() {
    // The media timeout would end the call first (tests/calls_robust.rs);
    // off here, so the session expiry path is what ends it.
    let mut net = Net::with_config(&["alice", "bob"], |c| c.media_timeout = Duration::ZERO);
    net.connect_all();
    net.register("bob", "bob");
    let _call = net.establish_call("alice", "bob");
    // Alice's packets stop reaching the proxy: swap her address to one the
    // network does not route, by removing her node's ability to send.
    let i = net.idx("alice");
    let gone = net.nodes.remove(i);
    net.advance(Duration::from_secs(190));
    assert_eq!(net.proxy.session_count(), 1);
    assert!(has(&net.node("bob").events, |e| matches!(
        e,
        Event::CallEnded {
            cause: Cause::NetworkFailure,
            ..
        }
    )));
    drop(gone);
}

#[test]
fn revoking_a_subscriber_ends_its_session() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    let bob_key = net.node("bob").client.public_key();
    let subs = anytun::proxy::Subscribers::new(vec![(name("bob"), bob_key)]);
    let now = net.now;
    net.proxy.set_subscribers(now, subs);
    assert_eq!(net.proxy.session_count(), 1);
}

#[test]
fn refusal_is_final_and_reported_once() {
    let mut net = Net::new(&["alice"]);
    let cfg = ClientConfig::new(SecretKey::generate(), net.network.public());
    net.node("alice").client = anytun::client::Client::new(cfg);
    let (now, t) = (net.now, net.unix_nanos);
    net.node("alice").client.connect(now, t);
    net.advance(Duration::from_secs(15));
    let refusals = net
        .node("alice")
        .events
        .iter()
        .filter(|e| matches!(e, Event::Disconnected(_)))
        .count();
    assert_eq!(refusals, 1);
    assert_eq!(
        net.proxy.stats().handshakes_refused,
        1,
        "no retries after a refusal"
    );
}

/// A client that only sends (say, the other side is muted) hears nothing
/// back but must not declare its session dead: it probes with keepalives,
/// which the proxy echoes.
#[test]
fn one_way_voice_keeps_the_session() {
    // With the media timeout on, a muted side must still send (silence); off
    // here, since this is about the session, not the call.
    let mut net = Net::with_config(&["alice", "bob"], |c| c.media_timeout = Duration::ZERO);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    for seq in 0..600u32 {
        net.send_voice("alice", call, seq, &[1; 160]);
        net.advance(Duration::from_millis(100));
    }
    let lost = net
        .node("alice")
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnected(_)));
    assert!(!lost, "session declared lost while sending voice");
    assert!(net.node("alice").client.session().is_some());
    assert_eq!(net.node("bob").heard.len(), 600);
}

/// Every copy of a registration refresh is lost: the client tries again
/// instead of letting the registration lapse.
#[test]
fn lost_registration_is_sent_again() {
    let mut net = Net::new(&["bob"]);
    net.connect_all();
    net.drop_downstream = true;
    let now = net.now;
    net.node("bob").client.register(now, name("bob"), 300);
    net.advance(Duration::from_secs(17));
    net.drop_downstream = false;
    net.advance(Duration::from_secs(8));
    assert!(has(&net.node("bob").events, |e| matches!(
        e,
        Event::Registered { .. }
    )));
}
