//! The anycast lab (issue 8), for real, on what a proxy's announcement
//! follows besides its life: overload (withdraw, then announce again when
//! load falls), the lone survivor restarting (announces alone after the
//! solo grace), and a black-holed link of the serving proxy mid-call.
//!
//! Root and bird2, nftables, conntrack, iproute2 are needed (scripts/test.sh
//! installs them); without them these tests FAIL saying so. One lab at a
//! time (one lock here; `flock /tmp/anytun-heavy.lock` across binaries).

use anytun::lab::call::{connect_pair, frames_for, run_call, Party};
use anytun::lab::knobs::Knob;
use anytun::lab::measure::{self, Figures, FAILURES};
use anytun::lab::{preflight, ExtraToml, Lab, Site, P};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A lab taken down when the test ends; a failed run keeps its run folder
/// (logs, configs) in target/tmp/lab-failed-PREFIX.
struct Up(Lab);

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("lab-failed-{}", self.0.names.prefix));
            let _ = std::fs::remove_dir_all(&keep);
            let copied = std::process::Command::new("cp")
                .arg("-a")
                .arg(&self.0.run)
                .arg(&keep)
                .status();
            eprintln!("lab logs kept in {} ({copied:?})", keep.display());
        }
        if let Err(e) = self.0.down() {
            eprintln!("lab down failed: {e}");
        }
    }
}

fn sync_lab(prefix: &str, extra: fn(P) -> ExtraToml) -> (std::sync::MutexGuard<'static, ()>, Up) {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = preflight() {
        panic!("the lab tests need root and the lab's tools: {e}");
    }
    let mut lab = Lab::new(prefix, None, Some(env!("CARGO_BIN_EXE_anytund").into())).unwrap();
    lab.sync = true;
    lab.extra_toml = extra;
    lab.down().unwrap();
    let up = lab.up().unwrap();
    eprintln!(
        "lab {prefix} (anypsp) up after {} ms",
        up.ready_after.as_millis()
    );
    (guard, Up(lab))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Proxy `p`'s log since its last start.
fn last_run_log(lab: &Lab, p: P) -> String {
    let log = std::fs::read_to_string(lab.proxy_dir(p).join("anytund.log")).unwrap();
    log.rsplit("using config").next().unwrap().to_owned()
}

/// Short sessions (a client gone is gone from every table within ~3 s),
/// and p1 a small proxy: max_sessions 10, overloaded at 8 sessions held
/// for 300 ms, clear below 5 for 1 s.
fn small_p1(p: P) -> ExtraToml {
    let mut top = "keepalive_s = 1\nsession_timeout_s = 3\n".to_owned();
    let mut tables = String::new();
    if p == P(1) {
        top.push_str("max_sessions = 10\n");
        tables.push_str(
            "\n[overload]\nhigh_percent = 80\nlow_percent = 50\nafter_ms = 300\nhold_ms = 1000\n",
        );
    }
    ExtraToml { top, tables }
}

#[test]
fn an_overloaded_proxy_withdraws_new_clients_land_on_the_next_and_it_returns_when_load_falls() {
    let (_g, up) = sync_lab("atlovl", small_p1);
    let lab = up.0.clone();
    rt().block_on(async {
        // Eight clients at site A: all on p1, its table at 80%.
        let mut parties = Vec::new();
        for i in 0..8 {
            let p = Party::connect(&lab, Site::A, false, &format!("o{i}"), 1)
                .await
                .unwrap();
            assert_eq!(p.proxy, 1, "client {i} before the overload");
            parties.push(p);
        }
        let t0 = Instant::now();
        let l = lab.clone();
        tokio::task::spawn_blocking(move || {
            l.wait_route(Site::A, Some(P(3)), Duration::from_secs(10))
        })
        .await
        .unwrap()
        .expect("the overloaded p1 never withdrew its route");
        eprintln!(
            "p1 at 8 of max_sessions 10: site A's route moved to p3 {:.1} ms after the 8th \
             session (after_ms 300)",
            t0.elapsed().as_secs_f64() * 1000.0
        );
        // Site B never moved; p1 still serves (ready) but says overloaded.
        assert_eq!(lab.route(Site::B, false).unwrap(), Some(P(2)));
        let st = lab.proxy_status(P(1)).unwrap();
        assert!(st.ready && st.overloaded, "{}", st.summary());
        // A new client at site A lands on the next proxy.
        let late = Party::connect(&lab, Site::A, false, "late", 1)
            .await
            .unwrap();
        assert_eq!(late.proxy, 3, "a new client after the withdraw");
        parties.push(late);
        // Load falls: every client goes; their sessions end everywhere
        // (session_timeout_s 3), p1's table empties, and after hold_ms it
        // announces again.
        for p in parties.drain(..) {
            p.rt.close(Duration::from_secs(1)).await;
            p.rt.shutdown();
        }
        let t1 = Instant::now();
        let l = lab.clone();
        tokio::task::spawn_blocking(move || {
            l.wait_route(Site::A, Some(P(1)), Duration::from_secs(30))
        })
        .await
        .unwrap()
        .expect("p1 never announced again after its load fell");
        eprintln!(
            "clients gone: site A's route back on p1 {:.1} ms later (session timeout 3 s, \
             replication, hold 1 s)",
            t1.elapsed().as_secs_f64() * 1000.0
        );
    });
    let st = lab.proxy_status(P(1)).unwrap();
    assert!(st.ready && !st.overloaded, "{}", st.summary());
    let log = last_run_log(&lab, P(1));
    let over = log.find("overloaded: ").expect("no overload log line");
    let clear = log
        .find("no longer overloaded: ")
        .expect("no clear log line");
    assert!(over < clear, "{log}");
    // A new client at site A is p1's again.
    rt().block_on(async {
        let p = Party::connect(&lab, Site::A, false, "after", 1)
            .await
            .unwrap();
        assert_eq!(p.proxy, 1);
    });
}

