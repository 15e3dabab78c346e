//! anypsp sync engine figures (src/sync), printed, not timed by criterion:
//!
//! - `converge`: 100 000 entries diverged by a partition (50 000 written on
//!   each side of a 3-node mesh cut 1 | 2), healed; prints the CPU time the
//!   engines took to converge (the test bed's own work included), the
//!   simulated time at 5 ms one-way latency, round trips, messages and
//!   bytes exchanged.
//! - `push`: bytes on the link per pushed entry (8-byte key, 200-byte
//!   value, the size of a session record) to each peer.
//! - `memory`: heap bytes per held entry, measured by a counting allocator.
//!
//! - `bridge_converge`: 100 000 sessions made through the proxy bridge
//!   (`Replicator::on_proxy_event(SessionUp)`, half on each side of a
//!   3-proxy mesh cut 1 | 2), healed; every Apply goes into a real `Proxy`
//!   (`apply_remote`, which imports each session in a fresh epoch): CPU
//!   time of the whole loop (one thread), simulated time, bytes.
//! - `bridge_memory`: heap bytes per replicated session at a receiving
//!   proxy (engine entry, bridge indexes and the proxy's imported replica),
//!   and bytes on the link per session record pushed.
//!
//! `cargo bench --bench sync` runs the full sizes; without `--bench` (as
//! under `cargo test --all-targets`) it runs 2 000 entries, quickly.

use anytun::sync::testbed::{Testbed, TEST_FP_KEY};
use anytun::sync::{Config, Key, NodeId, Scope};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const S: Scope = Scope(1);
const T0: u64 = 1_700_000_000_000;
const VALUE: [u8; 200] = [0x42; 200];

fn cfg(node: NodeId) -> Config {
    Config::new(node, TEST_FP_KEY)
}

fn key(i: u64) -> Key {
    Key::new(1, &i.to_be_bytes()).expect("short key")
}

fn converge(n: u64) {
    let mut tb = Testbed::new(3, 11, T0, cfg);
    tb.run_to(T0 + 100);
    tb.partition(&[&[0], &[1, 2]]);
    let now = tb.now;
    for i in 0..n {
        let node = (i % 2) as usize; // half on node 0, half on node 1
        tb.nodes[node].write(now, S, key(i), &VALUE).expect("write");
    }
    tb.run_until(now + 60_000, |tb| tb.converged(S) && tb.in_flight() == 0);
    let (msgs, bytes, steps) = (tb.msgs, tb.bytes, tb.steps);
    let rounds0: u64 = tb.nodes.iter().map(|n| n.stats().rounds).sum();
    assert!(!tb.converged(S) || n == 0);
    let healed = tb.now;
    let cpu = Instant::now();
    tb.heal();
    let done = tb
        .run_until(healed + 600_000, |tb| tb.converged(S))
        .expect("converges after the partition heals");
    let cpu = cpu.elapsed();
    let rounds: u64 = tb.nodes.iter().map(|n| n.stats().rounds).sum::<u64>() - rounds0;
    for node in &tb.nodes {
        assert_eq!(node.digest(S).0, n);
    }
    println!(
        "sync/converge: {n} entries (half per side) after heal: engine CPU {:.3} s, simulated {} ms \
         at 5 ms one-way ({} round trips), {} reconciliation rounds, {} messages, {} bytes ({:.1} bytes/entry)",
        cpu.as_secs_f64(),
        done - healed,
        (done - healed) / 10,
        rounds,
        tb.msgs - msgs,
        tb.bytes - bytes,
        (tb.bytes - bytes) as f64 / n as f64,
    );
    let _ = steps;

    // One difference in the whole table: a new entry written on one side
    // of a fresh partition.
    tb.partition(&[&[0], &[1, 2]]);
    let now = tb.now;
    tb.nodes[0]
        .write(now, S, key(n + 1), &VALUE)
        .expect("write");
    let t = tb.now + 10;
    tb.run_to(t);
    let (msgs, bytes) = (tb.msgs, tb.bytes);
    let healed = tb.now;
    tb.heal();
    let done = tb
        .run_until(healed + 60_000, |tb| tb.converged(S))
        .expect("converges");
    println!(
        "sync/one_difference: 1 new entry among {n} after heal: simulated {} ms at 5 ms one-way \
         ({} round trips), {} messages, {} bytes",
        done - healed,
        (done - healed) / 10,
        tb.msgs - msgs,
        tb.bytes - bytes,
    );
}

