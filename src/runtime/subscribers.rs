//! The subscriber store beside a running proxy (docs/anypsp-protocol.md
//! section 16.6): reloads it when another process (`anytun user ...`)
//! changes it, purges old tombstones, reports its changes to the node for
//! replication, and writes the changes peers replicate into it.
//!
//! The store is the source of truth on each proxy; the proxy's
//! `Subscribers` is always a snapshot of it. Every change, local or from a
//! peer, reaches the proxy through a new snapshot (`Proxy::set_subscribers`,
//! which ends the sessions of a revoked key).

use super::node::{LocalSubscribers, Readiness, RemoteSubscriber};
use super::proxy::SharedCore;
use crate::call::Name;
use crate::crypto::PublicKey;
use crate::store::{ReloadOutcome, ReloadWatch, RemoteOutcome, SubscriberStore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Local changes read at once (a page) and handed to the node.
const CHANGES_PAGE: usize = 512;
/// How long peers' changes, once in the store, wait for more before the
/// proxy gets a new snapshot: a bulk of keys costs one snapshot (a read
/// of the whole store) per this interval, not one per batch of the node's
/// channel (100 000 keys took about a minute that way). Snapshots are also
/// spaced by four times the last one's cost, so that a large store spends
/// at most a fifth of this task's time reading itself.
const SNAPSHOT_COALESCE: Duration = Duration::from_millis(50);
/// How often old tombstones are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The last change of each (name, key) of `batch`, in order; the ones it
/// supersedes are done (never written: the later change wins anyway). One
/// batch is written in one transaction with one time stamp, so a revoke
/// and a re-add of one key in it would tie, and a tie goes to the revoke.
fn latest_per_key(batch: Vec<RemoteSubscriber>) -> Vec<RemoteSubscriber> {
    let mut last = std::collections::HashMap::with_capacity(batch.len());
    for (i, c) in batch.iter().enumerate() {
        last.insert((c.name.as_str().to_owned(), c.key.0), i);
    }
    if last.len() == batch.len() {
        return batch;
    }
    batch
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| {
            if last.get(&(c.name.as_str().to_owned(), c.key.0)) == Some(&i) {
                Some(c)
            } else {
                c.done();
                None
            }
        })
        .collect()
}

/// What the store task needs.
pub struct StoreTask {
    /// The store (its own connection).
    pub store: SubscriberStore,
    /// The reload watch, set at the version of the snapshot in force.
    pub watch: ReloadWatch,
    /// The proxy.
    pub core: Arc<SharedCore>,
    /// How often the store is polled.
    pub every: Duration,
    /// Tombstones older than this are purged.
    pub tombstone_horizon: Duration,
    /// Replication: where local changes go, where peers' changes come
    /// from, and a flag that says when to start feeding local changes
    /// (once the node has pulled its peers' tables, so that an old row of
    /// this store does not overwrite a newer change made elsewhere while
    /// this proxy was down).
    pub replication: Option<Replication>,
}

/// The replication side of [`StoreTask`].
pub struct Replication {
    /// Local changes to the node.
    pub local: LocalSubscribers,
    /// Peers' changes from the node.
    pub remote: mpsc::Receiver<RemoteSubscriber>,
    /// The node's readiness: local changes are fed once it serves.
    pub feed: watch::Receiver<Readiness>,
}

