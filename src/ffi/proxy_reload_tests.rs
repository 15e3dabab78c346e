//! Tests of the hosted proxy's reloads (`anytun_proxy_reload`): what
//! applies live, when a synced peer may carry the calls across a restart,
//! and the log lines of a deferred restart reaching a host's log callback
//! that reads the status.

use super::proxy_tests::{init, last_error, new_proxy, settings_of, Strings};
use super::sys;
use super::*;
use crate::crypto::SecretKey;
use std::ffi::{c_char, c_int, CStr};
use std::ptr::{null, null_mut};

#[test]
fn only_a_changed_peer_list_is_applied_without_a_restart() {
    use super::proxy_host::peers_only;
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().public().to_base64();
    let mut s = Strings::default();
    let mut c = init();
    c.state_dir = s.s(dir.path().to_str().unwrap());
    c.sync_listen = s.s("127.0.0.1:7200");
    c.peers = s.list(&[&format!("2 127.0.0.1:7201 {key}")]);
    c.n_peers = 1;
    let old = settings_of(&c);
    assert!(!peers_only(&old, &old), "nothing changed");
    // Added, removed, moved: the peer list alone.
    for peers in [
        vec![
            format!("2 127.0.0.1:7201 {key}"),
            format!("3 127.0.0.1:7202 {key}"),
        ],
        vec![],
        vec![format!("2 127.0.0.1:7209 {key}")],
        vec![format!("2 127.0.0.1:7201 {key} revoked")],
    ] {
        let mut c2 = c;
        let refs: Vec<&str> = peers.iter().map(String::as_str).collect();
        c2.peers = if refs.is_empty() {
            null()
        } else {
            s.list(&refs)
        };
        c2.n_peers = refs.len();
        assert!(peers_only(&old, &settings_of(&c2)), "{peers:?}");
    }
    let mut c5 = c;
    c5.peers = s.list(&[&format!("2 127.0.0.1:7201 {key} revoked")]);
    let revoked = settings_of(&c5);
    assert!(revoked.sync.unwrap().peers[0].revoked);
    // The peers and anything else: a restart.
    let mut c3 = c;
    c3.peers = s.list(&[&format!("3 127.0.0.1:7202 {key}")]);
    c3.metrics_listen = s.s("127.0.0.1:7300");
    assert!(!peers_only(&old, &settings_of(&c3)));
    // Without [sync] there is no peer list to change.
    let mut c4 = init();
    c4.state_dir = s.s(dir.path().to_str().unwrap());
    let alone = settings_of(&c4);
    c4.metrics_listen = s.s("127.0.0.1:7300");
    assert!(!peers_only(&alone, &settings_of(&c4)));
}

#[test]
fn a_synced_peer_takes_the_calls_only_across_a_restart_as_the_same_member() {
    use super::proxy_host::peer_may_take;
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().public().to_base64();
    let mut s = Strings::default();
    let mut c = init();
    c.state_dir = s.s(dir.path().to_str().unwrap());
    c.node_id = 2;
    c.listen = s.s("127.0.0.1:7100");
    c.sync_listen = s.s("127.0.0.1:7200");
    c.peers = s.list(&[&format!("7 127.0.0.1:7201 {key}")]);
    c.n_peers = 1;
    let old = settings_of(&c);
    type Change = Box<dyn Fn(&mut sys::anytun_proxy_config, &mut Strings)>;
    // It comes back as the same member where its clients send.
    let same: Vec<(&str, Change)> = vec![
        ("nothing", Box::new(|_, _| {})),
        (
            "metrics",
            Box::new(|c, s| c.metrics_listen = s.s("127.0.0.1:7300")),
        ),
        ("threads", Box::new(|c, _| c.worker_threads = 3)),
        (
            "store",
            Box::new(|c, s| c.subscribers = s.s("/tmp/elsewhere.db")),
        ),
        ("no peers", Box::new(|c, _| c.n_peers = 0)),
    ];
    // It does not: its calls would be cut, or not come back.
    let other_state = s.s(other.path().to_str().unwrap());
    let not: Vec<(&str, Change)> = vec![
        ("node id", Box::new(|c, _| c.node_id = 3)),
        (
            "network key",
            Box::new(move |c, _| c.state_dir = other_state),
        ),
        (
            "sync listen",
            Box::new(|c, s| c.sync_listen = s.s("127.0.0.1:7202")),
        ),
        (
            "no sync",
            Box::new(|c, _| {
                c.sync_listen = null();
                c.n_peers = 0;
            }),
        ),
        ("listen", Box::new(|c, s| c.listen = s.s("127.0.0.1:7101"))),
        (
            "reuse_port",
            Box::new(|c, _| c.flags = sys::ANYTUN_PROXY_REUSE_PORT),
        ),
    ];
    for (ok, cases) in [(true, same), (false, not)] {
        for (what, change) in cases {
            let mut c2 = c;
            change(&mut c2, &mut s);
            assert_eq!(peer_may_take(&old, &settings_of(&c2)), ok, "{what}");
        }
    }
    // Without [sync] there is no peer to take anything.
    let mut alone = c;
    alone.sync_listen = null();
    alone.n_peers = 0;
    let alone = settings_of(&alone);
    assert!(!peer_may_take(&alone, &alone));
}

