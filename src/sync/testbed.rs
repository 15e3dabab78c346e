//! A deterministic in-memory mesh of sync engines, for tests and benches.
//!
//! Nodes `0..n` have node ids `1..=n`. Links have a latency, a jitter
//! (which reorders messages) and a loss rate; pairs can be cut (a partition)
//! and healed (the links reconnect and exchange Hello); nodes can be
//! restarted empty. Time jumps to the next delivery or to the next deadline
//! an engine asked for, so a wrong `poll_timeout` shows as a test that
//! does not converge. Randomness comes from one seed.

use super::{Config, Engine, Event, NodeId, Scope, WallMs};
use std::collections::{BTreeMap, BTreeSet};

/// A message in flight.
#[derive(Debug)]
struct Flight {
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

/// The mesh.
pub struct Testbed {
    /// The engines; node `i` has id `i + 1`.
    pub nodes: Vec<Engine>,
    /// Current time, wall ms.
    pub now: WallMs,
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Extra random delay up to this many ms (reorders messages).
    pub jitter_ms: u64,
    /// Messages lost per million (Hello is never lost: it opens a link).
    pub loss_ppm: u32,
    /// Messages delivered.
    pub msgs: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Messages lost or cut.
    pub lost: u64,
    /// Events drained per node.
    pub events: Vec<u64>,
    /// Delivery steps (each delivers everything due at one instant).
    pub steps: u64,
    flight: BTreeMap<(WallMs, u64), Flight>,
    seq: u64,
    rng: u64,
    cut: BTreeSet<(usize, usize)>,
    cfg: Box<dyn Fn(NodeId) -> Config>,
    /// Keep events (for inspection) instead of only counting them.
    pub keep_events: bool,
    /// Events kept per node when `keep_events`.
    pub kept: Vec<Vec<Event>>,
    /// Print every delivered message (debugging).
    pub trace: bool,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("nodes", &self.nodes.len())
            .field("now", &self.now)
            .finish()
    }
}

/// The fingerprint key every testbed node shares.
pub const TEST_FP_KEY: [u8; 32] = [0x5a; 32];

