//! Tests of the C ABI from Rust: error paths, hostile arguments, the
//! logger's install and removal, and a call through a real proxy whose
//! host acts from inside its voice callback.

use super::sys;
use super::*;
use proptest::prelude::*;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{null, null_mut};

fn text(p: *const c_char) -> String {
    // SAFETY: the library returns NUL-terminated static strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn last_error() -> String {
    let mut buf = [0 as c_char; 512];
    // SAFETY: buf holds 512 bytes.
    let r = unsafe { anytun_last_error(buf.as_mut_ptr(), buf.len(), null_mut()) };
    assert_eq!(r, sys::ANYTUN_OK);
    text(buf.as_ptr())
}

const ALL_CODES: [c_int; 18] = [
    sys::ANYTUN_OK,
    sys::ANYTUN_ERR_NULL,
    sys::ANYTUN_ERR_INVALID,
    sys::ANYTUN_ERR_BUFFER_TOO_SMALL,
    sys::ANYTUN_ERR_STRUCT_SIZE,
    sys::ANYTUN_ERR_NOT_STARTED,
    sys::ANYTUN_ERR_STOPPED,
    sys::ANYTUN_ERR_ALREADY_STARTED,
    sys::ANYTUN_ERR_NOT_CONNECTED,
    sys::ANYTUN_ERR_UNKNOWN_CALL,
    sys::ANYTUN_ERR_CALL_STATE,
    sys::ANYTUN_ERR_CODEC_NOT_OFFERED,
    sys::ANYTUN_ERR_BACKLOG,
    sys::ANYTUN_ERR_TOO_LARGE,
    sys::ANYTUN_ERR_IO,
    sys::ANYTUN_ERR_IN_CALLBACK,
    sys::ANYTUN_ERR_UNSUPPORTED,
    sys::ANYTUN_ERR_INTERNAL,
];

#[test]
fn every_code_has_its_own_text_and_unknown_codes_say_so() {
    let unknown = text(anytun_strerror(-9999));
    assert_eq!(unknown, "unknown anytun error code");
    assert_eq!(text(anytun_strerror(1)), unknown);
    assert_eq!(text(anytun_strerror(c_int::MIN)), unknown);
    let mut seen = std::collections::HashSet::new();
    for c in ALL_CODES {
        let t = text(anytun_strerror(c));
        assert_ne!(t, unknown, "code {c}");
        assert!(seen.insert(t), "code {c} shares its text");
    }
}

#[test]
fn version_names_the_package_and_the_abi() {
    assert!(text(anytun_version()).starts_with("anytun 0."));
    assert_eq!(anytun_abi_version(), sys::ANYTUN_ABI_VERSION);
}

/// A config with fresh keys towards `proxy`.
fn config(proxy: &CStr, keys: &mut Vec<CString>) -> sys::anytun_client_config {
    let mut cfg = sys::anytun_client_config::default();
    // SAFETY: cfg is a valid struct.
    assert_eq!(unsafe { anytun_client_config_init(&mut cfg) }, 0);
    let secret = CString::new(crate::crypto::SecretKey::generate().to_base64()).unwrap();
    let network = crate::crypto::SecretKey::generate().public().to_base64();
    let network = CString::new(network).unwrap();
    cfg.private_key = secret.as_ptr();
    cfg.network_key = network.as_ptr();
    cfg.proxy = proxy.as_ptr();
    keys.push(secret);
    keys.push(network);
    cfg
}

fn callbacks() -> sys::anytun_client_callbacks {
    let mut cb = sys::anytun_client_callbacks::default();
    // SAFETY: cb is a valid struct.
    assert_eq!(unsafe { anytun_client_callbacks_init(&mut cb) }, 0);
    cb
}

fn new_client(cfg: &sys::anytun_client_config) -> *mut sys::anytun_client {
    let cb = callbacks();
    let mut c = null_mut();
    // SAFETY: valid structs and out pointer.
    let r = unsafe { anytun_client_new(cfg, &cb, &mut c) };
    assert_eq!(r, 0, "{}", last_error());
    c
}

