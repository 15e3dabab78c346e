//! anypsp sync messages: encoding and parsing (docs/anypsp-protocol.md
//! Section 5).
//!
//! A message is `type (u8) || version (u8) || field*`, and a field is
//! `tag (u8) || length (u16) || value`. Tags appear in ascending order; a
//! repeatable tag may repeat in a row. An unknown tag below 0x80 is skipped
//! (a newer peer added it); an unknown tag at or above 0x80 is "critical"
//! and the message is refused. An unknown message type is refused with
//! [`MsgError::UnknownType`], which the engine counts and otherwise ignores.
//!
//! Parsing never panics and never allocates more than the input's size
//! allows; every list is bounded by [`MAX_ITEMS`] and every message by
//! [`MAX_MSG`]. Encodings are canonical: a message that parses with no skipped
//! field re-encodes to the same bytes.

use super::types::{Entry, Key, NodeId, Scope, Stamp, Version, MAX_KEY};
use crate::wire::Reader;

/// Wire version of the sync messages (byte 1).
pub const SYNC_VERSION: u8 = 1;

/// Largest message, in bytes. Fits one Noise transport message (65535 bytes
/// including its 16-byte tag) with room for the link's framing.
pub const MAX_MSG: usize = 65_000;

/// Most list items (entries, ranges, ids, keys) in one message.
pub const MAX_ITEMS: usize = 1024;

/// Largest value of an entry, in bytes.
pub const MAX_VALUE: usize = 1024;

/// Capability bits carried in Hello (Section 5.2). A node sends a peer only
/// the message types whose bit the peer announced.
pub mod caps {
    /// Push, Need (pull on miss).
    pub const PUSH: u32 = 1 << 0;
    /// Digest, RangeItems (range-based reconciliation).
    pub const RECONCILE: u32 = 1 << 1;
    /// Lookup, LookupReply.
    pub const LOOKUP: u32 = 1 << 2;
    /// Reset.
    pub const RESET: u32 = 1 << 3;
    /// Everything version 1 implements.
    pub const V1: u32 = PUSH | RECONCILE | LOOKUP | RESET;
}

/// Message types (byte 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// Hello: node id, capabilities, per-scope summary.
    Hello = 1,
    /// Push: entries (a local change, a repair, or a Need answered).
    Push = 2,
    /// Digest: range fingerprints (reconciliation).
    Digest = 3,
    /// RangeItems: the ids held in small ranges (reconciliation).
    RangeItems = 4,
    /// Need: fetch entries by key (pull on miss).
    Need = 5,
    /// Lookup: where does this key live?
    Lookup = 6,
    /// LookupReply: found (a location pointer), moved, or not found.
    LookupReply = 7,
    /// Reset: "you are too far behind; resynchronise this scope".
    Reset = 8,
}

impl MsgType {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Hello,
            2 => Self::Push,
            3 => Self::Digest,
            4 => Self::RangeItems,
            5 => Self::Need,
            6 => Self::Lookup,
            7 => Self::LookupReply,
            8 => Self::Reset,
            _ => return None,
        })
    }
}

/// Why a message did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// Shorter than its header or a field ran past the end.
    #[error("truncated")]
    Truncated,
    /// Longer than [`MAX_MSG`].
    #[error("oversized")]
    Oversized,
    /// Byte 0 names no message type this node knows.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// Byte 1 is not [`SYNC_VERSION`].
    #[error("bad version {0}")]
    BadVersion(u8),
    /// An unknown critical field (tag >= 0x80).
    #[error("unknown critical field {0:#x}")]
    UnknownCritical(u8),
    /// Fields out of order, a required field missing, a field of the wrong
    /// length, or a value out of its domain.
    #[error("malformed field {0:#x}")]
    BadField(u8),
    /// More than [`MAX_ITEMS`] list items.
    #[error("too many items")]
    TooManyItems,
    /// A value longer than [`MAX_VALUE`] (or a key longer than [`MAX_KEY`]).
    #[error("value too large")]
    TooLarge,
}

