//! Issue 9, test 2: test 1's call (tone and DTMF both ways, checked in the
//! recordings) with Asterisk itself hosting a proxy of the network, in the
//! anycast lab. Proxy slot p2 of the lab becomes a PBX: its anytund stops,
//! and an Asterisk in p2's namespace hosts node 2 (anytun.conf [proxy] with
//! the lab's anytund.toml for p2 as its config_file), syncing over anypsp
//! with the standalone anytund of p1 and p3. The hosted proxy announces the
//! anycast address itself, as an anytund does: anytun.conf [proxy] names
//! p2's BIRD config (bird_config), the proxy runs that BIRD as its child
//! and enables the routes only once it is ready. The test holds it unready
//! (its peer links cut) and checks that site B stays on p3 meanwhile, then
//! lets it sync and measures how soon the router sends site B to it. Alice's
//! PBX in site A reaches p1, bob's in site B reaches the proxy in the PBX,
//! both behind their NATs: the call goes alice's PBX -> anytund p1 ->
//! Asterisk's proxy -> bob's PBX. Also: the peers are linked and synced
//! (`anytun show peers`, the anytund's /status), a reload applies what it
//! can without dropping the proxy, and `module unload` withdraws the route
//! (site B back on p3, BIRD gone) and stops the proxy (the anytund see the
//! link go down).
//!
//! Needs root, the lab's tools and the Debian sid chroot (with bird2):
//! without them this test fails, saying so.

mod asterisk_lab;

use anytun::lab::knobs::Knob;
use anytun::lab::{conf, procs, Site, P};
use asterisk_lab::calls::{check_call, place_call};
use asterisk_lab::hosted::proxy_figure;
use asterisk_lab::netlab::NetLab;
use asterisk_lab::{serial, wait_until, Pbx};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// anytund.toml without its [announce] table (the test sets the
/// announcement in anytun.conf [proxy] instead).
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

/// Whether a BIRD answers on control socket `sock`.
fn bird_up(sock: &Path) -> bool {
    Command::new("birdc")
        .arg("-s")
        .arg(sock)
        .arg("show status")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Daemon is up"))
}

