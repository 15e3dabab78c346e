//! A deterministic in-memory network for driving the sans-IO cores: one
//! proxy, several clients, simulated time. No sockets, so tests and
//! benchmarks can inject loss, forgery and address changes exactly.
//!
//! Support code for tests, benchmarks and experiments; it panics on misuse.

use crate::call::Name;
use crate::client::{Client, ClientConfig, Event};
use crate::crypto::SecretKey;
use crate::proxy::{Proxy, ProxyConfig, Subscribers};
use crate::session::{CallId, EpochLease, ProxyId};
use crate::wire::MAX_DATAGRAM;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The proxy's (anycast) address in the simulation.
pub const PROXY_IP: &str = "203.0.113.1";
/// The proxy's port in the simulation.
pub const PROXY_PORT: u16 = 7475;

/// A received voice frame, copied out for checking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    /// The call.
    pub call: CallId,
    /// Sender's sequence number.
    pub seq: u32,
    /// Sender's sample timestamp.
    pub timestamp: u32,
    /// Decrypted audio payload.
    pub payload: Vec<u8>,
}

/// One simulated client and what happened to it.
pub struct Node {
    /// Its name (also the name it is authorised for).
    pub name: &'static str,
    /// Its address as the proxy sees it; change it to simulate NAT rebinding.
    pub addr: SocketAddr,
    /// The client core.
    pub client: Client,
    /// Every event it produced, in order.
    pub events: Vec<Event>,
    /// Every voice frame it received, in order.
    pub heard: Vec<Heard>,
    /// Every datagram this client sent, for replay tests.
    pub sent: Vec<Vec<u8>>,
    /// How far this client's wall clock is from the network's, in
    /// nanoseconds (negative: behind), to simulate a skewed clock.
    pub clock_offset_ns: i128,
}

/// A proxy and its clients, with simulated time.
pub struct Net {
    /// The proxy core.
    pub proxy: Proxy,
    /// The clients.
    pub nodes: Vec<Node>,
    /// Simulated monotonic time.
    pub now: Instant,
    /// Simulated wall-clock time.
    pub unix_nanos: u128,
    /// The network key the proxy holds.
    pub network: SecretKey,
    /// Drop every datagram from the proxy to clients while set.
    pub drop_downstream: bool,
    /// Killed clients (see [`Net::kill`]; every node of that name), with the length of every
    /// datagram that arrived for them since, and when.
    pub dead: std::collections::HashMap<&'static str, Vec<(Instant, usize)>>,
}

/// A wall clock `offset_ns` away from `unix_nanos`.
pub fn skewed(unix_nanos: u128, offset_ns: i128) -> u128 {
    u128::try_from(unix_nanos as i128 + offset_ns).unwrap_or(0)
}

/// A valid [`Name`]; panics on an invalid one.
pub fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

