//! The cores over real UDP sockets on loopback: the tokio shells, batched
//! I/O, IP_PKTINFO, IPv4 and IPv6, and attacks from real sockets.

use anytun::call::{Cause, Name};
use anytun::client::{Client, ClientConfig, Event};
use anytun::crypto::SecretKey;
use anytun::demo::{self, DemoOptions};
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::runtime::client::ClientRuntime;
use anytun::runtime::proxy::ProxyRuntime;
use anytun::runtime::unix_nanos;
use anytun::session::{CallId, ProxyId};
use anytun::wire::{DropReason, MAX_DATAGRAM};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

struct Lab {
    network: SecretKey,
    keys: Vec<(String, SecretKey)>,
    proxy: ProxyRuntime,
}

async fn lab(listen: &[&str], names: &[&str]) -> Lab {
    let network = SecretKey::generate();
    let keys: Vec<(String, SecretKey)> = names
        .iter()
        .map(|n| (n.to_string(), SecretKey::generate()))
        .collect();
    let subs = Subscribers::new(keys.iter().map(|(n, k)| (name(n), k.public())));
    let cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), network.clone());
    let listen: Vec<SocketAddr> = listen.iter().map(|a| a.parse().unwrap()).collect();
    let core = Proxy::new(cfg, subs, Instant::now());
    core.epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    let proxy = ProxyRuntime::start(core, &listen).await.unwrap();
    Lab {
        network,
        keys,
        proxy,
    }
}

type Heard = Arc<Mutex<Vec<(u32, Vec<u8>)>>>;

impl Lab {
    fn key(&self, n: &str) -> SecretKey {
        self.keys.iter().find(|(k, _)| k == n).unwrap().1.clone()
    }

    fn port(&self) -> u16 {
        self.proxy.local_addrs()[0].port()
    }

    async fn client(
        &self,
        n: &str,
        proxy: SocketAddr,
    ) -> (ClientRuntime, UnboundedReceiver<Event>, Heard) {
        let heard: Heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        let (rt, mut rx) = ClientRuntime::start(
            ClientConfig::new(self.key(n), self.network.public()),
            proxy,
            Box::new(move |f| h.lock().unwrap().push((f.seq, f.payload.to_vec()))),
        )
        .unwrap();
        expect(&mut rx, |e| matches!(e, Event::Connected { .. })).await;
        (rt, rx, heard)
    }
}

async fn expect(rx: &mut UnboundedReceiver<Event>, f: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("event in time")
            .expect("channel open");
        if f(&e) {
            return e;
        }
        assert!(!matches!(e, Event::Disconnected(_)), "unexpected {e:?}");
    }
}

