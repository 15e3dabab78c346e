//! One hostile subscriber floods the proxy with control messages and never
//! acknowledges anything: what it can make the proxy hold stays bounded, and
//! the other clients are still served. In the simulator (no sockets); the
//! same over real UDP, with figures, is `benches/flood.rs`.

use anytun::call::reliable::{MAX_PENDING, MAX_TRANSMISSIONS};
use anytun::client::Event;
use anytun::crypto::mac::NetworkMacs;
use anytun::crypto::{tai64n, SecretKey};
use anytun::handshake::Initiator;
use anytun::proxy::Subscribers;
use anytun::session::{CallId, SessionCrypto, SessionId};
use anytun::sim::{name, Net};
use anytun::wire::control::ControlMsg;
use anytun::wire::handshake::{HandshakeResponse, HandshakeStatus, INIT_LEN};
use anytun::wire::inner::Inner;
use anytun::wire::{DropReason, MAX_DATAGRAM};
use std::net::SocketAddr;
use std::time::Duration;

/// A client spoken by hand, straight into the proxy core: it does what a
/// well-behaved client never does (acknowledge nothing).
struct Hostile {
    addr: SocketAddr,
    crypto: SessionCrypto,
    next_msg: u32,
}

impl Hostile {
    fn connect(net: &mut Net, key: &SecretKey, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let network = net.network.public();
        let mut pkt = [0u8; INIT_LEN];
        let init = Initiator::start(
            key,
            &network,
            &NetworkMacs::new(&network),
            7,
            tai64n(net.unix_nanos),
            None,
            &mut pkt,
        )
        .unwrap();
        let mut out = [0u8; MAX_DATAGRAM];
        let ip = net.proxy_ip();
        let t = net
            .proxy
            .handle_datagram(net.now, addr, Some(ip), &mut pkt, &mut out)
            .expect("a handshake response");
        let resp = HandshakeResponse::parse(&out[..t.len]).unwrap();
        let (payload, keys) = init.finish(&resp).unwrap();
        assert_eq!(payload.status, HandshakeStatus::Accepted);
        let id = SessionId::from_raw(payload.session_id).unwrap();
        Self {
            addr,
            crypto: SessionCrypto::client(id, keys.client_to_proxy, keys.proxy_to_client),
            next_msg: 1,
        }
    }

    fn sid(&self) -> SessionId {
        self.crypto.id()
    }

    /// Sends one control message (new id) and ignores whatever comes back.
    fn send(&mut self, net: &mut Net, msg: &ControlMsg) {
        let id = self.next_msg;
        self.next_msg += 1;
        self.send_with_id(net, id, msg);
    }

    /// Sends (or retransmits) control message `msg_id`.
    fn send_with_id(&mut self, net: &mut Net, msg_id: u32, msg: &ControlMsg) {
        let mut body = [0u8; MAX_DATAGRAM];
        let n = msg.encode(&mut body).unwrap();
        self.deliver(
            net,
            Inner::Control {
                msg_id,
                body: &body[..n],
            },
        );
    }

    fn deliver(&mut self, net: &mut Net, inner: Inner<'_>) {
        let mut pkt = [0u8; MAX_DATAGRAM];
        let len = self.crypto.seal(&mut pkt, |b| inner.encode(b)).unwrap();
        // deliver_to_proxy hands the answers to the simulated clients; none
        // of them is at this address, so the hostile client hears nothing.
        net.deliver_to_proxy(self.addr, &pkt[..len]);
        net.pump();
    }
}

fn invite(i: u64, to: &str) -> ControlMsg {
    ControlMsg::Invite {
        call: CallId(0xf100_0000 + i),
        to: name(to),
        from: None,
        peer_key: [0; 32],
        codecs: vec!["ulaw".into()],
        e2e: vec![0x5a; 64],
    }
}

/// A net with well-behaved `alice` and `bob` (registered) and hostile
/// clients authorised for `names`.
fn net_with_hostiles(names: &[&str]) -> (Net, Vec<SecretKey>) {
    let mut net = Net::new(&["alice", "bob"]);
    let keys: Vec<SecretKey> = names.iter().map(|_| SecretKey::generate()).collect();
    let mut subs = vec![
        (name("alice"), net.node("alice").client.public_key()),
        (name("bob"), net.node("bob").client.public_key()),
    ];
    subs.extend(names.iter().zip(&keys).map(|(n, k)| (name(n), k.public())));
    let now = net.now;
    net.proxy.set_subscribers(now, Subscribers::new(subs));
    net.connect_all();
    net.register("bob", "bob");
    (net, keys)
}

fn assert_bounded(net: &Net, hostile: SessionId) {
    assert!(
        net.proxy.timer_entries() <= net.proxy.session_count(),
        "{} timer entries for {} sessions",
        net.proxy.timer_entries(),
        net.proxy.session_count()
    );
    assert!(
        net.proxy.control_pending(hostile) <= MAX_PENDING,
        "{} control messages pending to one session",
        net.proxy.control_pending(hostile)
    );
}

/// alice calls bob and the call is answered at once: control still flows
/// for everyone else.
fn others_still_served(net: &mut Net) {
    let call = net.establish_call("alice", "bob");
    assert!(net
        .node("alice")
        .events
        .iter()
        .any(|e| matches!(e, Event::Answered { call: c, .. } if *c == call)));
}

