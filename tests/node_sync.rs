//! Two `Node`s linked over loopback (the whole node: links, sync task,
//! bridge, core): what the shell around the Replicator guarantees.

use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::runtime::node::{
    fingerprint_key, Node, NodeOptions, SyncSetup, Udp, APPLY_BATCH, RESYNC_CHUNK,
};
use anytun::runtime::udp::BindOptions;
use anytun::session::{EpochLease, ProxyId, SessionId, SessionState};
use anytun::sync::link::LinkConfig;
use anytun::sync::members::Member;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn member(id: u16, key: &SecretKey, addr: SocketAddr) -> Member {
    Member {
        node: ProxyId::new(id).unwrap(),
        address: addr,
        public_key: key.public(),
        region: String::new(),
        failure_domain: String::new(),
        failover: Vec::new(),
        revoked: false,
    }
}

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Two linked nodes; `lease[i]` is granted to node i's core.
fn pair(leases: [EpochLease; 2]) -> Vec<Node> {
    pair_with(leases, RESYNC_CHUNK)
}

/// As [`pair`], with resyncs listing `resync_chunk` sessions per chunk.
fn pair_with(leases: [EpochLease; 2], resync_chunk: usize) -> Vec<Node> {
    let network = SecretKey::generate();
    let keys = [SecretKey::generate(), SecretKey::generate()];
    let links = [free_tcp(), free_tcp()];
    let mut nodes = Vec::new();
    for (i, lease) in leases.into_iter().enumerate() {
        let id = i as u16 + 1;
        let mut node = Node::new(NodeOptions {
            worker_threads: 1,
            thread_name: format!("pair-{id}"),
            resync_chunk,
            ..NodeOptions::default()
        })
        .unwrap();
        let core = Proxy::new(
            ProxyConfig::new(ProxyId::new(id).unwrap(), network.clone()),
            Subscribers::default(),
            Instant::now(),
        );
        core.epochs().grant(lease);
        let sync = SyncSetup {
            node_key: keys[i].clone(),
            listen: links[i],
            peers: vec![member(2 - i as u16, &keys[1 - i], links[1 - i])],
            fp_key: fingerprint_key(&network),
            startup_timeout: Duration::from_secs(20),
            solo_grace: Duration::from_secs(600),
            peer_detect: Duration::from_millis(300),
            link: LinkConfig::default(),
            apply_batch: APPLY_BATCH,
            subscribers: None,
        };
        let udp = Udp::Deferred {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            opts: BindOptions::default(),
        };
        node.start(core, udp, Some(sync)).unwrap();
        nodes.push(node);
    }
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !n.readiness().borrow().ready() {
            assert!(Instant::now() < deadline, "never ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    nodes
}

fn sessions(n: &Node) -> usize {
    n.with_core(|p| p.session_count()).unwrap()
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn import(node: &Node, n: u64) {
    node.with_core(|p| {
        for i in 0..n {
            let st = SessionState {
                id: SessionId::new(ProxyId::new(1).unwrap(), 0x100 + i),
                client_key: SecretKey::generate().public(),
                client_to_proxy: [1; 32],
                proxy_to_client: [2; 32],
                client_counter_floor: 0,
                proxy_counter_floors: Vec::new(),
            };
            let addr = format!("10.0.0.{}:4000", i % 250 + 1).parse().unwrap();
            p.import_session(Instant::now(), &st, addr).unwrap();
        }
    })
    .unwrap();
}

/// A replica takes no send epoch until first used (spec 15.2: compact
/// replicas): with a lease of 10 epochs, 40 replicas all arrive, none is
/// made to wait for the lease and the lease is untouched. (A record taken
/// back after a restart is still imported at once and may wait for a
/// renewed lease: `apply_waited_for_lease`.)
#[test]
fn replicas_arrive_without_spending_the_epoch_lease() {
    let nodes = pair([EpochLease::ephemeral(), EpochLease::durable(1, 11)]);
    import(&nodes[0], 40);
    wait("the replicas never arrived", || sessions(&nodes[1]) == 40);
    let next = nodes[1].with_core(|p| p.epochs().next()).unwrap();
    assert_eq!(next, 1, "a replica took an epoch on arrival");
    let waited = nodes[1]
        .stats()
        .apply_waited_for_lease
        .load(Ordering::Relaxed);
    assert_eq!(waited, 0);
    for n in nodes {
        assert!(n.stop().joined);
    }
}

/// A peer whose link stays down past `peer_detect` has its clients adopted
/// (`Proxy::peer_down`), once.
#[test]
fn a_peer_down_past_the_detect_time_has_its_clients_adopted() {
    let mut nodes = pair([EpochLease::ephemeral(), EpochLease::ephemeral()]);
    import(&nodes[0], 5);
    wait("replicas never arrived", || sessions(&nodes[1]) == 5);
    let first = nodes.remove(0);
    let stopped = Instant::now();
    assert!(first.stop().joined);
    wait("peer never declared down", || {
        nodes[0].stats().peers_declared_down.load(Ordering::Relaxed) == 1
    });
    let after = stopped.elapsed();
    let adopted = nodes[0].with_core(|p| p.psp_stats().adopted).unwrap();
    println!(
        "peer declared down {} ms after it stopped (peer_detect 300 ms)",
        after.as_millis()
    );
    assert_eq!(adopted, 5, "its 5 clients are served here provisionally");
    assert!(
        after >= Duration::from_millis(300),
        "declared before the detect time"
    );
    assert!(nodes[0].readiness().borrow().failed.is_none());
    for n in nodes {
        assert!(n.stop().joined);
    }
}

/// `n` sessions of node 1 (ids and client keys from `base`), imported
/// under one hold of node 1's core lock. Past `ProxyConfig::max_events`
/// (8192) the core's event queue overflows: a resync follows.
fn import_many(node: &Node, base: u64, n: u64) {
    node.with_core(|p| import_into(p, base, n, 4000)).unwrap();
}

/// Client key of the `i`th session of [`import_many`].
fn many_key(i: u64) -> anytun::crypto::PublicKey {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&i.to_le_bytes());
    key[31] = 0x40;
    anytun::crypto::PublicKey(key)
}

/// Sessions `base..base + n` of [`import_many`] into `p`, their clients at
/// UDP `port` (imported again at another port, a session moves).
fn import_into(p: &mut Proxy, base: u64, n: u64, port: u16) {
    for i in base..base + n {
        let st = SessionState {
            id: SessionId::new(ProxyId::new(1).unwrap(), 0x1_0000 + i),
            client_key: many_key(i),
            client_to_proxy: [1; 32],
            proxy_to_client: [2; 32],
            client_counter_floor: 0,
            proxy_counter_floors: Vec::new(),
        };
        let addr = format!("10.1.{}.{}:{port}", (i / 250) % 250, i % 250 + 1)
            .parse()
            .unwrap();
        p.import_session(Instant::now(), &st, addr).unwrap();
    }
}

/// Subscribers holding the keys of sessions `range` of [`import_many`]
/// (handing the proxy a set without a key ends that key's session).
fn many_subscribers(range: impl Iterator<Item = u64>) -> Subscribers {
    Subscribers::new(range.map(|i| {
        (
            anytun::call::Name::new(&format!("u{i}")).unwrap(),
            many_key(i),
        )
    }))
}

/// Node 1's sessions are all on node 2, and no more, and both engines'
/// tables have equal digests (entry counts and fingerprints per scope).
fn converged(nodes: &[Node]) -> bool {
    let ids: Vec<SessionId> = nodes[0]
        .with_core(|p| {
            p.served_events(Instant::now())
                .into_iter()
                .filter_map(|e| match e {
                    anytun::proxy::ProxyEvent::SessionUp(r) => Some(r.state.id),
                    _ => None,
                })
                .collect()
        })
        .unwrap();
    // Every scope's entry count and fingerprint (published every 500 ms).
    let digests = |n: &Node| {
        n.metrics_board()
            .and_then(|m| m.sync())
            .map(|s| (s.entries, s.fingerprints))
    };
    let (a, b) = (digests(&nodes[0]), digests(&nodes[1]));
    ids.len() == sessions(&nodes[1])
        && nodes[1]
            .with_core(|p| ids.iter().all(|id| p.serving_proxy(*id).is_some()))
            .unwrap()
        && a.as_ref()
            .is_some_and(|(e, f)| !e.is_empty() && !f.is_empty())
        && a == b
}

/// A resync (here after 20 000 sessions, `ANYTUN_RESYNC_SESSIONS`,
/// overflowed the core's event queue)
/// lists what this proxy serves a chunk at a time, each chunk under its
/// own hold of the core lock, so the voice path waits for one chunk, never
/// for the whole table (docs/anypsp-protocol.md 17). Prints the longest
/// hold.
#[test]
fn a_resync_holds_the_core_lock_one_chunk_at_a_time() {
    let n: u64 = std::env::var("ANYTUN_RESYNC_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let nodes = pair([EpochLease::ephemeral(), EpochLease::ephemeral()]);
    import_many(&nodes[0], 0, n);
    let deadline = Instant::now() + Duration::from_secs(120);
    while nodes[0].stats().resyncs_done.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no resync done after the overflow"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !converged(&nodes) {
        assert!(Instant::now() < deadline, "never converged");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = nodes[0].stats();
    let chunks = st.resync_chunks.load(Ordering::Relaxed);
    let passes = st.resyncs_done.load(Ordering::Relaxed);
    let hold_us = st.resync_hold_max_us.load(Ordering::Relaxed);
    println!(
        "resync of {n} sessions: {passes} pass(es), {chunks} chunk(s) of at most {RESYNC_CHUNK}, \
         longest core-lock hold {:.1} ms",
        hold_us as f64 / 1000.0
    );
    assert!(
        // At most 256 sessions per hold (docs/anypsp-protocol.md 17.2).
        RESYNC_CHUNK <= 256 && chunks >= passes * (n / 256),
        "{chunks} chunks for {passes} pass(es) over {n} sessions: not chunked"
    );
    for n in nodes {
        assert!(n.stop().joined);
    }
}

/// Sessions added and replaced on node 1 while its resync runs reach node 2
/// as events: once the pass ends, both tables hold the same sessions.
#[test]
fn a_resync_with_concurrent_changes_converges() {
    const N: u64 = 20_000;
    let nodes = pair([EpochLease::ephemeral(), EpochLease::ephemeral()]);
    import_many(&nodes[0], 0, N);
    let at_start = nodes[0].stats().resync_chunks.load(Ordering::Relaxed);
    // Changes in small holds, interleaved with the resync's chunks: new
    // sessions, and new sessions for the keys of old ones (which replaces
    // them: the old ends).
    for round in 0..100u64 {
        import_many(&nodes[0], N + round * 10, 10);
        nodes[0]
            .with_core(|p| {
                for j in 0..5u64 {
                    let old = round * 50 + j;
                    let mut key = [0u8; 32];
                    key[..8].copy_from_slice(&old.to_le_bytes());
                    key[31] = 0x40;
                    let st = SessionState {
                        id: SessionId::new(ProxyId::new(1).unwrap(), 0x100_0000 + old),
                        client_key: anytun::crypto::PublicKey(key),
                        client_to_proxy: [3; 32],
                        proxy_to_client: [4; 32],
                        client_counter_floor: 0,
                        proxy_counter_floors: Vec::new(),
                    };
                    p.import_session(Instant::now(), &st, "10.9.0.1:4000".parse().unwrap())
                        .unwrap();
                }
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let at_end = nodes[0].stats().resync_chunks.load(Ordering::Relaxed);
    println!("resync chunks listed while the changes were made: {at_start} -> {at_end}");
    let expect = (N + 1000) as usize;
    assert_eq!(sessions(&nodes[0]), expect, "the test's own changes");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !converged(&nodes) {
        assert!(Instant::now() < deadline, "never converged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sessions(&nodes[1]), expect);
    for n in nodes {
        assert!(n.stop().joined);
    }
}

/// Sessions that end while the core's event queue is overflowed lose their
/// `SessionDown`; the resync that follows deletes them from the replicated
/// tables (its sweep, docs/anypsp-protocol.md 17.3) so that the peer drops
/// them too. Before the sweep the resync only wrote: the ten sessions
/// stayed on node 2 for ever (ghosts).
#[test]
fn a_resync_deletes_sessions_that_ended_while_events_were_lost() {
    const N: u64 = 20_000;
    let nodes = pair([EpochLease::ephemeral(), EpochLease::ephemeral()]);
    import_many(&nodes[0], 0, 10);
    wait("the first ten never arrived", || sessions(&nodes[1]) == 10);
    // One hold: the first ten end (their keys are revoked), then N new
    // sessions overflow the core's event queue (8192), which drops its
    // oldest events: the ten ends are lost.
    nodes[0]
        .with_core(|p| {
            p.set_subscribers(Instant::now(), many_subscribers(10..10 + N));
            import_into(p, 10, N, 4000);
            assert!(p.resync_needed(), "the event queue did not overflow");
        })
        .unwrap();
    assert_eq!(sessions(&nodes[0]), N as usize, "the test's own changes");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !converged(&nodes) {
        assert!(
            Instant::now() < deadline,
            "never converged: node 1 serves {}, node 2 holds {} sessions",
            sessions(&nodes[0]),
            sessions(&nodes[1])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sessions(&nodes[1]), N as usize);
    let st = nodes[0].stats();
    println!(
        "resyncs started {}, done {}",
        st.resyncs.load(Ordering::Relaxed),
        st.resyncs_done.load(Ordering::Relaxed)
    );
    assert!(st.resyncs_done.load(Ordering::Relaxed) >= 1);
    for n in nodes {
        assert!(n.stop().joined);
    }
}

/// Changes made while a chunked resync is under way (chunks of 2 sessions,
/// so that the pass spans thousands of turns of the sync task): new
/// sessions, sessions ended (their key revoked) and sessions moved (their
/// client at a new address). Each round checks the pass is still running;
/// once it is done, both nodes hold the same sessions and identical tables.
#[test]
fn changes_during_a_chunked_resync_leave_identical_tables() {
    const N: u64 = 20_000;
    const ROUNDS: u64 = 100;
    let nodes = pair_with([EpochLease::ephemeral(), EpochLease::ephemeral()], 2);
    // Every key the test will use; a round revokes a few.
    let mut allowed: std::collections::BTreeSet<u64> = (0..N + ROUNDS * 5).collect();
    nodes[0]
        .with_core(|p| p.set_subscribers(Instant::now(), many_subscribers(allowed.iter().copied())))
        .unwrap();
    import_many(&nodes[0], 0, N);
    let st = nodes[0].stats();
    let running = || st.resyncs.load(Ordering::Relaxed) > st.resyncs_done.load(Ordering::Relaxed);
    wait("no resync after the overflow", || {
        st.resyncs.load(Ordering::Relaxed) > 0
    });
    let mut overlapped = 0;
    for round in 0..ROUNDS {
        if !running() {
            break;
        }
        let chunks = st.resync_chunks.load(Ordering::Relaxed);
        // Adds 5, moves 5 (imported again at another port), ends 5.
        for i in 0..5 {
            allowed.remove(&(round * 97 + i));
        }
        let subs = many_subscribers(allowed.iter().copied());
        nodes[0]
            .with_core(|p| {
                import_into(p, N + round * 5, 5, 4000);
                import_into(p, round * 97 + 50, 5, 5000 + round as u16);
                p.set_subscribers(Instant::now(), subs);
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        if running() && st.resync_chunks.load(Ordering::Relaxed) > chunks {
            overlapped += 1;
        }
    }
    println!(
        "{overlapped} change rounds overlapped the resync pass ({} chunks listed)",
        st.resync_chunks.load(Ordering::Relaxed)
    );
    assert!(
        overlapped >= 5,
        "only {overlapped} change rounds overlapped the pass: the test does not test overlap"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !converged(&nodes) || running() {
        assert!(
            Instant::now() < deadline,
            "never converged: node 1 serves {}, node 2 holds {} sessions",
            sessions(&nodes[0]),
            sessions(&nodes[1])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sessions(&nodes[0]), sessions(&nodes[1]));
    for n in nodes {
        assert!(n.stop().joined);
    }
}

/// A node serves only once every subscriber pulled from its peers is in
/// its proxy (spec 17.4): a client whose key was added on another proxy is
/// never refused as unknown in the moment after "synced". The test plays
/// the host's store task and holds the replicated subscriber: the node must
/// not serve until the host says the proxy has it.
#[test]
fn a_node_serves_only_once_pulled_subscribers_are_in_its_proxy() {
    let network = SecretKey::generate();
    let keys = [SecretKey::generate(), SecretKey::generate()];
    let links = [free_tcp(), free_tcp()];
    let start = |i: usize, startup: Duration, subs| {
        let id = i as u16 + 1;
        let mut node = Node::new(NodeOptions {
            worker_threads: 1,
            thread_name: format!("subs-{id}"),
            ..NodeOptions::default()
        })
        .unwrap();
        let core = Proxy::new(
            ProxyConfig::new(ProxyId::new(id).unwrap(), network.clone()),
            Subscribers::default(),
            Instant::now(),
        );
        core.epochs().grant(EpochLease::ephemeral());
        let sync = SyncSetup {
            node_key: keys[i].clone(),
            listen: links[i],
            peers: vec![member(2 - i as u16, &keys[1 - i], links[1 - i])],
            fp_key: fingerprint_key(&network),
            startup_timeout: startup,
            solo_grace: Duration::from_secs(600),
            peer_detect: Duration::from_millis(300),
            link: LinkConfig::default(),
            apply_batch: APPLY_BATCH,
            subscribers: subs,
        };
        let udp = Udp::Deferred {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            opts: BindOptions::default(),
        };
        node.start(core, udp, Some(sync)).unwrap();
        node
    };
    // Node 1 serves alone (its peer is not up yet) and holds alice's key.
    let n1 = start(0, Duration::from_millis(200), None);
    wait("node 1 never served", || n1.readiness().borrow().serving);
    let alice = SecretKey::generate().public();
    assert!(n1.local_subscribers().unwrap().changed(
        anytun::call::Name::new("alice").unwrap(),
        alice,
        true
    ));
    // Node 2 joins; the test is its host's store task.
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let n2 = start(1, Duration::from_secs(30), Some(tx));
    let mut got = None;
    wait("node 2 never received alice", || {
        got = rx.try_recv().ok();
        got.is_some()
    });
    let got = got.unwrap();
    assert_eq!(got.key, alice);
    // Synced, but the proxy does not hold alice yet: not serving.
    let held = Instant::now();
    while held.elapsed() < Duration::from_millis(500) {
        assert!(
            !n2.readiness().borrow().serving,
            "node 2 served before its proxy held a subscriber pulled from its peer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    got.done();
    wait(
        "node 2 never served after the subscriber was applied",
        || n2.readiness().borrow().ready(),
    );
    for n in [n1, n2] {
        assert!(n.stop().joined);
    }
}

/// Starts node `id` (1 or 2) of a two-node network whose other member is at
/// `peer` (its key `keys[1 - i]`), with `solo_grace`.
fn start_with_grace(
    network: &SecretKey,
    keys: &[SecretKey; 2],
    links: [SocketAddr; 2],
    i: usize,
    solo_grace: Duration,
) -> Node {
    let id = i as u16 + 1;
    let mut node = Node::new(NodeOptions {
        worker_threads: 1,
        thread_name: format!("solo-{id}"),
        ..NodeOptions::default()
    })
    .unwrap();
    let core = Proxy::new(
        ProxyConfig::new(ProxyId::new(id).unwrap(), network.clone()),
        Subscribers::default(),
        Instant::now(),
    );
    core.epochs().grant(EpochLease::ephemeral());
    let sync = SyncSetup {
        node_key: keys[i].clone(),
        listen: links[i],
        peers: vec![member(2 - i as u16, &keys[1 - i], links[1 - i])],
        fp_key: fingerprint_key(network),
        startup_timeout: Duration::from_millis(200),
        solo_grace,
        peer_detect: Duration::from_millis(300),
        link: LinkConfig::default(),
        apply_batch: APPLY_BATCH,
        subscribers: None,
    };
    let udp = Udp::Deferred {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        opts: BindOptions::default(),
    };
    node.start(core, udp, Some(sync)).unwrap();
    node
}

/// The last proxy standing restarts: no peer will ever answer. Before the
/// solo rule it served after the startup timeout but never counted as
/// synced, so it never became ready (never announced: the whole network
/// stayed dark). Now it is ready alone once no peer was reachable for the
/// solo grace, and says so.
#[test]
fn a_node_with_no_peer_reachable_is_ready_alone_after_the_solo_grace() {
    let network = SecretKey::generate();
    let keys = [SecretKey::generate(), SecretKey::generate()];
    // Node 2's address: nothing listens there.
    let links = [free_tcp(), free_tcp()];
    let grace = Duration::from_millis(500);
    let t0 = Instant::now();
    let n1 = start_with_grace(&network, &keys, links, 0, grace);
    wait("the lone node never became ready", || {
        n1.readiness().borrow().ready()
    });
    let took = t0.elapsed();
    let r = n1.readiness().borrow().clone();
    assert!(r.solo && !r.synced && r.peers_up == 0, "{r:?}");
    assert!(took >= grace, "ready alone before the grace: {took:?}");
    let board = n1.metrics_board().unwrap();
    assert!(board.is_ready());
    assert!(board.sync().is_some_and(|s| s.solo && !s.synced));
    assert!(n1.stop().joined);
}

/// With a peer reachable within the grace, the solo rule does not apply:
/// each node waits for the sync (and becomes ready synced, not alone).
#[test]
fn a_node_with_a_peer_reachable_waits_for_the_sync_not_the_solo_grace() {
    let network = SecretKey::generate();
    let keys = [SecretKey::generate(), SecretKey::generate()];
    let links = [free_tcp(), free_tcp()];
    let grace = Duration::from_millis(1500);
    let n1 = start_with_grace(&network, &keys, links, 0, grace);
    let n2 = start_with_grace(&network, &keys, links, 1, grace);
    for n in [&n1, &n2] {
        wait("never ready", || n.readiness().borrow().ready());
    }
    // Past the grace: still synced, never alone.
    std::thread::sleep(grace);
    for n in [&n1, &n2] {
        let r = n.readiness().borrow().clone();
        assert!(r.synced && !r.solo, "{r:?}");
    }
    for n in [n1, n2] {
        assert!(n.stop().joined);
    }
}
