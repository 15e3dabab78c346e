//! The hosted proxy (`anytun_proxy_*`, res_anytun's proxy mode) announces
//! its anycast routes as `anytund` does (runtime::supervise): with a
//! `bird_config` it runs a real BIRD 2 as its child, enables the static
//! protocols once it is ready, says so in `anytun_proxy_status.routes`, and
//! stops BIRD (its parent thread joined) on a restart by reload and on
//! stop. A BIRD config BIRD refuses fails the start. BIRD here holds only
//! static routes (no BGP): no namespace or router is needed; the lab tests
//! (tests/asterisk_proxy.rs) show the route moving.
//!
//! Needs BIRD 2 (`bird`, `birdc` on PATH; scripts/test.sh installs bird2):
//! without it this test fails, saying so.

use anytun::config::AnnounceConfig;
use anytun::ffi::errors::anytun_last_error;
use anytun::ffi::proxy::{
    anytun_proxy_config_init, anytun_proxy_drain, anytun_proxy_free, anytun_proxy_get_status,
    anytun_proxy_new, anytun_proxy_reload, anytun_proxy_start, anytun_proxy_status_init,
    anytun_proxy_stop,
};
use anytun::ffi::sys;
use anytun::runtime::announce::Announcer;
use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::process::Command;
use std::ptr::null_mut;
use std::time::{Duration, Instant};

fn last_error() -> String {
    let mut buf = [0 as c_char; 1024];
    // SAFETY: buf holds 1024 bytes.
    unsafe { anytun_last_error(buf.as_mut_ptr(), buf.len(), null_mut()) };
    // SAFETY: NUL-terminated by the library.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A BIRD config with the two anycast static protocols, disabled.
fn bird_conf(dir: &Path, name: &str) -> CString {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "log \"{}\" all;\nrouter id 10.203.0.1;\nprotocol device {{}}\n\
             protocol static anycast4 {{ disabled yes; ipv4; route 10.203.0.9/32 blackhole; }}\n\
             protocol static anycast6 {{ disabled yes; ipv6; route fd00:203::9/128 blackhole; }}\n",
            dir.join(format!("{name}.log")).display()
        ),
    )
    .unwrap();
    CString::new(path.to_str().unwrap()).unwrap()
}