/// The node id of [`a_log_callback_may_ask_for_the_status_during_reloads`]:
/// its log callback asks only on threads named after it (the node's, the
/// watcher, the test's), so no other test's thread can hang on it.
const LOG_NODE: &str = "anytun-px41";

static LOG_PROXY: std::sync::atomic::AtomicPtr<sys::anytun_proxy> =
    std::sync::atomic::AtomicPtr::new(null_mut());
/// "code of the status call: the log line", on those threads.
static LOG_SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A host's log callback that reads the proxy's status on every line (as
/// a PBX that shows it on its console).
unsafe extern "C" fn status_on_every_line(
    _user: *mut std::ffi::c_void,
    _level: c_int,
    _target: *const c_char,
    msg: *const c_char,
) {
    let p = LOG_PROXY.load(std::sync::atomic::Ordering::Acquire);
    let mine = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with(LOG_NODE));
    if p.is_null() || !mine {
        return;
    }
    // SAFETY: a NUL-terminated line; p is live while installed.
    let msg = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    let mut st = sys::anytun_proxy_status::default();
    // SAFETY: as above.
    let r = unsafe {
        anytun_proxy_status_init(&mut st);
        anytun_proxy_get_status(p, &mut st)
    };
    LOG_SEEN.lock().unwrap().push(format!("{r}: {msg}"));
}

/// A raw pointer (or a struct holding them) moved to the host thread.
struct Raw<T>(T);
// SAFETY: the test keeps what they point at alive until that thread ends.
unsafe impl<T> Send for Raw<T> {}

impl<T> Raw<T> {
    /// Moves the whole of it (a closure would capture the fields alone).
    fn get(self) -> T {
        self.0
    }
}