/// Per-scope summary in Hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSummary {
    /// The scope.
    pub scope: Scope,
    /// Wall ms of the sender's last completed reconciliation in this scope
    /// (or of its start): how stale its table may be.
    pub synced_ms: u64,
    /// Entries (tombstones included) the sender holds in the scope.
    pub count: u64,
    /// Fingerprint of the whole scope.
    pub fp: u128,
}

/// Hello (Section 5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's node id (must be the id the link authenticated).
    pub node: NodeId,
    /// Capability bits ([`caps`]).
    pub caps: u32,
    /// One summary per scope the sender holds.
    pub scopes: Vec<ScopeSummary>,
}

/// Push (Section 5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// Set when this answers a Need.
    pub req: Option<u32>,
    /// Entries, each with its scope.
    pub entries: Vec<(Scope, Entry)>,
}

/// One range's fingerprint: hash range `[lo, hi]` (inclusive) of the key
/// hash space, how many entries it holds and the sum of their item hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeFp {
    /// Lowest key hash in the range.
    pub lo: u64,
    /// Highest key hash in the range (inclusive).
    pub hi: u64,
    /// Entries in the range.
    pub count: u64,
    /// Wrapping sum of the item hashes in the range.
    pub fp: u128,
}

/// Digest (Section 5.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// The scope reconciled.
    pub scope: Scope,
    /// "Everything you asked about matches": ends a round.
    pub in_sync: bool,
    /// Ranges to compare.
    pub ranges: Vec<RangeFp>,
}

/// An item id: what reconciliation compares for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemId {
    /// The key.
    pub key: Key,
    /// Its epoch and version.
    pub stamp: Stamp,
}

/// The ids held in one range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeIds {
    /// Lowest key hash.
    pub lo: u64,
    /// Highest key hash (inclusive).
    pub hi: u64,
    /// Every item the sender holds in the range.
    pub ids: Vec<ItemId>,
}

/// RangeItems (Section 5.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeItems {
    /// The scope reconciled.
    pub scope: Scope,
    /// Ranges with their ids.
    pub ranges: Vec<RangeIds>,
}

/// Need (Section 5.7): send me these entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// Request id, echoed in the Push that answers.
    pub req: u32,
    /// The scope.
    pub scope: Scope,
    /// The keys wanted.
    pub keys: Vec<Key>,
}

/// Lookup (Section 5.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Request id.
    pub req: u32,
    /// The scope.
    pub scope: Scope,
    /// The key looked up.
    pub key: Key,
}

/// A location pointer: who owns an entry, at which epoch and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The owner.
    pub owner: NodeId,
    /// Epoch and version of the copy the answerer holds.
    pub stamp: Stamp,
    /// The value, if the answerer sends it (may be empty).
    pub value: Box<[u8]>,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupStatus {
    /// The answerer holds it.
    Found(Location),
    /// Ask this node instead.
    Moved(NodeId),
    /// Not held (or a tombstone).
    NotFound,
}

/// LookupReply (Section 5.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupReply {
    /// The request id answered.
    pub req: u32,
    /// The answer.
    pub status: LookupStatus,
}

/// Reset (Section 5.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The scope to resynchronise.
    pub scope: Scope,
    /// Why: 1 = synced too long ago (past the tombstone horizon).
    pub reason: u8,
}

/// Any sync message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Hello.
    Hello(Hello),
    /// Push.
    Push(Push),
    /// Digest.
    Digest(Digest),
    /// RangeItems.
    RangeItems(RangeItems),
    /// Need.
    Need(Need),
    /// Lookup.
    Lookup(Lookup),
    /// LookupReply.
    LookupReply(LookupReply),
    /// Reset.
    Reset(Reset),
}

// Field tags. Per message type; shared numbers mean the same thing.
const T_NODE: u8 = 0x01; // Hello
const T_CAPS: u8 = 0x02; // Hello
const T_SCOPE_SUMMARY: u8 = 0x03; // Hello, repeated
const T_SCOPE: u8 = 0x01; // Digest, RangeItems, Need, Lookup, Reset
const T_REQ: u8 = 0x02; // Push, Need, Lookup, LookupReply
const T_ENTRY: u8 = 0x03; // Push, repeated
const T_IN_SYNC: u8 = 0x02; // Digest
const T_RANGE: u8 = 0x03; // Digest (RangeFp), RangeItems (RangeIds), repeated
const T_KEY: u8 = 0x03; // Need (repeated), Lookup
const T_FOUND: u8 = 0x04; // LookupReply
const T_MOVED: u8 = 0x05; // LookupReply
const T_REASON: u8 = 0x02; // Reset
const CRITICAL: u8 = 0x80;

