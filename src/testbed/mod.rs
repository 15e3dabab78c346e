//! A deterministic multi-proxy test bed for anypsp: N proxies with distinct
//! proxy ids sharing one network key and one anycast address, clients that
//! each reach the proxy an anycast routing table names (flipped or cut at a
//! chosen instant), client links with latency, jitter (reordering) and loss,
//! peer links with latency, loss and partitions (in order: the real link is
//! TCP), per-proxy wall clocks that may differ, and time that jumps to the
//! next deadline any core asks for (so a wrong `poll_timeout` shows as a
//! stalled scenario). Randomness (loss, jitter) is seeded.
//!
//! Replication runs on the real sync engine: each proxy has a
//! [`Replicator`] (docs/anypsp-protocol.md Section 16) fed with its events;
//! the engines' messages travel the peer links (latency, seeded loss,
//! partitions: a partition takes the link down, healing brings it up with
//! a new Hello) and what they report is applied to the proxies. Peer
//! messages ([`Proxy::poll_peer_transmit`]) travel the same links.
//!
//! Support code for tests; it panics on misuse.

use crate::call::Name;
use crate::client::{Client, ClientConfig, Event};
use crate::crypto::PublicKey;
use crate::crypto::SecretKey;
use crate::proxy::{Proxy, ProxyConfig};
use crate::session::{CallId, ProxyId, SenderId, SessionId};
use crate::sync::bridge::Replicator;
use crate::wire::transport::TransportHeader;
use crate::wire::{classify, MessageType, MAX_DATAGRAM};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

#[cfg(test)]
mod causes;
mod scenario;
mod sync;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The anycast address every proxy answers on.
pub const ANYCAST: &str = "203.0.113.1";

/// A voice frame a client received, with the proxy that sealed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The call.
    pub call: CallId,
    /// Sender's sequence number.
    pub seq: u32,
    /// Decrypted payload.
    pub payload: Vec<u8>,
    /// The proxy sender id on the packet.
    pub via: SenderId,
    /// When it arrived.
    pub at: Instant,
}

/// One client site.
pub struct Site {
    /// Its name (also the name it is authorised for).
    pub name: &'static str,
    /// Its public address (its NAT binding).
    pub addr: SocketAddr,
    /// The client core.
    pub client: Client,
    /// Every event it produced.
    pub events: Vec<Event>,
    /// Every voice frame it received.
    pub heard: Vec<Frame>,
    /// Every datagram it sent, in order (for replay tests).
    pub sent: Vec<Vec<u8>>,
    /// Sequence numbers of its own voice frames lost on the way up: on its
    /// link ([`Bed::access_loss_permille`]), into a cut route, or at a dead
    /// proxy.
    pub voice_lost_up: Vec<u32>,
    /// The client counter of each voice frame it sent, with its sequence
    /// number (to tell which frame a proxy that died did not get).
    voice_counters: HashMap<u64, u32>,
    /// Datagrams to it lost on its link from the proxy.
    pub lost_down: u64,
}

enum Packet {
    ToProxy {
        p: usize,
        src: SocketAddr,
        data: Vec<u8>,
    },
    ToClient {
        dst: SocketAddr,
        data: Vec<u8>,
    },
    PeerMsg {
        from: usize,
        to: usize,
        data: Vec<u8>,
    },
    SyncMsg {
        from: usize,
        to: usize,
        /// The link's generation when sent: a message of a link that went
        /// down is not delivered on its successor.
        link: u64,
        data: Vec<u8>,
    },
    PeerDown {
        to: usize,
        peer: ProxyId,
    },
}

