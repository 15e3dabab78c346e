//! anypsp, proxy side: the event stream, replicated state, shortest-path
//! voice, take-over and forward-to-home, on the single-proxy simulator and
//! on the multi-proxy test bed (`anytun::testbed`).

use anytun::call::Cause;
use anytun::client::Event;
use anytun::proxy::ProxyEvent;
use anytun::session::ProxyId;
use anytun::sim::Net;
use anytun::testbed::Bed;
use std::time::Duration;

fn drain(net: &mut Net) -> Vec<ProxyEvent> {
    std::iter::from_fn(|| net.proxy.poll_event()).collect()
}

/// A short name for each event, with the parties, to compare sequences.
fn shape(e: &ProxyEvent) -> String {
    match e {
        ProxyEvent::SessionUp(r) => format!("up {}", r.state.id),
        ProxyEvent::SessionUpdated(r) => format!("updated {} serving {}", r.state.id, r.serving),
        ProxyEvent::SessionDown { id, cause } => format!("down {id} {cause:?}"),
        ProxyEvent::Registered { name, session, .. } => format!("reg {name} {session}"),
        ProxyEvent::Unregistered { name, session } => format!("unreg {name} {session}"),
        ProxyEvent::CallStarted {
            call,
            caller,
            callees,
            ..
        } => {
            let c: Vec<String> = callees.iter().map(|s| s.to_string()).collect();
            format!("start {call} {caller} [{}]", c.join(","))
        }
        ProxyEvent::CallRinging { call, callee } => format!("ringing {call} {callee}"),
        ProxyEvent::CallLegDropped { call, callee } => format!("legdrop {call} {callee}"),
        ProxyEvent::CallAnswered {
            call,
            caller,
            callee,
            ..
        } => format!("answered {call} {caller} {callee}"),
        ProxyEvent::CallEnded { call, cause, .. } => format!("ended {call} {cause:?}"),
    }
}

#[test]
fn a_call_yields_exactly_the_expected_event_sequence() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    let a = net.session_info("alice").id;
    let b = net.session_info("bob").id;
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let now = net.now;
    let hung_up_ms = (net.unix_nanos / 1_000_000) as u64;
    net.node("bob")
        .client
        .hangup(now, call, Cause::Normal)
        .unwrap();
    net.pump();
    // A changed address is an update; the session's end is the last event.
    net.node("alice").addr = "198.51.100.99:5555".parse().unwrap();
    net.advance(Duration::from_secs(16));
    net.kill("alice");
    net.advance(Duration::from_secs(200));
    let events = drain(&mut net);
    // Call records get wall-clock times (the proxy's wall clock).
    let ended_at = events.iter().find_map(|e| match e {
        ProxyEvent::CallEnded { at_unix_ms, .. } => Some(*at_unix_ms),
        _ => None,
    });
    assert_eq!(ended_at, Some(hung_up_ms));
    let got: Vec<String> = events.iter().map(shape).collect();
    let want = vec![
        format!("up {a}"),
        format!("up {b}"),
        format!("reg bob {b}"),
        format!("start {call} {a} [{b}]"),
        format!("ringing {call} {b}"),
        format!("answered {call} {a} {b}"),
        format!("ended {call} Normal"),
        format!("updated {a} serving 1"),
        format!("down {a} NetworkFailure"),
    ];
    assert_eq!(got, want);
}

#[test]
fn event_queue_is_bounded_and_overflow_asks_for_resync() {
    let mut net = Net::with_config(&["alice", "bob", "carol"], |c| c.max_events = 2);
    net.connect_all();
    net.register("bob", "bob");
    let (held, dropped) = net.proxy.event_queue_stats();
    assert_eq!(held, 2);
    assert_eq!(dropped, 2, "3 sessions up + 1 registration, 2 held");
    assert!(net.proxy.resync_needed());
    // The newest are kept.
    let got = drain(&mut net);
    assert!(matches!(got.last(), Some(ProxyEvent::Registered { .. })));
    net.proxy.clear_resync();
    assert!(!net.proxy.resync_needed());
}

