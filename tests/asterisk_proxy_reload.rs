//! Issue 9, the hosted proxy's life in one PBX on loopback (test 2 itself,
//! behind the lab's NAT, is tests/asterisk_proxy.rs): bob's PBX hosts proxy
//! node 2 (anytun.conf [proxy]) and is a client of it; a standalone
//! `anytund` (node 7) is its anypsp peer and serves alice's PBX. The hosted
//! proxy starts with no subscriber store and pulls alice and bob from its
//! peer before it serves; `anytun show sessions` lists its sessions; a
//! reload applies a [proxy] change by restarting the hosted proxy (which
//! pulls its tables again) or refuses one that cannot start and keeps the
//! old proxy; unload stops it (the anytund sees the link go down).
//!
//! Needs root and the Debian sid chroot (built when missing): without them
//! this test fails, saying so.

mod asterisk_lab;

use asterisk_lab::calls::{alice_extensions, bob_extensions, check_call, tone_files};
use asterisk_lab::{free_port, run, serial, wait_until, Lab, Pbx, ANYTUN, ANYTUND};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A TCP port free on loopback right now.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `anytun ARGS` in `dir`.
fn anytun(dir: &Path, args: &[&str]) -> String {
    run(Command::new(ANYTUN).args(args).current_dir(dir))
        .trim()
        .to_owned()
}

/// The node public key of the proxy configured by `config` (created on
/// first use, as an admin does with `anytund --node-key`).
fn node_key(dir: &Path, config: &str) -> String {
    run(Command::new(ANYTUND)
        .args(["--config", config, "--node-key"])
        .current_dir(dir))
    .trim()
    .to_owned()
}