/// The test bed.
pub struct Bed {
    /// The proxies; index i has proxy id i + 1; `None` once killed.
    pub proxies: Vec<Option<Proxy>>,
    /// The client sites.
    pub sites: Vec<Site>,
    /// Anycast routing: which proxy each site's packets reach (`None`: cut).
    pub route: Vec<Option<usize>>,
    /// Simulated monotonic time.
    pub now: Instant,
    start: Instant,
    /// Wall clock at `start`, ns since the Unix epoch.
    pub unix_start: u128,
    /// One-way client <-> proxy latency.
    pub access_latency: Duration,
    /// Each datagram on a client link (either way) is delayed by a further
    /// uniform random [0, `access_jitter`): datagrams sent closer together
    /// than that may arrive reordered. Zero by default.
    pub access_jitter: Duration,
    /// Probability that a datagram on a client link (either way) is lost,
    /// in 1/1000. Zero by default.
    pub access_loss_permille: u32,
    /// Datagrams lost on client links, both ways.
    pub access_lost: u64,
    /// One-way proxy <-> proxy latency.
    pub peer_latency: Duration,
    /// Probability that a peer or sync message is lost, in 1/1000 (the
    /// sync engine repairs lost replication by anti-entropy).
    pub peer_loss_permille: u32,
    /// How long after a kill the other proxies' links report it dead
    /// ([`Proxy::peer_down`]).
    pub peer_detect: Duration,
    /// Pairs of proxy indexes that cannot reach each other.
    pub partitions: HashSet<(usize, usize)>,
    rng: u64,
    queue: BTreeMap<(Instant, u64), Packet>,
    seq: u64,
    /// (session, sender, counter) of every transport packet sent by anyone.
    pub nonces: HashSet<(SessionId, SenderId, u64)>,
    /// Transport packets whose (session, sender, counter) was seen before.
    pub nonce_reuses: u64,
    /// Peer messages sent (all kinds).
    pub peer_messages: u64,
    /// Sync messages sent between the replicators (not lost).
    pub sync_messages: u64,
    /// Bytes of those sync messages.
    pub sync_bytes: u64,
    /// Keep every sync message sent in `sync_log` (for replay tests).
    pub keep_sync: bool,
    /// (from, to, bytes) of every sync message sent while `keep_sync`.
    pub sync_log: Vec<(usize, usize, Vec<u8>)>,
    /// The replicator of each proxy (`None` once killed).
    pub reps: Vec<Option<Replicator>>,
    /// Each proxy's subscriber store (name, key): what the shell would keep
    /// in SQLite.
    pub stores: Vec<BTreeSet<(Name, PublicKey)>>,
    /// Per proxy: the first send epoch its next life may use (its durable
    /// lease, as anytund persists it; 0 = never killed).
    lease_next: Vec<u64>,
    /// Pairs (a < b) whose sync link is up, with its generation.
    links: BTreeMap<(usize, usize), u64>,
    link_gen: u64,
    network: SecretKey,
    tune: Box<dyn Fn(&mut ProxyConfig)>,
    /// Client packets that reached a dead or cut proxy.
    pub lost_upstream: u64,
    /// Proxy indexes whose incoming sync messages are lost (but Hello),
    /// while the links stay up: replication lost on the way, for a moment
    /// (anti-entropy repairs it later). Peer messages still arrive.
    pub sync_lost_to: HashSet<usize>,
    /// Per proxy: how far its wall clock (the proxy's and its replicator's)
    /// is ahead of the bed's, in ms (negative: behind). See
    /// [`Bed::set_clock_offset`].
    clock_offset_ms: Vec<i64>,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// A valid [`Name`]; panics on an invalid one.
pub fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

impl Bed {
    /// `proxies` proxies and one client per name, each authorised for its
    /// name; client i reaches proxy `i % proxies` at first. `seed` drives
    /// every random choice.
    pub fn new(proxies: usize, names: &[&'static str], seed: u64) -> Self {
        Self::with_config(proxies, names, seed, |_| {})
    }

    /// Like [`Bed::new`], with every proxy's configuration changed by `tune`.
    pub fn with_config(
        proxies: usize,
        names: &[&'static str],
        seed: u64,
        tune: impl Fn(&mut ProxyConfig) + 'static,
    ) -> Self {
        let network = SecretKey::generate();
        let now = Instant::now();
        let unix_start = 1_800_000_000_000_000_000;
        let keys: Vec<SecretKey> = names.iter().map(|_| SecretKey::generate()).collect();
        let store: BTreeSet<(Name, PublicKey)> = names
            .iter()
            .zip(&keys)
            .map(|(n, k)| (name(n), k.public()))
            .collect();
        let n = proxies;
        let tune: Box<dyn Fn(&mut ProxyConfig)> = Box::new(tune);
        let sites = names
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(i, (nm, k))| Site {
                name: nm,
                addr: format!("198.51.100.{}:{}", 10 + i, 40000 + i)
                    .parse()
                    .unwrap(),
                client: Client::new(ClientConfig::new(k, network.public())),
                events: Vec::new(),
                heard: Vec::new(),
                sent: Vec::new(),
                voice_lost_up: Vec::new(),
                voice_counters: HashMap::new(),
                lost_down: 0,
            })
            .collect();
        let mut bed = Self {
            proxies: (0..n).map(|_| None).collect(),
            sites,
            route: (0..names.len()).map(|i| Some(i % n)).collect(),
            now,
            start: now,
            unix_start,
            access_latency: Duration::from_millis(5),
            access_jitter: Duration::ZERO,
            access_loss_permille: 0,
            access_lost: 0,
            peer_latency: Duration::from_millis(10),
            peer_loss_permille: 0,
            peer_detect: Duration::from_secs(1),
            partitions: HashSet::new(),
            rng: seed.max(1),
            queue: BTreeMap::new(),
            seq: 0,
            nonces: HashSet::new(),
            nonce_reuses: 0,
            peer_messages: 0,
            sync_messages: 0,
            sync_bytes: 0,
            keep_sync: false,
            sync_log: Vec::new(),
            lost_upstream: 0,
            sync_lost_to: HashSet::new(),
            clock_offset_ms: vec![0; n],
            reps: (0..n).map(|_| None).collect(),
            stores: vec![store; n],
            lease_next: vec![0; n],
            links: BTreeMap::new(),
            link_gen: 0,
            network,
            tune,
        };
        for i in 0..n {
            bed.start_proxy(i);
        }
        bed.sync_links();
        bed
    }

    /// Index of the site called `n`.
    pub fn idx(&self, n: &str) -> usize {
        self.sites.iter().position(|s| s.name == n).unwrap()
    }

    /// The site called `n`.
    pub fn site(&mut self, n: &str) -> &mut Site {
        let i = self.idx(n);
        &mut self.sites[i]
    }

    /// Proxy `i` (panics if killed).
    pub fn proxy(&self, i: usize) -> &Proxy {
        self.proxies[i].as_ref().expect("proxy alive")
    }

    /// Handshakes accepted by the live proxies.
    pub fn handshakes(&self) -> u64 {
        self.proxies
            .iter()
            .flatten()
            .map(|p| p.stats().handshakes_accepted)
            .sum()
    }

    /// Kills proxy `i` as SIGKILL would: it sends nothing more and what
    /// arrives for it is lost.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = &self.proxies[i] {
            // What anytund's lease file keeps across a restart.
            self.lease_next[i] = p.epochs().next();
        }
        self.proxies[i] = None;
        self.reps[i] = None;
        let peer = ProxyId::new(i as u16 + 1).unwrap();
        for to in 0..self.proxies.len() {
            if self.proxies[to].is_some() {
                self.schedule(self.peer_detect, Packet::PeerDown { to, peer });
            }
        }
    }