#[test]
fn invites_to_nobody_never_acked_stay_bounded() {
    let (mut net, keys) = net_with_hostiles(&["mallory"]);
    let mut m = Hostile::connect(&mut net, &keys[0], "203.0.113.66:6666");
    for i in 0..2_000 {
        m.send(&mut net, &invite(i, "nobody"));
        assert_bounded(&net, m.sid());
    }
    // The proxy refused to act on most of them, and said so in its counters.
    let backlog = net.proxy.stats().drops.get(DropReason::ControlBacklog);
    assert!(backlog >= 2_000 - MAX_PENDING as u64, "{backlog} counted");
    others_still_served(&mut net);
    // Retransmissions run, give up, and nothing grows meanwhile.
    for _ in 0..40 {
        net.advance(Duration::from_millis(500));
        assert_bounded(&net, m.sid());
    }
    assert_eq!(net.proxy.control_pending(m.sid()), 0);
    let retransmits = net.proxy.stats().control_retransmits;
    assert!(
        retransmits <= (MAX_PENDING as u64 + 8) * u64::from(MAX_TRANSMISSIONS),
        "{retransmits} retransmissions"
    );
}

#[test]
fn invites_to_a_callee_that_never_acks_stay_bounded() {
    let (mut net, keys) = net_with_hostiles(&["mallory", "sink"]);
    let mut m = Hostile::connect(&mut net, &keys[0], "203.0.113.66:6666");
    let mut sink = Hostile::connect(&mut net, &keys[1], "203.0.113.67:6667");
    sink.send(
        &mut net,
        &ControlMsg::Register {
            expires_s: 600,
            name: name("sink"),
        },
    );
    assert_eq!(net.proxy.registration_count(), 2);
    for i in 0..2_000 {
        m.send(&mut net, &invite(i, "sink"));
        assert_bounded(&net, m.sid());
        assert_bounded(&net, sink.sid());
    }
    // The calls it can hold are bounded (per-session call limit), and the
    // Invites beyond what its queue allows were refused for backlog.
    assert!(
        net.proxy.call_count() <= MAX_PENDING,
        "{} calls",
        net.proxy.call_count()
    );
    let backlog = net.proxy.stats().drops.get(DropReason::ControlBacklog);
    assert!(
        backlog >= 2_000 - 2 * MAX_PENDING as u64,
        "{backlog} counted"
    );
    others_still_served(&mut net);
    for _ in 0..40 {
        net.advance(Duration::from_millis(500));
        assert_bounded(&net, m.sid());
        assert_bounded(&net, sink.sid());
    }
}

#[test]
fn acked_control_keeps_flowing_past_the_bound() {
    // A well-behaved client that acknowledges is never refused, however
    // many messages it sends over time.
    let (mut net, _) = net_with_hostiles(&[]);
    for _ in 0..(MAX_PENDING * 3) {
        net.register("bob", "bob");
    }
    let registered = net
        .node("bob")
        .events
        .iter()
        .filter(|e| matches!(e, Event::Registered { .. }))
        .count();
    assert_eq!(registered, MAX_PENDING * 3 + 1);
    assert_eq!(net.proxy.stats().drops.get(DropReason::ControlBacklog), 0);
}

#[test]
fn due_retransmissions_are_served_in_bounded_rounds() {
    let names: Vec<String> = (0..70).map(|i| format!("h{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut net, keys) = net_with_hostiles(&refs);
    let mut hs = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let mut h = Hostile::connect(&mut net, k, &format!("203.0.113.{}:7000", i + 1));
        // One Registered to each, never acknowledged.
        h.send(
            &mut net,
            &ControlMsg::Register {
                expires_s: 60,
                name: name(&names[i]),
            },
        );
        hs.push(h);
    }
    assert_eq!(net.proxy.timer_entries(), 70);
    let due = net.now + Duration::from_millis(300);
    let before = net.proxy.stats().control_retransmits;
    assert!(net.proxy.handle_timeout_limited(due, 64), "more is due");
    assert_eq!(net.proxy.stats().control_retransmits - before, 64);
    assert!(!net.proxy.handle_timeout_limited(due, 64));
    assert_eq!(net.proxy.stats().control_retransmits - before, 70);
    assert_eq!(net.proxy.timer_entries(), 70, "each re-armed once");
}

#[test]
fn refused_for_backlog_is_served_when_retransmitted_after_acks() {
    let (mut net, keys) = net_with_hostiles(&["slow"]);
    let mut c = Hostile::connect(&mut net, &keys[0], "203.0.113.9:9000");
    let register = |n: &str| ControlMsg::Register {
        expires_s: 60,
        name: name(n),
    };
    // MAX_PENDING Registered replies, none acknowledged yet.
    for _ in 0..MAX_PENDING {
        c.send(&mut net, &register("slow"));
    }
    assert_eq!(net.proxy.control_pending(c.sid()), MAX_PENDING);
    let registrations = net.proxy.stats().registrations;
    // The next one is refused, not acknowledged, not acted on.
    let late = c.next_msg;
    c.send(&mut net, &register("slow"));
    assert_eq!(net.proxy.stats().drops.get(DropReason::ControlBacklog), 1);
    assert_eq!(net.proxy.stats().registrations, registrations);
    // Once the client acknowledges one reply, its retransmission is served.
    c.deliver(&mut net, Inner::Ack { msg_id: 1 });
    c.send_with_id(&mut net, late, &register("slow"));
    assert_eq!(net.proxy.stats().registrations, registrations + 1);
    assert_eq!(net.proxy.stats().drops.get(DropReason::ControlBacklog), 1);
    // A repeat of a message already acted on is acknowledged (not refused)
    // even while the queue is full again.
    c.send_with_id(&mut net, late, &register("slow"));
    assert_eq!(net.proxy.stats().drops.get(DropReason::ControlBacklog), 1);
    assert_eq!(net.proxy.stats().registrations, registrations + 1);
}