impl StoreTask {
    /// Runs until the task is aborted (the node's runtime stops).
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.every);
        let mut purged: Option<Instant> = None;
        // Local changes after this store sequence number are not fed yet.
        let mut fed_seq = 0u64;
        let mut repl = self.replication.take();
        // Peers' changes in the store, not yet in the proxy's snapshot, and
        // when that snapshot is due.
        let mut unsnapped: Vec<RemoteSubscriber> = Vec::new();
        let mut unsnapped_changed = false;
        let mut snapshot_at: Option<tokio::time::Instant> = None;
        let mut snapshot_done = tokio::time::Instant::now();
        let mut snapshot_gap = SNAPSHOT_COALESCE;
        // Peers' changes the store refused (locked, disk full): kept and
        // written again each tick, never dropped (the engine holds them as
        // applied and would not send them again), and not `done` meanwhile,
        // so the node does not serve before the proxy has them.
        let mut unstored: Vec<RemoteSubscriber> = Vec::new();
        loop {
            let remote = async {
                match repl.as_mut() {
                    Some(r) => r.remote.recv().await,
                    None => std::future::pending().await,
                }
            };
            let due = async {
                match snapshot_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                _ = due => {
                    snapshot_at = None;
                    if std::mem::take(&mut unsnapped_changed) {
                        let t = tokio::time::Instant::now();
                        self.reload_now();
                        // At most a fifth of this task's time in snapshots.
                        snapshot_gap = SNAPSHOT_COALESCE.max(t.elapsed() * 4);
                        snapshot_done = tokio::time::Instant::now();
                    }
                    // Only now does the proxy hold them (the node serves
                    // once none is pending).
                    for c in unsnapped.drain(..) {
                        c.done();
                    }
                    continue;
                }
                Some(first) = remote => {
                    let r = repl.as_mut().expect("checked");
                    let mut batch = vec![first];
                    while let Ok(more) = r.remote.try_recv() {
                        batch.push(more);
                    }
                    let batch = latest_per_key(batch);
                    if !unstored.is_empty() {
                        // Behind earlier changes still unwritten: in order,
                        // and only the last change per key kept (bounded
                        // by the keys, however long the store refuses).
                        unstored.extend(batch);
                        unstored = latest_per_key(std::mem::take(&mut unstored));
                        continue;
                    }
                    match self.apply_remote(&batch) {
                        Ok(changed) => unsnapped_changed |= changed,
                        Err(()) => {
                            unstored = batch;
                            continue;
                        }
                    }
                    unsnapped.extend(batch);
                    snapshot_at.get_or_insert(
                        (tokio::time::Instant::now() + SNAPSHOT_COALESCE)
                            .max(snapshot_done + snapshot_gap),
                    );
                    continue;
                }
            }
            if purged.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                purged = Some(Instant::now());
                match self.store.purge_tombstones(self.tombstone_horizon) {
                    Ok(0) => {}
                    Ok(n) => log::info!("purged {n} subscriber tombstone(s)"),
                    Err(e) => log::warn!("cannot purge subscriber tombstones: {e}"),
                }
            }
            if !unstored.is_empty() {
                if let Ok(changed) = self.apply_remote(&unstored) {
                    log::info!(
                        "stored {} replicated subscriber change(s) after a failed write",
                        unstored.len()
                    );
                    unsnapped_changed |= changed;
                    unsnapped.append(&mut unstored);
                    snapshot_at.get_or_insert(tokio::time::Instant::now());
                }
            }
            self.poll_reload();
            if let Some(r) = &repl {
                if r.feed.borrow().serving {
                    fed_seq = self.feed(&r.local, fed_seq);
                }
            }
        }
    }

    /// Peers' changes into the store, in one transaction (a bulk of
    /// replicated keys costs one commit and one snapshot, not one each);
    /// true if one changed a row; `Err` (logged) if the store refused the
    /// write, which the caller keeps and retries.
    fn apply_remote(&self, batch: &[RemoteSubscriber]) -> Result<bool, ()> {
        // The engine has ordered the changes already (last writer wins by
        // its versions): the store takes them as of now.
        let now = crate::metrics::wall_ms();
        let outcomes = match self.store.apply_remote_many(
            batch
                .iter()
                .map(|c| (c.name.as_str(), &c.key.0, c.live, now)),
        ) {
            Ok(o) => o,
            Err(e) => {
                log::error!(
                    "cannot store {} replicated subscriber change(s), retrying: {e}",
                    batch.len()
                );
                return Err(());
            }
        };
        let applied = |live: bool| {
            batch
                .iter()
                .zip(&outcomes)
                .filter(move |(c, o)| c.live == live && matches!(o, RemoteOutcome::Applied))
        };
        // One line per change for a few, a count for a bulk.
        let (added, revoked) = (applied(true).count(), applied(false).count());
        if added + revoked <= 4 {
            for (c, _) in applied(true).chain(applied(false)) {
                let what = if c.live { "added" } else { "revoked" };
                log::info!("subscriber {} {what} by a peer", c.name);
            }
        } else {
            log::info!("{added} subscriber key(s) added and {revoked} revoked by peers");
        }
        Ok(added + revoked > 0)
    }

    /// Hands the proxy the store's current snapshot (after our own write,
    /// which `data_version` does not show to this connection).
    fn reload_now(&mut self) {
        let version = self.store.data_version().ok();
        match self.store.snapshot() {
            Ok(subs) => {
                let keys = subs.len();
                self.core
                    .with_core(|p| p.set_subscribers(Instant::now(), subs));
                self.watch = ReloadWatch::new(version);
                log::debug!("subscribers: {keys} key(s) after a replicated change");
            }
            Err(e) => log::error!("cannot read subscribers: {e}"),
        }
    }

    fn poll_reload(&mut self) {
        let core = &self.core;
        let apply = |subs| core.with_core(|p| p.set_subscribers(Instant::now(), subs));
        match self.watch.poll(&self.store, apply) {
            ReloadOutcome::Unchanged => {}
            ReloadOutcome::Applied {
                keys,
                after_failures: 0,
            } => log::info!("subscriber store changed: {keys} key(s)"),
            ReloadOutcome::Applied {
                keys,
                after_failures,
            } => log::warn!(
                "subscriber store readable again after {after_failures} failed attempt(s): \
                 {keys} key(s)"
            ),
            // Logged once per failure streak; retried every tick.
            ReloadOutcome::Failed { error, first: true } => log::error!(
                "cannot reload subscribers (retrying every {} ms): {error}",
                self.every.as_millis()
            ),
            ReloadOutcome::Failed {
                error,
                first: false,
            } => log::debug!("cannot reload subscribers: {error}"),
        }
    }

    /// Feeds the store's changes after `seq` to the node, page after page
    /// until none is left or the node's channel is full; returns the last
    /// sequence number fed. A change the node cannot take now is fed again
    /// on the next tick.
    fn feed(&self, local: &LocalSubscribers, mut seq: u64) -> u64 {
        loop {
            let changes = match self.store.changes_since(seq, CHANGES_PAGE) {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("cannot read subscriber changes: {e}");
                    return seq;
                }
            };
            let last_page = changes.len() < CHANGES_PAGE;
            for c in changes {
                match Name::new(&c.name) {
                    Ok(name) => {
                        if !local.changed(name, PublicKey(c.public_key), c.live) {
                            return seq;
                        }
                    }
                    Err(e) => log::warn!("subscriber {:?} not replicated: {e}", c.name),
                }
                seq = c.seq;
            }
            if last_page {
                return seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::proxy::{Proxy, ProxyConfig, Subscribers};
    use crate::session::ProxyId;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A proxy core with no subscribers.
    fn proxy_core() -> Arc<SharedCore> {
        SharedCore::new(
            Proxy::new(
                ProxyConfig::new(ProxyId::new(1).unwrap(), SecretKey::generate()),
                Subscribers::default(),
                Instant::now(),
            ),
            None,
        )
    }

    /// The store task of `store` for `core`, fed peers' changes by `remote`.
    fn replicating(
        store: SubscriberStore,
        core: &Arc<SharedCore>,
        remote: mpsc::Receiver<RemoteSubscriber>,
        feed: watch::Receiver<Readiness>,
    ) -> StoreTask {
        StoreTask {
            watch: ReloadWatch::new(store.data_version().ok()),
            store,
            core: core.clone(),
            every: Duration::from_millis(100),
            tombstone_horizon: Duration::from_secs(3600),
            replication: Some(Replication {
                local: LocalSubscribers::detached(),
                remote,
                feed,
            }),
        }
    }

    /// A revoke and a re-add of one key arriving in one batch (one
    /// transaction, one time stamp): the key ends live, as at the peer
    /// that made the changes, and every change is done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoke_and_re_add_in_one_batch_ends_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = SubscriberStore::open(&dir.path().join("subscribers.db")).unwrap();
        let core = proxy_core();
        let (tx, remote) = mpsc::channel(16);
        let (_ready, feed) = watch::channel(Readiness::default());
        let key = SecretKey::generate().public();
        let pending = Arc::new(AtomicUsize::new(3));
        // All three queued before the task runs: one batch.
        for live in [true, false, true] {
            tx.send(RemoteSubscriber {
                name: Name::new("bob").unwrap(),
                key,
                live,
                pending: pending.clone(),
            })
            .await
            .unwrap();
        }
        let task = replicating(store, &core, remote, feed);
        let running = tokio::spawn(task.run());
        let t = Instant::now();
        while pending.load(Ordering::Acquire) != 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "never done");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            core.with_core(|p| p.subscriber_count()),
            1,
            "the re-added key is not live"
        );
        running.abort();
    }

    /// A peer's new subscriber that reaches a locked store (another
    /// connection holds the write lock past SQLite's busy timeout) is
    /// written once the lock is gone and reaches the proxy; the node is
    /// told it is done only then. Before, the failed batch was logged and
    /// dropped: the key never reached this proxy (the engine held it as
    /// applied and never sent it again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replicated_change_the_locked_store_refused_is_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscribers.db");
        let store = SubscriberStore::open(&path).unwrap();
        let core = proxy_core();
        let (tx, remote) = mpsc::channel(16);
        let (_ready, feed) = watch::channel(Readiness::default());
        let task = replicating(store, &core, remote, feed);
        let running = tokio::spawn(task.run());

        let lock = rusqlite::Connection::open(&path).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let pending = Arc::new(AtomicUsize::new(1));
        tx.send(RemoteSubscriber {
            name: Name::new("bob").unwrap(),
            key: SecretKey::generate().public(),
            live: true,
            pending: pending.clone(),
        })
        .await
        .unwrap();
        // Past the busy timeout (5 s): the first write has failed.
        tokio::time::sleep(Duration::from_millis(6500)).await;
        assert_eq!(core.with_core(|p| p.subscriber_count()), 0);
        assert_eq!(pending.load(Ordering::Acquire), 1, "done before stored");
        lock.execute_batch("ROLLBACK").unwrap();
        drop(lock);

        let t = Instant::now();
        while core.with_core(|p| p.subscriber_count()) != 1 {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "the refused change never reached the proxy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while pending.load(Ordering::Acquire) != 0 {
            assert!(t.elapsed() < Duration::from_secs(15), "never done");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running.abort();
    }
}
