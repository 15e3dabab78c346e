//! Entry, key, version and the hybrid logical clock (docs/anypsp-protocol.md
//! Section 4).

use std::cmp::Ordering;

/// A proxy's node id: its 16-bit proxy id (1 to 0xFFFE), the same number it
/// puts in the transport sender id.
pub type NodeId = u16;

/// Wall-clock milliseconds since the Unix epoch, as the caller's clock reads
/// them. The engine never reads a clock; every time it sees is one of these.
pub type WallMs = u64;

/// Largest key, in bytes (kind not included).
pub const MAX_KEY: usize = 64;

/// A replication scope: which peers hold an entry is decided per scope by
/// the peer-set policy ([`crate::sync::Policy`]). Tables, digests and
/// anti-entropy rounds are kept per scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(pub u16);

/// The key of an entry: a kind (what the entry holds: session, replay floor,
/// registration, ...) and up to [`MAX_KEY`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// What the entry is; assigned by the table's owner (the proxy).
    pub kind: u16,
    /// The identifier within the kind (a session id, a client key, a name).
    pub bytes: Box<[u8]>,
}

impl Key {
    /// A key of `kind` over `bytes`.
    ///
    /// # Errors
    /// [`KeyTooLong`] when `bytes` exceeds [`MAX_KEY`].
    pub fn new(kind: u16, bytes: &[u8]) -> Result<Self, KeyTooLong> {
        if bytes.len() > MAX_KEY {
            return Err(KeyTooLong(bytes.len()));
        }
        Ok(Self {
            kind,
            bytes: bytes.into(),
        })
    }

    /// The smallest key in the key order (used as a range bound).
    pub(crate) fn min() -> Self {
        Self {
            kind: 0,
            bytes: Box::new([]),
        }
    }
}

/// A key longer than [`MAX_KEY`] bytes (the length given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key of {0} bytes exceeds {MAX_KEY}")]
pub struct KeyTooLong(pub usize);

/// A hybrid-logical-clock time stamp plus the node that drew it: a total
/// order identical on every node (compared as (ms, logical, node)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Physical part: wall-clock ms (Unix epoch) of the writer's HLC.
    pub ms: u64,
    /// Logical counter within one `ms`.
    pub logical: u32,
    /// The node that wrote this version (ties between nodes break on it).
    pub node: NodeId,
}

/// What last-writer-wins compares: the owner epoch first (a take-over bumps
/// it, which fences the old owner), then the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    /// Owner epoch: increases on every take-over of the entry.
    pub epoch: u32,
    /// Version of this write.
    pub version: Version,
}

/// One replicated entry. `value == None` is a tombstone (a deletion that
/// replicates like a write and expires after the tombstone horizon).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's key.
    pub key: Key,
    /// The node that owns the entry (its only writer in `stamp.epoch`).
    pub owner: NodeId,
    /// Epoch and version of this write.
    pub stamp: Stamp,
    /// The opaque value; `None` for a tombstone.
    pub value: Option<Box<[u8]>>,
}

impl Entry {
    /// True for a deletion.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Does `self` win over `other` under last-writer-wins?
    pub fn newer_than(&self, other: &Entry) -> bool {
        self.stamp.cmp(&other.stamp) == Ordering::Greater
    }
}

/// A hybrid logical clock (Kulkarni et al.): physical ms from the caller's
/// wall clock, a logical counter that orders events within one ms and after
/// any version seen from a peer. Never goes backwards, whatever the wall
/// clock does.
#[derive(Clone, Debug)]
pub struct Hlc {
    node: NodeId,
    ms: u64,
    logical: u32,
}

/// A remote version more than the allowed drift ahead of our wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("remote clock {remote_ms} ms is more than the drift bound ahead of local {local_ms} ms")]
pub struct ClockSkew {
    /// The remote version's physical time.
    pub remote_ms: u64,
    /// Our wall clock.
    pub local_ms: u64,
}

impl Hlc {
    /// A clock for `node`, at time zero.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            ms: 0,
            logical: 0,
        }
    }

    /// A new version, strictly greater than every version this clock has
    /// drawn or observed.
    pub fn now(&mut self, wall: WallMs) -> Version {
        if wall > self.ms {
            self.ms = wall;
            self.logical = 0;
        } else if let Some(l) = self.logical.checked_add(1) {
            self.logical = l;
        } else {
            // 4 billion versions in one ms: borrow the next ms.
            self.ms += 1;
            self.logical = 0;
        }
        Version {
            ms: self.ms,
            logical: self.logical,
            node: self.node,
        }
    }

    /// Folds in a version received from a peer, so our next version orders
    /// after it.
    ///
    /// # Errors
    /// [`ClockSkew`] if `v` is more than `max_drift_ms` ahead of `wall`: such
    /// a version is refused, or one peer's bad clock would drag every clock.
    pub fn observe(
        &mut self,
        wall: WallMs,
        v: Version,
        max_drift_ms: u64,
    ) -> Result<(), ClockSkew> {
        if v.ms > wall.saturating_add(max_drift_ms) {
            return Err(ClockSkew {
                remote_ms: v.ms,
                local_ms: wall,
            });
        }
        match v.ms.cmp(&self.ms) {
            Ordering::Greater => {
                self.ms = v.ms;
                self.logical = v.logical;
            }
            Ordering::Equal => self.logical = self.logical.max(v.logical),
            Ordering::Less => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_monotonic_and_orders_after_observed() {
        let mut c = Hlc::new(1);
        let a = c.now(100);
        let b = c.now(90); // wall clock went back
        assert!(b > a);
        c.observe(
            95,
            Version {
                ms: 200,
                logical: 7,
                node: 2,
            },
            1000,
        )
        .unwrap();
        let d = c.now(95);
        assert!(
            d > Version {
                ms: 200,
                logical: 7,
                node: 2
            }
        );
        assert!(c
            .observe(
                0,
                Version {
                    ms: 5000,
                    logical: 0,
                    node: 2
                },
                1000
            )
            .is_err());
    }
}