/// `birdc -s SOCK show protocols`, or "" when no BIRD answers there.
fn protocols(sock: &Path) -> String {
    Command::new("birdc")
        .arg("-s")
        .arg(sock)
        .args(["show", "protocols"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether BIRD says `proto` is up.
fn up(sock: &Path, proto: &str) -> bool {
    protocols(sock)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(proto) && l.contains(" up "))
}

/// The pids of this process's children whose command is BIRD.
fn bird_children() -> Vec<u32> {
    let mut pids = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for pid in kids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd
                .split(|b| *b == 0)
                .next()
                .is_some_and(|a| a.ends_with(b"bird"))
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

fn routes(p: *mut sys::anytun_proxy) -> u32 {
    ready_and_routes(p).1
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The tests count this process's BIRD children: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn need_bird() {
    assert!(
        Command::new("bird").arg("--version").output().is_ok()
            && Command::new("birdc").arg("--version").output().is_ok(),
        "this test needs BIRD 2 (bird and birdc on PATH: apt-get install bird2)"
    );
}

/// An executable shell script `name` in `dir` running `body`.
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn announcer(dir: &Path, birdc: std::path::PathBuf, rt: &tokio::runtime::Runtime) -> Announcer {
    let conf = bird_conf(dir, "w.conf");
    Announcer::start(
        AnnounceConfig {
            bird: "bird".into(),
            birdc,
            bird_config: conf.to_str().unwrap().into(),
            bird_socket: dir.join("w.ctl"),
            protocols: vec!["anycast4".into(), "anycast6".into()],
        },
        rt.handle(),
    )
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A `birdc` that never answers is killed after BIRDC_WAIT and the
/// command retried: the routes still follow health.
#[test]
fn a_hung_birdc_is_killed_and_the_routes_follow_health_anyway() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    need_bird();
    let dir = tempfile::tempdir().unwrap();
    // The first birdc hangs (far longer than the wait below); later ones
    // are the real birdc.
    let hung = dir.path().join("hung-once");
    let birdc = script(
        dir.path(),
        "hanging-birdc",
        &format!(
            "if [ ! -e {0} ]; then : > {0}; exec sleep 120; fi\nexec birdc \"$@\"",
            hung.display()
        ),
    );
    let rt = runtime();
    let a = announcer(dir.path(), birdc, &rt);
    let t0 = Instant::now();
    a.update(|h| h.ready = true);
    // BIRDC_WAIT (5 s), then a retry: well within; the hang is 120 s.
    let limit = Duration::from_secs(15);
    assert!(
        rt.block_on(a.wait_announced(true, limit)),
        "not announced within {limit:?}: the hung birdc was not killed"
    );
    assert!(hung.exists(), "the first birdc ran the hanging branch");
    println!(
        "announced {} ms after ready, past a hung birdc",
        t0.elapsed().as_millis()
    );
    assert!(up(&dir.path().join("w.ctl"), "anycast4"));
    a.stop();
}

/// A stop's grace (runtime::supervise) starts once BIRD has withdrawn:
/// the wait for the withdrawal ends only after `birdc disable` succeeded
/// for every protocol, not when the disable was asked for.
#[test]
fn the_wait_for_withdrawal_ends_only_once_bird_has_withdrawn() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    need_bird();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("w.ctl");
    // BIRD slow to answer (a busy BIRD, a loaded host): the real birdc,
    // a moment late.
    let slow_birdc = script(dir.path(), "slow-birdc", "sleep 0.2\nexec birdc \"$@\"");
    let rt = runtime();
    let a = announcer(dir.path(), slow_birdc, &rt);
    assert!(
        rt.block_on(a.wait_withdrawn(Duration::from_secs(1))),
        "a fresh BIRD announces nothing"
    );
    a.update(|h| h.ready = true);
    assert!(rt.block_on(a.wait_announced(true, Duration::from_secs(10))));
    assert!(
        up(&sock, "anycast4") && up(&sock, "anycast6"),
        "{}",
        protocols(&sock)
    );
    for round in 0..3 {
        a.update(|h| h.drained = true);
        assert!(rt.block_on(a.wait_withdrawn(Duration::from_secs(5))));
        let p = protocols(&sock);
        assert!(
            !up(&sock, "anycast4") && !up(&sock, "anycast6"),
            "round {round}: the wait ended while BIRD still announces:\n{p}"
        );
        a.update(|h| h.drained = false);
        assert!(rt.block_on(a.wait_announced(true, Duration::from_secs(5))));
    }
    a.stop();
}

/// BIRD control socket `name` in `dir`: its path, and as a C string.
fn ctl(dir: &Path, name: &str) -> (std::path::PathBuf, CString) {
    let path = dir.join(name);
    let c = CString::new(path.to_str().unwrap()).unwrap();
    (path, c)
}

/// The strings a hosted proxy's settings point at, kept alive here.
struct Held {
    state: CString,
    listen: CString,
    protos: CString,
}

impl Held {
    /// State in `dir`, loopback, both anycast protocols.
    fn new(dir: &Path) -> Self {
        Self {
            state: CString::new(dir.to_str().unwrap()).unwrap(),
            listen: CString::new("127.0.0.1:0").unwrap(),
            protos: CString::new("anycast4, anycast6").unwrap(),
        }
    }

    /// Settings with one worker and BIRD on `conf` and `sock` (which must
    /// outlive every use of them, as self).
    fn config(&self, conf: &CString, sock: &CString) -> sys::anytun_proxy_config {
        let mut c = sys::anytun_proxy_config::default();
        // SAFETY: a valid pointer.
        unsafe { anytun_proxy_config_init(&mut c) };
        c.state_dir = self.state.as_ptr();
        c.listen = self.listen.as_ptr();
        c.worker_threads = 1;
        c.bird_config = conf.as_ptr();
        c.bird_socket = sock.as_ptr();
        c.announce_protocols = self.protos.as_ptr();
        c
    }
}

/// A new (not started) proxy with settings `c`.
fn new_proxy(c: &sys::anytun_proxy_config) -> *mut sys::anytun_proxy {
    let mut p = null_mut();
    // SAFETY: valid pointers; the strings of c are alive.
    assert_eq!(
        unsafe { anytun_proxy_new(c, &mut p) },
        sys::ANYTUN_OK,
        "{}",
        last_error()
    );
    p
}

#[test]
fn a_hosted_proxy_runs_bird_announces_when_ready_and_stops_it_on_reload_and_stop() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    need_bird();
    let dir = tempfile::tempdir().unwrap();
    let conf = bird_conf(dir.path(), "bird.conf");
    let (sock1, s1) = ctl(dir.path(), "one.ctl");
    let (sock2, s2) = ctl(dir.path(), "two.ctl");
    let held = Held::new(dir.path());
    let mut c = held.config(&conf, &s1);
    let p = new_proxy(&c);
    // A host such as Asterisk does not mark its descriptors close-on-exec:
    // one opened so here must not reach BIRD.
    let marker = dir.path().join("host-fd");
    std::fs::write(&marker, b"").unwrap();
    let cpath = CString::new(marker.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let host_fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY) };
    assert!(host_fd >= 0, "open {}", marker.display());
    let before = bird_children();
    // Started from a thread that ends at once (as a host's CLI thread
    // does): BIRD's parent is the proxy's own thread, so the kernel's
    // parent-death signal does not kill it with the caller's thread.
    let t0 = Instant::now();
    let handle = p as usize;
    let (rc, why) = std::thread::spawn(move || {
        // SAFETY: a live handle.
        let rc = unsafe { anytun_proxy_start(handle as *mut sys::anytun_proxy) };
        (rc, last_error())
    })
    .join()
    .unwrap();
    assert_eq!(rc, sys::ANYTUN_OK, "{why}");
    // Alone, it is ready as soon as it serves: BIRD enables both routes.
    wait("announced", Duration::from_secs(10), || {
        routes(p) & sys::ANYTUN_PROXY_ROUTES_ANNOUNCED != 0
    });
    println!(
        "routes announced {} ms after the start",
        t0.elapsed().as_millis()
    );
    let r = routes(p);
    assert_eq!(
        r & (sys::ANYTUN_PROXY_ROUTES_ANNOUNCING
            | sys::ANYTUN_PROXY_ROUTES_OVERLOADED
            | sys::ANYTUN_PROXY_ROUTES_DRAINED),
        sys::ANYTUN_PROXY_ROUTES_ANNOUNCING,
        "routes {r:#x}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        up(&sock1, "anycast4") && up(&sock1, "anycast6"),
        "{}",
        protocols(&sock1)
    );
    let first: Vec<u32> = bird_children()
        .into_iter()
        .filter(|b| !before.contains(b))
        .collect();
    assert_eq!(first.len(), 1, "one BIRD child: {first:?}");
    let inherited: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", first[0]))
        .unwrap()
        .flatten()
        .filter_map(|f| std::fs::read_link(f.path()).ok())
        .filter(|t| *t == marker)
        .map(|t| t.display().to_string())
        .collect();
    assert!(
        inherited.is_empty(),
        "BIRD holds the host's descriptor: {inherited:?}"
    );
    // SAFETY: opened above, closed once.
    unsafe { libc::close(host_fd) };
    assert_eq!(threads_named("bird-supervisor"), 1);

    // A drain withdraws while it keeps serving; undrained, it announces.
    // SAFETY: a live handle.
    assert_eq!(
        unsafe { anytun_proxy_drain(p, 1) },
        sys::ANYTUN_OK,
        "{}",
        last_error()
    );
    wait("withdrawn by the drain", Duration::from_secs(5), || {
        !up(&sock1, "anycast4") && !up(&sock1, "anycast6")
    });
    let r = routes(p);
    assert_eq!(
        r & (sys::ANYTUN_PROXY_ROUTES_ANNOUNCED | sys::ANYTUN_PROXY_ROUTES_DRAINED),
        sys::ANYTUN_PROXY_ROUTES_DRAINED,
        "routes {r:#x}"
    );
    // SAFETY: a live handle.
    assert_eq!(unsafe { anytun_proxy_drain(p, 0) }, sys::ANYTUN_OK);
    wait("announced after the drain", Duration::from_secs(5), || {
        up(&sock1, "anycast4") && routes(p) & sys::ANYTUN_PROXY_ROUTES_ANNOUNCED != 0
    });
    assert_eq!(routes(p) & sys::ANYTUN_PROXY_ROUTES_DRAINED, 0);

    // A reload that changes the announcement restarts the proxy: the old
    // BIRD is stopped and waited for, a new one announces on the new socket.
    c.bird_socket = s2.as_ptr();
    // SAFETY: valid pointers.
    assert_eq!(
        unsafe { anytun_proxy_reload(p, &c) },
        sys::ANYTUN_OK,
        "{}",
        last_error()
    );
    assert!(
        !Path::new(&format!("/proc/{}", first[0])).exists(),
        "the first BIRD outlived the restart"
    );
    wait("announced again", Duration::from_secs(10), || {
        up(&sock2, "anycast4") && up(&sock2, "anycast6")
    });
    assert_eq!(
        threads_named("bird-supervisor"),
        1,
        "the first BIRD's thread was joined"
    );
    let second: Vec<u32> = bird_children()
        .into_iter()
        .filter(|b| !before.contains(b))
        .collect();
    assert_eq!(second.len(), 1, "{second:?}");

    // Stop: withdrawn, BIRD gone (by SIGTERM: it logs its shutdown), its
    // thread joined. Both BIRDs log to the same file, and the drain and
    // the restart logged the same lines: only what the stop adds counts.
    let log_path = dir.path().join("bird.conf.log");
    let logged_before_stop = std::fs::read(&log_path).unwrap().len();
    // SAFETY: a live handle.
    assert_eq!(unsafe { anytun_proxy_stop(p) }, sys::ANYTUN_OK);
    assert!(
        !Path::new(&format!("/proc/{}", second[0])).exists(),
        "BIRD outlived the stop"
    );
    assert_eq!(threads_named("bird-supervisor"), 0);
    assert_eq!(routes(p), 0, "a stopped proxy announces nothing");
    let log = std::fs::read(&log_path).unwrap();
    let log = String::from_utf8_lossy(&log[logged_before_stop..]);
    let disabled = log.find("Disabling protocol anycast4");
    let shut = log.find("Shutdown completed");
    assert!(
        disabled.is_some() && shut.is_some() && disabled < shut,
        "the stop withdraws, then BIRD shuts down:\n{log}"
    );
    // SAFETY: the handle, freed once.
    assert_eq!(unsafe { anytun_proxy_free(p) }, sys::ANYTUN_OK);

    // A config BIRD refuses fails the start, in BIRD's words; nothing runs.
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "protocol static anycast4 { ipv4; route nonsense; }\n").unwrap();
    let bad = CString::new(bad.to_str().unwrap()).unwrap();
    c.bird_config = bad.as_ptr();
    let mut q = null_mut();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { anytun_proxy_new(&c, &mut q) }, sys::ANYTUN_OK);
    // Not started (its BIRD does not run yet): nothing to drain.
    // SAFETY: a live handle.
    assert_eq!(
        unsafe { anytun_proxy_drain(q, 1) },
        sys::ANYTUN_ERR_NOT_STARTED
    );
    // SAFETY: a live handle.
    let rc = unsafe { anytun_proxy_start(q) };
    let why = last_error();
    assert_eq!(rc, sys::ANYTUN_ERR_IO, "{why}");
    assert!(why.contains("BIRD refuses this config"), "{why}");
    assert_eq!(threads_named("bird-supervisor"), 0);
    // SAFETY: the handle, freed once.
    assert_eq!(unsafe { anytun_proxy_free(q) }, sys::ANYTUN_OK);

    // Without bird_config: no BIRD, routes 0, a drain is refused by name.
    c.bird_config = std::ptr::null();
    c.bird_socket = std::ptr::null();
    c.announce_protocols = std::ptr::null();
    let mut q = null_mut();
    // SAFETY: valid pointers; a live handle.
    unsafe {
        assert_eq!(anytun_proxy_new(&c, &mut q), sys::ANYTUN_OK);
        assert_eq!(anytun_proxy_start(q), sys::ANYTUN_OK, "{}", last_error());
        assert_eq!(anytun_proxy_drain(q, 1), sys::ANYTUN_ERR_INVALID);
    }
    assert!(
        last_error().contains("announces nothing"),
        "{}",
        last_error()
    );
    assert_eq!(routes(q), 0);
    assert_eq!(threads_named("bird-supervisor"), 0);
    // SAFETY: the handle, freed once.
    assert_eq!(unsafe { anytun_proxy_free(q) }, sys::ANYTUN_OK);
}

