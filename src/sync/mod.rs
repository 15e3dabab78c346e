//! anypsp: the proxy-to-proxy protocol (docs/anypsp-link.md for the link,
//! docs/anypsp-protocol.md for the tables).
//!
//! - [`members`]: who the peers are, their addresses, keys and revocation.
//! - [`link`]: the encrypted, mutually authenticated peer link (Noise KK
//!   over TCP), sans-IO.
//! - [`Engine`] ([`msg`], [`table`], [`types`], [`testbed`]): the sync
//!   engine, replicated tables shared by the proxies of one anycast network.
//!
//! The engine is sans-IO like the proxy core: the caller feeds it messages
//! from peers ([`Engine::handle_message`]), the time ([`Engine::handle_timeout`])
//! and local writes ([`Engine::write`], [`Engine::take_over`],
//! [`Engine::delete`]), and drains what it wants sent
//! ([`Engine::poll_transmit`]), when it wants to be called again
//! ([`Engine::poll_timeout`]) and what changed ([`Engine::poll_event`]).
//! Time is the caller's wall clock in ms ([`WallMs`]); the engine reads no
//! clock and draws its jitter from a seeded generator, so a run is a pure
//! function of its inputs.
//!
//! Each entry has an owner, an owner epoch and a hybrid-logical-clock
//! version; last-writer-wins by (epoch, version) gives every node the same
//! table. A local change is pushed at once to every peer in the entry's
//! scope through a bounded per-peer queue; a peer whose queue overflows, and
//! every peer on connect and periodically, is repaired by range-based set
//! reconciliation (anti-entropy) over fingerprints of hash ranges, with a
//! reply budget and a continuation so no message grows with the table.
//! The encrypted link that carries the messages is `docs/anypsp-link.md`.

pub mod bridge;
pub mod link;
pub mod members;
pub mod msg;
pub mod table;
pub mod testbed;
pub mod types;

use msg::{
    caps, Digest, Hello, ItemId, Location, Lookup, LookupReply, LookupStatus, Msg, MsgError, Need,
    Push, RangeFp, RangeIds, RangeItems, Reset, ScopeSummary, MAX_ITEMS, MAX_MSG, MAX_VALUE,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use table::{Applied, Hasher, Table};
pub use types::{ClockSkew, Entry, Hlc, Key, KeyTooLong, NodeId, Scope, Stamp, Version, WallMs};

/// Decides which peers hold the entries of a scope (docs/anypsp-protocol.md
/// Section 4.4). Version 1 uses [`AllPeers`]; later policies (an owner's
/// failover set, the parties of a call, a name's directory replicas) plug
/// in here without changing the messages.
pub trait Policy: Send {
    /// Is `peer` in `scope`? Pushes and reconciliation of `scope` go only to
    /// peers for which this holds, and entries of `scope` are accepted only
    /// from them.
    fn in_scope(&self, scope: Scope, peer: NodeId) -> bool;
}

/// Full mesh: every peer holds every scope.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllPeers;

impl Policy for AllPeers {
    fn in_scope(&self, _scope: Scope, _peer: NodeId) -> bool {
        true
    }
}

/// Engine limits and timers (docs/anypsp-protocol.md Section 9).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (its proxy id, 1 to 0xFFFE).
    pub node: NodeId,
    /// Secret shared by the mesh, keying the range fingerprints.
    pub fp_key: [u8; 32],
    /// Seed of the jitter generator.
    pub seed: u64,
    /// Most peers.
    pub max_peers: usize,
    /// Most scopes.
    pub max_scopes: usize,
    /// Most entries per scope (tombstones included).
    pub max_entries: usize,
    /// Largest value, bytes (at most [`MAX_VALUE`]).
    pub max_value: usize,
    /// Most bytes queued for one peer (sealed messages and pending pushes).
    pub max_queue_bytes: usize,
    /// Most undrained events; past it events are dropped and
    /// [`Event::Overflow`] tells the owner to rescan.
    pub max_events: usize,
    /// Interval between anti-entropy rounds with each peer, ms.
    pub ae_interval_ms: u64,
    /// Tombstone horizon, ms: a tombstone is dropped this long after its
    /// version time, and a peer that has not reconciled for this long is
    /// told to reset.
    pub tombstone_ttl_ms: u64,
    /// How far ahead of our wall clock a peer's version may be, ms.
    pub max_drift_ms: u64,
    /// A range with at most this many entries is answered with its ids.
    pub leaf_items: usize,
    /// A differing range is split into this many sub-ranges.
    pub fanout: u64,
    /// Bytes one reconciliation message may cause us to queue in reply;
    /// the rest of its ranges goes back as a continuation.
    pub reply_budget: usize,
    /// How long a Lookup or Need waits for its answer, ms.
    pub request_timeout_ms: u64,
    /// Most outstanding Lookup/Need requests.
    pub max_requests: usize,
}

impl Config {
    /// Defaults for `node` with fingerprint key `fp_key`.
    pub fn new(node: NodeId, fp_key: [u8; 32]) -> Self {
        Self {
            node,
            fp_key,
            seed: node as u64,
            max_peers: 64,
            max_scopes: 32,
            max_entries: 4_000_000,
            max_value: MAX_VALUE,
            max_queue_bytes: 8 << 20,
            max_events: 1 << 20,
            ae_interval_ms: 10_000,
            tombstone_ttl_ms: 3_600_000,
            max_drift_ms: 60_000,
            leaf_items: 32,
            fanout: 16,
            reply_budget: 256 << 10,
            request_timeout_ms: 5_000,
            max_requests: 1024,
        }
    }
}

