//! The bridge between the proxy core and the sync engine
//! (docs/anypsp-protocol.md Section 16 and Appendix B): the proxy's
//! [`ProxyEvent`]s become engine entries, and the engine's changes become
//! what the shell applies to its proxy ([`Apply`]).
//!
//! Sans-IO like both sides: no clock (every time is a [`WallMs`] passed
//! in), no socket. The shell (anytund, the test bed) drives it:
//!
//! - after every call into the proxy: each [`Proxy::poll_event`] goes to
//!   [`Replicator::on_proxy_event`], each [`Proxy::poll_handshake_change`]
//!   to [`Replicator::on_handshake`], and when [`Proxy::resync_needed`]
//!   turns true, [`Replicator::resync`] with [`Proxy::served_events`] then
//!   [`Proxy::clear_resync`];
//! - a subscriber added or revoked in the shell's store goes to
//!   [`Replicator::on_subscriber`];
//! - sync messages from the peer link go to [`Replicator::handle_message`],
//!   [`Replicator::poll_transmit`] to the link; timers through
//!   [`Replicator::poll_timeout`] / [`Replicator::handle_timeout`];
//! - [`Replicator::poll_apply`] is drained after each of these, in order,
//!   into the proxy ([`Apply`]).
//!
//! [`Proxy::poll_event`]: crate::proxy::Proxy::poll_event
//! [`Proxy::poll_handshake_change`]: crate::proxy::Proxy::poll_handshake_change
//! [`Proxy::resync_needed`]: crate::proxy::Proxy::resync_needed
//! [`Proxy::served_events`]: crate::proxy::Proxy::served_events
//! [`Proxy::clear_resync`]: crate::proxy::Proxy::clear_resync

pub mod codec;
mod remote;
mod sweep;

use crate::call::{Cause, Name};
use crate::crypto::PublicKey;
use crate::proxy::ProxyEvent;
use crate::session::{CallId, SessionId};
use crate::sync::{
    AllPeers, Config, Engine, Key, NodeId, PeerError, Scope, SyncDrop, WallMs, WriteError,
};
use codec::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What the shell applies to its proxy, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Apply {
    /// Another proxy's change: `Proxy::apply_remote(now, &event)`.
    Proxy(ProxyEvent),
    /// A client key's newest handshake time stamp (TAI64N) from another
    /// proxy: `proxy.replay_table_mut().merge(&[0; 12], [(key, ts)], now)`,
    /// so a captured initiation replayed here is refused.
    Handshake {
        /// The client's static key.
        key: PublicKey,
        /// Its newest handshake time stamp.
        ts: [u8; 12],
    },
    /// A subscriber (name, key) added (`live`) or revoked on another proxy:
    /// the shell updates its store and hands the proxy the new
    /// `Subscribers` (`Proxy::set_subscribers`, which ends the sessions of
    /// a revoked key).
    Subscriber {
        /// The name.
        name: Name,
        /// The client key.
        key: PublicKey,
        /// Authorised (true) or revoked (false).
        live: bool,
    },
    /// The replicated tables may lack what this proxy serves (the engine
    /// reset a stale table, or events were lost): call
    /// [`Replicator::resync`] with `Proxy::served_events`.
    Resync,
}

/// Counters of the bridge (the engine has its own, [`Engine::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Proxy events taken in.
    pub events_in: u64,
    /// Local writes (and deletes) made.
    pub writes: u64,
    /// Writes that had to take the entry over (another proxy owned it).
    pub takeovers: u64,
    /// Local writes the engine refused (limits); the entry is repaired by
    /// the next resync.
    pub write_errors: u64,
    /// Remote entries whose key or value did not parse (dropped).
    pub bad_entries: u64,
    /// Remote registrations parked until their session arrives.
    pub parked: u64,
    /// Parked registrations released after their session.
    pub unparked: u64,
    /// Re-writes that make a merge rule win over last-writer-wins (a lower
    /// handshake time stamp, a call revived after its end).
    pub rewrites: u64,
    /// Items handed to the shell by [`Replicator::poll_apply`].
    pub applies: u64,
    /// Resyncs asked for ([`Apply::Resync`]).
    pub resyncs: u64,
    /// Entries of this node that a resync's sweep deleted: their end was
    /// lost with the events (docs/anypsp-protocol.md 17.3).
    pub swept: u64,
}