/// Encoded size of an entry field's value.
pub fn entry_len(e: &Entry) -> usize {
    2 + 2 + 1 + e.key.bytes.len() + 2 + STAMP_LEN + 1 + e.value.as_ref().map_or(0, |v| 2 + v.len())
}

const STAMP_LEN: usize = 4 + 8 + 4 + 2;
const RANGE_FP_LEN: usize = 8 + 8 + 8 + 16;
/// Field header: tag and length.
pub const FIELD_HDR: usize = 3;

fn put_stamp(out: &mut Vec<u8>, s: &Stamp) {
    out.extend_from_slice(&s.epoch.to_be_bytes());
    out.extend_from_slice(&s.version.ms.to_be_bytes());
    out.extend_from_slice(&s.version.logical.to_be_bytes());
    out.extend_from_slice(&s.version.node.to_be_bytes());
}

fn get_stamp(r: &mut Reader<'_>) -> Option<Stamp> {
    Some(Stamp {
        epoch: r.u32()?,
        version: Version {
            ms: r.u64()?,
            logical: r.u32()?,
            node: r.u16()?,
        },
    })
}

fn put_key(out: &mut Vec<u8>, k: &Key) {
    out.extend_from_slice(&k.kind.to_be_bytes());
    out.push(k.bytes.len() as u8);
    out.extend_from_slice(&k.bytes);
}

fn get_key(r: &mut Reader<'_>) -> Result<Key, MsgError> {
    let kind = r.u16().ok_or(MsgError::Truncated)?;
    let n = r.u8().ok_or(MsgError::Truncated)? as usize;
    if n > MAX_KEY {
        return Err(MsgError::TooLarge);
    }
    let b = r.bytes(n).ok_or(MsgError::Truncated)?;
    Ok(Key {
        kind,
        bytes: b.into(),
    })
}

