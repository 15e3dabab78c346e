//! The hosted proxy's exports (`anytun_proxy_*`, include/anytun.h "Proxy
//! mode"). The proxy runs on tokio and needs the daemon feature; a phone
//! build (without it) has the same exports, which check their pointers
//! and answer `ANYTUN_ERR_UNSUPPORTED`.

use super::client::read_sized;
use super::errors::{guard, FfiError};
use super::{sys, write_str};
use std::ffi::{c_char, c_int};

#[cfg(feature = "daemon")]
use super::proxy_host::{settings, AnytunProxy};

/// The proxy mode is not in this build.
#[cfg(not(feature = "daemon"))]
fn unsupported() -> FfiError {
    FfiError::Unsupported(
        "proxy mode needs the library built with the daemon feature (this is a client-only build)"
            .into(),
    )
}

/// The stand-in handle of a client-only build (never made: every method
/// answers that the proxy mode is not in this build).
#[cfg(not(feature = "daemon"))]
pub struct AnytunProxy;

#[cfg(not(feature = "daemon"))]
impl AnytunProxy {
    fn start(&self) -> Result<(), FfiError> {
        Err(unsupported())
    }
    fn stop(&self) -> Result<(), FfiError> {
        Err(unsupported())
    }
    fn status(&self, _: &mut sys::anytun_proxy_status) -> Result<(), FfiError> {
        Err(unsupported())
    }
    fn peers(&self) -> Result<Vec<sys::anytun_proxy_peer_info>, FfiError> {
        Err(unsupported())
    }
    fn node_key(&self) -> Result<String, FfiError> {
        Err(unsupported())
    }
    fn sessions(&self, _: u64, _: usize) -> Result<Vec<sys::anytun_proxy_session_info>, FfiError> {
        Err(unsupported())
    }
    fn drain(&self, _: bool) -> Result<(), FfiError> {
        Err(unsupported())
    }
}

/// The handle behind a pointer.
///
/// # Safety
/// `p` must be NULL or a handle from `anytun_proxy_new` not yet freed.
unsafe fn handle<'a>(p: *mut sys::anytun_proxy) -> Result<&'a AnytunProxy, FfiError> {
    // SAFETY: the caller's promise.
    unsafe { p.cast::<AnytunProxy>().as_ref() }.ok_or(FfiError::Null("proxy"))
}

/// `anytun_proxy_config_init`: see include/anytun.h.
///
/// # Safety
/// `cfg` must be NULL or point to a writable `anytun_proxy_config`.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_config_init(cfg: *mut sys::anytun_proxy_config) -> c_int {
    guard(|| {
        if cfg.is_null() {
            return Err(FfiError::Null("cfg"));
        }
        let v = sys::anytun_proxy_config {
            struct_size: std::mem::size_of::<sys::anytun_proxy_config>() as u32,
            ..Default::default()
        };
        // SAFETY: writable by the caller's promise.
        unsafe { cfg.write_unaligned(v) };
        Ok(())
    })
}

/// `anytun_proxy_status_init`: see include/anytun.h.
///
/// # Safety
/// `status` must be NULL or point to a writable `anytun_proxy_status`.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_status_init(status: *mut sys::anytun_proxy_status) -> c_int {
    guard(|| {
        if status.is_null() {
            return Err(FfiError::Null("status"));
        }
        let v = sys::anytun_proxy_status {
            struct_size: std::mem::size_of::<sys::anytun_proxy_status>() as u32,
            ..Default::default()
        };
        // SAFETY: writable by the caller's promise.
        unsafe { status.write_unaligned(v) };
        Ok(())
    })
}

/// `anytun_proxy_new`: see include/anytun.h.
///
/// # Safety
/// `cfg` NULL or a config of at least the size its `struct_size` states,
/// whose strings are NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_new(
    cfg: *const sys::anytun_proxy_config,
    out: *mut *mut sys::anytun_proxy,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(FfiError::Null("out"));
        }
        // SAFETY: writable by the caller's promise.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the caller's promise.
        let c = unsafe { read_sized(cfg, "cfg") }?;
        #[cfg(feature = "daemon")]
        {
            // SAFETY: the caller's promise on the strings.
            let config = unsafe { settings(&c) }?;
            let h = Box::new(AnytunProxy::new(config));
            // SAFETY: as above.
            unsafe { *out = Box::into_raw(h).cast() };
            Ok(())
        }
        #[cfg(not(feature = "daemon"))]
        {
            let _ = c;
            Err(unsupported())
        }
    })
}

/// `anytun_proxy_start`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_start(proxy: *mut sys::anytun_proxy) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        unsafe { handle(proxy) }?.start()
    })
}

/// `anytun_proxy_drain`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_drain(proxy: *mut sys::anytun_proxy, drain: c_int) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        unsafe { handle(proxy) }?.drain(drain != 0)
    })
}

