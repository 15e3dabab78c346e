//! One scope's table: entries ordered by key hash, with the running
//! fingerprint that anti-entropy compares (docs/anypsp-protocol.md
//! Sections 4.3 and 6).

use super::msg::RangeFp;
use super::types::{Entry, Key, Scope, Stamp, WallMs};
use blake2::digest::consts::U16;
use blake2::digest::{Mac, Update};
use blake2::Blake2sMac;
use std::collections::{BTreeMap, BTreeSet};

/// Keyed hashes of keys and items. Keyed (with a secret all nodes share),
/// so nobody outside the mesh can craft keys that collide in the hash
/// order or items whose hashes cancel in a range sum.
#[derive(Clone)]
pub struct Hasher {
    mac: Blake2sMac<U16>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(..)")
    }
}

impl Hasher {
    /// A hasher under `key` (32 bytes, the same on every node of a mesh).
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            mac: <Blake2sMac<U16> as Mac>::new_from_slice(key).expect("32-byte key is valid"),
        }
    }

    fn run(&self, parts: &[&[u8]]) -> u128 {
        let mut m = self.mac.clone();
        for p in parts {
            Update::update(&mut m, p);
        }
        u128::from_be_bytes(m.finalize().into_bytes().into())
    }

    /// The key's position in the hash order (64 bits).
    pub fn key_hash(&self, scope: Scope, key: &Key) -> u64 {
        (self.run(&[
            b"K",
            &scope.0.to_be_bytes(),
            &key.kind.to_be_bytes(),
            &key.bytes,
        ]) >> 64) as u64
    }

    /// The item hash summed into range fingerprints: covers the key and
    /// the stamp (one stamp is one write: value and tombstone flag follow).
    pub fn item_hash(&self, scope: Scope, key: &Key, stamp: &Stamp) -> u128 {
        let v = stamp.version;
        let mut s = [0u8; 18];
        s[..4].copy_from_slice(&stamp.epoch.to_be_bytes());
        s[4..12].copy_from_slice(&v.ms.to_be_bytes());
        s[12..16].copy_from_slice(&v.logical.to_be_bytes());
        s[16..].copy_from_slice(&v.node.to_be_bytes());
        self.run(&[
            b"I",
            &scope.0.to_be_bytes(),
            &key.kind.to_be_bytes(),
            &[key.bytes.len() as u8],
            &key.bytes,
            &s,
        ])
    }
}

/// Where an entry sits in the table: key hash first, so that ranges of the
/// hash space are balanced whatever the keys look like.
pub type Pos = (u64, Key);

#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub entry: Entry,
    pub item: u128,
}

/// What [`Table::apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The entry was new or newer and is now held; `previous` was replaced.
    Stored {
        /// The entry it replaced, if any.
        previous: Option<Entry>,
    },
    /// Already held (same stamp).
    Duplicate,
    /// Older than what is held.
    Stale,
    /// A tombstone past the horizon: the older entry it deletes (if any)
    /// was removed and the tombstone itself not kept.
    Expired {
        /// The entry removed, if any.
        previous: Option<Entry>,
    },
    /// The table is full; nothing changed.
    Full,
}

/// One scope's entries.
#[derive(Debug)]
pub struct Table {
    scope: Scope,
    map: BTreeMap<Pos, Slot>,
    fp: u128,
    /// Tombstones by version time, for expiry in O(log n) each.
    tombstones: BTreeSet<(u64, Pos)>,
    max_entries: usize,
    /// Wall ms of the last completed reconciliation (or of creation).
    pub synced_ms: WallMs,
}

impl Table {
    /// An empty table for `scope` holding at most `max_entries`.
    pub fn new(scope: Scope, max_entries: usize, now: WallMs) -> Self {
        Self {
            scope,
            map: BTreeMap::new(),
            fp: 0,
            tombstones: BTreeSet::new(),
            max_entries,
            synced_ms: now,
        }
    }

    /// Entries held, tombstones included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Tombstones held.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// Count and fingerprint of the whole table, in O(1).
    pub fn digest(&self) -> (u64, u128) {
        (self.map.len() as u64, self.fp)
    }

    /// The entry under `key`, tombstones included.
    pub fn get(&self, h: &Hasher, key: &Key) -> Option<&Entry> {
        let pos = (h.key_hash(self.scope, key), key.clone());
        self.map.get(&pos).map(|s| &s.entry)
    }

