//! The client handle's exports (`anytun_client_*`).

use super::driver::{self, Callbacks, Link, Shared};
use super::errors::{guard, FfiError};
use super::{fill_chars, opt_str_arg, str_arg, sys, write_str};
use crate::call::{Cause, Name};
use crate::client::{CallDirection, Client, ClientConfig, ClientError};
use crate::crypto::{PublicKey, SecretKey};
use crate::session::CallId;
use std::ffi::{c_char, c_int};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most calls a handle may be configured for.
const MAX_CALLS_LIMIT: u32 = 4096;
/// Most handshake attempts a handle may be configured for.
const MAX_HANDSHAKE_ATTEMPTS: u32 = 100;
/// Longest stop timeout, milliseconds.
const MAX_STOP_TIMEOUT_MS: u32 = 60_000;
/// Longest keepalive, seconds.
const MAX_KEEPALIVE_S: u32 = 3600;

/// An `anytun_client`: the opaque handle the host holds.
pub struct AnytunClient {
    shared: Arc<Shared>,
    callbacks: Callbacks,
    proxy: String,
    bind: Option<SocketAddr>,
    stop_timeout: Duration,
    /// The thread, while running.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Serialises stops, so that every stop returns after the thread ended.
    stop_lock: Mutex<()>,
}

/// Reads a caller's struct whose first field is its `struct_size`: checks
/// that size before reading the whole struct.
///
/// # Safety
/// `p` must be NULL or point to a readable struct of at least the size its
/// first `u32` states.
pub(crate) unsafe fn read_sized<T: Copy>(p: *const T, what: &'static str) -> Result<T, FfiError> {
    if p.is_null() {
        return Err(FfiError::Null(what));
    }
    // SAFETY: every such struct starts with a u32 struct_size.
    let size = unsafe { p.cast::<u32>().read_unaligned() };
    let min = std::mem::size_of::<T>();
    if (size as usize) < min {
        return Err(FfiError::StructSize {
            what,
            got: size,
            min,
        });
    }
    // SAFETY: the caller says the struct holds `size` >= size_of::<T>() bytes.
    Ok(unsafe { p.read_unaligned() })
}

/// What `anytun_client_new` checks in a config.
struct Settings {
    client: ClientConfig,
    proxy: String,
    bind: Option<SocketAddr>,
    stop_timeout: Duration,
}

fn nonzero_or(v: u32, default: u32, max: u32, what: &'static str) -> Result<u32, FfiError> {
    match v {
        0 => Ok(default),
        v if v <= max => Ok(v),
        v => Err(FfiError::invalid(
            what,
            format!("{v} is above the limit {max}"),
        )),
    }
}

/// Checks "HOST:PORT" / "IP:PORT" / "[IPv6]:PORT" without resolving.
fn check_proxy(text: &str) -> Result<(), FfiError> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = |why: &str| FfiError::invalid("proxy", format!("{text:?}: {why}"));
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("the port is not 1..65535"))?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("expected HOST:PORT"));
    }
    Ok(())
}

