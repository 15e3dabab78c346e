//! `anytund` applies a changed `[sync]` peer list on SIGHUP without a
//! restart (docs/anypsp-link.md 3.2): four real daemons on loopback, each
//! with its own UDP, peer-link and metrics ports. Proxy 1 starts linked to
//! 2 and 3 (4 knows 1, but 1 does not know 4: refused as unknown). Its
//! config then revokes 2 and adds 4; one SIGHUP later its link to 2 is
//! closed and 2's dials are refused and counted as `revoked`, 4 is linked
//! and synced, and the link to 3 was never touched.

use anytun::crypto::SecretKey;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");

fn free_port(udp: bool) -> u16 {
    if udp {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    } else {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    }
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
    fn spawn(id: u16, config: &Path, metrics: u16) -> Self {
        let mut child = Command::new(ANYTUND)
            .arg("--config")
            .arg(config)
            .current_dir(config.parent().unwrap())
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
        Self {
            id,
            child,
            metrics: format!("127.0.0.1:{metrics}").parse().unwrap(),
            lines,
            seen: Vec::new(),
        }
    }

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

    fn log(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    fn hangup(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: a plain kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }

    /// A sample from /metrics (`None`: absent or unreadable).
    fn metric(&self, sample: &str) -> Option<u64> {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let prefix = format!("{sample} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// Waits until `sample` reads `want`.
    fn wait_metric(&mut self, sample: &str, want: Option<u64>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.metric(sample);
            if got == want {
                return;
            }
            if Instant::now() > deadline {
                let (id, log) = (self.id, self.log());
                panic!("proxy {id}: {sample} is {got:?}, not {want:?}; it said:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[[sync.peers]]` entry.
fn peer(id: u16, link: u16, key: &SecretKey, extra: &str) -> String {
    format!(
        "[[sync.peers]]\nid = {id}\naddress = \"127.0.0.1:{link}\"\npublic_key = \"{}\"\n{extra}",
        key.public()
    )
}

fn up(p: u16) -> String {
    format!("anytun_sync_peer_up{{peer=\"{p}\"}}")
}

#[test]
fn sighup_revokes_a_peer_links_a_new_one_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let network = SecretKey::generate();
    let keys: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
    let links: Vec<u16> = (0..4).map(|_| free_port(false)).collect();
    let metrics: Vec<u16> = (0..4).map(|_| free_port(false)).collect();
    let udp: Vec<u16> = (0..4).map(|_| free_port(true)).collect();
    let config = |i: usize, startup_ms: u32, peers: &str| -> String {
        let id = i + 1;
        format!(
            "proxy_id = {id}\nlisten = [\"127.0.0.1:{udp}\"]\n\
             network_key = \"network.key\"\nsubscribers = \"subs.db\"\n\
             metrics_listen = \"127.0.0.1:{m}\"\n\
             [sync]\nnode_key = \"node.key\"\nlisten = \"127.0.0.1:{l}\"\n\
             startup_timeout_ms = {startup_ms}\n{peers}",
            udp = udp[i],
            m = metrics[i],
            l = links[i],
        )
    };
    let p = |j: usize, extra: &str| peer(j as u16 + 1, links[j], &keys[j], extra);
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut texts = [
        config(0, 10_000, &(p(1, "") + &p(2, ""))),
        config(1, 10_000, &p(0, "")),
        config(2, 10_000, &p(0, "")),
        // Proxy 1 does not know 4 yet: 4 serves alone after its timeout.
        config(3, 500, &p(0, "")),
    ];
    for (i, text) in texts.iter().enumerate() {
        let d = dir.path().join(format!("p{}", i + 1));
        network.write_new_file(&d.join("network.key")).unwrap();
        keys[i].write_new_file(&d.join("node.key")).unwrap();
        let path = d.join("anytund.toml");
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let mut d: Vec<Daemon> = (0..4)
        .map(|i| Daemon::spawn(i as u16 + 1, &paths[i], metrics[i]))
        .collect();
    for x in &mut d {
        x.wait_for("anytund: proxy", Duration::from_secs(60));
    }
    d[0].wait_metric(&up(2), Some(1));
    d[0].wait_metric(&up(3), Some(1));
    d[0].wait_metric(&up(4), None);
    d[3].wait_metric(&up(1), Some(0));
    let unknown = "anytun_sync_links_refused_total{reason=\"unknown_peer\"}";
    let revoked = "anytun_sync_links_refused_total{reason=\"revoked\"}";
    let wait_refused = |x: &Daemon, sample: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while x.metric(sample).unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "{sample} never counted");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_refused(&d[0], unknown);
    let connects3 = "anytun_sync_peer_connects_total{peer=\"3\"}";
    let before = d[0].metric(connects3).unwrap();
    let before_at_3 = d[2]
        .metric("anytun_sync_peer_connects_total{peer=\"1\"}")
        .unwrap();

    // Revoke 2, keep 3, add 4; SIGHUP.
    texts[0] = config(
        0,
        10_000,
        &(p(1, "revoked = true\n") + &p(2, "") + &p(3, "")),
    );
    std::fs::write(&paths[0], &texts[0]).unwrap();
    d[0].hangup();
    d[0].wait_for("SIGHUP: [sync] peers reloaded", Duration::from_secs(20));

    // 4 is linked and synced, both ways.
    d[0].wait_metric(&up(4), Some(1));
    d[0].wait_metric("anytun_sync_peer_ready{peer=\"4\"}", Some(1));
    d[3].wait_metric(&up(1), Some(1));
    // 2 is cut off: its link closed, its dials refused as revoked.
    d[1].wait_metric(&up(1), Some(0));
    wait_refused(&d[0], revoked);
    d[0].wait_metric(&up(2), None);
    d[0].wait_metric("anytun_sync_peers", Some(2));
    // Still refused a while later: 2 keeps dialing, 1 keeps refusing.
    let r1 = d[0].metric(revoked).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while d[0].metric(revoked).unwrap_or(0) <= r1 {
        assert!(Instant::now() < deadline, "2 stopped being refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        d[1].metric(&up(1)),
        Some(0),
        "the revoked peer linked again"
    );
    // 3's link was never touched: up, and no new link on either side.
    assert_eq!(d[0].metric(&up(3)), Some(1));
    assert_eq!(
        d[0].metric(connects3),
        Some(before),
        "the link to 3 was redone"
    );
    assert_eq!(
        d[2].metric("anytun_sync_peer_connects_total{peer=\"1\"}"),
        Some(before_at_3),
        "3 saw a new link"
    );
    // A config that changes what needs a restart is refused, nothing applied.
    let moved = texts[0].replace(
        &format!("listen = \"127.0.0.1:{}\"", links[0]),
        &format!("listen = \"127.0.0.1:{}\"", free_port(false)),
    );
    assert_ne!(moved, texts[0]);
    std::fs::write(&paths[0], moved).unwrap();
    d[0].hangup();
    d[0].wait_for(
        "sync.listen changed: restart to apply it",
        Duration::from_secs(20),
    );
    assert_eq!(d[0].metric(&up(4)), Some(1));
    assert_eq!(d[0].metric(&up(3)), Some(1));
    println!(
        "proxy 1 after the reload: refused {} unknown, {} revoked",
        d[0].metric(unknown).unwrap_or(0),
        d[0].metric(revoked).unwrap_or(0)
    );
}
