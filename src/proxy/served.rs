//! What the sync bridge needs from the proxy beyond its event stream
//! (docs/anypsp-protocol.md Section 16): the state it serves, listed as
//! events for a resync, and the handshake time stamps to replicate.

use super::{Proxy, ProxyEvent};
use crate::crypto::PublicKey;
use crate::session::{CallId, SessionId};
use std::ops::Bound;
use std::time::Instant;

/// Where a chunked resync stands ([`Proxy::served_events_from`]): after
/// which session id, then after which call id. Ids, not positions: a
/// session or call added or removed between chunks moves no cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedCursor(Phase);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sessions after this id (None: from the first).
    Sessions(Option<SessionId>),
    /// Calls after this id (None: from the first).
    Calls(Option<CallId>),
    Done,
}

impl ServedCursor {
    /// The start of a resync.
    pub const START: Self = Self(Phase::Sessions(None));

    /// True once everything was listed.
    pub fn is_done(&self) -> bool {
        self.0 == Phase::Done
    }
}

impl Proxy {
    /// Everything this proxy serves, as the events that replicate it: a
    /// `SessionUp` for each session it serves, a `Registered` for each of
    /// their bindings, and the calls it owns (`CallStarted`, or
    /// `CallAnswered` once answered). All the chunks of
    /// [`Proxy::served_events_from`] at once, for a shell that holds the
    /// core for the whole resync (the test bed). O(n).
    pub fn served_events(&self, now: Instant) -> Vec<ProxyEvent> {
        let mut out = Vec::new();
        let mut cursor = ServedCursor::START;
        while !cursor.is_done() {
            let (evs, next) = self.served_events_from(now, cursor, usize::MAX);
            out.extend(evs);
            cursor = next;
        }
        out
    }

    /// One chunk of a resync (docs/anypsp-protocol.md 17): the events of
    /// [`Proxy::served_events`] for the next `limit` sessions after
    /// `cursor` in id order (those served here, with their bindings), then,
    /// once the sessions are done, for the next `limit` calls in id order
    /// (those owned here). Returns the events and the cursor to continue
    /// from ([`ServedCursor::is_done`] once everything was listed).
    /// O(log n + limit * (names per session)): a shell calls it once per
    /// hold of the core lock, so that a resync of any size holds the lock
    /// (and the voice path) for one chunk at a time. What changes between
    /// chunks reaches the shell as events.
    pub fn served_events_from(
        &self,
        now: Instant,
        cursor: ServedCursor,
        limit: usize,
    ) -> (Vec<ProxyEvent>, ServedCursor) {
        let limit = limit.max(1);
        let me = self.cfg.proxy_id;
        let wall = self.wall_ms(now);
        let mut out = Vec::new();
        match cursor.0 {
            Phase::Sessions(after) => {
                let from = match after {
                    Some(id) => Bound::Excluded(id),
                    None => Bound::Unbounded,
                };
                let mut last = None;
                for id in self
                    .session_order
                    .range((from, Bound::Unbounded))
                    .take(limit)
                {
                    last = Some(*id);
                    if self.sessions.get(id).is_none_or(|s| s.serving != me) {
                        continue;
                    }
                    if let Some(r) = self.session_record(now, *id) {
                        out.push(ProxyEvent::SessionUp(r));
                    }
                    for (name, exp) in self.registry.bindings_of(*id) {
                        let left = exp.saturating_duration_since(now).as_millis() as u64;
                        out.push(ProxyEvent::Registered {
                            name,
                            session: *id,
                            expires_unix_ms: wall.saturating_add(left),
                        });
                    }
                }
                let next = match last {
                    Some(id) => Phase::Sessions(Some(id)),
                    None => Phase::Calls(None),
                };
                (out, ServedCursor(next))
            }
            Phase::Calls(after) => {
                let next = match self.owned_call_events_from(after, limit, wall, &mut out) {
                    Some(id) => Phase::Calls(Some(id)),
                    None => Phase::Done,
                };
                (out, ServedCursor(next))
            }
            Phase::Done => (out, cursor),
        }
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