/// # Safety
/// The strings in `c` must be NULL or NUL-terminated.
unsafe fn settings(c: &sys::anytun_client_config) -> Result<Settings, FfiError> {
    const WHAT: &str = "anytun_client_config";
    if c.flags != 0 {
        return Err(FfiError::Reserved {
            what: WHAT,
            field: "flags",
        });
    }
    if c.reserved_u32.iter().any(|v| *v != 0) {
        return Err(FfiError::Reserved {
            what: WHAT,
            field: "reserved_u32",
        });
    }
    if c.reserved_ptr.iter().any(|p| !p.is_null()) {
        return Err(FfiError::Reserved {
            what: WHAT,
            field: "reserved_ptr",
        });
    }
    // SAFETY (the three reads): the caller's promise on the strings.
    let secret = unsafe { str_arg(c.private_key, "private_key") }?;
    // The error names what is wrong, never the key.
    let secret = SecretKey::from_base64(secret).map_err(|e| FfiError::invalid("private_key", e))?;
    let network = unsafe { str_arg(c.network_key, "network_key") }?;
    let network =
        PublicKey::from_base64(network).map_err(|e| FfiError::invalid("network_key", e))?;
    let proxy = unsafe { str_arg(c.proxy, "proxy") }?.to_owned();
    check_proxy(&proxy)?;
    // SAFETY: as above.
    let bind = match unsafe { opt_str_arg(c.bind, "bind") }? {
        None => None,
        Some(b) => Some(
            b.parse::<SocketAddr>()
                .map_err(|e| FfiError::invalid("bind", format!("{b:?}: {e} (expected IP:PORT)")))?,
        ),
    };
    let mut client = ClientConfig::new(secret, network);
    if c.keepalive_s > 0 {
        let s = nonzero_or(c.keepalive_s, 0, MAX_KEEPALIVE_S, "keepalive_s")?;
        client.keepalive = Some(Duration::from_secs(u64::from(s)));
    }
    if c.media_timeout_ms > 0 {
        if c.media_timeout_ms < 1000 {
            return Err(FfiError::invalid(
                "media_timeout_ms",
                format!(
                    "{} is below 1000 (calls send keepalives every second)",
                    c.media_timeout_ms
                ),
            ));
        }
        client.media_timeout = Duration::from_millis(u64::from(c.media_timeout_ms));
        // Keepalives well inside the timeout, so a quiet side is not dead.
        client.call_keepalive = client.call_keepalive.min(client.media_timeout / 3);
    }
    client.max_calls = nonzero_or(c.max_calls, 16, MAX_CALLS_LIMIT, "max_calls")? as usize;
    client.handshake_attempts = match c.handshake_attempts {
        sys::ANYTUN_RETRY_FOREVER => u32::MAX,
        n => nonzero_or(n, 4, MAX_HANDSHAKE_ATTEMPTS, "handshake_attempts")?,
    };
    let stop_ms = nonzero_or(
        c.stop_timeout_ms,
        2000,
        MAX_STOP_TIMEOUT_MS,
        "stop_timeout_ms",
    )?;
    Ok(Settings {
        client,
        proxy,
        bind,
        stop_timeout: Duration::from_millis(u64::from(stop_ms)),
    })
}

/// The core config `anytun_client_new` makes of `c`, for tests.
///
/// # Safety
/// As [`settings`].
#[cfg(test)]
pub(crate) unsafe fn settings_for_test(
    c: &sys::anytun_client_config,
) -> Result<ClientConfig, FfiError> {
    // SAFETY: forwarded.
    unsafe { settings(c) }.map(|s| s.client)
}

fn check_callbacks(cb: &sys::anytun_client_callbacks) -> Result<(), FfiError> {
    const WHAT: &str = "anytun_client_callbacks";
    if cb.reserved0 != 0 {
        return Err(FfiError::Reserved {
            what: WHAT,
            field: "reserved0",
        });
    }
    if cb.reserved_fn.iter().any(|f| f.is_some()) {
        return Err(FfiError::Reserved {
            what: WHAT,
            field: "reserved_fn",
        });
    }
    Ok(())
}

impl AnytunClient {
    /// Runs a host action on the core, then sends what it queued and wakes
    /// the thread (timers may have changed).
    fn act<R>(
        &self,
        f: impl FnOnce(&mut Client, Instant) -> Result<R, ClientError>,
    ) -> Result<R, FfiError> {
        let (r, pkts) = {
            let mut core = self.shared.lock();
            if core.stopping {
                return Err(FfiError::Stopped);
            }
            if !core.started {
                return Err(FfiError::NotStarted);
            }
            let r = f(&mut core.client, Instant::now());
            (r, driver::drain(&mut core.client))
        };
        if let Some(link) = self.shared.link.get() {
            link.send_all(&pkts);
            link.wake();
        }
        Ok(r?)
    }

