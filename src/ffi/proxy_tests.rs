//! Tests of the hosted proxy's exports (`anytun_proxy_*`) from Rust: the
//! settings, their errors, the lifecycle, buffers, and a stop refused
//! where it would deadlock.

use super::sys;
use super::*;
use crate::crypto::SecretKey;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};

pub(super) fn last_error() -> String {
    let mut buf = [0 as c_char; 1024];
    // SAFETY: buf holds 1024 bytes.
    let r = unsafe { anytun_last_error(buf.as_mut_ptr(), buf.len(), null_mut()) };
    assert_eq!(r, sys::ANYTUN_OK);
    // SAFETY: NUL-terminated by the library.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

pub(super) fn init() -> sys::anytun_proxy_config {
    let mut c = sys::anytun_proxy_config::default();
    // SAFETY: a valid struct.
    assert_eq!(unsafe { anytun_proxy_config_init(&mut c) }, sys::ANYTUN_OK);
    c
}

/// Strings that live as long as the test.
#[derive(Default)]
pub(super) struct Strings(Vec<CString>, Vec<Vec<*const c_char>>);

impl Strings {
    pub(super) fn s(&mut self, s: &str) -> *const c_char {
        self.0.push(CString::new(s).unwrap());
        self.0.last().unwrap().as_ptr()
    }
    pub(super) fn list(&mut self, items: &[&str]) -> *const *const c_char {
        let v: Vec<_> = items.iter().map(|i| self.s(i)).collect();
        self.1.push(v);
        self.1.last().unwrap().as_ptr()
    }
}

pub(super) fn new_proxy(
    c: &sys::anytun_proxy_config,
) -> Result<*mut sys::anytun_proxy, (c_int, String)> {
    let mut p = null_mut();
    // SAFETY: valid pointers.
    match unsafe { anytun_proxy_new(c, &mut p) } {
        sys::ANYTUN_OK => Ok(p),
        code => {
            assert!(p.is_null(), "*out is NULL on failure");
            Err((code, last_error()))
        }
    }
}

pub(super) fn settings_of(c: &sys::anytun_proxy_config) -> crate::config::Config {
    // SAFETY: the strings of c live in the caller's Strings.
    unsafe { super::proxy_host::settings(c) }.unwrap()
}

#[test]
fn the_fields_make_a_config_and_override_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let peer_key = SecretKey::generate().public();
    let file = dir.path().join("anytund.toml");
    std::fs::write(
        &file,
        format!(
            "proxy_id = 3\nlisten = [\"127.0.0.1:7000\"]\nnetwork_key = \"n.key\"\n\
             subscribers = \"s.db\"\nkeepalive_s = 20\nsession_timeout_s = 100\n\
             [sync]\nlisten = \"127.0.0.1:7001\"\n\
             [[sync.peers]]\nid = 9\naddress = \"127.0.0.1:7009\"\npublic_key = \"{peer_key}\"\n"
        ),
    )
    .unwrap();
    let mut s = Strings::default();
    // The file alone: its values, metrics as it says (the default).
    let mut c = init();
    c.config_file = s.s(file.to_str().unwrap());
    let cfg = settings_of(&c);
    assert_eq!(cfg.proxy_id, 3);
    assert_eq!(cfg.keepalive_s, 20);
    assert_eq!(cfg.network_key, dir.path().join("n.key"));
    assert_eq!(cfg.sync.as_ref().unwrap().peers.len(), 1);
    // Fields replace what they name, and nothing else.
    let key2 = SecretKey::generate().public();
    c.node_id = 4;
    c.listen = s.s("127.0.0.1:7100, [::1]:7100");
    c.state_dir = s.s(dir.path().join("st").to_str().unwrap());
    c.peers = s.list(&[
        &format!("5 127.0.0.1:7005 {key2}"),
        &format!("6@127.0.0.1:7006 {key2}"),
    ]);
    c.n_peers = 2;
    c.metrics_listen = s.s("");
    c.flags = sys::ANYTUN_PROXY_REUSE_PORT;
    let cfg = settings_of(&c);
    assert_eq!(cfg.proxy_id, 4);
    assert_eq!(cfg.listen, ["127.0.0.1:7100", "[::1]:7100"]);
    assert_eq!(cfg.keepalive_s, 20, "kept from the file");
    assert!(cfg.reuse_port);
    assert_eq!(cfg.metrics_listen, None);
    assert_eq!(cfg.network_key, dir.path().join("st/network.key"));
    assert_eq!(cfg.subscribers, dir.path().join("st/subscribers.db"));
    let sync = cfg.sync.unwrap();
    assert_eq!(sync.node_key, dir.path().join("st/node.key"));
    assert_eq!(sync.listen.port(), 7001, "kept from the file");
    let ids: Vec<u16> = sync.peers.iter().map(|p| p.id).collect();
    assert_eq!(ids, [5, 6]);
    // No file: a state directory, metrics off, a member once sync_listen is set.
    let mut c = init();
    c.state_dir = s.s(dir.path().to_str().unwrap());
    let cfg = settings_of(&c);
    assert_eq!(cfg.metrics_listen, None);
    assert!(cfg.sync.is_none());
    c.sync_listen = s.s("127.0.0.1:7200");
    let sync = settings_of(&c).sync.unwrap();
    assert_eq!(sync.node_key, dir.path().join("node.key"));
    assert!(sync.peers.is_empty());
}