/// The proxy side of the sync engine: owns the [`Engine`] and the small
/// indexes that turn events into entries and back.
///
/// Memory: besides the engine's tables, one index entry per registration
/// (session, name hash -> name), one per call leg, and one per parked
/// registration; each is bounded by the engine's table of its scope.
#[derive(Debug)]
pub struct Replicator {
    engine: Engine,
    applies: VecDeque<Apply>,
    /// Registration entries by session: (session, name hash) -> name.
    /// Finds a session's registrations in O(log n) when it ends, and the
    /// name of a registration whose tombstone carries none.
    regs: BTreeMap<(u64, [u8; 16]), Name>,
    /// Call legs by call: (call, callee), to delete them with the call.
    legs: BTreeSet<(u64, u64)>,
    /// Remote registrations waiting for their session: (session, name hash).
    parked: BTreeSet<(u64, [u8; 16])>,
    /// Latched once every connected peer was found in sync.
    synced: bool,
    resync_queued: bool,
    /// The latest wall time given (re-writes made while applying use it).
    now: WallMs,
    stats: BridgeStats,
    /// The marks and sweep of the resync under way.
    sweep: Option<sweep::Sweep>,
}

impl Replicator {
    /// A replicator with an engine configured by `cfg` (full-mesh policy),
    /// at wall time `now`.
    pub fn new(cfg: Config, now: WallMs) -> Self {
        Self {
            engine: Engine::new(cfg, Box::new(AllPeers), now),
            applies: VecDeque::new(),
            regs: BTreeMap::new(),
            legs: BTreeSet::new(),
            parked: BTreeSet::new(),
            synced: false,
            resync_queued: false,
            now,
            stats: BridgeStats::default(),
            sweep: None,
        }
    }