    /// Every entry, in hash order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.map.values().map(|s| &s.entry)
    }

    /// Entries after position `after` (from the first without one), in
    /// hash order, with their positions: a walk of the table in chunks
    /// that resumes where it stopped, whatever was added or removed in
    /// between. O(log n) to start.
    pub fn iter_after(&self, after: Option<&Pos>) -> impl Iterator<Item = (&Pos, &Entry)> {
        use std::ops::Bound;
        let from = match after {
            Some(p) => Bound::Excluded(p.clone()),
            None => Bound::Unbounded,
        };
        self.map
            .range((from, Bound::Unbounded))
            .map(|(p, s)| (p, &s.entry))
    }

    /// Applies `e` under last-writer-wins by (epoch, version).
    /// A tombstone whose version time is at or before `expire_before` deletes
    /// what it beats but is not kept.
    pub fn apply(&mut self, h: &Hasher, e: Entry, expire_before: WallMs) -> Applied {
        let pos = (h.key_hash(self.scope, &e.key), e.key.clone());
        let expired = e.is_tombstone() && e.stamp.version.ms <= expire_before;
        let previous = match self.map.get(&pos) {
            Some(s) if s.entry.stamp == e.stamp => return Applied::Duplicate,
            Some(s) if s.entry.stamp > e.stamp => return Applied::Stale,
            Some(_) => self.remove(&pos),
            None if expired => return Applied::Stale,
            None if self.map.len() >= self.max_entries => return Applied::Full,
            None => None,
        };
        if expired {
            return Applied::Expired { previous };
        }
        let item = h.item_hash(self.scope, &e.key, &e.stamp);
        self.fp = self.fp.wrapping_add(item);
        if e.is_tombstone() {
            self.tombstones.insert((e.stamp.version.ms, pos.clone()));
        }
        self.map.insert(pos, Slot { entry: e, item });
        Applied::Stored { previous }
    }

    fn remove(&mut self, pos: &Pos) -> Option<Entry> {
        let s = self.map.remove(pos)?;
        self.fp = self.fp.wrapping_sub(s.item);
        if s.entry.is_tombstone() {
            self.tombstones
                .remove(&(s.entry.stamp.version.ms, pos.clone()));
        }
        Some(s.entry)
    }

    /// Removes tombstones written at or before `before`; returns how many.
    /// At most `limit` per call, so one call stays short.
    pub fn expire(&mut self, before: WallMs, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            let Some((ms, pos)) = self.tombstones.first().cloned() else {
                break;
            };
            if ms > before {
                break;
            }
            self.remove(&pos);
            n += 1;
        }
        n
    }

    /// Oldest tombstone's version time.
    pub fn oldest_tombstone(&self) -> Option<WallMs> {
        self.tombstones.first().map(|t| t.0)
    }

    /// Drops everything (a Reset).
    pub fn clear(&mut self) {
        self.map.clear();
        self.tombstones.clear();
        self.fp = 0;
    }

    /// Slots whose key hash is in `[lo, hi]`, in order.
    pub(crate) fn range(&self, lo: u64, hi: u64) -> impl Iterator<Item = (&Pos, &Slot)> {
        self.map
            .range((lo, Key::min())..)
            .take_while(move |(p, _)| p.0 <= hi)
    }

    /// Count and fingerprint of `[lo, hi]`: O(1) for the whole space,
    /// O(entries in range) otherwise.
    pub fn summary(&self, lo: u64, hi: u64) -> RangeFp {
        if lo == 0 && hi == u64::MAX {
            let (count, fp) = self.digest();
            return RangeFp { lo, hi, count, fp };
        }
        let (mut count, mut fp) = (0u64, 0u128);
        for (_, s) in self.range(lo, hi) {
            count += 1;
            fp = fp.wrapping_add(s.item);
        }
        RangeFp { lo, hi, count, fp }
    }

    /// Splits `[lo, hi]` into up to `parts` equal sub-ranges of the hash
    /// space and summarises each, in one pass over the range.
    pub fn split(&self, lo: u64, hi: u64, parts: u64) -> Vec<RangeFp> {
        let width = (hi - lo) as u128 + 1;
        let parts = (parts as u128).min(width).max(1);
        let step = width.div_ceil(parts);
        let mut out: Vec<RangeFp> = (0..parts)
            .map(|i| {
                let a = lo as u128 + i * step;
                let b = (a + step - 1).min(hi as u128);
                RangeFp {
                    lo: a as u64,
                    hi: b as u64,
                    count: 0,
                    fp: 0,
                }
            })
            .filter(|r| r.lo as u128 <= hi as u128)
            .collect();
        for (p, s) in self.range(lo, hi) {
            let i = ((p.0 - lo) as u128 / step) as usize;
            if let Some(r) = out.get_mut(i) {
                r.count += 1;
                r.fp = r.fp.wrapping_add(s.item);
            }
        }
        // Ranges that would start past `hi` were dropped above; keep
        // only well-formed ones.
        out.retain(|r| r.lo <= r.hi);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::types::Version;

    fn table(n: u32) -> (Table, Hasher) {
        let h = Hasher::new(&[3; 32]);
        let mut t = Table::new(Scope(1), 1 << 20, 0);
        for i in 0..n {
            let e = Entry {
                key: Key::new(1, &i.to_be_bytes()).unwrap(),
                owner: 1,
                stamp: Stamp {
                    epoch: 0,
                    version: Version {
                        ms: 1,
                        logical: i,
                        node: 1,
                    },
                },
                value: Some(Box::new([0])),
            };
            assert!(matches!(t.apply(&h, e, 0), Applied::Stored { .. }));
        }
        (t, h)
    }

    #[test]
    fn splits_tile_the_range_and_sum_to_its_summary() {
        let (t, _) = table(5000);
        for (lo, hi) in [
            (0, u64::MAX),
            (0, 15),
            (5, 5),
            (u64::MAX - 3, u64::MAX),
            (1 << 60, (1 << 62) + 7),
        ] {
            let whole = t.summary(lo, hi);
            let parts = t.split(lo, hi, 16);
            assert_eq!(parts.first().unwrap().lo, lo);
            assert_eq!(parts.last().unwrap().hi, hi);
            for w in parts.windows(2) {
                assert_eq!(w[0].hi + 1, w[1].lo, "contiguous, disjoint");
            }
            let count: u64 = parts.iter().map(|r| r.count).sum();
            let fp = parts.iter().fold(0u128, |a, r| a.wrapping_add(r.fp));
            assert_eq!((count, fp), (whole.count, whole.fp));
            for r in &parts {
                assert_eq!(t.summary(r.lo, r.hi), *r);
            }
        }
        // The O(1) whole-table digest equals a scan.
        let scan = t
            .range(0, u64::MAX)
            .fold(0u128, |a, (_, s)| a.wrapping_add(s.item));
        assert_eq!(t.digest(), (5000, scan));
    }
}
