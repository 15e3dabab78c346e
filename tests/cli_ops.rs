//! The shipped binaries as an operator meets them: which config and store
//! they use, a port already taken, config errors, and a private key given
//! where a public key belongs. Every test is hermetic: it names its config
//! with `--config` or `ANYTUN_CONFIG` inside a temporary directory.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ANYTUN: &str = env!("CARGO_BIN_EXE_anytun");
const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");

/// Environment a test must not inherit from the machine it runs on.
const FOREIGN_ENV: [&str; 5] = [
    "ANYTUN_CONFIG",
    "ANYTUND_CONFIG",
    "ANYTUN_DB",
    "ANYTUN_NETWORK_KEY",
    "ANYTUN_KEY",
];

fn anytun(dir: &Path) -> Command {
    let mut c = Command::new(ANYTUN);
    c.current_dir(dir);
    for v in FOREIGN_ENV {
        c.env_remove(v);
    }
    c
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run anytun");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_udp_port() -> u16 {
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

/// A running anytund whose stderr lines are collected; killed on drop.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(config: &Path, cwd: &Path) -> Self {
        let mut c = Command::new(ANYTUND);
        for v in FOREIGN_ENV {
            c.env_remove(v);
        }
        let mut child = c
            .arg("--config")
            .arg(config)
            .current_dir(cwd)
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
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (10 s at most) for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.seen.iter().any(|l| l.contains(needle)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("anytund never said {needle:?}; it said {:#?}", self.seen),
            }
        }
    }

    /// Waits (`within` at most) for the daemon to exit; returns its status
    /// and everything it wrote to stderr, or `None` if it is still running.
    fn exit_within(&mut self, within: Duration) -> Option<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at EOF; collect what it read.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return Some((status, self.seen.join("\n")));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a daemon config into `dir` whose state lives in `dir/state`.
fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("anytund.toml");
    std::fs::write(
        &path,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nnetwork_key = \"state/network.key\"\n\
             subscribers = \"state/subscribers.db\"\nsubscriber_reload_ms = 100\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn metric(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn wait_for_metric(port: u16, line: &str) {
    let t = Instant::now();
    while !metric(port).is_some_and(|b| b.contains(&format!("{line}\n"))) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "metric {line:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that `output` holds no 8-character piece of `secret`.
fn assert_no_part_of(output: &str, secret: &str) {
    for i in 0..secret.len().saturating_sub(8) {
        let piece = &secret[i..i + 8];
        assert!(
            !output.contains(piece),
            "the output shows {piece:?} of the private key:\n{output}"
        );
    }
}

#[test]
fn the_daemons_private_key_given_as_network_key_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_udp_port();
    let config = write_config(d, port, "metrics_listen = \"\"\n");
    // A network key as anytund wrote it before private keys were tagged
    // (bare base64): the daemon must make it recognisable.
    std::fs::create_dir_all(d.join("state")).unwrap();
    let out = ok(anytun(d).arg("keygen"));
    let legacy = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("private key: "))
        .unwrap()
        .trim()
        .trim_start_matches("private:")
        .to_owned();
    std::fs::write(d.join("state/network.key"), format!("{legacy}\n")).unwrap();
    let mut daemon = Daemon::start(&config, d);
    daemon.wait_for("network public key");
    let key_file = d.join("state/network.key");
    let private_text = std::fs::read_to_string(&key_file).unwrap();
    // The base64 of the private key, whatever the file's framing.
    let secret = private_text
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(secret.len(), 44, "{private_text}");
    ok(anytun(d).args(["keygen", "--out", "alice.key"]));
    anytun::audio::write_wav(&d.join("x.wav"), &[0; 160]).unwrap();
    let proxy = format!("127.0.0.1:{port}");
    let call = ["call", "bob", "--play", "x.wav", "--key", "alice.key"];

    // As a file (the easy guess), as the file's text, and from the
    // environment.
    let as_flag = |value: &str| {
        let mut c = anytun(d);
        c.args(call)
            .args(["--network-key", value, "--proxy", &proxy]);
        c
    };
    let mut from_env = anytun(d);
    from_env
        .args(call)
        .args(["--proxy", &proxy])
        .env("ANYTUN_NETWORK_KEY", key_file.to_str().unwrap());
    let cases = [
        ("file", as_flag("state/network.key"), "state/network.key"),
        ("text", as_flag(private_text.trim()), "--network-key"),
        ("env", from_env, "network.key"),
    ];
    for (what, mut cmd, names) in cases {
        let t = Instant::now();
        let out = cmd.output().unwrap();
        let took = t.elapsed();
        let err = text(&out.stderr);
        let all = format!("{err}{}", text(&out.stdout));
        assert!(!out.status.success(), "{what}: the call must fail: {all}");
        assert_no_part_of(&all, &secret);
        assert!(
            took < Duration::from_secs(2),
            "{what}: refused only after {took:?}: {err}"
        );
        assert!(
            err.contains("is a private key; give the network's PUBLIC key: `anytun pubkey --key FILE` prints it"),
            "{what}: {err}"
        );
        assert!(err.contains(names), "{what}: names what was given: {err}");
    }

    // A client's own untagged key file given as the network key too.
    std::fs::write(d.join("old.key"), format!("{secret}\n")).unwrap();
    let out = anytun(d)
        .args([
            "call",
            "bob",
            "--play",
            "x.wav",
            "--key",
            "state/network.key",
        ])
        .args(["--network-key", "old.key", "--proxy", &proxy])
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stderr), text(&out.stdout));
    assert!(!out.status.success());
    assert!(all.contains("is a private key"), "{all}");
    assert_no_part_of(&all, &secret);

    // `user add` refuses it too, without echoing it.
    let out = anytun(d)
        .arg("user")
        .arg("--config")
        .arg(&config)
        .args(["add", "bob", private_text.trim()])
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stderr), text(&out.stdout));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("is a private key"), "{all}");
    assert_no_part_of(&all, &secret);

    // `anytun pubkey --key FILE` prints the public key, which works.
    let public = text(&ok(anytun(d).args(["pubkey", "--key", "state/network.key"])).stdout)
        .trim()
        .to_owned();
    assert_eq!(public.len(), 44);
    assert_no_part_of(&public, &secret);
}

