//! What the sync bridge needs from the proxy beyond its event stream
//! (docs/anypsp-protocol.md Section 16): the state it serves, listed as
//! events for a resync, and the handshake time stamps to replicate.

use super::{Proxy, ProxyEvent};
use crate::crypto::PublicKey;
use std::time::Instant;

impl Proxy {
    /// Everything this proxy serves, as the events that replicate it: a
    /// `SessionUp` for each session it serves, a `Registered` for each of
    /// their bindings, and the calls it owns (`CallStarted`, or
    /// `CallAnswered` once answered). For `Replicator::resync` after the
    /// engine reset a table or the event stream had a hole. Scans every
    /// session and call: an infrastructure event, never caused by a client.
    pub fn served_events(&self, now: Instant) -> Vec<ProxyEvent> {
        let me = self.cfg.proxy_id;
        let wall = self.wall_ms(now);
        let mut out = Vec::new();
        let mut ids: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.serving == me)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(r) = self.session_record(now, id) {
                out.push(ProxyEvent::SessionUp(r));
            }
            for (name, exp) in self.registry.bindings_of(id) {
                let left = exp.saturating_duration_since(now).as_millis() as u64;
                out.push(ProxyEvent::Registered {
                    name,
                    session: id,
                    expires_unix_ms: wall.saturating_add(left),
                });
            }
        }
        out.extend(self.owned_call_events(wall));
        out
    }

    /// The next client key whose newest handshake time stamp grew here
    /// (an initiation accepted or answered), with that stamp, for
    /// `Replicator::on_handshake`. Only authorised keys are given (others
    /// are dropped from the drain): a key that may not open a session has
    /// nothing to protect elsewhere. O(log n) each; the set of changed keys
    /// is bounded by the replay table.
    pub fn poll_handshake_change(&mut self) -> Option<(PublicKey, [u8; 12])> {
        while let Some((k, ts)) = self.replay.take_changed() {
            if self.subscribers.is_authorized(&k) {
                return Some((k, ts));
            }
        }
        None
    }
}