fn push(n: u64) {
    let mut tb = Testbed::new(3, 12, T0, cfg);
    tb.run_to(T0 + 100);
    let (m0, b0) = (tb.msgs, tb.bytes);
    for i in 0..n {
        let now = tb.now;
        tb.nodes[0].write(now, S, key(i), &VALUE).expect("write");
        if i % 10 == 9 {
            let t = tb.now + 1;
            tb.run_to(t); // ten writes per ms
        }
    }
    let t = tb.now + 50;
    tb.run_to(t);
    assert!(tb.converged(S));
    let per = (tb.bytes - b0) as f64 / (n * 2) as f64;
    println!(
        "sync/push: {n} writes of 8-byte key + 200-byte value to 2 peers: {} messages, {:.1} bytes per entry per peer \
         (value 200, overhead {:.1})",
        tb.msgs - m0,
        per,
        per - 200.0
    );
}

fn memory(n: u64) {
    let mut e = anytun::sync::Engine::new(cfg(1), Box::new(anytun::sync::AllPeers), T0);
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        e.write(T0, S, key(i), &VALUE).expect("write");
    }
    let after = LIVE.load(Ordering::Relaxed);
    let per = (after - before) as f64 / n as f64;
    println!(
        "sync/memory: {n} entries (8-byte key, 200-byte value): {:.0} heap bytes per entry ({:.0} beyond the value)",
        per,
        per - 200.0
    );
    drop(e);
}

/// One proxy of the bridge mesh: its core and its replicator.
struct Node {
    proxy: anytun::proxy::Proxy,
    rep: anytun::sync::bridge::Replicator,
}

/// A 3-proxy mesh of replicators and proxies; messages take 5 ms.
struct Mesh {
    nodes: Vec<Node>,
    now: u64,
    base: Instant,
    flight: std::collections::BTreeMap<(u64, u64), (usize, usize, Vec<u8>)>,
    seq: u64,
    cut: bool,
    /// Apply what the replicators report to the proxies.
    apply: bool,
    bytes: u64,
    msgs: u64,
}

