//! No (key, nonce) pair is ever used twice, on every path that creates,
//! replaces or restores a proxy's send state for a session: handshake,
//! import, re-import, import after a restart, copies from several peers,
//! hand-off and return, and the wrap of the per-epoch sequence number.
//!
//! Every packet any proxy sends is parsed and its (session, sender, counter)
//! recorded: a repeat under one session's keys is a nonce reuse.

use anytun::client::Client;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::session::epoch::LeaseFile;
use anytun::session::{EpochLease, ProxyId, SessionId, SessionState, EPOCH_SPAN};
use anytun::sim::{name, Net};
use anytun::wire::transport::TransportHeader;
use anytun::wire::{DropReason, MAX_DATAGRAM};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

/// Every (session, sender id, counter) seen on the wire from proxies.
#[derive(Default)]
struct Seen(HashSet<(u64, u16, u64)>);

impl Seen {
    fn record(&mut self, pkt: &[u8]) -> TransportHeader {
        let h = TransportHeader::parse(pkt).expect("a transport packet");
        assert!(
            self.0.insert((h.session.raw(), h.sender.0, h.counter)),
            "nonce reused: sender {} counter {:#x} on session {}",
            h.sender.0,
            h.counter,
            h.session
        );
        h
    }
}

/// A proxy with id `id` that knows the sim's clients, and no epoch lease.
fn bare_proxy(net: &Net, id: u16, now: Instant) -> Proxy {
    let subs = Subscribers::new(
        net.nodes
            .iter()
            .map(|n| (name(n.name), n.client.public_key())),
    );
    let cfg = ProxyConfig::new(ProxyId::new(id).unwrap(), net.network.clone());
    let wall = net.unix_nanos + now.saturating_duration_since(net.now).as_nanos();
    Proxy::with_wall_clock(cfg, subs, now, wall)
}

/// A proxy whose epoch lease lives in the lease file at `path`, started as
/// `anytund` starts one: first lease from the file and the clock (here a
/// clock that stands still, the worst case).
fn durable_proxy(net: &Net, id: u16, now: Instant, path: &std::path::Path) -> Proxy {
    let p = bare_proxy(net, id, now);
    let lease = LeaseFile::open(path).unwrap().first_lease(1_000).unwrap();
    p.epochs().grant(lease);
    p
}

/// The client registers through `proxy` (a control message: the proxy
/// answers with an ack and a `Registered`), and the client acks back. Every
/// proxy packet is recorded in `seen` and must be accepted by the client.
/// Returns the number of proxy packets.
fn exchange(
    proxy: &mut Proxy,
    client: &mut Client,
    addr: SocketAddr,
    now: Instant,
    seen: &mut Seen,
) -> usize {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut out = [0u8; MAX_DATAGRAM];
    let before = client.drops().total();
    client.register(now, name("alice"), 300);
    let mut from_proxy = Vec::new();
    while let Some(n) = client.poll_transmit(&mut buf) {
        let mut d = buf[..n].to_vec();
        if let Some(t) = proxy.handle_datagram(now, addr, None, &mut d, &mut out) {
            from_proxy.push(out[..t.len].to_vec());
        }
        while let Some(t) = proxy.poll_transmit(&mut out) {
            from_proxy.push(out[..t.len].to_vec());
        }
    }
    let sent = from_proxy.len();
    for pkt in &mut from_proxy {
        seen.record(pkt);
        client.handle_datagram(now, pkt);
    }
    assert_eq!(
        client.drops().total(),
        before,
        "the client refused a proxy packet: replay {}, bad tag {}",
        client.drops().get(DropReason::Replay),
        client.drops().get(DropReason::BadTag)
    );
    // The client's acks of the `Registered`.
    while let Some(n) = client.poll_transmit(&mut buf) {
        let mut d = buf[..n].to_vec();
        assert!(proxy
            .handle_datagram(now, addr, None, &mut d, &mut out)
            .is_none());
    }
    assert!(sent >= 2, "ack and Registered");
    sent
}