/// A resync listed a chunk at a time (`served_events_from`, one chunk per
/// lock hold in anytund) gives exactly what one scan gives: every served
/// session with its registrations, then the calls owned here.
#[test]
fn served_events_in_chunks_equal_one_scan() {
    let mut net = Net::new(&["alice", "bob", "carol", "dave", "erin"]);
    net.connect_all();
    net.register("bob", "bob");
    net.register("dave", "dave");
    let call = net.establish_call("alice", "bob");
    let now = net.now;
    let whole: Vec<String> = net.proxy.served_events(now).iter().map(shape).collect();
    assert!(whole
        .iter()
        .any(|e| e.starts_with(&format!("answered {call}"))));
    assert_eq!(
        whole.len(),
        5 + 2 + 1,
        "5 sessions, 2 registrations, 1 call"
    );
    for limit in [1, 2, 3, 7] {
        let mut cursor = anytun::proxy::ServedCursor::START;
        let mut chunks = 0;
        let mut got = Vec::new();
        while !cursor.is_done() {
            let (evs, next) = net.proxy.served_events_from(now, cursor, limit);
            got.extend(evs.iter().map(shape));
            cursor = next;
            chunks += 1;
        }
        assert_eq!(got, whole, "chunks of {limit}");
        assert!(chunks > 5 / limit, "{chunks} chunks of {limit}");
    }
}

