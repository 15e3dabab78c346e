//! One hostile subscriber floods the proxy with control messages; how long
//! does ANOTHER client wait for its keepalive answers meanwhile?
//!
//! Over real UDP on loopback with the real [`ProxyRuntime`] (its tasks on a
//! tokio runtime of their own, threads named `anytun-proxy`, so the proxy's
//! CPU time can be read from `/proc/self/task`). The clients are plain
//! blocking sockets on other threads that speak the protocol directly (a
//! Noise handshake with [`Initiator`], then [`SessionCrypto`]), so the
//! hostile ones can do what no well-behaved client does: never acknowledge.
//!
//! Two floods, each against a fresh proxy:
//!
//! a. 20 000 `Invite`s to a name that does not exist, as fast as the socket
//!    takes them; the `Reject`s are never acknowledged.
//! b. 20 000 `Invite`s to a registered callee that never acknowledges
//!    anything (nor does the caller).
//!
//! A quiet client sends a keepalive, waits for its answer, and again, before,
//! during and after the flood; the round trips' p50/p99/max are printed with
//! the proxy's CPU time during the flood window.
//!
//! `cargo bench --bench flood` runs the full version (~50 s;
//! ANYTUN_FLOOD_INVITES and ANYTUN_FLOOD_SECS change the flood size and the
//! "during" window). Under `cargo test` it runs a smoke version of a few
//! seconds, whose figures mean little and are labelled so.

use anytun::call::Name;
use anytun::crypto::mac::NetworkMacs;
use anytun::crypto::{tai64n, PublicKey, SecretKey};
use anytun::handshake::Initiator;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::runtime::proxy::ProxyRuntime;
use anytun::runtime::unix_nanos;
use anytun::session::{CallId, ProxyId, SessionCrypto, SessionId};
use anytun::wire::control::ControlMsg;
use anytun::wire::handshake::{HandshakeResponse, HandshakeStatus, INIT_LEN};
use anytun::wire::inner::Inner;
use anytun::wire::transport::TransportHeader;
use anytun::wire::{classify, DropReason, MessageType, MAX_DATAGRAM};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A client session spoken by hand over a blocking socket.
struct Raw {
    sock: UdpSocket,
    proxy: SocketAddr,
    crypto: SessionCrypto,
    next_msg: u32,
}

impl Raw {
    fn connect(key: &SecretKey, network: &PublicKey, proxy: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let macs = NetworkMacs::new(network);
        for _attempt in 0..10 {
            let mut pkt = [0u8; INIT_LEN];
            let tag = anytun::crypto::random_u64() as u32;
            let init = Initiator::start(
                key,
                network,
                &macs,
                tag,
                tai64n(unix_nanos()),
                None,
                &mut pkt,
            )
            .unwrap();
            sock.send_to(&pkt, proxy).unwrap();
            let mut buf = [0u8; 2048];
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if classify(&buf[..n]) != Ok(MessageType::HandshakeResponse) {
                continue;
            }
            let resp = HandshakeResponse::parse(&buf[..n]).unwrap();
            let (payload, keys) = init.finish(&resp).unwrap();
            assert_eq!(payload.status, HandshakeStatus::Accepted);
            let id = SessionId::from_raw(payload.session_id).unwrap();
            return Self {
                sock,
                proxy,
                crypto: SessionCrypto::client(id, keys.client_to_proxy, keys.proxy_to_client),
                next_msg: 1,
            };
        }
        panic!("no handshake answer from the proxy");
    }

    fn seal(&mut self, inner: Inner<'_>) -> Vec<u8> {
        let mut out = vec![0u8; MAX_DATAGRAM];
        let n = self.crypto.seal(&mut out, |b| inner.encode(b)).unwrap();
        out.truncate(n);
        out
    }

    fn control(&mut self, msg: &ControlMsg) -> Vec<u8> {
        let mut body = vec![0u8; MAX_DATAGRAM];
        let n = msg.encode(&mut body).unwrap();
        let msg_id = self.next_msg;
        self.next_msg += 1;
        self.seal(Inner::Control {
            msg_id,
            body: &body[..n],
        })
    }