macro_rules! sync_drops {
    ($($(#[$doc:meta])* $name:ident => $label:literal,)*) => {
        /// Why a message (or one entry in it) from a peer was dropped, or our
        /// output to a peer was. Counted per reason; labels are stable
        /// metric labels (docs/anypsp-protocol.md Section 11).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum SyncDrop {
            $($(#[$doc])* $name,)*
        }

        impl SyncDrop {
            /// Every reason, in counter order.
            pub const ALL: &'static [SyncDrop] = &[$(SyncDrop::$name,)*];

            /// Stable snake_case name, used as the metric label.
            pub fn label(self) -> &'static str {
                match self { $(SyncDrop::$name => $label,)* }
            }
        }
    };
}

sync_drops! {
    /// Shorter than its header, or a field ran past the end.
    Truncated => "truncated",
    /// Longer than the message limit.
    Oversized => "oversized",
    /// A message type this node does not know (skipped).
    UnknownType => "unknown_type",
    /// A sync version this node does not speak.
    BadVersion => "bad_version",
    /// An unknown critical field.
    UnknownCritical => "unknown_critical",
    /// Fields malformed, out of order or missing.
    BadField => "bad_field",
    /// More list items than a message may carry.
    TooManyItems => "too_many_items",
    /// A key or value over its limit.
    TooLarge => "too_large",
    /// From a node that is not a configured peer.
    UnknownPeer => "unknown_peer",
    /// From a peer whose link is not up.
    NotConnected => "not_connected",
    /// A Hello naming another node than the link authenticated.
    WrongNode => "wrong_node",
    /// Anything but Hello before the peer's Hello.
    HelloFirst => "hello_first",
    /// An entry whose version was not drawn by its owner, or with a
    /// reserved node id.
    BadEntry => "bad_entry",
    /// A version too far ahead of our clock.
    ClockSkew => "clock_skew",
    /// The scope's table is full.
    TableFull => "table_full",
    /// More scopes than allowed.
    TooManyScopes => "too_many_scopes",
    /// An entry or request for a scope the policy does not share with this
    /// peer.
    OutOfScope => "out_of_scope",
    /// A Reset for a table that is not stale.
    BadReset => "bad_reset",
    /// An answer to no request of ours.
    Unsolicited => "unsolicited",
    /// Our output to this peer did not fit its queue (the peer falls back
    /// to anti-entropy).
    QueueOverflow => "queue_overflow",
}

impl From<MsgError> for SyncDrop {
    fn from(e: MsgError) -> Self {
        match e {
            MsgError::Truncated => Self::Truncated,
            MsgError::Oversized => Self::Oversized,
            MsgError::UnknownType(_) => Self::UnknownType,
            MsgError::BadVersion(_) => Self::BadVersion,
            MsgError::UnknownCritical(_) => Self::UnknownCritical,
            MsgError::BadField(_) => Self::BadField,
            MsgError::TooManyItems => Self::TooManyItems,
            MsgError::TooLarge => Self::TooLarge,
        }
    }
}

/// Counters of the engine (exported as metrics by the shell).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Drops per [`SyncDrop`] reason, indexed by `reason as usize`.
    pub drops: [u64; SyncDrop::ALL.len()],
    /// Messages received (parsed or not).
    pub msgs_in: u64,
    /// Messages handed to [`Engine::poll_transmit`]'s caller.
    pub msgs_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Remote entries stored (new or newer).
    pub applied: u64,
    /// Entries queued in pushes of local writes (one per peer).
    pub pushed: u64,
    /// Entries sent as repairs (reconciliation and Need answers).
    pub repaired: u64,
    /// Reconciliation rounds started.
    pub rounds: u64,
    /// Unknown non-critical fields skipped.
    pub skipped_fields: u64,
    /// Tombstones expired.
    pub expired: u64,
    /// Resets applied to our tables.
    pub resets: u64,
}

impl Stats {
    /// Drops counted for `r`.
    pub fn drops(&self, r: SyncDrop) -> u64 {
        self.drops[r as usize]
    }
}

/// What the engine tells its owner (the proxy applies these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer's entry was stored: a write, a take-over or a tombstone.
    Changed {
        /// Its scope.
        scope: Scope,
        /// The entry now held.
        entry: Entry,
        /// What it replaced.
        previous: Option<Entry>,
    },
    /// An entry this node owned now has another owner (fenced by a
    /// higher epoch, or lost a concurrent take-over): stop serving it.
    OwnershipLost {
        /// Its scope.
        scope: Scope,
        /// The key.
        key: Key,
        /// The new owner.
        owner: NodeId,
        /// The new owner's epoch.
        epoch: u32,
    },
    /// The scope's table was cleared because it was too stale; it is being
    /// refilled from peers. The owner re-writes what it serves.
    Reset {
        /// The scope.
        scope: Scope,
    },
    /// A peer's Hello arrived: the peer is ready.
    PeerReady {
        /// The peer.
        peer: NodeId,
    },
    /// The answer to [`Engine::lookup`].
    LookupDone {
        /// Who answered.
        peer: NodeId,
        /// The request id `lookup` returned.
        req: u32,
        /// The answer.
        status: LookupStatus,
    },
    /// A Lookup or Need got no answer in time.
    RequestTimedOut {
        /// The peer asked.
        peer: NodeId,
        /// The request id.
        req: u32,
    },
    /// Events were dropped because nobody drained them: rescan the tables.
    Overflow,
}

/// Why a local write was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Value over the configured limit (length given).
    #[error("value of {0} bytes over the limit")]
    ValueTooLarge(usize),
    /// Another node owns the entry; take it over first.
    #[error("entry owned by node {owner} at epoch {epoch}")]
    NotOwner {
        /// The owner.
        owner: NodeId,
        /// Its epoch.
        epoch: u32,
    },
    /// Nothing to delete.
    #[error("no such entry")]
    NotFound,
    /// The scope's table is full.
    #[error("table full")]
    TableFull,
    /// No more scopes may be created.
    #[error("too many scopes")]
    TooManyScopes,
    /// The epoch cannot grow further.
    #[error("epoch exhausted")]
    EpochExhausted,
}

/// Why a peer could not be added or asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// [`Config::max_peers`] reached.
    #[error("too many peers")]
    TooMany,
    /// Our own id, or a reserved id (0, 0xFFFF).
    #[error("invalid peer id {0}")]
    BadId(NodeId),
    /// Not a configured peer, or its link is not ready.
    #[error("peer {0} not ready")]
    NotReady(NodeId),
    /// Too many outstanding requests.
    #[error("too many outstanding requests")]
    TooManyRequests,
    /// The request did not fit the peer's queue.
    #[error("queue full")]
    QueueFull,
}

#[derive(Debug, Default)]
struct PeerScope {
    next_round: WallMs,
    /// Set when a push was lost (queue overflow): reconcile soon.
    due: bool,
    /// A full-range comparison with the peer found the scope equal on the
    /// current link (Hello digests equal, or an in-sync Digest either way).
    /// Until then every reconciliation message of the scope from the peer
    /// (re)schedules a confirming round shortly after the last one, so the
    /// end of a repair is observed (Section 7.4).
    synced: bool,
    /// While not `synced`: the latest time the confirming round may be
    /// put off to (continuous pushes must not put it off for ever).
    confirm_cap: WallMs,
}

#[derive(Debug, Default)]
struct Peer {
    connected: bool,
    /// The peer's capabilities, once its Hello arrived.
    caps: Option<u32>,
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
    /// Entry fields of the Push being built.
    push_buf: Vec<u8>,
    push_n: usize,
    scopes: BTreeMap<Scope, PeerScope>,
    /// Wall ms of the last message from the peer that was not dropped
    /// (kept across reconnects; 0 = never).
    last_heard: WallMs,
}