    fn start(&self) -> Result<(), FfiError> {
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        {
            let core = self.shared.lock();
            if core.stopping {
                return Err(FfiError::Stopped);
            }
            if core.started {
                return Err(FfiError::AlreadyStarted);
            }
        }
        let io = |what: String| move |source| FfiError::Io { what, source };
        let proxy = self
            .proxy
            .to_socket_addrs()
            .map_err(io(format!("resolving the proxy {}", self.proxy)))?
            .next()
            .ok_or_else(|| FfiError::Io {
                what: format!("resolving the proxy {}", self.proxy),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        let bind = self.bind.unwrap_or_else(|| {
            let any = if proxy.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            any.parse().expect("literal")
        });
        let socket = UdpSocket::bind(bind).map_err(io(format!("binding UDP {bind}")))?;
        let link = Link::new(socket, proxy).map_err(io("setting up the socket".into()))?;
        if self.shared.link.set(link).is_err() {
            return Err(FfiError::AlreadyStarted);
        }
        {
            let mut core = self.shared.lock();
            core.started = true;
            core.state = sys::ANYTUN_SESSION_CONNECTING as c_int;
            core.client.connect(Instant::now(), driver::unix_nanos());
        }
        let (shared, cb, stop) = (self.shared.clone(), self.callbacks, self.stop_timeout);
        let spawned = std::thread::Builder::new()
            .name("anytun-client".into())
            .spawn(move || {
                // A bug in the core ends the thread, not the host.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    driver::run(shared.clone(), cb, stop)
                }));
                if r.is_err() {
                    log::error!("internal error: the client thread panicked and stopped");
                    let mut core = shared.lock();
                    core.stopping = true;
                    core.state = sys::ANYTUN_SESSION_STOPPED as c_int;
                }
            })
            .map_err(io("starting the client thread".into()))?;
        *thread = Some(spawned);
        Ok(())
    }

    fn stop(&self) -> Result<(), FfiError> {
        if driver::on_own_thread(&self.shared) {
            return Err(FfiError::InCallback("anytun_client_stop/free"));
        }
        let _serial = self.stop_lock.lock().unwrap_or_else(|e| e.into_inner());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (thread, self.shared.link.get()) {
            (Some(t), Some(link)) => {
                link.stop.store(true, Ordering::Release);
                link.wake();
                if t.join().is_err() {
                    return Err(FfiError::Internal("the client thread panicked".into()));
                }
            }
            _ => {
                let mut core = self.shared.lock();
                core.stopping = true;
                core.state = sys::ANYTUN_SESSION_STOPPED as c_int;
            }
        }
        Ok(())
    }
}

/// The handle behind a pointer.
///
/// # Safety
/// `p` must be NULL or a handle from `anytun_client_new` not yet freed.
unsafe fn handle<'a>(p: *mut AnytunClient) -> Result<&'a AnytunClient, FfiError> {
    // SAFETY: the caller's promise.
    unsafe { p.as_ref() }.ok_or(FfiError::Null("client"))
}

/// The cause a host passed: a Q.850 cause (1..=127) as is; anything else
/// is taken as the defined cause [`Cause::from_code`] maps it to (0: 16,
/// else 127), counted in the status's `causes_out_of_range` and logged.
/// Never an error: the call ends either way.
fn cause_arg(h: &AnytunClient, cause: c_int) -> Cause {
    Cause::from_code(cause).unwrap_or_else(|e| {
        h.shared.causes_out_of_range.fetch_add(1, Ordering::Relaxed);
        log::warn!("cause from the host: {e}");
        e.mapped
    })
}

fn name_arg(s: &str, what: &'static str) -> Result<Name, FfiError> {
    Name::new(s).map_err(|e| FfiError::invalid(what, format!("{s:?}: {e}")))
}

fn codec_arg(s: &str) -> Result<String, FfiError> {
    let ok = !s.is_empty()
        && s.len() <= crate::wire::control::MAX_CODEC_NAME
        && s.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(FfiError::invalid(
            "codec",
            format!("{s:?} is not a codec name (1..32 printable ASCII characters)"),
        ))
    }
}