    /// Routes site `n` to proxy `p` from now on (`None`: cut).
    pub fn set_route(&mut self, n: &str, p: Option<usize>) {
        let i = self.idx(n);
        self.route[i] = p;
    }

    fn wall(&self) -> u128 {
        self.unix_start + (self.now - self.start).as_nanos()
    }

    /// Proxy `p`'s wall clock now, ns since the Unix epoch.
    fn wall_of(&self, p: usize) -> u128 {
        let off = i128::from(self.clock_offset_ms[p]) * 1_000_000;
        (self.wall() as i128 + off) as u128
    }

    /// Sets proxy `p`'s wall clock `ms` ahead of the bed's (negative:
    /// behind), now and after a restart; the proxy and its replicator both
    /// read it. Set it before clients connect to `p`: a proxy refuses
    /// handshakes time-stamped before its start on its own clock.
    pub fn set_clock_offset(&mut self, p: usize, ms: i64) {
        self.clock_offset_ms[p] = ms;
        let (now, wall) = (self.now, self.wall_of(p));
        if let Some(px) = self.proxies[p].as_mut() {
            px.set_wall_clock(now, wall);
        }
    }

    /// The delay of one datagram on a client link: the latency plus the
    /// seeded jitter; `None` if the datagram is lost.
    fn access_delay(&mut self) -> Option<Duration> {
        if self.access_loss_permille > 0
            && xorshift(&mut self.rng) % 1000 < u64::from(self.access_loss_permille)
        {
            self.access_lost += 1;
            return None;
        }
        let mut d = self.access_latency;
        let j = self.access_jitter.as_micros() as u64;
        if j > 0 {
            d += Duration::from_micros(xorshift(&mut self.rng) % j);
        }
        Some(d)
    }