/// Appends the value of an entry field (scope and entry).
pub fn put_entry(out: &mut Vec<u8>, scope: Scope, e: &Entry) {
    out.extend_from_slice(&scope.0.to_be_bytes());
    put_key(out, &e.key);
    out.extend_from_slice(&e.owner.to_be_bytes());
    put_stamp(out, &e.stamp);
    match &e.value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

fn get_entry(r: &mut Reader<'_>) -> Result<(Scope, Entry), MsgError> {
    let t = MsgError::Truncated;
    let scope = Scope(r.u16().ok_or(t)?);
    let key = get_key(r)?;
    let owner = r.u16().ok_or(t)?;
    let stamp = get_stamp(r).ok_or(t)?;
    let value = match r.u8().ok_or(t)? {
        0 => None,
        1 => {
            let n = r.u16().ok_or(t)? as usize;
            if n > MAX_VALUE {
                return Err(MsgError::TooLarge);
            }
            Some(r.bytes(n).ok_or(t)?.into())
        }
        _ => return Err(MsgError::BadField(T_ENTRY)),
    };
    Ok((
        scope,
        Entry {
            key,
            owner,
            stamp,
            value,
        },
    ))
}

/// Builds a message field by field.
struct Enc {
    out: Vec<u8>,
}

impl Enc {
    fn new(ty: MsgType) -> Self {
        Self {
            out: vec![ty as u8, SYNC_VERSION],
        }
    }
    fn field(&mut self, tag: u8, f: impl FnOnce(&mut Vec<u8>)) {
        self.out.push(tag);
        let at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        f(&mut self.out);
        let n = self.out.len() - at - 2;
        debug_assert!(n <= u16::MAX as usize);
        self.out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
    }
}

impl Msg {
    /// Encodes the message. The caller keeps lists within [`MAX_ITEMS`]
    /// and the size within [`MAX_MSG`] (the engine's builders do).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Hello(h) => {
                let mut e = Enc::new(MsgType::Hello);
                e.field(T_NODE, |o| o.extend_from_slice(&h.node.to_be_bytes()));
                e.field(T_CAPS, |o| o.extend_from_slice(&h.caps.to_be_bytes()));
                for s in &h.scopes {
                    e.field(T_SCOPE_SUMMARY, |o| {
                        o.extend_from_slice(&s.scope.0.to_be_bytes());
                        o.extend_from_slice(&s.synced_ms.to_be_bytes());
                        o.extend_from_slice(&s.count.to_be_bytes());
                        o.extend_from_slice(&s.fp.to_be_bytes());
                    });
                }
                e.out
            }
            Msg::Push(p) => {
                let mut e = Enc::new(MsgType::Push);
                if let Some(req) = p.req {
                    e.field(T_REQ, |o| o.extend_from_slice(&req.to_be_bytes()));
                }
                for (s, en) in &p.entries {
                    e.field(T_ENTRY, |o| put_entry(o, *s, en));
                }
                e.out
            }
            Msg::Digest(d) => {
                let mut e = Enc::new(MsgType::Digest);
                e.field(T_SCOPE, |o| o.extend_from_slice(&d.scope.0.to_be_bytes()));
                if d.in_sync {
                    e.field(T_IN_SYNC, |_| {});
                }
                for r in &d.ranges {
                    e.field(T_RANGE, |o| put_range_fp(o, r));
                }
                e.out
            }
            Msg::RangeItems(ri) => {
                let mut e = Enc::new(MsgType::RangeItems);
                e.field(T_SCOPE, |o| o.extend_from_slice(&ri.scope.0.to_be_bytes()));
                for r in &ri.ranges {
                    e.field(T_RANGE, |o| {
                        o.extend_from_slice(&r.lo.to_be_bytes());
                        o.extend_from_slice(&r.hi.to_be_bytes());
                        for id in &r.ids {
                            put_key(o, &id.key);
                            put_stamp(o, &id.stamp);
                        }
                    });
                }
                e.out
            }
            Msg::Need(n) => {
                let mut e = Enc::new(MsgType::Need);
                e.field(T_SCOPE, |o| o.extend_from_slice(&n.scope.0.to_be_bytes()));
                e.field(T_REQ, |o| o.extend_from_slice(&n.req.to_be_bytes()));
                for k in &n.keys {
                    e.field(T_KEY, |o| put_key(o, k));
                }
                e.out
            }
            Msg::Lookup(l) => {
                let mut e = Enc::new(MsgType::Lookup);
                e.field(T_SCOPE, |o| o.extend_from_slice(&l.scope.0.to_be_bytes()));
                e.field(T_REQ, |o| o.extend_from_slice(&l.req.to_be_bytes()));
                e.field(T_KEY, |o| put_key(o, &l.key));
                e.out
            }
            Msg::LookupReply(l) => {
                let mut e = Enc::new(MsgType::LookupReply);
                e.field(T_REQ, |o| o.extend_from_slice(&l.req.to_be_bytes()));
                match &l.status {
                    LookupStatus::Found(loc) => e.field(T_FOUND, |o| {
                        o.extend_from_slice(&loc.owner.to_be_bytes());
                        put_stamp(o, &loc.stamp);
                        o.extend_from_slice(&loc.value);
                    }),
                    LookupStatus::Moved(n) => {
                        e.field(T_MOVED, |o| o.extend_from_slice(&n.to_be_bytes()))
                    }
                    LookupStatus::NotFound => {}
                }
                e.out
            }
            Msg::Reset(r) => {
                let mut e = Enc::new(MsgType::Reset);
                e.field(T_SCOPE, |o| o.extend_from_slice(&r.scope.0.to_be_bytes()));
                e.field(T_REASON, |o| o.push(r.reason));
                e.out
            }
        }
    }

    /// Parses one message. Returns the message and how many unknown
    /// non-critical fields were skipped.
    ///
    /// # Errors
    /// [`MsgError`] for anything malformed; never panics.
    pub fn parse(buf: &[u8]) -> Result<(Msg, usize), MsgError> {
        if buf.len() > MAX_MSG {
            return Err(MsgError::Oversized);
        }
        if buf.len() < 2 {
            return Err(MsgError::Truncated);
        }
        let ty = MsgType::from_byte(buf[0]).ok_or(MsgError::UnknownType(buf[0]))?;
        if buf[1] != SYNC_VERSION {
            return Err(MsgError::BadVersion(buf[1]));
        }
        let mut f = Fields::new(&buf[2..], known_tags(ty));
        let msg = match ty {
            MsgType::Hello => {
                let node = f.one(T_NODE, |r| r.u16())?;
                let caps = f.one(T_CAPS, |r| r.u32())?;
                let scopes = f.many(T_SCOPE_SUMMARY, |r| {
                    Ok(ScopeSummary {
                        scope: Scope(r.u16().ok_or(MsgError::Truncated)?),
                        synced_ms: r.u64().ok_or(MsgError::Truncated)?,
                        count: r.u64().ok_or(MsgError::Truncated)?,
                        fp: u128::from_be_bytes(r.array().ok_or(MsgError::Truncated)?),
                    })
                })?;
                // One summary per scope, in ascending order (canonical).
                if scopes.windows(2).any(|w| w[0].scope >= w[1].scope) {
                    return Err(MsgError::BadField(T_SCOPE_SUMMARY));
                }
                Msg::Hello(Hello { node, caps, scopes })
            }
            MsgType::Push => {
                let req = f.opt(T_REQ, |r| r.u32())?;
                let entries = f.many(T_ENTRY, get_entry)?;
                Msg::Push(Push { req, entries })
            }
            MsgType::Digest => {
                let scope = Scope(f.one(T_SCOPE, |r| r.u16())?);
                let in_sync = f.flag(T_IN_SYNC)?;
                let ranges = f.many(T_RANGE, |r| {
                    let rf = RangeFp {
                        lo: r.u64().ok_or(MsgError::Truncated)?,
                        hi: r.u64().ok_or(MsgError::Truncated)?,
                        count: r.u64().ok_or(MsgError::Truncated)?,
                        fp: u128::from_be_bytes(r.array().ok_or(MsgError::Truncated)?),
                    };
                    if rf.lo > rf.hi {
                        return Err(MsgError::BadField(T_RANGE));
                    }
                    Ok(rf)
                })?;
                if !ascending_disjoint(ranges.iter().map(|r| (r.lo, r.hi))) {
                    return Err(MsgError::BadField(T_RANGE));
                }
                Msg::Digest(Digest {
                    scope,
                    in_sync,
                    ranges,
                })
            }
            MsgType::RangeItems => {
                let scope = Scope(f.one(T_SCOPE, |r| r.u16())?);
                let mut total = 0usize;
                let ranges = f.many(T_RANGE, |r| {
                    let lo = r.u64().ok_or(MsgError::Truncated)?;
                    let hi = r.u64().ok_or(MsgError::Truncated)?;
                    if lo > hi {
                        return Err(MsgError::BadField(T_RANGE));
                    }
                    let mut ids = Vec::new();
                    while r.remaining() > 0 {
                        total += 1;
                        if total > MAX_ITEMS {
                            return Err(MsgError::TooManyItems);
                        }
                        let key = get_key(r)?;
                        let stamp = get_stamp(r).ok_or(MsgError::Truncated)?;
                        ids.push(ItemId { key, stamp });
                    }
                    Ok(RangeIds { lo, hi, ids })
                })?;
                if !ascending_disjoint(ranges.iter().map(|r| (r.lo, r.hi))) {
                    return Err(MsgError::BadField(T_RANGE));
                }
                Msg::RangeItems(RangeItems { scope, ranges })
            }
            MsgType::Need => {
                let scope = Scope(f.one(T_SCOPE, |r| r.u16())?);
                let req = f.one(T_REQ, |r| r.u32())?;
                let keys = f.many(T_KEY, get_key)?;
                Msg::Need(Need { req, scope, keys })
            }
            MsgType::Lookup => {
                let scope = Scope(f.one(T_SCOPE, |r| r.u16())?);
                let req = f.one(T_REQ, |r| r.u32())?;
                let key = f.one_with(T_KEY, get_key)?;
                Msg::Lookup(Lookup { req, scope, key })
            }
            MsgType::LookupReply => {
                let req = f.one(T_REQ, |r| r.u32())?;
                let found = f.opt_with(T_FOUND, |r| {
                    let owner = r.u16().ok_or(MsgError::Truncated)?;
                    let stamp = get_stamp(r).ok_or(MsgError::Truncated)?;
                    let value = r.rest();
                    if value.len() > MAX_VALUE {
                        return Err(MsgError::TooLarge);
                    }
                    Ok(Location {
                        owner,
                        stamp,
                        value: value.into(),
                    })
                })?;
                let moved = f.opt(T_MOVED, |r| r.u16())?;
                let status = match (found, moved) {
                    (Some(l), None) => LookupStatus::Found(l),
                    (None, Some(n)) => LookupStatus::Moved(n),
                    (None, None) => LookupStatus::NotFound,
                    (Some(_), Some(_)) => return Err(MsgError::BadField(T_MOVED)),
                };
                Msg::LookupReply(LookupReply { req, status })
            }
            MsgType::Reset => {
                let scope = Scope(f.one(T_SCOPE, |r| r.u16())?);
                let reason = f.one(T_REASON, |r| r.u8())?;
                Msg::Reset(Reset { scope, reason })
            }
        };
        let skipped = f.finish()?;
        Ok((msg, skipped))
    }
}