/// The reload's log lines (deferred, replaced, cancelled, dropped by a
/// stop) reach a log callback that reads the status, which takes the
/// deferral's lock: none of them may be logged while it is held (it would
/// deadlock; a timeout fails the test instead of hanging). A real call
/// between two C-ABI clients through the hosted proxy defers the restart.
#[test]
fn a_log_callback_may_ask_for_the_status_during_reloads() {
    use super::tests::call::{connect, Host};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let _one = super::tests::LOGGER
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
    {
        let store =
            crate::store::SubscriberStore::open(&dir.path().join(crate::config::SUBSCRIBERS_FILE))
                .unwrap();
        store.add("alice", &ka.public().0).unwrap();
        store.add("bob", &kb.public().0).unwrap();
    }
    let mut s = Strings::default();
    let mut c = init();
    c.state_dir = s.s(dir.path().to_str().unwrap());
    c.listen = s.s("127.0.0.1:0");
    c.worker_threads = 1;
    c.node_id = 41;
    let (mut c2, mut c3) = (c, c);
    c2.worker_threads = 2;
    c3.worker_threads = 3;
    let p = new_proxy(&c).unwrap();
    let status = || {
        let mut st = sys::anytun_proxy_status::default();
        // SAFETY: p is live until freed at the end.
        unsafe {
            anytun_proxy_status_init(&mut st);
            assert_eq!(anytun_proxy_get_status(p, &mut st), sys::ANYTUN_OK);
        }
        st
    };
    let until = |what: &str, f: &dyn Fn(&sys::anytun_proxy_status) -> bool| {
        let t = Instant::now();
        while !f(&status()) {
            assert!(t.elapsed() < Duration::from_secs(20), "never {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // SAFETY: p is live.
    assert_eq!(unsafe { anytun_proxy_start(p) }, sys::ANYTUN_OK);
    until("served", &|st| st.state == sys::ANYTUN_PROXY_SERVING as i32);
    let st = status();
    let addr = format!("127.0.0.1:{}", st.udp_port);
    // SAFETY: NUL-terminated by the library.
    let net = unsafe { CStr::from_ptr(st.network_key.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    let (alice, bob) = (Host::default(), Host::default());
    let (a, b) = connect(&alice, &bob, &ka, &kb, &net, &addr);
    // SAFETY (all): live handles.
    unsafe {
        let codecs = [c"slin".as_ptr()];
        let mut call = 0u64;
        let r = anytun_client_call(a, c"bob".as_ptr(), null(), codecs.as_ptr(), 1, &mut call);
        assert_eq!(r, 0, "{}", last_error());
        alice.wait_for(&format!(
            "call {call} event {} cause 0",
            sys::ANYTUN_CALL_ANSWERED
        ));
    }
    until("carried the call", &|st| st.carried > 0);

    LOG_SEEN.lock().unwrap().clear();
    LOG_PROXY.store(p, Ordering::Release);
    // SAFETY: the callback has the header's type and needs no user data.
    let r = unsafe {
        anytun_set_logger(
            Some(status_on_every_line),
            null_mut(),
            sys::ANYTUN_LOG_INFO as c_int,
        )
    };
    assert_eq!(r, sys::ANYTUN_OK);
    let (tx, rx) = std::sync::mpsc::channel();
    let raw = Raw((p, c, c2, c3));
    std::thread::Builder::new()
        .name(format!("{LOG_NODE}-host"))
        .spawn(move || {
            let (p, c, c2, c3) = raw.get();
            let pending = || {
                let mut st = sys::anytun_proxy_status::default();
                // SAFETY: p is live until the test frees it.
                unsafe {
                    anytun_proxy_status_init(&mut st);
                    anytun_proxy_get_status(p, &mut st);
                }
                st.reload_pending
            };
            // SAFETY (all): p is live; the configs' strings outlive this
            // thread (the test waits for it or fails).
            let got = unsafe {
                [
                    ("deferred", anytun_proxy_reload(p, &c2), pending()),
                    ("replaced", anytun_proxy_reload(p, &c3), pending()),
                    ("cancelled", anytun_proxy_reload(p, &c), pending()),
                    ("deferred again", anytun_proxy_reload(p, &c2), pending()),
                    ("stopped", anytun_proxy_stop(p), pending()),
                ]
            };
            let _ = tx.send(got);
        })
        .unwrap();
    let got = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(got) => got,
        Err(e) => {
            // The callback stops asking: nothing else blocks on it.
            LOG_PROXY.store(null_mut(), Ordering::Release);
            panic!("the reloads deadlocked ({e}): log lines seen {LOG_SEEN:?}")
        }
    };
    // SAFETY: removing takes no pointer.
    assert_eq!(unsafe { anytun_set_logger(None, null_mut(), 0) }, 0);
    LOG_PROXY.store(null_mut(), Ordering::Release);
    assert_eq!(
        got,
        [
            ("deferred", sys::ANYTUN_OK, 1),
            ("replaced", sys::ANYTUN_OK, 1),
            ("cancelled", sys::ANYTUN_OK, 0),
            ("deferred again", sys::ANYTUN_OK, 1),
            ("stopped", sys::ANYTUN_OK, 0),
        ]
    );
    let seen = LOG_SEEN.lock().unwrap().clone();
    for line in [
        "the restart is deferred until the calls it carries end",
        "replaces the pending restart",
        "the pending restart (worker_threads changed) is cancelled",
        "stopped with a restart pending (worker_threads changed): dropped",
    ] {
        assert!(
            seen.iter()
                .any(|l| l.starts_with("0: ") && l.contains(line)),
            "no {line:?} with a status read in {seen:#?}"
        );
    }
    // SAFETY: live handles, last use.
    unsafe {
        assert_eq!(anytun_client_free(a), 0);
        assert_eq!(anytun_client_free(b), 0);
        assert_eq!(anytun_proxy_free(p), sys::ANYTUN_OK);
    }
}
