//! Issue 9, `module reload` of a hosted proxy that carries calls and has no
//! anypsp peer to take them (test 4's "a reload with calls up drops none"
//! for the proxy mode): bob's PBX hosts proxy node 2 alone, and both PBXs
//! are its clients, so a call between them is carried by it. A reload with
//! a changed [proxy] setting defers the restart until no call is carried.
//!
//! Needs root and the Debian sid chroot (built when missing): without them
//! this test fails, saying so.

mod asterisk_lab;

use asterisk_lab::calls::alice_extensions;
use asterisk_lab::hosted::{
    anytun, bob_milliwatt, frames_received, free_tcp_port, long_call, proxy_figure, reload,
    try_daemon_status, with_milliwatt,
};
use asterisk_lab::{free_port, serial, wait_until, Pbx};
use std::time::Duration;

/// The session id in `anytun show status` output.
fn session_id(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("Session ID:"))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("")
        .to_owned()
}

/// The threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim().to_owned())
                .filter(|c| c.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A hosted proxy with no peer carries a
/// call (alice's and bob's sessions are both served by it); a reload with
/// a changed [proxy] setting does not cut it: the restart waits, shown as
/// pending, and runs once the call is over. A later reload replaces the
/// pending one, a reload back to the running settings cancels it, and an
/// unload with one pending just stops (no thread left behind).
#[test]
fn a_proxy_restart_waits_until_the_hosted_proxy_carries_no_call() {
    let _g = serial();
    let keys = tempfile::tempdir().unwrap();
    let kd = keys.path();
    let cb = tempfile::tempdir().unwrap();
    let bd = cb.path();
    anytun(bd, &["keygen", "--out", "network.key"]);
    let network = anytun(bd, &["pubkey", "network.key"]);
    for (key, name) in [("alice.key", "alice"), ("bob.key", "bob")] {
        anytun(kd, &["keygen", "--out", key]);
        let public = anytun(kd, &["pubkey", key]);
        let db = bd.join("subscribers.db");
        anytun(
            kd,
            &["user", "add", name, &public, "--db", db.to_str().unwrap()],
        );
    }
    let udp = free_port();
    let (ia, ib) = (Pbx::inner_dir("qa"), Pbx::inner_dir("qb"));
    std::fs::copy(kd.join("bob.key"), bd.join("anytun.key")).unwrap();
    let bob_conf = |extra: &str| {
        format!(
            "[general]\nkey_file = anytun.key\nnetwork_key = {network}\nproxy = 127.0.0.1:{udp}\n\
             register = bob\ncontext = from-anytun\ncodecs = ulaw,alaw\n\n\
             [proxy]\nnode_id = 2\nlisten = 127.0.0.1:{udp}\nstate_dir = {ib}/etc\n{extra}"
        )
    };
    std::fs::write(bd.join("anytun.conf"), bob_conf("")).unwrap();
    std::fs::write(bd.join("extensions.conf"), bob_milliwatt(&ib)).unwrap();
    std::fs::write(bd.join("mw"), "").unwrap();
    let ca = tempfile::tempdir().unwrap();
    let ad = ca.path();
    std::fs::copy(kd.join("alice.key"), ad.join("anytun.key")).unwrap();
    std::fs::write(
        ad.join("anytun.conf"),
        format!(
            "[general]\nkey_file = anytun.key\nnetwork_key = {network}\nproxy = 127.0.0.1:{udp}\n\
             register = alice\ncontext = from-anytun\ncodecs = ulaw,alaw\n"
        ),
    )
    .unwrap();
    std::fs::write(
        ad.join("extensions.conf"),
        with_milliwatt(alice_extensions(&ia)),
    )
    .unwrap();
    let b = Pbx::start("qb", bd);
    let a = Pbx::start("qa", ad);
    for pbx in [&a, &b] {
        wait_until(
            &format!("{}: registered at bob's proxy", pbx.name),
            Duration::from_secs(20),
            || {
                let st = pbx.rx("anytun show status");
                st.contains("Names registered: 1 of") && st.contains("(proxy 2)")
            },
        );
    }
    let conf = b.dir.join("etc/anytun.conf");
    let pending = |b: &Pbx| {
        let st = b.rx("anytun show status");
        if st.contains("Proxy reload: restart pending") {
            true
        } else {
            assert!(st.contains("Proxy reload: none"), "{st}");
            false
        }
    };
    let restarts = |b: &Pbx| {
        b.log()
            .matches("restarting it with the new settings")
            .count()
    };
    assert!(!pending(&b));

    // The call: both its sessions are served by the hosted proxy.
    long_call(&a, &b);
    wait_until("the proxy carries the call", Duration::from_secs(5), || {
        proxy_figure(&b, "Proxy calls:", "sessions") == 2
    });
    // A [proxy] change (metrics on) while it carries the call: deferred.
    let m1 = free_tcp_port();
    std::fs::write(
        &conf,
        bob_conf(&format!("metrics_listen = 127.0.0.1:{m1}\n")),
    )
    .unwrap();
    let relayed = proxy_figure(&b, "Proxy voice:", "frames");
    let frames = [frames_received(&a), frames_received(&b)];
    reload(&b);
    // The voice keeps flowing through the same proxy (no restart): frames
    // counted over the 3 s after the reload point.
    std::thread::sleep(Duration::from_secs(3));
    let relayed_after = proxy_figure(&b, "Proxy voice:", "frames");
    let frames_after = [frames_received(&a), frames_received(&b)];
    println!(
        "3 s after the deferred reload: {} frames relayed by the hosted proxy, received: \
         alice {}, bob {}",
        relayed_after as i64 - relayed as i64,
        frames_after[0] as i64 - frames[0] as i64,
        frames_after[1] as i64 - frames[1] as i64
    );
    assert!(
        relayed_after > relayed + 200
            && frames_after[0] > frames[0] + 100
            && frames_after[1] > frames[1] + 100,
        "the voice stopped after the reload"
    );
    assert_eq!(restarts(&b), 0, "restarted with a call up:\n{}", b.log());
    assert_eq!((a.anytun_calls_up(), b.anytun_calls_up()), (1, 1));
    assert!(pending(&b), "no restart pending after the reload");
    assert!(
        try_daemon_status(m1).is_none(),
        "metrics on before the restart"
    );
    let deferred = "the restart is deferred until the calls it carries end";
    assert_eq!(
        b.log().matches(deferred).count(),
        1,
        "logged once:\n{}",
        b.log()
    );
    // A later reload replaces it; one back to the running settings cancels
    // it.
    let m2 = free_tcp_port();
    std::fs::write(
        &conf,
        bob_conf(&format!("metrics_listen = 127.0.0.1:{m2}\n")),
    )
    .unwrap();
    reload(&b);
    assert!(
        b.log().contains("replaces the pending restart"),
        "{}",
        b.log()
    );
    assert!(pending(&b));
    std::fs::write(&conf, bob_conf("")).unwrap();
    reload(&b);
    assert!(b.log().contains("is cancelled"), "{}", b.log());
    assert!(!pending(&b), "still pending after a reload back");
    // Deferred again, then the call ends: the restart runs, and the new
    // setting is in force.
    std::fs::write(
        &conf,
        bob_conf(&format!("metrics_listen = 127.0.0.1:{m2}\n")),
    )
    .unwrap();
    reload(&b);
    assert!(pending(&b));
    assert_eq!((a.anytun_calls_up(), b.anytun_calls_up()), (1, 1));
    assert_eq!(restarts(&b), 0, "{}", b.log());
    let ids = [
        session_id(&a.rx("anytun show status")),
        session_id(&b.rx("anytun show status")),
    ];
    a.rx("channel request hangup all");
    wait_until("the call ended", Duration::from_secs(15), || {
        a.channels() == 0 && b.channels() == 0
    });
    let took = wait_until("the deferred restart ran", Duration::from_secs(10), || {
        restarts(&b) == 1 && try_daemon_status(m2).is_some()
    });
    println!("the deferred restart ran {took:?} after the hangup was seen");
    assert!(
        b.log()
            .contains("it carries no call now: the deferred restart runs"),
        "{}",
        b.log()
    );
    assert!(!pending(&b));
    assert!(try_daemon_status(m1).is_none(), "the replaced settings ran");
    // The restart without a peer ended the sessions: each client makes a
    // new one.
    for (pbx, old) in [(&a, &ids[0]), (&b, &ids[1])] {
        let t = wait_until(
            &format!("{}: a new session, registered", pbx.name),
            Duration::from_secs(90),
            || {
                let st = pbx.rx("anytun show status");
                st.contains("Names registered: 1 of") && session_id(&st) != *old
            },
        );
        println!("{}: registered again {t:?} after the restart", pbx.name);
    }
    // Unload with a restart pending: it is dropped, the module stops, and
    // no thread of the library is left in Asterisk.
    long_call(&a, &b);
    let m3 = free_tcp_port();
    std::fs::write(
        &conf,
        bob_conf(&format!("metrics_listen = 127.0.0.1:{m3}\n")),
    )
    .unwrap();
    reload(&b);
    assert!(pending(&b));
    assert!(
        !threads_named(b.pid(), "anytun-px2-relo").is_empty(),
        "no watcher thread while a restart is pending"
    );
    // -h: with calls up the loader refuses a plain unload (use count).
    b.rx("module unload -h res_anytun.so");
    wait_until("res_anytun unloaded", Duration::from_secs(20), || {
        !b.rx("module show like res_anytun")
            .contains("res_anytun.so")
    });
    assert!(b.running(), "Asterisk died on unload");
    assert!(
        b.log().contains("stopped with a restart pending"),
        "{}",
        b.log()
    );
    let left = threads_named(b.pid(), "anytun");
    assert!(
        left.is_empty(),
        "library threads left after unload: {left:?}"
    );
    assert_eq!(restarts(&b), 1, "the pending restart ran on unload");
    assert!(try_daemon_status(m3).is_none());
}