#[test]
fn a_session_used_on_another_proxy_before_replication_is_forwarded_home() {
    let mut bed = Bed::new(2, &["alice", "bob"], 5);
    // Replication slower than the client: 300 ms one way.
    bed.peer_latency = Duration::from_millis(300);
    let now = bed.now;
    let wall = bed.unix_start;
    bed.site("alice").client.connect(now, wall);
    bed.run_for(Duration::from_millis(50));
    assert!(bed.site("alice").client.session().is_some());
    assert_eq!(bed.proxy(1).session_count(), 0, "not replicated yet");
    // alice's route flips before her session reaches proxy 2.
    bed.set_route("alice", Some(1));
    let now = bed.now;
    bed.site("alice")
        .client
        .register(now, anytun::testbed::name("alice"), 300);
    bed.run_for(Duration::from_millis(20));
    // Proxy 2 forwarded it to alice's home, which answered straight away.
    assert_eq!(bed.proxy(1).psp_stats().forwarded_to_home, 1);
    bed.run_for(Duration::from_millis(320));
    assert_eq!(bed.proxy(0).psp_stats().forwarded_in, 1);
    // Registered by the home, not lost. alice's ack reached proxy 2, which
    // took her over; the home handed its unacknowledged copy over too, so
    // she may hear it once more from proxy 2 (spec: at-least-once across a
    // take-over; the client's handling of Registered is idempotent).
    let registered = bed.count("alice", |e| matches!(e, Event::Registered { .. }));
    assert!((1..=2).contains(&registered), "{registered}");
    assert_eq!(bed.connected("alice"), 1);
    assert_eq!(bed.proxy(0).registration_count(), 1);
    bed.run_for(Duration::from_secs(2));
    assert_eq!(bed.proxy(1).registration_count(), 1, "replicated");
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn strict_urpf_mode_relays_voice_through_the_serving_proxy() {
    let mut bed = Bed::with_config(2, &["alice", "bob"], 7, |c| c.relay_via_serving = true);
    bed.connect_all();
    bed.register("bob", "bob");
    let call = bed.establish_call("alice", "bob");
    let peer_before = bed.peer_messages;
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert!(bed.missing("alice", "bob", 0..50).is_empty());
    assert!(bed.missing("bob", "alice", 0..50).is_empty());
    // Each frame crossed to the other side's serving proxy, which sealed it:
    // bob hears alice through proxy 2, alice hears bob through proxy 1.
    assert_eq!(bed.peer_messages - peer_before, 100);
    let (p1, p2) = (ProxyId::new(1).unwrap(), ProxyId::new(2).unwrap());
    assert!(bed.site("bob").heard.iter().all(|f| f.via == p2.sender()));
    assert!(bed.site("alice").heard.iter().all(|f| f.via == p1.sender()));
    assert_eq!(bed.nonce_reuses, 0);
}

#[test]
fn garbage_from_a_peer_is_counted_and_changes_nothing() {
    let (mut bed, _call) = Bed::call_across(8);
    let now = bed.now;
    let from = ProxyId::new(1).unwrap();
    let px = bed.proxies[1].as_mut().unwrap();
    let (sessions, calls) = (px.session_count(), px.call_count());
    let sent = px.stats().packets_out;
    let mut out = [0u8; anytun::wire::MAX_DATAGRAM];
    for junk in [
        &[][..],
        &[1][..],
        &[9, 9, 9][..],
        &[2, 4, 1, 2][..],
        &[3; 10][..],
    ] {
        assert!(px.handle_peer_message(now, from, junk, &mut out).is_none());
    }
    assert_eq!(px.psp_stats().peer_malformed, 5);
    assert_eq!((px.session_count(), px.call_count()), (sessions, calls));
    assert_eq!(px.stats().packets_out, sent);
    assert_eq!(px.peer_queue_len(), 0);
}

/// A transport packet with a valid header for session `raw` of `home` (its
/// tag is garbage: only its home could tell).
fn forged(home: ProxyId, raw: u64) -> Vec<u8> {
    let header = anytun::wire::transport::TransportHeader {
        sender: anytun::session::SenderId::CLIENT,
        session: anytun::session::SessionId::new(home, raw),
        counter: raw,
    };
    let mut pkt = vec![0u8; 60];
    let mut h = [0u8; anytun::wire::transport::HEADER_LEN];
    header.write(&mut h);
    pkt[..h.len()].copy_from_slice(&h);
    pkt
}

#[test]
fn forwarding_to_home_is_rate_limited_per_source_and_counted() {
    // Forged transport packets naming another home: the proxy cannot
    // authenticate them (it lacks the keys), so what it forwards must be
    // bounded per source, not only by the peer queue.
    let mut net = Net::new(&["alice"]);
    let home = ProxyId::new(9).unwrap();
    let (now, ip) = (net.now, net.proxy_ip());
    let mut out = [0u8; anytun::wire::MAX_DATAGRAM];
    let mut send = |net: &mut Net, src: &str, raw: u64| {
        let src: std::net::SocketAddr = src.parse().unwrap();
        let mut pkt = forged(home, raw);
        net.proxy
            .handle_datagram(now, src, Some(ip), &mut pkt, &mut out)
    };
    // A proxy alone forwards nothing (9 is no peer of it): counted.
    assert!(send(&mut net, "192.0.2.65:4444", 1).is_none());
    assert_eq!(net.proxy.psp_stats().not_a_peer, 1);
    assert_eq!(net.proxy.peer_queue_len(), 0);
    net.proxy.set_peers([home]);
    for i in 0..1000u64 {
        assert!(send(&mut net, "192.0.2.66:4444", i + 1).is_none());
    }
    let s = net.proxy.psp_stats().clone();
    let limit = u64::from(anytun::proxy::replica::FORWARD_BURST);
    assert_eq!(s.forwarded_to_home, limit, "{s:?}");
    assert_eq!(s.forward_limited, 1000 - limit);
    assert_eq!(net.proxy.peer_queue_len() as u64, limit);
    // Another source still gets through.
    send(&mut net, "192.0.2.67:4444", 5000);
    assert_eq!(net.proxy.psp_stats().forwarded_to_home, limit + 1);
}

#[test]
fn an_old_client_packet_replayed_to_another_proxy_is_refused() {
    let (mut bed, call) = Bed::call_across(10);
    // 600 frames (12 s): the serving proxy's view of alice's counter moves
    // on, and the other proxies' replicas must follow it.
    bed.talk("alice", "bob", call, 0..600, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    let old = bed
        .site("alice")
        .sent
        .iter()
        .rev()
        .nth(500)
        .cloned()
        .unwrap();
    let replay_drops = bed
        .proxy(1)
        .stats()
        .drops
        .get(anytun::wire::DropReason::Replay);
    let attacker: std::net::SocketAddr = "192.0.2.99:6666".parse().unwrap();
    // To proxy 2, which holds alice's session as a replica.
    bed.inject(1, attacker, old);
    bed.run_for(Duration::from_millis(50));
    assert_eq!(
        bed.proxy(1)
            .stats()
            .drops
            .get(anytun::wire::DropReason::Replay),
        replay_drops + 1
    );
    assert_eq!(bed.proxy(1).psp_stats().takeovers, 0);
    let p1 = ProxyId::new(1).unwrap();
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p1)));
    let sid = bed.site("alice").client.session().unwrap();
    for p in 0..3 {
        let s = bed
            .proxy(p)
            .sessions()
            .into_iter()
            .find(|s| s.id == sid)
            .unwrap();
        assert_ne!(s.addr, attacker, "proxy {p} moved alice to the attacker");
    }
}

