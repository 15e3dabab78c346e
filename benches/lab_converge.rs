//! Issue 8's "100 000 sessions converge after a partition heals in <= 3 s",
//! measured in the anycast lab with real `anytund` processes (root, BIRD 2,
//! nftables; the tests in tests/lab.rs need the same).
//!
//! Each run: a fresh lab with anypsp; N subscriber keys added in one batch
//! to p1's store (anypsp carries them to p2 and p3); p3 partitioned from
//! its peers; N real sessions made from site A through its NAT to the
//! anycast address (p1, its nearest proxy), each a Noise IK handshake of
//! the project's client core (`anytun::client::Client`) with its own key;
//! p2 holds them too (pushed over its link); then the partition is healed
//! and every proxy's `/status` is polled until all three report the same
//! table: entries and fingerprints per scope, subscribers and sessions.
//! Sync traffic is counted by nftables counters on the peer-link port in
//! p2's namespace (the push of N set-ups from p1) and in p3's (the heal),
//! IP bytes both ways.
//!
//! The lab's proxies keep their shipped config except two settings that
//! a load generator must change: `[dos]` (a single NAT address making
//! thousands of handshakes a second is what the per-source limit exists to
//! stop) and `session_timeout_s` (the sessions are not kept alive while
//! the run lasts).
//!
//! `cargo bench --bench lab_converge`: N = 100 000, 3 runs
//! (ANYTUN_LAB_SESSIONS, ANYTUN_LAB_RUNS change them). Under `cargo test`
//! (as root): one run of 10 000 sessions that checks that the tables
//! converge, and prints its figures without asserting a time.

use anytun::client::{Client, ClientConfig, Event};
use anytun::crypto::{PublicKey, SecretKey};
use anytun::lab::knobs::Knob;
use anytun::lab::netns;
use anytun::lab::topo::anycast;
use anytun::lab::{preflight, Lab, Site, P};
use anytun::metrics::Status;
use anytun::store::SubscriberStore;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "atlconv";
/// Handshakes in flight at once (one UDP socket each).
const SLOTS: usize = 64;

/// A lab that is taken down however the run ends.
struct Up(Lab);

