//! Sizes of the call-routing tables and per-session counts, for tests and
//! status (they walk indexes: never on the packet path).

use crate::proxy::Proxy;
use crate::session::SessionId;

/// Sizes of the call-routing tables, to check that they stay bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingSizes {
    /// Calls held (ringing or answered).
    pub calls: usize,
    /// Entries of the per-session call index (one per call and party).
    pub session_calls: usize,
    /// Pending call deadlines (ring, leg and media timers).
    pub call_deadlines: usize,
    /// Registrations (name, device) held.
    pub registrations: usize,
    /// Pending registration expiries.
    pub registration_expiries: usize,
    /// Entries of the per-session name index.
    pub session_names: usize,
}

impl Proxy {
    /// Sizes of the call-routing tables (walks the per-session indexes: for
    /// tests and status, not for the packet path).
    pub fn routing_sizes(&self) -> RoutingSizes {
        let (registration_expiries, session_names) = self.registry.index_sizes();
        RoutingSizes {
            calls: self.calls.len(),
            session_calls: self.calls.by_session.values().map(Vec::len).sum(),
            call_deadlines: self.calls.timers.len(),
            registrations: self.registry.len(),
            registration_expiries,
            session_names,
        }
    }

    /// Calls session `id` has a role in (caller, offered device or answerer).
    pub fn calls_of_session(&self, id: SessionId) -> usize {
        self.calls.calls_of(id)
    }

    /// Control messages sent to session `id` and not yet acknowledged.
    pub fn pending_control(&self, id: SessionId) -> usize {
        self.sessions.get(&id).map_or(0, |s| s.reliable.in_flight())
    }
}
