//! Version and key exports of the C ABI.

use super::errors::{guard, guard_value, FfiError};
use super::{str_arg, sys, write_str};
use crate::crypto::SecretKey;
use std::ffi::{c_char, c_int};

/// The version text, NUL-terminated.
const VERSION: &str = concat!(
    "anytun ",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ANYTUN_COMMIT"),
    ")\0"
);

/// `anytun_version`: see include/anytun.h.
#[no_mangle]
pub extern "C" fn anytun_version() -> *const c_char {
    guard_value(c"anytun".as_ptr(), || VERSION.as_ptr().cast())
}

/// `anytun_abi_version`: see include/anytun.h.
#[no_mangle]
pub extern "C" fn anytun_abi_version() -> u32 {
    sys::ANYTUN_ABI_VERSION
}

/// `anytun_keygen`: see include/anytun.h.
///
/// # Safety
/// Each buffer must be NULL or hold its length in writable bytes; `needed`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_keygen(
    private_out: *mut c_char,
    private_len: usize,
    public_out: *mut c_char,
    public_len: usize,
    needed: *mut usize,
) -> c_int {
    guard(|| {
        if private_out.is_null() {
            return Err(FfiError::Null("private_out"));
        }
        if public_out.is_null() {
            return Err(FfiError::Null("public_out"));
        }
        let key = SecretKey::generate();
        let private = key.to_base64();
        let public = key.public().to_base64();
        let need = private.len().max(public.len()) + 1;
        if private_len <= private.len() || public_len <= public.len() {
            if !needed.is_null() {
                // SAFETY: writable by the caller's promise.
                unsafe { *needed = need };
            }
            return Err(FfiError::BufferTooSmall {
                what: "a key buffer",
                needed: need,
                len: private_len.min(public_len),
            });
        }
        // SAFETY: both buffers are large enough, by the check above.
        unsafe {
            write_str(&private, private_out, private_len, needed)?;
            write_str(&public, public_out, public_len, needed)?;
            if !needed.is_null() {
                *needed = need;
            }
        }
        Ok(())
    })
}

/// `anytun_public_key`: see include/anytun.h.
///
/// # Safety
/// `private_key` must be NULL or a NUL-terminated string; `out` NULL or
/// `len` writable bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_public_key(
    private_key: *const c_char,
    out: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        let text = unsafe { str_arg(private_key, "private_key") }?;
        let key = SecretKey::from_base64(text).map_err(|e| FfiError::invalid("private_key", e))?;
        // SAFETY: the caller's promise.
        unsafe { write_str(&key.public().to_base64(), out, len, needed) }
    })
}
