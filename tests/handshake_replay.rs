//! Replay protection of handshake initiations across proxy restarts, answers
//! to refused and skewed initiations, clock-skew diagnosis and correction,
//! and the end-to-end binding of what the proxy relays. In-memory simulator.

use anytun::client::{ClientConfig, Event};
use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::session::{ProxyId, SessionCrypto};
use anytun::sim::{name, Net};
use anytun::wire::control::ControlMsg;
use anytun::wire::inner::Inner;
use anytun::wire::transport::TransportHeader;
use anytun::wire::{DropReason, MAX_DATAGRAM};
use std::time::Duration;

const HOUR_NS: i128 = 3600 * 1_000_000_000;

/// A proxy like the simulator's, started afresh at the simulator's `now`.
fn restarted_proxy(net: &Net, subs: Subscribers) -> Proxy {
    let cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), net.network.clone());
    let p = Proxy::with_wall_clock(cfg, subs, net.now, net.unix_nanos);
    p.epochs().grant(anytun::session::EpochLease::ephemeral());
    p
}

fn subscribers_of(net: &Net) -> Subscribers {
    Subscribers::new(
        net.nodes
            .iter()
            .map(|n| (name(n.name), n.client.public_key())),
    )
}

fn disconnects(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Disconnected(err) => Some(err.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn captured_init_is_refused_by_a_restarted_proxy() {
    let mut net = Net::new(&["alice"]);
    net.connect_all();
    let init = net.node("alice").sent[0].clone();
    net.advance(Duration::from_secs(5));
    // The proxy restarts: its memory is gone.
    net.proxy = restarted_proxy(&net, subscribers_of(&net));
    let attacker = "192.0.2.66:4444".parse().unwrap();
    net.deliver_to_proxy(attacker, &init);
    assert_eq!(net.proxy.session_count(), 0, "a replay made a session");
    assert_eq!(net.proxy.stats().handshakes_accepted, 0);
    // It was answered once (stale, sealed for alice only); never again.
    assert_eq!(net.proxy.stats().refused_stale, 1);
    let out = net.proxy.stats().packets_out;
    for _ in 0..20 {
        net.deliver_to_proxy(attacker, &init);
    }
    assert_eq!(net.proxy.stats().packets_out, out);
    assert_eq!(net.proxy.stats().drops.get(DropReason::StaleTimestamp), 20);
    // Alice herself reconnects at once.
    let (now, t) = (net.now, net.unix_nanos);
    net.node("alice").client.connect(now, t);
    net.pump();
    assert!(net.node("alice").client.session().is_some());
}

#[test]
fn a_client_slightly_behind_a_restarted_proxy_reconnects_without_a_warning() {
    let mut net = Net::new(&["alice"]);
    net.connect_all();
    net.advance(Duration::from_secs(5));
    // The proxy restarts with its clock 1 s ahead of alice's: her next
    // timestamp is older than the proxy's start (its replay floor).
    let cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), net.network.clone());
    let subs = subscribers_of(&net);
    net.proxy = Proxy::with_wall_clock(cfg, subs, net.now, net.unix_nanos + 1_000_000_000);
    net.proxy
        .epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    let (now, t) = (net.now, net.unix_nanos);
    net.node("alice").client.connect(now, t);
    net.pump();
    assert!(net.node("alice").client.session().is_some());
    assert_eq!(net.proxy.stats().refused_stale, 1);
    assert!(!net
        .node("alice")
        .events
        .iter()
        .any(|e| matches!(e, Event::ClockCorrected(_))));
}