    fn schedule(&mut self, delay: Duration, p: Packet) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), p);
    }

    fn note_nonce(&mut self, data: &[u8]) {
        if classify(data) == Ok(MessageType::Transport) {
            if let Ok(h) = TransportHeader::parse(data) {
                if !self.nonces.insert((h.session, h.sender, h.counter)) {
                    self.nonce_reuses += 1;
                }
            }
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        a != b
            && self.proxies[b].is_some()
            && !self.partitions.contains(&(a, b))
            && !self.partitions.contains(&(b, a))
    }

    /// Sends a datagram from site `i` along its current route; false if it
    /// was lost on the client link or into a cut route (counted in
    /// `lost_upstream`).
    fn client_send(&mut self, i: usize, data: Vec<u8>) -> bool {
        self.note_nonce(&data);
        self.sites[i].sent.push(data.clone());
        match self.route[i] {
            Some(p) => {
                let Some(delay) = self.access_delay() else {
                    return false;
                };
                let src = self.sites[i].addr;
                self.schedule(delay, Packet::ToProxy { p, src, data });
            }
            None => {
                self.lost_upstream += 1;
                return false;
            }
        }
        true
    }

    fn flush_client(&mut self, i: usize) {
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(n) = self.sites[i].client.poll_transmit(&mut buf) {
            self.client_send(i, buf[..n].to_vec());
        }
        while let Some(e) = self.sites[i].client.poll_event() {
            self.sites[i].events.push(e);
        }
    }

    fn flush_proxy(&mut self, p: usize) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        let mut peer = Vec::new();
        // Until both are quiet: applying a revocation makes events.
        loop {
            if let Some(px) = self.proxies[p].as_mut() {
                while let Some(t) = px.poll_transmit(&mut buf) {
                    out.push((t, buf[..t.len].to_vec()));
                }
                while let Some(m) = px.poll_peer_transmit() {
                    peer.push(m);
                }
            }
            if !self.feed_replicator(p) {
                break;
            }
        }
        for (t, data) in out {
            self.proxy_sent(t, data);
        }
        // Sync messages go before the peer messages they explain (a call's
        // start before the Invite handed to the callee's proxy).
        self.send_sync(p);
        for (to, data) in peer {
            let q = usize::from(to.get()) - 1;
            self.peer_messages += 1;
            if q >= self.proxies.len() || !self.linked(p, q) {
                continue;
            }
            if xorshift(&mut self.rng) % 1000 < u64::from(self.peer_loss_permille) {
                continue;
            }
            self.schedule(
                self.peer_latency,
                Packet::PeerMsg {
                    from: p,
                    to: q,
                    data,
                },
            );
        }
    }

    fn proxy_sent(&mut self, t: crate::proxy::Transmit, data: Vec<u8>) {
        assert_eq!(
            t.src_ip,
            Some(ANYCAST.parse::<IpAddr>().unwrap()),
            "a proxy answers from the anycast address"
        );
        self.note_nonce(&data);
        match self.access_delay() {
            Some(delay) => self.schedule(delay, Packet::ToClient { dst: t.dst, data }),
            None => {
                if let Some(s) = self.sites.iter_mut().find(|s| s.addr == t.dst) {
                    s.lost_down += 1;
                }
            }
        }
    }

    fn deliver(&mut self, pkt: Packet) {
        let now = self.now;
        let anycast: IpAddr = ANYCAST.parse().unwrap();
        let mut out = [0u8; MAX_DATAGRAM];
        match pkt {
            Packet::ToProxy { p, src, mut data } => {
                let Some(px) = self.proxies[p].as_mut() else {
                    self.lost_upstream += 1;
                    let counter = TransportHeader::parse(&data).map(|h| h.counter);
                    if let Some(s) = self.sites.iter_mut().find(|s| s.addr == src) {
                        if let Some(seq) = counter.ok().and_then(|c| s.voice_counters.get(&c)) {
                            s.voice_lost_up.push(*seq);
                        }
                    }
                    return;
                };
                if let Some(t) = px.handle_datagram(now, src, Some(anycast), &mut data, &mut out) {
                    let d = out[..t.len].to_vec();
                    self.proxy_sent(t, d);
                }
                self.flush_proxy(p);
            }
            Packet::ToClient { dst, mut data } => {
                let Some(i) = self.sites.iter().position(|s| s.addr == dst) else {
                    return;
                };
                let via = TransportHeader::parse(&data).map(|h| h.sender).ok();
                let s = &mut self.sites[i];
                if let Some(v) = s.client.handle_datagram(now, &mut data) {
                    let f = Frame {
                        call: v.call,
                        seq: v.seq,
                        payload: v.payload.to_vec(),
                        via: via.expect("a voice frame is a transport packet"),
                        at: now,
                    };
                    s.heard.push(f);
                }
                // Voice that came before its Answer, played once it came.
                while let Some(h) = s.client.poll_held_voice() {
                    s.heard.push(Frame {
                        call: h.call,
                        seq: h.seq,
                        payload: h.payload,
                        via: via.expect("an Answer is a transport packet"),
                        at: now,
                    });
                }
                self.flush_client(i);
            }
            Packet::PeerMsg { from, to, data } => {
                let from_id = ProxyId::new(from as u16 + 1).unwrap();
                let Some(px) = self.proxies[to].as_mut() else {
                    return;
                };
                if let Some(t) = px.handle_peer_message(now, from_id, &data, &mut out) {
                    let d = out[..t.len].to_vec();
                    self.proxy_sent(t, d);
                }
                self.flush_proxy(to);
            }
            Packet::PeerDown { to, peer } => {
                if let Some(px) = self.proxies[to].as_mut() {
                    px.peer_down(now, peer);
                    self.flush_proxy(to);
                }
            }
            Packet::SyncMsg {
                from,
                to,
                link,
                data,
            } => {
                let key = (from.min(to), from.max(to));
                if link != sync::INJECTED && self.links.get(&key) != Some(&link) {
                    return;
                }
                let wall = self.wall_ms_of(to);
                let from_id = from as u16 + 1;
                let Some(rep) = self.reps[to].as_mut() else {
                    return;
                };
                // Refusals are counted in the engine's stats.
                let _ = rep.handle_message(wall, from_id, &data);
                self.flush_proxy(to);
            }
        }
    }

    /// The next instant anything is due: a packet in flight or a deadline a
    /// core asked for.
    fn next_due(&self) -> Option<Instant> {
        let mut t = self.queue.keys().next().map(|k| k.0);
        for p in self.proxies.iter().flatten() {
            let d = p.poll_timeout();
            t = Some(t.map_or(d, |x| x.min(d)));
        }
        for s in &self.sites {
            if let Some(d) = s.client.poll_timeout() {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        }
        for (p, r) in self.reps.iter().enumerate() {
            if let Some(ms) = r.as_ref().and_then(Replicator::poll_timeout) {
                let d = self.instant_of_ms(p, ms);
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        }
        t
    }

    /// Runs everything due up to `until`, jumping from deadline to deadline.
    pub fn run_until(&mut self, until: Instant) {
        // What a test made a client do directly (send_dtmf, hangup...).
        for i in 0..self.sites.len() {
            self.flush_client(i);
        }
        let mut same = 0;
        let mut last = self.now;
        for _ in 0..10_000_000 {
            let Some(next) = self.next_due() else { break };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            same = if next == last { same + 1 } else { 0 };
            last = next;
            // A core that asks for a deadline and does nothing about it
            // when it comes would spin here: a wrong poll_timeout fails.
            assert!(same < 100_000, "a core's poll_timeout stays at {next:?}");
            while let Some((&k, _)) = self.queue.first_key_value() {
                if k.0 > self.now {
                    break;
                }
                let pkt = self.queue.remove(&k).unwrap();
                self.deliver(pkt);
            }
            let now = self.now;
            self.sync_links();
            for p in 0..self.proxies.len() {
                let due = self.proxies[p]
                    .as_ref()
                    .is_some_and(|x| x.poll_timeout() <= now);
                if due {
                    self.proxies[p].as_mut().unwrap().handle_timeout(now);
                    self.flush_proxy(p);
                }
                let wall = self.wall_ms_of(p);
                let due = self.reps[p]
                    .as_ref()
                    .and_then(Replicator::poll_timeout)
                    .is_some_and(|t| t <= wall);
                if due {
                    self.reps[p].as_mut().unwrap().handle_timeout(wall);
                    self.flush_proxy(p);
                }
            }
            let wall = self.wall();
            for i in 0..self.sites.len() {
                if self.sites[i]
                    .client
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
                {
                    self.sites[i].client.handle_timeout(now, wall);
                    self.flush_client(i);
                }
            }
        }
        self.now = self.now.max(until);
        // The O(1) count of what each proxy carries matches a recount.
        for p in self.proxies.iter().flatten() {
            assert_eq!(p.carried_sessions(), p.carried_sessions_counted());
        }
    }

    /// Delivers `data` to proxy `p` as if from `src` (an attacker's
    /// injection or replay), after the access latency.
    pub fn inject(&mut self, p: usize, src: SocketAddr, data: Vec<u8>) {
        self.schedule(self.access_latency, Packet::ToProxy { p, src, data });
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Connects every client and runs until each has a session.
    pub fn connect_all(&mut self) {
        let wall = self.wall();
        for i in 0..self.sites.len() {
            let now = self.now;
            self.sites[i].client.connect(now, wall);
            self.flush_client(i);
        }
        self.run_for(Duration::from_millis(200));
        for s in &self.sites {
            assert!(s.client.session().is_some(), "{} not connected", s.name);
        }
    }

    /// Registers `as_name` from site `who` and runs 200 ms.
    pub fn register(&mut self, who: &str, as_name: &str) {
        let i = self.idx(who);
        let now = self.now;
        self.sites[i].client.register(now, name(as_name), 300);
        self.flush_client(i);
        self.run_for(Duration::from_millis(200));
    }

    /// Calls `to` from `from` (ulaw), runs until it rings, answers, runs
    /// until answered; returns the call id.
    pub fn establish_call(&mut self, from: &str, to: &str) -> CallId {
        let (a, b) = (self.idx(from), self.idx(to));
        let now = self.now;
        let codecs = vec!["ulaw".into()];
        let call = self.sites[a]
            .client
            .call(now, name(to), None, codecs)
            .unwrap();
        self.flush_client(a);
        self.run_for(Duration::from_millis(200));
        let now = self.now;
        self.sites[b].client.answer(now, call, "ulaw").unwrap();
        self.flush_client(b);
        self.run_for(Duration::from_millis(200));
        call
    }

    /// The payload site `who` sends as frame `seq` (distinct per site).
    pub fn payload(&self, who: &str, seq: u32) -> Vec<u8> {
        let i = self.idx(who) as u32;
        (0..160u32)
            .map(|k| (seq.wrapping_mul(31) ^ (i * 97) ^ k) as u8)
            .collect()
    }

    /// Seals voice frame `seq` from `who` and sends it along its route.
    pub fn send_voice(&mut self, who: &str, call: CallId, seq: u32) {
        let i = self.idx(who);
        let payload = self.payload(who, seq);
        let now = self.now;
        let mut out = [0u8; MAX_DATAGRAM];
        let n = self.sites[i]
            .client
            .send_voice(now, call, seq, seq * 160, &payload, &mut out)
            .unwrap();
        if let Ok(h) = TransportHeader::parse(&out[..n]) {
            self.sites[i].voice_counters.insert(h.counter, seq);
        }
        if !self.client_send(i, out[..n].to_vec()) {
            self.sites[i].voice_lost_up.push(seq);
        }
    }

    /// Both sites send one frame every 20 ms, frames `from..to`, and the
    /// network runs between; `each` runs before every frame (to flip a route
    /// or kill a proxy at a chosen frame).
    pub fn talk(
        &mut self,
        a: &str,
        b: &str,
        call: CallId,
        seqs: std::ops::Range<u32>,
        mut each: impl FnMut(&mut Self, u32),
    ) {
        for seq in seqs {
            each(self, seq);
            self.send_voice(a, call, seq);
            self.send_voice(b, call, seq);
            self.run_for(Duration::from_millis(20));
        }
    }

    /// The number of voice frames relayed by all live proxies.
    pub fn media_relayed(&self) -> u64 {
        self.proxies
            .iter()
            .flatten()
            .map(|p| p.stats().media_relayed)
            .sum()
    }

    /// Where each site's session is served, per live proxy's view.
    pub fn serving_views(&self, n: &str) -> HashMap<usize, Option<ProxyId>> {
        let sid = self.sites[self.idx(n)].client.session().unwrap();
        self.proxies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.serving_proxy(sid))))
            .collect()
    }
}