/// alice connected to proxy 1 (the sim's proxy), and her session.
fn connected() -> (Net, SessionId) {
    let mut net = Net::new(&["alice"]);
    net.connect_all();
    let sid = net.node("alice").client.session().unwrap();
    (net, sid)
}

fn import(p: &mut Proxy, now: Instant, state: &SessionState, addr: SocketAddr) {
    p.import_session(now, state, addr)
        .expect("an epoch is free");
}

/// The instance: the same export imported twice at one proxy.
#[test]
fn importing_the_same_export_twice_never_repeats_a_nonce() {
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let state = net.proxy.export_session(sid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut p2 = durable_proxy(&net, 2, now, &dir.path().join("send-epoch"));
    let mut seen = Seen::default();
    let client = &mut net.nodes[0].client;
    import(&mut p2, now, &state, addr);
    exchange(&mut p2, client, addr, now, &mut seen);
    import(&mut p2, now, &state, addr);
    exchange(&mut p2, client, addr, now, &mut seen);
}

/// A proxy that restarts (a new core, its epoch lease restored from what
/// the old one persisted) and imports the same state again.
#[test]
fn reimport_after_restart_never_repeats_a_nonce() {
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let state = net.proxy.export_session(sid).unwrap();
    let mut seen = Seen::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("send-epoch");
    let mut p2 = durable_proxy(&net, 2, now, &path);
    import(&mut p2, now, &state, addr);
    exchange(&mut p2, &mut net.nodes[0].client, addr, now, &mut seen);
    let before = p2.epochs().next();
    // Restart: the old core is gone with everything in memory; only the
    // lease file remains, and the clock has not moved.
    drop(p2);
    let mut p2 = durable_proxy(&net, 2, now, &path);
    assert!(p2.epochs().next() > before, "restarts above the old lease");
    import(&mut p2, now, &state, addr);
    exchange(&mut p2, &mut net.nodes[0].client, addr, now, &mut seen);
}

/// Proxy 3 receives one session from two peers (1 and 2), neither copy
/// naming proxy 3.
#[test]
fn two_copies_from_two_peers_never_repeat_a_nonce() {
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let from_1 = net.proxy.export_session(sid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut p2 = durable_proxy(&net, 2, now, &dir.path().join("2"));
    let mut p3 = durable_proxy(&net, 3, now, &dir.path().join("3"));
    let mut seen = Seen::default();
    let client = &mut net.nodes[0].client;
    import(&mut p2, now, &from_1, addr);
    exchange(&mut p2, client, addr, now, &mut seen);
    let from_2 = p2.export_session(sid).unwrap();
    import(&mut p3, now, &from_1, addr);
    exchange(&mut p3, client, addr, now, &mut seen);
    import(&mut p3, now, &from_2, addr);
    exchange(&mut p3, client, addr, now, &mut seen);
}

/// A session made by a handshake at proxy 1, sent on there, handed to 2,
/// back to 1, and re-imported at 1 from its own (stale) first export.
#[test]
fn handshake_hand_off_and_return_never_repeat_a_nonce() {
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let mut seen = Seen::default();
    let stand_in = bare_proxy(&net, 9, now);
    let mut p1 = std::mem::replace(&mut net.proxy, stand_in);
    let dir = tempfile::tempdir().unwrap();
    let mut p2 = durable_proxy(&net, 2, now, &dir.path().join("send-epoch"));
    let client = &mut net.nodes[0].client;
    exchange(&mut p1, client, addr, now, &mut seen);
    let first = p1.export_session(sid).unwrap();
    exchange(&mut p1, client, addr, now, &mut seen);
    // Re-imported at its home proxy, over the live session.
    let again = p1.export_session(sid).unwrap();
    import(&mut p1, now, &again, addr);
    exchange(&mut p1, client, addr, now, &mut seen);
    // A -> B -> A.
    import(&mut p2, now, &p1.export_session(sid).unwrap(), addr);
    exchange(&mut p2, client, addr, now, &mut seen);
    import(&mut p1, now, &p2.export_session(sid).unwrap(), addr);
    exchange(&mut p1, client, addr, now, &mut seen);
    // And the stale first export, which knows nothing of the sends since.
    import(&mut p1, now, &first, addr);
    exchange(&mut p1, client, addr, now, &mut seen);
}

/// The sim's proxy sends on a session whose `seq` is about to wrap: it moves
/// to a fresh epoch, the client accepts every packet, nothing repeats.
#[test]
fn seq_wrap_moves_to_a_fresh_epoch_and_the_client_follows() {
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let mut seen = Seen::default();
    let stand_in = bare_proxy(&net, 9, now);
    let mut p1 = std::mem::replace(&mut net.proxy, stand_in);
    let client = &mut net.nodes[0].client;
    p1.skip_seq_for_test(sid, u32::MAX - 2);
    let epoch_of =
        |seen: &Seen| -> HashSet<u64> { seen.0.iter().map(|k| k.2 / EPOCH_SPAN).collect() };
    for _ in 0..3 {
        exchange(&mut p1, client, addr, now, &mut seen);
    }
    assert_eq!(seen.0.len(), 6);
    assert_eq!(epoch_of(&seen).len(), 2, "two epochs: {:x?}", seen.0);
}

/// With the lease used up and not renewed, handshakes are answered Busy
/// and imports refused: never a reused epoch.
#[test]
fn exhausted_lease_refuses_sessions_and_imports() {
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let state = net.proxy.export_session(sid).unwrap();
    let mut p2 = bare_proxy(&net, 2, now);
    assert!(
        p2.import_session(now, &state, addr).is_err(),
        "no lease yet"
    );
    assert_eq!(p2.session_count(), 0);
    p2.epochs().grant(EpochLease::durable(100, 101));
    import(&mut p2, now, &state, addr);
    assert!(p2.import_session(now, &state, addr).is_err(), "used up");
    assert_eq!(p2.session_count(), 1, "the session it had is untouched");
    // A handshake at a proxy with no epoch left: refused as Busy.
    let mut fresh = Net::new(&["alice"]);
    let (fnow, t) = (fresh.now, fresh.unix_nanos);
    let empty = bare_proxy(&fresh, 1, fnow);
    fresh.proxy = empty;
    fresh.node("alice").client.connect(fnow, t);
    fresh.pump();
    assert!(fresh.node("alice").client.session().is_none());
    assert_eq!(fresh.proxy.stats().handshakes_refused, 1);
    assert_eq!(fresh.proxy.session_count(), 0);
}

/// `anytund` records its epoch lease in `send-epoch` next to the network key
/// before serving, and a restart leases above what the last run recorded
/// (the real binary, a real file). A corrupt file stops it with a clear
/// error instead of a guess.
#[test]
fn anytund_persists_its_epoch_lease_across_restarts() {
    use std::process::{Command, Stdio};
    use std::time::Duration;
    struct Daemon(std::process::Child);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        d.join("anytund.toml"),
        // State paths are named: the built-in defaults are system paths.
        format!(
            "proxy_id = 5\nlisten = [\"127.0.0.1:{port}\"]\nmetrics_listen = \"\"\n\
             network_key = \"anytun-state/network.key\"\nsubscribers = \"anytun-state/subscribers.db\"\n"
        ),
    )
    .unwrap();
    let path = d.join("anytun-state/send-epoch");
    let read = || -> Option<u32> { std::fs::read_to_string(&path).ok()?.trim().parse().ok() };
    let start = || {
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_anytund"))
                .args(["--config", "anytund.toml"])
                .current_dir(d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    // Waits (bounded) until the file holds an end other than `old`.
    let wait_change = |old: Option<u32>| -> u32 {
        let t = std::time::Instant::now();
        loop {
            match read() {
                Some(v) if Some(v) != old => return v,
                _ => assert!(t.elapsed() < Duration::from_secs(10), "no new lease"),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let daemon = start();
    let first = wait_change(None);
    let unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(u64::from(first) > unix_secs, "starts at the wall clock");
    drop(daemon);
    let daemon = start();
    let second = wait_change(Some(first));
    assert!(second > first, "{second} <= {first}");
    drop(daemon);
    std::fs::write(&path, "garbage\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anytund"))
        .args(["--config", "anytund.toml"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("send-epoch"), "{err}");
}

/// The client's side: its send state is made once per handshake, from that
/// handshake's fresh keys. A duplicated (or replayed) HandshakeResponse does
/// not make it again, so the client's counter never restarts under one key.
#[test]
fn client_send_state_is_made_once_per_handshake() {
    let mut net = Net::new(&["alice"]);
    let (now, t) = (net.now, net.unix_nanos);
    let addr = net.node("alice").addr;
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut out = [0u8; MAX_DATAGRAM];
    let client = &mut net.nodes[0].client;
    client.connect(now, t);
    let n = client.poll_transmit(&mut buf).unwrap();
    let mut init = buf[..n].to_vec();
    let resp = net
        .proxy
        .handle_datagram(now, addr, None, &mut init, &mut out)
        .unwrap();
    let response = out[..resp.len].to_vec();
    let client = &mut net.nodes[0].client;
    let mut counters = HashSet::new();
    for copy in 0..2 {
        client.handle_datagram(now, &mut response.clone());
        client.register(now, name("alice"), 300);
        while let Some(n) = client.poll_transmit(&mut buf) {
            let h = TransportHeader::parse(&buf[..n]).unwrap();
            assert!(
                counters.insert(h.counter),
                "copy {copy}: counter {} again",
                h.counter
            );
        }
    }
    assert_eq!(client.drops().get(DropReason::Unexpected), 1);
    assert_eq!(counters.len(), 2);
}

/// Review R1: a fresh send state (import, re-import, restart) also restarts
/// the proxy's reliable control-message ids at 1, under the same sender id.
/// The client de-duplicates control messages per sender id, so it takes the
/// new ids as repeats: it acknowledges them (the proxy thinks them
/// delivered) and never acts on them. Here: the `Registered` answer after a
/// re-import at the same proxy is silently lost.
#[test]
fn control_messages_after_a_reimport_are_acted_on() {
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let state = net.proxy.export_session(sid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut p2 = durable_proxy(&net, 2, now, &dir.path().join("send-epoch"));
    let mut seen = Seen::default();
    let client = &mut net.nodes[0].client;
    while client.poll_event().is_some() {}
    let registered = |client: &mut Client| {
        std::iter::from_fn(|| client.poll_event())
            .filter(|e| matches!(e, anytun::client::Event::Registered { .. }))
            .count()
    };
    import(&mut p2, now, &state, addr);
    exchange(&mut p2, client, addr, now, &mut seen);
    assert_eq!(registered(client), 1, "the first Registered is acted on");
    import(&mut p2, now, &state, addr);
    exchange(&mut p2, client, addr, now, &mut seen);
    assert_eq!(
        registered(client),
        1,
        "the Registered after the re-import is taken as a repeat and lost"
    );
}

/// Review R1: every accepted handshake takes an epoch from the proxy id's
/// finite, never-reused space (2^32, starting near the Unix time in seconds,
/// so about 2.5e9 are left today). One subscriber that reconnects in a loop
/// (up to 499 handshakes/s stay under the load threshold, so no per-source
/// limit applies) burns it for good in about 58 days: the proxy id can then
/// never send again (every start fails with `Exhausted`). A handshake's
/// keys are fresh, so its session needs no leased epoch (a reserved epoch
/// 0, which no lease ever grants, would do).
#[test]
fn reconnecting_clients_do_not_consume_leased_epochs() {
    let (mut net, _) = connected();
    let before = net.proxy.epochs().next();
    for _ in 0..20 {
        net.advance(std::time::Duration::from_millis(5));
        net.connect_all();
    }
    assert_eq!(
        net.proxy.epochs().next() - before,
        0,
        "leased epochs taken by 20 reconnects of one client"
    );
}

/// Review R1 (anypsp): two proxies that each take a session over from a
/// third at about the same time (the client's packets reach both, an ECMP
/// or route flap). Applied in arrival order, each took the other's
/// `SessionUpdated` as the newer view and believed the OTHER served the
/// client (control messages bounced until `MAX_CONTROL_HOPS`). Through the
/// sync engine each take-over is `Engine::take_over` at the next owner
/// epoch; the two concurrent ones are ordered by version the same way on
/// every node, and the loser, told so (`OwnershipLost` and the winner's
/// record), hands the client over: all agree (spec 16.3).
#[test]
fn concurrent_take_overs_agree_on_who_serves() {
    use anytun::proxy::ProxyEvent;
    use anytun::sync::bridge::{codec::SCOPES, Apply, Replicator};
    use anytun::sync::Config;
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let mk = |net: &Net, id: u16| {
        let p = bare_proxy(net, id, now);
        p.epochs().grant(EpochLease::ephemeral());
        p
    };
    let (mut a, mut b) = (mk(&net, 2), mk(&net, 3));
    let [p1, p2, p3] = [1, 2, 3].map(|i| ProxyId::new(i).unwrap());
    net.proxy.set_peers([p2, p3]);
    a.set_peers([p1, p3]);
    b.set_peers([p1, p2]);
    let wall = 1_800_000_000_000;
    let mut reps: Vec<Replicator> = (1..=3u16)
        .map(|n| {
            let mut r = Replicator::new(Config::new(n, [7; 32]), wall);
            for q in (1..=3u16).filter(|q| *q != n) {
                r.add_peer(q).unwrap();
                r.peer_connected(wall, q);
            }
            r
        })
        .collect();
    // Every message delivered at once (same ms), until the mesh is quiet;
    // what the replicators report goes into proxies 2 and 3.
    fn settle(reps: &mut [Replicator], px: &mut [&mut Proxy], wall: u64, now: Instant) {
        loop {
            let mut moved = false;
            for i in 0..reps.len() {
                while let Some((to, m)) = reps[i].poll_transmit() {
                    moved = true;
                    let _ = reps[usize::from(to) - 1].handle_message(wall, i as u16 + 1, &m);
                }
            }
            for (i, p) in px.iter_mut().enumerate() {
                while let Some(a) = reps[i + 1].poll_apply() {
                    if let Apply::Proxy(ev) = a {
                        let _ = p.apply_remote(now, &ev);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
    while let Some(e) = net.proxy.poll_event() {
        reps[0].on_proxy_event(wall, &e);
    }
    settle(&mut reps, &mut [&mut a, &mut b], wall, now);
    assert_eq!(a.serving_proxy(sid), Some(p1));
    assert_eq!(b.serving_proxy(sid), Some(p1));
    // Two client packets, the first reaches A, the second B.
    let client = &mut net.nodes[0].client;
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut out = [0u8; MAX_DATAGRAM];
    client.register(now, name("alice"), 300);
    let n = client.poll_transmit(&mut buf).unwrap();
    let first = buf[..n].to_vec();
    client.register(now, name("alice"), 301);
    let n = client.poll_transmit(&mut buf).unwrap();
    let second = buf[..n].to_vec();
    a.handle_datagram(now, addr, None, &mut first.clone(), &mut out);
    b.handle_datagram(now, addr, None, &mut second.clone(), &mut out);
    // Each asks proxy 1, which serves the client and saw neither packet:
    // both take-overs are confirmed (spec 15.9).
    for (id, p) in [(p2, &mut a), (p3, &mut b)] {
        while let Some((to, m)) = p.poll_peer_transmit() {
            assert_eq!(to, p1);
            net.proxy.handle_peer_message(now, id, &m, &mut out);
        }
    }
    while let Some((to, m)) = net.proxy.poll_peer_transmit() {
        let p = if to == p2 { &mut a } else { &mut b };
        p.handle_peer_message(now, p1, &m, &mut out);
    }
    assert_eq!(net.proxy.psp_stats().probes_confirmed, 2);
    let mut took = 0;
    for (i, p) in [(1, &mut a), (2, &mut b)] {
        while let Some(e) = p.poll_event() {
            took += usize::from(matches!(&e, ProxyEvent::SessionUpdated(r) if r.state.id == sid));
            reps[i].on_proxy_event(wall, &e);
        }
    }
    assert!(took >= 2, "both took the client over");
    settle(&mut reps, &mut [&mut a, &mut b], wall, now);
    let (va, vb) = (a.serving_proxy(sid), b.serving_proxy(sid));
    assert_eq!(va, vb, "A and B must agree on who serves the client");
    assert!(va == Some(p2) || va == Some(p3), "{va:?}");
    for s in SCOPES {
        let d = reps[0].engine().digest(s);
        assert!(reps.iter().all(|r| r.engine().digest(s) == d), "{s:?}");
    }
}

/// The other side of keying the client's duplicate filter by send epoch: a
/// control message from an OLDER epoch of a proxy than one the client has
/// heard (here reordered across the proxy's `seq` wrap) is neither acted on
/// nor acknowledged (an ack names only the message id, so it would
/// acknowledge the newer send state's message of that id), and counted.
/// The proxy retransmits it in its new epoch, where it is acted on once.
#[test]
fn control_message_from_an_older_epoch_is_retransmitted_not_lost() {
    let (mut net, sid) = connected();
    let now = net.now;
    let addr = net.node("alice").addr;
    let stand_in = bare_proxy(&net, 9, now);
    let mut p1 = std::mem::replace(&mut net.proxy, stand_in);
    let client = &mut net.nodes[0].client;
    while client.poll_event().is_some() {}
    // Two packets left in the current epoch: the proxy's answers to the
    // first Register (ack, `Registered`) take them; its answers to the
    // second go out in the next epoch.
    p1.skip_seq_for_test(sid, u32::MAX - 1);
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut out = [0u8; MAX_DATAGRAM];
    let mut from_proxy = Vec::new();
    for expires in [300, 301] {
        client.register(now, name("alice"), expires);
        while let Some(n) = client.poll_transmit(&mut buf) {
            let mut d = buf[..n].to_vec();
            if let Some(t) = p1.handle_datagram(now, addr, None, &mut d, &mut out) {
                from_proxy.push(out[..t.len].to_vec());
            }
            while let Some(t) = p1.poll_transmit(&mut out) {
                from_proxy.push(out[..t.len].to_vec());
            }
        }
    }
    let epoch = |p: &Vec<u8>| TransportHeader::parse(p).unwrap().counter / EPOCH_SPAN;
    let (old, new): (Vec<_>, Vec<_>) = from_proxy.into_iter().partition(|p| epoch(p) == 0);
    assert_eq!((old.len(), new.len()), (2, 2), "the wrap falls between");
    let registered = |client: &mut Client| {
        std::iter::from_fn(|| client.poll_event())
            .filter(|e| matches!(e, anytun::client::Event::Registered { .. }))
            .count()
    };
    // The new epoch's packets overtake the old one's.
    for mut p in new.into_iter().chain(old) {
        client.handle_datagram(now, &mut p);
    }
    assert_eq!(registered(client), 1, "only the second Registered");
    assert_eq!(client.drops().get(DropReason::StaleControl), 1);
    assert_eq!(client.drops().total(), 1);
    // The client acknowledged only the second; the proxy retransmits the
    // first in its new epoch, and the client acts on it.
    while let Some(n) = client.poll_transmit(&mut buf) {
        p1.handle_datagram(now, addr, None, &mut buf[..n].to_vec(), &mut out);
    }
    p1.handle_timeout(p1.poll_timeout());
    let mut resent = 0;
    while let Some(t) = p1.poll_transmit(&mut out) {
        assert_eq!(epoch(&out[..t.len].to_vec()), 1);
        client.handle_datagram(now, &mut out[..t.len]);
        resent += 1;
    }
    assert_eq!(resent, 1);
    assert_eq!(registered(client), 1, "the first Registered, once");
    assert_eq!(client.drops().total(), 1);
}