/// `anytun_client_config_init`: see include/anytun.h.
///
/// # Safety
/// `cfg` must be NULL or point to a writable `anytun_client_config`.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_config_init(cfg: *mut sys::anytun_client_config) -> c_int {
    guard(|| {
        if cfg.is_null() {
            return Err(FfiError::Null("cfg"));
        }
        let v = sys::anytun_client_config {
            struct_size: std::mem::size_of::<sys::anytun_client_config>() as u32,
            ..Default::default()
        };
        // SAFETY: writable by the caller's promise.
        unsafe { cfg.write_unaligned(v) };
        Ok(())
    })
}

/// `anytun_client_callbacks_init`: see include/anytun.h.
///
/// # Safety
/// `cb` must be NULL or point to a writable `anytun_client_callbacks`.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_callbacks_init(
    cb: *mut sys::anytun_client_callbacks,
) -> c_int {
    guard(|| {
        if cb.is_null() {
            return Err(FfiError::Null("cb"));
        }
        let v = sys::anytun_client_callbacks {
            struct_size: std::mem::size_of::<sys::anytun_client_callbacks>() as u32,
            ..Default::default()
        };
        // SAFETY: writable by the caller's promise.
        unsafe { cb.write_unaligned(v) };
        Ok(())
    })
}

/// `anytun_client_new`: see include/anytun.h.
///
/// # Safety
/// `cfg` and `cb` must be NULL or point to their structs (of at least the
/// size their `struct_size` states); `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_new(
    cfg: *const sys::anytun_client_config,
    cb: *const sys::anytun_client_callbacks,
    out: *mut *mut sys::anytun_client,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(FfiError::Null("out"));
        }
        // SAFETY: writable by the caller's promise.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY (both reads): the caller's promise.
        let c = unsafe { read_sized(cfg, "cfg") }?;
        let callbacks = unsafe { read_sized(cb, "cb") }?;
        check_callbacks(&callbacks)?;
        // SAFETY: the caller's promise on the config's strings.
        let s = unsafe { settings(&c) }?;
        let handle = Box::new(AnytunClient {
            shared: Arc::new(Shared::new(s.client)),
            callbacks: Callbacks(callbacks),
            proxy: s.proxy,
            bind: s.bind,
            stop_timeout: s.stop_timeout,
            thread: Mutex::new(None),
            stop_lock: Mutex::new(()),
        });
        // SAFETY: as above.
        unsafe { *out = Box::into_raw(handle).cast() };
        Ok(())
    })
}

/// `anytun_client_start`: see include/anytun.h.
///
/// # Safety
/// `client` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_start(client: *mut sys::anytun_client) -> c_int {
    // SAFETY: the caller's promise.
    guard(|| unsafe { handle(client.cast()) }?.start())
}

/// `anytun_client_stop`: see include/anytun.h.
///
/// # Safety
/// `client` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_stop(client: *mut sys::anytun_client) -> c_int {
    // SAFETY: the caller's promise.
    guard(|| unsafe { handle(client.cast()) }?.stop())
}

/// `anytun_client_free`: see include/anytun.h.
///
/// # Safety
/// `client` must be NULL or a live handle, not used again after success.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_free(client: *mut sys::anytun_client) -> c_int {
    guard(|| {
        let p: *mut AnytunClient = client.cast();
        if p.is_null() {
            return Ok(());
        }
        // SAFETY: the caller's promise.
        unsafe { handle(p) }?.stop()?;
        // SAFETY: from Box::into_raw in anytun_client_new; the thread has
        // ended, so nothing else holds the handle.
        drop(unsafe { Box::from_raw(p) });
        Ok(())
    })
}

/// `anytun_client_register`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_register(
    client: *mut sys::anytun_client,
    name: *const c_char,
    expires_s: u32,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        // SAFETY: the caller's promise.
        let name = name_arg(unsafe { str_arg(name, "name") }?, "name")?;
        let pkts = {
            let mut core = h.shared.lock();
            if core.stopping {
                return Err(FfiError::Stopped);
            }
            // Before start the core keeps it and sends it once connected.
            core.client.register(Instant::now(), name, expires_s);
            driver::drain(&mut core.client)
        };
        if let Some(link) = h.shared.link.get() {
            link.send_all(&pkts);
            link.wake();
        }
        Ok(())
    })
}