#[test]
fn user_commands_find_the_daemons_store_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_udp_port();
    let metrics = free_tcp_port();
    let etc = d.join("etc");
    let config = write_config(
        &etc,
        port,
        &format!("metrics_listen = \"127.0.0.1:{metrics}\"\n"),
    );
    let daemon_cwd = d.join("daemon-cwd");
    let elsewhere = d.join("somewhere/else");
    std::fs::create_dir_all(&daemon_cwd).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let mut daemon = Daemon::start(&config, &daemon_cwd);
    daemon.wait_for("network public key");
    wait_for_metric(metrics, "anytun_subscribers 0");
    let store = etc.join("state/subscribers.db");

    let key = text(&ok(anytun(&elsewhere).arg("keygen")).stdout);
    let key = key
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .trim()
        .to_owned();
    // From another directory, with the config named by the environment.
    let out = ok(anytun(&elsewhere)
        .env("ANYTUN_CONFIG", &config)
        .args(["user", "add", "alice", &key]));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains(&store.display().to_string()),
        "names the store it changed: {said}"
    );
    // The daemon sees it: it is the daemon's store.
    wait_for_metric(metrics, "anytun_subscribers 1");
    assert!(
        !elsewhere.join("anytun-state").exists(),
        "no stray store in the working directory"
    );

    // list and remove say which store too; --config works as the env does.
    let out = ok(anytun(&elsewhere)
        .arg("user")
        .arg("--config")
        .arg(&config)
        .arg("list"));
    assert!(text(&out.stdout).contains(&format!("alice\t{key}")));
    assert!(
        text(&out.stderr).contains(&store.display().to_string()),
        "{}",
        text(&out.stderr)
    );
    let out = ok(anytun(&elsewhere)
        .env("ANYTUN_CONFIG", &config)
        .args(["user", "remove", "alice"]));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains(&store.display().to_string()), "{said}");
    wait_for_metric(metrics, "anytun_subscribers 0");
    // The removal is kept (for replication): listed with --removed only.
    let out = ok(anytun(&elsewhere)
        .env("ANYTUN_CONFIG", &config)
        .args(["user", "list"]));
    assert!(
        !text(&out.stdout).contains("alice"),
        "{}",
        text(&out.stdout)
    );
    let out =
        ok(anytun(&elsewhere)
            .env("ANYTUN_CONFIG", &config)
            .args(["user", "list", "--removed"]));
    let listed = text(&out.stdout);
    assert!(listed.starts_with(&format!("alice\t{key}\t")), "{listed}");
}