/// The `Proxy routes:` line of `anytun show status`, and whether the
/// hosted proxy is ready (from the same output).
fn routes_and_ready(pbx: &Pbx) -> (String, bool) {
    let out = pbx.rx("anytun show status");
    let routes = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Proxy routes:"))
        .unwrap_or_else(|| panic!("{}: no \"Proxy routes:\" line in:\n{out}", pbx.name))
        .trim()
        .to_owned();
    let ready = out
        .lines()
        .any(|l| l.trim().starts_with("Proxy mode:") && l.trim_end().ends_with("ready yes"));
    (routes, ready)
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
    // The announcement is set in anytun.conf [proxy] (bird_config, ...),
    // not in the file: p2's BIRD config, logging inside the chroot.
    // A solo grace far beyond the hold below: cut off from its peers, it
    // stays unready however slowly the PBX starts.
    let toml = without_announce(&toml).replace("\n[sync]\n", "\n[sync]\nsolo_grace_ms = 120000\n");
    assert!(toml.contains("solo_grace_ms = 120000"), "{toml}");
    std::fs::write(cp.path().join("anytund.toml"), toml).unwrap();
    std::fs::write(
        cp.path().join("bird.conf"),
        conf::proxy_bird(P(2), Path::new(&format!("{ip}/log/bird.log"))),
    )
    .unwrap();
    let proxy_conf = |port: u16| {
        format!(
            "[proxy]\nconfig_file = {ip}/etc/anytund.toml\n\
             listen = 0.0.0.0:{port}, [::]:{port}\n\
             bird_config = {ip}/etc/bird.conf\n\
             bird_socket = {ip}/run/bird.ctl\n\
             announce_protocols = anycast4, anycast6\n"
        )
    };
    std::fs::write(cp.path().join("anytun.conf"), proxy_conf(7475)).unwrap();
    std::fs::write(
        cp.path().join("extensions.conf"),
        "[general]\n[from-anytun]\n",
    )
    .unwrap();
    // Held unready: its peer links cut, so it cannot sync (the solo grace
    // is 120 s, far longer than the hold).
    lab.knob(Knob::Partition, P(2)).unwrap();
    // As root: the hosted proxy's BIRD listens on BGP's port 179.
    let mut pp = Pbx::start_as(&net.proxy(P(2)), "pp", cp.path(), "", true);
    println!("{:.1} s: the proxy PBX is up", t0.elapsed().as_secs_f64());
    let sock = pp.dir.join("run/bird.ctl");
    wait_until(
        "the hosted proxy's BIRD answers",
        Duration::from_secs(10),
        || bird_up(&sock),
    );
    println!("{:.1} s: its BIRD answers", t0.elapsed().as_secs_f64());
    // While it is not ready, site B stays on p3 (each route read is
    // followed by a status read: a route to p2 with the proxy unready
    // after it would be an announcement before ready).
    let hold = Instant::now();
    let mut unready = 0;
    while hold.elapsed() < Duration::from_secs(2) {
        let route = lab.route(Site::B, false).unwrap();
        let (routes, ready) = routes_and_ready(&pp);
        assert!(!ready, "ready with its peer links cut: {routes}");
        assert_eq!(routes, "withdrawn", "not ready, yet: {routes}");
        assert_eq!(
            route,
            Some(P(3)),
            "site B moved while the proxy PBX was not ready"
        );
        unready += 1;
    }
    assert!(bird_up(&sock), "the hosted proxy's BIRD went away");
    println!("held unready 2 s: {unready} samples, site B on p3 in each, routes withdrawn");
    // Heal: it links, syncs, becomes ready, and announces by itself.
    lab.knob(Knob::Unpartition, P(2)).unwrap();
    let healed = Instant::now();
    let mut ready_at = None;
    let mut rounds = 0u32;
    let back = loop {
        rounds += 1;
        let (v4, v6) = (
            lab.route(Site::B, false).unwrap(),
            lab.route(Site::B, true).unwrap(),
        );
        let (routes, ready) = routes_and_ready(&pp);
        if ready && ready_at.is_none() {
            ready_at = Some(healed.elapsed());
        }
        assert!(
            ready || (v4 != Some(P(2)) && v6 != Some(P(2))),
            "site B routed to the proxy PBX before it was ready ({routes})"
        );
        if v4 == Some(P(2)) && v6 == Some(P(2)) {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "site B not routed to the proxy PBX 20 s after its links were healed: {v4:?} {v6:?}, \
             routes {routes}, ready {ready}"
        );
    };
    let ready_at = ready_at.expect("routed with the proxy never seen ready");
    println!(
        "the proxy PBX: ready {} ms after its peer links were healed, site B routed to it \
         {} ms after that (v4 and v6; both read by polling the router's tables, then \
         `anytun show status`: {rounds} rounds of {} ms on average)",
        ready_at.as_millis(),
        back.saturating_sub(ready_at).as_millis(),
        back.as_millis() / u128::from(rounds)
    );
    assert_eq!(routes_and_ready(&pp).0, "announced");
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
    let (mut a, mut b) = net.call_pbxs("p");
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
    place_call(&a, &b, "the call");
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

    // `module unload` withdraws first (BIRD told, then stopped, its thread
    // joined) and then stops and joins the proxy: site B goes back to p3,
    // and the anytund see their peer go down.
    assert!(a.stop() && b.stop(), "a client PBX did not stop by itself");
    // A drain from Asterisk's CLI withdraws while the proxy keeps serving,
    // and the route comes back when it ends.
    let t = Instant::now();
    let out = pp.rx("anytun drain on");
    assert!(out.contains("draining"), "{out}");
    lab.wait_route(Site::B, Some(P(3)), Duration::from_secs(10))
        .unwrap();
    let drained = t.elapsed();
    let (routes, ready) = routes_and_ready(&pp);
    assert_eq!(routes, "withdrawn, drained");
    assert!(ready, "a drained proxy still serves");
    let t = Instant::now();
    let out = pp.rx("anytun drain off");
    assert!(out.contains("announcing"), "{out}");
    lab.wait_route(Site::B, Some(P(2)), Duration::from_secs(10))
        .unwrap();
    let undrained = t.elapsed();
    println!(
        "anytun drain on: site B on p3 {} ms after the command was issued; drain off: back \
         on the proxy PBX {} ms after",
        drained.as_millis(),
        undrained.as_millis()
    );
    assert_eq!(routes_and_ready(&pp).0, "announced");
    assert_eq!(lab.route(Site::B, false).unwrap(), Some(P(2)));
    // The route is watched while the unload runs (the CLI returns once
    // every thread of the module was joined).
    let unload = Instant::now();
    let (out, unloaded, gone) = std::thread::scope(|sc| {
        let t = sc.spawn(|| {
            let out = pp.rx("module unload res_anytun.so");
            (out, unload.elapsed())
        });
        let gone = lab.wait_route(Site::B, Some(P(3)), Duration::from_secs(10));
        let (out, unloaded) = t.join().unwrap();
        (out, unloaded, gone.unwrap())
    });
    let left = pp.rx("module show like res_anytun");
    assert!(
        left.contains("0 modules loaded"),
        "module unload: {out}\n{left}"
    );
    println!(
        "module unload: site B routed to p3 {} ms after it was issued; the unload returned \
         after {} ms",
        gone.as_millis(),
        unloaded.as_millis()
    );
    assert!(
        gone < unloaded,
        "the route left the proxy PBX only after its proxy stopped"
    );
    let log = pp.log();
    for l in log
        .lines()
        .filter(|l| l.contains("anycast routes") || l.contains("bird") || l.contains("stopped"))
    {
        println!("proxy PBX log: {l}");
    }
    // BIRD stopped by its SIGTERM (Asterisk's threads block SIGTERM, and
    // a child inherits the mask: before the fix it was SIGKILLed after 2 s).
    assert!(!log.contains("bird did not stop"), "{log}");
    let blog = std::fs::read_to_string(pp.dir.join("log/bird.log")).unwrap_or_default();
    assert!(blog.contains("Shutdown completed"), "bird.log:\n{blog}");
    assert!(
        !bird_up(&sock),
        "the hosted proxy's BIRD outlived the unload"
    );
    assert!(pp.running(), "Asterisk stopped with the unload");
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
    assert!(pp.stop(), "the proxy PBX did not stop by itself");
    println!("test 2 in the lab: {:.1} s", t0.elapsed().as_secs_f64());
}