    /// The engine (digests, stats, peer status).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, to change what this bridge does not wrap (remove_peer,
    /// lookup). Its events must still be drained by this bridge: do not
    /// call `poll_event` on it.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.engine.node()
    }

    /// The bridge's counters.
    pub fn stats(&self) -> &BridgeStats {
        &self.stats
    }

    /// Configures `peer` (see [`Engine::add_peer`]).
    ///
    /// # Errors
    /// [`PeerError`] as [`Engine::add_peer`].
    pub fn add_peer(&mut self, peer: NodeId) -> Result<(), PeerError> {
        self.engine.add_peer(peer)
    }

    /// The authenticated link to `peer` is up (see [`Engine::peer_connected`]).
    pub fn peer_connected(&mut self, now: WallMs, peer: NodeId) {
        self.tick(now);
        self.engine.peer_connected(now, peer);
        self.pump();
    }

    /// The link to `peer` went down.
    pub fn peer_disconnected(&mut self, peer: NodeId) {
        self.engine.peer_disconnected(peer);
    }

    /// One sync message from `from`, the peer id the link authenticated.
    ///
    /// # Errors
    /// The [`SyncDrop`] it was dropped for (counted by the engine).
    pub fn handle_message(
        &mut self,
        now: WallMs,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), SyncDrop> {
        self.tick(now);
        let r = self.engine.handle_message(now, from, bytes);
        self.pump();
        r
    }

    /// The next sync message for a peer's link.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.engine.poll_transmit()
    }

    /// When [`Replicator::handle_timeout`] wants to be called (wall ms).
    pub fn poll_timeout(&self) -> Option<WallMs> {
        self.engine.poll_timeout()
    }

    /// Runs the engine's timers due at `now`.
    pub fn handle_timeout(&mut self, now: WallMs) {
        self.tick(now);
        self.engine.handle_timeout(now);
        self.pump();
    }

    /// True once this node has reconciled every scope with every connected
    /// peer since it started (latched; also true with no peer configured).
    /// A restarted proxy serves clients only after this (or after a time-out
    /// of the shell's when no peer answers): it has then pulled the full
    /// table (docs/anypsp-protocol.md Section 16.7).
    pub fn synced(&self) -> bool {
        self.synced || self.engine.peers().next().is_none()
    }

    /// True once the current link to `peer` found every shared scope equal
    /// (see [`Engine::peer_synced`]).
    pub fn peer_synced(&self, peer: NodeId) -> bool {
        self.engine.peer_synced(peer)
    }

    /// The next item to apply to the proxy, oldest first.
    pub fn poll_apply(&mut self) -> Option<Apply> {
        let a = self.applies.pop_front();
        if a.is_some() {
            self.stats.applies += 1;
        }
        if matches!(a, Some(Apply::Resync)) {
            self.resync_queued = false;
        }
        a
    }

    /// Takes in one change of this proxy's state (in the order the proxy
    /// emitted them) and writes, takes over or deletes the entries it
    /// touches (Section 16). A session whose record names another proxy as
    /// serving is not ours to write and is ignored.
    pub fn on_proxy_event(&mut self, now: WallMs, ev: &ProxyEvent) {
        self.stats.events_in += 1;
        self.tick(now);
        let me = self.node();
        match ev {
            ProxyEvent::SessionUp(r) | ProxyEvent::SessionUpdated(r) => {
                if r.serving.get() == me {
                    let v = encode_session(r);
                    self.put(now, SCOPE_SESSIONS, session_key(r.state.id), &v);
                }
            }
            ProxyEvent::SessionDown { id, .. } => self.session_down(now, *id),
            ProxyEvent::Registered {
                name,
                session,
                expires_unix_ms,
            } => {
                let v = encode_registration(name, *expires_unix_ms);
                let h = name_hash(name);
                self.put(now, SCOPE_REGISTRATIONS, reg_key_hashed(*session, &h), &v);
                self.regs.insert((session.raw(), h), name.clone());
            }
            ProxyEvent::Unregistered { name, session } => {
                let h = name_hash(name);
                self.regs.remove(&(session.raw(), h));
                self.remove(now, SCOPE_REGISTRATIONS, reg_key_hashed(*session, &h));
            }
            ProxyEvent::CallStarted {
                call,
                caller,
                callees,
                at_unix_ms,
                owner,
            } => {
                let h = CallHead {
                    caller: *caller,
                    started_unix_ms: *at_unix_ms,
                    callees: callees.clone(),
                    answered: None,
                    owner: *owner,
                };
                self.put(now, SCOPE_CALLS, call_key(*call), &encode_call(&h));
            }
            ProxyEvent::CallRinging { call, callee } => self.leg(now, *call, *callee, LEG_RINGING),
            ProxyEvent::CallLegDropped { call, callee } => {
                self.leg(now, *call, *callee, LEG_DROPPED)
            }
            ProxyEvent::CallAnswered {
                call,
                caller,
                callee,
                at_unix_ms,
            } => {
                let mut h = self.call_head(*call).unwrap_or(CallHead {
                    caller: *caller,
                    started_unix_ms: *at_unix_ms,
                    callees: vec![*callee],
                    answered: None,
                    // Answered: no decision is left for an owner.
                    owner: None,
                });
                h.caller = *caller;
                h.answered = Some((*callee, *at_unix_ms));
                self.put(now, SCOPE_CALLS, call_key(*call), &encode_call(&h));
            }
            ProxyEvent::CallEnded { call, .. } => self.call_ended(now, *call),
        }
    }

    /// A client key's newest handshake time stamp changed here (from
    /// `Proxy::poll_handshake_change`): replicated as a max-register, so a
    /// captured initiation replayed to another proxy is refused there.
    pub fn on_handshake(&mut self, now: WallMs, key: &PublicKey, ts: [u8; 12]) {
        let k = handshake_key(key);
        let cur = self
            .live_value(SCOPE_HANDSHAKES, &k)
            .and_then(|v| decode_handshake(&v));
        if cur.is_some_and(|c| c >= ts) {
            return;
        }
        self.put(now, SCOPE_HANDSHAKES, k, &encode_handshake(&ts));
    }

    /// A subscriber (name, key) was added (`live`) or revoked in this
    /// proxy's store. A revocation is kept as a record with live = 0 (the
    /// name must reach proxies that never held the pair; Section 16.6).
    pub fn on_subscriber(&mut self, now: WallMs, name: &Name, key: &PublicKey, live: bool) {
        let k = subscriber_key(name, key);
        let v = encode_subscriber(name, live);
        if self.live_value(SCOPE_SUBSCRIBERS, &k).as_deref() == Some(&v[..]) {
            return;
        }
        self.put(now, SCOPE_SUBSCRIBERS, k, &v);
    }

    /// Re-writes (or takes over) everything this proxy serves, from
    /// `Proxy::served_events` (after [`Apply::Resync`] or a hole in the
    /// proxy's event stream), and deletes what this node owns that is no
    /// longer served (the sweep, [`Replicator::begin_resync`]). O(n): an
    /// infrastructure event. A shell that lists in chunks calls
    /// `begin_resync`, `on_proxy_event`, `end_resync` and `sweep_step`.
    /// `held` says whether the proxy still holds a call
    /// ([`Replicator::sweep_step`]).
    pub fn resync(
        &mut self,
        now: WallMs,
        served: impl IntoIterator<Item = ProxyEvent>,
        held: &dyn Fn(crate::session::CallId) -> bool,
    ) {
        self.begin_resync();
        for ev in served {
            self.on_proxy_event(now, &ev);
        }
        self.end_resync();
        while self.sweep_step(now, usize::MAX, held) {}
    }

    /// Writes `value` under `key` as its owner; an entry another proxy owns
    /// is taken over (its serving proxy moved here).
    fn put(&mut self, now: WallMs, scope: Scope, key: Key, value: &[u8]) {
        self.stats.writes += 1;
        self.mark(scope, &key);
        match self.engine.write(now, scope, key.clone(), value) {
            Ok(_) => {}
            Err(WriteError::NotOwner { .. }) => {
                self.stats.takeovers += 1;
                if self.engine.take_over(now, scope, key, value).is_err() {
                    self.stats.write_errors += 1;
                }
            }
            Err(_) => self.stats.write_errors += 1,
        }
    }

    /// Deletes `key` (a tombstone); an entry another proxy owns is taken
    /// over first. Nothing to delete is not an error.
    fn remove(&mut self, now: WallMs, scope: Scope, key: Key) {
        self.stats.writes += 1;
        match self.engine.delete(now, scope, key.clone()) {
            Ok(_) | Err(WriteError::NotFound) => {}
            Err(WriteError::NotOwner { .. }) => {
                self.stats.takeovers += 1;
                let v = self.live_value(scope, &key).unwrap_or_default();
                let r = self
                    .engine
                    .take_over(now, scope, key.clone(), &v)
                    .and_then(|_| self.engine.delete(now, scope, key));
                if r.is_err() {
                    self.stats.write_errors += 1;
                }
            }
            Err(_) => self.stats.write_errors += 1,
        }
    }

    fn live_value(&self, scope: Scope, key: &Key) -> Option<Box<[u8]>> {
        self.engine.get(scope, key).and_then(|e| e.value.clone())
    }

    fn call_head(&self, call: CallId) -> Option<CallHead> {
        self.live_value(SCOPE_CALLS, &call_key(call))
            .and_then(|v| decode_call(&v))
    }

    fn leg(&mut self, now: WallMs, call: CallId, callee: SessionId, state: u8) {
        self.legs.insert((call.0, callee.raw()));
        self.put(now, SCOPE_CALLS, leg_key(call, callee), &encode_leg(state));
    }

    /// A session ended here: its entry and its registrations go.
    fn session_down(&mut self, now: WallMs, id: SessionId) {
        self.remove(now, SCOPE_SESSIONS, session_key(id));
        let hs: Vec<[u8; 16]> = self.session_regs(id);
        for h in hs {
            self.regs.remove(&(id.raw(), h));
            self.remove(now, SCOPE_REGISTRATIONS, reg_key_hashed(id, &h));
        }
        self.unpark_drop(id);
    }

    /// Name hashes of `id`'s registrations, O(log n + k).
    fn session_regs(&self, id: SessionId) -> Vec<[u8; 16]> {
        self.regs
            .range((id.raw(), [0; 16])..=(id.raw(), [0xff; 16]))
            .map(|((_, h), _)| *h)
            .collect()
    }

    fn unpark_drop(&mut self, id: SessionId) {
        let ks: Vec<_> = self
            .parked
            .range((id.raw(), [0; 16])..=(id.raw(), [0xff; 16]))
            .copied()
            .collect();
        for k in ks {
            self.parked.remove(&k);
        }
    }

    /// A call ended here: its head and legs go.
    fn call_ended(&mut self, now: WallMs, call: CallId) {
        self.remove(now, SCOPE_CALLS, call_key(call));
        let legs: Vec<u64> = self
            .legs
            .range((call.0, 0)..=(call.0, u64::MAX))
            .map(|(_, s)| *s)
            .collect();
        for s in legs {
            self.legs.remove(&(call.0, s));
            if let Some(s) = SessionId::from_raw(s) {
                self.remove(now, SCOPE_CALLS, leg_key(call, s));
            }
        }
    }

    fn tick(&mut self, now: WallMs) {
        self.now = self.now.max(now);
    }

    fn queue_resync(&mut self) {
        self.stats.resyncs += 1;
        if !self.resync_queued {
            self.resync_queued = true;
            self.applies.push_back(Apply::Resync);
        }
    }

    /// Latches `synced` once every connected peer is in sync.
    fn update_synced(&mut self) {
        if self.synced {
            return;
        }
        let mut any = false;
        for p in self.engine.peers() {
            if self.engine.peer_status(p).is_some_and(|s| s.connected) {
                if !self.engine.peer_synced(p) {
                    return;
                }
                any = true;
            }
        }
        self.synced = any;
    }

    /// The cause a replica reports for a session or call ended elsewhere
    /// (a tombstone carries none).
    fn remote_cause() -> Cause {
        Cause::NetworkFailure
    }
}

#[cfg(test)]
mod tests;
