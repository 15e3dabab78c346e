//! `anytun demo --loopback --proxies N`: N proxies (each a
//! [`Node`](crate::runtime::node::Node) on its own threads) members of one
//! anypsp network, sharing one UDP port on loopback with SO_REUSEPORT (the
//! kernel gives each client flow to one of them and moves it when that one
//! is gone, much like anycast); alice and bob on different proxies; a call
//! between them; the proxy serving bob is stopped mid-call. The report says
//! who served whom and what happened: the largest voice gap after the kill,
//! calls dropped, handshakes repeated.

use crate::call::{Cause, Name};
use crate::client::{ClientConfig, Event};
use crate::crypto::SecretKey;
use crate::proxy::{Proxy, ProxyConfig, Subscribers};
use crate::runtime::client::ClientRuntime;
use crate::runtime::node::{fingerprint_key, Node, NodeOptions, SyncSetup, Udp, APPLY_BATCH};
use crate::runtime::udp::BindOptions;
use crate::session::{EpochLease, ProxyId};
use crate::sync::link::LinkConfig;
use crate::sync::members::Member;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// What the failover demo measured (the `--json` output).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FailoverReport {
    /// Every check passed: the call went on both ways after the kill, with
    /// no handshake and no call set-up repeated.
    pub ok: bool,
    /// Proxies started.
    pub proxies: u32,
    /// The proxy (id) that served alice, the caller.
    pub alice_proxy: u16,
    /// The proxy (id) that served bob, the callee, and was stopped.
    pub bob_proxy: u16,
    /// The proxy that took bob over, if one did.
    pub bob_taken_over_by: Option<u16>,
    /// Voice frames heard after the kill: by alice, by bob.
    pub frames_after_kill: [u64; 2],
    /// Voice frames sent each way after the kill.
    pub frames_sent_after_kill: u64,
    /// What the kill cost.
    pub failover: Failover,
    /// What went wrong, if anything.
    pub failures: Vec<String>,
}

/// The `"failover"` object of `--json`, of both demos (loopback
/// `--failover` and the lab's): whole milliseconds and counts.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Failover {
    /// Largest gap between voice frames heard after the kill, either way,
    /// whole ms rounded up.
    pub gap_ms: u64,
    /// Calls that ended because of the kill.
    pub calls_dropped: u64,
    /// Handshakes made again after the kill.
    pub handshakes_repeated: u64,
}

type Heard = Arc<Mutex<Vec<Instant>>>;

fn member(id: u16, key: &SecretKey, addr: SocketAddr) -> Member {
    Member {
        node: ProxyId::new(id).expect("1.."),
        address: addr,
        public_key: key.public(),
        region: String::new(),
        failure_domain: String::new(),
        failover: Vec::new(),
        revoked: false,
    }
}

fn free_port(udp: bool) -> Result<u16, String> {
    let e = |e: std::io::Error| e.to_string();
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .map_err(e)?
            .local_addr()
            .map_err(e)?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(e)?
            .local_addr()
            .map_err(e)?
            .port()
    })
}

async fn wait_event(
    rx: &mut UnboundedReceiver<Event>,
    f: impl Fn(&Event) -> bool,
) -> Result<Event, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if f(&e) => return Ok(e),
            Ok(Some(Event::Disconnected(e))) => return Err(format!("disconnected: {e}")),
            Ok(Some(_)) => {}
            Ok(None) => return Err("client stopped".into()),
            Err(_) => return Err("timed out".into()),
        }
    }
}

fn handshakes(nodes: &[Option<Node>]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| {
            n.as_ref()
                .and_then(|n| n.snapshot())
                .map_or(0, |s| s.stats.handshakes_accepted)
        })
        .collect()
}

