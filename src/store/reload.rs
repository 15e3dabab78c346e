//! The daemon's reload of the subscriber store when another process
//! changes it.

use super::{StoreError, SubscriberStore};

/// What the daemon polls: the store, or a stand-in that fails on demand in
/// tests.
pub trait SnapshotSource {
    /// See [`SubscriberStore::data_version`].
    fn data_version(&self) -> Result<i64, StoreError>;
    /// See [`SubscriberStore::snapshot`].
    fn snapshot(&self) -> Result<crate::proxy::Subscribers, StoreError>;
}

impl SnapshotSource for SubscriberStore {
    fn data_version(&self) -> Result<i64, StoreError> {
        SubscriberStore::data_version(self)
    }
    fn snapshot(&self) -> Result<crate::proxy::Subscribers, StoreError> {
        SubscriberStore::snapshot(self)
    }
}

/// What one [`ReloadWatch::poll`] did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The store has not changed since the last applied snapshot.
    Unchanged,
    /// A new snapshot was read and applied.
    Applied {
        /// Subscriber keys in the snapshot.
        keys: usize,
        /// Failed polls just before this one (0 if none): the daemon says
        /// the store is readable again.
        after_failures: u32,
    },
    /// Reading the store failed; the change is retried on the next poll.
    Failed {
        /// Why.
        error: StoreError,
        /// True for the first failure of a streak, so the daemon logs a
        /// streak once, not once per poll.
        first: bool,
    },
}

/// The daemon's reload logic: remembers the store's `data_version` whose
/// snapshot is in force, and records a new one only once its snapshot was
/// read and applied, so a failed read (a busy or locked database) is retried
/// on the next poll instead of being forgotten (a lost revocation would
/// leave the revoked key its session).
#[derive(Debug, Default)]
pub struct ReloadWatch {
    /// The `data_version` of the snapshot in force (`None`: none yet).
    applied: Option<i64>,
    /// Consecutive failed polls.
    failures: u32,
}

impl ReloadWatch {
    /// A watch whose snapshot in force was read at `version`. Read the
    /// version BEFORE that snapshot: a change committed between the two
    /// is then reloaded, not missed.
    pub fn new(version: Option<i64>) -> Self {
        Self {
            applied: version,
            failures: 0,
        }
    }

    /// Makes the next [`poll`](Self::poll) reload whatever the version says.
    /// Call it after writing the store through the connection the watch
    /// polls (e.g. [`SubscriberStore::apply_remote`] of a peer's change):
    /// SQLite's `data_version` does not change for a connection's own
    /// writes, so without this such a change would not reach the core.
    pub fn changed_here(&mut self) {
        self.applied = None;
    }

    /// Checks `src` for a change and, if there is one, reads the snapshot
    /// and hands it to `apply`.
    pub fn poll(
        &mut self,
        src: &impl SnapshotSource,
        apply: impl FnOnce(crate::proxy::Subscribers),
    ) -> ReloadOutcome {
        // The version is read before the snapshot: a commit in between is
        // then in the snapshot AND changes the version again, so it costs one
        // extra reload, never a missed one.
        let result = src.data_version().and_then(|version| {
            if Some(version) == self.applied {
                return Ok(None);
            }
            Ok(Some((version, src.snapshot()?)))
        });
        match result {
            Ok(None) => {
                self.failures = 0;
                ReloadOutcome::Unchanged
            }
            Ok(Some((version, subs))) => {
                let keys = subs.len();
                apply(subs);
                // Only now is this version's snapshot in force.
                self.applied = Some(version);
                ReloadOutcome::Applied {
                    keys,
                    after_failures: std::mem::take(&mut self.failures),
                }
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                ReloadOutcome::Failed {
                    error,
                    first: self.failures == 1,
                }
            }
        }
    }
}