impl Drop for Up {
    fn drop(&mut self) {
        if let Err(e) = self.0.down() {
            eprintln!("lab down failed: {e}");
        }
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// What converged proxies agree on.
type Table = (Vec<(String, u64)>, Vec<(String, String)>, usize, usize);

fn table(s: &Status) -> Table {
    let (e, f) = s
        .sync
        .as_ref()
        .map(|y| (y.entries.clone(), y.fingerprints.clone()))
        .unwrap_or_default();
    (e, f, s.subscribers, s.sessions)
}

fn status(lab: &Lab, p: P) -> Status {
    lab.proxy_status(p)
        .unwrap_or_else(|e| panic!("{p} /status: {e}"))
}

/// Runs `nft` in proxy `p`'s namespace.
fn nft(lab: &Lab, p: P, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.names.proxy(p), "nft"])
        .args(args)
        .output()
        .expect("nft runs");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const COUNTERS: &str = "anytunbench_sync";

/// Counters of the peer-link TCP port in and out of `p`, before the
/// partition's own filter (priority 0) decides.
fn add_counters(lab: &Lab, p: P) {
    let port = anytun::lab::conf::SYNC_PORT;
    let rules = format!(
        "table inet {COUNTERS} {{\n\
         \tchain in {{ type filter hook input priority -10; tcp dport {port} counter; tcp sport {port} counter; }}\n\
         \tchain out {{ type filter hook output priority -10; tcp dport {port} counter; tcp sport {port} counter; }}\n}}\n"
    );
    let path = lab.run.join(format!("{COUNTERS}-{}.nft", p.name()));
    std::fs::write(&path, rules).unwrap();
    nft(lab, p, &["-f", path.to_str().unwrap()]);
}

/// IP bytes counted on `p`'s peer-link port so far, both ways.
fn counted_bytes(lab: &Lab, p: P) -> u64 {
    let text = nft(lab, p, &["list", "table", "inet", COUNTERS]);
    text.split("bytes ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Rewrites `p`'s anytund.toml with the load generator's two settings
/// and restarts it.
fn tune(lab: &Lab, p: P) {
    let path = lab.proxy_dir(p).join("anytund.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = text.split_once('\n').unwrap();
    let tuned = format!(
        "{head}\n# lab_converge: sessions stay for the run; one NAT address makes them all\n\
         session_timeout_s = 3600\n{rest}\n[dos]\nunder_load_handshakes_per_s = 4000000000\n\
         per_ip_rate_per_s = 4000000000\nper_ip_burst = 4000000000\n"
    );
    std::fs::write(&path, tuned).unwrap();
    lab.knob(Knob::Restart, p).unwrap();
}

/// Makes one session per key from site A through its NAT to the anycast
/// address, `SLOTS` handshakes at a time; returns how many each proxy
/// answered (index = proxy id).
fn load(lab: &Lab, keys: Arc<Vec<SecretKey>>, network: PublicKey) -> [usize; 4] {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let socks: Vec<std::net::UdpSocket> = (0..SLOTS)
        .map(|_| {
            let s = netns::within(&lab.names.site(Site::A), || {
                std::net::UdpSocket::bind("0.0.0.0:0")
            })
            .unwrap()
            .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let dst = anycast(false);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for s in socks {
            let (next, keys) = (next.clone(), keys.clone());
            tasks.push(tokio::spawn(async move {
                let sock = tokio::net::UdpSocket::from_std(s).unwrap();
                let mut served = [0usize; 4];
                let mut buf = vec![0u8; 2048];
                let mut out = vec![0u8; 2048];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = keys.get(i) else {
                        return served;
                    };
                    let mut cfg = ClientConfig::new(key.clone(), network);
                    cfg.handshake_attempts = 8;
                    let mut c = Client::new(cfg);
                    c.connect(Instant::now(), unix_nanos());
                    'one: loop {
                        while let Some(n) = c.poll_transmit(&mut out) {
                            sock.send_to(&out[..n], dst).await.unwrap();
                        }
                        while let Some(e) = c.poll_event() {
                            match e {
                                Event::Connected { proxy, .. } => {
                                    served[usize::from(proxy.get()).min(3)] += 1;
                                    break 'one;
                                }
                                Event::Disconnected(e) => panic!("session {i}: {e}"),
                                _ => {}
                            }
                        }
                        let wake = c
                            .poll_timeout()
                            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                        match tokio::time::timeout_at(wake.into(), sock.recv_from(&mut buf)).await {
                            Ok(Ok((n, _))) => {
                                c.handle_datagram(Instant::now(), &mut buf[..n]);
                            }
                            Ok(Err(e)) => panic!("recv: {e}"),
                            Err(_) => c.handle_timeout(Instant::now(), unix_nanos()),
                        }
                    }
                }
            }));
        }
        let mut served = [0usize; 4];
        for t in tasks {
            for (s, n) in served.iter_mut().zip(t.await.unwrap()) {
                *s += n;
            }
        }
        served
    })
}

/// Polls every proxy's `/status` until `f` holds for their tables; the
/// time it took and how many polls.
fn wait_tables(lab: &Lab, limit: Duration, f: impl Fn(&[Table]) -> bool) -> (Duration, Vec<Table>) {
    let t0 = Instant::now();
    loop {
        let t: Vec<Table> = P::all().map(|p| table(&status(lab, p))).collect();
        if f(&t) {
            return (t0.elapsed(), t);
        }
        assert!(
            t0.elapsed() < limit,
            "no convergence within {limit:?}: {t:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Figures {
    subscribers_ms: u128,
    handshakes_per_s: f64,
    push_bytes_per_session: f64,
    heal_ms: f64,
    /// Heal to p3's first peer link up again.
    link_ms: f64,
    heal_bytes: u64,
    /// Restart of p3 to ready and synced.
    serve_ms: f64,
    /// Sessions p3 held when it first said so.
    served_with: usize,
}

fn run(n: usize, anytund: &std::path::Path) -> Figures {
    let lab = Lab::new(PREFIX, None, Some(anytund.into())).unwrap();
    lab.down().unwrap();
    lab.up().unwrap();
    let up = Up(lab.clone());
    for p in P::all() {
        tune(&lab, p);
    }
    lab.wait_settled(Duration::from_secs(60)).unwrap();
    let network = lab.network_public().unwrap();

    // N subscribers, one batch at p1; anypsp carries them to p2 and p3.
    let keys: Vec<SecretKey> = (0..n).map(|_| SecretKey::generate()).collect();
    let names: Vec<String> = (0..n).map(|i| format!("load{i}")).collect();
    let pubs: Vec<[u8; 32]> = keys.iter().map(|k| k.public().0).collect();
    let base = status(&lab, P(1)).subscribers;
    let t0 = Instant::now();
    let added = SubscriberStore::open(&lab.proxy_dir(P(1)).join("subscribers.db"))
        .unwrap()
        .add_many(names.iter().map(String::as_str).zip(&pubs))
        .unwrap();
    assert_eq!(added, n);
    let (_, _) = wait_tables(&lab, Duration::from_secs(300), |t| {
        t.iter().all(|x| x.2 >= base + n)
    });
    let subscribers_ms = t0.elapsed().as_millis();
    eprintln!(
        "{n} subscribers added at p1 in one batch: on all 3 proxies after {subscribers_ms} ms"
    );

    lab.knob(Knob::Partition, P(3)).unwrap();
    let t0 = Instant::now();
    while status(&lab, P(1))
        .sync
        .unwrap()
        .peers
        .iter()
        .any(|q| q.node == 3 && q.state() == "up")
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "p1 never lost p3");
        std::thread::sleep(Duration::from_millis(20));
    }
    add_counters(&lab, P(2));
    add_counters(&lab, P(3));
    let sessions0 = status(&lab, P(1)).sessions;
    let p2_bytes0 = counted_bytes(&lab, P(2));

    let t0 = Instant::now();
    let served = load(&lab, Arc::new(keys), network);
    let load_s = t0.elapsed().as_secs_f64();
    assert_eq!(
        served[1], n,
        "every session on site A's nearest proxy: {served:?}"
    );
    // p2 holds them too (pushed); p3 does not.
    let (_, t) = wait_tables(&lab, Duration::from_secs(300), |t| {
        t[0] == t[1] && t[0].3 >= sessions0 + n
    });
    let push_bytes = counted_bytes(&lab, P(2)) - p2_bytes0;
    assert!(t[2].3 < t[0].3, "the partition held: {t:?}");
    eprintln!(
        "{n} sessions made at p1 in {load_s:.1} s ({:.0} handshakes/s), on p2 too; p3 holds {} sessions; \
         p1<->p2 sync traffic {push_bytes} B ({:.0} B per session)",
        n as f64 / load_s,
        t[2].3,
        push_bytes as f64 / n as f64
    );

    let heal_bytes0 = counted_bytes(&lab, P(3));
    lab.knob(Knob::Unpartition, P(3)).unwrap();
    let t0 = Instant::now();
    // First: p3's link to a peer back (reconnect, after the dial backoff).
    let link_ms = loop {
        let s = status(&lab, P(3));
        if s.sync.unwrap().peers.iter().any(|q| q.state() == "up") {
            break t0.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "p3 never linked");
        std::thread::sleep(Duration::from_millis(1));
    };
    let (_, t) = wait_tables(&lab, Duration::from_secs(300), |t| {
        t.windows(2).all(|w| w[0] == w[1])
    });
    let took = t0.elapsed();
    let heal_bytes = counted_bytes(&lab, P(3)) - heal_bytes0;
    let heal_ms = took.as_secs_f64() * 1000.0;
    eprintln!(
        "partition healed: p3 linked to a peer after {link_ms:.0} ms, identical tables on all \
         3 proxies after {heal_ms:.0} ms ({} sessions, {} subscribers, {:?}); p3's peer-link traffic {heal_bytes} B",
        t[0].3, t[0].2, t[0].0
    );
    assert!(t[0].3 >= sessions0 + n);

    // p3 restarted (SIGTERM, started again): it pulls the whole table from
    // its peers before it serves.
    lab.knob(Knob::Restart, P(3)).unwrap();
    let t0 = Instant::now();
    let mut serving = None;
    let restart_ms = loop {
        if let Ok(s) = lab.proxy_status(P(3)) {
            if serving.is_none() && s.ready && s.sync.as_ref().is_some_and(|y| y.synced) {
                serving = Some((t0.elapsed(), s.sessions));
            }
            // Compared with p1 now: p3's restart may rewrite entries.
            if serving.is_some() && table(&s) == table(&status(&lab, P(1))) {
                break t0.elapsed().as_secs_f64() * 1000.0;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the restarted p3 never held the table"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let (serve, held) = serving.unwrap();
    let serve_ms = serve.as_secs_f64() * 1000.0;
    eprintln!(
        "p3 restarted: serving (ready and synced) after {serve_ms:.0} ms holding {held} sessions; \
         the whole table after {restart_ms:.0} ms"
    );
    drop(up);
    Figures {
        subscribers_ms,
        handshakes_per_s: n as f64 / load_s,
        push_bytes_per_session: push_bytes as f64 / n as f64,
        heal_ms,
        link_ms,
        heal_bytes,
        serve_ms,
        served_with: held,
    }
}

fn main() {
    if let Err(e) = preflight() {
        panic!("lab_converge needs root and the lab's tools (as tests/lab.rs does): {e}");
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (n, runs) = if bench {
        (
            env("ANYTUN_LAB_SESSIONS", 100_000),
            env("ANYTUN_LAB_RUNS", 3),
        )
    } else {
        (10_000, 1)
    };
    let anytund = std::path::PathBuf::from(env!("CARGO_BIN_EXE_anytund"));
    let figs: Vec<Figures> = (0..runs).map(|_| run(n, &anytund)).collect();
    let mut heal: Vec<f64> = figs.iter().map(|f| f.heal_ms).collect();
    heal.sort_by(f64::total_cmp);
    let mut serve: Vec<f64> = figs.iter().map(|f| f.serve_ms).collect();
    serve.sort_by(f64::total_cmp);
    println!(
        "lab: p3 restarted next to {n} sessions: ready and synced after median {:.0} ms, worst \
         {:.0} ms ({serve:?}), holding {:?} sessions then",
        serve[serve.len() / 2],
        serve[serve.len() - 1],
        figs.iter().map(|f| f.served_with).collect::<Vec<_>>()
    );
    let link: Vec<f64> = figs.iter().map(|f| f.link_ms.round()).collect();
    let data: Vec<f64> = figs
        .iter()
        .map(|f| (f.heal_ms - f.link_ms).round())
        .collect();
    println!("lab: of which p3's link back after {link:?} ms, then the data in {data:?} ms");
    println!(
        "lab: {n} sessions converge after a partition heals: median {:.0} ms, worst {:.0} ms \
         over {runs} run(s) ({heal:?}); p3's sync traffic on heal {:?} B; push per session set-up \
         {:?} B; {n} subscribers on all proxies after {:?} ms; handshakes/s {:?}",
        heal[heal.len() / 2],
        heal[heal.len() - 1],
        figs.iter().map(|f| f.heal_bytes).collect::<Vec<_>>(),
        figs.iter()
            .map(|f| f.push_bytes_per_session.round())
            .collect::<Vec<_>>(),
        figs.iter().map(|f| f.subscribers_ms).collect::<Vec<_>>(),
        figs.iter()
            .map(|f| f.handshakes_per_s.round())
            .collect::<Vec<_>>(),
    );
}
