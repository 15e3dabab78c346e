//! The shipped binaries, end to end: `anytund` with a config file, `anytun
//! keygen` and `user add` on its store, then `anytun answer` and `anytun call`
//! exchanging real WAV files through it.

use anytun::audio::{read_wav, test_signal, write_wav, Codec};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ANYTUN: &str = env!("CARGO_BIN_EXE_anytun");
const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");

fn run(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(ANYTUN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run anytun");
    out
}

fn ok(args: &[&str], dir: &Path) -> String {
    let out = run(args, dir);
    assert!(
        out.status.success(),
        "anytun {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn public_key(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("public key line")
        .trim()
        .to_owned()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_file(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn call_and_answer_with_wav_files_through_anytund() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_udp_port();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        d.join("anytund.toml"),
        format!(
            "proxy_id = 7\nlisten = [\"127.0.0.1:{port}\"]\nnetwork_key = \"state/network.key\"\n\
             subscribers = \"state/subscribers.db\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             subscriber_reload_ms = 100\n"
        ),
    )
    .unwrap();
    let daemon = Daemon(
        Command::new(ANYTUND)
            .args(["--config", "anytund.toml"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_file(&d.join("state/network.key"));
    let network = ok(&["pubkey", "state/network.key"], d).trim().to_owned();
    let alice = public_key(&ok(&["keygen", "--out", "alice.key"], d));
    let bob = public_key(&ok(&["keygen", "--out", "bob.key"], d));
    let db = "state/subscribers.db";
    ok(&["user", "add", "alice", &alice, "--db", db], d);
    ok(&["user", "add", "bob", &bob, "--db", db], d);
    let listed = ok(&["user", "list", "--db", db], d);
    assert!(listed.contains(&format!("alice\t{alice}")) && listed.contains(&format!("bob\t{bob}")));
    // The daemon picks up the new subscribers within its reload period.
    wait_for_metric(metrics_port, "anytun_subscribers 2");

    let to_bob = test_signal(11, 8000);
    let to_alice = test_signal(22, 8000);
    write_wav(&d.join("alice.wav"), &to_bob).unwrap();
    write_wav(&d.join("bob.wav"), &to_alice).unwrap();
    let proxy = format!("127.0.0.1:{port}");
    let common = |key: &str| {
        vec![
            "--key".to_owned(),
            key.to_owned(),
            "--network-key".to_owned(),
            network.clone(),
            "--proxy".to_owned(),
            proxy.clone(),
        ]
    };
    let mut answer_args: Vec<String> = [
        "answer",
        "bob",
        "--play",
        "bob.wav",
        "--record",
        "at-bob.wav",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    answer_args.extend(common("bob.key"));
    let answerer = Command::new(ANYTUN)
        .args(&answer_args)
        .current_dir(d)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until bob is registered before calling.
    wait_for_metric(metrics_port, "anytun_registrations 1");
    let mut call_args: Vec<String> = [
        "call",
        "bob",
        "--play",
        "alice.wav",
        "--record",
        "at-alice.wav",
        "--codecs",
        "alaw",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    call_args.extend(common("alice.key"));
    let caller = Command::new(ANYTUN)
        .args(&call_args)
        .current_dir(d)
        .output()
        .unwrap();
    let caller_err = String::from_utf8_lossy(&caller.stderr);
    assert!(caller.status.success(), "call failed: {caller_err}");
    let answered = answerer.wait_with_output().unwrap();
    let answer_err = String::from_utf8_lossy(&answered.stderr);
    assert!(answered.status.success(), "answer failed: {answer_err}");
    assert!(caller_err.contains("answered, codec alaw"), "{caller_err}");

    // Everything alice sent arrived at bob, sample for sample (after A-law).
    let codec = Codec::Alaw;
    let heard_by_bob = read_wav(&d.join("at-bob.wav")).unwrap();
    let expect = anytun::media::expected_audio(&codec, &to_bob).unwrap();
    assert_eq!(heard_by_bob.len(), expect.len(), "{answer_err}");
    assert!(
        heard_by_bob == expect,
        "audio at bob differs from what alice sent"
    );
    // Bob's audio reached alice while the call lasted (alice hangs up when
    // her file ends, so bob's equally long file arrives whole too).
    let heard_by_alice = read_wav(&d.join("at-alice.wav")).unwrap();
    let expect = anytun::media::expected_audio(&codec, &to_alice).unwrap();
    let n = heard_by_alice.len().min(expect.len());
    assert!(n >= expect.len() - 160 * 5, "alice heard only {n} samples");
    assert!(heard_by_alice[..n] == expect[..n], "audio at alice differs");

    // Metrics show the call.
    let body = http_get(metrics_port);
    assert!(body.contains("anytun_calls_answered_total 1"), "{body}");
    assert!(body.contains("anytun_media_relayed_total"), "{body}");
    drop(daemon);
}

/// Polls the daemon's metrics until `line` appears (the daemon may still
/// be starting, so connection errors just mean "not yet").
fn wait_for_metric(port: u16, line: &str) {
    let t = Instant::now();
    while !try_get(port).is_some_and(|b| b.contains(&format!("{line}\n"))) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "metric {line:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn try_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn http_get(port: u16) -> String {
    try_get(port).expect("metrics answer")
}

#[test]
fn config_errors_name_file_line_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "proxy_id = 1\nkeepalive = 10\n",
    )
    .unwrap();
    let out = Command::new(ANYTUND)
        .args(["--config", "bad.toml", "--check-config"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:"), "{err}");
    assert!(err.contains("keepalive"), "{err}");
}

#[test]
fn unknown_key_and_wrong_network_key_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_udp_port();
    std::fs::write(
        d.join("anytund.toml"),
        // State paths are named: the built-in defaults are system paths.
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nmetrics_listen = \"\"\n\
             network_key = \"anytun-state/network.key\"\nsubscribers = \"anytun-state/subscribers.db\"\n"
        ),
    )
    .unwrap();
    let _daemon = Daemon(
        Command::new(ANYTUND)
            .args(["--config", "anytund.toml"])
            .current_dir(d)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_file(&d.join("anytun-state/network.key"));
    let network = ok(&["pubkey", "anytun-state/network.key"], d)
        .trim()
        .to_owned();
    ok(&["keygen", "--out", "stranger.key"], d);
    write_wav(&d.join("x.wav"), &[0; 160]).unwrap();
    let proxy = format!("127.0.0.1:{port}");
    // A failing call's error text, as the user sees it.
    let call_with = |network_key: &str| {
        let args = ["call", "bob", "--play", "x.wav", "--key", "stranger.key"];
        let mut args: Vec<&str> = args.to_vec();
        args.extend(["--network-key", network_key, "--proxy", &proxy]);
        let out = run(&args, d);
        assert!(!out.status.success(), "the call must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = call_with(&network);
    assert!(err.contains("not in the subscriber store"), "{err}");
    assert!(err.contains("anytun user add"), "{err}");

    let wrong = public_key(&ok(&["keygen"], d));
    let err = call_with(&wrong);
    assert!(err.contains("network public key"), "{err}");
}