/// Review R1: the forward-to-home bound was per source address only. Forged
/// transport packets (unauthenticated: the forwarding proxy lacks the keys)
/// from spoofed sources, one each, were all forwarded: the aggregate was
/// unbounded, and they filled the peer-bound queue, which then refused the
/// legitimate peer traffic (control hand-over, relayed media). Now a
/// network-wide bucket bounds the forwards and they have a queue of their
/// own, drained after the authenticated one: a Control message handed over
/// after the flood is queued, and leaves first.
#[test]
fn forged_packets_from_spoofed_sources_do_not_fill_the_peer_queue() {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let home = ProxyId::new(9).unwrap();
    // bob is served by proxy 9 (a replicated record says so): a control
    // message for him is handed over to 9 as a Control peer message.
    let bob = net.session_info("bob").id;
    let record = drain(&mut net)
        .into_iter()
        .find_map(|e| match e {
            ProxyEvent::SessionUp(r) if r.state.id == bob => Some(r),
            _ => None,
        })
        .unwrap();
    let now = net.now;
    let moved = anytun::proxy::SessionRecord {
        serving: home,
        ..record
    };
    net.proxy
        .apply_remote(now, &ProxyEvent::SessionUpdated(moved))
        .unwrap();
    let ip = net.proxy_ip();
    let mut out = [0u8; anytun::wire::MAX_DATAGRAM];
    net.proxy.set_peers([home]);
    for i in 0..5000u32 {
        let src = std::net::SocketAddr::new(
            std::net::Ipv4Addr::from(0xC633_0000 + i).into(), // 198.51.x.y
            4444,
        );
        let mut pkt = forged(home, u64::from(i) + 1);
        net.proxy
            .handle_datagram(now, src, Some(ip), &mut pkt, &mut out);
    }
    let s = net.proxy.psp_stats().clone();
    assert!(
        s.peer_queue_full == 0
            && s.forwarded_to_home <= 4 * u64::from(anytun::proxy::replica::FORWARD_BURST),
        "5000 forged packets from 5000 spoofed sources: {} forwarded, queue {} (full drops {})",
        s.forwarded_to_home,
        net.proxy.peer_queue_len(),
        s.peer_queue_full
    );
    assert_eq!(
        s.forwarded_to_home,
        u64::from(anytun::proxy::replica::FORWARD_TOTAL_BURST)
    );
    assert_eq!(s.forward_limited, 5000 - s.forwarded_to_home);
    // alice calls bob: the Invite is handed to proxy 9, queued, and leaves
    // before every forged forward.
    let call = net
        .node("alice")
        .client
        .call(now, anytun::sim::name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    let _ = call;
    let mut buf = [0u8; anytun::wire::MAX_DATAGRAM];
    let n = net.node("alice").client.poll_transmit(&mut buf).unwrap();
    let src = net.node("alice").addr;
    net.proxy
        .handle_datagram(now, src, Some(ip), &mut buf[..n], &mut out);
    let s = net.proxy.psp_stats().clone();
    assert_eq!((s.control_to_peer, s.peer_queue_full), (1, 0), "{s:?}");
    let (to, first) = net.proxy.poll_peer_transmit().unwrap();
    assert_eq!(to, home);
    assert!(
        matches!(
            anytun::proxy::PeerMessage::parse(&first),
            Some(anytun::proxy::PeerMessage::Control { to, .. }) if to == bob
        ),
        "the hand-over leaves first"
    );
}

/// Review: a client packet replayed to a proxy that does not serve the
/// client, within the replay bound of the replica (its counter at or above
/// the last floor the serving proxy reported, i.e. among the client's last
/// FLOOR_STEP packets), was the newest that proxy saw: it took the session
/// over and moved its address to the attacker's source. Now such a packet
/// moves nothing unless the serving proxy confirms that it never saw that
/// counter (spec 15.9).
#[test]
fn a_recent_client_packet_replayed_to_another_proxy_moves_nothing() {
    let (mut bed, call) = Bed::call_across(11);
    bed.talk("alice", "bob", call, 0..40, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    let p1 = ProxyId::new(1).unwrap();
    let sid = bed.site("alice").client.session().unwrap();
    // Ten frames old: well within the band above the replicas' floor.
    let recent = bed
        .site("alice")
        .sent
        .iter()
        .rev()
        .nth(10)
        .cloned()
        .unwrap();
    let attacker: std::net::SocketAddr = "192.0.2.98:6666".parse().unwrap();
    for p in [1, 2] {
        bed.inject(p, attacker, recent.clone());
    }
    bed.run_for(Duration::from_millis(300));
    for p in [1, 2] {
        assert_eq!(
            bed.proxy(p).psp_stats().takeovers,
            0,
            "proxy {p} took alice over on a replay"
        );
    }
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p1)));
    for p in 0..3 {
        let s = bed
            .proxy(p)
            .sessions()
            .into_iter()
            .find(|s| s.id == sid)
            .unwrap();
        assert_ne!(s.addr, attacker, "proxy {p} moved alice to the attacker");
    }
    // The serving proxy refused to confirm both.
    assert_eq!(bed.proxy(0).psp_stats().probes_refused, 2);
    // The call goes on; a later honest move of alice's route, with a new
    // NAT binding too, still takes her over at her new address (the
    // serving proxy confirms her new packets).
    let moved: std::net::SocketAddr = "198.51.100.77:41000".parse().unwrap();
    bed.set_route("alice", Some(1));
    bed.site("alice").addr = moved;
    bed.talk("alice", "bob", call, 40..60, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert_eq!(bed.missing("alice", "bob", 0..60), Vec::<u32>::new());
    // Frames to alice sent to her old binding before the take-over was
    // confirmed (one peer round trip) are lost with it.
    let lost = bed.missing("bob", "alice", 40..60);
    println!("bob->alice frames lost to a route and address move: {lost:?}");
    assert!(lost.len() <= 2, "{lost:?}");
    let p2 = ProxyId::new(2).unwrap();
    assert_eq!(bed.proxy(1).psp_stats().takeovers, 1);
    assert_eq!(bed.proxy(0).psp_stats().probes_confirmed, 1);
    assert!(bed.serving_views("alice").values().all(|v| *v == Some(p2)));
    for p in 0..3 {
        let s = bed.proxy(p).sessions().into_iter().find(|s| s.id == sid);
        assert_eq!(s.unwrap().addr, moved, "proxy {p}");
    }
    assert_eq!(bed.nonce_reuses, 0);
}