/// A peer's sync state, for metrics and the CLI ("sync lag", "queue depth").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The link is up.
    pub connected: bool,
    /// The peer's Hello arrived on the current link.
    pub ready: bool,
    /// Bytes queued for the peer.
    pub queued_bytes: usize,
    /// Wall ms of the last message from the peer that was not dropped.
    pub last_heard_ms: Option<WallMs>,
}

impl Peer {
    fn queued(&self) -> usize {
        self.out_bytes + self.push_buf.len()
    }
    fn ready(&self, cap: u32) -> bool {
        self.connected && self.caps.is_some_and(|c| c & cap != 0)
    }
}

/// The sync engine of one node.
pub struct Engine {
    cfg: Config,
    hlc: Hlc,
    hasher: Hasher,
    policy: Box<dyn Policy>,
    tables: BTreeMap<Scope, Table>,
    peers: BTreeMap<NodeId, Peer>,
    events: VecDeque<Event>,
    events_lost: bool,
    stats: Stats,
    rng: u64,
    next_req: u32,
    requests: BTreeMap<u32, (NodeId, WallMs)>,
    now: WallMs,
    rr: NodeId,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node", &self.cfg.node)
            .field("scopes", &self.tables.len())
            .field("peers", &self.peers.len())
            .finish()
    }
}

/// Replies built while handling one reconciliation message, within the
/// reply budget.
#[derive(Default)]
struct Reply {
    ranges: Vec<RangeFp>,
    ids: Vec<RangeIds>,
    push: Vec<Entry>,
    need: Vec<Key>,
    bytes: usize,
}

impl Engine {
    /// A node with no peers and empty tables, at wall time `now`.
    pub fn new(cfg: Config, policy: Box<dyn Policy>, now: WallMs) -> Self {
        let hasher = Hasher::new(&cfg.fp_key);
        Self {
            hlc: Hlc::new(cfg.node),
            hasher,
            policy,
            tables: BTreeMap::new(),
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            events_lost: false,
            stats: Stats::default(),
            rng: cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
            next_req: 1,
            requests: BTreeMap::new(),
            now,
            rr: 0,
            cfg,
        }
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.cfg.node
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Configures `peer`.
    ///
    /// # Errors
    /// [`PeerError::TooMany`] past [`Config::max_peers`];
    /// [`PeerError::BadId`] for our own or a reserved id.
    pub fn add_peer(&mut self, peer: NodeId) -> Result<(), PeerError> {
        if peer == self.cfg.node || peer == 0 || peer == 0xFFFF {
            return Err(PeerError::BadId(peer));
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.cfg.max_peers {
            return Err(PeerError::TooMany);
        }
        self.peers.entry(peer).or_default();
        Ok(())
    }

    /// Forgets `peer` (revoked or removed from the configuration).
    pub fn remove_peer(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
        self.requests.retain(|_, (p, _)| *p != peer);
    }

    /// The link to `peer` is up (authenticated): queues our Hello.
    pub fn peer_connected(&mut self, now: WallMs, peer: NodeId) {
        self.tick(now);
        let hello = Msg::Hello(Hello {
            node: self.cfg.node,
            caps: caps::V1,
            scopes: self
                .tables
                .iter()
                .map(|(s, t)| {
                    let (count, fp) = t.digest();
                    ScopeSummary {
                        scope: *s,
                        synced_ms: t.synced_ms,
                        count,
                        fp,
                    }
                })
                .collect(),
        })
        .encode();
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        *p = Peer {
            connected: true,
            last_heard: p.last_heard,
            ..Peer::default()
        };
        self.enqueue(peer, hello);
    }

    /// The link to `peer` went down: its queue is dropped (what it missed
    /// is repaired by reconciliation after the next Hello).
    pub fn peer_disconnected(&mut self, peer: NodeId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            *p = Peer {
                last_heard: p.last_heard,
                ..Peer::default()
            };
        }
        self.requests.retain(|_, (p, _)| *p != peer);
    }

    /// The configured peers.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// `peer`'s sync state, if it is configured.
    pub fn peer_status(&self, peer: NodeId) -> Option<PeerStatus> {
        self.peers.get(&peer).map(|p| PeerStatus {
            connected: p.connected,
            ready: p.connected && p.caps.is_some(),
            queued_bytes: p.queued(),
            last_heard_ms: (p.last_heard != 0).then_some(p.last_heard),
        })
    }

    /// Bytes queued for `peer` (the metric "queue depth").
    pub fn queue_depth(&self, peer: NodeId) -> usize {
        self.peers.get(&peer).map_or(0, Peer::queued)
    }

    /// True once, on the current link, every scope shared with `peer` was
    /// found equal by a full-range comparison since the link came up
    /// (docs/anypsp-protocol.md Section 7.4): a node restarted empty has
    /// then pulled the peer's whole table. False for an unknown or
    /// disconnected peer, or before its Hello.
    pub fn peer_synced(&self, peer: NodeId) -> bool {
        self.peers.get(&peer).is_some_and(|p| {
            p.connected && p.caps.is_some() && p.scopes.values().all(|ps| ps.synced)
        })
    }

    /// Count and fingerprint of `scope` (zero when absent).
    pub fn digest(&self, scope: Scope) -> (u64, u128) {
        self.tables.get(&scope).map_or((0, 0), Table::digest)
    }

    /// Scopes held.
    pub fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.tables.keys().copied()
    }

    /// The table of `scope`, if held.
    pub fn table(&self, scope: Scope) -> Option<&Table> {
        self.tables.get(&scope)
    }

    /// The entry under `key` (tombstones included).
    pub fn get(&self, scope: Scope, key: &Key) -> Option<&Entry> {
        self.tables.get(&scope)?.get(&self.hasher, key)
    }

    /// Writes `value` under `key` as its owner. Creates the entry (owned by
    /// us) if absent or deleted.
    ///
    /// # Errors
    /// [`WriteError::NotOwner`] if a live entry belongs to another node
    /// (use [`Engine::take_over`]); limits.
    pub fn write(
        &mut self,
        now: WallMs,
        scope: Scope,
        key: Key,
        value: &[u8],
    ) -> Result<Stamp, WriteError> {
        self.local(now, scope, key, Some(value), false)
    }

    /// Takes the entry over: we become its owner at the next epoch, which
    /// fences every later write of the old owner (`value` as the new value).
    ///
    /// # Errors
    /// Limits; [`WriteError::EpochExhausted`].
    pub fn take_over(
        &mut self,
        now: WallMs,
        scope: Scope,
        key: Key,
        value: &[u8],
    ) -> Result<Stamp, WriteError> {
        self.local(now, scope, key, Some(value), true)
    }