    /// Receives and opens one packet from the proxy; true if it was a keepalive.
    fn recv_keepalive(&mut self, deadline: Instant) -> Option<bool> {
        let wait = deadline.checked_duration_since(Instant::now())?;
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        let d = &mut buf[..n];
        let Ok(h) = TransportHeader::parse(d) else {
            return Some(false);
        };
        let Ok(opened) = self.crypto.open(&h, d) else {
            return Some(false);
        };
        Some(matches!(
            Inner::parse(opened.plaintext),
            Ok(Inner::Keepalive)
        ))
    }

    /// One keepalive round trip, or None if unanswered within `limit`.
    fn ping(&mut self, limit: Duration) -> Option<Duration> {
        let pkt = self.seal(Inner::Keepalive);
        let t0 = Instant::now();
        self.sock.send_to(&pkt, self.proxy).unwrap();
        let deadline = t0 + limit;
        loop {
            match self.recv_keepalive(deadline)? {
                true => return Some(t0.elapsed()),
                false => continue,
            }
        }
    }

    /// Registers `name` and waits for any answer (which it never acks).
    fn register(&mut self, name: &str) {
        let pkt = self.control(&ControlMsg::Register {
            expires_s: 600,
            name: Name::new(name).unwrap(),
        });
        self.sock.send_to(&pkt, self.proxy).unwrap();
        let mut buf = [0u8; 2048];
        self.sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        self.sock.recv_from(&mut buf).expect("no Registered");
    }
}

/// Round trips measured over one phase.
#[derive(Default)]
struct Rtts {
    samples: Vec<Duration>,
    lost: usize,
}

impl Rtts {
    fn measure(q: &mut Raw, secs: f64) -> Self {
        let mut r = Rtts::default();
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            match q.ping(Duration::from_secs(5)) {
                Some(d) => r.samples.push(d),
                None => r.lost += 1,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        r
    }

    fn line(&mut self, label: &str) -> String {
        self.samples.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.samples.is_empty() {
                return f64::NAN;
            }
            let i = ((self.samples.len() - 1) as f64 * p).round() as usize;
            self.samples[i].as_secs_f64() * 1e3
        };
        format!(
            "    {label:<7} rtt p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms  ({} answered, {} lost)",
            pct(0.5),
            pct(0.99),
            pct(1.0),
            self.samples.len(),
            self.lost
        )
    }
}

/// CPU time (user + system) of the proxy runtime's threads so far.
fn proxy_cpu() -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with("anytun-proxy") {
            continue;
        }
        // Fields after the comm: state is field 3, utime 14, stime 15.
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let num = |i: usize| {
            f.get(i - 3)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += num(14) + num(15);
    }
    Duration::from_millis(ticks * 1000 / hz)
}

#[derive(Clone, Copy, PartialEq)]
enum Flood {
    /// Invites to a name nobody has; Rejects never acked.
    NoSuchName,
    /// Invites to a registered callee that acks nothing.
    SilentCallee,
}

struct Plan {
    invites: usize,
    quiet_secs: f64,
    during_secs: f64,
}

