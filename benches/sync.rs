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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100_000 } else { 2_000 };
    converge(n);
    push(if full { 20_000 } else { 1_000 });
    memory(n);
}
