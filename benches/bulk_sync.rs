//! Does applying a bulk sync stall the voice path? Two nodes (each a
//! `runtime::node::Node` on its own threads) linked over loopback; a call
//! between two clients on node B relays voice (a frame every 20 ms) while
//! node A's table of N sessions (`import_session`, 100 000 under
//! `--bench`) replicates to B, which applies it in batches under its core
//! lock. Printed: the largest and 99th-percentile inter-arrival of the
//! relayed voice before the bulk (baseline) and during it, with the default
//! batch (256 items per lock hold) and with one lock hold for everything.
//!
//! `cargo bench --bench bulk_sync` (ANYTUN_BULK_SESSIONS changes N). Under
//! `cargo test` it is a smoke run with 2 000 sessions that checks that
//! every session arrives and voice keeps flowing, and measures nothing.
//!
//! The restart case (a node restarted next to a peer holding N sessions)
//! also prints the heap per replicated session: live heap bytes counted
//! by this bench's global allocator, before the restarted node starts and
//! once it holds every replica (its links idle), divided by N.

use anytun::call::Name;
use anytun::client::{ClientConfig, Event};
use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::runtime::client::ClientRuntime;
use anytun::runtime::node::{fingerprint_key, Node, NodeOptions, SyncSetup, Udp, APPLY_BATCH};
use anytun::runtime::udp::BindOptions;
use anytun::session::{EpochLease, ProxyId, SessionId, SessionState};
use anytun::sync::link::LinkConfig;
use anytun::sync::members::Member;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// The system allocator, counting live heap bytes.
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is only arithmetic on the sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(
            new as isize - l.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        std::alloc::System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_heap() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

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

async fn expect(rx: &mut UnboundedReceiver<Event>, f: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("event in time")
            .expect("channel open");
        if f(&e) {
            return e;
        }
    }
}

struct Figures {
    baseline_max: Duration,
    baseline_p99: Duration,
    bulk_max: Duration,
    bulk_p99: Duration,
    bulk_ms: u128,
    frames_in_bulk: usize,
    batches: u64,
    /// The sender's own intervals during the bulk (its thread shares the
    /// machine): a gap here is not the proxy's.
    send_max: Duration,
    send_p99: Duration,
}

fn stats(arrivals: &[Instant], from: Instant, to: Instant) -> (Duration, Duration, usize) {
    let mut gaps: Vec<Duration> = arrivals
        .windows(2)
        .filter(|w| w[1] >= from && w[1] <= to)
        .map(|w| w[1].duration_since(w[0]))
        .collect();
    let n = gaps.len();
    if gaps.is_empty() {
        return (to.duration_since(from), to.duration_since(from), 0);
    }
    gaps.sort_unstable();
    let p99 = gaps[((gaps.len() - 1) as f64 * 0.99) as usize];
    (*gaps.last().unwrap(), p99, n)
}