/// Ranges must be ascending and disjoint: then one message costs at most
/// one pass over the table, however many ranges it lists.
fn ascending_disjoint(mut it: impl Iterator<Item = (u64, u64)>) -> bool {
    let Some((_, mut prev_hi)) = it.next() else {
        return true;
    };
    for (lo, hi) in it {
        if lo <= prev_hi {
            return false;
        }
        prev_hi = hi;
    }
    true
}

fn put_range_fp(o: &mut Vec<u8>, r: &RangeFp) {
    o.extend_from_slice(&r.lo.to_be_bytes());
    o.extend_from_slice(&r.hi.to_be_bytes());
    o.extend_from_slice(&r.count.to_be_bytes());
    o.extend_from_slice(&r.fp.to_be_bytes());
}

/// Encoded size of one Digest range field.
pub const RANGE_FP_FIELD: usize = FIELD_HDR + RANGE_FP_LEN;
/// Encoded size of one id in a RangeItems range (key of `klen` bytes).
pub fn id_len(klen: usize) -> usize {
    2 + 1 + klen + STAMP_LEN
}

fn known_tags(ty: MsgType) -> &'static [u8] {
    match ty {
        MsgType::Hello => &[T_NODE, T_CAPS, T_SCOPE_SUMMARY],
        MsgType::Push => &[T_REQ, T_ENTRY],
        MsgType::Digest => &[T_SCOPE, T_IN_SYNC, T_RANGE],
        MsgType::RangeItems => &[T_SCOPE, T_RANGE],
        MsgType::Need | MsgType::Lookup => &[T_SCOPE, T_REQ, T_KEY],
        MsgType::LookupReply => &[T_REQ, T_FOUND, T_MOVED],
        MsgType::Reset => &[T_SCOPE, T_REASON],
    }
}