/// Review (spec 15.13): a call's replication lost on the way to the
/// callee's proxy (its start and ringing pushed while sync messages to it
/// were lost). The callee rings (its Invite came as a peer message), but its
/// Ringing and Answer reach a proxy that does not hold the call: they were
/// dropped as `unknown_call`, and the caller never heard them. Now that proxy
/// forwards them to the call's owner (the proxy that handed it the Invite),
/// which handles them as if from the callee.
#[test]
fn a_callees_answer_reaching_a_proxy_without_the_call_is_handled_by_its_owner() {
    let mut bed = Bed::new(3, &["alice", "bob"], 12);
    bed.connect_all();
    bed.register("bob", "bob");
    // From now on proxy 2 (bob's) receives no replication.
    bed.sync_lost_to.insert(1);
    let now = bed.now;
    let call = bed
        .site("alice")
        .client
        .call(now, anytun::testbed::name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("bob", |e| matches!(e, Event::IncomingCall { .. })),
        1
    );
    assert_eq!(bed.proxy(1).call_count(), 0, "the call did not replicate");
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Ringing { .. })),
        1,
        "bob's Ringing reached alice"
    );
    // Replication flows again, but what was lost is not repaired before
    // the next anti-entropy round: bob answers on a proxy without the call.
    bed.sync_lost_to.clear();
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    bed.run_for(Duration::from_millis(200));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Answered { .. })),
        1,
        "bob's Answer reached alice"
    );
    assert!(bed.proxy(1).psp_stats().requests_to_owner >= 2);
    assert!(bed.proxy(0).psp_stats().requests_from_peer >= 2);
    // The answer replicated to bob's proxy: voice both ways.
    bed.talk("alice", "bob", call, 0..50, |_, _| {});
    bed.run_for(Duration::from_millis(100));
    assert!(bed.missing("alice", "bob", 0..50).is_empty());
    assert!(bed.missing("bob", "alice", 0..50).is_empty());
    // bob's digit and hangup, on a proxy that now holds the call.
    let now = bed.now;
    bed.site("bob")
        .client
        .send_dtmf(now, call, '4', 100)
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    let now = bed.now;
    bed.site("bob")
        .client
        .hangup(now, call, Cause::Normal)
        .unwrap();
    bed.run_for(Duration::from_millis(300));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Dtmf { digit: '4', .. })),
        1
    );
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::CallEnded { .. })),
        1
    );
    for p in 0..3 {
        assert_eq!(bed.proxy(p).call_count(), 0, "proxy {p} holds the call");
    }
    assert_eq!(bed.connected("alice") + bed.connected("bob"), 2);
    assert_eq!(bed.nonce_reuses, 0);
}