/// The proxy's status: `ready` and `routes`.
fn ready_and_routes(p: *mut sys::anytun_proxy) -> (bool, u32) {
    let mut st = sys::anytun_proxy_status::default();
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(anytun_proxy_status_init(&mut st), sys::ANYTUN_OK);
        assert_eq!(anytun_proxy_get_status(p, &mut st), sys::ANYTUN_OK);
    }
    (st.ready != 0, st.routes)
}

/// An operator's drain (maintenance) outlives a reload that restarts the
/// proxy: the new BIRD starts with the anycast protocols disabled and
/// never enables them until the drain is lifted.
#[test]
fn a_drain_lasts_across_a_restart_by_reload() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    need_bird();
    let dir = tempfile::tempdir().unwrap();
    // A second config (its own log) for the restarted BIRD: the reload
    // changes bird_config and bird_socket, both restart the proxy.
    let conf1 = bird_conf(dir.path(), "one.conf");
    let conf2 = bird_conf(dir.path(), "two.conf");
    let (sock1, s1) = ctl(dir.path(), "one.ctl");
    let (sock2, s2) = ctl(dir.path(), "two.ctl");
    let held = Held::new(dir.path());
    let mut c = held.config(&conf1, &s1);
    let p = new_proxy(&c);
    // SAFETY: a live handle.
    assert_eq!(
        unsafe { anytun_proxy_start(p) },
        sys::ANYTUN_OK,
        "{}",
        last_error()
    );
    wait("announced", Duration::from_secs(10), || {
        up(&sock1, "anycast4") && routes(p) & sys::ANYTUN_PROXY_ROUTES_ANNOUNCED != 0
    });
    // SAFETY: a live handle.
    assert_eq!(unsafe { anytun_proxy_drain(p, 1) }, sys::ANYTUN_OK);
    wait("withdrawn by the drain", Duration::from_secs(5), || {
        !up(&sock1, "anycast4") && !up(&sock1, "anycast6")
    });

    c.bird_config = conf2.as_ptr();
    c.bird_socket = s2.as_ptr();
    // SAFETY: valid pointers; it carries no call: the restart runs at once.
    assert_eq!(
        unsafe { anytun_proxy_reload(p, &c) },
        sys::ANYTUN_OK,
        "{}",
        last_error()
    );
    // Once the restarted proxy is ready (when an undrained one announces)
    // and its BIRD answers: still drained, its protocols disabled.
    wait(
        "ready again, its new BIRD answering",
        Duration::from_secs(10),
        || ready_and_routes(p).0 && protocols(&sock2).contains("anycast4"),
    );
    let (_, r) = ready_and_routes(p);
    assert_eq!(
        r & (sys::ANYTUN_PROXY_ROUTES_ANNOUNCING
            | sys::ANYTUN_PROXY_ROUTES_ANNOUNCED
            | sys::ANYTUN_PROXY_ROUTES_DRAINED),
        sys::ANYTUN_PROXY_ROUTES_ANNOUNCING | sys::ANYTUN_PROXY_ROUTES_DRAINED,
        "routes {r:#x}: the restart lost the drain"
    );
    let shown = protocols(&sock2);
    assert!(
        !up(&sock2, "anycast4") && !up(&sock2, "anycast6"),
        "the restarted BIRD announces while drained:\n{shown}"
    );
    let log2 = dir.path().join("two.conf.log");
    let logged = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(
        !logged.contains("Enabling protocol anycast"),
        "the restarted BIRD announced while drained:\n{logged}"
    );

    // Undrained, it announces through the new BIRD.
    // SAFETY: a live handle.
    assert_eq!(unsafe { anytun_proxy_drain(p, 0) }, sys::ANYTUN_OK);
    wait("announced after the drain", Duration::from_secs(5), || {
        up(&sock2, "anycast4")
            && up(&sock2, "anycast6")
            && routes(p) & sys::ANYTUN_PROXY_ROUTES_ANNOUNCED != 0
    });
    assert_eq!(routes(p) & sys::ANYTUN_PROXY_ROUTES_DRAINED, 0);
    // SAFETY: the handle, freed once (stopping it and its BIRD).
    assert_eq!(unsafe { anytun_proxy_free(p) }, sys::ANYTUN_OK);
    assert_eq!(threads_named("bird-supervisor"), 0);
}
