//! Stopping a hosted proxy (`anytun_proxy_stop`, what res_anytun's unload
//! does) joins every thread it started, even when one of them is in a long
//! blocking call: here the proxy's subscriber store is locked by another
//! connection (as `sqlite3` or a backup would) while its anypsp peer, a
//! standalone `anytund`, replicates new subscribers into it, so the store
//! task waits out SQLite's busy timeout once per change. A stop that gave
//! up after its 5 s timeout left that thread running inside the host (and
//! a host that unloads the library's code then crashes). The only test of
//! this binary, so that no other test's threads are counted.

use anytun::ffi::sys::{
    anytun_proxy, anytun_proxy_config, anytun_proxy_status, ANYTUN_LOG_DEBUG, ANYTUN_LOG_OFF,
    ANYTUN_OK,
};
use anytun::ffi::{
    anytun_proxy_config_init, anytun_proxy_free, anytun_proxy_get_status, anytun_proxy_new,
    anytun_proxy_node_key, anytun_proxy_start, anytun_proxy_status_init, anytun_proxy_stop,
    anytun_set_logger,
};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::ptr::null_mut;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const ANYTUN: &str = env!("CARGO_BIN_EXE_anytun");
const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");

/// The names of this process's threads now.
fn threads() -> Vec<String> {
    let mut v = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|t| {
            let comm = t.unwrap().path().join("comm");
            std::fs::read_to_string(comm)
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect::<Vec<_>>();
    v.sort();
    v
}

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn log_line(_: *mut c_void, _: c_int, target: *const c_char, msg: *const c_char) {
    // SAFETY: NUL-terminated strings from the library.
    let (t, m) = unsafe { (CStr::from_ptr(target), CStr::from_ptr(msg)) };
    let line = format!("{}: {}", t.to_string_lossy(), m.to_string_lossy());
    LOG.lock().unwrap().push(line);
}

fn logged(what: &str) -> bool {
    LOG.lock().unwrap().iter().any(|l| l.contains(what))
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
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

fn status(p: *mut anytun_proxy) -> anytun_proxy_status {
    let mut st = anytun_proxy_status::default();
    // SAFETY: p is live; st is writable.
    unsafe {
        assert_eq!(anytun_proxy_status_init(&mut st), ANYTUN_OK);
        assert_eq!(anytun_proxy_get_status(p, &mut st), ANYTUN_OK);
    }
    st
}

#[test]
fn stop_joins_a_thread_blocked_on_a_locked_store() {
    let q = tempfile::tempdir().unwrap();
    let qd = q.path();
    let a = tempfile::tempdir().unwrap();
    let ad = a.path();
    let (q_sync, a_sync) = (free_tcp_port(), free_tcp_port());
    // The anytund (node 7): the network key, one subscriber.
    run(qd, ANYTUN, &["keygen", "--out", "network.key"]);
    let key = |name: &str| {
        run(qd, ANYTUN, &["keygen", "--out", &format!("{name}.key")]);
        run(qd, ANYTUN, &["pubkey", &format!("{name}.key")])
    };
    let alice = key("alice");
    run(
        qd,
        ANYTUN,
        &["user", "add", "alice", &alice, "--db", "subscribers.db"],
    );
    let base = "listen = [\"127.0.0.1:0\"]\nnetwork_key = \"network.key\"\n\
                subscribers = \"subscribers.db\"\nsubscriber_reload_ms = 100\nproxy_id = 7\n";
    std::fs::write(qd.join("anytund.toml"), base).unwrap();
    let q_key = run(qd, ANYTUND, &["--config", "anytund.toml", "--node-key"]);

    // The hosted proxy (node 2), its peer the anytund.
    std::fs::copy(qd.join("network.key"), ad.join("network.key")).unwrap();
    let strings: Vec<CString> = [
        ad.to_str().unwrap().to_owned(),
        "127.0.0.1:0".to_owned(),
        format!("127.0.0.1:{a_sync}"),
        format!("7 127.0.0.1:{q_sync} {q_key}"),
    ]
    .into_iter()
    .map(|s| CString::new(s).unwrap())
    .collect();
    let peers = [strings[3].as_ptr()];
    let mut c = anytun_proxy_config::default();
    // SAFETY (every call below): valid pointers; p is live until freed.
    unsafe {
        assert_eq!(
            anytun_set_logger(Some(log_line), null_mut(), ANYTUN_LOG_DEBUG as c_int),
            ANYTUN_OK
        );
        assert_eq!(anytun_proxy_config_init(&mut c), ANYTUN_OK);
    }
    c.state_dir = strings[0].as_ptr();
    c.listen = strings[1].as_ptr();
    c.sync_listen = strings[2].as_ptr();
    c.peers = peers.as_ptr();
    c.n_peers = 1;
    c.node_id = 2;
    c.worker_threads = 2;
    let mut a_key = [0 as c_char; 64];
    let mut p = null_mut();
    unsafe {
        assert_eq!(anytun_proxy_new(&c, &mut p), ANYTUN_OK);
        assert_eq!(
            anytun_proxy_node_key(p, a_key.as_mut_ptr(), a_key.len(), null_mut()),
            ANYTUN_OK
        );
    }
    let a_key = unsafe { CStr::from_ptr(a_key.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    std::fs::write(
        qd.join("anytund.toml"),
        format!(
            "{base}\n[sync]\nlisten = \"127.0.0.1:{q_sync}\"\n\n[[sync.peers]]\nid = 2\n\
             address = \"127.0.0.1:{a_sync}\"\npublic_key = \"{a_key}\"\n"
        ),
    )
    .unwrap();
    let _daemon = Daemon(
        Command::new(ANYTUND)
            .args(["--config", "anytund.toml"])
            .current_dir(qd)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(qd.join("anytund.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let before = threads();
    unsafe { assert_eq!(anytun_proxy_start(p), ANYTUN_OK) };
    wait_until("synced and serving", Duration::from_secs(30), || {
        let st = status(p);
        st.ready == 1 && st.peers_synced == 1 && st.subscribers == 1
    });
    let running = threads();
    // Another connection holds the store's write lock.
    let db = rusqlite::Connection::open(ad.join("subscribers.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    // New subscribers at the anytund, replicated to the hosted proxy,
    // whose store task now waits 5 s on each.
    for name in ["bob", "carol", "dave", "erin"] {
        let k = key(name);
        run(
            qd,
            ANYTUN,
            &["user", "add", name, &k, "--db", "subscribers.db"],
        );
    }
    wait_until(
        "the store task blocked on the locked store",
        Duration::from_secs(30),
        || logged("replicated subscriber change"),
    );
    let t = Instant::now();
    let rc = unsafe { anytun_proxy_stop(p) };
    let took = t.elapsed();
    let after = threads();
    println!(
        "threads: {before:?} before start, {running:?} running, {after:?} after a stop that \
         took {took:.1?} (the store locked)"
    );
    assert_eq!(rc, ANYTUN_OK);
    assert_eq!(after, before, "threads left running after the stop");
    drop(db);
    unsafe {
        assert_eq!(anytun_proxy_free(p), ANYTUN_OK);
        assert_eq!(
            anytun_set_logger(None, null_mut(), ANYTUN_LOG_OFF as c_int),
            ANYTUN_OK
        );
    }
}
