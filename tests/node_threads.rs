//! A `Node` lives inside another process: stopping it joins every thread
//! it started. The only test of this binary, so that no other test's
//! threads are counted.

use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::runtime::node::{fingerprint_key, Node, NodeOptions, SyncSetup, Udp};
use anytun::runtime::udp::BindOptions;
use anytun::session::{EpochLease, ProxyId};
use anytun::sync::link::LinkConfig;
use anytun::sync::members::Member;
use std::time::{Duration, Instant};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn member(id: u16, key: &SecretKey, addr: std::net::SocketAddr) -> Member {
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

#[test]
fn stop_joins_every_thread_the_nodes_started() {
    let before = threads();
    let network = SecretKey::generate();
    let keys = [SecretKey::generate(), SecretKey::generate()];
    // Reserve two peer ports, then free them for the nodes.
    let ports: Vec<std::net::SocketAddr> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let mut nodes = Vec::new();
    for i in 0..2usize {
        let id = i as u16 + 1;
        let other = 1 - i;
        let mut node = Node::new(NodeOptions {
            worker_threads: 2,
            thread_name: format!("anytun-test-{id}"),
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
            listen: ports[i],
            peers: vec![member(other as u16 + 1, &keys[other], ports[other])],
            fp_key: fingerprint_key(&network),
            startup_timeout: Duration::from_secs(20),
            solo_grace: Duration::from_secs(600),
            peer_detect: Duration::from_secs(1),
            link: LinkConfig::default(),
            apply_batch: anytun::runtime::node::APPLY_BATCH,
            subscribers: None,
        };
        let udp = Udp::Deferred {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            opts: BindOptions::default(),
        };
        node.start(core, udp, Some(sync)).unwrap();
        nodes.push(node);
    }
    let during = threads();
    // Both link up, reconcile and serve: the whole node ran.
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &nodes {
        let mut r = n.readiness();
        while !r.borrow().ready() {
            assert!(Instant::now() < deadline, "never ready: {:?}", *r.borrow());
            std::thread::sleep(Duration::from_millis(20));
            r.mark_changed();
        }
        let r = r.borrow().clone();
        assert_eq!((r.peers, r.peers_up, r.peers_synced), (1, 1, 1), "{r:?}");
        assert_eq!(n.local_addrs().len(), 1);
    }
    println!("threads: {before} before, {during} with two nodes running");
    assert!(
        during >= before + 4,
        "the nodes run on threads of their own"
    );
    for n in nodes {
        let report = n.stop();
        assert!(report.joined, "{report:?}");
        assert!(report.link_tasks >= 2, "{report:?}");
    }
    let after = threads();
    println!("threads: {after} after stop");
    assert_eq!(after, before, "every thread the nodes started is joined");

    // A host task in a blocking call that outlasts the stop timeout (as the
    // epoch lease writer or the subscriber store on a slow or locked disk):
    // the stop waits for it too, and says it took longer than asked.
    let node = Node::new(NodeOptions {
        worker_threads: 1,
        thread_name: "anytun-test-blk".into(),
        stop_timeout: Duration::from_millis(200),
        ..NodeOptions::default()
    })
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    node.handle().spawn_blocking(move || {
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    });
    rx.recv().unwrap();
    let t = Instant::now();
    let report = node.stop();
    let took = t.elapsed();
    let after = threads();
    println!("threads: {after} after a stop that waited {took:?} for a blocking task");
    assert_eq!(after, before, "the blocking task's thread is joined");
    assert!(
        !report.joined,
        "the stop took longer than its timeout: {report:?}"
    );
}
