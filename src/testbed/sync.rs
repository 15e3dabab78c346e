//! The test bed's replication: a [`Replicator`] per proxy, driven as a
//! shell drives it (docs/anypsp-protocol.md Section 16.8).

use super::{name, xorshift, Bed, Packet};
use crate::crypto::PublicKey;
use crate::proxy::{Proxy, ProxyConfig, Subscribers};
use crate::session::epoch::MAX_EPOCH;
use crate::session::{EpochLease, ProxyId};
use crate::sync::bridge::codec::SCOPES;
use crate::sync::bridge::{Apply, Replicator};
use crate::sync::msg::MsgType;
use crate::sync::{Config, WallMs};
use std::time::{Duration, Instant};

/// The link generation of an injected message: delivered whatever the
/// links.
pub(super) const INJECTED: u64 = u64::MAX;

/// The fingerprint key of the bed's mesh.
const FP_KEY: [u8; 32] = [0x3c; 32];

impl Bed {
    /// Wall clock now, ms since the Unix epoch (what the engines see).
    pub fn wall_ms(&self) -> WallMs {
        (self.wall() / 1_000_000) as WallMs
    }

    /// Proxy `p`'s wall clock now, ms since the Unix epoch (what its
    /// replicator sees).
    pub fn wall_ms_of(&self, p: usize) -> WallMs {
        (self.wall_of(p) / 1_000_000) as WallMs
    }

    /// The instant proxy `p`'s wall clock reads `ms` (at the earliest now).
    pub(super) fn instant_of_ms(&self, p: usize, ms: WallMs) -> Instant {
        let ms = (i128::from(ms) - i128::from(self.clock_offset_ms[p])).max(0);
        let ns = ms as u128 * 1_000_000;
        let since = ns.saturating_sub(self.unix_start);
        (self.start + Duration::from_nanos(since as u64)).max(self.now)
    }

    /// Creates proxy `i` (and its replicator), empty, as at boot.
    pub(super) fn start_proxy(&mut self, i: usize) {
        let n = self.proxies.len();
        let id = ProxyId::new(i as u16 + 1).unwrap();
        let mut cfg = ProxyConfig::new(id, self.network.clone());
        (self.tune)(&mut cfg);
        let subs = Subscribers::new(self.stores[i].iter().cloned());
        let mut p = Proxy::with_wall_clock(cfg, subs, self.now, self.wall_of(i));
        // A restarted proxy continues its durable lease past every epoch
        // its earlier life took (docs/anytun-protocol.md 8.7): the
        // replicated records name only the send floors of the proxies that
        // served a session, not of every proxy that sent on it.
        let lease = match self.lease_next[i] {
            0 => EpochLease::ephemeral(),
            next => EpochLease::durable(u32::try_from(next).unwrap_or(u32::MAX), MAX_EPOCH + 1),
        };
        p.epochs().grant(lease);
        p.set_peers((1..=n as u16).filter_map(ProxyId::new));
        let mut scfg = Config::new(id.get(), FP_KEY);
        scfg.seed = self.rng ^ (i as u64 + 1);
        let mut rep = Replicator::new(scfg, self.wall_ms_of(i));
        for q in 0..n {
            if q != i {
                rep.add_peer(q as u16 + 1).unwrap();
            }
        }
        self.proxies[i] = Some(p);
        self.reps[i] = Some(rep);
    }

    /// Restarts proxy `i` empty (after [`Bed::kill`]): new proxy, new
    /// replicator, links come up. Route no site to it before
    /// [`Bed::synced`] says it pulled the tables.
    pub fn restart(&mut self, i: usize) {
        assert!(self.proxies[i].is_none(), "kill it first");
        self.start_proxy(i);
        self.sync_links();
        // The others' links to it come up: it decides its calls again.
        let id = ProxyId::new(i as u16 + 1).unwrap();
        for p in self.proxies.iter_mut().flatten() {
            p.peer_up(id);
        }
    }

    /// Whether proxy `i`'s replicator has reconciled with every connected
    /// peer since it started.
    pub fn synced(&self, i: usize) -> bool {
        self.reps[i].as_ref().is_some_and(Replicator::synced)
    }

    /// The replicator of proxy `i` (panics if killed).
    pub fn rep(&self, i: usize) -> &Replicator {
        self.reps[i].as_ref().expect("proxy alive")
    }

    /// (count, fingerprint) of each scope of the proxy core, at proxy `i`.
    pub fn digests(&self, i: usize) -> Vec<(u64, u128)> {
        SCOPES
            .iter()
            .map(|s| self.rep(i).engine().digest(*s))
            .collect()
    }

    /// Revokes site `who`'s key for its name on proxy `p`, as its operator
    /// would in that proxy's store: the proxy ends its sessions, and the
    /// revocation replicates.
    pub fn revoke(&mut self, p: usize, who: &str) {
        let nm = self.sites[self.idx(who)].name;
        self.subscriber(p, who, nm, false);
    }

    /// Authorises site `who`'s key for `as_name` too, in proxy `p`'s store
    /// (as its operator would); the addition replicates to every proxy. For
    /// one name on several devices (forking).
    pub fn allow(&mut self, p: usize, who: &str, as_name: &str) {
        self.subscriber(p, who, as_name, true);
    }

