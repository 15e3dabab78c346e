//! Error codes of the C ABI: what went wrong, its code, its text, the
//! calling thread's last error detail, and the guard every export runs in.

use super::sys;
use crate::client::ClientError;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Why an export failed; each maps to one `anytun_error` code and its
/// `Display` is the detail `anytun_last_error` returns.
#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    /// A required pointer was NULL.
    #[error("{0} is NULL")]
    Null(&'static str),
    /// An argument is not valid.
    #[error("{what}: {why}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// Why not.
        why: String,
    },
    /// An output buffer is too small.
    #[error("{what} needs {needed} bytes (or entries), the buffer holds {len}")]
    BufferTooSmall {
        /// Which buffer.
        what: &'static str,
        /// What it needs.
        needed: usize,
        /// What it holds.
        len: usize,
    },
    /// A struct's size field is too small for this library's version of it.
    #[error(
        "{what}.struct_size is {got}, this library needs at least {min} (use the *_init function)"
    )]
    StructSize {
        /// Which struct.
        what: &'static str,
        /// The size given.
        got: u32,
        /// The size needed.
        min: usize,
    },
    /// A reserved field is not zero.
    #[error("{what}: reserved field {field} is not zero")]
    Reserved {
        /// Which struct.
        what: &'static str,
        /// Which field.
        field: &'static str,
    },
    /// The handle is not started.
    #[error("the client is not started (anytun_client_start)")]
    NotStarted,
    /// The handle was stopped.
    #[error("the client was stopped")]
    Stopped,
    /// The handle is already started.
    #[error("the client is already started")]
    AlreadyStarted,
    /// The client core refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// Called from a callback where it would deadlock.
    #[error("{0} cannot be called from inside this handle's own callback")]
    InCallback(&'static str),
    /// Not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// A hosted proxy could not start (a port in use, the store, a key
    /// file): the text names which.
    #[error("{0}")]
    Boot(String),
    /// A handle is not in a state that allows the call (`code` is one of
    /// the lifecycle codes: not started, stopped, already started).
    #[error("{why}")]
    State {
        /// The `anytun_error` code.
        code: c_int,
        /// What is wrong, in words.
        why: String,
    },
    /// A bug, contained.
    #[error("internal error: {0}")]
    Internal(String),
}

impl FfiError {
    /// The `anytun_error` code.
    pub fn code(&self) -> c_int {
        match self {
            FfiError::Null(_) => sys::ANYTUN_ERR_NULL,
            FfiError::Invalid { .. } => sys::ANYTUN_ERR_INVALID,
            FfiError::BufferTooSmall { .. } => sys::ANYTUN_ERR_BUFFER_TOO_SMALL,
            FfiError::StructSize { .. } | FfiError::Reserved { .. } => sys::ANYTUN_ERR_STRUCT_SIZE,
            FfiError::NotStarted => sys::ANYTUN_ERR_NOT_STARTED,
            FfiError::Stopped => sys::ANYTUN_ERR_STOPPED,
            FfiError::AlreadyStarted => sys::ANYTUN_ERR_ALREADY_STARTED,
            FfiError::Client(e) => client_code(e),
            FfiError::Io { .. } => sys::ANYTUN_ERR_IO,
            FfiError::InCallback(_) => sys::ANYTUN_ERR_IN_CALLBACK,
            FfiError::Unsupported(_) => sys::ANYTUN_ERR_UNSUPPORTED,
            FfiError::Boot(_) => sys::ANYTUN_ERR_IO,
            FfiError::State { code, .. } => *code,
            FfiError::Internal(_) => sys::ANYTUN_ERR_INTERNAL,
        }
    }

    /// An invalid argument.
    pub fn invalid(what: &'static str, why: impl ToString) -> Self {
        FfiError::Invalid {
            what,
            why: why.to_string(),
        }
    }
}

