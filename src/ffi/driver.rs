//! The thread that drives one started client: a UDP socket towards the
//! proxy, `poll(2)` on it and on a wake-up socket, the core's timers, and
//! the host's callbacks.
//!
//! One std thread and a non-blocking socket rather than an async runtime:
//! a phone has one session and a handful of calls, and this keeps tokio out
//! of the library a phone links. The host's own threads act on the core
//! directly (placing calls, sending voice from their audio thread) under
//! the core's mutex, send what it queued themselves, and wake this thread
//! so it re-reads the timers. Callbacks run on this thread only, with no
//! lock held: a callback may call back into the library.

use super::logger::Deferred;
use super::sys;
use crate::client::{Client, ClientConfig, Event};
use crate::session::CallId;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, CString};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Datagrams read per wake-up before the timers are looked at again.
const RECV_BATCH: usize = 64;

/// Receive buffer: larger than any valid datagram, so an oversized one
/// arrives whole and is dropped (and counted) by the core rather than
/// truncated into something else.
const RECV_BUF: usize = 2048;

/// The wall clock for handshake timestamps, nanoseconds since 1970.
pub(crate) fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The host's callbacks, as given.
#[derive(Clone, Copy)]
pub(crate) struct Callbacks(pub sys::anytun_client_callbacks);

// SAFETY: the header tells the host that its callbacks run on the client's
// thread with its `user` pointer; the library never dereferences `user`.
unsafe impl Send for Callbacks {}
// SAFETY: as above.
unsafe impl Sync for Callbacks {}

/// The core and what the C side reports about it; behind one mutex.
pub(crate) struct Core {
    /// The protocol core.
    pub client: Client,
    /// An `anytun_session_state`.
    pub state: c_int,
    /// Names the proxy has granted.
    pub names: BTreeSet<String>,
    /// Our address as the proxy saw it, while connected.
    pub observed: Option<SocketAddr>,
    /// `anytun_client_start` ran.
    pub started: bool,
    /// Stopping or stopped: no more host actions.
    pub stopping: bool,
}

/// The socket side of a started client.
pub(crate) struct Link {
    /// Towards the proxy.
    pub socket: UdpSocket,
    /// The proxy's (anycast) address; replies must come from it.
    pub proxy: SocketAddr,
    wake_tx: UnixDatagram,
    wake_rx: UnixDatagram,
    /// Set by `anytun_client_stop`.
    pub stop: AtomicBool,
}

impl Link {
    /// Binds `bind` and the wake-up pair.
    pub fn new(socket: UdpSocket, proxy: SocketAddr) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        let (wake_tx, wake_rx) = UnixDatagram::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Self {
            socket,
            proxy,
            wake_tx,
            wake_rx,
            stop: AtomicBool::new(false),
        })
    }

    /// Makes the driver look at the core again (a full wake-up queue means
    /// one is pending already).
    pub fn wake(&self) {
        let _ = self.wake_tx.send(&[1]);
    }

    /// Sends datagrams to the proxy. A failed send is a lost packet, which
    /// the protocol recovers from (retransmission, keepalive probes).
    pub fn send_all(&self, pkts: &[Vec<u8>]) {
        for p in pkts {
            if let Err(e) = self.socket.send_to(p, self.proxy) {
                log::debug!("send to proxy failed: {e}");
            }
        }
    }
}

/// What a handle shares with its thread.
pub(crate) struct Shared {
    core: Mutex<Core>,
    /// Set once by `anytun_client_start`.
    pub link: OnceLock<Link>,
    /// Voice frames sent.
    pub frames_sent: AtomicU64,
    /// Voice frames received.
    pub frames_received: AtomicU64,
    /// Datagrams from any address but the proxy's (dropped).
    pub wrong_source: AtomicU64,
    /// Causes the host passed outside Q.850's 1..=127 (mapped).
    pub causes_out_of_range: AtomicU64,
}