#[test]
fn when_correction_fails_the_error_names_clock_skew() {
    let mut net = Net::new(&["alice"]);
    net.node("alice").clock_offset_ns = -HOUR_NS;
    let (now, t) = (net.now, anytun::sim::skewed(net.unix_nanos, -HOUR_NS));
    net.node("alice").client.connect(now, t);
    // The proxy's one answer (clock skew) gets through; then the path fails.
    let mut buf = [0u8; 2048];
    let init = {
        let n = net.node("alice").client.poll_transmit(&mut buf).unwrap();
        buf[..n].to_vec()
    };
    let src = net.node("alice").addr;
    net.deliver_to_proxy(src, &init);
    net.drop_downstream = true;
    net.advance(Duration::from_secs(12));
    let errs = disconnects(&net.node("alice").events);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("3600 s behind"), "{}", errs[0]);
    assert!(!errs[0].contains("network public key"), "{}", errs[0]);
}

#[test]
fn timestamp_table_stays_bounded_under_a_flood_of_keys() {
    let mut net = Net::new(&["alice"]);
    let mut cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), net.network.clone());
    cfg.replay_max_keys = 64;
    // No cookies: every initiation is read.
    cfg.dos.under_load_handshakes_per_s = u32::MAX;
    let subs = subscribers_of(&net);
    net.proxy = Proxy::with_wall_clock(cfg, subs, net.now, net.unix_nanos);
    net.proxy
        .epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    let macs = anytun::crypto::mac::NetworkMacs::new(&net.network.public());
    // The flood's timestamps are behind the proxy's clock (evictions raise
    // the floor at most to the clock, spec 5.3).
    let start = net.unix_nanos;
    net.advance(Duration::from_millis(1));
    for i in 0..300u32 {
        let mut init = [0u8; anytun::wire::handshake::INIT_LEN];
        let ts = anytun::crypto::tai64n(start + u128::from(i));
        anytun::handshake::Initiator::start(
            &SecretKey::generate(),
            &net.network.public(),
            &macs,
            i,
            ts,
            None,
            &mut init,
        )
        .unwrap();
        let src = format!("192.0.2.{}:{}", i % 250, 1000 + i).parse().unwrap();
        net.deliver_to_proxy(src, &init);
        assert!(net.proxy.replay_table().len() <= 64);
    }
    assert_eq!(net.proxy.stats().refused_unknown_key, 300);
    // What was evicted is still refused: the floor rose to it.
    assert!(net.proxy.replay_table().floor() >= anytun::crypto::tai64n(start + 235));
    // A subscriber still gets in (its clock is ahead of the floor).
    net.advance(Duration::from_millis(10));
    net.connect_all();
    // After two freshness windows every entry has aged out.
    net.advance(Duration::from_secs(241));
    net.connect_all();
    assert_eq!(net.proxy.replay_table().len(), 1);
}

#[test]
fn replayed_refused_init_is_answered_at_most_once() {
    let mut net = Net::new(&["alice"]);
    let stranger = SecretKey::generate();
    let cfg = ClientConfig::new(stranger, net.network.public());
    net.node("alice").client = anytun::client::Client::new(cfg);
    let (now, t) = (net.now, net.unix_nanos);
    net.node("alice").client.connect(now, t);
    net.pump();
    assert_eq!(net.proxy.stats().handshakes_refused, 1);
    let out_before = net.proxy.stats().packets_out;
    let init = net.node("alice").sent[0].clone();
    let src = net.node("alice").addr;
    for _ in 0..50 {
        net.deliver_to_proxy(src, &init);
    }
    assert_eq!(
        net.proxy.stats().packets_out,
        out_before,
        "a replay of a refused initiation was answered"
    );
    assert_eq!(net.proxy.stats().handshakes_refused, 1);
    assert_eq!(net.proxy.stats().drops.get(DropReason::StaleTimestamp), 50);
    assert_eq!(net.proxy.session_count(), 0);
}

/// Connects `who` with its clock `offset_ns` off and returns how long the
/// session took, in simulated time.
fn connect_skewed(net: &mut Net, who: &str, offset_ns: i128) -> Option<Duration> {
    net.node(who).clock_offset_ns = offset_ns;
    let (now, t) = (net.now, anytun::sim::skewed(net.unix_nanos, offset_ns));
    net.node(who).client.connect(now, t);
    net.pump();
    let start = net.now;
    for _ in 0..300 {
        if net.node(who).client.session().is_some() {
            return Some(net.now - start);
        }
        net.advance(Duration::from_millis(10));
    }
    None
}