fn scenario(flood: Flood, plan: &Plan, smoke: bool) {
    let network = SecretKey::generate();
    let (kq, kh, ks) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let name = |s: &str| Name::new(s).unwrap();
    let subs = Subscribers::new([
        (name("quiet"), kq.public()),
        (name("mallory"), kh.public()),
        (name("sink"), ks.public()),
    ]);
    let core = Proxy::new(
        ProxyConfig::new(ProxyId::new(1).unwrap(), network.clone()),
        subs,
        Instant::now(),
    );
    core.epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    let prt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("anytun-proxy")
        .enable_all()
        .build()
        .unwrap();
    let runtime = prt
        .block_on(ProxyRuntime::start(core, &["127.0.0.1:0".parse().unwrap()]))
        .unwrap();
    let p = runtime.local_addrs()[0];
    let net_pub = network.public();

    let mut quiet = Raw::connect(&kq, &net_pub, p);
    let mut hostile = Raw::connect(&kh, &net_pub, p);
    let (target, sink) = match flood {
        Flood::NoSuchName => ("nobody", None),
        Flood::SilentCallee => {
            let mut s = Raw::connect(&ks, &net_pub, p);
            s.register("sink");
            ("sink", Some(s))
        }
    };
    // Seal the whole flood first: the attacker's cost is not measured.
    let packets: Vec<Vec<u8>> = (0..plan.invites)
        .map(|i| {
            hostile.control(&ControlMsg::Invite {
                call: CallId(0x00f1_0000_0000 + i as u64),
                to: name(target),
                from: None,
                peer_key: [0; 32],
                codecs: vec!["ulaw".into()],
                e2e: vec![0x5a; 64],
            })
        })
        .collect();
    let bytes: usize = packets.iter().map(Vec::len).sum();

    let mut before = Rtts::measure(&mut quiet, plan.quiet_secs);
    let cpu0 = proxy_cpu();
    let t0 = Instant::now();
    let sock = hostile.sock.try_clone().unwrap();
    let flooder = std::thread::spawn(move || {
        let t = Instant::now();
        for pkt in &packets {
            // The socket buffer may fill; a refused send just moves on.
            let _ = sock.send_to(pkt, p);
        }
        t.elapsed()
    });
    let mut during = Rtts::measure(&mut quiet, plan.during_secs);
    let sent_in = flooder.join().unwrap();
    let cpu = proxy_cpu().saturating_sub(cpu0);
    let window = t0.elapsed();
    let mut after = Rtts::measure(&mut quiet, plan.quiet_secs);
    let (stats, sessions) = runtime.with_core(|c| (c.stats().clone(), c.session_count()));
    drop(sink);

    let what = match flood {
        Flood::NoSuchName => "a. Invites to a name that does not exist, Rejects never acked",
        Flood::SilentCallee => "b. Invites to a registered callee that acks nothing",
    };
    let tag = if smoke {
        " [SMOKE figures, not a measurement]"
    } else {
        ""
    };
    println!("flood {what}{tag}");
    println!(
        "    {} Invites, {} bytes, sent in {:.3} s",
        plan.invites,
        bytes,
        sent_in.as_secs_f64()
    );
    println!("{}", before.line("before"));
    println!("{}", during.line("during"));
    println!("{}", after.line("after"));
    println!(
        "    proxy CPU {:.2} s in the {:.1} s window; control retransmits {}, calls failed {}, sessions {}",
        cpu.as_secs_f64(),
        window.as_secs_f64(),
        stats.control_retransmits,
        stats.calls_failed,
        sessions
    );
    println!(
        "    received {} datagrams; refused for backlog {}, not queued {}, never acknowledged {}",
        stats.packets_in,
        stats.drops.get(DropReason::ControlBacklog),
        stats.control_not_queued,
        stats.control_undelivered
    );
    // The quiet client must be answered throughout (its round trips may be
    // slow on unfixed code, but the proxy must not lose it).
    assert!(!before.samples.is_empty() && !during.samples.is_empty());
    assert!(
        !after.samples.is_empty() && after.lost == 0,
        "quiet client lost after the flood"
    );
    assert!(stats.packets_in > 0);
    runtime.shutdown();
    prt.shutdown_timeout(Duration::from_secs(1));
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<f64>().ok());
    let plan = if bench {
        Plan {
            invites: env("ANYTUN_FLOOD_INVITES").unwrap_or(20_000.0) as usize,
            quiet_secs: 2.0,
            during_secs: env("ANYTUN_FLOOD_SECS").unwrap_or(20.0),
        }
    } else {
        Plan {
            invites: 1_000,
            quiet_secs: 0.2,
            during_secs: 0.8,
        }
    };
    for flood in [Flood::NoSuchName, Flood::SilentCallee] {
        scenario(flood, &plan, !bench);
    }
}
