//! The C ABI (`include/anytun.h`): the client library for embedded phones
//! and for Asterisk's `res_anytun.so`.
//!
//! The header is the reference; build.rs generates [`sys`] from it with
//! bindgen and checks every export's signature against it. Every export
//! checks its pointers and runs inside [`errors::guard`], so a panic
//! becomes `ANYTUN_ERR_INTERNAL` and never unwinds into the host.
//!
//! - [`errors`]: codes, their text, the per-thread error detail.
//! - [`logger`]: the process-wide logger a host installs and removes.
//! - [`keys`]: version, key generation.
//! - [`client`]: the client handle's exports; [`driver`]: the one thread
//!   that drives a started client (a blocking UDP socket and `poll(2)`,
//!   no async runtime, so a phone links little).
//! - [`proxy`]: the hosted proxy's exports (`anytun_proxy_*`); the proxy
//!   itself (`proxy_host`) needs the daemon feature, without it they
//!   return `ANYTUN_ERR_UNSUPPORTED`.

pub mod client;
pub mod driver;
pub mod errors;
pub mod keys;
pub mod logger;
pub mod proxy;
#[cfg(feature = "daemon")]
mod proxy_host;
#[cfg(all(test, feature = "daemon"))]
mod proxy_reload_tests;
#[cfg(all(test, feature = "daemon"))]
mod proxy_tests;
pub mod sys;
#[cfg(test)]
mod tests;

pub use client::*;
pub use errors::{anytun_last_error, anytun_strerror};
pub use keys::*;
pub use logger::anytun_set_logger;
pub use proxy::*;

use errors::FfiError;
use std::ffi::{c_char, CStr};

// Assigns every export to a function pointer of the header's type.
include!(concat!(env!("OUT_DIR"), "/anytun_check.rs"));

// The header's limits are the protocol's.
const _: () = {
    assert!(sys::ANYTUN_MAX_NAME as usize == crate::call::name::MAX_NAME_LEN);
    assert!(sys::ANYTUN_MAX_CODEC_NAME as usize == crate::wire::control::MAX_CODEC_NAME);
    assert!(sys::ANYTUN_MAX_CODECS as usize == crate::wire::control::MAX_CODECS);
    assert!(sys::ANYTUN_MAX_VOICE_PAYLOAD as usize == crate::wire::e2e::MAX_VOICE_PAYLOAD);
};

/// Reads a required C string argument as UTF-8.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string.
pub(crate) unsafe fn str_arg<'a>(
    p: *const c_char,
    what: &'static str,
) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::Null(what));
    }
    // SAFETY: non-NULL, NUL-terminated by the caller's promise.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|e| FfiError::invalid(what, format!("not UTF-8: {e}")))
}

/// Reads an optional C string argument (NULL: `None`).
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(
    p: *const c_char,
    what: &'static str,
) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { str_arg(p, what) }.map(Some)
    }
}

/// Copies `bytes` (which end with their NUL) into a caller's buffer; too
/// small is an error with the size needed in `*needed`.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `needed` NULL or
/// writable.
pub(crate) unsafe fn write_bytes(
    bytes: &[u8],
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> Result<(), FfiError> {
    if !needed.is_null() {
        // SAFETY: writable by the caller's promise.
        unsafe { *needed = bytes.len() };
    }
    // NULL with length 0 is a size query: answered as too small.
    if buf.is_null() && len > 0 {
        return Err(FfiError::Null("buf"));
    }
    if len < bytes.len() || buf.is_null() {
        return Err(FfiError::BufferTooSmall {
            what: "the text",
            needed: bytes.len(),
            len,
        });
    }
    // SAFETY: buf holds len >= bytes.len() writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len()) };
    Ok(())
}

/// Copies a string and its NUL into a caller's buffer (see [`write_bytes`]).
///
/// # Safety
/// As [`write_bytes`].
pub(crate) unsafe fn write_str(
    s: &str,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> Result<(), FfiError> {
    let mut bytes = Vec::with_capacity(s.len() + 1);
    bytes.extend_from_slice(s.as_bytes());
    bytes.push(0);
    // SAFETY: forwarded.
    unsafe { write_bytes(&bytes, buf, len, needed) }
}

/// Copies `s` into a fixed char array of a struct, NUL-terminated; `s`
/// always fits (the arrays are sized for the longest value).
pub(crate) fn fill_chars(dst: &mut [c_char], s: &str) -> Result<(), FfiError> {
    if s.len() >= dst.len() {
        return Err(FfiError::Internal(format!(
            "{s:?} does not fit {} bytes",
            dst.len()
        )));
    }
    for (d, b) in dst.iter_mut().zip(s.bytes().chain(std::iter::repeat(0))) {
        *d = b as c_char;
    }
    Ok(())
}

/// Copies `s` into a fixed char array of a struct, NUL-terminated; a text
/// longer than the array is cut at a character boundary and ends in "..."
/// (for diagnostic texts of unbounded length, as the header says).
#[cfg(feature = "daemon")]
pub(crate) fn fill_chars_cut(dst: &mut [c_char], s: &str) {
    let room = dst.len().saturating_sub(1);
    let text: std::borrow::Cow<'_, str> = if s.len() <= room {
        s.into()
    } else {
        let mut end = room.saturating_sub(3);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end]).into()
    };
    for (d, b) in dst.iter_mut().zip(text.bytes().chain(std::iter::repeat(0))) {
        *d = b as c_char;
    }
}