/// Walks the fields of a message in tag order. Unknown non-critical fields
/// are skipped wherever they appear (still in ascending order).
struct Fields<'a> {
    rest: &'a [u8],
    known: &'static [u8],
    last_tag: u8,
    skipped: usize,
    items: usize,
}

impl<'a> Fields<'a> {
    fn new(body: &'a [u8], known: &'static [u8]) -> Self {
        Self {
            rest: body,
            known,
            last_tag: 0,
            skipped: 0,
            items: 0,
        }
    }

    /// Peeks the next known field's tag, skipping unknown ones.
    fn peek(&mut self) -> Result<Option<u8>, MsgError> {
        loop {
            let Some(&tag) = self.rest.first() else {
                return Ok(None);
            };
            if self.known.contains(&tag) {
                return Ok(Some(tag));
            }
            if tag & CRITICAL != 0 {
                return Err(MsgError::UnknownCritical(tag));
            }
            if tag <= self.last_tag {
                return Err(MsgError::BadField(tag));
            }
            self.last_tag = tag;
            self.take_value()?;
            self.skipped += 1;
        }
    }

    fn take_value(&mut self) -> Result<&'a [u8], MsgError> {
        let mut r = Reader::new(self.rest);
        r.u8().ok_or(MsgError::Truncated)?;
        let n = r.u16().ok_or(MsgError::Truncated)? as usize;
        let v = r.bytes(n).ok_or(MsgError::Truncated)?;
        self.rest = r.rest();
        Ok(v)
    }

    /// Takes the next field if it has `tag`; enforces ascending order.
    fn next(&mut self, tag: u8, repeat: bool) -> Result<Option<&'a [u8]>, MsgError> {
        match self.peek()? {
            Some(t) if t == tag => {
                if t < self.last_tag || (t == self.last_tag && !repeat) {
                    return Err(MsgError::BadField(t));
                }
                self.last_tag = t;
                Ok(Some(self.take_value()?))
            }
            Some(t) if t < tag || t < self.last_tag => Err(MsgError::BadField(t)),
            _ => Ok(None),
        }
    }

    fn opt_with<T>(
        &mut self,
        tag: u8,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T, MsgError>,
    ) -> Result<Option<T>, MsgError> {
        let Some(v) = self.next(tag, false)? else {
            return Ok(None);
        };
        let mut r = Reader::new(v);
        let out = f(&mut r)?;
        r.finish().ok_or(MsgError::BadField(tag))?;
        Ok(Some(out))
    }

    fn opt<T>(
        &mut self,
        tag: u8,
        f: impl FnOnce(&mut Reader<'a>) -> Option<T>,
    ) -> Result<Option<T>, MsgError> {
        self.opt_with(tag, |r| f(r).ok_or(MsgError::BadField(tag)))
    }

    fn one<T>(
        &mut self,
        tag: u8,
        f: impl FnOnce(&mut Reader<'a>) -> Option<T>,
    ) -> Result<T, MsgError> {
        self.opt(tag, f)?.ok_or(MsgError::BadField(tag))
    }

    fn one_with<T>(
        &mut self,
        tag: u8,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T, MsgError>,
    ) -> Result<T, MsgError> {
        self.opt_with(tag, f)?.ok_or(MsgError::BadField(tag))
    }

    fn flag(&mut self, tag: u8) -> Result<bool, MsgError> {
        match self.next(tag, false)? {
            None => Ok(false),
            Some([]) => Ok(true),
            Some(_) => Err(MsgError::BadField(tag)),
        }
    }

    fn many<T>(
        &mut self,
        tag: u8,
        mut f: impl FnMut(&mut Reader<'a>) -> Result<T, MsgError>,
    ) -> Result<Vec<T>, MsgError> {
        let mut out = Vec::new();
        while let Some(v) = self.next(tag, true)? {
            self.items += 1;
            if self.items > MAX_ITEMS {
                return Err(MsgError::TooManyItems);
            }
            let mut r = Reader::new(v);
            out.push(f(&mut r)?);
            r.finish().ok_or(MsgError::BadField(tag))?;
        }
        Ok(out)
    }

    fn finish(mut self) -> Result<usize, MsgError> {
        // Anything left must be unknown, non-critical, in order.
        if let Some(t) = self.peek()? {
            return Err(MsgError::BadField(t));
        }
        Ok(self.skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_skipped_critical_refused() {
        let m = Msg::Reset(Reset {
            scope: Scope(3),
            reason: 1,
        });
        let mut b = m.encode();
        b.extend_from_slice(&[0x40, 0, 2, 9, 9]);
        assert_eq!(Msg::parse(&b).unwrap(), (m.clone(), 1));
        let mut c = m.encode();
        c.extend_from_slice(&[0x90, 0, 0]);
        assert_eq!(Msg::parse(&c), Err(MsgError::UnknownCritical(0x90)));
        // Out of order: REASON before SCOPE.
        let d = [8, 1, T_REASON, 0, 1, 1, T_SCOPE, 0, 2, 0, 3];
        assert!(Msg::parse(&d).is_err());
    }
}