#[test]
fn the_announce_fields_set_or_override_the_files_announce() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("anytund.toml");
    std::fs::write(
        &file,
        "network_key = \"n.key\"\nsubscribers = \"s.db\"\n\
         [announce]\nbird_config = \"bird.conf\"\nprotocols = [\"a4\"]\n",
    )
    .unwrap();
    let mut s = Strings::default();
    // The file's [announce] as it is (relative to the file).
    let mut c = init();
    c.config_file = s.s(file.to_str().unwrap());
    let a = settings_of(&c).announce.unwrap();
    assert_eq!(a.bird_config, dir.path().join("bird.conf"));
    assert_eq!(a.bird_socket, dir.path().join("bird.ctl"));
    assert_eq!(a.protocols, ["a4"]);
    // The fields replace what they name.
    c.bird_config = s.s("/etc/bird/anycast.conf");
    c.announce_protocols = s.s("any4, any6 any_x");
    let a = settings_of(&c).announce.unwrap();
    assert_eq!(a.bird_config, Path::new("/etc/bird/anycast.conf"));
    assert_eq!(
        a.bird_socket,
        dir.path().join("bird.ctl"),
        "kept from the file"
    );
    assert_eq!(a.protocols, ["any4", "any6", "any_x"]);
    // No file: bird_config alone brings the defaults.
    let mut c = init();
    c.state_dir = s.s(dir.path().to_str().unwrap());
    assert!(settings_of(&c).announce.is_none());
    c.bird_config = s.s("/etc/bird/anycast.conf");
    let a = settings_of(&c).announce.unwrap();
    assert_eq!(a.bird_socket, Path::new("/etc/bird/anycast.ctl"));
    assert_eq!(a.protocols, ["anycast4", "anycast6"]);
    assert_eq!(a.bird, Path::new("bird"));
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "proxy_id = 3\nlisten = 7\n").unwrap();
    let key = SecretKey::generate().public().to_base64();
    let mut s = Strings::default();
    let state = s.s(dir.path().to_str().unwrap());
    let sync = s.s("127.0.0.1:7001");
    /// (what, code, text in the detail), and how the config is spoiled.
    type Case = (
        (&'static str, c_int, &'static str),
        Box<dyn Fn(&mut sys::anytun_proxy_config, &mut Strings)>,
    );
    let cases: Vec<Case> = vec![
        (
            ("no file, no state", sys::ANYTUN_ERR_INVALID, "state_dir"),
            Box::new(|c, _| c.state_dir = null()),
        ),
        (
            ("flags", sys::ANYTUN_ERR_STRUCT_SIZE, "flags"),
            Box::new(|c, _| c.flags = 2),
        ),
        (
            ("reserved", sys::ANYTUN_ERR_STRUCT_SIZE, "reserved_u32"),
            Box::new(|c, _| c.reserved_u32[7] = 1),
        ),
        (
            ("size", sys::ANYTUN_ERR_STRUCT_SIZE, "struct_size"),
            Box::new(|c, _| c.struct_size = 16),
        ),
        (
            ("node id", sys::ANYTUN_ERR_INVALID, "node_id: 65535"),
            Box::new(|c, _| c.node_id = 65535),
        ),
        (
            ("threads", sys::ANYTUN_ERR_INVALID, "worker_threads"),
            Box::new(|c, _| c.worker_threads = 65),
        ),
        (
            ("listen", sys::ANYTUN_ERR_INVALID, "listen: \"7475\""),
            Box::new(|c, s| c.listen = s.s("127.0.0.1:1 7475")),
        ),
        (
            ("listen empty", sys::ANYTUN_ERR_INVALID, "no address"),
            Box::new(|c, s| c.listen = s.s(" , ")),
        ),
        (
            ("sync listen", sys::ANYTUN_ERR_INVALID, "sync_listen"),
            Box::new(|c, s| c.sync_listen = s.s("here")),
        ),
        (
            (
                "bird socket alone",
                sys::ANYTUN_ERR_INVALID,
                "needs bird_config",
            ),
            Box::new(|c, s| c.bird_socket = s.s("/run/bird.ctl")),
        ),
        (
            (
                "bird protocols",
                sys::ANYTUN_ERR_INVALID,
                "not a BIRD protocol",
            ),
            Box::new(|c, s| {
                c.bird_config = s.s("/etc/bird.conf");
                c.announce_protocols = s.s("anycast4; up4");
            }),
        ),
        (
            (
                "bird config empty",
                sys::ANYTUN_ERR_INVALID,
                "bird_config: empty",
            ),
            Box::new(|c, s| c.bird_config = s.s("")),
        ),
        (
            ("reserved ptr", sys::ANYTUN_ERR_STRUCT_SIZE, "reserved_ptr"),
            Box::new(|c, _| c.reserved_ptr[4] = std::ptr::dangling::<std::ffi::c_void>()),
        ),
        (
            ("metrics", sys::ANYTUN_ERR_INVALID, "metrics_listen"),
            Box::new(|c, s| c.metrics_listen = s.s("localhost")),
        ),
        (
            ("file", sys::ANYTUN_ERR_INVALID, "bad.toml:2:"),
            Box::new(move |c, s| {
                c.config_file = s.s(bad_file.to_str().unwrap());
            }),
        ),
        (
            (
                "peers, no sync",
                sys::ANYTUN_ERR_INVALID,
                "need a sync_listen",
            ),
            Box::new(|c, s| {
                c.peers = s.list(&["2 127.0.0.1:1 x"]);
                c.n_peers = 1;
            }),
        ),
        (
            ("peers NULL", sys::ANYTUN_ERR_NULL, "peers is NULL"),
            Box::new(move |c, _| {
                c.sync_listen = sync;
                c.n_peers = 1;
            }),
        ),
        (
            (
                "peer fields",
                sys::ANYTUN_ERR_INVALID,
                "peers[1]: \"3 127.0.0.1:1\": expected",
            ),
            Box::new({
                let key = key.clone();
                move |c, s| {
                    c.sync_listen = sync;
                    c.peers = s.list(&[&format!("2 127.0.0.1:1 {key}"), "3 127.0.0.1:1"]);
                    c.n_peers = 2;
                }
            }),
        ),
        (
            ("peer key", sys::ANYTUN_ERR_INVALID, "public key"),
            Box::new(move |c, s| {
                c.sync_listen = sync;
                c.peers = s.list(&["2 127.0.0.1:1 notakey"]);
                c.n_peers = 1;
            }),
        ),
        (
            ("peer id", sys::ANYTUN_ERR_INVALID, "node id \"0\""),
            Box::new({
                let key = key.clone();
                move |c, s| {
                    c.sync_listen = sync;
                    c.peers = s.list(&[&format!("0 127.0.0.1:1 {key}")]);
                    c.n_peers = 1;
                }
            }),
        ),
        (
            ("peer twice", sys::ANYTUN_ERR_INVALID, "listed twice"),
            Box::new({
                let key = key.clone();
                move |c, s| {
                    c.sync_listen = sync;
                    let p = format!("2 127.0.0.1:1 {key}");
                    c.peers = s.list(&[&p, &p]);
                    c.n_peers = 2;
                }
            }),
        ),
        (
            ("peer is self", sys::ANYTUN_ERR_INVALID, "this proxy's own"),
            Box::new({
                let key = key.clone();
                move |c, s| {
                    c.sync_listen = sync;
                    c.node_id = 2;
                    c.peers = s.list(&[&format!("2 127.0.0.1:1 {key}")]);
                    c.n_peers = 1;
                }
            }),
        ),
    ];
    for ((what, code, detail), f) in cases {
        let mut c = init();
        c.state_dir = state;
        f(&mut c, &mut s);
        let (got, text) = new_proxy(&c).expect_err(what);
        assert_eq!(got, code, "{what}: {text}");
        assert!(text.contains(detail), "{what}: {text:?} lacks {detail:?}");
    }
    // A string that is not UTF-8.
    let mut c = init();
    let raw = b"/tmp/\xff\0";
    c.state_dir = raw.as_ptr().cast();
    let (got, text) = new_proxy(&c).unwrap_err();
    assert_eq!(got, sys::ANYTUN_ERR_INVALID);
    assert!(text.contains("UTF-8"), "{text}");
    // Nothing was created by any of them.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_proxy_starts_reports_reloads_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Strings::default();
    let peer = SecretKey::generate().public();
    let mut c = init();
    c.state_dir = s.s(dir.path().to_str().unwrap());
    c.listen = s.s("127.0.0.1:0");
    c.worker_threads = 1;
    c.node_id = 7;
    // A member whose only peer never answers: it serves after the
    // startup timeout.
    c.sync_listen = s.s("127.0.0.1:0");
    c.peers = s.list(&[&format!("8 127.0.0.1:9 {peer}")]);
    c.n_peers = 1;
    let p = new_proxy(&c).unwrap();
    let status = || {
        let mut st = sys::anytun_proxy_status::default();
        // SAFETY: valid pointers.
        unsafe {
            assert_eq!(anytun_proxy_status_init(&mut st), sys::ANYTUN_OK);
            assert_eq!(anytun_proxy_get_status(p, &mut st), sys::ANYTUN_OK);
        }
        st
    };
    // SAFETY (every call below): p is live until freed at the end.
    unsafe {
        let st = status();
        assert_eq!(
            (st.state, st.node_id, st.peers),
            (sys::ANYTUN_PROXY_IDLE as i32, 7, 1)
        );
        assert_eq!(anytun_proxy_reload(p, &c), sys::ANYTUN_ERR_NOT_STARTED);
        // The node key: made on first use, the same after.
        let mut k1 = [0 as c_char; 64];
        let mut k2 = [0 as c_char; 64];
        let mut needed = 0;
        assert_eq!(
            anytun_proxy_node_key(p, null_mut(), 0, &mut needed),
            sys::ANYTUN_ERR_BUFFER_TOO_SMALL
        );
        assert_eq!(needed, 45);
        assert_eq!(
            anytun_proxy_node_key(p, k1.as_mut_ptr(), 64, null_mut()),
            sys::ANYTUN_OK
        );
        assert_eq!(
            anytun_proxy_node_key(p, k2.as_mut_ptr(), 64, null_mut()),
            sys::ANYTUN_OK
        );
        assert_eq!(CStr::from_ptr(k1.as_ptr()), CStr::from_ptr(k2.as_ptr()));
        assert!(dir.path().join("node.key").exists());
        // The peers before start: listed, down; a buffer too small.
        let mut n = 0;
        let mut info = [sys::anytun_proxy_peer_info::default(); 2];
        assert_eq!(
            anytun_proxy_peers(p, null_mut(), 0, &mut n),
            sys::ANYTUN_ERR_BUFFER_TOO_SMALL
        );
        assert_eq!(n, 1);
        assert_eq!(
            anytun_proxy_peers(p, null_mut(), 1, &mut n),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(
            anytun_proxy_peers(p, info.as_mut_ptr(), 2, &mut n),
            sys::ANYTUN_OK
        );
        assert_eq!(
            (info[0].node_id, info[0].state),
            (8, sys::ANYTUN_PEER_DOWN as i32)
        );
        assert_eq!(
            CStr::from_ptr(info[0].address.as_ptr()).to_str().unwrap(),
            "127.0.0.1:9"
        );

        assert_eq!(anytun_proxy_start(p), sys::ANYTUN_OK);
        assert_eq!(anytun_proxy_start(p), sys::ANYTUN_ERR_ALREADY_STARTED);
        let t = std::time::Instant::now();
        while status().state != sys::ANYTUN_PROXY_SERVING as i32 {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(20),
                "never served"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let st = status();
        assert_ne!(st.udp_port, 0);
        assert_ne!(st.sync_port, 0);
        assert_eq!(st.ready, 0, "not synced with its peer");
        assert_eq!((st.peers, st.peers_up), (1, 0));
        assert_eq!(st.network_key[43], b'=' as c_char, "a base64 key");
        // A reload asking for what runs: fine, nothing restarts.
        let port = st.udp_port;
        assert_eq!(anytun_proxy_reload(p, &c), sys::ANYTUN_OK);
        assert_eq!(status().udp_port, port);
        assert_eq!(status().state, sys::ANYTUN_PROXY_SERVING as i32);
        // A change that cannot start (its port is taken): refused, naming
        // what changed, and the proxy runs again with its old settings.
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut c2 = c;
        c2.listen = s.s(&taken.local_addr().unwrap().to_string());
        assert_eq!(anytun_proxy_reload(p, &c2), sys::ANYTUN_ERR_IO);
        let e = last_error();
        assert!(
            e.starts_with("listen changed, but") && e.ends_with("runs again with its old settings"),
            "{e}"
        );
        assert_eq!(status().peers, 1);
        // A change that can: applied by a restart in the same handle (no
        // peers now: it serves at once).
        let mut c4 = c;
        c4.n_peers = 0;
        c4.sync_listen = null();
        assert_eq!(
            anytun_proxy_reload(p, &c4),
            sys::ANYTUN_OK,
            "{}",
            last_error()
        );
        let t = std::time::Instant::now();
        while status().state != sys::ANYTUN_PROXY_SERVING as i32 {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(20),
                "never served again"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let st = status();
        assert_eq!((st.peers, st.ready, st.sync_port), (0, 1, 0));
        // No client: an empty session list.
        let mut n = 7;
        let mut page = [sys::anytun_proxy_session_info::default(); 4];
        assert_eq!(
            anytun_proxy_sessions(p, 0, page.as_mut_ptr(), 4, &mut n),
            sys::ANYTUN_OK
        );
        assert_eq!(n, 0);
        assert_eq!(
            anytun_proxy_sessions(p, 0, null_mut(), 4, &mut n),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(
            anytun_proxy_sessions(p, 0, null_mut(), 0, &mut n),
            sys::ANYTUN_OK
        );

        // A stop from inside a tokio runtime (the log callback runs on the
        // node's threads) would deadlock: refused.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let code = rt.block_on(async { anytun_proxy_stop(p) });
        assert_eq!(code, sys::ANYTUN_ERR_IN_CALLBACK);
        assert_eq!(status().state, sys::ANYTUN_PROXY_SERVING as i32);

        assert_eq!(anytun_proxy_stop(p), sys::ANYTUN_OK);
        assert_eq!(status().state, sys::ANYTUN_PROXY_STOPPED as i32);
        assert_eq!(anytun_proxy_stop(p), sys::ANYTUN_OK);
        assert_eq!(anytun_proxy_start(p), sys::ANYTUN_ERR_STOPPED);
        assert_eq!(anytun_proxy_free(p), sys::ANYTUN_OK);
    }
}

#[test]
fn a_port_in_use_fails_the_start_before_any_key_and_a_retry_works() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut s = Strings::default();
    let mut c = init();
    c.state_dir = s.s(dir.path().to_str().unwrap());
    c.listen = s.s(&format!("127.0.0.1:{port}"));
    c.worker_threads = 1;
    let p = new_proxy(&c).unwrap();
    // SAFETY: p is live until freed.
    unsafe {
        assert_eq!(anytun_proxy_start(p), sys::ANYTUN_ERR_IO);
        let e = last_error();
        assert!(e.contains("in use"), "{e}");
        assert!(!dir.path().join("network.key").exists(), "no key made");
        let mut st = sys::anytun_proxy_status::default();
        anytun_proxy_status_init(&mut st);
        assert_eq!(anytun_proxy_get_status(p, &mut st), sys::ANYTUN_OK);
        assert_eq!(st.state, sys::ANYTUN_PROXY_IDLE as i32);
        drop(taken);
        assert_eq!(anytun_proxy_start(p), sys::ANYTUN_OK);
        assert!(dir.path().join("network.key").exists());
        assert_eq!(anytun_proxy_free(p), sys::ANYTUN_OK);
    }
}

#[test]
fn null_and_short_structs_are_errors() {
    // SAFETY: the pointers are NULL or valid.
    unsafe {
        assert_eq!(anytun_proxy_config_init(null_mut()), sys::ANYTUN_ERR_NULL);
        assert_eq!(anytun_proxy_status_init(null_mut()), sys::ANYTUN_ERR_NULL);
        assert_eq!(anytun_proxy_new(null(), null_mut()), sys::ANYTUN_ERR_NULL);
        let mut p = std::ptr::dangling_mut::<sys::anytun_proxy>();
        assert_eq!(anytun_proxy_new(null(), &mut p), sys::ANYTUN_ERR_NULL);
        assert!(p.is_null());
        for code in [
            anytun_proxy_start(null_mut()),
            anytun_proxy_stop(null_mut()),
            anytun_proxy_get_status(null_mut(), null_mut()),
            anytun_proxy_peers(null_mut(), null_mut(), 0, null_mut()),
            anytun_proxy_node_key(null_mut(), null_mut(), 0, null_mut()),
            anytun_proxy_reload(null_mut(), null()),
        ] {
            assert_eq!(code, sys::ANYTUN_ERR_NULL);
        }
        assert_eq!(anytun_proxy_free(null_mut()), sys::ANYTUN_OK);
        let dir = tempfile::tempdir().unwrap();
        let mut s = Strings::default();
        let mut c = init();
        c.state_dir = s.s(dir.path().to_str().unwrap());
        let p = new_proxy(&c).unwrap();
        let mut st = sys::anytun_proxy_status {
            struct_size: 8,
            ..Default::default()
        };
        assert_eq!(
            anytun_proxy_get_status(p, &mut st),
            sys::ANYTUN_ERR_STRUCT_SIZE
        );
        let mut n = 5;
        assert_eq!(anytun_proxy_peers(p, null_mut(), 0, &mut n), sys::ANYTUN_OK);
        assert_eq!(n, 0, "no peers without sync");
        assert_eq!(anytun_proxy_reload(p, null()), sys::ANYTUN_ERR_NULL);
        assert_eq!(anytun_proxy_free(p), sys::ANYTUN_OK);
    }
}

#[test]
fn long_texts_are_cut_with_an_ellipsis_at_a_character_boundary() {
    let mut buf = [1 as c_char; 8];
    fill_chars_cut(&mut buf, "short");
    // SAFETY: NUL-terminated.
    assert_eq!(
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
        "short"
    );
    // The cut would split the é (bytes 3 and 4): it goes before it.
    fill_chars_cut(&mut buf, "abcéfghij");
    let got = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(got, "abc...");
    fill_chars_cut(&mut buf, "abcdefg");
    assert_eq!(
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
        "abcdefg"
    );
}