    fn subscriber(&mut self, p: usize, who: &str, as_name: &str, live: bool) {
        let key = self.sites[self.idx(who)].client.public_key();
        let nm = name(as_name);
        self.set_store(p, &nm, key, live);
        let wall = self.wall_ms_of(p);
        if let Some(r) = self.reps[p].as_mut() {
            r.on_subscriber(wall, &nm, &key, live);
        }
        self.flush_proxy(p);
    }

    fn set_store(&mut self, p: usize, nm: &crate::call::Name, key: PublicKey, live: bool) {
        let changed = if live {
            self.stores[p].insert((nm.clone(), key))
        } else {
            self.stores[p].remove(&(nm.clone(), key))
        };
        if changed {
            let subs = Subscribers::new(self.stores[p].iter().cloned());
            let now = self.now;
            if let Some(px) = self.proxies[p].as_mut() {
                px.set_subscribers(now, subs);
            }
        }
    }

    /// Hands `data` to proxy `to`'s replicator as the message of peer
    /// index `from` (node id `from + 1`, which may be no proxy of the bed),
    /// after the peer latency, whatever the links: a hostile or broken
    /// peer, or a link that misreports who sent it.
    pub fn inject_sync(&mut self, from: usize, to: usize, data: Vec<u8>) {
        let link = INJECTED;
        self.schedule(
            self.peer_latency,
            Packet::SyncMsg {
                from,
                to,
                link,
                data,
            },
        );
    }

    /// Brings sync links up or down to match liveness and partitions.
    pub(super) fn sync_links(&mut self) {
        let n = self.proxies.len();
        for a in 0..n {
            for b in a + 1..n {
                let up = self.proxies[a].is_some() && self.linked(a, b);
                let is_up = self.links.contains_key(&(a, b));
                if up == is_up {
                    continue;
                }
                if up {
                    self.link_gen += 1;
                    self.links.insert((a, b), self.link_gen);
                    for (x, y) in [(a, b), (b, a)] {
                        let wall = self.wall_ms_of(x);
                        if let Some(r) = self.reps[x].as_mut() {
                            r.peer_connected(wall, y as u16 + 1);
                        }
                    }
                } else {
                    self.links.remove(&(a, b));
                    for (x, y) in [(a, b), (b, a)] {
                        if let Some(r) = self.reps[x].as_mut() {
                            r.peer_disconnected(y as u16 + 1);
                        }
                    }
                }
                if up {
                    self.flush_proxy(a);
                    self.flush_proxy(b);
                }
            }
        }
    }

    /// Feeds proxy `p`'s events and handshake changes to its replicator
    /// and applies what the replicator reports. True if anything moved.
    pub(super) fn feed_replicator(&mut self, p: usize) -> bool {
        let (now, wall, wall_ns) = (self.now, self.wall_ms_of(p), self.wall_of(p));
        let (Some(px), Some(rep)) = (self.proxies[p].as_mut(), self.reps[p].as_mut()) else {
            return false;
        };
        let mut moved = false;
        while let Some(e) = px.poll_event() {
            rep.on_proxy_event(wall, &e);
            moved = true;
        }
        while let Some((k, ts)) = px.poll_handshake_change() {
            rep.on_handshake(wall, &k, ts);
            moved = true;
        }
        if px.resync_needed() {
            let served = px.served_events(now);
            rep.resync(wall, served, &|c| px.holds_call(c));
            px.clear_resync();
            moved = true;
        }
        let mut subs = Vec::new();
        while let Some(a) = rep.poll_apply() {
            moved = true;
            match a {
                Apply::Proxy(ev) => {
                    // Refusals are counted in the proxy's PspStats.
                    let _ = px.apply_remote(now, &ev);
                }
                Apply::Handshake { key, ts } => {
                    px.replay_table_mut().merge(&[0; 12], [(key, ts)], wall_ns);
                }
                Apply::Subscriber { name, key, live } => subs.push((name, key, live)),
                Apply::Resync => {
                    let served = px.served_events(now);
                    rep.resync(wall, served, &|c| px.holds_call(c));
                }
            }
        }
        for (nm, key, live) in subs {
            self.set_store(p, &nm, key, live);
        }
        moved
    }

    /// Drains proxy `p`'s replicator onto the links.
    pub(super) fn send_sync(&mut self, p: usize) {
        let mut msgs = Vec::new();
        if let Some(r) = self.reps[p].as_mut() {
            while let Some(m) = r.poll_transmit() {
                msgs.push(m);
            }
        }
        for (to, data) in msgs {
            let q = usize::from(to) - 1;
            let key = (p.min(q), p.max(q));
            let Some(&link) = self.links.get(&key) else {
                continue;
            };
            // A Hello opens the link (a real link carries it reliably, over
            // TCP); everything after may be lost.
            let hello = data.first() == Some(&(MsgType::Hello as u8));
            if !hello && xorshift(&mut self.rng) % 1000 < u64::from(self.peer_loss_permille) {
                continue;
            }
            if !hello && self.sync_lost_to.contains(&q) {
                continue;
            }
            self.sync_messages += 1;
            self.sync_bytes += data.len() as u64;
            if self.keep_sync {
                self.sync_log.push((p, q, data.clone()));
            }
            self.schedule(
                self.peer_latency,
                Packet::SyncMsg {
                    from: p,
                    to: q,
                    link,
                    data,
                },
            );
        }
    }
}