#[test]
fn client_an_hour_behind_connects_at_once_and_reports_the_skew() {
    let mut net = Net::new(&["alice"]);
    let took = connect_skewed(&mut net, "alice", -HOUR_NS);
    assert!(
        took.is_some_and(|d| d <= Duration::from_secs(2)),
        "not connected within 2 s: {:?}",
        net.node("alice").events
    );
    let warning = net
        .node("alice")
        .events
        .iter()
        .find_map(|e| match e {
            Event::ClockCorrected(skew) => Some(skew.to_string()),
            _ => None,
        })
        .expect("a clock-skew warning");
    assert_eq!(
        warning,
        "the clock of this client is 3600 s behind the proxy's"
    );
    assert_eq!(net.proxy.stats().refused_clock_skew, 1);
    assert!(disconnects(&net.node("alice").events).is_empty());
}

#[test]
fn client_an_hour_ahead_then_corrected_back_is_never_locked_out() {
    let mut net = Net::new(&["alice"]);
    let took = connect_skewed(&mut net, "alice", HOUR_NS);
    assert!(
        took.is_some_and(|d| d <= Duration::from_secs(2)),
        "{:?}",
        net.node("alice").events
    );
    // NTP fixes the client's clock; the device reconnects (say, after a
    // reboot of its router).
    net.advance(Duration::from_secs(30));
    let took = connect_skewed(&mut net, "alice", 0);
    assert!(
        took.is_some_and(|d| d <= Duration::from_secs(2)),
        "locked out: {:?}",
        net.node("alice").events
    );
    assert!(disconnects(&net.node("alice").events).is_empty());
}

/// Places a call from alice (as "alice", offering ulaw and alaw) to bob
/// through a proxy that applies `change` to the Invite it relays to bob;
/// bob answers with the first codec he was offered.
fn call_through_a_proxy_that_changes_the_invite(change: impl Fn(&mut ControlMsg)) -> Net {
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let now = net.now;
    let offer = vec!["ulaw".to_string(), "alaw".to_string()];
    let call = net
        .node("alice")
        .client
        .call(now, name("bob"), Some(name("alice")), offer)
        .unwrap();
    let mut buf = [0u8; MAX_DATAGRAM];
    let src = net.node("alice").addr;
    while let Some(n) = net.node("alice").client.poll_transmit(&mut buf) {
        let pkt = buf[..n].to_vec();
        net.deliver_to_proxy(src, &pkt);
    }
    // The proxy's Invite to bob, opened and sealed again with bob's session
    // keys as a hostile proxy would.
    let bob_sid = net.node("bob").client.session().unwrap();
    let keys = net.proxy.export_session(bob_sid).unwrap();
    let mut forged = Vec::new();
    while let Some(t) = net.proxy.poll_transmit(&mut buf) {
        assert_eq!(t.dst, net.node("bob").addr);
        let mut pkt = buf[..t.len].to_vec();
        let header = TransportHeader::parse(&pkt).unwrap();
        let mut rx = SessionCrypto::client(bob_sid, keys.client_to_proxy, keys.proxy_to_client);
        let opened = rx.open(&header, &mut pkt).unwrap();
        let Ok(Inner::Control { msg_id, body }) = Inner::parse(opened.plaintext) else {
            panic!("a control message");
        };
        let mut msg = ControlMsg::parse(body).unwrap();
        change(&mut msg);
        let mut body = vec![0u8; MAX_DATAGRAM];
        let n = msg.encode(&mut body).unwrap();
        body.truncate(n);
        let mut tx = SessionCrypto::proxy(
            bob_sid,
            anytun::session::Epochs::ephemeral(ProxyId::new(9).unwrap())
                .take()
                .unwrap(),
            keys.client_to_proxy,
            keys.proxy_to_client,
        );
        let inner = Inner::Control {
            msg_id,
            body: &body,
        };
        let n = tx.seal(&mut buf, |b| inner.encode(b)).unwrap();
        forged.push(buf[..n].to_vec());
    }
    assert_eq!(forged.len(), 1, "one Invite to bob");
    net.node("bob").client.handle_datagram(now, &mut forged[0]);
    net.pump();
    let codec = net
        .node("bob")
        .events
        .iter()
        .find_map(|e| match e {
            Event::IncomingCall { codecs, .. } => Some(codecs[0].clone()),
            _ => None,
        })
        .expect("bob is rung");
    net.node("bob").client.answer(now, call, &codec).unwrap();
    net.pump();
    net
}