async fn call(
    from: (&ClientRuntime, &mut UnboundedReceiver<Event>),
    to: (&ClientRuntime, &mut UnboundedReceiver<Event>),
    to_name: &str,
) -> (CallId, CallId) {
    to.0.register(name(to_name), 60).await;
    expect(to.1, |e| matches!(e, Event::Registered { .. })).await;
    let c = from
        .0
        .call(name(to_name), None, vec!["slin".into()])
        .await
        .unwrap();
    let incoming = match expect(to.1, |e| matches!(e, Event::IncomingCall { .. })).await {
        Event::IncomingCall { call, .. } => call,
        _ => unreachable!(),
    };
    to.0.answer(incoming, "slin").await.unwrap();
    expect(from.1, |e| matches!(e, Event::Answered { .. })).await;
    (c, incoming)
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn demo_call_over_udp_arrives_intact() {
    let opts = DemoOptions {
        seconds: 1.0,
        codec: anytun::audio::Codec::Slin,
        ..DemoOptions::default()
    };
    let r = demo::run(&opts).await.unwrap();
    assert!(r.ok, "{:?}", r.failures);
    assert_eq!(r.frames_sent, 100);
    assert_eq!(r.frames_received, 100);
    assert_eq!((r.frames_lost, r.frames_corrupted), (0, 0));
    assert_eq!(r.proxy_frames_relayed, 100);
}

/// The anycast property: a proxy bound to the wildcard address answers each
/// client from the exact address that client sent to. The client runtime
/// drops anything from another address, so the handshake itself proves it.
#[tokio::test]
async fn proxy_answers_from_the_address_the_client_used() {
    let lab = lab(&["0.0.0.0:0"], &["alice", "bob"]).await;
    let port = lab.port();
    let a2: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let a3: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    let (alice, mut arx, _) = lab.client("alice", a2).await;
    let (bob, mut brx, bob_heard) = lab.client("bob", a3).await;
    let (c, _) = call((&alice, &mut arx), (&bob, &mut brx), "bob").await;
    alice.send_voice(c, 0, 0, &[1; 320]).await.unwrap();
    settle().await;
    assert_eq!(bob_heard.lock().unwrap().len(), 1);
    assert_eq!(alice.wrong_source() + bob.wrong_source(), 0);
    let local: Vec<_> = lab
        .proxy
        .with_core(|p| p.sessions().into_iter().map(|s| s.local_ip).collect());
    assert!(
        local.contains(&Some(a2.ip())) && local.contains(&Some(a3.ip())),
        "{local:?}"
    );
}

#[tokio::test]
async fn ipv4_and_ipv6_clients_call_each_other() {
    let lab = lab(&["127.0.0.1:0", "[::1]:0"], &["v4", "v6"]).await;
    let addrs = lab.proxy.local_addrs();
    let (v4, mut rx4, heard4) = lab.client("v4", addrs[0]).await;
    let heard6: Heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard6.clone();
    let (v6, mut rx6) = ClientRuntime::start(
        ClientConfig::new(lab.key("v6"), lab.network.public()),
        addrs[1],
        Box::new(move |f| h.lock().unwrap().push((f.seq, f.payload.to_vec()))),
    )
    .unwrap();
    match expect(&mut rx6, |e| matches!(e, Event::Connected { .. })).await {
        Event::Connected { observed, .. } => assert!(observed.is_ipv6(), "{observed}"),
        _ => unreachable!(),
    }
    let (c4, c6) = call((&v4, &mut rx4), (&v6, &mut rx6), "v6").await;
    for seq in 0..10 {
        v4.send_voice(c4, seq, 0, &[seq as u8; 320]).await.unwrap();
        v6.send_voice(c6, seq, 0, &[100 + seq as u8; 320])
            .await
            .unwrap();
    }
    settle().await;
    assert_eq!(heard6.lock().unwrap().len(), 10);
    assert_eq!(heard4.lock().unwrap().len(), 10);
    assert_eq!(heard6.lock().unwrap()[3], (3, vec![3; 320]));
}

/// NAT rebinding: the client's source port changes mid-call; the proxy
/// follows from the next authenticated packet and the call carries on.
#[tokio::test]
async fn nat_rebinding_keeps_the_call() {
    let lab = lab(&["127.0.0.1:0"], &["alice", "bob"]).await;
    let p = lab.proxy.local_addrs()[0];
    let (alice, mut arx, alice_heard) = lab.client("alice", p).await;
    let (bob, mut brx, bob_heard) = lab.client("bob", p).await;
    let (ca, cb) = call((&alice, &mut arx), (&bob, &mut brx), "bob").await;
    for seq in 0..5 {
        alice.send_voice(ca, seq, 0, &[1; 320]).await.unwrap();
    }
    settle().await;
    let before = alice.local_addr().unwrap();
    let after = alice.rebind().await.unwrap();
    assert_ne!(before.port(), after.port());
    for seq in 5..10 {
        alice.send_voice(ca, seq, 0, &[2; 320]).await.unwrap();
    }
    settle().await;
    // Bob heard all of alice's frames, and his reach her new port.
    assert_eq!(bob_heard.lock().unwrap().len(), 10);
    for seq in 0..5 {
        bob.send_voice(cb, seq, 0, &[3; 320]).await.unwrap();
    }
    settle().await;
    assert_eq!(alice_heard.lock().unwrap().len(), 5);
    assert_eq!(lab.proxy.with_core(|p| p.stats().address_changes), 1);
    // DTMF (a reliable control message) also reaches her there.
    bob.send_dtmf(cb, '#', 80).await.unwrap();
    expect(&mut arx, |e| matches!(e, Event::Dtmf { digit: '#', .. })).await;
    bob.hangup(cb, Cause::Normal).await.unwrap();
    expect(&mut arx, |e| matches!(e, Event::CallEnded { .. })).await;
}

/// A client core on a plain blocking socket, so the test sees every
/// datagram it sends and can send copies from other sockets.
struct RawClient {
    core: Client,
    sock: UdpSocket,
    proxy: SocketAddr,
    sent: Vec<Vec<u8>>,
}

impl RawClient {
    fn new(key: SecretKey, network: &SecretKey, proxy: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut core = Client::new(ClientConfig::new(key, network.public()));
        core.connect(Instant::now(), unix_nanos());
        let mut me = Self {
            core,
            sock,
            proxy,
            sent: Vec::new(),
        };
        me.flush();
        me.pump();
        assert!(me.core.session().is_some(), "connected");
        me
    }

    fn flush(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(n) = self.core.poll_transmit(&mut buf) {
            self.sock.send_to(&buf[..n], self.proxy).unwrap();
            self.sent.push(buf[..n].to_vec());
        }
    }

    /// Receives until the socket is quiet, answering as the core wants.
    fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            self.core.handle_datagram(Instant::now(), &mut buf[..n]);
            self.flush();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_truncated_and_spoofed_packets_over_udp() {
    let lab = lab(&["127.0.0.1:0"], &["alice"]).await;
    let p = lab.proxy.local_addrs()[0];
    let key = lab.key("alice");
    let network = lab.network.clone();
    let (real_addr, attacker_addr) = tokio::task::spawn_blocking(move || {
        let mut c = RawClient::new(key, &network, p);
        c.core.register(Instant::now(), name("alice"), 60);
        c.flush();
        c.pump();
        let registered = c.sent.last().unwrap().clone();
        let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Replay of a genuine packet, from another address.
        attacker.send_to(&registered, p).unwrap();
        // The same packet with one flipped byte of ciphertext.
        let mut forged = registered.clone();
        forged[25] ^= 0x80;
        attacker.send_to(&forged, p).unwrap();
        // Truncated below the smallest transport packet.
        attacker.send_to(&registered[..30], p).unwrap();
        // A handshake initiation replayed from elsewhere.
        attacker.send_to(&c.sent[0], p).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        (c.sock.local_addr().unwrap(), attacker.local_addr().unwrap())
    })
    .await
    .unwrap();
    let (addr, drops) = lab
        .proxy
        .with_core(|p| (p.sessions()[0].addr, p.stats().drops.clone()));
    assert_eq!(
        addr, real_addr,
        "binding stayed with the real client, not {attacker_addr}"
    );
    // The forged copy reuses a seen counter, so it is refused as a replay
    // before any decryption: two replays in all.
    assert_eq!(drops.get(DropReason::Replay), 2);
    assert_eq!(drops.get(DropReason::Truncated), 1);
    assert_eq!(drops.get(DropReason::StaleTimestamp), 1);
    assert_eq!(lab.proxy.with_core(|p| p.stats().address_changes), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_fresh_packet_fails_authentication_over_udp() {
    let lab = lab(&["127.0.0.1:0"], &["alice"]).await;
    let p = lab.proxy.local_addrs()[0];
    let key = lab.key("alice");
    let network = lab.network.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::new(key, &network, p);
        // Seal a packet the proxy has not seen, then corrupt it in flight.
        c.core.register(Instant::now(), name("alice"), 60);
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = c.core.poll_transmit(&mut buf).unwrap();
        buf[n - 1] ^= 1;
        c.sock.send_to(&buf[..n], p).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    })
    .await
    .unwrap();
    assert_eq!(
        lab.proxy
            .with_core(|p| p.stats().drops.get(DropReason::BadTag)),
        1
    );
    assert_eq!(lab.proxy.with_core(|p| p.registration_count()), 0);
}