/// The anytund's /status (through `anytun status --json`); None while it
/// does not answer (starting).
fn try_daemon_status(metrics: u16) -> Option<anytun::metrics::Status> {
    let out = Command::new(ANYTUN)
        .args([
            "status",
            "--json",
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// As `try_daemon_status`, once it answers.
fn daemon_status(metrics: u16) -> anytun::metrics::Status {
    try_daemon_status(metrics).expect("the anytund's /status does not answer")
}

/// A number before `what` on the line of `anytun show status` starting
/// with `label` ("Proxy voice:  12 frames relayed, ...").
fn proxy_figure(pbx: &Pbx, label: &str, what: &str) -> u64 {
    let out = pbx.rx("anytun show status");
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let i = words.iter().position(|w| w.trim_end_matches(',') == what)?;
            words.get(i.checked_sub(1)?)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("{}: no {label:?} ... {what:?} in:\n{out}", pbx.name))
}

/// Moves `pbx`'s session onto proxy `want` (the proxies share one port):
/// a new local port (`conf(port)`, `module reload`) until it lands there,
/// registered.
fn steer(pbx: &Pbx, want: u16, conf: impl Fn(u16) -> String) {
    let mut tries = 0;
    wait_until(
        &format!("{}: a session at proxy {want}", pbx.name),
        Duration::from_secs(60),
        || {
            let st = pbx.rx("anytun show status");
            let settled = st.contains("Session:          connected")
                && st.contains("Pending reload:   none")
                && st.contains("Names registered: 1 of");
            if settled && st.contains(&format!("(proxy {want})")) {
                return true;
            }
            if settled {
                tries += 1;
                assert!(
                    tries <= 20,
                    "{}: 20 local ports, never at proxy {want}",
                    pbx.name
                );
                std::fs::write(pbx.dir.join("etc/anytun.conf"), conf(free_port())).unwrap();
                pbx.rx("module reload res_anytun.so");
            }
            false
        },
    );
}

/// The uid and gid of the user asterisk in the chroot at `root`.
fn asterisk_user(root: &Path) -> (u32, u32) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let f: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("asterisk:"))
        .expect("no user asterisk in the chroot")
        .split(':')
        .collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_hosted_proxy_pulls_its_subscribers_shows_its_sessions_and_reloads_proxy_changes() {
    let _g = serial();
    let q = tempfile::tempdir().unwrap();
    let qd = q.path();
    std::fs::create_dir(qd.join("state")).unwrap();
    // One UDP port for both proxies (SO_REUSEPORT), as an anycast address
    // is one: a proxy answers a client from the address the client knows,
    // whichever proxy holds the call's other leg.
    let udp = free_port();
    let (q_sync, q_metrics, p_sync) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    // The network key, the subscribers (in the anytund's store; anypsp
    // replicates them to the proxy in bob's PBX).
    anytun(qd, &["keygen", "--out", "state/network.key"]);
    let network = anytun(qd, &["pubkey", "state/network.key"]);
    for (key, name) in [("alice.key", "alice"), ("bob.key", "bob")] {
        anytun(qd, &["keygen", "--out", key]);
        let public = anytun(qd, &["pubkey", key]);
        anytun(
            qd,
            &["user", "add", name, &public, "--db", "state/subscribers.db"],
        );
    }
    let base = format!(
        "listen = [\"127.0.0.1:{udp}\"]\nreuse_port = true\nmetrics_listen = \"127.0.0.1:{q_metrics}\"\n\
         network_key = \"state/network.key\"\nsubscribers = \"state/subscribers.db\"\n\
         subscriber_reload_ms = 100\nproxy_id = 7\nmax_calls_per_session = 100\n"
    );
    std::fs::write(qd.join("anytund.toml"), &base).unwrap();
    let q_key = node_key(qd, "anytund.toml");

    // Bob's PBX: its configuration directory is its proxy's state dir too
    // (the same network key; a node key of its own, made here first so
    // that the anytund can list it).
    let (ia, ib) = (Pbx::inner_dir("pa"), Pbx::inner_dir("pb"));
    let (tone_a, tone_b) = tone_files();
    let cb = tempfile::tempdir().unwrap();
    let bd = cb.path();
    std::fs::copy(qd.join("state/network.key"), bd.join("network.key")).unwrap();
    // No subscriber store: the hosted proxy makes an empty one and pulls
    // alice and bob from its peer (anypsp replicates subscribers) before
    // it serves.
    std::fs::write(
        bd.join("keygen.toml"),
        "network_key = \"network.key\"\nproxy_id = 2\n",
    )
    .unwrap();
    let p_key = node_key(bd, "keygen.toml");
    std::fs::remove_file(bd.join("keygen.toml")).unwrap();
    assert!(
        bd.join("node.key").exists(),
        "no node.key made next to network.key"
    );
    std::fs::copy(qd.join("bob.key"), bd.join("anytun.key")).unwrap();
    let proxy_section = |listen: u16, extra: &str| {
        format!(
            "[proxy]\nnode_id = 2\nlisten = 127.0.0.1:{listen}\nreuse_port = yes\nstate_dir = {ib}/etc\n\
             sync_listen = 127.0.0.1:{p_sync}\npeer = 7 127.0.0.1:{q_sync} {q_key}\n{extra}"
        )
    };
    let bob_conf = |bind: u16, listen: u16, extra: &str| {
        format!(
            "[general]\nkey_file = anytun.key\nnetwork_key = {network}\nproxy = 127.0.0.1:{udp}\n\
             bind = 127.0.0.1:{bind}\nregister = bob\ncontext = from-anytun\ncodecs = ulaw,alaw\n\n{}",
            proxy_section(listen, extra)
        )
    };
    std::fs::write(bd.join("anytun.conf"), bob_conf(free_port(), udp, "")).unwrap();
    std::fs::write(bd.join("extensions.conf"), bob_extensions(&ib)).unwrap();
    std::fs::write(bd.join("tone-b.wav"), tone_b).unwrap();

    // Alice's PBX: a client of the anytund.
    let ca = tempfile::tempdir().unwrap();
    let ad = ca.path();
    std::fs::copy(qd.join("alice.key"), ad.join("anytun.key")).unwrap();
    let alice_conf = |bind: u16| {
        format!(
            "[general]\nkey_file = anytun.key\nnetwork_key = {network}\nproxy = 127.0.0.1:{udp}\n\
             bind = 127.0.0.1:{bind}\nregister = alice\ncontext = from-anytun\ncodecs = ulaw,alaw\n"
        )
    };
    std::fs::write(ad.join("anytun.conf"), alice_conf(free_port())).unwrap();
    std::fs::write(ad.join("extensions.conf"), alice_extensions(&ia)).unwrap();
    std::fs::write(ad.join("tone-a.wav"), tone_a).unwrap();

    // The anytund, now with bob's PBX as its peer.
    std::fs::write(
        qd.join("anytund.toml"),
        format!(
            "{base}\n[sync]\nlisten = \"127.0.0.1:{q_sync}\"\n\n[[sync.peers]]\nid = 2\n\
             address = \"127.0.0.1:{p_sync}\"\npublic_key = \"{p_key}\"\n"
        ),
    )
    .unwrap();
    // SO_REUSEPORT shares a port only between sockets of one user: the
    // anytund runs as Asterisk's user (asterisk, in the chroot).
    let (uid, gid) = asterisk_user(&Lab::get().root);
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(qd));
    let daemon = Daemon(
        Command::new(ANYTUND)
            .uid(uid)
            .gid(gid)
            .args(["--config", "anytund.toml"])
            .current_dir(qd)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(qd.join("anytund.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut b = Pbx::start("pb", bd);
    let mut a = Pbx::start("pa", ad);

    // Linked and synced, seen from both ends.
    wait_until(
        "the peers linked and synced",
        Duration::from_secs(20),
        || {
            let Some(st) = try_daemon_status(q_metrics) else {
                return false;
            };
            let peers = b.rx("anytun show peers");
            st.sync.as_ref().is_some_and(|s| s.synced)
                && st.peer(2).is_some_and(|p| p.state() == "up")
                && peers.contains("1 anypsp peers, 1 up, 1 synced; proxy serving, ready yes")
        },
    );
    let peers = b.rx("anytun show peers");
    println!("bob's PBX, anytun show peers:\n{peers}");
    let row = peers
        .lines()
        .find(|l| l.split_whitespace().next() == Some("7"))
        .unwrap_or_else(|| panic!("no row for node 7:\n{peers}"));
    assert_eq!(row.split_whitespace().nth(1), Some("up"), "{row}");
    assert!(row.contains(&format!("127.0.0.1:{q_sync}")), "{row}");
    // The kernel picks a proxy per client flow: each PBX takes a new local
    // port until alice's session is at the anytund and bob's at the proxy
    // in bob's PBX, so that the call crosses them.
    steer(&a, 7, alice_conf);
    steer(&b, 2, |port| bob_conf(port, udp, ""));
    // Each PBX's session is at its own proxy: the call must cross them.
    assert!(
        a.rx("anytun show status").contains("(proxy 7)"),
        "{}",
        a.rx("anytun show status")
    );
    assert!(
        b.rx("anytun show status").contains("(proxy 2)"),
        "{}",
        b.rx("anytun show status")
    );
    // Both registrations replicated both ways.
    wait_until("registrations replicated", Duration::from_secs(10), || {
        daemon_status(q_metrics).registrations == 2
            && proxy_figure(&b, "Proxy tables:", "registrations") == 2
    });
    let status = b.rx("anytun show status");
    println!("bob's PBX, anytun show status:\n{status}");
    // The hosted proxy's own sessions, in `anytun show sessions`: bob's
    // (served here) and alice's (a replica of the anytund's).
    let sessions = b.rx("anytun show sessions");
    println!("bob's PBX, anytun show sessions:\n{sessions}");
    assert!(
        sessions.contains("2 hosted proxy sessions (node 2, serving)"),
        "{sessions}"
    );
    let row = |name: &str| {
        sessions
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(name))
            .unwrap_or_else(|| panic!("no hosted session registered as {name}:\n{sessions}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (bob_row, alice_row) = (row("bob"), row("alice"));
    assert_eq!(bob_row[1], "2", "bob's session is served here: {bob_row:?}");
    assert_eq!(alice_row[1], "7", "alice's is the anytund's: {alice_row:?}");
    assert!(
        bob_row[2].starts_with("127.0.0.1:") && bob_row[0].len() == 16,
        "{bob_row:?}"
    );
    assert!(
        status.contains("Mode:             client and proxy"),
        "{status}"
    );
    assert_eq!(proxy_figure(&b, "Proxy tables:", "subscribers"), 2);

    // Test 1's call.
    let out = a.rx("channel originate ANYTUN/bob extension s@tx");
    assert!(!out.contains("rror"), "originate: {out}");
    wait_until("the call to start", Duration::from_secs(10), || {
        b.spool("b-caller.txt").exists()
    });
    wait_until(
        "the call to end on both PBXs",
        Duration::from_secs(40),
        || a.channels() == 0 && b.channels() == 0,
    );
    println!(
        "after the call: alice's PBX:\n{}\nbob's PBX:\n{}\nanytund: {}\n{}",
        a.rx("anytun show status"),
        b.rx("anytun show status"),
        daemon_status(q_metrics).summary(),
        std::fs::read_to_string(qd.join("anytund.log")).unwrap_or_default()
    );
    check_call(&a, &b, "proxy mode", "ulaw");
    let relayed = proxy_figure(&b, "Proxy voice:", "frames");
    println!("frames relayed by the proxy in bob's PBX: {relayed}");
    assert!(relayed > 0, "the proxy in bob's PBX relayed no frame");

    // Reload: the same [proxy] applies and nothing restarts.
    let reloads = b.log().matches("anytun: reloaded").count();
    b.rx("module reload res_anytun.so");
    wait_until("reload done", Duration::from_secs(10), || {
        b.log().matches("anytun: reloaded").count() > reloads
    });
    assert!(!b.log().contains("restarting it"), "{}", b.log());
    // A [proxy] change that cannot start (its metrics port is taken):
    // refused, named, and the proxy runs again with its old settings.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let conf = b.dir.join("etc/anytun.conf");
    let bound = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        format!("{bound}metrics_listen = 127.0.0.1:{taken_port}\n"),
    )
    .unwrap();
    b.rx("module reload res_anytun.so");
    wait_until("reload refused", Duration::from_secs(20), || {
        b.log().contains("reload refused for [proxy]")
    });
    assert!(
        b.log().contains("metrics_listen changed, but")
            && b.log().contains("runs again with its old settings"),
        "the refusal names what changed:\n{}",
        b.log()
    );
    drop(taken);
    wait_until(
        "the old proxy synced again",
        Duration::from_secs(30),
        || {
            b.rx("anytun show peers")
                .contains("1 up, 1 synced; proxy serving, ready yes")
        },
    );
    // A [proxy] change that can start (metrics on): the reload restarts
    // the hosted proxy with it; it pulls its peer's tables again, serves,
    // and test 1's call works again through it.
    let b_metrics = free_tcp_port();
    let restarts = b
        .log()
        .matches("restarting it with the new settings")
        .count();
    let with_metrics = |port| {
        bob_conf(
            port,
            udp,
            &format!("metrics_listen = 127.0.0.1:{b_metrics}\n"),
        )
    };
    std::fs::write(&conf, with_metrics(free_port())).unwrap();
    b.rx("module reload res_anytun.so");
    wait_until("the proxy restarted", Duration::from_secs(30), || {
        b.log()
            .matches("restarting it with the new settings")
            .count()
            > restarts
    });
    assert!(b.log().contains("metrics_listen changed"), "{}", b.log());
    steer(&b, 2, with_metrics);
    wait_until(
        "the restarted proxy synced",
        Duration::from_secs(30),
        || {
            b.rx("anytun show peers")
                .contains("1 up, 1 synced; proxy serving, ready yes")
                && try_daemon_status(b_metrics).is_some()
                && proxy_figure(&b, "Proxy tables:", "subscribers") == 2
                && proxy_figure(&b, "Proxy tables:", "registrations") == 2
        },
    );
    for f in [
        "b-caller.txt",
        "b-digits.txt",
        "a-digits.txt",
        "b-rx.wav",
        "a-rx.wav",
    ] {
        let _ = std::fs::remove_file(if f.starts_with("a-") {
            a.spool(f)
        } else {
            b.spool(f)
        });
    }
    let out = a.rx("channel originate ANYTUN/bob extension s@tx");
    assert!(!out.contains("rror"), "originate: {out}");
    wait_until("the second call to start", Duration::from_secs(10), || {
        b.spool("b-caller.txt").exists()
    });
    wait_until(
        "the second call to end on both PBXs",
        Duration::from_secs(40),
        || a.channels() == 0 && b.channels() == 0,
    );
    check_call(&a, &b, "proxy mode, after a [proxy] restart", "ulaw");

    // Unload (core stop gracefully) stops and joins the proxy: the anytund
    // sees its peer go down.
    assert!(a.stop() && b.stop(), "a PBX did not stop by itself");
    wait_until(
        "the anytund sees node 2 down",
        Duration::from_secs(10),
        || {
            daemon_status(q_metrics)
                .peer(2)
                .is_some_and(|p| p.state() == "down")
        },
    );
    drop(daemon);
}