#[test]
fn a_second_anytund_on_a_taken_port_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_udp_port();
    let no_metrics = "metrics_listen = \"\"\n";
    let first = write_config(&d.join("a"), port, no_metrics);
    let second = write_config(&d.join("b"), port, no_metrics);
    let mut a = Daemon::start(&first, d);
    a.wait_for("network public key");
    let mut b = Daemon::start(&second, d);
    let Some((status, err)) = b.exit_within(Duration::from_secs(5)) else {
        panic!("a second anytund started on the taken port {port}");
    };
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "UDP 127.0.0.1:{port} is in use (another anytund?)"
        )),
        "{err}"
    );
    assert!(
        err.contains("reuse_port"),
        "says how to share on purpose: {err}"
    );
    drop(a);

    // Sharing on purpose: every daemon sets reuse_port.
    let shared = format!("{no_metrics}reuse_port = true\n");
    let first = write_config(&d.join("c"), port, &shared);
    let second = write_config(&d.join("e"), port, &shared);
    let mut a = Daemon::start(&first, d);
    a.wait_for("network public key");
    let mut b = Daemon::start(&second, d);
    b.wait_for("network public key");
    assert!(a.exit_within(Duration::ZERO).is_none(), "both keep running");
}

#[test]
fn config_errors_say_what_is_wrong_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let check = |body: &str| {
        std::fs::write(d.join("bad.toml"), body).unwrap();
        let mut c = Command::new(ANYTUND);
        for v in FOREIGN_ENV {
            c.env_remove(v);
        }
        let out = c
            .args(["--config", "bad.toml", "--check-config"])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{body}");
        text(&out.stderr)
    };
    let err = check("proxy_id =\n");
    assert!(
        err.contains("bad.toml:1:11: proxy_id has no value: expected a whole number in 1..=65534"),
        "{err}"
    );
    let err = check("\nproxy_id = 70000\n");
    assert!(
        err.contains(
            "bad.toml:2:12: invalid value for proxy_id: 70000 is out of range (valid: 1..=65534)"
        ),
        "{err}"
    );
    let err = check("keepalive_s = \"15\"\n");
    assert!(
        err.contains("bad.toml:1:15: invalid value for keepalive_s: expected a whole number of seconds in 1..=300, found a string"),
        "{err}"
    );
}

/// A metrics port already taken (a second daemon with the default
/// metrics_listen) is refused before the daemon announces itself or
/// touches its state: no "proxy 1 on ..." line, no key, no epoch lease.
#[test]
fn a_taken_metrics_port_refuses_the_start_before_anything_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = taken.local_addr().unwrap();
    let config = write_config(
        d,
        free_udp_port(),
        &format!("metrics_listen = \"{metrics}\"\n"),
    );
    let mut daemon = Daemon::start(&config, d);
    let Some((status, err)) = daemon.exit_within(Duration::from_secs(5)) else {
        panic!("anytund started although its metrics port {metrics} is taken");
    };
    assert!(!status.success());
    assert!(
        err.contains(&format!("metrics on {metrics}")) && err.contains("metrics_listen"),
        "names the address and the setting: {err}"
    );
    assert!(
        !err.contains("network public key"),
        "announced itself: {err}"
    );
    assert!(
        !d.join("state/network.key").exists() && !d.join("state/send-epoch").exists(),
        "a refused start wrote state"
    );
}