impl Mesh {
    fn new(n: usize) -> Self {
        use anytun::crypto::SecretKey;
        use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
        use anytun::session::{EpochLease, ProxyId};
        let network = SecretKey::generate();
        let base = Instant::now();
        let nodes = (1..=n as u16)
            .map(|id| {
                let cfg = ProxyConfig::new(ProxyId::new(id).unwrap(), network.clone());
                let mut proxy = Proxy::with_wall_clock(
                    cfg,
                    Subscribers::default(),
                    base,
                    u128::from(T0) * 1_000_000,
                );
                proxy.epochs().grant(EpochLease::ephemeral());
                proxy.set_peers((1..=n as u16).filter_map(ProxyId::new));
                let mut rep = anytun::sync::bridge::Replicator::new(cfg_node(id), T0);
                for q in (1..=n as u16).filter(|q| *q != id) {
                    rep.add_peer(q).unwrap();
                    rep.peer_connected(T0, q);
                }
                Node { proxy, rep }
            })
            .collect();
        Self {
            nodes,
            now: T0,
            base,
            flight: Default::default(),
            seq: 0,
            cut: false,
            apply: true,
            bytes: 0,
            msgs: 0,
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !(self.cut && (a == 0 || b == 0))
    }

    /// Sends what every replicator queued and applies what it reports.
    fn flush(&mut self) {
        use anytun::sync::bridge::Apply;
        let inst = self.base + std::time::Duration::from_millis(self.now - T0);
        for i in 0..self.nodes.len() {
            while let Some((to, m)) = self.nodes[i].rep.poll_transmit() {
                let to = usize::from(to) - 1;
                if self.linked(i, to) {
                    self.seq += 1;
                    self.flight.insert((self.now + 5, self.seq), (i, to, m));
                }
            }
            let n = &mut self.nodes[i];
            while let Some(a) = n.rep.poll_apply() {
                if !self.apply {
                    continue;
                }
                if let Apply::Proxy(ev) = a {
                    let _ = n.proxy.apply_remote(inst, &ev);
                }
            }
        }
    }

    /// Runs to the next delivery or timer; false when nothing is due
    /// before `until`.
    fn step(&mut self, until: u64) -> bool {
        let next_msg = self.flight.keys().next().map(|k| k.0);
        let next_timer = self.nodes.iter().filter_map(|n| n.rep.poll_timeout()).min();
        let Some(next) = [next_msg, next_timer].into_iter().flatten().min() else {
            return false;
        };
        if next > until {
            return false;
        }
        self.now = self.now.max(next);
        while let Some((&k, _)) = self.flight.first_key_value() {
            if k.0 > self.now {
                break;
            }
            let (from, to, m) = self.flight.remove(&k).unwrap();
            if !self.linked(from, to) {
                continue;
            }
            self.msgs += 1;
            self.bytes += m.len() as u64;
            let now = self.now;
            let _ = self.nodes[to].rep.handle_message(now, from as u16 + 1, &m);
        }
        let now = self.now;
        for n in &mut self.nodes {
            if n.rep.poll_timeout().is_some_and(|t| t <= now) {
                n.rep.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    fn set_cut(&mut self, cut: bool) {
        self.cut = cut;
        let now = self.now;
        for (a, b) in [(0usize, 1usize), (0, 2)] {
            for (x, y) in [(a, b), (b, a)] {
                if cut {
                    self.nodes[x].rep.peer_disconnected(y as u16 + 1);
                } else {
                    self.nodes[x].rep.peer_connected(now, y as u16 + 1);
                }
            }
        }
        self.flush();
    }

    fn converged(&self, n: u64) -> bool {
        use anytun::sync::bridge::codec::SCOPE_SESSIONS;
        let d = self.nodes[0].rep.engine().digest(SCOPE_SESSIONS);
        d.0 == n
            && self.flight.is_empty()
            && self
                .nodes
                .iter()
                .all(|x| x.rep.engine().digest(SCOPE_SESSIONS) == d)
    }
}

fn cfg_node(id: u16) -> Config {
    Config::new(id, TEST_FP_KEY)
}

/// A session record as proxy `serving` would report it (keys made up).
fn record(serving: u16, i: u64) -> anytun::proxy::ProxyEvent {
    use anytun::crypto::PublicKey;
    use anytun::proxy::{ProxyEvent, SessionRecord};
    use anytun::session::{ProxyId, SessionId, SessionState};
    let p = ProxyId::new(serving).unwrap();
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k[8..10].copy_from_slice(&serving.to_be_bytes());
    ProxyEvent::SessionUp(SessionRecord {
        state: SessionState {
            id: SessionId::new(p, i + 1),
            client_key: PublicKey(k),
            client_to_proxy: [i as u8; 32],
            proxy_to_client: [!(i as u8); 32],
            client_counter_floor: 40,
            proxy_counter_floors: vec![(p, 1 << 32 | 17)],
        },
        addr: std::net::SocketAddr::from((
            [198, 51, 100, (i % 250) as u8],
            40_000 + (i % 20_000) as u16,
        )),
        local_ip: Some(std::net::IpAddr::from([203, 0, 113, 1])),
        serving: p,
        expires_unix_ms: T0 + 60_000,
    })
}

fn bridge_converge(n: u64) {
    let mut m = Mesh::new(3);
    while m.step(T0 + 200) {}
    m.set_cut(true);
    let now = m.now;
    for i in 0..n {
        let node = (i % 2) as usize; // half on proxy 1, half on proxy 2
        let ev = record(node as u16 + 1, i);
        m.nodes[node].rep.on_proxy_event(now, &ev);
        if i % 1000 == 999 {
            m.flush();
        }
    }
    m.flush();
    while m.step(now + 60_000) {
        if m.flight.is_empty()
            && m.nodes[1]
                .rep
                .engine()
                .digest(anytun::sync::bridge::codec::SCOPE_SESSIONS)
                == m.nodes[2]
                    .rep
                    .engine()
                    .digest(anytun::sync::bridge::codec::SCOPE_SESSIONS)
            && m.nodes[2]
                .rep
                .engine()
                .digest(anytun::sync::bridge::codec::SCOPE_SESSIONS)
                .0
                == n / 2
        {
            break;
        }
    }
    assert!(!m.converged(n));
    let (b0, m0) = (m.bytes, m.msgs);
    let healed = m.now;
    let cpu = Instant::now();
    m.set_cut(false);
    while !m.converged(n) {
        assert!(m.step(healed + 600_000), "converges after the heal");
    }
    let cpu = cpu.elapsed();
    let held: Vec<usize> = m.nodes.iter().map(|x| x.proxy.session_count()).collect();
    // Each proxy imported every session another proxy serves.
    assert_eq!(
        held,
        vec![(n / 2) as usize, (n - n / 2) as usize, n as usize]
    );
    println!(
        "sync/bridge_converge: {n} sessions made through the bridge (half per side), after heal: CPU {:.3} s (one thread: 3 engines, bridges and proxies importing), simulated {} ms at 5 ms one-way, {} messages, {} bytes ({:.1} bytes/session); proxies hold {held:?}",
        cpu.as_secs_f64(),
        m.now - healed,
        m.msgs - m0,
        m.bytes - b0,
        (m.bytes - b0) as f64 / n as f64,
    );
}

/// Heap bytes per session kept by the receiver of `n` sessions; with
/// `apply`, the proxy imports them too.
fn bridge_memory_of(n: u64, apply: bool) -> (f64, f64) {
    let mut m = Mesh::new(2);
    m.apply = apply;
    while m.step(T0 + 200) {}
    let before = LIVE.load(Ordering::Relaxed);
    let out0 = m.nodes[0].rep.engine().stats().bytes_out;
    let now = m.now;
    for i in 0..n {
        m.nodes[0].rep.on_proxy_event(now, &record(1, i));
        if i % 1000 == 999 {
            m.flush();
            while m.step(now + 1_000) {}
        }
    }
    m.flush();
    while m.step(now + 1_000) {}
    assert_eq!(
        m.nodes[1].proxy.session_count(),
        if apply { n as usize } else { 0 }
    );
    let pushed = m.nodes[0].rep.engine().stats().bytes_out - out0;
    // Only what the receiver keeps: drop the sender.
    let sender = m.nodes.remove(0);
    drop(sender);
    m.flight.clear();
    let after = LIVE.load(Ordering::Relaxed);
    drop(m);
    ((after - before) as f64 / n as f64, pushed as f64 / n as f64)
}

fn bridge_memory(n: u64) {
    let (all, pushed) = bridge_memory_of(n, true);
    let (sync, _) = bridge_memory_of(n, false);
    println!(
        "sync/bridge_memory: {n} replicated sessions: {all:.0} heap bytes per session at the receiving proxy, \
         of which {sync:.0} engine entry + bridge and {:.0} the proxy's imported replica; \
         {pushed:.1} bytes on the link per session record pushed",
        all - sync
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100_000 } else { 2_000 };
    bridge_converge(n);
    bridge_memory(if full { 20_000 } else { 1_000 });
    converge(n);
    push(if full { 20_000 } else { 1_000 });
    memory(n);
}