/// `anytun_client_call`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle; `to`, `from` NULL or NUL-terminated;
/// `codecs` NULL or `n_codecs` pointers to NUL-terminated strings; `call`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_call(
    client: *mut sys::anytun_client,
    to: *const c_char,
    from: *const c_char,
    codecs: *const *const c_char,
    n_codecs: usize,
    call: *mut u64,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise, for every pointer below.
        let h = unsafe { handle(client.cast()) }?;
        if call.is_null() {
            return Err(FfiError::Null("call"));
        }
        let to = name_arg(unsafe { str_arg(to, "to") }?, "to")?;
        let from = match unsafe { opt_str_arg(from, "from") }? {
            Some(f) => Some(name_arg(f, "from")?),
            None => None,
        };
        if codecs.is_null() {
            return Err(FfiError::Null("codecs"));
        }
        if n_codecs == 0 || n_codecs > crate::wire::control::MAX_CODECS {
            return Err(FfiError::invalid(
                "n_codecs",
                format!("{n_codecs}: an offer holds 1..16 codecs"),
            ));
        }
        let mut offer = Vec::with_capacity(n_codecs);
        for i in 0..n_codecs {
            let p = unsafe { *codecs.add(i) };
            offer.push(codec_arg(unsafe { str_arg(p, "codecs[i]") }?)?);
        }
        let id = h.act(|c, now| c.call(now, to, from, offer))?;
        unsafe { *call = id.0 };
        Ok(())
    })
}

/// `anytun_client_answer`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle; `codec` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_answer(
    client: *mut sys::anytun_client,
    call: u64,
    codec: *const c_char,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        // SAFETY: the caller's promise.
        let codec = codec_arg(unsafe { str_arg(codec, "codec") }?)?;
        h.act(|c, now| c.answer(now, CallId(call), &codec))
    })
}

/// `anytun_client_reject`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_reject(
    client: *mut sys::anytun_client,
    call: u64,
    cause: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        let cause = cause_arg(h, cause);
        h.act(|c, now| c.reject(now, CallId(call), cause))
    })
}

/// `anytun_client_hangup`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_hangup(
    client: *mut sys::anytun_client,
    call: u64,
    cause: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        let cause = cause_arg(h, cause);
        h.act(|c, now| c.hangup(now, CallId(call), cause))
    })
}

/// `anytun_client_send_voice`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle; `payload` NULL or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_send_voice(
    client: *mut sys::anytun_client,
    call: u64,
    seq: u32,
    timestamp: u32,
    payload: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        if payload.is_null() {
            return Err(FfiError::Null("payload"));
        }
        if len == 0 {
            return Err(FfiError::invalid("len", "a voice frame is 1 byte or more"));
        }
        if len > crate::wire::e2e::MAX_VOICE_PAYLOAD {
            return Err(ClientError::TooLarge.into());
        }
        // SAFETY: len readable bytes by the caller's promise.
        let payload = unsafe { std::slice::from_raw_parts(payload, len) };
        let mut buf = [0u8; crate::wire::MAX_DATAGRAM];
        let n = {
            let mut core = h.shared.lock();
            if core.stopping {
                return Err(FfiError::Stopped);
            }
            if !core.started {
                return Err(FfiError::NotStarted);
            }
            let now = Instant::now();
            core.client
                .send_voice(now, CallId(call), seq, timestamp, payload, &mut buf)?
        };
        // The data path: one send from the host's thread, no wake-up.
        if let Some(link) = h.shared.link.get() {
            if let Err(e) = link.socket.send_to(&buf[..n], link.proxy) {
                log::debug!("voice send failed: {e}");
            }
            h.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })
}

/// `anytun_client_send_dtmf`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_send_dtmf(
    client: *mut sys::anytun_client,
    call: u64,
    digit: c_char,
    duration_ms: u16,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        let digit = char::from(digit as u8);
        h.act(|c, now| c.send_dtmf(now, CallId(call), digit, duration_ms))
    })
}

