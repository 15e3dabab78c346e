//! What the proxy reports about its state, for replication (anypsp), the
//! Asterisk CLI and call records: a bounded stream of [`ProxyEvent`]s.
//!
//! Events carry plain, replicable data. Times are wall-clock (milliseconds
//! since the Unix epoch, read from the proxy's wall clock), never a local
//! `Instant`, so another proxy can install them. The queue is bounded: when
//! nobody drains it fast enough the oldest event is dropped and
//! [`Proxy::resync_needed`] turns true, telling the replication engine that
//! the stream has a hole and anti-entropy must repair it.

use super::Proxy;
use crate::call::{Cause, Name};
use crate::session::{CallId, ProxyId, SessionId, SessionState};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// Default bound of the event queue (events, not bytes).
pub const DEFAULT_MAX_EVENTS: usize = 8192;

/// A session as replicated: its keys and floors, where its client is, which
/// proxy serves it now and when it expires unless heard from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Keys, client counter floor and every proxy's send floor. Its Debug
    /// form leaves the keys out.
    pub state: SessionState,
    /// The client's current address (its NAT binding).
    pub addr: SocketAddr,
    /// The local (anycast) address the client sends to.
    pub local_ip: Option<IpAddr>,
    /// The proxy that serves the client now: the one that sends it its
    /// control messages and runs its timers.
    pub serving: ProxyId,
    /// When the session expires unless the client is heard from, in
    /// milliseconds since the Unix epoch (serving proxy's wall clock).
    pub expires_unix_ms: u64,
}

/// One change of the proxy's replicable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyEvent {
    /// A session was created here (handshake) or imported.
    SessionUp(SessionRecord),
    /// A session changed address, local address or serving proxy (a
    /// take-over makes `serving` this proxy).
    SessionUpdated(SessionRecord),
    /// A session ended; its registrations are gone with it (no
    /// `Unregistered` follows) and its calls end with their own events.
    SessionDown {
        /// The session.
        id: SessionId,
        /// Why (Q.850 cause as told to the other parties of its calls).
        cause: Cause,
    },
    /// A name was bound to a session (new binding or refresh).
    Registered {
        /// The name.
        name: Name,
        /// The device's session.
        session: SessionId,
        /// When the binding expires, ms since the Unix epoch.
        expires_unix_ms: u64,
    },
    /// A binding was removed (by the client, expiry or revocation).
    Unregistered {
        /// The name.
        name: Name,
        /// The device's session.
        session: SessionId,
    },
    /// A call is being offered to `callees`.
    CallStarted {
        /// The call.
        call: CallId,
        /// The caller's session.
        caller: SessionId,
        /// The devices rung.
        callees: Vec<SessionId>,
        /// When, ms since the Unix epoch (for call records).
        at_unix_ms: u64,
        /// The proxy that set the call up: it decides the devices' answers
        /// and refusals of a forked call (anypsp spec 15.4). `None` only
        /// for a replicated call whose writer did not say (an old format,
        /// spec 16.2).
        owner: Option<ProxyId>,
    },
    /// A device offered the call rang (its "ring or be dropped" deadline is
    /// spent and the caller was told).
    CallRinging {
        /// The call.
        call: CallId,
        /// The device.
        callee: SessionId,
    },
    /// A device was dropped from the offer (refused, failed or timed out).
    CallLegDropped {
        /// The call.
        call: CallId,
        /// The device.
        callee: SessionId,
    },
    /// The call was answered by `callee`; the other devices lost.
    CallAnswered {
        /// The call.
        call: CallId,
        /// The caller's session.
        caller: SessionId,
        /// The answering device.
        callee: SessionId,
        /// When, ms since the Unix epoch.
        at_unix_ms: u64,
    },
    /// The call is over (hangup, refusal by all, timeout, a party gone).
    CallEnded {
        /// The call.
        call: CallId,
        /// Q.850 cause.
        cause: Cause,
        /// When, ms since the Unix epoch.
        at_unix_ms: u64,
    },
}

/// The bounded event queue.
#[derive(Debug)]
pub(crate) struct EventQueue {
    queue: VecDeque<ProxyEvent>,
    max: usize,
    /// Events were dropped since the engine last cleared it.
    pub(crate) resync: bool,
    /// Events dropped on overflow, since start.
    pub(crate) dropped: u64,
}

impl EventQueue {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            max: max.max(1),
            resync: false,
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, e: ProxyEvent) {
        if self.queue.len() >= self.max {
            // The oldest goes: anti-entropy repairs whatever it said.
            self.queue.pop_front();
            self.dropped += 1;
            self.resync = true;
        }
        self.queue.push_back(e);
    }

    pub(crate) fn pop(&mut self) -> Option<ProxyEvent> {
        self.queue.pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

impl Proxy {
    /// The next state change, oldest first. Drain it after every call into
    /// the core (it holds at most `ProxyConfig::max_events`).
    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        self.events.pop()
    }

    /// True if events were dropped because the queue was full since
    /// [`Proxy::clear_resync`]: the stream has a hole and peers need a full
    /// comparison (anti-entropy).
    pub fn resync_needed(&self) -> bool {
        self.events.resync
    }

    /// The engine calls it once it has started the repair.
    pub fn clear_resync(&mut self) {
        self.events.resync = false;
    }

    /// Events waiting, and events dropped on overflow since start.
    pub fn event_queue_stats(&self) -> (usize, u64) {
        (self.events.len(), self.events.dropped)
    }

    /// Milliseconds since the Unix epoch on this proxy's wall clock at `now`.
    pub(crate) fn wall_ms(&self, now: std::time::Instant) -> u64 {
        u64::try_from(self.wall_clock(now) / 1_000_000).unwrap_or(u64::MAX)
    }

    /// The replicable record of session `id`, if held.
    pub(crate) fn session_record(
        &self,
        now: std::time::Instant,
        id: SessionId,
    ) -> Option<SessionRecord> {
        let s = self.sessions.get(&id)?;
        let idle = self
            .cfg
            .session_timeout
            .saturating_sub(now.saturating_duration_since(s.last_seen));
        Some(SessionRecord {
            state: s.crypto.export(s.client_key),
            addr: s.addr,
            local_ip: s.local_ip,
            serving: s.serving,
            expires_unix_ms: self.wall_ms(now).saturating_add(idle.as_millis() as u64),
        })
    }

    /// Queues `SessionUp` (or `SessionUpdated`) for session `id`.
    pub(crate) fn emit_session(&mut self, now: std::time::Instant, id: SessionId, up: bool) {
        if let Some(r) = self.session_record(now, id) {
            self.events.push(if up {
                ProxyEvent::SessionUp(r)
            } else {
                ProxyEvent::SessionUpdated(r)
            });
        }
    }

    pub(crate) fn emit(&mut self, e: ProxyEvent) {
        self.events.push(e);
    }
}