impl Net {
    /// A proxy and one client per name, each authorised for its name.
    pub fn new(names: &[&'static str]) -> Self {
        Self::with_config(names, |_| {})
    }

    /// Like [`Net::new`], with the proxy's configuration changed by `tune`.
    pub fn with_config(names: &[&'static str], tune: impl FnOnce(&mut ProxyConfig)) -> Self {
        let network = SecretKey::generate();
        let now = Instant::now();
        let keys: Vec<SecretKey> = names.iter().map(|_| SecretKey::generate()).collect();
        let subs = Subscribers::new(names.iter().zip(&keys).map(|(n, k)| (name(n), k.public())));
        let mut cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), network.clone());
        tune(&mut cfg);
        let unix_nanos = 1_800_000_000_000_000_000;
        let proxy = Proxy::with_wall_clock(cfg, subs, now, unix_nanos);
        proxy.epochs().grant(EpochLease::ephemeral());
        let nodes = names
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(i, (n, k))| Node {
                name: n,
                // 200 clients per /24, so large simulations fit.
                addr: format!("198.51.{}.{}:{}", 100 + i / 200, i % 200 + 10, 40000 + i)
                    .parse()
                    .unwrap(),
                client: Client::new(ClientConfig::new(k, network.public())),
                events: Vec::new(),
                heard: Vec::new(),
                sent: Vec::new(),
                clock_offset_ns: 0,
            })
            .collect();
        Self {
            proxy,
            nodes,
            now,
            unix_nanos,
            network,
            drop_downstream: false,
            dead: Default::default(),
        }
    }

    /// The proxy's IP address.
    pub fn proxy_ip(&self) -> IpAddr {
        PROXY_IP.parse().unwrap()
    }

    /// Index of the node called `n`.
    pub fn idx(&self, n: &str) -> usize {
        self.nodes.iter().position(|x| x.name == n).unwrap()
    }

    /// What the proxy knows about the session of client `n`.
    pub fn session_info(&self, n: &str) -> crate::proxy::SessionInfo {
        let key = self.nodes[self.idx(n)].client.public_key();
        self.proxy
            .sessions()
            .into_iter()
            .find(|s| s.client_key == key)
            .expect("the client has a session")
    }

    /// Kills client `n` as SIGKILL would: from now on it sends nothing and
    /// nothing reaches it (arrivals are only recorded, in `dead`).
    pub fn kill(&mut self, n: &str) {
        let name = self.nodes[self.idx(n)].name;
        self.dead.entry(name).or_default();
    }

    /// What arrived for killed client `n` (length, when) since it was killed.
    pub fn dead_rx(&self, n: &str) -> &[(Instant, usize)] {
        self.dead.get(n).map_or(&[], Vec::as_slice)
    }

    /// The node called `n`.
    pub fn node(&mut self, n: &str) -> &mut Node {
        let i = self.idx(n);
        &mut self.nodes[i]
    }

    /// Delivers a datagram to the proxy as if from `src`, then everything
    /// that follows from it.
    pub fn deliver_to_proxy(&mut self, src: SocketAddr, pkt: &[u8]) {
        let mut d = pkt.to_vec();
        let mut out = [0u8; MAX_DATAGRAM];
        let ip = self.proxy_ip();
        if let Some(t) = self
            .proxy
            .handle_datagram(self.now, src, Some(ip), &mut d, &mut out)
        {
            assert_eq!(
                t.src_ip,
                Some(ip),
                "proxy must answer from the address used"
            );
            let data = out[..t.len].to_vec();
            self.deliver_to_client(t.dst, &data);
        }
    }

    fn deliver_to_client(&mut self, dst: SocketAddr, pkt: &[u8]) {
        if self.drop_downstream {
            return;
        }
        let now = self.now;
        let Some(node) = self.nodes.iter_mut().find(|n| n.addr == dst) else {
            return;
        };
        if let Some(rx) = self.dead.get_mut(node.name) {
            rx.push((now, pkt.len()));
            return;
        }
        let mut d = pkt.to_vec();
        if let Some(v) = node.client.handle_datagram(now, &mut d) {
            node.heard.push(Heard {
                call: v.call,
                seq: v.seq,
                timestamp: v.timestamp,
                payload: v.payload.to_vec(),
            });
        }
        while let Some(h) = node.client.poll_held_voice() {
            node.heard.push(Heard {
                call: h.call,
                seq: h.seq,
                timestamp: h.timestamp,
                payload: h.payload,
            });
        }
    }

    /// Moves datagrams until nobody has anything to send.
    pub fn pump(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                if self.dead.contains_key(self.nodes[i].name) {
                    continue;
                }
                while let Some(n) = self.nodes[i].client.poll_transmit(&mut buf) {
                    moved = true;
                    let pkt = buf[..n].to_vec();
                    self.nodes[i].sent.push(pkt.clone());
                    let src = self.nodes[i].addr;
                    self.deliver_to_proxy(src, &pkt);
                }
            }
            while let Some(t) = self.proxy.poll_transmit(&mut buf) {
                moved = true;
                let pkt = buf[..t.len].to_vec();
                self.deliver_to_client(t.dst, &pkt);
            }
            for n in &mut self.nodes {
                while let Some(e) = n.client.poll_event() {
                    n.events.push(e);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("network did not settle");
    }

    /// Lets simulated time pass in small steps, running every timer.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = Duration::from_millis(10).min(end - self.now);
            self.now += step;
            self.unix_nanos += step.as_nanos();
            self.proxy.handle_timeout(self.now);
            let dead = &self.dead;
            for n in self.nodes.iter_mut().filter(|n| !dead.contains_key(n.name)) {
                let wall = skewed(self.unix_nanos, n.clock_offset_ns);
                n.client.handle_timeout(self.now, wall);
            }
            self.pump();
        }
    }

    /// Connects every client and checks each got a session.
    pub fn connect_all(&mut self) {
        for n in &mut self.nodes {
            let wall = skewed(self.unix_nanos, n.clock_offset_ns);
            n.client.connect(self.now, wall);
        }
        self.pump();
        for n in &self.nodes {
            assert!(
                n.client.session().is_some(),
                "{} not connected: {:?}",
                n.name,
                n.events
            );
        }
    }

    /// Registers `as_name` from client `who` and delivers everything.
    pub fn register(&mut self, who: &str, as_name: &str) {
        let now = self.now;
        self.node(who).client.register(now, name(as_name), 300);
        self.pump();
    }

    /// Calls `to` from `from`, answers with ulaw, returns the call id.
    pub fn establish_call(&mut self, from: &str, to: &str) -> CallId {
        let now = self.now;
        let call = self
            .node(from)
            .client
            .call(now, name(to), None, vec!["ulaw".into(), "alaw".into()])
            .unwrap();
        self.pump();
        self.node(to).client.answer(now, call, "ulaw").unwrap();
        self.pump();
        call
    }

    /// Seals a voice frame without delivering it.
    pub fn send_voice_unsent(&mut self, who: &str, call: CallId, seq: u32) -> Vec<u8> {
        let now = self.now;
        let mut out = [0u8; MAX_DATAGRAM];
        let n = self
            .node(who)
            .client
            .send_voice(now, call, seq, seq * 160, &[seq as u8; 160], &mut out)
            .unwrap();
        out[..n].to_vec()
    }

    /// Seals a voice frame from `who` and delivers it to the proxy (and on).
    pub fn send_voice(&mut self, who: &str, call: CallId, seq: u32, payload: &[u8]) -> Vec<u8> {
        let now = self.now;
        let mut out = [0u8; MAX_DATAGRAM];
        let node = self.node(who);
        let n = node
            .client
            .send_voice(now, call, seq, seq * 160, payload, &mut out)
            .unwrap();
        let pkt = out[..n].to_vec();
        let src = node.addr;
        self.deliver_to_proxy(src, &pkt);
        pkt
    }
}