    /// Deletes our entry: writes a tombstone.
    ///
    /// # Errors
    /// [`WriteError::NotFound`], [`WriteError::NotOwner`].
    pub fn delete(&mut self, now: WallMs, scope: Scope, key: Key) -> Result<Stamp, WriteError> {
        self.local(now, scope, key, None, false)
    }

    fn local(
        &mut self,
        now: WallMs,
        scope: Scope,
        key: Key,
        value: Option<&[u8]>,
        takeover: bool,
    ) -> Result<Stamp, WriteError> {
        self.tick(now);
        if let Some(v) = value {
            if v.len() > self.cfg.max_value.min(MAX_VALUE) {
                return Err(WriteError::ValueTooLarge(v.len()));
            }
        }
        let me = self.cfg.node;
        let existing = self
            .get(scope, &key)
            .map(|e| (e.owner, e.stamp.epoch, e.is_tombstone()));
        let epoch = match existing {
            None if value.is_none() => return Err(WriteError::NotFound),
            None => 0,
            Some((_, _, true)) if value.is_none() => return Err(WriteError::NotFound),
            Some((_, e, _)) if takeover => e.checked_add(1).ok_or(WriteError::EpochExhausted)?,
            // A new life after another owner's deletion: a new epoch, so
            // that owner's late writes of the old life lose.
            Some((o, e, true)) if o != me => e.checked_add(1).ok_or(WriteError::EpochExhausted)?,
            Some((o, e, false)) if o != me => {
                return Err(WriteError::NotOwner { owner: o, epoch: e })
            }
            Some((_, e, _)) => e,
        };
        self.table_mut(scope)
            .map_err(|_| WriteError::TooManyScopes)?;
        let stamp = Stamp {
            epoch,
            version: self.hlc.now(now),
        };
        let entry = Entry {
            key,
            owner: me,
            stamp,
            value: value.map(Into::into),
        };
        let expire = now.saturating_sub(self.cfg.tombstone_ttl_ms);
        let table = self.tables.get_mut(&scope).expect("created above");
        match table.apply(&self.hasher, entry.clone(), expire) {
            Applied::Stored { .. } => {}
            Applied::Full => return Err(WriteError::TableFull),
            // Our clock is ahead of everything we hold, so this cannot
            // happen; treat it as "nothing to send".
            _ => return Ok(stamp),
        }
        self.push_to_peers(scope, &entry);
        Ok(stamp)
    }

    fn table_mut(&mut self, scope: Scope) -> Result<&mut Table, SyncDrop> {
        if !self.tables.contains_key(&scope) {
            if self.tables.len() >= self.cfg.max_scopes {
                return Err(SyncDrop::TooManyScopes);
            }
            // A scope that appears after a peer's Hello has no round
            // scheduled with that peer yet; without one, a push lost on the
            // way would never be repaired.
            let ready: Vec<NodeId> = self
                .peers
                .iter()
                .filter(|(id, p)| {
                    p.connected && p.caps.is_some() && self.policy.in_scope(scope, **id)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in ready {
                let next = self.next_round_time(self.now);
                if let Some(p) = self.peers.get_mut(&id) {
                    let ps = p.scopes.entry(scope).or_default();
                    if ps.next_round == 0 {
                        ps.next_round = next;
                    }
                }
            }
        }
        let (max, now) = (self.cfg.max_entries, self.now);
        Ok(self
            .tables
            .entry(scope)
            .or_insert_with(|| Table::new(scope, max, now)))
    }

    /// Appends `entry` to the Push being built for every ready peer in
    /// `scope`; a peer whose queue would overflow gets reconciliation
    /// instead.
    fn push_to_peers(&mut self, scope: Scope, entry: &Entry) {
        let mut field = Vec::with_capacity(msg::FIELD_HDR + msg::entry_len(entry));
        field.push(0x03);
        field.extend_from_slice(&(msg::entry_len(entry) as u16).to_be_bytes());
        msg::put_entry(&mut field, scope, entry);
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            if !self.policy.in_scope(scope, id) {
                continue;
            }
            let max_q = self.cfg.max_queue_bytes;
            let p = self.peers.get_mut(&id).expect("listed");
            if !p.ready(caps::PUSH) {
                continue;
            }
            if p.push_n >= MAX_ITEMS || p.push_buf.len() + field.len() + 2 > MAX_MSG {
                Self::flush_push(p);
            }
            if p.queued() + field.len() > max_q {
                // Overflow: forget the pending pushes and reconcile instead.
                p.push_buf.clear();
                p.push_n = 0;
                self.stats.drops[SyncDrop::QueueOverflow as usize] += 1;
                let now = self.now;
                for ps in p.scopes.values_mut() {
                    ps.due = true;
                    ps.next_round = ps.next_round.min(now + 100);
                }
                let ps = p.scopes.entry(scope).or_default();
                ps.due = true;
                ps.next_round = ps.next_round.min(now + 100);
                continue;
            }
            p.push_buf.extend_from_slice(&field);
            p.push_n += 1;
            self.stats.pushed += 1;
        }
    }

    /// Seals the Push being built for `p` into its queue (its bytes were
    /// already counted against the bound while pending).
    fn flush_push(p: &mut Peer) {
        if p.push_n == 0 {
            return;
        }
        let mut m = Vec::with_capacity(2 + p.push_buf.len());
        m.push(msg::MsgType::Push as u8);
        m.push(msg::SYNC_VERSION);
        m.append(&mut p.push_buf);
        p.push_n = 0;
        p.out_bytes += m.len();
        p.out.push_back(m);
    }

    /// Queues `bytes` for `peer` if it fits; otherwise counts an overflow
    /// and marks the peer for reconciliation.
    fn enqueue(&mut self, peer: NodeId, bytes: Vec<u8>) -> bool {
        let now = self.now;
        let max_q = self.cfg.max_queue_bytes;
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        if !p.connected {
            return false;
        }
        if p.queued() + bytes.len() > max_q {
            self.stats.drops[SyncDrop::QueueOverflow as usize] += 1;
            for ps in p.scopes.values_mut() {
                ps.due = true;
                ps.next_round = ps.next_round.min(now + 100);
            }
            return false;
        }
        p.out_bytes += bytes.len();
        p.out.push_back(bytes);
        true
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() >= self.cfg.max_events {
            self.events_lost = true;
        } else {
            self.events.push_back(e);
        }
    }

    fn tick(&mut self, now: WallMs) {
        self.now = self.now.max(now);
    }

    fn rand(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_round_time(&mut self, now: WallMs) -> WallMs {
        let i = self.cfg.ae_interval_ms.max(1);
        now + i + self.rand() % (i / 4 + 1)
    }

    /// Starts a reconciliation round of `scope` with `peer`: sends our
    /// fingerprint of the whole scope.
    fn start_round(&mut self, peer: NodeId, scope: Scope) {
        let summary = self.tables.get(&scope).map_or(
            RangeFp {
                lo: 0,
                hi: u64::MAX,
                count: 0,
                fp: 0,
            },
            |t| t.summary(0, u64::MAX),
        );
        let m = Msg::Digest(Digest {
            scope,
            in_sync: false,
            ranges: vec![summary],
        })
        .encode();
        let next = self.next_round_time(self.now);
        if let Some(p) = self.peers.get_mut(&peer) {
            let ps = p.scopes.entry(scope).or_default();
            ps.due = false;
            ps.next_round = next;
        }
        if self.enqueue(peer, m) {
            self.stats.rounds += 1;
        }
    }

    /// Looks `key` up at `peer` (answered from its table in version 1);
    /// the answer arrives as [`Event::LookupDone`].
    ///
    /// # Errors
    /// [`PeerError`] when the peer is not ready or too many requests wait.
    pub fn lookup(
        &mut self,
        now: WallMs,
        peer: NodeId,
        scope: Scope,
        key: Key,
    ) -> Result<u32, PeerError> {
        let req = self.new_request(now, peer, caps::LOOKUP)?;
        if !self.enqueue(peer, Msg::Lookup(Lookup { req, scope, key }).encode()) {
            self.requests.remove(&req);
            return Err(PeerError::QueueFull);
        }
        Ok(req)
    }

    /// Fetches `keys` from `peer` (pull on miss); they arrive as
    /// [`Event::Changed`] like any repair. At most [`MAX_ITEMS`] keys.
    ///
    /// # Errors
    /// [`PeerError`] when the peer is not ready or too many requests wait.
    pub fn fetch(
        &mut self,
        now: WallMs,
        peer: NodeId,
        scope: Scope,
        keys: Vec<Key>,
    ) -> Result<u32, PeerError> {
        let req = self.new_request(now, peer, caps::PUSH)?;
        let mut keys = keys;
        keys.truncate(MAX_ITEMS);
        if !self.enqueue(peer, Msg::Need(Need { req, scope, keys }).encode()) {
            self.requests.remove(&req);
            return Err(PeerError::QueueFull);
        }
        Ok(req)
    }

    fn new_request(&mut self, now: WallMs, peer: NodeId, cap: u32) -> Result<u32, PeerError> {
        self.tick(now);
        if !self.peers.get(&peer).is_some_and(|p| p.ready(cap)) {
            return Err(PeerError::NotReady(peer));
        }
        if self.requests.len() >= self.cfg.max_requests {
            return Err(PeerError::TooManyRequests);
        }
        let req = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(1);
        self.requests
            .insert(req, (peer, now + self.cfg.request_timeout_ms));
        Ok(req)
    }

    /// Handles one message from `peer` (already authenticated by the link).
    ///
    /// # Errors
    /// The [`SyncDrop`] reason the message (or its first bad entry) was
    /// dropped for; it is counted, and the tables are unchanged by what
    /// was dropped.
    pub fn handle_message(
        &mut self,
        now: WallMs,
        peer: NodeId,
        bytes: &[u8],
    ) -> Result<(), SyncDrop> {
        self.tick(now);
        self.stats.msgs_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let r = self.dispatch(peer, bytes);
        match r {
            Err(d) => self.stats.drops[d as usize] += 1,
            Ok(()) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.last_heard = now;
                }
            }
        }
        r
    }

