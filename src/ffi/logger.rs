//! The process-wide logger of the C ABI: the `log` facade's records go to
//! one C callback, which a host installs and removes any number of times
//! (a module unloaded and loaded again).
//!
//! The facade's own logger can be set only once per process, so a static,
//! stateless forwarder is registered the first time, and the host's
//! callback lives in a `RwLock<Option<..>>` that removal resets. The
//! library stays mapped after a module's `dlclose` (glibc pins DSOs that
//! registered thread-local destructors), so nothing here may be a
//! once-only cell holding host state. Removal takes the write lock: it
//! returns only once no call of the old callback is running, after which
//! the host may unload the callback's code.
//!
//! The core logs while the library holds a client's lock. A log callback
//! that calls back into the library (a status query, as a PBX's CLI does)
//! would then deadlock, so records made while a thread holds such a lock
//! (`Deferred`) wait in a bounded per-thread queue and are passed on
//! when the lock is released.

use super::errors::{guard, FfiError};
use super::sys;
use log::{LevelFilter, Log, Metadata, Record};
use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// The host's logger.
struct Sink {
    f: unsafe extern "C" fn(*mut c_void, c_int, *const std::ffi::c_char, *const std::ffi::c_char),
    user: *mut c_void,
}

// SAFETY: the header tells the host that its log callback is called from
// any thread with its `user` pointer; that is its promise to keep.
unsafe impl Send for Sink {}
// SAFETY: as above; the library never touches `user` itself.
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Whether the facade's logger is ours (set on the first install).
static FACADE_OURS: AtomicBool = AtomicBool::new(false);

/// Most records held back on one thread while it holds a library lock;
/// beyond, they are counted and reported as one line.
const MAX_DEFERRED: usize = 256;

/// A record held back: level, target, message.
type Held = (log::Level, CString, CString);

thread_local! {
    /// Set while this thread runs the host's log callback: logging from
    /// inside it is dropped (no recursion, no re-entrant lock).
    static IN_LOG: Cell<bool> = const { Cell::new(false) };
    /// How many library locks this thread holds (see [`Deferred`]).
    static DEFER: Cell<u32> = const { Cell::new(0) };
    /// Records made while holding one, and how many did not fit.
    static HELD: RefCell<(Vec<Held>, u64)> = const { RefCell::new((Vec::new(), 0)) };
}

/// Held while a thread holds a library lock: the records it logs meanwhile
/// reach the host's callback when the last `Deferred` of the thread is
/// dropped. Drop it after the lock (declare it after the guard in a
/// struct), so the callback runs with the lock released.
pub(crate) struct Deferred(());

impl Deferred {
    /// Starts holding records back on this thread.
    pub fn new() -> Self {
        let _ = DEFER.try_with(|d| d.set(d.get() + 1));
        Deferred(())
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let left = DEFER
            .try_with(|d| {
                d.set(d.get().saturating_sub(1));
                d.get()
            })
            .unwrap_or(0);
        if left > 0 {
            return;
        }
        let (held, lost) = HELD
            .try_with(|h| std::mem::take(&mut *h.borrow_mut()))
            .unwrap_or_default();
        for (level, target, message) in held {
            deliver(level, &target, &message);
        }
        if lost > 0 {
            let text = format!("{lost} log lines dropped (more than {MAX_DEFERRED} at once)");
            deliver(log::Level::Warn, c"anytun::ffi", &clean(text));
        }
    }
}

fn clean(s: String) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Passes one record to the host's callback, if one is installed.
fn deliver(level: log::Level, target: &std::ffi::CStr, message: &std::ffi::CStr) {
    if in_log() {
        return;
    }
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
    let Some(sink) = sink.as_ref() else {
        return;
    };
    let _ = IN_LOG.try_with(|f| f.set(true));
    // SAFETY: the host installed this callback for exactly these
    // arguments; the strings live until it returns.
    unsafe { (sink.f)(sink.user, level as c_int, target.as_ptr(), message.as_ptr()) };
    let _ = IN_LOG.try_with(|f| f.set(false));
}

/// Whether this thread runs the host's log callback now (or is being torn
/// down, when its thread-locals are gone: nothing is logged then).
fn in_log() -> bool {
    IN_LOG.try_with(Cell::get).unwrap_or(true)
}

/// Forwards the facade's records to the host's callback.
struct Forwarder;

static FORWARDER: Forwarder = Forwarder;

impl Log for Forwarder {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) || in_log() {
            return;
        }
        let target = clean(record.target().to_owned());
        let message = clean(record.args().to_string());
        if DEFER.try_with(Cell::get).unwrap_or(0) > 0 {
            let _ = HELD.try_with(|h| {
                let mut h = h.borrow_mut();
                if h.0.len() < MAX_DEFERRED {
                    h.0.push((record.level(), target, message));
                } else {
                    h.1 += 1;
                }
            });
            return;
        }
        deliver(record.level(), &target, &message);
    }

    fn flush(&self) {}
}

fn level_filter(level: c_int) -> Option<LevelFilter> {
    Some(match u32::try_from(level).ok()? {
        sys::ANYTUN_LOG_OFF => LevelFilter::Off,
        sys::ANYTUN_LOG_ERROR => LevelFilter::Error,
        sys::ANYTUN_LOG_WARN => LevelFilter::Warn,
        sys::ANYTUN_LOG_INFO => LevelFilter::Info,
        sys::ANYTUN_LOG_DEBUG => LevelFilter::Debug,
        sys::ANYTUN_LOG_TRACE => LevelFilter::Trace,
        _ => return None,
    })
}

/// Installs (or with `f == None` removes) the host's logger.
fn set(f: sys::anytun_log_fn, user: *mut c_void, max_level: c_int) -> Result<(), FfiError> {
    if in_log() {
        return Err(FfiError::InCallback("anytun_set_logger"));
    }
    let level = level_filter(max_level).ok_or_else(|| {
        FfiError::invalid(
            "max_level",
            format!("{max_level} is not an anytun_log_level (0..5)"),
        )
    })?;
    if f.is_some() && !FACADE_OURS.load(Ordering::Acquire) {
        if log::set_logger(&FORWARDER).is_err() {
            // Only possible when linked as an rlib into a Rust program
            // that installed its own logger.
            return Err(FfiError::Unsupported(
                "another logger is installed in this process's log facade".into(),
            ));
        }
        FACADE_OURS.store(true, Ordering::Release);
    }
    // The write lock waits for every running call of the old callback.
    let mut sink = SINK.write().unwrap_or_else(|e| e.into_inner());
    *sink = f.map(|f| Sink { f, user });
    if FACADE_OURS.load(Ordering::Acquire) {
        log::set_max_level(if sink.is_some() {
            level
        } else {
            LevelFilter::Off
        });
    }
    Ok(())
}

/// `anytun_set_logger`: see include/anytun.h.
///
/// # Safety
/// `fn_` must be NULL or a function of the header's `anytun_log_fn` type
/// that stays callable until it is removed again.
#[no_mangle]
pub unsafe extern "C" fn anytun_set_logger(
    fn_: sys::anytun_log_fn,
    user: *mut c_void,
    max_level: c_int,
) -> c_int {
    guard(|| set(fn_, user, max_level))
}