/// The last proxy standing restarts. Before the solo rule it served but
/// never counted as synced, so it never announced and the whole network
/// stayed dark. Now it announces after `sync.solo_grace_ms` (default 5 s)
/// and a call through it works; a proxy restarted next to it (a peer
/// reachable) still pulls the table before it announces.
#[test]
fn the_last_proxy_standing_restarts_announces_alone_after_the_grace_and_carries_a_call() {
    let (_g, up) = sync_lab("atlsolo", anytun::lab::no_extra_toml);
    let lab = up.0.clone();
    for p in [P(2), P(3), P(1)] {
        lab.knob(Knob::Kill, p).unwrap();
    }
    for site in Site::ALL {
        lab.wait_route(site, None, Duration::from_secs(5)).unwrap();
    }
    let t0 = Instant::now();
    lab.knob(Knob::Restart, P(1)).unwrap();
    for site in Site::ALL {
        lab.wait_route(site, Some(P(1)), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("the lone p1 never announced ({e})"));
    }
    eprintln!(
        "lone p1 restarted: both sites routed to it after {:.1} ms (solo grace 5000 ms)",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let log = last_run_log(&lab, P(1));
    let alone = log.find("ready alone").expect("no solo log line");
    let announced = log
        .find("announcing the anycast routes")
        .expect("never announced");
    assert!(alone < announced, "{log}");
    let st = lab.proxy_status(P(1)).unwrap();
    assert!(
        st.ready && st.sync.as_ref().is_some_and(|s| s.solo),
        "{}",
        st.summary()
    );
    // A call through the lone proxy: both sites on p1.
    rt().block_on(async {
        let (mut a, mut b) = connect_pair(&lab, false, "alice", "bob", frames_for(2.0))
            .await
            .unwrap();
        assert_eq!((a.proxy, b.proxy), (1, 1));
        let r = run_call(&mut a, &mut b, frames_for(2.0), None, || {})
            .await
            .unwrap();
        eprintln!("call through the lone p1: {r:?}");
        assert!(r.intact(), "{r:?}");
    });
    // p2 comes back with p1 reachable: it waits for the sync with p1 (no
    // solo), then announces, and site B fails back to it.
    lab.knob(Knob::Restart, P(2)).unwrap();
    lab.wait_route(Site::B, Some(P(2)), Duration::from_secs(20))
        .unwrap();
    let log = last_run_log(&lab, P(2));
    assert!(!log.contains("ready alone"), "{log}");
    let synced = log.find("anypsp: synced").expect("p2 never synced");
    let announced = log
        .find("announcing the anycast routes")
        .expect("p2 never announced");
    assert!(synced < announced, "p2 announced before its sync:\n{log}");
}

/// Issue 8's "SIGSTOP or black-holed link ... gap <= 100 ms": the serving
/// proxy's uplink drops everything mid-call (a silent death: only BFD
/// notices). The call goes on: none dropped, no handshake repeated.
/// Figures over several runs: benches/lab_failover.rs.
#[test]
fn scenario3_black_holed_link_of_the_serving_proxy_mid_call() {
    let (_g, up) = sync_lab("atlbh", anytun::lab::no_extra_toml);
    let lab = up.0.clone();
    let f = FAILURES
        .into_iter()
        .find(|f| f.knob == Knob::Blackhole)
        .unwrap();
    let mut figures = Figures::default();
    for i in 0..3 {
        let r = rt()
            .block_on(measure::failover_call(
                &lab,
                f,
                4.0,
                Duration::from_secs(1),
                &format!("bh{i}"),
            ))
            .unwrap_or_else(|e| panic!("black hole run {i}: {e}"));
        eprintln!("black hole run {i}: {r:?}");
        assert!(r.action_at.is_some());
        assert!(r.ended_early.is_none(), "the call ended: {r:?}");
        assert_eq!(r.handshakes_repeated, 0, "{r:?}");
        assert_eq!(r.a_to_b.corrupted + r.b_to_a.corrupted, 0, "{r:?}");
        // Voice flowed after the failure at both ends (not only before).
        assert!(r.a_to_b.received > r.frames / 2 && r.b_to_a.received > r.frames / 2);
        figures.add(&r);
        measure::undo_and_settle(&lab, f).unwrap();
    }
    eprintln!("{}: {}", f.name, figures.line());
}
