//! `anytun call`, `answer` and `register` as real processes against a real
//! `anytund`, the way users stop them (Ctrl-C, SIGTERM, SIGKILL) and the way
//! calls end (the other side hangs up, vanishes, is busy, loses a fork race),
//! checking what each side reports and what the proxy keeps.

use anytun::audio::{test_signal, write_wav};
use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ANYTUN: &str = env!("CARGO_BIN_EXE_anytun");
const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");

/// A running process whose stderr is collected as it comes.
struct Proc {
    child: Child,
    err: Arc<Mutex<String>>,
    what: String,
}

impl Proc {
    fn spawn(program: &str, args: &[String], dir: &Path) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = err.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            child,
            err,
            what: format!("{} {}", program.rsplit('/').next().unwrap(), args.join(" ")),
        }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until `text` appears on stderr; returns how long it took.
    fn wait_for(&self, text: &str, limit: Duration) -> Duration {
        let t = Instant::now();
        while !self.stderr().contains(text) {
            assert!(
                t.elapsed() < limit,
                "{:?} never appeared on stderr of `{}` within {limit:?}:\n{}",
                text,
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t.elapsed()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {sig} failed");
    }

    /// Waits for the process to exit; returns its status and how long it took.
    fn exit_within(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last bytes.
                std::thread::sleep(Duration::from_millis(50));
                return (st, t.elapsed());
            }
            assert!(
                t.elapsed() < limit,
                "`{}` still running after {limit:?}:\n{}",
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn anytun(args: &[&str], dir: &Path) -> String {
    let out = Command::new(ANYTUN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "anytun {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A daemon on loopback with its own state directory, and subscribers.
struct Net {
    dir: tempfile::TempDir,
    port: u16,
    metrics: u16,
    network: String,
    daemon: Option<Proc>,
}

impl Net {
    /// Starts `anytund` and authorises one key per (key file, name).
    fn start(users: &[(&str, &str)]) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let (port, metrics) = (free_port(), free_tcp_port());
        std::fs::write(
            dir.path().join("anytund.toml"),
            format!(
                "listen = [\"127.0.0.1:{port}\"]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
                 network_key = \"state/network.key\"\nsubscribers = \"state/subscribers.db\"\n\
                 subscriber_reload_ms = 100\n"
            ),
        )
        .unwrap();
        let mut net = Net {
            dir,
            port,
            metrics,
            network: String::new(),
            daemon: None,
        };
        net.start_daemon();
        let d = net.dir.path();
        let t = Instant::now();
        while !d.join("state/network.key").exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "no network key");
            std::thread::sleep(Duration::from_millis(20));
        }
        net.network = anytun(&["pubkey", "state/network.key"], d)
            .trim()
            .to_owned();
        for (key, name) in users {
            if !d.join(key).exists() {
                anytun(&["keygen", "--out", key], d);
            }
            let public = anytun(&["pubkey", key], d).trim().to_owned();
            anytun(
                &["user", "add", name, &public, "--db", "state/subscribers.db"],
                d,
            );
        }
        net.wait_metric(&format!("anytun_subscribers {}", users.len()));
        net
    }

    fn start_daemon(&mut self) {
        let args = ["--config".to_owned(), "anytund.toml".to_owned()];
        self.daemon = Some(Proc::spawn(ANYTUND, &args, self.dir.path()));
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// Writes `secs` seconds of a test signal to `file`.
    fn wav(&self, file: &str, secs: f64) {
        let n = (secs * 8000.0) as usize;
        write_wav(&self.path(file), &test_signal(n as u32, n)).unwrap();
    }

    /// Starts `anytun <args> --key <key>` against this daemon.
    fn client(&self, args: &[&str], key: &str) -> Proc {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--key".into(),
            key.into(),
            "--network-key".into(),
            self.network.clone(),
            "--proxy".into(),
            format!("127.0.0.1:{}", self.port),
        ]);
        Proc::spawn(ANYTUN, &a, self.dir.path())
    }

    fn metrics_text(&self) -> Option<String> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }

    /// Waits until the metrics show `line`; returns how long it took.
    fn wait_metric(&self, line: &str) -> Duration {
        self.wait_metric_within(line, Duration::from_secs(10))
    }

    fn wait_metric_within(&self, line: &str, limit: Duration) -> Duration {
        let t = Instant::now();
        let want = format!("{line}\n");
        while !self.metrics_text().is_some_and(|b| b.contains(&want)) {
            assert!(
                t.elapsed() < limit,
                "metric {line:?} not seen within {limit:?}:\n{}",
                self.metrics_text().unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t.elapsed()
    }
}

/// Ctrl-C on `anytun call` mid-call hangs up: the callee learns it at once
/// (not 181 s later), and the stopped `answer` unregisters on its way out.
#[test]
fn ctrl_c_on_call_hangs_up_and_the_callee_hears_it_at_once() {
    let net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob")]);
    net.wav("long.wav", 20.0);
    let mut bob = net.client(&["answer", "bob"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(10));
    let mut alice = net.client(&["call", "bob", "--play", "long.wav"], "alice.key");
    alice.wait_for("answered", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    alice.signal("INT");
    let (st, took) = alice.exit_within(Duration::from_secs(5));
    assert!(!st.success(), "an interrupted call is not a success");
    assert!(
        alice.stderr().contains("interrupted by SIGINT"),
        "{}",
        alice.stderr()
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    bob.wait_for("call ended: normal clearing", Duration::from_secs(3));
    let (st, _) = bob.exit_within(Duration::from_secs(5));
    assert!(st.success(), "{}", bob.stderr());
    net.wait_metric_within("anytun_calls 0", Duration::from_secs(1));
    net.wait_metric_within("anytun_registrations 0", Duration::from_secs(1));
}

/// The answering side vanishes (SIGKILL) mid-call: the caller notices within
/// its media timeout (10 s), ends the call with a cause and exits non-zero,
/// and still writes what it received to its --record file.
#[test]
fn a_killed_callee_is_noticed_within_seconds_and_the_recording_is_written() {
    let net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob")]);
    net.wav("long.wav", 30.0);
    net.wav("bob.wav", 1.0);
    let bob = net.client(&["answer", "bob", "--play", "bob.wav"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(10));
    let mut alice = net.client(
        &["call", "bob", "--play", "long.wav", "--record", "heard.wav"],
        "alice.key",
    );
    alice.wait_for("answered", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    drop(bob); // SIGKILL
    let (st, took) = alice.exit_within(Duration::from_secs(16));
    let err = alice.stderr();
    println!("killed callee noticed after {took:?}");
    assert!(!st.success(), "{err}");
    assert!(err.contains("network failure (cause 38)"), "{err}");
    assert!(took <= Duration::from_secs(12), "took {took:?}");
    let heard = anytun::audio::read_wav(&net.path("heard.wav")).unwrap();
    assert!(
        heard.len() >= 8000 - 160 * 10,
        "recorded {} samples",
        heard.len()
    );
    net.wait_metric_within("anytun_calls 0", Duration::from_secs(2));
}

/// SIGTERM on `anytun register` removes the registration before exiting,
/// so bob is not rung afterwards.
#[test]
fn sigterm_on_register_unregisters() {
    let net = Net::start(&[("bob.key", "bob")]);
    let mut bob = net.client(&["register", "bob"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(10));
    net.wait_metric("anytun_registrations 1");
    bob.signal("TERM");
    let (st, took) = bob.exit_within(Duration::from_secs(5));
    assert!(st.success(), "{}", bob.stderr());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // Acknowledged before the process exited: gone now, not later.
    let m = net.metrics_text().unwrap();
    assert!(m.contains("anytun_registrations 0\n"), "{m}");
}

/// Two devices of bob answer the same call; the loser is told "answered
/// elsewhere", says so and keeps serving; stopped, it unregisters.
#[test]
fn the_losing_device_of_a_fork_keeps_serving() {
    let net = Net::start(&[
        ("alice.key", "alice"),
        ("bob1.key", "bob"),
        ("bob2.key", "bob"),
    ]);
    net.wav("a.wav", 1.0);
    let mut b1 = net.client(&["answer", "bob"], "bob1.key");
    let mut b2 = net.client(&["answer", "bob"], "bob2.key");
    b1.wait_for("registered bob", Duration::from_secs(10));
    b2.wait_for("registered bob", Duration::from_secs(10));
    net.wait_metric("anytun_registrations 2");
    let mut alice = net.client(&["call", "bob", "--play", "a.wav"], "alice.key");
    let (st, _) = alice.exit_within(Duration::from_secs(15));
    assert!(st.success(), "{}", alice.stderr());
    // One device took the call and exited; the other lost the race.
    let t = Instant::now();
    let (winner, loser) = loop {
        if b1.child.try_wait().unwrap().is_some() {
            break (&mut b1, &mut b2);
        }
        if b2.child.try_wait().unwrap().is_some() {
            break (&mut b2, &mut b1);
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no device finished");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (st, _) = winner.exit_within(Duration::from_secs(1));
    assert!(st.success(), "{}", winner.stderr());
    loser.wait_for("answered on another device", Duration::from_secs(3));
    assert!(
        loser.child.try_wait().unwrap().is_none(),
        "the loser must keep serving"
    );
    assert!(!loser.stderr().contains("no call"), "{}", loser.stderr());
    net.wait_metric("anytun_registrations 1");
    loser.signal("TERM");
    let (st, _) = loser.exit_within(Duration::from_secs(5));
    assert!(st.success(), "{}", loser.stderr());
    net.wait_metric_within("anytun_registrations 0", Duration::from_secs(1));
}

/// A call to an `anytun answer` that is already in a call is refused with
/// busy at once (not 60 s of ringing and "no answer").
#[test]
fn a_busy_answer_refuses_a_second_call_at_once() {
    let net = Net::start(&[
        ("alice.key", "alice"),
        ("bob.key", "bob"),
        ("carol.key", "carol"),
    ]);
    net.wav("long.wav", 20.0);
    net.wav("short.wav", 0.2);
    let _bob = net.client(&["answer", "bob", "--play", "long.wav"], "bob.key");
    _bob.wait_for("registered bob", Duration::from_secs(10));
    let alice = net.client(&["call", "bob", "--play", "long.wav"], "alice.key");
    alice.wait_for("answered", Duration::from_secs(10));
    let mut carol = net.client(&["call", "bob", "--play", "short.wav"], "carol.key");
    let (st, took) = carol.exit_within(Duration::from_secs(10));
    assert!(!st.success());
    assert!(
        carol.stderr().contains("busy (cause 17)"),
        "{}",
        carol.stderr()
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// A second login with bob's key replaces the first: the first process is
/// told at once, says why and exits non-zero without logging in again.
#[test]
fn a_second_login_with_the_same_key_stops_the_first() {
    let net = Net::start(&[("bob.key", "bob")]);
    let mut first = net.client(&["register", "bob"], "bob.key");
    first.wait_for("registered bob", Duration::from_secs(10));
    let mut second = net.client(&["register", "bob"], "bob.key");
    second.wait_for("registered bob", Duration::from_secs(10));
    let (st, _) = first.exit_within(Duration::from_secs(3));
    assert!(!st.success());
    let err = first.stderr();
    assert!(
        err.contains("replaced by a newer login with the same key"),
        "{err}"
    );
    net.wait_metric("anytun_sessions 1");
    net.wait_metric("anytun_registrations 1");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "{}",
        second.stderr()
    );
    second.signal("TERM");
    let (st, _) = second.exit_within(Duration::from_secs(5));
    assert!(st.success(), "{}", second.stderr());
}

/// The callee hangs up (Ctrl-C) while the caller is still playing: the
/// caller says who hung up and why, and writes its recording.
#[test]
fn the_other_side_hanging_up_during_playback_is_reported_with_its_cause() {
    let net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob")]);
    net.wav("long.wav", 20.0);
    let bob = net.client(&["answer", "bob", "--play", "long.wav"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(10));
    let mut alice = net.client(
        &["call", "bob", "--play", "long.wav", "--record", "heard.wav"],
        "alice.key",
    );
    alice.wait_for("answered", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    bob.signal("INT");
    let (st, took) = alice.exit_within(Duration::from_secs(5));
    let err = alice.stderr();
    assert!(st.success(), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        err.contains("bob hung up: normal clearing (cause 16)"),
        "{err}"
    );
    assert!(!err.contains("no call"), "{err}");
    let heard = anytun::audio::read_wav(&net.path("heard.wav")).unwrap();
    assert!(heard.len() >= 4000, "recorded {} samples", heard.len());
}

/// Codecs this client cannot encode are refused before anything is sent.
#[test]
fn codecs_the_client_cannot_carry_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    anytun(&["keygen", "--out", "k.key"], d);
    write_wav(&d.join("x.wav"), &[0; 160]).unwrap();
    let network = anytun(&["pubkey", "k.key"], d).trim().to_owned();
    let port = free_port().to_string();
    for args in [
        vec!["call", "bob", "--play", "x.wav", "--codecs", "opus"],
        vec!["answer", "bob", "--codecs", "opus"],
        vec!["call", "bob", "--play", "x.wav", "--codecs", "ulaw,g729"],
    ] {
        let t = Instant::now();
        let mut a = args.clone();
        a.extend(["--key", "k.key", "--network-key", &network]);
        let proxy = format!("127.0.0.1:{port}");
        a.extend(["--proxy", &proxy]);
        let out = Command::new(ANYTUN)
            .args(&a)
            .current_dir(d)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{args:?} took {:?}",
            t.elapsed()
        );
        assert!(
            err.contains("supported: ulaw, alaw, slin"),
            "{args:?}: {err}"
        );
    }
}

/// The daemon restarts (it forgets every session): a waiting `anytun
/// answer` notices, logs in again, registers again and takes the next call.
#[test]
fn answer_keeps_serving_across_a_daemon_restart() {
    let mut net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob")]);
    net.wav("a.wav", 0.5);
    let mut bob = net.client(&["answer", "bob", "--keepalive", "3"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(10));
    net.wait_metric("anytun_registrations 1");
    drop(net.daemon.take()); // SIGKILL: no goodbyes from the proxy
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    net.start_daemon();
    net.wait_metric_within("anytun_registrations 1", Duration::from_secs(15));
    let took = t.elapsed();
    println!("answer registered again {took:?} after the daemon restarted (keepalive 3 s)");
    // keepalive + 3 s without an answer + handshake
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let mut alice = net.client(&["call", "bob", "--play", "a.wav"], "alice.key");
    let (st, _) = alice.exit_within(Duration::from_secs(10));
    assert!(st.success(), "{}", alice.stderr());
    let (st, _) = bob.exit_within(Duration::from_secs(5));
    assert!(st.success(), "{}", bob.stderr());
}

/// The daemon restarts during a call: both ends report cause 38 within
/// seconds (a single proxy keeps no calls across a restart), and the
/// answering side, its call taken, exits normally.
#[test]
fn a_call_during_a_daemon_restart_ends_on_both_ends_within_seconds() {
    let mut net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob")]);
    net.wav("long.wav", 30.0);
    let mut bob = net.client(&["answer", "bob", "--play", "long.wav"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(10));
    let mut alice = net.client(&["call", "bob", "--play", "long.wav"], "alice.key");
    alice.wait_for("answered", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    drop(net.daemon.take());
    let t = Instant::now();
    net.start_daemon();
    let (st, took) = alice.exit_within(Duration::from_secs(15));
    println!("caller ended its call {took:?} after the daemon was killed");
    assert!(!st.success());
    assert!(
        alice.stderr().contains("ended: network failure (cause 38)"),
        "{}",
        alice.stderr()
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
    bob.wait_for(
        "call ended: network failure (cause 38)",
        Duration::from_secs(8),
    );
    let (st, _) = bob.exit_within(Duration::from_secs(5));
    println!("callee done {:?} after the daemon was killed", t.elapsed());
    assert!(st.success(), "{}", bob.stderr());
}

/// `anytun answer --record` reports and writes each call's recording once:
/// not a second time when it exits after its last call.
#[test]
fn answer_reports_and_writes_its_recording_once_per_call() {
    let net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob")]);
    net.wav("a.wav", 0.5);
    let mut bob = net.client(&["answer", "bob", "--record", "heard.wav"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(10));
    let mut alice = net.client(&["call", "bob", "--play", "a.wav"], "alice.key");
    let (st, _) = alice.exit_within(Duration::from_secs(10));
    assert!(st.success(), "{}", alice.stderr());
    let (st, _) = bob.exit_within(Duration::from_secs(5));
    let err = bob.stderr();
    assert!(st.success(), "{err}");
    assert_eq!(err.matches("received ").count(), 1, "{err}");
    assert_eq!(err.matches("recorded ").count(), 1, "{err}");
    assert!(!anytun::audio::read_wav(&net.path("heard.wav"))
        .unwrap()
        .is_empty());
}

/// A `--dtmf` string with a character that is not a DTMF digit is refused
/// before anything is sent: no call rings and is answered only to fail.
#[test]
fn a_bad_dtmf_digit_is_refused_before_calling() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    anytun(&["keygen", "--out", "k.key"], d);
    anytun(&["keygen", "--out", "n.key"], d);
    write_wav(&d.join("x.wav"), &[0; 160]).unwrap();
    let network = anytun(&["pubkey", "n.key"], d).trim().to_owned();
    // Nobody listens there: a client that tried to connect would wait 11 s.
    let proxy = format!("127.0.0.1:{}", free_port());
    let t = Instant::now();
    let out = Command::new(ANYTUN)
        .args(["call", "bob", "--play", "x.wav", "--dtmf", "12x#"])
        .args([
            "--key",
            "k.key",
            "--network-key",
            &network,
            "--proxy",
            &proxy,
        ])
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("'x' is not a DTMF digit"), "{err}");
}

/// Starts `anytun <args> --key <key>` against `net`'s daemon, reached at
/// `proxy` (e.g. a host name) instead of its numeric address.
fn client_via(net: &Net, proxy: &str, args: &[&str], key: &str) -> Proc {
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.extend([
        "--key".into(),
        key.into(),
        "--network-key".into(),
        net.network.clone(),
        "--proxy".into(),
        proxy.into(),
    ]);
    Proc::spawn(ANYTUN, &a, net.dir.path())
}

/// Runs `anytun <args>` to its end (a few seconds at most); returns whether
/// it succeeded and its stderr.
fn anytun_result(args: &[&str], dir: &Path) -> (bool, String) {
    let mut p = Proc::spawn(
        ANYTUN,
        &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        dir,
    );
    let (st, _) = p.exit_within(Duration::from_secs(3));
    (st.success(), p.stderr())
}

/// `--proxy` takes a host name (resolved by the system; the first address
/// it returns is used, and the connected line says which).
#[test]
fn proxy_accepts_a_host_name() {
    let net = Net::start(&[("bob.key", "bob")]);
    let proxy = format!("localhost:{}", net.port);
    let mut bob = client_via(&net, &proxy, &["register", "bob"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(5));
    let err = bob.stderr();
    assert!(
        err.contains(&format!("{proxy} = 127.0.0.1:{}", net.port)),
        "says which address it chose: {err}"
    );
    bob.signal("TERM");
    let (st, _) = bob.exit_within(Duration::from_secs(5));
    assert!(st.success(), "{}", bob.stderr());

    let help = anytun(&["register", "--help"], net.dir.path());
    assert!(help.contains("host name"), "{help}");
    let (ok, err) = anytun_result(
        &[
            "register",
            "bob",
            "--key",
            "bob.key",
            "--network-key",
            &net.network,
            "--proxy",
            "localhost",
        ],
        net.dir.path(),
    );
    assert!(!ok);
    // No port: refused at once (no DNS query), saying what is expected.
    assert!(
        err.contains("localhost") && err.contains("HOST:PORT"),
        "{err}"
    );
}

/// A key that is not a subscriber is told the command that adds it, with
/// the name it tried to register rather than a placeholder.
#[test]
fn the_non_subscriber_hint_names_the_name() {
    let net = Net::start(&[("alice.key", "alice")]);
    anytun(&["keygen", "--out", "dave.key"], net.dir.path());
    let public = anytun(&["pubkey", "dave.key"], net.dir.path())
        .trim()
        .to_owned();
    let mut dave = net.client(&["register", "dave"], "dave.key");
    let (st, _) = dave.exit_within(Duration::from_secs(5));
    assert!(!st.success());
    let err = dave.stderr();
    assert!(
        err.contains(&format!("anytun user add dave {public}")),
        "{err}"
    );
}

/// `register` refuses every call, so it offers no media option; `call` and
/// `answer` do. `answer --calls 0` is refused before anything starts.
#[test]
fn options_are_offered_only_where_they_do_something() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let help = anytun(&["register", "--help"], d);
    assert!(!help.contains("--media-timeout"), "{help}");
    for cmd in ["call", "answer"] {
        let help = anytun(&[cmd, "--help"], d);
        assert!(help.contains("--media-timeout"), "{cmd}: {help}");
    }
    let (ok, err) = anytun_result(
        &[
            "register",
            "bob",
            "--key",
            "k",
            "--network-key",
            "n",
            "--media-timeout",
            "5",
        ],
        d,
    );
    assert!(!ok);
    assert!(err.contains("--media-timeout"), "{err}");

    // Nothing listens there: a client that tried to connect would wait 11 s.
    let proxy = format!("127.0.0.1:{}", free_port());
    let (ok, err) = anytun_result(
        &[
            "answer",
            "bob",
            "--calls",
            "0",
            "--key",
            "k",
            "--network-key",
            "n",
            "--proxy",
            &proxy,
        ],
        d,
    );
    assert!(!ok);
    assert!(err.contains("--calls"), "{err}");
}

/// A call to a name whose `answer` used this same key: the caller's login
/// replaced the answerer's session. The caller is told why; the answerer
/// says "replaced" once, not twice.
#[test]
fn calling_yourself_with_the_same_key_says_why_it_fails() {
    let net = Net::start(&[("alice.key", "alice")]);
    net.wav("a.wav", 0.2);
    let mut answer = net.client(&["answer", "alice"], "alice.key");
    answer.wait_for("registered alice", Duration::from_secs(5));
    let mut call = net.client(&["call", "alice", "--play", "a.wav"], "alice.key");
    let (st, _) = call.exit_within(Duration::from_secs(5));
    assert!(!st.success());
    let err = call.stderr();
    assert!(err.contains("not registered (cause 20)"), "{err}");
    assert!(
        err.contains("anytun answer alice") && err.contains("each device needs its own key"),
        "{err}"
    );
    let (st, _) = answer.exit_within(Duration::from_secs(3));
    assert!(!st.success());
    let err = answer.stderr();
    assert_eq!(err.matches("replaced").count(), 1, "{err}");

    // A name merely not registered gets no such hint.
    let net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob")]);
    net.wav("a.wav", 0.2);
    let mut call = net.client(&["call", "bob", "--play", "a.wav"], "alice.key");
    let (st, _) = call.exit_within(Duration::from_secs(5));
    assert!(!st.success());
    let err = call.stderr();
    assert!(err.contains("not registered (cause 20)"), "{err}");
    assert!(!err.contains("own key"), "{err}");
}

/// `answer` says when it refuses a call as busy, one line per call.
#[test]
fn answer_says_when_it_refuses_a_call_as_busy() {
    let net = Net::start(&[
        ("alice.key", "alice"),
        ("bob.key", "bob"),
        ("carol.key", "carol"),
    ]);
    net.wav("long.wav", 20.0);
    net.wav("short.wav", 0.2);
    let bob = net.client(&["answer", "bob", "--play", "long.wav"], "bob.key");
    bob.wait_for("registered bob", Duration::from_secs(5));
    let alice = net.client(&["call", "bob", "--play", "long.wav"], "alice.key");
    alice.wait_for("answered", Duration::from_secs(5));
    let mut carol = net.client(&["call", "bob", "--play", "short.wav"], "carol.key");
    let (st, _) = carol.exit_within(Duration::from_secs(5));
    assert!(!st.success());
    bob.wait_for("refused a call from carol: busy", Duration::from_secs(2));
    assert_eq!(bob.stderr().matches("refused a call").count(), 1);
}

/// `answer --calls 2 --record F` writes one file per call (F-1.wav,
/// F-2.wav), not F overwritten by the second call.
#[test]
fn answer_with_several_calls_records_each_call_to_its_own_file() {
    let net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob")]);
    net.wav("a.wav", 0.3);
    let mut bob = net.client(
        &["answer", "bob", "--calls", "2", "--record", "heard.wav"],
        "bob.key",
    );
    bob.wait_for("registered bob", Duration::from_secs(5));
    for _ in 0..2 {
        let mut alice = net.client(&["call", "bob", "--play", "a.wav"], "alice.key");
        let (st, _) = alice.exit_within(Duration::from_secs(5));
        assert!(st.success(), "{}", alice.stderr());
    }
    let (st, _) = bob.exit_within(Duration::from_secs(5));
    assert!(st.success(), "{}", bob.stderr());
    for f in ["heard-1.wav", "heard-2.wav"] {
        let heard = anytun::audio::read_wav(&net.path(f)).unwrap();
        assert!(!heard.is_empty(), "{f} is empty");
    }
    assert!(!net.path("heard.wav").exists(), "{}", bob.stderr());
}

/// A client whose clock is off is warned once (not by a log line and again
/// by the CLI). Needs libfaketime's `faketime` (scripts/test.sh installs
/// it): without it this test fails rather than pass untested.
#[test]
fn the_clock_skew_warning_is_printed_once() {
    assert!(
        Path::new("/usr/bin/faketime").exists(),
        "needs /usr/bin/faketime (apt-get install faketime; scripts/test.sh installs it)"
    );
    let net = Net::start(&[("bob.key", "bob")]);
    let args: Vec<String> = [
        "-f",
        "+600s",
        ANYTUN,
        "register",
        "bob",
        "--key",
        "bob.key",
        "--network-key",
        &net.network,
        "--proxy",
        &format!("127.0.0.1:{}", net.port),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut bob = Proc::spawn("/usr/bin/faketime", &args, net.dir.path());
    bob.wait_for("registered bob", Duration::from_secs(5));
    bob.signal("TERM");
    let _ = bob.exit_within(Duration::from_secs(5));
    let err = bob.stderr();
    assert_eq!(err.matches("ahead of the proxy's").count(), 1, "{err}");
}