    fn dispatch(&mut self, peer: NodeId, bytes: &[u8]) -> Result<(), SyncDrop> {
        let Some(p) = self.peers.get(&peer) else {
            return Err(SyncDrop::UnknownPeer);
        };
        if !p.connected {
            return Err(SyncDrop::NotConnected);
        }
        let hello_seen = p.caps.is_some();
        let (m, skipped) = Msg::parse(bytes)?;
        self.stats.skipped_fields += skipped as u64;
        match m {
            Msg::Hello(h) => self.on_hello(peer, h),
            _ if !hello_seen => Err(SyncDrop::HelloFirst),
            Msg::Push(p) => self.on_push(peer, p),
            Msg::Digest(d) => self.on_digest(peer, d),
            Msg::RangeItems(r) => self.on_range_items(peer, r),
            Msg::Need(n) => self.on_need(peer, n),
            Msg::Lookup(l) => self.on_lookup(peer, l),
            Msg::LookupReply(l) => self.on_lookup_reply(peer, l),
            Msg::Reset(r) => self.on_reset(peer, r),
        }
    }

    fn on_hello(&mut self, peer: NodeId, h: Hello) -> Result<(), SyncDrop> {
        if h.node != peer {
            return Err(SyncDrop::WrongNode);
        }
        let now = self.now;
        let ttl = self.cfg.tombstone_ttl_ms;
        self.peers.get_mut(&peer).expect("checked").caps = Some(h.caps);
        self.emit(Event::PeerReady { peer });
        let mut theirs: BTreeMap<Scope, &ScopeSummary> = BTreeMap::new();
        for s in &h.scopes {
            theirs.insert(s.scope, s);
        }
        let mut scopes: Vec<Scope> = self.tables.keys().copied().collect();
        scopes.extend(theirs.keys().copied());
        scopes.sort_unstable();
        scopes.dedup();
        for scope in scopes {
            if !self.policy.in_scope(scope, peer) {
                continue;
            }
            let next = self.next_round_time(now);
            self.peers
                .get_mut(&peer)
                .expect("checked")
                .scopes
                .entry(scope)
                .or_default()
                .next_round = next;
            let (count, fp) = self.digest(scope);
            let (tc, tf, tsynced) = theirs
                .get(&scope)
                .map_or((0, 0, now), |s| (s.count, s.fp, s.synced_ms));
            if tc > 0 && tsynced.saturating_add(ttl) < now && h.caps & caps::RESET != 0 {
                // Its table may hold entries whose tombstones everyone else
                // has expired: it must resynchronise, not merge.
                self.enqueue(peer, Msg::Reset(Reset { scope, reason: 1 }).encode());
                continue;
            }
            if (count, fp) == (tc, tf) {
                if let Some(t) = self.tables.get_mut(&scope) {
                    t.synced_ms = now;
                }
                self.mark_peer_synced(peer, scope);
            } else if h.caps & caps::RECONCILE != 0 {
                if self.cfg.node < peer {
                    self.start_round(peer, scope);
                } else {
                    // The lower id starts; we follow up soon in case its
                    // Hello predates our writes (then it saw no difference).
                    let soon = now + self.cfg.ae_interval_ms / 10;
                    if let Some(ps) = self
                        .peers
                        .get_mut(&peer)
                        .and_then(|p| p.scopes.get_mut(&scope))
                    {
                        ps.next_round = soon;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reconciliation traffic from a peer in `scope` means we are in
    /// contact: what we miss will be repaired, so the table is not stale
    /// (docs/anypsp-protocol.md Section 7.3).
    fn mark_contact(&mut self, scope: Scope) {
        let now = self.now;
        if let Some(t) = self.tables.get_mut(&scope) {
            t.synced_ms = now;
        }
    }

    /// A full-range comparison of `scope` with `peer` found it equal.
    fn mark_peer_synced(&mut self, peer: NodeId, scope: Scope) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.scopes.entry(scope).or_default().synced = true;
        }
    }

    /// Reconciliation traffic of `scope` from a peer not yet found equal:
    /// confirm with a full-range round shortly after the last such message
    /// (a debounce, so one repair in flight is not doubled).
    fn confirm_later(&mut self, peer: NodeId, scope: Scope) {
        let now = self.now;
        let at = now + (self.cfg.ae_interval_ms / 50).max(1);
        let cap = now + self.cfg.ae_interval_ms;
        if let Some(ps) = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.scopes.get_mut(&scope))
        {
            if !ps.synced {
                if ps.confirm_cap == 0 || now >= ps.confirm_cap {
                    ps.confirm_cap = cap;
                }
                ps.next_round = at.min(ps.confirm_cap);
            }
        }
    }

    fn on_push(&mut self, peer: NodeId, p: Push) -> Result<(), SyncDrop> {
        if let Some(req) = p.req {
            if self.requests.get(&req).is_some_and(|r| r.0 == peer) {
                self.requests.remove(&req);
            }
        }
        let mut first = Ok(());
        for (scope, e) in p.entries {
            self.confirm_later(peer, scope);
            if let Err(d) = self.apply_remote(peer, scope, e) {
                if first.is_ok() {
                    first = Err(d);
                } else {
                    self.stats.drops[d as usize] += 1;
                }
            }
        }
        first
    }

    fn apply_remote(&mut self, peer: NodeId, scope: Scope, e: Entry) -> Result<(), SyncDrop> {
        if !self.policy.in_scope(scope, peer) {
            return Err(SyncDrop::OutOfScope);
        }
        let o = e.owner;
        if e.stamp.version.node != o || o == 0 || o == 0xFFFF {
            return Err(SyncDrop::BadEntry);
        }
        if e.value
            .as_ref()
            .is_some_and(|v| v.len() > self.cfg.max_value)
        {
            return Err(SyncDrop::TooLarge);
        }
        let now = self.now;
        self.hlc
            .observe(now, e.stamp.version, self.cfg.max_drift_ms)
            .map_err(|_| SyncDrop::ClockSkew)?;
        let expire = now.saturating_sub(self.cfg.tombstone_ttl_ms);
        let me = self.cfg.node;
        let hasher = self.hasher.clone();
        let table = self.table_mut(scope)?;
        let res = table.apply(&hasher, e.clone(), expire);
        let previous = match res {
            Applied::Stored { previous } => previous,
            Applied::Expired { previous } => {
                if let Some(prev) = previous {
                    self.stats.applied += 1;
                    self.emit(Event::Changed {
                        scope,
                        entry: e,
                        previous: Some(prev),
                    });
                }
                return Ok(());
            }
            Applied::Duplicate | Applied::Stale => return Ok(()),
            Applied::Full => return Err(SyncDrop::TableFull),
        };
        self.stats.applied += 1;
        if let Some(prev) = &previous {
            if prev.owner == me && e.owner != me && !prev.is_tombstone() {
                self.emit(Event::OwnershipLost {
                    scope,
                    key: e.key.clone(),
                    owner: e.owner,
                    epoch: e.stamp.epoch,
                });
            }
        }
        self.emit(Event::Changed {
            scope,
            entry: e,
            previous,
        });
        Ok(())
    }

    /// Bytes a reply to `peer` may take: the reply budget, within the room
    /// left in its queue less a margin for message headers.
    fn budget(&self, peer: NodeId) -> usize {
        let room = self
            .peers
            .get(&peer)
            .map_or(0, |p| self.cfg.max_queue_bytes.saturating_sub(p.queued()));
        self.cfg
            .reply_budget
            .min(room.saturating_sub(room / 16 + 512))
    }

    fn on_digest(&mut self, peer: NodeId, d: Digest) -> Result<(), SyncDrop> {
        if !self.policy.in_scope(d.scope, peer) {
            return Err(SyncDrop::OutOfScope);
        }
        let scope = d.scope;
        let now = self.now;
        self.mark_contact(scope);
        if d.in_sync {
            if let Some(t) = self.tables.get_mut(&scope) {
                t.synced_ms = now;
            }
            self.mark_peer_synced(peer, scope);
            return Ok(());
        }
        if d.ranges.is_empty() {
            return Ok(());
        }
        if !self.tables.contains_key(&scope) && d.ranges.iter().all(|r| r.count == 0) {
            // Both empty: in sync.
            self.mark_peer_synced(peer, scope);
            self.enqueue(peer, in_sync(scope));
            return Ok(());
        }
        self.confirm_later(peer, scope);
        let budget = self.budget(peer);
        self.table_mut(scope)?;
        let t = &self.tables[&scope];
        let leaf = self.cfg.leaf_items as u64;
        let last_hi = d.ranges.last().expect("non-empty").hi;
        let mut reply = Reply::default();
        let mut all_equal = true;
        let full = d.ranges.iter().any(|r| r.lo == 0 && r.hi == u64::MAX);
        for r in &d.ranges {
            if reply.bytes >= budget {
                reply.continuation(t, r.lo, last_hi);
                all_equal = false;
                break;
            }
            let mine = t.summary(r.lo, r.hi);
            if (mine.count, mine.fp) == (r.count, r.fp) {
                continue;
            }
            all_equal = false;
            if r.count == 0 {
                // The peer has nothing here: send everything.
                if let Some(cont) = reply.push_range(t, r.lo, r.hi, budget) {
                    reply.continuation(t, cont, last_hi);
                    break;
                }
            } else if mine.count <= leaf || r.lo == r.hi {
                let ids = t
                    .range(r.lo, r.hi)
                    .take(MAX_ITEMS)
                    .map(|(_, s)| ItemId {
                        key: s.entry.key.clone(),
                        stamp: s.entry.stamp,
                    })
                    .collect::<Vec<_>>();
                reply.bytes += 20
                    + ids
                        .iter()
                        .map(|i| msg::id_len(i.key.bytes.len()))
                        .sum::<usize>();
                reply.ids.push(RangeIds {
                    lo: r.lo,
                    hi: r.hi,
                    ids,
                });
            } else {
                let parts = t.split(r.lo, r.hi, self.cfg.fanout);
                reply.bytes += parts.len() * msg::RANGE_FP_FIELD;
                reply.ranges.extend(parts);
            }
        }
        if all_equal {
            if full {
                self.tables.get_mut(&scope).expect("created").synced_ms = now;
                self.mark_peer_synced(peer, scope);
                self.enqueue(peer, in_sync(scope));
            }
            return Ok(());
        }
        self.send_reply(peer, scope, reply, None);
        Ok(())
    }

    fn on_range_items(&mut self, peer: NodeId, ri: RangeItems) -> Result<(), SyncDrop> {
        if !self.policy.in_scope(ri.scope, peer) {
            return Err(SyncDrop::OutOfScope);
        }
        let scope = ri.scope;
        self.mark_contact(scope);
        self.confirm_later(peer, scope);
        if ri.ranges.is_empty() {
            return Ok(());
        }
        let budget = self.budget(peer);
        self.table_mut(scope)?;
        let t = &self.tables[&scope];
        let last_hi = ri.ranges.last().expect("non-empty").hi;
        let mut reply = Reply::default();
        for r in &ri.ranges {
            if reply.bytes >= budget {
                reply.continuation(t, r.lo, last_hi);
                break;
            }
            let theirs: HashMap<&Key, Stamp> = r.ids.iter().map(|i| (&i.key, i.stamp)).collect();
            let mut mine: HashMap<&Key, Stamp> = HashMap::new();
            let mut cut = None;
            for (pos, s) in t.range(r.lo, r.hi) {
                let e = &s.entry;
                mine.insert(&e.key, e.stamp);
                if theirs.get(&e.key).is_none_or(|st| *st < e.stamp) {
                    let n = msg::FIELD_HDR + msg::entry_len(e);
                    if reply.bytes + n > budget {
                        cut = Some(pos.0);
                        break;
                    }
                    reply.bytes += n;
                    reply.push.push(e.clone());
                }
            }
            for i in &r.ids {
                if cut.is_some_and(|c| self.hasher.key_hash(scope, &i.key) >= c) {
                    continue;
                }
                if mine.get(&i.key).is_none_or(|st| *st < i.stamp) && reply.need.len() < MAX_ITEMS {
                    reply.bytes += 3 + 3 + i.key.bytes.len();
                    reply.need.push(i.key.clone());
                }
            }
            if let Some(c) = cut {
                reply.continuation(t, c, last_hi);
                break;
            }
        }
        self.send_reply(peer, scope, reply, None);
        Ok(())
    }

    fn on_need(&mut self, peer: NodeId, n: Need) -> Result<(), SyncDrop> {
        if !self.policy.in_scope(n.scope, peer) {
            return Err(SyncDrop::OutOfScope);
        }
        let budget = self.budget(peer);
        let mut reply = Reply::default();
        if let Some(t) = self.tables.get(&n.scope) {
            for k in &n.keys {
                if let Some(e) = t.get(&self.hasher, k) {
                    let n = msg::FIELD_HDR + msg::entry_len(e);
                    if reply.bytes + n > budget {
                        break;
                    }
                    reply.bytes += n;
                    reply.push.push(e.clone());
                }
            }
        }
        // Always answer, even empty, so the request completes.
        self.send_reply(peer, n.scope, reply, Some(n.req));
        Ok(())
    }

    fn on_lookup(&mut self, peer: NodeId, l: Lookup) -> Result<(), SyncDrop> {
        if !self.policy.in_scope(l.scope, peer) {
            // Not ours to answer: in version 1 every node holds every scope.
            let m = Msg::LookupReply(LookupReply {
                req: l.req,
                status: LookupStatus::NotFound,
            });
            self.enqueue(peer, m.encode());
            return Err(SyncDrop::OutOfScope);
        }
        let status = match self.get(l.scope, &l.key) {
            Some(e) if !e.is_tombstone() => LookupStatus::Found(Location {
                owner: e.owner,
                stamp: e.stamp,
                value: e.value.clone().unwrap_or_default(),
            }),
            _ => LookupStatus::NotFound,
        };
        let m = Msg::LookupReply(LookupReply { req: l.req, status });
        self.enqueue(peer, m.encode());
        Ok(())
    }

    fn on_lookup_reply(&mut self, peer: NodeId, l: LookupReply) -> Result<(), SyncDrop> {
        match self.requests.get(&l.req) {
            Some((p, _)) if *p == peer => {
                self.requests.remove(&l.req);
                self.emit(Event::LookupDone {
                    peer,
                    req: l.req,
                    status: l.status,
                });
                Ok(())
            }
            _ => Err(SyncDrop::Unsolicited),
        }
    }

    fn on_reset(&mut self, peer: NodeId, r: Reset) -> Result<(), SyncDrop> {
        if !self.policy.in_scope(r.scope, peer) {
            return Err(SyncDrop::OutOfScope);
        }
        let now = self.now;
        let ttl = self.cfg.tombstone_ttl_ms;
        let Some(t) = self.tables.get_mut(&r.scope) else {
            return Err(SyncDrop::BadReset);
        };
        // Only a table that is really stale is cleared: a Reset is advice,
        // checked against our own clock.
        if t.synced_ms.saturating_add(ttl) >= now {
            return Err(SyncDrop::BadReset);
        }
        t.clear();
        t.synced_ms = now;
        self.stats.resets += 1;
        self.emit(Event::Reset { scope: r.scope });
        self.start_round(peer, r.scope);
        Ok(())
    }

    /// Encodes a reply into messages within [`MAX_MSG`] and [`MAX_ITEMS`].
    fn send_reply(&mut self, peer: NodeId, scope: Scope, reply: Reply, req: Option<u32>) {
        let (caps_ok_push, caps_ok_rec) = self.peers.get(&peer).map_or((false, false), |p| {
            (p.ready(caps::PUSH), p.ready(caps::RECONCILE))
        });
        let mut out: Vec<Vec<u8>> = Vec::new();
        if caps_ok_push && (!reply.push.is_empty() || req.is_some()) {
            self.stats.repaired += reply.push.len() as u64;
            let mut cur: Vec<(Scope, Entry)> = Vec::new();
            let mut size = 2 + 7;
            for e in reply.push {
                let n = msg::FIELD_HDR + msg::entry_len(&e);
                if !cur.is_empty() && (size + n > MAX_MSG || cur.len() >= MAX_ITEMS) {
                    out.push(
                        Msg::Push(Push {
                            req,
                            entries: std::mem::take(&mut cur),
                        })
                        .encode(),
                    );
                    size = 2 + 7;
                }
                size += n;
                cur.push((scope, e));
            }
            if !cur.is_empty() || req.is_some() {
                out.push(Msg::Push(Push { req, entries: cur }).encode());
            }
        }
        if caps_ok_push && !reply.need.is_empty() {
            let req = self.next_req;
            self.next_req = self.next_req.wrapping_add(1).max(1);
            for chunk in reply
                .need
                .chunks(MAX_ITEMS.min(MAX_MSG / (msg::FIELD_HDR + 3 + types::MAX_KEY)))
            {
                out.push(
                    Msg::Need(Need {
                        req,
                        scope,
                        keys: chunk.to_vec(),
                    })
                    .encode(),
                );
            }
        }
        if caps_ok_rec {
            for chunk in reply
                .ranges
                .chunks(MAX_ITEMS.min((MAX_MSG - 16) / msg::RANGE_FP_FIELD))
            {
                out.push(
                    Msg::Digest(Digest {
                        scope,
                        in_sync: false,
                        ranges: chunk.to_vec(),
                    })
                    .encode(),
                );
            }
            let mut cur: Vec<RangeIds> = Vec::new();
            let (mut size, mut items) = (16usize, 0usize);
            for r in reply.ids {
                let n = msg::FIELD_HDR
                    + 16
                    + r.ids
                        .iter()
                        .map(|i| msg::id_len(i.key.bytes.len()))
                        .sum::<usize>();
                if !cur.is_empty()
                    && (size + n > MAX_MSG || items + r.ids.len() + cur.len() + 1 > MAX_ITEMS)
                {
                    out.push(
                        Msg::RangeItems(RangeItems {
                            scope,
                            ranges: std::mem::take(&mut cur),
                        })
                        .encode(),
                    );
                    size = 16;
                    items = 0;
                }
                size += n;
                items += r.ids.len();
                cur.push(r);
            }
            if !cur.is_empty() {
                out.push(Msg::RangeItems(RangeItems { scope, ranges: cur }).encode());
            }
        }
        for m in out {
            if !self.enqueue(peer, m) {
                break;
            }
        }
    }

    /// The next message to send: to which peer, and its bytes. Pending
    /// pushes are sealed into a message here, so a burst of writes between
    /// two calls goes out as one Push per peer. Peers are served round
    /// robin.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        let order: Vec<NodeId> = self
            .peers
            .range(self.rr..)
            .chain(self.peers.range(..self.rr))
            .map(|(id, _)| *id)
            .collect();
        for id in order {
            let p = self.peers.get_mut(&id).expect("listed");
            Self::flush_push(p);
            if let Some(m) = p.out.pop_front() {
                p.out_bytes -= m.len();
                self.stats.msgs_out += 1;
                self.stats.bytes_out += m.len() as u64;
                self.rr = id.wrapping_add(1);
                return Some((id, m));
            }
        }
        None
    }

    /// When [`Engine::handle_timeout`] wants to be called next (wall ms).
    pub fn poll_timeout(&self) -> Option<WallMs> {
        let mut t: Option<WallMs> = None;
        let mut min = |v: WallMs| t = Some(t.map_or(v, |x| x.min(v)));
        for tb in self.tables.values() {
            if let Some(ms) = tb.oldest_tombstone() {
                min(ms.saturating_add(self.cfg.tombstone_ttl_ms));
            }
        }
        for p in self.peers.values() {
            if p.connected && p.caps.is_some() {
                for ps in p.scopes.values() {
                    min(ps.next_round);
                }
            }
        }
        if let Some((_, (_, dl))) = self.requests.iter().min_by_key(|(_, (_, dl))| *dl) {
            min(*dl);
        }
        t
    }

    /// Runs the timers due at `now`: tombstone expiry, reconciliation
    /// rounds, request time-outs.
    pub fn handle_timeout(&mut self, now: WallMs) {
        self.tick(now);
        let before = now.saturating_sub(self.cfg.tombstone_ttl_ms);
        for t in self.tables.values_mut() {
            // Bounded per call; poll_timeout asks again at once if more are due.
            self.stats.expired += t.expire(before, 4096) as u64;
        }
        let mut due = Vec::new();
        for (id, p) in &self.peers {
            if !(p.connected && p.caps.is_some()) {
                continue;
            }
            for (s, ps) in &p.scopes {
                if ps.next_round <= now {
                    due.push((*id, *s));
                }
            }
        }
        for (id, s) in due {
            if self.peers[&id].ready(caps::RECONCILE) && self.policy.in_scope(s, id) {
                self.start_round(id, s);
            } else {
                let next = self.next_round_time(now);
                if let Some(ps) = self.peers.get_mut(&id).and_then(|p| p.scopes.get_mut(&s)) {
                    ps.next_round = next;
                }
            }
        }
        let expired: Vec<(u32, NodeId)> = self
            .requests
            .iter()
            .filter(|(_, (_, dl))| *dl <= now)
            .map(|(r, (p, _))| (*r, *p))
            .collect();
        for (req, peer) in expired {
            self.requests.remove(&req);
            self.emit(Event::RequestTimedOut { peer, req });
        }
    }

    /// The next event for the table's owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        match self.events.pop_front() {
            Some(e) => Some(e),
            None if self.events_lost => {
                self.events_lost = false;
                Some(Event::Overflow)
            }
            None => None,
        }
    }
}

fn in_sync(scope: Scope) -> Vec<u8> {
    Msg::Digest(Digest {
        scope,
        in_sync: true,
        ranges: Vec::new(),
    })
    .encode()
}

impl Reply {
    /// Adds our fingerprint of `[lo, hi]`: "the rest, next round".
    fn continuation(&mut self, t: &Table, lo: u64, hi: u64) {
        self.ranges.push(t.summary(lo, hi));
        self.bytes += msg::RANGE_FP_FIELD;
    }

    /// Pushes every entry of `[lo, hi]` within `budget`; returns where to
    /// continue if the budget ran out first.
    fn push_range(&mut self, t: &Table, lo: u64, hi: u64, budget: usize) -> Option<u64> {
        let mut last = None;
        for (pos, s) in t.range(lo, hi) {
            let n = msg::FIELD_HDR + msg::entry_len(&s.entry);
            if self.bytes + n > budget && last.is_some_and(|l| l != pos.0) {
                return Some(pos.0);
            }
            self.bytes += n;
            self.push.push(s.entry.clone());
            last = Some(pos.0);
        }
        None
    }
}