/// A UDP port already taken is refused before the daemon writes any state:
/// no network key is made and no send epochs are leased (each refused start
/// used to move `send-epoch` forward by a whole first lease).
#[test]
fn a_taken_udp_port_refuses_the_start_before_any_state_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = write_config(d, port, "metrics_listen = \"\"\n");
    let mut daemon = Daemon::start(&config, d);
    let Some((status, err)) = daemon.exit_within(Duration::from_secs(5)) else {
        panic!("anytund started although its UDP port {port} is taken");
    };
    assert!(!status.success());
    assert!(err.contains("is in use"), "{err}");
    assert!(
        !d.join("state/network.key").exists(),
        "a refused start made a network key: {err}"
    );
    assert!(
        !d.join("state/send-epoch").exists(),
        "a refused start leased send epochs: {err}"
    );
}

/// `anytun user add` by a user who cannot write the daemon's store (an
/// ordinary user on root's store) says it lacks permission, names the file,
/// and says who can change it, instead of SQLite's "attempt to write a
/// readonly database". Drops from root to `nobody` with setpriv, so it
/// needs root (as scripts/test.sh and CI run); without it the test fails
/// rather than pass untested.
#[test]
fn user_add_without_write_permission_says_so_and_names_the_file() {
    let root = Command::new("id").arg("-u").output().ok();
    let is_root = root.is_some_and(|o| text(&o.stdout).trim() == "0");
    assert!(
        is_root && Path::new("/usr/bin/setpriv").exists(),
        "needs root and /usr/bin/setpriv to act as another user (run scripts/test.sh as root)"
    );
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `nobody` may reach the store, not write it.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = d.join("state/subscribers.db");
    let alice = "a8qmo493EA4EJvG9x98xE/aR6Y6bmEAAalpQruuCXUE=";
    let bob = "52kILtDXxtA0Otsm4id332xp8goD9rIYfQbTH6XaTUg=";
    ok(anytun(d)
        .args(["user", "add", "alice", alice, "--db"])
        .arg(&store));
    let mut as_nobody = Command::new("/usr/bin/setpriv");
    as_nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", ANYTUN])
        .args(["user", "add", "bob", bob, "--db"])
        .arg(&store)
        .current_dir(d);
    for v in FOREIGN_ENV {
        as_nobody.env_remove(v);
    }
    let out = as_nobody.output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("permission") && err.contains(&store.display().to_string()),
        "says it lacks permission and names the file: {err}"
    );
    assert!(
        err.contains("as root or as the user"),
        "says who can: {err}"
    );
    assert!(!err.contains("readonly database"), "{err}");
}

/// A subscriber store the daemon cannot open is refused before the network
/// key is made or send epochs are leased.
#[test]
fn an_unusable_store_refuses_the_start_before_epochs_are_leased() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, free_udp_port(), "metrics_listen = \"\"\n");
    // A directory where the store's file should be: SQLite cannot open it.
    std::fs::create_dir_all(d.join("state/subscribers.db")).unwrap();
    let mut daemon = Daemon::start(&config, d);
    let Some((status, err)) = daemon.exit_within(Duration::from_secs(5)) else {
        panic!("anytund started without a usable store");
    };
    assert!(!status.success());
    assert!(err.contains("subscribers.db"), "{err}");
    assert!(
        !d.join("state/send-epoch").exists() && !d.join("state/network.key").exists(),
        "a refused start wrote state: {err}"
    );
}