impl Shared {
    /// A client core, not started.
    pub fn new(cfg: ClientConfig) -> Self {
        Self {
            core: Mutex::new(Core {
                client: Client::new(cfg),
                state: sys::ANYTUN_SESSION_IDLE as c_int,
                names: BTreeSet::new(),
                observed: None,
                started: false,
                stopping: false,
            }),
            link: OnceLock::new(),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            wrong_source: AtomicU64::new(0),
            causes_out_of_range: AtomicU64::new(0),
        }
    }

    /// The core; a panic elsewhere does not lock the host out. What the
    /// core logs meanwhile reaches the host's logger once it is released.
    pub fn lock(&self) -> CoreGuard<'_> {
        let defer = Deferred::new();
        CoreGuard {
            guard: self.core.lock().unwrap_or_else(|e| e.into_inner()),
            _defer: defer,
        }
    }
}

/// The locked core. Fields drop in order: the lock is released before
/// the log records held meanwhile are passed on.
pub(crate) struct CoreGuard<'a> {
    guard: MutexGuard<'a, Core>,
    _defer: Deferred,
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.guard
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.guard
    }
}

thread_local! {
    /// On a client's thread: its `Shared`, to refuse stop/free from its
    /// own callbacks.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Whether the calling thread is `shared`'s own (inside its callbacks).
pub(crate) fn on_own_thread(shared: &Arc<Shared>) -> bool {
    CURRENT.try_with(Cell::get).unwrap_or(0) == Arc::as_ptr(shared) as usize
}

/// Everything the core queued for the proxy.
pub(crate) fn drain(client: &mut Client) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; crate::wire::MAX_DATAGRAM];
    while let Some(n) = client.poll_transmit(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// An event, owned and ready for C, taken under the lock and delivered
/// after it is released.
enum Note {
    Session {
        state: c_int,
        error: c_int,
        detail: CString,
    },
    Registration {
        name: CString,
        ok: bool,
        expires_s: u32,
    },
    Incoming {
        call: u64,
        from: CString,
        to: CString,
        codecs: Vec<CString>,
    },
    Call {
        call: u64,
        event: c_int,
        cause: c_int,
        codec: CString,
    },
    Dtmf {
        call: u64,
        digit: u8,
        ms: u16,
    },
}

fn cstring(s: impl Into<String>) -> CString {
    let s: String = s.into();
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

impl Core {
    /// Takes the core's events, keeping the C side's state in step.
    fn take_notes(&mut self) -> Vec<Note> {
        let mut notes = Vec::new();
        while let Some(e) = self.client.poll_event() {
            if let Some(n) = self.note(e) {
                notes.push(n);
            }
        }
        notes
    }

    fn session(&mut self, state: u32, error: c_int, detail: String) -> Option<Note> {
        self.state = state as c_int;
        Some(Note::Session {
            state: state as c_int,
            error,
            detail: cstring(detail),
        })
    }

    fn note(&mut self, e: Event) -> Option<Note> {
        let call_note = |call: CallId, event: u32, cause: c_int, codec: &str| Note::Call {
            call: call.0,
            event: event as c_int,
            cause,
            codec: cstring(codec),
        };
        match e {
            Event::Connected { observed, .. } => {
                self.observed = Some(observed);
                self.session(sys::ANYTUN_SESSION_CONNECTED, 0, String::new())
            }
            Event::Disconnected(err) => {
                self.observed = None;
                self.names.clear();
                let code = super::errors::client_code(&err);
                if self.stopping {
                    // The session ending while stopping is part of stopping.
                    log::info!("{err}");
                    return None;
                }
                log::warn!("{err}");
                self.session(sys::ANYTUN_SESSION_DISCONNECTED, code, err.to_string())
            }
            Event::Reconnecting(err) => {
                self.observed = None;
                self.names.clear();
                let code = super::errors::client_code(&err);
                self.session(sys::ANYTUN_SESSION_RECONNECTING, code, err.to_string())
            }
            Event::ClockCorrected(skew) => {
                log::warn!("{skew}; correcting the handshake timestamps");
                None
            }
            Event::Registered { name, expires_s } => {
                if expires_s > 0 {
                    self.names.insert(name.to_string());
                } else {
                    self.names.remove(name.as_str());
                }
                Some(Note::Registration {
                    name: cstring(name.to_string()),
                    ok: true,
                    expires_s,
                })
            }
            Event::RegisterFailed { name } => {
                self.names.remove(name.as_str());
                log::warn!("the proxy refused to register {name}");
                Some(Note::Registration {
                    name: cstring(name.to_string()),
                    ok: false,
                    expires_s: 0,
                })
            }
            Event::IncomingCall {
                call,
                from,
                to,
                codecs,
            } => Some(Note::Incoming {
                call: call.0,
                from: cstring(from.to_string()),
                to: cstring(to.to_string()),
                codecs: codecs.into_iter().map(cstring).collect(),
            }),
            Event::CallRefused { call, from, cause } => {
                log::info!("call {call} from {from}: refused, {cause}");
                let cause = c_int::from(cause.code());
                Some(call_note(call, sys::ANYTUN_CALL_REFUSED, cause, ""))
            }
            Event::Ringing { call } => Some(call_note(call, sys::ANYTUN_CALL_RINGING, 0, "")),
            Event::Answered { call, codec } => {
                Some(call_note(call, sys::ANYTUN_CALL_ANSWERED, 0, &codec))
            }
            Event::EndToEndFailed { call, error } => {
                log::warn!("call {call}: end-to-end check of the answer failed: {error}");
                None
            }
            Event::CallEnded { call, cause } => {
                let cause = c_int::from(cause.code());
                Some(call_note(call, sys::ANYTUN_CALL_ENDED, cause, ""))
            }
            Event::Dtmf {
                call,
                digit,
                duration_ms,
            } => Some(Note::Dtmf {
                call: call.0,
                digit: u8::try_from(digit).unwrap_or(b'?'),
                ms: duration_ms,
            }),
        }
    }
}

impl Callbacks {
    /// Hands one received voice frame to the host and counts it.
    fn voice(&self, shared: &Shared, f: &crate::client::VoiceFrame<'_>) {
        shared.frames_received.fetch_add(1, Ordering::Relaxed);
        if let Some(on_voice) = self.0.on_voice {
            // SAFETY: as in `Callbacks::deliver`; the payload lives in the
            // caller's buffer until the callback returns.
            unsafe {
                on_voice(
                    self.0.user,
                    f.call.0,
                    f.seq,
                    f.timestamp,
                    f.payload.as_ptr(),
                    f.payload.len(),
                )
            }
        }
    }

    fn deliver(&self, notes: Vec<Note>) {
        let cb = &self.0;
        for n in notes {
            // SAFETY (each call): the host registered these functions for
            // exactly these arguments; every pointer passed lives until the
            // callback returns.
            match n {
                Note::Session {
                    state,
                    error,
                    detail,
                } => {
                    if let Some(f) = cb.on_session {
                        unsafe { f(cb.user, state, error, detail.as_ptr()) }
                    }
                }
                Note::Registration {
                    name,
                    ok,
                    expires_s,
                } => {
                    if let Some(f) = cb.on_registration {
                        unsafe { f(cb.user, name.as_ptr(), c_int::from(ok), expires_s) }
                    }
                }
                Note::Incoming {
                    call,
                    from,
                    to,
                    codecs,
                } => {
                    if let Some(f) = cb.on_incoming_call {
                        let ptrs: Vec<*const c_char> = codecs.iter().map(|c| c.as_ptr()).collect();
                        unsafe {
                            f(
                                cb.user,
                                call,
                                from.as_ptr(),
                                to.as_ptr(),
                                ptrs.as_ptr(),
                                ptrs.len(),
                            )
                        }
                    }
                }
                Note::Call {
                    call,
                    event,
                    cause,
                    codec,
                } => {
                    if let Some(f) = cb.on_call_state {
                        unsafe { f(cb.user, call, event, cause, codec.as_ptr()) }
                    }
                }
                Note::Dtmf { call, digit, ms } => {
                    if let Some(f) = cb.on_dtmf {
                        unsafe { f(cb.user, call, digit as c_char, ms) }
                    }
                }
            }
        }
    }

    fn session(&self, state: u32) {
        if let Some(f) = self.0.on_session {
            // SAFETY: as in `deliver`.
            unsafe { f(self.0.user, state as c_int, 0, c"".as_ptr()) }
        }
    }
}

/// Waits until the socket or the wake-up socket is readable, or `timeout`
/// (`None`: no limit). Returns (socket readable, woken).
fn wait(link: &Link, timeout: Option<Duration>) -> (bool, bool) {
    let ms = timeout.map_or(-1, |t| {
        // Rounded up: a deadline 0.3 ms away is not a busy loop of 0 ms
        // polls.
        let ms = t.as_micros().div_ceil(1000);
        ms.min(i32::MAX as u128) as i32
    });
    let mut fds = [
        libc::pollfd {
            fd: link.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: link.wake_rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: fds is a valid array of 2 pollfd for the call's duration.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        // EINTR: look again.
        return (false, false);
    }
    let ready = |f: &libc::pollfd| f.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
    (ready(&fds[0]), ready(&fds[1]))
}

/// The thread's body; returns when stopped (after the stop's hangups are
/// acknowledged or `stop_timeout` passed).
pub(crate) fn run(shared: Arc<Shared>, cb: Callbacks, stop_timeout: Duration) {
    CURRENT.with(|c| c.set(Arc::as_ptr(&shared) as usize));
    let Some(link) = shared.link.get() else {
        return;
    };
    cb.session(sys::ANYTUN_SESSION_CONNECTING);
    let mut buf = vec![0u8; RECV_BUF];
    let mut stop_by: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let (pkts, notes, next, done) = {
            let mut core = shared.lock();
            if stop_by.is_none() && link.stop.load(Ordering::Acquire) {
                core.stopping = true;
                core.client.shutdown(now);
                stop_by = Some(now + stop_timeout);
            }
            if core.client.poll_timeout().is_some_and(|t| t <= now) {
                core.client.handle_timeout(now, unix_nanos());
            }
            let pkts = drain(&mut core.client);
            let notes = core.take_notes();
            let done = stop_by.is_some_and(|t| core.client.pending_control() == 0 || now >= t);
            let next = match (core.client.poll_timeout(), stop_by) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (pkts, notes, next, done)
        };
        link.send_all(&pkts);
        cb.deliver(notes);
        if done {
            break;
        }
        let timeout = next.map(|t| t.saturating_duration_since(Instant::now()));
        let (readable, woken) = wait(link, timeout);
        if woken {
            let mut b = [0u8; 64];
            while link.wake_rx.recv(&mut b).is_ok() {}
        }
        if readable {
            receive(&shared, link, &cb, &mut buf);
        }
    }
    shared.lock().state = sys::ANYTUN_SESSION_STOPPED as c_int;
    cb.session(sys::ANYTUN_SESSION_STOPPED);
    CURRENT.with(|c| c.set(0));
}

/// Reads up to [`RECV_BATCH`] datagrams and hands each to the core, then
/// its events and its voice frame to the host.
fn receive(shared: &Shared, link: &Link, cb: &Callbacks, buf: &mut [u8]) {
    for _ in 0..RECV_BATCH {
        let (n, src) = match link.socket.recv_from(buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                // E.g. an ICMP error reported on the socket: nothing to read.
                log::debug!("receive failed: {e}");
                return;
            }
        };
        // Replies must come from the exact address we sent to (the anycast
        // address): anything else is not our proxy.
        if src != link.proxy {
            shared.wrong_source.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = Instant::now();
        let mut core = shared.lock();
        // The frame borrows `buf`, not the core: it outlives the lock.
        let frame = core.client.handle_datagram(now, &mut buf[..n]);
        // Voice that came before its call's Answer: played after the
        // Answered note, ahead of this datagram's frame (it is newer).
        let held: Vec<_> = std::iter::from_fn(|| core.client.poll_held_voice()).collect();
        let pkts = drain(&mut core.client);
        let notes = core.take_notes();
        drop(core);
        link.send_all(&pkts);
        cb.deliver(notes);
        for h in &held {
            cb.voice(shared, &h.as_frame());
        }
        if let Some(f) = frame {
            cb.voice(shared, &f);
        }
    }
}