/// `anytun_client_get_status`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle; `status` NULL or a writable struct of
/// at least the size its `struct_size` states.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_get_status(
    client: *mut sys::anytun_client,
    status: *mut sys::anytun_client_status,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        // SAFETY: the caller's promise.
        let given = unsafe { read_sized(status.cast_const(), "status") }?;
        let mut s = sys::anytun_client_status {
            struct_size: given.struct_size,
            ..Default::default()
        };
        {
            let core = h.shared.lock();
            s.state = core.state;
            s.session_id = core.client.session().map_or(0, |id| id.raw());
            s.proxy_id = core.client.proxy().map_or(0, |p| u32::from(p.get()));
            s.calls = core.client.calls().len() as u32;
            s.names = core.names.len() as u32;
            s.dropped = core.client.drops().total() + h.shared.wrong_source.load(Ordering::Relaxed);
            s.causes_out_of_range = core.client.causes_out_of_range()
                + h.shared.causes_out_of_range.load(Ordering::Relaxed);
            if let Some(o) = core.observed {
                fill_chars(&mut s.observed, &o.to_string())?;
            }
        }
        if let Some(link) = h.shared.link.get() {
            s.local_port = link.socket.local_addr().map_or(0, |a| a.port());
        }
        s.frames_sent = h.shared.frames_sent.load(Ordering::Relaxed);
        s.frames_received = h.shared.frames_received.load(Ordering::Relaxed);
        // SAFETY: writable by the caller's promise (size checked).
        unsafe { status.write_unaligned(s) };
        Ok(())
    })
}

/// `anytun_client_calls`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle; `out` NULL or `cap` writable entries;
/// `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_calls(
    client: *mut sys::anytun_client,
    out: *mut sys::anytun_call_info,
    cap: usize,
    count: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        if count.is_null() {
            return Err(FfiError::Null("count"));
        }
        let mut calls = h.shared.lock().client.calls();
        calls.sort_by_key(|c| c.call);
        // SAFETY: writable by the caller's promise.
        unsafe { *count = calls.len() };
        if calls.len() > cap {
            return Err(FfiError::BufferTooSmall {
                what: "the call list",
                needed: calls.len(),
                len: cap,
            });
        }
        if calls.is_empty() {
            return Ok(());
        }
        if out.is_null() {
            return Err(FfiError::Null("out"));
        }
        for (i, c) in calls.iter().enumerate() {
            let mut info = sys::anytun_call_info {
                call: c.call.0,
                ..Default::default()
            };
            let (direction, phase) = match (c.direction, c.codec.is_some()) {
                (CallDirection::Outgoing, false) => {
                    (sys::ANYTUN_CALL_OUTGOING, sys::ANYTUN_PHASE_DIALING)
                }
                (CallDirection::Incoming, false) => {
                    (sys::ANYTUN_CALL_INCOMING, sys::ANYTUN_PHASE_ALERTING)
                }
                (CallDirection::Outgoing, true) => {
                    (sys::ANYTUN_CALL_OUTGOING, sys::ANYTUN_PHASE_ACTIVE)
                }
                (CallDirection::Incoming, true) => {
                    (sys::ANYTUN_CALL_INCOMING, sys::ANYTUN_PHASE_ACTIVE)
                }
            };
            info.direction = direction as i32;
            info.state = phase as i32;
            fill_chars(&mut info.peer, c.peer.as_str())?;
            fill_chars(&mut info.codec, c.codec.as_deref().unwrap_or(""))?;
            // SAFETY: i < calls.len() <= cap writable entries.
            unsafe { out.add(i).write_unaligned(info) };
        }
        Ok(())
    })
}

/// `anytun_client_public_key`: see include/anytun.h.
///
/// # Safety
/// `client` NULL or a live handle; `out` NULL or `len` writable bytes;
/// `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_client_public_key(
    client: *mut sys::anytun_client,
    out: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(client.cast()) }?;
        let key = h.shared.lock().client.public_key().to_base64();
        // SAFETY: the caller's promise.
        unsafe { write_str(&key, out, len, needed) }
    })
}