/// One HTTP GET of `path` on the daemon's metrics port, as a scraper sends
/// it; the whole answer (status line, headers, body).
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `anytun status` and `anytun peers` read a running daemon's `/status`:
/// a daemon without peers is ready and alone, `/health` says 200, and a
/// daemon that is gone is an error that says where it looked.
#[test]
fn status_and_peers_read_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let metrics = free_tcp_port();
    let addr = format!("127.0.0.1:{metrics}");
    let config = write_config(
        d,
        free_udp_port(),
        &format!("proxy_id = 7\nmetrics_listen = \"{addr}\"\n"),
    );
    let mut daemon = Daemon::start(&config, d);
    daemon.wait_for("network public key");
    wait_for_metric(metrics, "anytun_ready 1");

    let out = ok(anytun(d).args(["status", "--metrics", &addr]));
    let said = text(&out.stdout);
    assert!(
        said.contains("proxy 7 (") && said.contains("): ready, 0 session(s)"),
        "{said}"
    );
    assert!(said.contains("sync: alone (no peers configured)"), "{said}");
    assert!(said.contains("no peers: this proxy is alone"), "{said}");

    // The address from the config file, as `user` finds its store.
    let out = ok(anytun(d).arg("peers").arg("--config").arg(&config));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("no peers: this proxy is alone\n"),
        "{said}"
    );

    let out = ok(anytun(d).args(["peers", "--json", "--metrics", &addr]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["proxy_id"], 7, "{json}");
    assert_eq!(json["ready"], true, "{json}");
    assert!(json["sync"].is_null(), "{json}");

    let health = http_get(metrics, "/health").expect("health answers");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");

    drop(daemon);
    let out = anytun(d)
        .args(["peers", "--metrics", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success(), "succeeded without a daemon");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach anytund's metrics at {addr}")),
        "{err}"
    );
}

/// The `/status` document of the daemon whose metrics listen on `port`.
fn status(port: u16) -> Option<anytun::metrics::Status> {
    let reply = http_get(port, "/status")?;
    let body = reply.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Two linked daemons left idle (no client, no user change): once a
/// daemon's ready file says it serves (it synced with its peer), its
/// `/status` says so too (ready, synced, the peer up), not only after a
/// later tick or event; and still does a while later.
#[test]
fn an_idle_pair_of_linked_daemons_shows_its_peer_up_and_synced() {
    use anytun::crypto::SecretKey;
    let dir = tempfile::tempdir().unwrap();
    let network = SecretKey::generate();
    let keys = [SecretKey::generate(), SecretKey::generate()];
    let links = [free_tcp_port(), free_tcp_port()];
    let metrics = [free_tcp_port(), free_tcp_port()];
    let mut daemons = Vec::new();
    for i in 0..2 {
        let d = dir.path().join(format!("p{i}"));
        network
            .write_new_file(&d.join("state/network.key"))
            .unwrap();
        keys[i].write_new_file(&d.join("node.key")).unwrap();
        let other = 1 - i;
        let config = write_config(
            &d,
            free_udp_port(),
            &format!(
                "proxy_id = {}\nmetrics_listen = \"127.0.0.1:{}\"\nready_file = \"ready\"\n\
                 [sync]\nnode_key = \"node.key\"\nlisten = \"127.0.0.1:{}\"\n\
                 [[sync.peers]]\nid = {}\naddress = \"127.0.0.1:{}\"\npublic_key = \"{}\"\n",
                i + 1,
                metrics[i],
                links[i],
                other + 1,
                links[other],
                keys[other].public()
            ),
        );
        daemons.push(Daemon::start(&config, &d));
    }
    let t = Instant::now();
    let mut pending = vec![0usize, 1];
    while !pending.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "daemons {pending:?} never ready"
        );
        pending.retain(|&i| {
            let ready_file = dir.path().join(format!("p{i}/ready"));
            if !ready_file.exists() {
                return true;
            }
            let s = status(metrics[i]).expect("/status answers");
            let synced = s.sync.as_ref().is_some_and(|y| y.synced);
            let peer = s.peer(2 - i as u16).map(|p| p.state());
            let ready = s.ready;
            eprintln!(
                "daemon {}: ready file after {:?}; /status: ready {ready}, synced {synced}, peer {peer:?}",
                i + 1,
                t.elapsed()
            );
            assert!(
                ready && synced && peer == Some("up"),
                "daemon {}: ready file written, but /status says {s:?}",
                i + 1
            );
            false
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    // Idle from here on: the board still says so a while later.
    std::thread::sleep(Duration::from_millis(1200));
    for (i, &port) in metrics.iter().enumerate() {
        let s = status(port).expect("status");
        assert!(
            s.ready && s.sync.as_ref().is_some_and(|y| y.synced),
            "{s:?}"
        );
        assert_eq!(s.peer(2 - i as u16).map(|p| p.state()), Some("up"));
    }
}