fn run(n: usize, apply_batch: usize) -> Figures {
    let network = SecretKey::generate();
    let keys = [SecretKey::generate(), SecretKey::generate()];
    let links = [free_tcp(), free_tcp()];
    let alice = SecretKey::generate();
    let bob = SecretKey::generate();
    let subs = Subscribers::new([
        (Name::new("alice").unwrap(), alice.public()),
        (Name::new("bob").unwrap(), bob.public()),
    ]);
    let mut nodes = Vec::new();
    for i in 0..2usize {
        let id = i as u16 + 1;
        let mut node = Node::new(NodeOptions {
            worker_threads: 2,
            thread_name: format!("bulk-{id}"),
            ..NodeOptions::default()
        })
        .unwrap();
        let core = Proxy::new(
            ProxyConfig::new(ProxyId::new(id).unwrap(), network.clone()),
            subs.clone(),
            Instant::now(),
        );
        core.epochs().grant(EpochLease::ephemeral());
        let sync = SyncSetup {
            node_key: keys[i].clone(),
            listen: links[i],
            peers: vec![member(2 - i as u16, &keys[1 - i], links[1 - i])],
            fp_key: fingerprint_key(&network),
            startup_timeout: Duration::from_secs(20),
            solo_grace: Duration::from_secs(600),
            peer_detect: Duration::from_secs(1),
            link: LinkConfig::default(),
            apply_batch,
            subscribers: None,
        };
        let udp = Udp::Deferred {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            opts: BindOptions::default(),
        };
        node.start(core, udp, Some(sync)).unwrap();
        nodes.push(node);
    }
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node.readiness().borrow().ready() {
            assert!(Instant::now() < deadline, "nodes never ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let b_addr = nodes[1].local_addrs()[0];
    // Made beforehand: key generation is not what is measured.
    let states: Vec<(SessionState, SocketAddr)> = (0..n)
        .map(|i| {
            let k = SecretKey::generate();
            let st = SessionState {
                id: SessionId::new(ProxyId::new(1).unwrap(), 0x1000 + i as u64),
                client_key: k.public(),
                client_to_proxy: [i as u8; 32],
                proxy_to_client: [!(i as u8); 32],
                client_counter_floor: 0,
                proxy_counter_floors: Vec::new(),
            };
            let addr: SocketAddr = format!("10.0.{}.{}:4000", i / 250 % 250, i % 250 + 1)
                .parse()
                .unwrap();
            (st, addr)
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let heard: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let figures = rt.block_on(async {
        let (a, mut arx) = ClientRuntime::start(
            ClientConfig::new(alice, network.public()),
            b_addr,
            Box::new(|_| {}),
        )
        .unwrap();
        let h = heard.clone();
        let (b, mut brx) = ClientRuntime::start(
            ClientConfig::new(bob, network.public()),
            b_addr,
            Box::new(move |_| h.lock().unwrap().push(Instant::now())),
        )
        .unwrap();
        expect(&mut arx, |e| matches!(e, Event::Connected { .. })).await;
        expect(&mut brx, |e| matches!(e, Event::Connected { .. })).await;
        b.register(Name::new("bob").unwrap(), 300).await;
        expect(&mut brx, |e| matches!(e, Event::Registered { .. })).await;
        let call = a
            .call(Name::new("bob").unwrap(), None, vec!["slin".into()])
            .await
            .unwrap();
        let incoming = match expect(&mut brx, |e| matches!(e, Event::IncomingCall { .. })).await
        {
            Event::IncomingCall { call, .. } => call,
            _ => unreachable!(),
        };
        b.answer(incoming, "slin").await.unwrap();
        expect(&mut arx, |e| matches!(e, Event::Answered { .. })).await;

        // Voice from alice to bob through B, every 20 ms, until told.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let sender = {
            let stop = stop.clone();
            let sent = sent.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut seq = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tick.tick().await;
                    seq += 1;
                    sent.lock().unwrap().push(Instant::now());
                    let _ = a.send_voice(call, seq, seq * 160, &[0x55; 160]).await;
                }
                a
            }
        };
        let sender = tokio::spawn(sender);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let base_to = Instant::now();
        let base_from = base_to - Duration::from_millis(1500);
        let before = nodes[1].with_core(|p| p.session_count()).unwrap();
        let batches0 = nodes[1]
            .stats()
            .apply_batches
            .load(std::sync::atomic::Ordering::Relaxed);
        // The bulk: N sessions made on A, in chunks so A itself keeps going.
        let bulk_from = Instant::now();
        let mut made = 0;
        while made < n {
            let chunk = (n - made).min(5000);
            nodes[0].with_core(|p| {
                let now = Instant::now();
                for (st, addr) in &states[made..made + chunk] {
                    p.import_session(now, st, *addr).unwrap();
                }
            });
            made += chunk;
            tokio::task::yield_now().await;
        }
        // Until B holds them all.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let held = nodes[1].snapshot().unwrap().sessions;
            if held >= before + n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "B holds {held} of {} sessions",
                before + n
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let bulk_to = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let a = sender.await.unwrap();
        let arrivals = heard.lock().unwrap().clone();
        let (baseline_max, baseline_p99, _) = stats(&arrivals, base_from, base_to);
        let (bulk_max, bulk_p99, frames_in_bulk) = stats(&arrivals, bulk_from, bulk_to);
        let sends = sent.lock().unwrap().clone();
        let (send_max, send_p99, _) = stats(&sends, bulk_from, bulk_to);
        let batches = nodes[1]
            .stats()
            .apply_batches
            .load(std::sync::atomic::Ordering::Relaxed)
            - batches0;
        let st = nodes[1].stats();
        let ld = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "  B: longest apply lock hold {} us, longest sync-task turn {} us; A: longest turn {} us",
            ld(&st.apply_hold_max_us),
            ld(&st.turn_max_us),
            ld(&nodes[0].stats().turn_max_us)
        );
        a.shutdown();
        b.shutdown();
        Figures {
            baseline_max,
            baseline_p99,
            bulk_max,
            bulk_p99,
            bulk_ms: bulk_to.duration_since(bulk_from).as_millis(),
            frames_in_bulk,
            batches,
            send_max,
            send_p99,
        }
    });
    drop(rt);
    for node in nodes {
        assert!(node.stop().joined);
    }
    figures
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = if bench {
        std::env::var("ANYTUN_BULK_SESSIONS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000)
    } else {
        2_000
    };
    let cases: &[(usize, &str)] = if bench {
        &[
            (APPLY_BATCH, "batches of 256"),
            (usize::MAX, "one lock hold"),
        ]
    } else {
        &[(APPLY_BATCH, "batches of 256")]
    };
    for &(batch, label) in cases {
        let f = run(n, batch);
        println!(
            "bulk sync of {n} sessions ({label}): applied at B in {} ms over {} lock hold(s); \
             voice inter-arrival at the callee: baseline max {} ms p99 {} ms, during the bulk \
             max {} ms p99 {} ms ({} frames); the sender's own intervals: max {} ms p99 {} ms",
            f.bulk_ms,
            f.batches,
            f.baseline_max.as_millis(),
            f.baseline_p99.as_millis(),
            f.bulk_max.as_millis(),
            f.bulk_p99.as_millis(),
            f.frames_in_bulk,
            f.send_max.as_millis(),
            f.send_p99.as_millis()
        );
        if !bench {
            assert!(
                f.frames_in_bulk > 0 || f.bulk_ms < 40,
                "no voice during the bulk"
            );
        }
    }
    restart(n, bench);
}

/// A node restarted next to a peer holding `n` sessions: how long until it
/// is synced and serving, and until it holds every replica. Its send-epoch
/// lease comes from a real `LeaseFile` renewed as anytund does (every
/// second when low, the first lease 1 024 epochs, doubling): a replica that
/// takes an epoch of its own waits for those renewals.
fn restart(n: usize, bench: bool) {
    let network = SecretKey::generate();
    let keys = [SecretKey::generate(), SecretKey::generate()];
    let links = [free_tcp(), free_tcp()];
    let dir = tempfile::tempdir().unwrap();
    let start = |i: usize, lease: EpochLease| {
        let id = i as u16 + 1;
        let mut node = Node::new(NodeOptions {
            worker_threads: 2,
            thread_name: format!("restart-{id}"),
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
            startup_timeout: Duration::from_secs(60),
            solo_grace: Duration::from_secs(600),
            peer_detect: Duration::from_secs(1),
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
    };
    let a = start(0, EpochLease::ephemeral());
    let heap_a0 = live_heap();
    a.with_core(|p| {
        let now = Instant::now();
        for i in 0..n as u64 {
            let st = SessionState {
                id: SessionId::new(ProxyId::new(1).unwrap(), 0x1000 + i),
                client_key: anytun::crypto::PublicKey({
                    let mut k = [0x40u8; 32];
                    k[..8].copy_from_slice(&i.to_le_bytes());
                    k
                }),
                client_to_proxy: [1; 32],
                proxy_to_client: [2; 32],
                client_counter_floor: 0,
                proxy_counter_floors: Vec::new(),
            };
            let addr: SocketAddr = format!("10.0.{}.{}:4000", i / 250 % 250, i % 250 + 1)
                .parse()
                .unwrap();
            p.import_session(now, &st, addr).unwrap();
        }
    });
    // B (re)starts now, with the lease file of a node that ran before.
    let mut file = anytun::session::epoch::LeaseFile::open(&dir.path().join("lease")).unwrap();
    let first = file.renew().unwrap();
    // A's links idle (nothing queued), then the heap before B exists.
    std::thread::sleep(Duration::from_millis(500));
    let heap0 = live_heap();
    println!(
        "heap per session imported at its node (core and sync table): {} bytes",
        (heap0 - heap_a0) / n.max(1) as isize
    );
    let t0 = Instant::now();
    let b = start(1, first);
    let epochs = b.with_core(|p| p.epochs().clone()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut renewals = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                if epochs.wants_lease() {
                    epochs.grant(file.renew().unwrap());
                    renewals += 1;
                }
            }
            renewals
        })
    };
    let mut ready_ms = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let all_ms = loop {
        if ready_ms.is_none() && b.readiness().borrow().ready() {
            ready_ms = Some(t0.elapsed().as_millis());
        }
        if b.with_core(|p| p.session_count()).unwrap() >= n {
            break t0.elapsed().as_millis();
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node never held them all"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    while ready_ms.is_none() {
        assert!(Instant::now() < deadline, "the restarted node never ready");
        if b.readiness().borrow().ready() {
            ready_ms = Some(t0.elapsed().as_millis());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Until the pull's buffers are gone: the heap B holds for its table.
    std::thread::sleep(Duration::from_millis(1500));
    let heap1 = live_heap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let renewals = renewer.join().unwrap();
    let waited = b
        .stats()
        .apply_waited_for_lease
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "restart next to a peer with {n} sessions: synced and serving after {} ms, holding all \
         {n} replicas after {all_ms} ms; apply waited for the epoch lease {waited} time(s), \
         {renewals} lease renewal(s)",
        ready_ms.unwrap()
    );
    println!(
        "heap per replicated session at the restarted node: {} bytes ({} MB for {n}, node and \
         links included)",
        (heap1 - heap0) / n.max(1) as isize,
        (heap1 - heap0) >> 20
    );
    if !bench {
        assert_eq!(b.with_core(|p| p.session_count()).unwrap(), n);
    }
    assert!(a.stop().joined);
    assert!(b.stop().joined);
}
