//! Issue 9, test 2: test 1's call (tone and DTMF both ways, checked in the
//! recordings) with Asterisk itself hosting a proxy of the network, in the
//! anycast lab. Proxy slot p2 of the lab becomes a PBX: its anytund stops,
//! and an Asterisk in p2's namespace hosts node 2 (anytun.conf [proxy] with
//! the lab's anytund.toml for p2 as its config_file), syncing over anypsp
//! with the standalone anytund of p1 and p3. Once it is ready, p2's BIRD
//! announces the anycast address (the test runs `birdc enable`, which an
//! anytund does for itself: the hosted proxy does not drive BIRD), and the
//! router sends site B to it again. Alice's PBX in site A reaches p1, bob's
//! in site B reaches the proxy in the PBX, both behind their NATs: the call
//! goes alice's PBX -> anytund p1 -> Asterisk's proxy -> bob's PBX. Also: the
//! peers are linked and synced (`anytun show peers`, the anytund's /status),
//! a reload applies what it can without dropping the proxy, and unload
//! stops it (the anytund see the link go down).
//!
//! Needs root, the lab's tools and the Debian sid chroot: without them this
//! test fails, saying so.

mod asterisk_lab;

use anytun::lab::{procs, Site, P};
use asterisk_lab::calls::{alice_extensions, bob_extensions, check_call, tone_files};
use asterisk_lab::netlab::{wait_registered, NetLab};
use asterisk_lab::{run, serial, wait_until, Pbx};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// anytund.toml without its [announce] table (the hosted proxy has no BIRD
/// of its own; the test starts p2's).
fn without_announce(toml: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in toml.lines() {
        if line.starts_with('[') {
            skip = line.trim() == "[announce]";
        }
        if !skip {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `birdc -s SOCKET ARGS`.
fn birdc(sock: &Path, args: &[&str]) -> String {
    run(Command::new("birdc").arg("-s").arg(sock).args(args))
}

/// A BIRD started by this test, stopped when dropped.
struct Bird(i32);

impl Drop for Bird {
    fn drop(&mut self) {
        procs::stop(self.0, Duration::from_secs(2));
    }
}

#[test]
fn asterisk_hosts_a_proxy_of_the_lab_synced_with_anytund_tone_and_dtmf_both_ways() {
    let _g = serial();
    let t0 = Instant::now();
    let net = NetLab::up("atast2");
    net.user("alice");
    net.user("bob");
    net.wait_subscribers(3);
    let lab = &net.lab;

    // Slot p2 becomes the PBX: its anytund (and with it its BIRD) stops,
    // and the router sends site B to p3 meanwhile.
    procs::stop(lab.anytund_pid(P(2)).unwrap(), Duration::from_secs(5));
    let _ = std::fs::remove_file(lab.proxy_dir(P(2)).join("anytund.pid"));
    lab.wait_route(Site::B, Some(P(3)), Duration::from_secs(10))
        .unwrap();

    // The proxy PBX: p2's state (network key, node key, store) and its
    // anytund.toml (node 2, listeners, [sync] with p1 and p3) in its
    // configuration directory, which is the proxy's state dir too.
    let ip = Pbx::inner_dir("pp");
    let cp = tempfile::tempdir().unwrap();
    let p2 = lab.proxy_dir(P(2));
    for f in ["network.key", "node.key", "subscribers.db"] {
        std::fs::copy(p2.join(f), cp.path().join(f)).unwrap();
    }
    let toml = std::fs::read_to_string(p2.join("anytund.toml")).unwrap();
    std::fs::write(cp.path().join("anytund.toml"), without_announce(&toml)).unwrap();
    let proxy_conf = |port: u16| {
        format!(
            "[proxy]\nconfig_file = {ip}/etc/anytund.toml\n\
             listen = 0.0.0.0:{port}, [::]:{port}\n"
        )
    };
    std::fs::write(cp.path().join("anytun.conf"), proxy_conf(7475)).unwrap();
    std::fs::write(
        cp.path().join("extensions.conf"),
        "[general]\n[from-anytun]\n",
    )
    .unwrap();
    let mut pp = Pbx::start_in(&net.proxy(P(2)), "pp", cp.path(), "");
    let synced = "2 anypsp peers, 2 up, 2 synced; proxy serving, ready yes";
    wait_until(
        "the proxy in the PBX linked and synced with p1 and p3",
        Duration::from_secs(20),
        || pp.rx("anytun show peers").contains(synced),
    );
    let peers = pp.rx("anytun show peers");
    println!("the proxy PBX, anytun show peers:\n{peers}");
    for q in [P(1), P(3)] {
        let row = peers
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&q.0.to_string()))
            .unwrap_or_else(|| panic!("no row for node {}:\n{peers}", q.0));
        assert_eq!(row.split_whitespace().nth(1), Some("up"), "{row}");
        assert!(row.contains(&q.unicast4().to_string()), "{row}");
    }
    // Ready: p2's BIRD announces the anycast address for it.
    let sock = p2.join("pbx-bird.ctl");
    let bird = Bird(
        procs::spawn_in(
            &net.proxy(P(2)),
            Path::new("bird"),
            &[
                "-f",
                "-c",
                &p2.join("bird.conf").display().to_string(),
                "-s",
                &sock.display().to_string(),
            ],
            &p2.join("pbx-bird.out"),
        )
        .unwrap(),
    );
    wait_until("p2's BIRD answers", Duration::from_secs(10), || {
        sock.exists()
            && Command::new("birdc")
                .arg("-s")
                .arg(&sock)
                .arg("show status")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Daemon is up"))
    });
    birdc(&sock, &["enable", "anycast4"]);
    birdc(&sock, &["enable", "anycast6"]);
    let back = lab
        .wait_route(Site::B, Some(P(2)), Duration::from_secs(20))
        .unwrap();
    println!(
        "site B routed to the proxy PBX {} ms after its announcement",
        back.as_millis()
    );
    // The standalone peers see node 2 up.
    for q in [P(1), P(3)] {
        let st = lab.proxy_status(q).unwrap();
        assert!(
            st.peer(2).is_some_and(|p| p.state() == "up"),
            "{q}: {}",
            st.summary()
        );
    }

    // Alice's PBX in site A (nearest p1), bob's in site B (nearest p2,
    // the PBX).
    let (ia, ib) = (Pbx::inner_dir("pa"), Pbx::inner_dir("pb"));
    let (tone_a, tone_b) = tone_files();
    let ca = net.pbx_conf(
        "alice",
        "alice",
        "codecs = ulaw,alaw\n",
        &alice_extensions(&ia),
        &[("tone-a.wav", tone_a)],
    );
    let cb = net.pbx_conf(
        "bob",
        "bob",
        "codecs = ulaw,alaw\n",
        &bob_extensions(&ib),
        &[("tone-b.wav", tone_b)],
    );
    let mut a = Pbx::start_in(&net.site(Site::A), "pa", ca.path(), "");
    let mut b = Pbx::start_in(&net.site(Site::B), "pb", cb.path(), "");
    let st_a = wait_registered(&a, 1);
    let st_b = wait_registered(&b, 1);
    assert!(st_a.contains("(proxy 1)"), "alice's PBX:\n{st_a}");
    assert!(st_b.contains("(proxy 2)"), "bob's PBX:\n{st_b}");
    // Both registrations replicated both ways.
    wait_until("registrations replicated", Duration::from_secs(10), || {
        lab.proxy_status(P(1)).is_ok_and(|s| s.registrations == 2)
            && proxy_figure(&pp, "Proxy tables:", "registrations") == 2
    });
    let status = pp.rx("anytun show status");
    println!("the proxy PBX, anytun show status:\n{status}");
    assert!(status.contains("Mode:             proxy"), "{status}");
    // The lab's user, alice and bob.
    assert_eq!(proxy_figure(&pp, "Proxy tables:", "subscribers"), 3);

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
        "after the call: alice's PBX:\n{}\nbob's PBX:\n{}\np1: {}",
        a.rx("anytun show status"),
        b.rx("anytun show status"),
        lab.proxy_status(P(1)).unwrap().summary(),
    );
    check_call(&a, &b, "proxy mode in the lab", "ulaw");
    let relayed = proxy_figure(&pp, "Proxy voice:", "frames");
    println!("frames relayed by the proxy in the PBX: {relayed}");
    assert!(relayed > 0, "the proxy in the PBX relayed no frame");

    // Reload: the same [proxy] applies and nothing restarts (a changed
    // [proxy] restarts the hosted proxy, or is refused by name if it
    // cannot start: tests/asterisk_proxy_reload.rs).
    let reloads = pp.log().matches("anytun: reloaded").count();
    pp.rx("module reload res_anytun.so");
    wait_until("reload done", Duration::from_secs(10), || {
        pp.log().matches("anytun: reloaded").count() > reloads
    });
    assert!(!pp.log().contains("restarting it"), "{}", pp.log());
    assert!(
        pp.rx("anytun show peers").contains(synced),
        "{}",
        pp.rx("anytun show peers")
    );

    // Unload (core stop gracefully) stops and joins the proxy: the
    // anytund see their peer go down. Its BIRD goes first, as an anytund
    // withdraws before it stops.
    assert!(a.stop() && b.stop(), "a client PBX did not stop by itself");
    drop(bird);
    lab.wait_route(Site::B, Some(P(3)), Duration::from_secs(10))
        .unwrap();
    assert!(pp.stop(), "the proxy PBX did not stop by itself");
    for q in [P(1), P(3)] {
        wait_until(
            &format!("{q} sees node 2 down"),
            Duration::from_secs(10),
            || {
                lab.proxy_status(q)
                    .is_ok_and(|s| s.peer(2).is_some_and(|p| p.state() == "down"))
            },
        );
    }
    println!("test 2 in the lab: {:.1} s", t0.elapsed().as_secs_f64());
}
