//! Three real `anytund` processes on loopback, members of one anypsp
//! network, sharing one UDP address and port with SO_REUSEPORT (the kernel
//! sends each client flow to one of them, and moves it when that one dies,
//! much like anycast), each with its own peer-link and metrics ports.
//! Clients are the library's client runtime in this process.
//!
//! Figures are printed (run with `--nocapture`): the voice gap after a kill,
//! and how soon a new session is visible on all three proxies.

use anytun::call::{Cause, Name};
use anytun::client::{ClientConfig, Event};
use anytun::crypto::SecretKey;
use anytun::runtime::client::ClientRuntime;
use anytun::store::SubscriberStore;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");

/// The tests of this file start three daemons each: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// One running anytund; SIGKILLed on drop.
struct Daemon {
    id: u16,
    child: Child,
    metrics: SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    /// Waits (`within`) for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "proxy {} never said {needle:?}; it said:\n{}",
                    self.id,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line so far.
    fn log(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A counter or gauge from /metrics (`None` when it cannot be read).
    fn metric(&self, metric: &str) -> Option<u64> {
        metric_at(self.metrics, metric)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn metric_at(addr: SocketAddr, metric: &str) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let prefix = format!("{metric} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Three proxies sharing one UDP port, two subscribers in every store.
struct Net {
    _dir: tempfile::TempDir,
    network: SecretKey,
    users: Vec<(String, SecretKey)>,
    udp: SocketAddr,
    daemons: Vec<Daemon>,
    configs: Vec<std::path::PathBuf>,
}

impl Net {
    fn start(users: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let network = SecretKey::generate();
        let users: Vec<(String, SecretKey)> = users
            .iter()
            .map(|u| (u.to_string(), SecretKey::generate()))
            .collect();
        let udp: SocketAddr = format!("127.0.0.1:{}", free_port(true)).parse().unwrap();
        let node_keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
        let links: Vec<u16> = (0..3).map(|_| free_port(false)).collect();
        let metrics: Vec<u16> = (0..3).map(|_| free_port(false)).collect();
        let mut daemons = Vec::new();
        let mut configs = Vec::new();
        for i in 0..3 {
            let id = i as u16 + 1;
            // Each proxy its own state directory: its send-epoch lease file
            // lives next to its copy of the network key.
            let d = &dir.path().join(format!("p{id}"));
            network.write_new_file(&d.join("network.key")).unwrap();
            node_keys[i]
                .write_new_file(&d.join(format!("node{id}.key")))
                .unwrap();
            let store = SubscriberStore::open(&d.join(format!("subs{id}.db"))).unwrap();
            for (u, k) in &users {
                store.add(u, &k.public().0).unwrap();
            }
            let mut peers = String::new();
            for j in (0..3).filter(|j| *j != i) {
                peers += &format!(
                    "[[sync.peers]]\nid = {}\naddress = \"127.0.0.1:{}\"\npublic_key = \"{}\"\n",
                    j + 1,
                    links[j],
                    node_keys[j].public()
                );
            }
            let cfg = format!(
                "proxy_id = {id}\nlisten = [\"{udp}\"]\nreuse_port = true\n\
                 network_key = \"network.key\"\nsubscribers = \"subs{id}.db\"\n\
                 metrics_listen = \"127.0.0.1:{m}\"\nsubscriber_reload_ms = 200\n\
                 ready_file = \"ready{id}\"\n\
                 [dos]\nper_ip_rate_per_s = 100000\nper_ip_burst = 100000\n\
                 under_load_handshakes_per_s = 100000\n\
                 [sync]\nnode_key = \"node{id}.key\"\nlisten = \"127.0.0.1:{l}\"\n\
                 startup_timeout_ms = 10000\npeer_detect_ms = 1000\n{peers}",
                m = metrics[i],
                l = links[i],
            );
            let path = d.join(format!("anytund{id}.toml"));
            std::fs::write(&path, cfg).unwrap();
            configs.push(path.clone());
            daemons.push(spawn(id, &path, d, metrics[i]));
        }
        for d in &mut daemons {
            // Generous: three daemons start and reconcile on a loaded 2-core machine.
            d.wait_for("anytund: proxy", Duration::from_secs(60));
            d.wait_for("ready: created", Duration::from_secs(30));
        }
        Self {
            _dir: dir,
            network,
            users,
            udp,
            daemons,
            configs,
        }
    }

    /// Starts proxy `i` again with its config and state.
    fn restart(&mut self, i: usize) {
        let cfg = self.configs[i].clone();
        let m = self.daemons[i].metrics.port();
        self.daemons[i] = spawn(i as u16 + 1, &cfg, cfg.parent().unwrap(), m);
    }

    fn key(&self, user: &str) -> SecretKey {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .unwrap()
            .1
            .clone()
    }

    /// Handshakes accepted so far by each proxy (None: dead or unreadable).
    fn handshakes(&self) -> Vec<Option<u64>> {
        self.daemons
            .iter()
            .map(|d| d.metric("anytun_handshakes_accepted_total"))
            .collect()
    }

    /// Which proxy accepted one more handshake than in `before`.
    fn who_accepted(&self, before: &[Option<u64>]) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let now = self.handshakes();
            if let Some(i) = (0..3).find(|&i| now[i] > before[i]) {
                return Some(i);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn per_proxy(&self, metric: &str) -> Vec<Option<u64>> {
        self.daemons.iter().map(|d| d.metric(metric)).collect()
    }

    fn sum(&self, metric: &str, skip: Option<usize>) -> u64 {
        (0..3)
            .filter(|i| Some(*i) != skip)
            .filter_map(|i| self.daemons[i].metric(metric))
            .sum()
    }
}

fn spawn(id: u16, config: &Path, cwd: &Path, metrics: u16) -> Daemon {
    let mut child = Command::new(ANYTUND)
        .arg("--config")
        .arg(config)
        .current_dir(cwd)
        .env_remove("ANYTUN_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start anytund");
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Daemon {
        id,
        child,
        metrics: format!("127.0.0.1:{metrics}").parse().unwrap(),
        lines,
        seen: Vec::new(),
    }
}

/// (arrival instant, sequence number) of every voice frame a client heard.
type Heard = Arc<Mutex<Vec<(Instant, u32)>>>;

struct Phone {
    rt: ClientRuntime,
    rx: UnboundedReceiver<Event>,
    heard: Heard,
    /// Events other than the expected ones (a disconnect, a hangup).
    surprises: Vec<Event>,
}

async fn phone(net: &Net, user: &str) -> Phone {
    let heard: Heard = Arc::default();
    let h = heard.clone();
    let (rt, mut rx) = ClientRuntime::start(
        ClientConfig::new(net.key(user), net.network.public()),
        net.udp,
        Box::new(move |f| h.lock().unwrap().push((Instant::now(), f.seq))),
    )
    .unwrap();
    expect(&mut rx, |e| matches!(e, Event::Connected { .. }), 20).await;
    Phone {
        rt,
        rx,
        heard,
        surprises: Vec::new(),
    }
}

async fn expect(rx: &mut UnboundedReceiver<Event>, f: impl Fn(&Event) -> bool, s: u64) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(s);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("event in time")
            .expect("channel open");
        if f(&e) {
            return e;
        }
        assert!(!matches!(e, Event::Disconnected(_)), "unexpected {e:?}");
    }
}

impl Phone {
    /// Events that arrived meanwhile and were not looked for.
    fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            if !matches!(e, Event::Registered { .. } | Event::ClockCorrected(_)) {
                self.surprises.push(e);
            }
        }
    }
}

/// Largest gap between frames heard from `from` on (and from `from` to the
/// first frame), and frames heard from `from` on.
fn gap_after(heard: &Heard, from: Instant) -> (Duration, usize) {
    let h = heard.lock().unwrap();
    let after: Vec<Instant> = h.iter().map(|(t, _)| *t).filter(|t| *t >= from).collect();
    let mut gap = Duration::ZERO;
    let mut prev = from;
    for t in &after {
        gap = gap.max(t.duration_since(prev));
        prev = *t;
    }
    (gap, after.len())
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[test]
fn a_call_survives_the_kill_of_the_proxy_serving_one_side() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::start(&["alice", "bob"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let before = net.handshakes();
        let mut alice = phone(&net, "alice").await;
        let a_proxy = net.who_accepted(&before).expect("alice's handshake seen");
        // Bob must land on another proxy: the kernel picks by the flow's
        // hash, so a new socket (a new source port) until it does.
        let mut bob = None;
        let mut b_proxy = a_proxy;
        for _ in 0..20 {
            let before = net.handshakes();
            let p = phone(&net, "bob").await;
            b_proxy = net.who_accepted(&before).expect("bob's handshake seen");
            if b_proxy != a_proxy {
                bob = Some(p);
                break;
            }
            p.rt.close(Duration::from_millis(200)).await;
            p.rt.shutdown();
        }
        let mut bob = bob.expect("bob never reached another proxy than alice's in 20 tries");
        println!(
            "alice is served by proxy {}, bob by proxy {}",
            a_proxy + 1,
            b_proxy + 1
        );
        // Bob registers on his proxy; the binding must reach alice's
        // before she calls (replication).
        bob.rt.register(name("bob"), 300).await;
        expect(&mut bob.rx, |e| matches!(e, Event::Registered { .. }), 20).await;
        let a_metrics = net.daemons[a_proxy].metrics;
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric_at(a_metrics, "anytun_registrations").unwrap_or(0) < 1 {
            assert!(Instant::now() < deadline, "bob's binding never reached alice's proxy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let call = alice
            .rt
            .call(name("bob"), None, vec!["slin".into()])
            .await
            .unwrap();
        let incoming = match expect(
            &mut bob.rx,
            |e| matches!(e, Event::IncomingCall { .. }),
            20,
        )
        .await
        {
            Event::IncomingCall { call, .. } => call,
            _ => unreachable!(),
        };
        bob.rt.answer(incoming, "slin").await.unwrap();
        expect(&mut alice.rx, |e| matches!(e, Event::Answered { .. }), 20).await;
        println!("sessions at the call: {:?}", net.per_proxy("anytun_sessions"));
        let handshakes_at_call = net.handshakes();
        let calls_at_call = net.per_proxy("anytun_calls_started_total");

        // Voice both ways, 50 frames a second, 1.5 s before the kill and
        // 4 s after.
        let payload = [0x55u8; 160];
        let start = Instant::now();
        let mut killed_at = None;
        let mut seq = 0u32;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while start.elapsed() < Duration::from_millis(5500) {
            tick.tick().await;
            seq += 1;
            let ts = seq * 160;
            let _ = alice.rt.send_voice(call, seq, ts, &payload).await;
            let _ = bob.rt.send_voice(incoming, seq, ts, &payload).await;
            if killed_at.is_none() && start.elapsed() >= Duration::from_millis(1500) {
                // SIGKILL: no goodbye to peers or clients.
                net.daemons[b_proxy].kill();
                killed_at = Some(Instant::now());
            }
        }
        let killed_at = killed_at.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        alice.drain();
        bob.drain();
        let (gap_at_alice, after_alice) = gap_after(&alice.heard, killed_at);
        let (gap_at_bob, after_bob) = gap_after(&bob.heard, killed_at);
        let sent_after = (start + Duration::from_millis(5500)).duration_since(killed_at);
        let expected = (sent_after.as_millis() / 20) as usize;
        let handshakes = net.handshakes();
        let calls = net.per_proxy("anytun_calls_started_total");
        let takeovers = net.sum("anytun_psp_takeovers_total", Some(b_proxy));
        println!(
            "killed proxy {} (bob's) mid-call: largest voice gap heard by bob {} ms, by alice \
             {} ms; frames after the kill: bob heard {after_bob}, alice heard {after_alice} \
             (about {expected} sent each way); take-overs {takeovers}",
            b_proxy + 1,
            gap_at_bob.as_millis(),
            gap_at_alice.as_millis(),
        );
        for (i, d) in net.daemons.iter_mut().enumerate() {
            if i != b_proxy {
                let log = d.log();
                let tail: Vec<&str> = log.lines().filter(|l| l.contains("anypsp")).collect();
                println!("proxy {} anypsp log:\n  {}", i + 1, tail.join("\n  "));
            }
        }
        // The call goes on both ways: most frames sent after the kill are
        // heard (those sent into the dead socket before the kernel moved
        // the flow are lost), and nothing ended it.
        assert!(
            after_bob * 2 >= expected && after_alice * 2 >= expected,
            "voice stopped after the kill: bob heard {after_bob}, alice {after_alice} of ~{expected}"
        );
        let ended = |p: &Phone| {
            p.surprises
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::Disconnected(_)
                            | Event::Reconnecting(_)
                            | Event::Connected { .. }
                            | Event::CallEnded { .. }
                    )
                })
                .count()
        };
        assert_eq!(ended(&alice), 0, "alice: {:?}", alice.surprises);
        assert_eq!(ended(&bob), 0, "bob: {:?}", bob.surprises);
        // No handshake and no call set-up repeated: every survivor's
        // counts are what they were when the call was answered.
        for i in (0..3).filter(|i| *i != b_proxy) {
            assert!(handshakes[i].is_some() && calls[i].is_some(), "proxy {} unreadable", i + 1);
            assert_eq!(
                handshakes[i], handshakes_at_call[i],
                "proxy {} accepted a new handshake after the kill",
                i + 1
            );
            assert_eq!(calls[i], calls_at_call[i], "proxy {} set a call up again", i + 1);
        }
        assert!(takeovers >= 1, "bob's session was taken over by a survivor");

        // The killed proxy restarts: it pulls the tables before it serves
        // (its UDP socket joins the port only then), so when it serves it
        // already holds every session; the kernel may now move a flow to
        // it, and the call goes on.
        println!("sessions before the restart: {:?}", net.per_proxy("anytun_sessions"));
        let restarted_at = Instant::now();
        net.restart(b_proxy);
        let d = &mut net.daemons[b_proxy];
        d.wait_for("anytund: proxy", Duration::from_secs(60));
        let serving_after = restarted_at.elapsed();
        let held = d.metric("anytun_sessions").unwrap_or(0);
        // The fewest any survivor holds: a proxy may hold a session of its
        // own that is not replicated (yet), never fewer than the others.
        let there = (0..3)
            .filter(|i| *i != b_proxy)
            .filter_map(|i| net.daemons[i].metric("anytun_sessions"))
            .min()
            .unwrap_or(0);
        let log = net.daemons[b_proxy].log();
        let synced = log.lines().find(|l| l.contains("synced with")).unwrap_or("(none)");
        println!(
            "proxy {} restarted: serving after {} ms, holding {held} session(s) (the survivors at \
             least {there}); {synced}",
            b_proxy + 1,
            serving_after.as_millis(),
        );
        assert!(log.contains("synced with 2 peer(s)"), "{log}");
        assert!(held >= 2 && held == there, "restarted proxy holds {held}, peer {there}");
        tick.reset();
        let resumed = Instant::now();
        while resumed.elapsed() < Duration::from_secs(2) {
            tick.tick().await;
            seq += 1;
            let ts = seq * 160;
            let _ = alice.rt.send_voice(call, seq, ts, &payload).await;
            let _ = bob.rt.send_voice(incoming, seq, ts, &payload).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (gap_a, n_a) = gap_after(&alice.heard, resumed);
        let (gap_b, n_b) = gap_after(&bob.heard, resumed);
        println!(
            "after the restart: alice heard {n_a} (largest gap {} ms), bob {n_b} (largest gap {} \
             ms) of ~100",
            gap_a.as_millis(),
            gap_b.as_millis()
        );
        assert!(n_a >= 50 && n_b >= 50, "voice after the restart: {n_a}, {n_b}");
        alice.drain();
        bob.drain();
        assert_eq!(ended(&alice), 0, "alice: {:?}", alice.surprises);
        assert_eq!(ended(&bob), 0, "bob: {:?}", bob.surprises);
        alice.rt.hangup(call, Cause::Normal).await.unwrap();
        expect(&mut bob.rx, |e| matches!(e, Event::CallEnded { .. }), 20).await;
    });
}

#[test]
fn new_sessions_are_visible_on_all_three_proxies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let users: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let net = Net::start(&refs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics: Vec<SocketAddr> = net.daemons.iter().map(|d| d.metrics).collect();
    let mut lat = Vec::new();
    rt.block_on(async {
        let mut phones = Vec::new();
        for (i, u) in users.iter().enumerate() {
            let t0 = Instant::now();
            let p = phone(&net, u).await;
            let connected = t0.elapsed();
            // Visible on all three: each one's session gauge counts it.
            let want = i as u64 + 1;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let all = metrics
                    .iter()
                    .all(|m| metric_at(*m, "anytun_sessions").unwrap_or(0) >= want);
                if all {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "session {i} never reached all proxies"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            lat.push(t0.elapsed().saturating_sub(connected));
            phones.push(p);
        }
    });
    let p50 = percentile(&mut lat, 0.5);
    let p99 = percentile(&mut lat, 0.99);
    println!(
        "new session visible on all 3 proxies after the client's Connected: p50 {} ms, p99 {} ms \
         (200 sessions, loopback, metrics polled)",
        p50.as_millis(),
        p99.as_millis()
    );
    assert_eq!(lat.len(), 200);
}

#[test]
fn a_subscriber_added_or_revoked_on_one_proxy_reaches_every_store_and_ends_sessions() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::start(&["alice"]);
    let store = |i: usize| {
        let dir = net.configs[i].parent().unwrap().to_owned();
        SubscriberStore::open(&dir.join(format!("subs{}.db", i + 1))).unwrap()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Added on proxy 1 (as `anytun user add` does: another connection).
        let carol = SecretKey::generate();
        let t0 = Instant::now();
        store(0).add("carol", &carol.public().0).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 1..3 {
            while store(i)
                .get("carol", &carol.public().0)
                .unwrap()
                .map(|(live, _)| live)
                != Some(true)
            {
                assert!(
                    Instant::now() < deadline,
                    "carol never reached proxy {}",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        println!(
            "a subscriber added on proxy 1 is in every store after {} ms",
            t0.elapsed().as_millis()
        );
        // Alice connects (to whichever proxy); revoking her key on another
        // proxy's store ends her session everywhere.
        let before = net.handshakes();
        let mut alice = phone(&net, "alice").await;
        let served_by = net.who_accepted(&before).expect("alice's handshake seen");
        let other = (served_by + 1) % 3;
        let deadline = Instant::now() + Duration::from_secs(20);
        while net
            .per_proxy("anytun_sessions")
            .iter()
            .any(|s| s.unwrap_or(0) < 1)
        {
            assert!(
                Instant::now() < deadline,
                "alice's session never reached every proxy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t1 = Instant::now();
        let alice_key = net.key("alice").public().0;
        assert_eq!(store(other).remove("alice", Some(&alice_key)).unwrap(), 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        while net
            .per_proxy("anytun_sessions")
            .iter()
            .any(|s| s.unwrap_or(1) != 0)
        {
            assert!(
                Instant::now() < deadline,
                "sessions still held: {:?}",
                net.per_proxy("anytun_sessions")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "alice revoked on proxy {} (served by proxy {}): her session gone from all three \
             after {} ms",
            other + 1,
            served_by + 1,
            t1.elapsed().as_millis()
        );
        for i in 0..3 {
            assert_eq!(
                store(i)
                    .get("alice", &alice_key)
                    .unwrap()
                    .map(|(live, _)| live),
                Some(false),
                "proxy {} keeps alice live",
                i + 1
            );
        }
        alice.drain();
        alice.rt.shutdown();
    });
}

#[test]
fn demo_with_three_proxies_reports_the_failover_in_json() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_anytun"))
        .args([
            "demo",
            "--loopback",
            "--proxies",
            "3",
            "--seconds",
            "3",
            "--json",
        ])
        .env_remove("ANYTUN_CONFIG")
        .output()
        .expect("run anytun demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    println!("{v}");
    assert_eq!(v["proxies"], 3);
    assert_eq!(v["ok"], true);
    assert_ne!(
        v["alice_proxy"], v["bob_proxy"],
        "the two sides on different proxies"
    );
    assert_eq!(v["failover"]["calls_dropped"], 0);
    assert_eq!(v["failover"]["handshakes_repeated"], 0);
    assert!(v["failover"]["gap_ms"].as_u64().is_some());
}