/// The code for a client core error.
pub fn client_code(e: &ClientError) -> c_int {
    match e {
        ClientError::UnknownCall(_) => sys::ANYTUN_ERR_UNKNOWN_CALL,
        ClientError::CallState { .. } => sys::ANYTUN_ERR_CALL_STATE,
        ClientError::CodecNotOffered(_) => sys::ANYTUN_ERR_CODEC_NOT_OFFERED,
        ClientError::TooLarge => sys::ANYTUN_ERR_TOO_LARGE,
        ClientError::Backlog => sys::ANYTUN_ERR_BACKLOG,
        ClientError::BadDigit(_) => sys::ANYTUN_ERR_INVALID,
        ClientError::E2e(_) | ClientError::Handshake(_) => sys::ANYTUN_ERR_INTERNAL,
        // Everything about the session itself: no session now.
        ClientError::NotConnected
        | ClientError::HandshakeTimeout { .. }
        | ClientError::NotAuthorized { .. }
        | ClientError::Busy
        | ClientError::ClockSkew { .. }
        | ClientError::ConnectionLost(_)
        | ClientError::Replaced => sys::ANYTUN_ERR_NOT_CONNECTED,
    }
}

/// The static text of a code.
pub fn strerror(code: c_int) -> &'static CStr {
    match code {
        sys::ANYTUN_OK => c"success",
        sys::ANYTUN_ERR_NULL => c"a required pointer is NULL",
        sys::ANYTUN_ERR_INVALID => c"invalid argument",
        sys::ANYTUN_ERR_BUFFER_TOO_SMALL => c"buffer too small",
        sys::ANYTUN_ERR_STRUCT_SIZE => {
            c"struct_size too small or reserved field not zero (use the *_init function)"
        }
        sys::ANYTUN_ERR_NOT_STARTED => c"the client is not started",
        sys::ANYTUN_ERR_STOPPED => c"the client was stopped",
        sys::ANYTUN_ERR_ALREADY_STARTED => c"the client is already started",
        sys::ANYTUN_ERR_NOT_CONNECTED => c"not connected to the proxy",
        sys::ANYTUN_ERR_UNKNOWN_CALL => c"no such call",
        sys::ANYTUN_ERR_CALL_STATE => c"the call is not in a state that allows this",
        sys::ANYTUN_ERR_CODEC_NOT_OFFERED => c"codec not offered by the caller",
        sys::ANYTUN_ERR_BACKLOG => c"too many control messages unacknowledged by the proxy",
        sys::ANYTUN_ERR_TOO_LARGE => c"message or frame too large",
        sys::ANYTUN_ERR_IO => c"system error (socket, name resolution or thread)",
        sys::ANYTUN_ERR_IN_CALLBACK => c"not allowed from inside this handle's own callback",
        sys::ANYTUN_ERR_UNSUPPORTED => c"not supported by this build",
        sys::ANYTUN_ERR_INTERNAL => c"internal error",
        _ => c"unknown anytun error code",
    }
}

thread_local! {
    /// The detail of this thread's last failing call.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `text` as this thread's last error detail.
pub fn set_last_error(text: &str) {
    let c = CString::new(text.replace('\0', " ")).unwrap_or_default();
    // A thread being torn down has no slot any more; nothing to record then.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// This thread's last error detail, with its NUL.
pub fn last_error_bytes() -> Vec<u8> {
    LAST_ERROR
        .try_with(|e| e.borrow().as_bytes_with_nul().to_vec())
        .unwrap_or_else(|_| vec![0])
}

/// Runs an export's body: an error becomes its code (and the thread's last
/// error detail), a panic becomes `ANYTUN_ERR_INTERNAL`. Nothing unwinds
/// into the host.
pub fn guard(f: impl FnOnce() -> Result<(), FfiError>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => sys::ANYTUN_OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            e.code()
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            let e = FfiError::Internal(what);
            log::error!("{e}");
            set_last_error(&e.to_string());
            e.code()
        }
    }
}

/// Like [`guard`] for exports that return a value rather than a code:
/// `fallback` on error or panic.
pub fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// `anytun_strerror`: see include/anytun.h.
#[no_mangle]
pub extern "C" fn anytun_strerror(code: c_int) -> *const c_char {
    guard_value(c"unknown anytun error code".as_ptr(), || {
        strerror(code).as_ptr()
    })
}

/// `anytun_last_error`: see include/anytun.h.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `needed` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn anytun_last_error(
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> c_int {
    // Not through `guard`: a failure here must not replace the detail.
    guard_value(sys::ANYTUN_ERR_INTERNAL, || {
        let text = last_error_bytes();
        // SAFETY: the caller's promise on buf/len/needed.
        match unsafe { super::write_bytes(&text, buf, len, needed) } {
            Ok(()) => sys::ANYTUN_OK,
            Err(e) => e.code(),
        }
    })
}