/// `anytun_proxy_stop`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_stop(proxy: *mut sys::anytun_proxy) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        unsafe { handle(proxy) }?.stop()
    })
}

/// `anytun_proxy_free`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle, not used again after success.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_free(proxy: *mut sys::anytun_proxy) -> c_int {
    guard(|| {
        if proxy.is_null() {
            return Ok(());
        }
        #[cfg(feature = "daemon")]
        {
            // SAFETY: the caller's promise.
            unsafe { handle(proxy) }?.stop()?;
            // SAFETY: from Box::into_raw in anytun_proxy_new; stopped, so
            // no thread of it holds the handle.
            drop(unsafe { Box::from_raw(proxy.cast::<AnytunProxy>()) });
            Ok(())
        }
        #[cfg(not(feature = "daemon"))]
        Err(unsupported())
    })
}

/// `anytun_proxy_get_status`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle; `status` NULL or a writable struct of at
/// least the size its `struct_size` states.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_get_status(
    proxy: *mut sys::anytun_proxy,
    status: *mut sys::anytun_proxy_status,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(proxy) }?;
        // SAFETY: the caller's promise.
        let given = unsafe { read_sized(status.cast_const(), "status") }?;
        let mut s = sys::anytun_proxy_status {
            struct_size: given.struct_size,
            ..Default::default()
        };
        h.status(&mut s)?;
        // SAFETY: writable by the caller's promise (size checked).
        unsafe { status.write_unaligned(s) };
        Ok(())
    })
}

/// `anytun_proxy_peers`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle; `out` NULL or `cap` writable entries;
/// `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_peers(
    proxy: *mut sys::anytun_proxy,
    out: *mut sys::anytun_proxy_peer_info,
    cap: usize,
    count: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(proxy) }?;
        if count.is_null() {
            return Err(FfiError::Null("count"));
        }
        let peers = h.peers()?;
        // SAFETY: writable by the caller's promise.
        unsafe { *count = peers.len() };
        if peers.len() > cap {
            return Err(FfiError::BufferTooSmall {
                what: "the peer list",
                needed: peers.len(),
                len: cap,
            });
        }
        if peers.is_empty() {
            return Ok(());
        }
        if out.is_null() {
            return Err(FfiError::Null("out"));
        }
        for (i, p) in peers.into_iter().enumerate() {
            // SAFETY: i < peers.len() <= cap writable entries.
            unsafe { out.add(i).write_unaligned(p) };
        }
        Ok(())
    })
}

/// Most sessions listed per `anytun_proxy_sessions` call whatever `cap`
/// says: one page holds the proxy's tables (and its voice path) briefly.
const SESSIONS_PAGE_MAX: usize = 1024;

/// `anytun_proxy_sessions`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle; `out` NULL or `cap` writable entries;
/// `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_sessions(
    proxy: *mut sys::anytun_proxy,
    after: u64,
    out: *mut sys::anytun_proxy_session_info,
    cap: usize,
    count: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(proxy) }?;
        if count.is_null() {
            return Err(FfiError::Null("count"));
        }
        // SAFETY: writable by the caller's promise.
        unsafe { *count = 0 };
        if cap == 0 {
            return Ok(());
        }
        if out.is_null() {
            return Err(FfiError::Null("out"));
        }
        let page = h.sessions(after, cap.min(SESSIONS_PAGE_MAX))?;
        for (i, s) in page.iter().enumerate() {
            // SAFETY: i < page.len() <= cap writable entries.
            unsafe { out.add(i).write_unaligned(*s) };
        }
        // SAFETY: as above.
        unsafe { *count = page.len() };
        Ok(())
    })
}

/// `anytun_proxy_node_key`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle; `out` NULL or `len` writable bytes;
/// `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_node_key(
    proxy: *mut sys::anytun_proxy,
    out: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(proxy) }?;
        let key = h.node_key()?;
        // SAFETY: the caller's promise.
        unsafe { write_str(&key, out, len, needed) }
    })
}

/// `anytun_proxy_reload`: see include/anytun.h.
///
/// # Safety
/// `proxy` NULL or a live handle; `cfg` as for `anytun_proxy_new`.
#[no_mangle]
pub unsafe extern "C" fn anytun_proxy_reload(
    proxy: *mut sys::anytun_proxy,
    cfg: *const sys::anytun_proxy_config,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let h = unsafe { handle(proxy) }?;
        // SAFETY: the caller's promise.
        let c = unsafe { read_sized(cfg, "cfg") }?;
        #[cfg(feature = "daemon")]
        {
            // SAFETY: the caller's promise on the strings.
            let config = unsafe { settings(&c) }?;
            h.reload(config)
        }
        #[cfg(not(feature = "daemon"))]
        {
            let _ = (h, c);
            Err(unsupported())
        }
    })
}