async fn which(nodes: &[Option<Node>], before: &[u64]) -> Option<usize> {
    for _ in 0..500 {
        let now = handshakes(nodes);
        if let Some(i) = (0..now.len()).find(|&i| now[i] > before[i]) {
            return Some(i);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn phone(
    key: &SecretKey,
    network: &SecretKey,
    udp: SocketAddr,
) -> Result<(ClientRuntime, UnboundedReceiver<Event>, Heard), String> {
    let heard: Heard = Arc::default();
    let h = heard.clone();
    let (rt, mut rx) = ClientRuntime::start(
        ClientConfig::new(key.clone(), network.public()),
        udp,
        Box::new(move |_| {
            h.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Instant::now())
        }),
    )
    .map_err(|e| e.to_string())?;
    wait_event(&mut rx, |e| matches!(e, Event::Connected { .. })).await?;
    Ok((rt, rx, heard))
}

fn gap_after(heard: &Heard, from: Instant) -> (u64, u64) {
    let h = heard.lock().unwrap_or_else(|e| e.into_inner());
    let mut prev = from;
    let mut gap = Duration::ZERO;
    let mut n = 0;
    for t in h.iter().filter(|t| **t >= from) {
        gap = gap.max(t.duration_since(prev));
        prev = *t;
        n += 1;
    }
    (gap.as_millis() as u64, n)
}

/// Runs the demo with `n` proxies (2..=8) and `seconds` of voice. Must run
/// inside a multi-thread tokio runtime (the nodes have their own).
pub async fn run(n: usize, seconds: f64) -> Result<FailoverReport, String> {
    let n = n.clamp(2, 8);
    let network = SecretKey::generate();
    let (alice_key, bob_key) = (SecretKey::generate(), SecretKey::generate());
    let subs = Subscribers::new([
        (Name::new("alice").expect("valid"), alice_key.public()),
        (Name::new("bob").expect("valid"), bob_key.public()),
    ]);
    let udp: SocketAddr = format!("127.0.0.1:{}", free_port(true)?)
        .parse()
        .expect("literal");
    let keys: Vec<SecretKey> = (0..n).map(|_| SecretKey::generate()).collect();
    let links: Vec<SocketAddr> = (0..n)
        .map(|_| free_port(false).map(|p| SocketAddr::from(([127, 0, 0, 1], p))))
        .collect::<Result<_, _>>()?;
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for i in 0..n {
        let id = i as u16 + 1;
        let mut node = Node::new(NodeOptions {
            worker_threads: 1,
            thread_name: format!("demo-proxy-{id}"),
            ..NodeOptions::default()
        })
        .map_err(|e| e.to_string())?;
        let core = Proxy::new(
            ProxyConfig::new(ProxyId::new(id).expect("1.."), network.clone()),
            subs.clone(),
            Instant::now(),
        );
        core.epochs().grant(EpochLease::ephemeral());
        let peers = (0..n)
            .filter(|j| *j != i)
            .map(|j| member(j as u16 + 1, &keys[j], links[j]))
            .collect();
        let sync = SyncSetup {
            node_key: keys[i].clone(),
            listen: links[i],
            peers,
            fp_key: fingerprint_key(&network),
            startup_timeout: Duration::from_secs(10),
            solo_grace: Duration::from_secs(600),
            peer_detect: Duration::from_secs(1),
            link: LinkConfig::default(),
            apply_batch: APPLY_BATCH,
            subscribers: None,
        };
        let udp = Udp::Deferred {
            listen: vec![udp],
            opts: BindOptions { reuse_port: true },
        };
        node.start(core, udp, Some(sync))
            .map_err(|e| e.to_string())?;
        nodes.push(Some(node));
    }
    let result = scenario(&mut nodes, &network, &alice_key, &bob_key, udp, seconds).await;
    // Stopping joins threads: off the async workers.
    let rest: Vec<Node> = nodes.into_iter().flatten().collect();
    let _ = tokio::task::spawn_blocking(move || {
        for node in rest {
            node.stop();
        }
    })
    .await;
    result.map(|mut r| {
        r.proxies = n as u32;
        r
    })
}

async fn scenario(
    nodes: &mut [Option<Node>],
    network: &SecretKey,
    alice_key: &SecretKey,
    bob_key: &SecretKey,
    udp: SocketAddr,
    seconds: f64,
) -> Result<FailoverReport, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in nodes.iter().flatten() {
        while !node.readiness().borrow().ready() {
            if Instant::now() > deadline {
                return Err("the proxies did not link up within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let before = handshakes(nodes);
    let (alice, mut arx, a_heard) = phone(alice_key, network, udp).await?;
    let a_i = which(nodes, &before)
        .await
        .ok_or("alice's proxy not found")?;
    // Bob must land on another proxy than alice: a new socket until he does.
    let mut bob = None;
    for _ in 0..30 {
        let before = handshakes(nodes);
        let p = phone(bob_key, network, udp).await?;
        let b_i = which(nodes, &before).await.ok_or("bob's proxy not found")?;
        if b_i != a_i {
            bob = Some((p, b_i));
            break;
        }
        p.0.shutdown();
    }
    let ((bob, mut brx, b_heard), b_i) = bob.ok_or("bob always reached alice's proxy")?;
    bob.register(Name::new("bob").expect("valid"), 300).await;
    wait_event(&mut brx, |e| matches!(e, Event::Registered { .. })).await?;
    let a_node = nodes[a_i].as_ref().expect("alive");
    for _ in 0..1000 {
        if a_node.snapshot().is_some_and(|s| s.registrations >= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let call = alice
        .call(Name::new("bob").expect("valid"), None, vec!["slin".into()])
        .await
        .map_err(|e| e.to_string())?;
    let incoming = match wait_event(&mut brx, |e| matches!(e, Event::IncomingCall { .. })).await? {
        Event::IncomingCall { call, .. } => call,
        _ => unreachable!("matched"),
    };
    bob.answer(incoming, "slin")
        .await
        .map_err(|e| e.to_string())?;
    wait_event(&mut arx, |e| matches!(e, Event::Answered { .. })).await?;
    let hs_at_call: u64 = handshakes(nodes).iter().sum();
    let hs_dead = handshakes(nodes)[b_i];
    let takeovers: Vec<u64> = nodes
        .iter()
        .map(|n| {
            n.as_ref()
                .and_then(|n| n.snapshot())
                .map_or(0, |s| s.psp.takeovers)
        })
        .collect();

    let total = Duration::from_secs_f64(seconds.max(1.0));
    let kill_after = total / 3;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut seq = 0u32;
    let mut killed_at = None;
    let mut sent_after = 0u64;
    let payload = [0x55u8; 160];
    while start.elapsed() < total {
        tick.tick().await;
        seq += 1;
        let _ = alice.send_voice(call, seq, seq * 160, &payload).await;
        let _ = bob.send_voice(incoming, seq, seq * 160, &payload).await;
        if killed_at.is_some() {
            sent_after += 1;
        } else if start.elapsed() >= kill_after {
            let node = nodes[b_i].take().expect("alive");
            let _ = tokio::task::spawn_blocking(move || node.stop()).await;
            killed_at = Some(Instant::now());
            tick.reset();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = killed_at.ok_or("the demo was too short to kill a proxy")?;
    let (gap_a, heard_a) = gap_after(&a_heard, killed_at);
    let (gap_b, heard_b) = gap_after(&b_heard, killed_at);
    let mut dropped = 0;
    let mut reconnects = 0;
    for rx in [&mut arx, &mut brx] {
        while let Ok(e) = rx.try_recv() {
            match e {
                Event::CallEnded { .. } => dropped += 1,
                Event::Connected { .. } | Event::Reconnecting(_) | Event::Disconnected(_) => {
                    reconnects += 1
                }
                _ => {}
            }
        }
    }
    let hs_now: u64 = handshakes(nodes).iter().sum();
    let repeated = (hs_now + hs_dead).saturating_sub(hs_at_call) + reconnects;
    let taken_by = nodes.iter().enumerate().find_map(|(i, n)| {
        let t = n.as_ref()?.snapshot()?.psp.takeovers;
        (t > takeovers[i]).then_some(i as u16 + 1)
    });
    let _ = alice.hangup(call, Cause::Normal).await;
    let _ = wait_event(&mut brx, |e| matches!(e, Event::CallEnded { .. })).await;
    alice.shutdown();
    bob.shutdown();
    let mut failures = Vec::new();
    if heard_a * 2 < sent_after || heard_b * 2 < sent_after {
        failures.push(format!(
            "voice after the kill: alice heard {heard_a}, bob {heard_b} of {sent_after}"
        ));
    }
    if dropped > 0 {
        failures.push(format!("{dropped} call(s) dropped"));
    }
    if repeated > 0 {
        failures.push(format!("{repeated} handshake(s) repeated"));
    }
    Ok(FailoverReport {
        ok: failures.is_empty(),
        proxies: 0,
        alice_proxy: a_i as u16 + 1,
        bob_proxy: b_i as u16 + 1,
        bob_taken_over_by: taken_by,
        frames_after_kill: [heard_a, heard_b],
        frames_sent_after_kill: sent_after,
        failover: Failover {
            gap_ms: gap_a.max(gap_b),
            calls_dropped: dropped,
            handshakes_repeated: repeated,
        },
        failures,
    })
}

impl FailoverReport {
    /// The report in words.
    pub fn human(&self) -> String {
        let taken = match self.bob_taken_over_by {
            Some(p) => format!("proxy {p} took bob over on his next packet"),
            None => "no proxy took bob over".into(),
        };
        let mut s = format!(
            "{} proxies on one port; alice was served by proxy {}, bob by proxy {}.\n\
             proxy {} was stopped mid-call; {taken}.\n\
             after the stop: alice heard {} and bob {} of {} frames each way; largest gap {} ms; \
             calls dropped {}; handshakes repeated {}.\n",
            self.proxies,
            self.alice_proxy,
            self.bob_proxy,
            self.bob_proxy,
            self.frames_after_kill[0],
            self.frames_after_kill[1],
            self.frames_sent_after_kill,
            self.failover.gap_ms,
            self.failover.calls_dropped,
            self.failover.handshakes_repeated
        );
        if self.ok {
            s += "OK: the call went on with no new handshake and no new call set-up.\n";
        } else {
            for f in &self.failures {
                s += &format!("FAILED: {f}\n");
            }
        }
        s
    }
}