/// The callee talks the moment it answers: its proxy relays the voice
/// straight to the caller (10 ms) while the Answer crosses the peer link to
/// the caller's proxy (20 ms). The caller holds the frames that overtake
/// the Answer and plays them once it is through: none is lost.
#[test]
fn voice_that_overtakes_the_answer_across_proxies_is_heard() {
    let mut bed = Bed::new(3, &["alice", "bob"], 11);
    bed.connect_all();
    bed.register("bob", "bob");
    let now = bed.now;
    let call = bed
        .site("alice")
        .client
        .call(now, anytun::testbed::name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    bed.run_for(Duration::from_millis(200));
    let now = bed.now;
    bed.site("bob").client.answer(now, call, "ulaw").unwrap();
    // The Answer leaves bob before its first frame, as from a real shell.
    bed.run_for(Duration::ZERO);
    // Frames every 5 ms from the answer on: several arrive before it.
    for seq in 0..20 {
        bed.send_voice("bob", call, seq);
        bed.run_for(Duration::from_millis(5));
    }
    bed.run_for(Duration::from_millis(100));
    assert_eq!(
        bed.count("alice", |e| matches!(e, Event::Answered { .. })),
        1
    );
    assert_eq!(bed.missing("bob", "alice", 0..20), Vec::<u32>::new());
    let seqs: Vec<u32> = bed.site("alice").heard.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "played in order, once");
    assert_eq!(
        bed.site("alice")
            .client
            .drops()
            .get(anytun::wire::DropReason::UnknownCall),
        0
    );
}