#[test]
fn null_pointers_are_errors_not_crashes() {
    let mut keys = Vec::new();
    let cfg = config(c"127.0.0.1:9", &mut keys);
    let cb = callbacks();
    let nul = null_mut::<sys::anytun_client>();
    let mut out = null_mut();
    let mut id = 0u64;
    let ulaw = [c"ulaw".as_ptr()];
    // SAFETY (all): NULL is what is being tested; other pointers are valid.
    unsafe {
        assert_eq!(
            anytun_client_new(null(), &cb, &mut out),
            sys::ANYTUN_ERR_NULL
        );
        assert!(last_error().contains("cfg is NULL"), "{}", last_error());
        assert_eq!(
            anytun_client_new(&cfg, null(), &mut out),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(
            anytun_client_new(&cfg, &cb, null_mut()),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(anytun_client_start(nul), sys::ANYTUN_ERR_NULL);
        assert_eq!(anytun_client_stop(nul), sys::ANYTUN_ERR_NULL);
        assert_eq!(anytun_client_free(nul), sys::ANYTUN_OK);
        assert_eq!(
            anytun_client_register(nul, c"a".as_ptr(), 1),
            sys::ANYTUN_ERR_NULL
        );
        let r = anytun_client_call(nul, c"a".as_ptr(), null(), ulaw.as_ptr(), 1, &mut id);
        assert_eq!(r, sys::ANYTUN_ERR_NULL);
        assert_eq!(
            anytun_client_answer(nul, 1, c"ulaw".as_ptr()),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(anytun_client_reject(nul, 1, 17), sys::ANYTUN_ERR_NULL);
        assert_eq!(anytun_client_hangup(nul, 1, 16), sys::ANYTUN_ERR_NULL);
        assert_eq!(
            anytun_client_send_voice(nul, 1, 0, 0, [1u8].as_ptr(), 1),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(
            anytun_client_send_dtmf(nul, 1, b'1' as c_char, 100),
            sys::ANYTUN_ERR_NULL
        );
        let mut st = sys::anytun_client_status {
            struct_size: std::mem::size_of::<sys::anytun_client_status>() as u32,
            ..Default::default()
        };
        assert_eq!(anytun_client_get_status(nul, &mut st), sys::ANYTUN_ERR_NULL);
        let mut n = 0usize;
        assert_eq!(
            anytun_client_calls(nul, null_mut(), 0, &mut n),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(anytun_client_config_init(null_mut()), sys::ANYTUN_ERR_NULL);
        assert_eq!(
            anytun_client_callbacks_init(null_mut()),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(
            anytun_public_key(null(), null_mut(), 0, null_mut()),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(
            anytun_keygen(null_mut(), 64, null_mut(), 64, null_mut()),
            sys::ANYTUN_ERR_NULL
        );

        // A live handle, NULLs in the other arguments.
        let c = new_client(&cfg);
        assert_eq!(anytun_client_register(c, null(), 1), sys::ANYTUN_ERR_NULL);
        assert_eq!(
            anytun_client_get_status(c, null_mut()),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(
            anytun_client_calls(c, null_mut(), 0, null_mut()),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(
            anytun_client_public_key(c, null_mut(), 64, null_mut()),
            sys::ANYTUN_ERR_NULL
        );
        assert_eq!(anytun_client_free(c), sys::ANYTUN_OK);
    }
}

#[test]
fn small_buffers_are_errors_with_the_size_needed() {
    let mut keys = Vec::new();
    let cfg = config(c"127.0.0.1:9", &mut keys);
    let c = new_client(&cfg);
    let mut buf = [0x55 as c_char; 64];
    let mut needed = 0usize;
    // SAFETY (all): buffers are as long as stated.
    unsafe {
        let r = anytun_client_public_key(c, buf.as_mut_ptr(), 44, &mut needed);
        assert_eq!(r, sys::ANYTUN_ERR_BUFFER_TOO_SMALL);
        assert_eq!(needed, 45);
        assert!(buf.iter().all(|b| *b == 0x55), "nothing written");
        // NULL with capacity 0 asks for the size.
        needed = 0;
        let r = anytun_client_public_key(c, null_mut(), 0, &mut needed);
        assert_eq!((r, needed), (sys::ANYTUN_ERR_BUFFER_TOO_SMALL, 45));
        let r = anytun_client_public_key(c, buf.as_mut_ptr(), 45, &mut needed);
        assert_eq!(r, sys::ANYTUN_OK);
        assert_eq!(text(buf.as_ptr()).len(), 44);

        let (mut p, mut q) = ([0 as c_char; 64], [0 as c_char; 64]);
        let r = anytun_keygen(p.as_mut_ptr(), 20, q.as_mut_ptr(), 64, &mut needed);
        assert_eq!((r, needed), (sys::ANYTUN_ERR_BUFFER_TOO_SMALL, 53));
        let r = anytun_keygen(p.as_mut_ptr(), 64, q.as_mut_ptr(), 64, &mut needed);
        assert_eq!(r, sys::ANYTUN_OK);
        let mut again = [0 as c_char; 64];
        assert_eq!(
            anytun_public_key(p.as_ptr(), again.as_mut_ptr(), 64, null_mut()),
            0
        );
        assert_eq!(text(again.as_ptr()), text(q.as_ptr()));

        // The error detail itself, into a buffer too small.
        assert_eq!(
            anytun_client_register(c, c"a b".as_ptr(), 1),
            sys::ANYTUN_ERR_INVALID
        );
        let mut small = [0 as c_char; 4];
        let r = anytun_last_error(small.as_mut_ptr(), small.len(), &mut needed);
        assert_eq!(r, sys::ANYTUN_ERR_BUFFER_TOO_SMALL);
        assert_eq!(needed, last_error().len() + 1);
        assert!(last_error().contains("\"a b\""), "{}", last_error());

        let mut n = 7usize;
        assert_eq!(
            anytun_client_calls(c, null_mut(), 0, &mut n),
            sys::ANYTUN_OK
        );
        assert_eq!(n, 0);
        assert_eq!(anytun_client_free(c), sys::ANYTUN_OK);
    }
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    let mut keys = Vec::new();
    let good = config(c"127.0.0.1:9", &mut keys);
    let cb = callbacks();
    let try_new = |cfg: &sys::anytun_client_config| {
        let mut c = null_mut();
        // SAFETY: valid structs.
        let r = unsafe { anytun_client_new(cfg, &cb, &mut c) };
        assert!(c.is_null() || r == 0);
        if r == 0 {
            // SAFETY: a live handle.
            unsafe { anytun_client_free(c) };
        }
        (r, last_error())
    };
    let mut small = good;
    small.struct_size = 8;
    assert_eq!(try_new(&small).0, sys::ANYTUN_ERR_STRUCT_SIZE);
    let mut reserved = good;
    reserved.reserved_u32[3] = 1;
    assert_eq!(try_new(&reserved).0, sys::ANYTUN_ERR_STRUCT_SIZE);
    let mut bad_key = good;
    bad_key.private_key = c"not a key".as_ptr();
    let (r, why) = try_new(&bad_key);
    assert_eq!(r, sys::ANYTUN_ERR_INVALID);
    assert!(why.starts_with("private_key: not a key"), "{why}");
    let mut private_as_network = good;
    private_as_network.network_key = good.private_key;
    let (r, why) = try_new(&private_as_network);
    assert_eq!(r, sys::ANYTUN_ERR_INVALID);
    assert!(why.contains("private key"), "{why}");
    let secret = keys[0].to_str().unwrap();
    assert!(
        !why.contains(&secret[8..]),
        "the key is never quoted: {why}"
    );
    for proxy in [c"nohost", c"h:0", c"h:99999", c":7475", c"a b:1"] {
        let mut p = good;
        p.proxy = proxy.as_ptr();
        assert_eq!(try_new(&p).0, sys::ANYTUN_ERR_INVALID, "{proxy:?}");
    }
    let mut host = good;
    host.proxy = c"localhost:7475".as_ptr();
    assert_eq!(try_new(&host).0, sys::ANYTUN_OK);
    let mut timeout = good;
    timeout.media_timeout_ms = 10;
    assert_eq!(try_new(&timeout).0, sys::ANYTUN_ERR_INVALID);
    let mut calls = good;
    calls.max_calls = 1 << 20;
    assert_eq!(try_new(&calls).0, sys::ANYTUN_ERR_INVALID);
    let mut cbr = cb;
    cbr.reserved0 = 1;
    let mut c = null_mut();
    // SAFETY: valid structs.
    let r = unsafe { anytun_client_new(&good, &cbr, &mut c) };
    assert_eq!((r, c), (sys::ANYTUN_ERR_STRUCT_SIZE, null_mut()));
}

/// ANYTUN_RETRY_FOREVER: the first connection never gives up (driven
/// through 1000 silent retries in simulated time); other values are
/// bounded.
#[test]
fn retry_forever_never_gives_up_and_other_attempt_counts_are_bounded() {
    let mut keys = Vec::new();
    let mut cfg = config(c"127.0.0.1:9", &mut keys);
    cfg.handshake_attempts = 101;
    let (mut c, cb) = (null_mut(), callbacks());
    // SAFETY: valid structs.
    let r = unsafe { anytun_client_new(&cfg, &cb, &mut c) };
    assert_eq!(r, sys::ANYTUN_ERR_INVALID, "{}", last_error());
    cfg.handshake_attempts = sys::ANYTUN_RETRY_FOREVER;
    // SAFETY: the strings of cfg are live.
    let s = unsafe { client::settings_for_test(&cfg) }.unwrap();
    assert_eq!(s.handshake_attempts, u32::MAX);
    let mut core = crate::client::Client::new(s);
    let mut now = std::time::Instant::now();
    core.connect(now, 0);
    for _ in 0..1000 {
        now = core.poll_timeout().expect("still trying");
        core.handle_timeout(now, 0);
        if let Some(e) = core.poll_event() {
            panic!("gave up: {e:?}");
        }
    }
}

#[test]
fn a_handle_refuses_calls_before_start_and_after_stop() {
    let mut keys = Vec::new();
    let cfg = config(c"127.0.0.1:9", &mut keys);
    let c = new_client(&cfg);
    let ulaw = [c"ulaw".as_ptr()];
    let mut id = 0u64;
    // SAFETY (all): a live handle and valid arguments.
    unsafe {
        let r = anytun_client_call(c, c"bob".as_ptr(), null(), ulaw.as_ptr(), 1, &mut id);
        assert_eq!(r, sys::ANYTUN_ERR_NOT_STARTED);
        assert_eq!(anytun_client_hangup(c, 5, 16), sys::ANYTUN_ERR_NOT_STARTED);
        assert_eq!(
            anytun_client_send_voice(c, 5, 0, 0, [1u8].as_ptr(), 1),
            sys::ANYTUN_ERR_NOT_STARTED
        );
        // Kept until connected.
        assert_eq!(
            anytun_client_register(c, c"alice".as_ptr(), 60),
            sys::ANYTUN_OK
        );
        assert_eq!(anytun_client_start(c), sys::ANYTUN_OK);
        assert_eq!(anytun_client_start(c), sys::ANYTUN_ERR_ALREADY_STARTED);
        // Started, but nobody answers at 127.0.0.1:9.
        let r = anytun_client_call(c, c"bob".as_ptr(), null(), ulaw.as_ptr(), 1, &mut id);
        assert_eq!(r, sys::ANYTUN_ERR_NOT_CONNECTED);
        assert_eq!(anytun_client_hangup(c, 5, 16), sys::ANYTUN_ERR_UNKNOWN_CALL);
        // A cause outside 1..=127 is mapped (and counted), not refused:
        // the call ends either way (here: there is none).
        assert_eq!(anytun_client_hangup(c, 5, 0), sys::ANYTUN_ERR_UNKNOWN_CALL);
        assert_eq!(
            anytun_client_hangup(c, 5, 128),
            sys::ANYTUN_ERR_UNKNOWN_CALL
        );
        assert_eq!(anytun_client_stop(c), sys::ANYTUN_OK);
        assert_eq!(anytun_client_stop(c), sys::ANYTUN_OK);
        let r = anytun_client_call(c, c"bob".as_ptr(), null(), ulaw.as_ptr(), 1, &mut id);
        assert_eq!(r, sys::ANYTUN_ERR_STOPPED);
        assert_eq!(
            anytun_client_register(c, c"alice".as_ptr(), 60),
            sys::ANYTUN_ERR_STOPPED
        );
        assert_eq!(
            anytun_client_send_dtmf(c, 5, b'1' as c_char, 100),
            sys::ANYTUN_ERR_STOPPED
        );
        assert_eq!(anytun_client_start(c), sys::ANYTUN_ERR_STOPPED);
        let mut st = sys::anytun_client_status {
            struct_size: std::mem::size_of::<sys::anytun_client_status>() as u32,
            ..Default::default()
        };
        assert_eq!(anytun_client_get_status(c, &mut st), sys::ANYTUN_OK);
        assert_eq!(st.state, sys::ANYTUN_SESSION_STOPPED as c_int);
        assert!(st.local_port > 0);
        st.struct_size = 4;
        assert_eq!(
            anytun_client_get_status(c, &mut st),
            sys::ANYTUN_ERR_STRUCT_SIZE
        );
        assert_eq!(anytun_client_free(c), sys::ANYTUN_OK);
    }
}

/// One export called with arbitrary arguments.
#[derive(Debug, Clone)]
enum Op {
    Register(Option<Vec<u8>>, u32),
    Call(
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<Option<Vec<u8>>>>,
        usize,
    ),
    Answer(u64, Option<Vec<u8>>),
    Reject(u64, c_int),
    Hangup(u64, c_int),
    Voice(u64, Option<Vec<u8>>, usize),
    Dtmf(u64, u8, u16),
    Status(u32),
    Calls(usize),
    PublicKey(usize),
    LastError(usize),
    Strerror(c_int),
    PublicKeyOf(Option<Vec<u8>>, usize),
}

fn bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        prop::collection::vec(prop::sample::select(b"abcz09._+-ulaw".to_vec()), 0..70),
    ])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (bytes(), any::<u32>()).prop_map(|(n, e)| Op::Register(n, e)),
        (
            bytes(),
            bytes(),
            prop::option::of(prop::collection::vec(bytes(), 0..20)),
            0..24usize
        )
            .prop_map(|(t, f, c, n)| Op::Call(t, f, c, n)),
        (any::<u64>(), bytes()).prop_map(|(c, k)| Op::Answer(c, k)),
        (any::<u64>(), any::<c_int>()).prop_map(|(c, k)| Op::Reject(c, k)),
        (any::<u64>(), any::<c_int>()).prop_map(|(c, k)| Op::Hangup(c, k)),
        (any::<u64>(), bytes(), 0..2000usize).prop_map(|(c, p, n)| Op::Voice(c, p, n)),
        (any::<u64>(), any::<u8>(), any::<u16>()).prop_map(|(c, d, m)| Op::Dtmf(c, d, m)),
        any::<u32>().prop_map(Op::Status),
        (0..4usize).prop_map(Op::Calls),
        (0..80usize).prop_map(Op::PublicKey),
        (0..600usize).prop_map(Op::LastError),
        any::<c_int>().prop_map(Op::Strerror),
        (bytes(), 0..80usize).prop_map(|(k, n)| Op::PublicKeyOf(k, n)),
    ]
}

/// A NUL-terminated copy (cut at an inner NUL, as C would see it), or NULL.
fn c_string(b: &Option<Vec<u8>>) -> Option<CString> {
    b.as_ref().map(|v| {
        let end = v.iter().position(|x| *x == 0).unwrap_or(v.len());
        CString::new(&v[..end]).unwrap()
    })
}

fn ptr(c: &Option<CString>) -> *const c_char {
    c.as_ref().map_or(null(), |c| c.as_ptr())
}

/// Runs one operation; buffers are really as long as the lengths passed.
fn run_op(c: *mut sys::anytun_client, op: &Op) -> c_int {
    let mut buf = vec![0 as c_char; 1024];
    let mut needed = 0usize;
    // SAFETY (all): every pointer is NULL or valid for the length passed.
    unsafe {
        match op {
            Op::Register(n, e) => anytun_client_register(c, ptr(&c_string(n)), *e),
            Op::Call(to, from, codecs, n) => {
                let (to, from) = (c_string(to), c_string(from));
                let owned: Option<Vec<Option<CString>>> =
                    codecs.as_ref().map(|v| v.iter().map(c_string).collect());
                let ptrs: Option<Vec<*const c_char>> =
                    owned.as_ref().map(|v| v.iter().map(ptr).collect());
                // Never more entries than the array holds.
                let n = ptrs.as_ref().map_or(*n, |p| (*n).min(p.len()));
                let p = ptrs.as_ref().map_or(null(), |p| p.as_ptr());
                let mut id = 0u64;
                anytun_client_call(c, ptr(&to), ptr(&from), p, n, &mut id)
            }
            Op::Answer(call, k) => anytun_client_answer(c, *call, ptr(&c_string(k))),
            Op::Reject(call, cause) => anytun_client_reject(c, *call, *cause),
            Op::Hangup(call, cause) => anytun_client_hangup(c, *call, *cause),
            Op::Voice(call, p, n) => {
                let (p, n) = match p {
                    Some(v) => (v.as_ptr(), (*n).min(v.len())),
                    None => (null(), *n),
                };
                anytun_client_send_voice(c, *call, 1, 160, p, n)
            }
            Op::Dtmf(call, d, ms) => anytun_client_send_dtmf(c, *call, *d as c_char, *ms),
            Op::Status(size) => {
                let mut st = sys::anytun_client_status::default();
                // Never claim more than the struct really holds.
                st.struct_size = (*size).min(std::mem::size_of_val(&st) as u32);
                anytun_client_get_status(c, &mut st)
            }
            Op::Calls(cap) => {
                let mut out = vec![sys::anytun_call_info::default(); *cap];
                let mut n = 0usize;
                anytun_client_calls(c, out.as_mut_ptr(), *cap, &mut n)
            }
            Op::PublicKey(len) => anytun_client_public_key(c, buf.as_mut_ptr(), *len, &mut needed),
            Op::LastError(len) => anytun_last_error(buf.as_mut_ptr(), *len, &mut needed),
            Op::Strerror(code) => {
                assert!(!anytun_strerror(*code).is_null());
                0
            }
            Op::PublicKeyOf(k, len) => {
                anytun_public_key(ptr(&c_string(k)), buf.as_mut_ptr(), *len, &mut needed)
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary arguments (random bytes, lengths, NULLs) on a handle before
    /// start, started towards a silent address, and stopped: each call
    /// returns a defined code and none ends in a contained panic.
    #[test]
    fn arbitrary_arguments_never_panic(ops in prop::collection::vec(op(), 1..40), start in any::<bool>()) {
        let mut keys = Vec::new();
        let cfg = config(c"127.0.0.1:9", &mut keys);
        let c = new_client(&cfg);
        // SAFETY: a live handle.
        if start {
            prop_assert_eq!(unsafe { anytun_client_start(c) }, 0);
        }
        for (i, op) in ops.iter().enumerate() {
            if i == ops.len() / 2 {
                // SAFETY: a live handle.
                prop_assert_eq!(unsafe { anytun_client_stop(c) }, 0);
            }
            let r = run_op(c, op);
            prop_assert!(ALL_CODES.contains(&r), "{:?} gave {}", op, r);
            prop_assert_ne!(r, sys::ANYTUN_ERR_INTERNAL, "{:?}: {}", op, last_error());
        }
        // SAFETY: a live handle, last use.
        prop_assert_eq!(unsafe { anytun_client_free(c) }, 0);
    }
}

/// What the test logger saw.
struct LogSeen {
    lines: std::sync::Mutex<Vec<String>>,
    reentered: std::sync::Mutex<Option<c_int>>,
    /// The callback, on "ffi-logger-test block": says it entered, then
    /// waits until released.
    entered: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

unsafe extern "C" fn test_log(
    user: *mut c_void,
    level: c_int,
    _t: *const c_char,
    msg: *const c_char,
) {
    // SAFETY: user is the LogSeen of the test, alive while installed.
    let seen = unsafe { &*(user as *const LogSeen) };
    let msg = text(msg);
    if msg.contains("ffi-logger-test block") {
        seen.entered.send(()).unwrap();
        seen.release.lock().unwrap().recv().unwrap();
        seen.lines.lock().unwrap().push("released".into());
        return;
    }
    if msg.contains("ffi-logger-test") {
        seen.lines.lock().unwrap().push(format!("{level} {msg}"));
        // Re-entering: logging is dropped, re-installing is refused.
        log::error!("ffi-logger-test from inside the callback");
        // SAFETY: called from inside the callback on purpose.
        let r = unsafe { anytun_set_logger(Some(test_log), user, 3) };
        *seen.reentered.lock().unwrap() = Some(r);
    }
}

/// Held by every test that installs a logger (it is process-wide).
pub(super) static LOGGER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_logger_installs_removes_and_reinstalls() {
    let _one = LOGGER.lock().unwrap_or_else(|e| e.into_inner());
    let (entered, entered_rx) = std::sync::mpsc::sync_channel(1);
    let (release_tx, release) = std::sync::mpsc::sync_channel(1);
    let seen = Box::new(LogSeen {
        lines: std::sync::Mutex::new(Vec::new()),
        reentered: std::sync::Mutex::new(None),
        entered,
        release: std::sync::Mutex::new(release),
    });
    let user = &*seen as *const LogSeen as *mut c_void;
    let mine = |s: &LogSeen| s.lines.lock().unwrap().clone();
    // SAFETY (all): test_log has the header's type; seen outlives it.
    unsafe {
        assert_eq!(
            anytun_set_logger(Some(test_log), user, 99),
            sys::ANYTUN_ERR_INVALID
        );
        for round in 0..3 {
            assert_eq!(
                anytun_set_logger(Some(test_log), user, sys::ANYTUN_LOG_INFO as c_int),
                0
            );
            log::info!("ffi-logger-test {round} info");
            log::debug!("ffi-logger-test {round} debug is filtered");
            assert_eq!(anytun_set_logger(None, null_mut(), 0), 0);
            log::error!("ffi-logger-test {round} after removal");
        }
    }
    assert_eq!(
        mine(&seen),
        [
            "3 ffi-logger-test 0 info",
            "3 ffi-logger-test 1 info",
            "3 ffi-logger-test 2 info"
        ]
    );
    assert_eq!(
        *seen.reentered.lock().unwrap(),
        Some(sys::ANYTUN_ERR_IN_CALLBACK)
    );

    // Removal waits for a call of the callback that is running: after it
    // returns, the host may unload the callback's code.
    // SAFETY: as above.
    let r = unsafe { anytun_set_logger(Some(test_log), user, sys::ANYTUN_LOG_INFO as c_int) };
    assert_eq!(r, 0);
    let logging = std::thread::spawn(|| log::info!("ffi-logger-test block"));
    entered_rx.recv().unwrap();
    let removed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let remover = {
        let removed = removed.clone();
        std::thread::spawn(move || {
            // SAFETY: removing takes no pointer.
            let r = unsafe { anytun_set_logger(None, null_mut(), 0) };
            removed.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        })
    };
    // Time for a removal that does not wait to show itself.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !removed.load(std::sync::atomic::Ordering::SeqCst),
        "removal returned while the callback ran"
    );
    seen.lines.lock().unwrap().clear();
    release_tx.send(()).unwrap();
    assert_eq!(remover.join().unwrap(), 0);
    logging.join().unwrap();
    assert_eq!(mine(&seen), ["released"]);
}

#[cfg(feature = "daemon")]
pub(super) mod call {
    //! A call through a real proxy (tokio shell, UDP on loopback) between
    //! two C-ABI clients whose callbacks act from inside.
    use super::*;
    use crate::crypto::SecretKey;
    use crate::proxy::{Proxy, ProxyConfig};
    use crate::runtime::proxy::ProxyRuntime;
    use crate::session::{EpochLease, ProxyId};
    use crate::store::SubscriberStore;
    use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// A host: what its callbacks saw, and what they did.
    #[derive(Default)]
    pub(in crate::ffi) struct Host {
        pub(in crate::ffi) client: AtomicPtr<sys::anytun_client>,
        log: Mutex<Vec<String>>,
        changed: Condvar,
        frames: AtomicU32,
        /// Return codes of calls made from inside callbacks.
        inside: Mutex<Vec<(String, c_int)>>,
        /// Hang up from inside the voice callback after this many frames.
        hangup_after: u32,
    }

    impl Host {
        fn push(&self, s: String) {
            self.log.lock().unwrap().push(s);
            self.changed.notify_all();
        }

        pub(in crate::ffi) fn wait_for(&self, what: &str) {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut log = self.log.lock().unwrap();
            while !log.iter().any(|l| l.contains(what)) {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "no {what:?} in {:?}", *log);
                log = self.changed.wait_timeout(log, left).unwrap().0;
            }
        }

        fn inside(&self, what: &str, r: c_int) {
            self.inside.lock().unwrap().push((what.to_owned(), r));
        }
    }

    fn host(user: *mut c_void) -> &'static Host {
        // SAFETY: the tests' Host outlives its client.
        unsafe { &*(user as *const Host) }
    }

    unsafe extern "C" fn on_session(user: *mut c_void, state: c_int, _e: c_int, _d: *const c_char) {
        host(user).push(format!("session {state}"));
    }

    unsafe extern "C" fn on_registration(
        user: *mut c_void,
        name: *const c_char,
        ok: c_int,
        exp: u32,
    ) {
        host(user).push(format!("registered {} {ok} {exp}", text(name)));
    }

    unsafe extern "C" fn on_incoming(
        user: *mut c_void,
        call: u64,
        from: *const c_char,
        _to: *const c_char,
        codecs: *const *const c_char,
        n: usize,
    ) {
        let h = host(user);
        // SAFETY: n codec strings, valid during the callback.
        let first = text(unsafe { *codecs });
        h.push(format!(
            "incoming {call} from {} {first} of {n}",
            text(from)
        ));
        // Answer from inside the callback.
        let c = h.client.load(Ordering::Acquire);
        // SAFETY: the live handle this callback belongs to.
        let r = unsafe { anytun_client_answer(c, call, c"slin".as_ptr()) };
        h.inside("answer", r);
        // Stopping or freeing one's own handle here would deadlock.
        // SAFETY: as above.
        h.inside("stop", unsafe { anytun_client_stop(c) });
        // SAFETY: as above.
        h.inside("free", unsafe { anytun_client_free(c) });
    }

    unsafe extern "C" fn on_call_state(
        user: *mut c_void,
        call: u64,
        ev: c_int,
        cause: c_int,
        codec: *const c_char,
    ) {
        host(user).push(format!(
            "call {call} event {ev} cause {cause} codec {}",
            text(codec)
        ));
    }

    unsafe extern "C" fn on_voice(
        user: *mut c_void,
        call: u64,
        seq: u32,
        _ts: u32,
        p: *const u8,
        n: usize,
    ) {
        let h = host(user);
        // SAFETY: n bytes valid during the callback.
        let frame = unsafe { std::slice::from_raw_parts(p, n) };
        assert!(
            frame.iter().all(|b| *b == seq as u8),
            "frame {seq} is what was sent"
        );
        let got = h.frames.fetch_add(1, Ordering::AcqRel) + 1;
        if got == h.hangup_after {
            let c = h.client.load(Ordering::Acquire);
            let mut st = sys::anytun_client_status {
                struct_size: std::mem::size_of::<sys::anytun_client_status>() as u32,
                ..Default::default()
            };
            // SAFETY (all): the live handle this callback belongs to.
            let mut info = [sys::anytun_call_info::default(); 2];
            let mut n = 0usize;
            // SAFETY (all): the live handle this callback belongs to.
            unsafe {
                h.inside("status", anytun_client_get_status(c, &mut st));
                h.inside(
                    "calls",
                    anytun_client_calls(c, info.as_mut_ptr(), 2, &mut n),
                );
                h.inside("dtmf", anytun_client_send_dtmf(c, call, b'7' as c_char, 80));
                h.inside("hangup", anytun_client_hangup(c, call, 16));
            }
            let observed = text(st.observed.as_ptr());
            h.push(format!(
                "status state {} proxy {} session {} names {} observed {} frames in {}",
                st.state,
                st.proxy_id,
                st.session_id != 0,
                st.names,
                observed.starts_with("127.0.0.1:"),
                st.frames_received > 0
            ));
            let i = &info[0];
            h.push(format!(
                "calls {n}: {} dir {} state {} peer {} codec {}",
                i.call == call,
                i.direction,
                i.state,
                text(i.peer.as_ptr()),
                text(i.codec.as_ptr())
            ));
            h.push(format!("hung up {call} with {} calls", st.calls));
        }
    }

    unsafe extern "C" fn on_dtmf(user: *mut c_void, call: u64, digit: c_char, ms: u16) {
        host(user).push(format!("dtmf {call} {} {ms}", digit as u8 as char));
    }

    pub(in crate::ffi) fn start(host: &Host, secret: &str, network: &str, proxy: &str) {
        let (secret, network, proxy) = (
            CString::new(secret).unwrap(),
            CString::new(network).unwrap(),
            CString::new(proxy).unwrap(),
        );
        let mut cfg = sys::anytun_client_config::default();
        let mut cb = callbacks();
        cb.user = host as *const Host as *mut c_void;
        cb.on_session = Some(on_session);
        cb.on_registration = Some(on_registration);
        cb.on_incoming_call = Some(on_incoming);
        cb.on_call_state = Some(on_call_state);
        cb.on_voice = Some(on_voice);
        cb.on_dtmf = Some(on_dtmf);
        let mut c = null_mut();
        // SAFETY (all): valid structs; strings live across new().
        unsafe {
            anytun_client_config_init(&mut cfg);
            cfg.private_key = secret.as_ptr();
            cfg.network_key = network.as_ptr();
            cfg.proxy = proxy.as_ptr();
            assert_eq!(anytun_client_new(&cfg, &cb, &mut c), 0, "{}", last_error());
            host.client.store(c, Ordering::Release);
            assert_eq!(anytun_client_start(c), 0, "{}", last_error());
        }
    }

    /// A proxy on loopback (the tokio shell, an ephemeral epoch lease)
    /// with alice and bob as its subscribers.
    struct Loopback {
        proxy: ProxyRuntime,
        ka: SecretKey,
        kb: SecretKey,
        /// The network public key, base64.
        net: String,
        /// Its UDP address.
        addr: String,
    }

    fn loopback_proxy(rt: &tokio::runtime::Runtime) -> Loopback {
        let network = SecretKey::generate();
        let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
        let store = SubscriberStore::open_in_memory().unwrap();
        store.add("alice", &ka.public().0).unwrap();
        store.add("bob", &kb.public().0).unwrap();
        let id = ProxyId::new(1).unwrap();
        let core = Proxy::new(
            ProxyConfig::new(id, network.clone()),
            store.snapshot().unwrap(),
            Instant::now(),
        );
        core.epochs().grant(EpochLease::ephemeral());
        let proxy = rt
            .block_on(ProxyRuntime::start(core, &["127.0.0.1:0".parse().unwrap()]))
            .unwrap();
        let addr = proxy.local_addrs()[0].to_string();
        Loopback {
            proxy,
            ka,
            kb,
            net: network.public().to_base64(),
            addr,
        }
    }

    /// Starts alice's and bob's clients (keys `ka`, `kb`) on the proxy at
    /// `addr` of network `net`, registers bob and waits until alice's
    /// session is up: their handles (freed by the caller).
    pub(in crate::ffi) fn connect(
        alice: &Host,
        bob: &Host,
        ka: &SecretKey,
        kb: &SecretKey,
        net: &str,
        addr: &str,
    ) -> (*mut sys::anytun_client, *mut sys::anytun_client) {
        start(alice, &ka.to_base64(), net, addr);
        start(bob, &kb.to_base64(), net, addr);
        let (a, b) = (
            alice.client.load(Ordering::Acquire),
            bob.client.load(Ordering::Acquire),
        );
        // SAFETY: a live handle.
        assert_eq!(
            unsafe { anytun_client_register(b, c"bob".as_ptr(), 300) },
            0
        );
        bob.wait_for("registered bob 1");
        alice.wait_for(&format!("session {}", sys::ANYTUN_SESSION_CONNECTED));
        (a, b)
    }

    /// The host hangs up with causes outside Q.850 (200, 0, -1): each is
    /// sent as a defined cause (127, 16, 127), which the far end's
    /// on_call_state reports, and counted in the status.
    #[test]
    fn a_host_s_out_of_range_cause_is_sent_as_a_defined_one_and_counted() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let l = loopback_proxy(&rt);
        let (alice, bob) = (Host::default(), Host::default());
        let (a, b) = connect(&alice, &bob, &l.ka, &l.kb, &l.net, &l.addr);
        let mapped = |c| {
            let mut st = sys::anytun_client_status {
                struct_size: std::mem::size_of::<sys::anytun_client_status>() as u32,
                ..Default::default()
            };
            // SAFETY: a live handle.
            assert_eq!(unsafe { anytun_client_get_status(c, &mut st) }, 0);
            st.causes_out_of_range
        };
        // SAFETY (all): live handles.
        unsafe {
            let codecs = [c"slin".as_ptr()];
            for (n, (given, sent)) in [(200, 127), (0, 16), (-1, 127)].into_iter().enumerate() {
                let mut call = 0u64;
                let r =
                    anytun_client_call(a, c"bob".as_ptr(), null(), codecs.as_ptr(), 1, &mut call);
                assert_eq!(r, 0, "{}", last_error());
                alice.wait_for(&format!(
                    "call {call} event {} cause 0",
                    sys::ANYTUN_CALL_ANSWERED
                ));
                assert_eq!(anytun_client_hangup(a, call, given), 0, "{given}");
                bob.wait_for(&format!(
                    "call {call} event {} cause {sent} codec",
                    sys::ANYTUN_CALL_ENDED
                ));
                assert_eq!(mapped(a), n as u64 + 1, "{given}");
            }
            assert_eq!(mapped(b), 0);
            assert_eq!(anytun_client_free(a), 0);
            assert_eq!(anytun_client_free(b), 0);
        }
        l.proxy.shutdown();
    }

    /// bob answers from inside on_incoming_call, and from inside on_voice
    /// reads the status, sends a digit and hangs up: nothing deadlocks,
    /// stop and free are refused there, and both sides see the ending.
    #[test]
    fn callbacks_act_on_the_client_without_deadlock() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let l = loopback_proxy(&rt);

        let alice = Host::default();
        let bob = Host {
            hangup_after: 5,
            ..Host::default()
        };
        let (a, b) = connect(&alice, &bob, &l.ka, &l.kb, &l.net, &l.addr);
        // SAFETY (all): live handles.
        unsafe {
            let codecs = [c"g722".as_ptr(), c"slin".as_ptr()];
            let mut call = 0u64;
            let r = anytun_client_call(a, c"bob".as_ptr(), null(), codecs.as_ptr(), 2, &mut call);
            assert_eq!(r, 0, "{}", last_error());
            alice.wait_for(&format!(
                "call {call} event {} cause 0 codec slin",
                sys::ANYTUN_CALL_ANSWERED
            ));
            bob.wait_for(&format!("incoming {call} from alice g722 of 2"));
            for seq in 0..40u32 {
                let frame = [seq as u8; 320];
                let r =
                    anytun_client_send_voice(a, call, seq, seq * 160, frame.as_ptr(), frame.len());
                if r == sys::ANYTUN_ERR_UNKNOWN_CALL {
                    break;
                }
                assert_eq!(r, 0, "{}", last_error());
                std::thread::sleep(Duration::from_millis(5));
            }
            alice.wait_for(&format!(
                "call {call} event {} cause 16",
                sys::ANYTUN_CALL_ENDED
            ));
            alice.wait_for(&format!("dtmf {call} 7 80"));
            bob.wait_for(&format!("hung up {call} with 1 calls"));
            bob.wait_for(&format!(
                "status state {} proxy 1 session true names 1 observed true frames in true",
                sys::ANYTUN_SESSION_CONNECTED
            ));
            bob.wait_for(&format!(
                "calls 1: true dir {} state {} peer alice codec slin",
                sys::ANYTUN_CALL_INCOMING,
                sys::ANYTUN_PHASE_ACTIVE
            ));
            let inside = bob.inside.lock().unwrap().clone();
            let expect = [
                ("answer", 0),
                ("stop", sys::ANYTUN_ERR_IN_CALLBACK),
                ("free", sys::ANYTUN_ERR_IN_CALLBACK),
                ("status", 0),
                ("calls", 0),
                ("dtmf", 0),
                ("hangup", 0),
            ];
            let expect: Vec<(String, c_int)> =
                expect.iter().map(|(w, r)| (w.to_string(), *r)).collect();
            assert_eq!(inside, expect);
            assert_eq!(anytun_client_free(a), 0);
            assert_eq!(anytun_client_free(b), 0);
        }
        alice.wait_for(&format!("session {}", sys::ANYTUN_SESSION_STOPPED));
        l.proxy.shutdown();
    }
}