impl Testbed {
    /// `n` fully connected nodes at time `now`, configured by `cfg(node id)`.
    pub fn new(n: usize, seed: u64, now: WallMs, cfg: impl Fn(NodeId) -> Config + 'static) -> Self {
        let cfg: Box<dyn Fn(NodeId) -> Config> = Box::new(cfg);
        let nodes = (0..n).map(|i| Self::make(&*cfg, i, n, now)).collect();
        let mut tb = Self {
            nodes,
            now,
            latency_ms: 5,
            jitter_ms: 0,
            loss_ppm: 0,
            msgs: 0,
            bytes: 0,
            lost: 0,
            events: vec![0; n],
            steps: 0,
            flight: BTreeMap::new(),
            seq: 0,
            rng: seed ^ 0x2545_f491_4f6c_dd1d,
            cut: BTreeSet::new(),
            cfg,
            keep_events: false,
            kept: vec![Vec::new(); n],
            trace: false,
        };
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    tb.nodes[a].peer_connected(now, b as NodeId + 1);
                }
            }
        }
        tb
    }

    fn make(cfg: &dyn Fn(NodeId) -> Config, i: usize, n: usize, now: WallMs) -> Engine {
        let mut e = Engine::new(cfg(i as NodeId + 1), Box::new(super::AllPeers), now);
        for j in 0..n {
            if j != i {
                e.add_peer(j as NodeId + 1).expect("few peers");
            }
        }
        e
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn key(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    /// Cuts every link between nodes of different `groups` (node indexes).
    pub fn partition(&mut self, groups: &[&[usize]]) {
        for (gi, ga) in groups.iter().enumerate() {
            for gb in &groups[gi + 1..] {
                for &a in *ga {
                    for &b in *gb {
                        self.cut_link(a, b);
                    }
                }
            }
        }
    }

    /// Cuts the link between `a` and `b`: both sides see it go down and
    /// what was in flight is lost.
    pub fn cut_link(&mut self, a: usize, b: usize) {
        if self.cut.insert(Self::key(a, b)) {
            self.nodes[a].peer_disconnected(b as NodeId + 1);
            self.nodes[b].peer_disconnected(a as NodeId + 1);
            let before = self.flight.len();
            self.flight
                .retain(|_, f| Self::key(f.from, f.to) != Self::key(a, b));
            self.lost += (before - self.flight.len()) as u64;
        }
    }

    /// Reconnects every cut link.
    pub fn heal(&mut self) {
        let cut = std::mem::take(&mut self.cut);
        for (a, b) in cut {
            self.nodes[a].peer_connected(self.now, b as NodeId + 1);
            self.nodes[b].peer_connected(self.now, a as NodeId + 1);
        }
    }

    /// Replaces node `i` by a fresh, empty engine (a restart) and
    /// reconnects its links that are not cut.
    pub fn restart(&mut self, i: usize) {
        let n = self.nodes.len();
        self.nodes[i] = Self::make(&*self.cfg, i, n, self.now);
        self.flight.retain(|_, f| f.from != i && f.to != i);
        for j in 0..n {
            if j != i && !self.cut.contains(&Self::key(i, j)) {
                self.nodes[j].peer_disconnected(i as NodeId + 1);
                self.nodes[j].peer_connected(self.now, i as NodeId + 1);
                self.nodes[i].peer_connected(self.now, j as NodeId + 1);
            }
        }
    }

    /// Injects raw bytes from node `from` to node `to`, delivered now.
    pub fn inject(
        &mut self,
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    ) -> Result<(), super::SyncDrop> {
        self.nodes[to].handle_message(self.now, from as NodeId + 1, &bytes)
    }

    fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some((peer, bytes)) = self.nodes[i].poll_transmit() {
                let to = peer as usize - 1;
                let hello = bytes.first() == Some(&1);
                if self.cut.contains(&Self::key(i, to))
                    || (!hello
                        && self.loss_ppm > 0
                        && (self.rand() % 1_000_000) < self.loss_ppm as u64)
                {
                    self.lost += 1;
                    continue;
                }
                let jitter = if self.jitter_ms > 0 {
                    self.rand() % (self.jitter_ms + 1)
                } else {
                    0
                };
                self.seq += 1;
                self.flight.insert(
                    (self.now + self.latency_ms + jitter, self.seq),
                    Flight { from: i, to, bytes },
                );
            }
            while let Some(e) = self.nodes[i].poll_event() {
                self.events[i] += 1;
                if self.keep_events {
                    self.kept[i].push(e);
                }
            }
        }
    }

    /// Sends what the engines queued, then advances time to the next
    /// delivery or deadline and handles everything due then. Returns
    /// false if nothing is left to do.
    pub fn step(&mut self) -> bool {
        self.pump();
        let next_flight = self.flight.keys().next().map(|k| k.0);
        let next_timer = self.nodes.iter().filter_map(Engine::poll_timeout).min();
        let Some(next) = [next_flight, next_timer].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        self.steps += 1;
        while let Some(entry) = self.flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let f = entry.remove();
            if self.trace {
                let what = match super::msg::Msg::parse(&f.bytes) {
                    Ok((super::msg::Msg::Push(p), _)) => format!("Push {}", p.entries.len()),
                    Ok((super::msg::Msg::Digest(d), _)) => format!(
                        "Digest sync={} ranges={} counts={:?}",
                        d.in_sync,
                        d.ranges.len(),
                        d.ranges.iter().take(4).map(|r| r.count).collect::<Vec<_>>()
                    ),
                    Ok((super::msg::Msg::RangeItems(r), _)) => format!(
                        "RangeItems {} ids={}",
                        r.ranges.len(),
                        r.ranges.iter().map(|x| x.ids.len()).sum::<usize>()
                    ),
                    Ok((super::msg::Msg::Need(n), _)) => format!("Need {}", n.keys.len()),
                    Ok((m, _)) => format!("{m:?}").chars().take(60).collect(),
                    Err(e) => format!("{e:?}"),
                };
                println!(
                    "{} {}->{} {}B {}",
                    self.now,
                    f.from + 1,
                    f.to + 1,
                    f.bytes.len(),
                    what
                );
            }
            self.msgs += 1;
            self.bytes += f.bytes.len() as u64;
            let _ = self.nodes[f.to].handle_message(self.now, f.from as NodeId + 1, &f.bytes);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                self.nodes[i].handle_timeout(self.now);
            }
        }
        self.pump();
        true
    }

    /// Steps until `done` holds (checked after each step) or time passes
    /// `deadline`. Returns the time it held, if it did.
    pub fn run_until(
        &mut self,
        deadline: WallMs,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Option<WallMs> {
        loop {
            if done(self) {
                return Some(self.now);
            }
            if self.now > deadline || !self.step() {
                return None;
            }
        }
    }

    /// Advances time to `t`, handling everything due on the way.
    pub fn run_to(&mut self, t: WallMs) {
        loop {
            self.pump();
            let next_flight = self.flight.keys().next().map(|k| k.0);
            let next_timer = self.nodes.iter().filter_map(Engine::poll_timeout).min();
            match [next_flight, next_timer].into_iter().flatten().min() {
                Some(n) if n <= t => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(t);
                    return;
                }
            }
        }
    }

    /// Every node's (count, fingerprint) of `scope`.
    pub fn digests(&self, scope: Scope) -> Vec<(u64, u128)> {
        self.nodes.iter().map(|n| n.digest(scope)).collect()
    }

    /// True when every node holds the same digest of `scope`.
    pub fn converged(&self, scope: Scope) -> bool {
        let d = self.digests(scope);
        d.windows(2).all(|w| w[0] == w[1])
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.flight.len()
    }
}