fn e2e_failure(net: &mut Net) -> Option<String> {
    net.node("alice").events.iter().find_map(|e| match e {
        Event::EndToEndFailed { error, .. } => Some(error.to_string()),
        _ => None,
    })
}

fn answered(net: &mut Net) -> bool {
    net.node("alice")
        .events
        .iter()
        .any(|e| matches!(e, Event::Answered { .. }))
}

#[test]
fn an_unchanged_invite_is_answered() {
    let mut net = call_through_a_proxy_that_changes_the_invite(|_| {});
    assert!(answered(&mut net), "{:?}", net.node("alice").events);
    assert_eq!(e2e_failure(&mut net), None);
}

#[test]
fn a_proxy_that_changes_names_or_codecs_is_detected() {
    type Change = Box<dyn Fn(&mut ControlMsg)>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "name dialled",
            Box::new(|m| {
                if let ControlMsg::Invite { to, .. } = m {
                    *to = name("bobby");
                }
            }),
        ),
        (
            "codec removed",
            Box::new(|m| {
                if let ControlMsg::Invite { codecs, .. } = m {
                    codecs.remove(0);
                }
            }),
        ),
        (
            "codecs reordered",
            Box::new(|m| {
                if let ControlMsg::Invite { codecs, .. } = m {
                    codecs.reverse();
                }
            }),
        ),
        (
            "caller name",
            Box::new(|m| {
                if let ControlMsg::Invite { from, .. } = m {
                    *from = Some(name("bank"));
                }
            }),
        ),
    ];
    for (what, change) in changes {
        let mut net = call_through_a_proxy_that_changes_the_invite(change);
        assert!(!answered(&mut net), "{what}: undetected");
        let err = e2e_failure(&mut net).unwrap_or_default();
        assert!(err.contains("end-to-end check failed"), "{what}: {err}");
        // Both ends learn the call is over.
        for who in ["alice", "bob"] {
            assert!(
                net.node(who)
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::CallEnded { .. })),
                "{what}: {who} still in the call"
            );
        }
    }
}

#[test]
fn a_proxy_whose_clock_is_stepped_back_after_start_locks_nobody_out() {
    let mut net = Net::new(&["alice", "bob"]);
    let subs = subscribers_of(&net);
    let cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), net.network.clone());
    // Booted with its clock an hour ahead: alice corrects to it.
    let wrong = anytun::sim::skewed(net.unix_nanos, HOUR_NS);
    net.proxy = Proxy::with_wall_clock(cfg, subs, net.now, wrong);
    net.proxy
        .epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    assert!(connect_skewed(&mut net, "alice", 0).is_some());
    assert_eq!(net.proxy.stats().refused_clock_skew, 1);
    // NTP fixes the proxy's clock.
    net.advance(Duration::from_secs(1));
    let (now, t) = (net.now, net.unix_nanos);
    net.proxy.set_wall_clock(now, t);
    // Both connect at once, and bob (right clock) needs no correction.
    for who in ["alice", "bob"] {
        let took = connect_skewed(&mut net, who, 0);
        assert_eq!(
            took,
            Some(Duration::ZERO),
            "{who}: {:?}",
            net.node(who).events
        );
    }
    assert_eq!(net.proxy.stats().refused_clock_skew, 1);
    assert_eq!(net.proxy.stats().refused_stale, 0);
}
