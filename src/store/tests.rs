//! Tests of the subscriber store: rows, tombstones, replication, upgrade,
//! reload.

use super::*;

fn key(b: u8) -> [u8; 32] {
    [b; 32]
}

fn pairs(store: &SubscriberStore) -> Vec<(String, [u8; 32])> {
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.public_key))
        .collect()
}

#[test]
fn add_many_is_one_batch_that_skips_live_pairs_and_refuses_a_bad_name_whole() {
    let store = SubscriberStore::open_in_memory().unwrap();
    assert!(store.add("alice", &key(1)).unwrap());
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let n = store
        .add_many([("alice", &k1), ("bob", &k2), ("carol", &k3)])
        .unwrap();
    assert_eq!(n, 2, "alice was already authorised");
    assert_eq!(pairs(&store).len(), 3);
    let seq = store.changes_since(0, 10).unwrap().last().unwrap().seq;
    assert!(store
        .add_many([("dave", &k1), ("not a name!", &k2)])
        .is_err());
    assert_eq!(pairs(&store).len(), 3, "nothing of a refused batch is kept");
    assert!(store.changes_since(seq, 10).unwrap().is_empty());
}

#[test]
fn add_list_remove() {
    let store = SubscriberStore::open_in_memory().unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(store.add("bob", &key(2)).unwrap());
    assert!(store.add("alice", &key(1)).unwrap());
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    // Sorted by name, whatever the insertion order.
    assert_eq!(list[0].name, "alice");
    assert_eq!(list[0].public_key, key(1));
    assert_eq!(list[1].name, "bob");
    assert!(
        list[0].added_unix > 1_600_000_000,
        "added_unix is a real time"
    );

    assert_eq!(store.remove("alice", Some(&key(1))).unwrap(), 1);
    assert_eq!(store.remove("alice", Some(&key(1))).unwrap(), 0);
    assert_eq!(store.remove("nobody", None).unwrap(), 0);
    assert_eq!(pairs(&store), vec![("bob".to_owned(), key(2))]);
}

#[test]
fn duplicate_add_is_reported_and_not_duplicated() {
    let store = SubscriberStore::open_in_memory().unwrap();
    assert!(store.add("alice", &key(1)).unwrap());
    assert!(!store.add("alice", &key(1)).unwrap());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn several_keys_per_name_and_names_per_key() {
    let store = SubscriberStore::open_in_memory().unwrap();
    assert!(store.add("alice", &key(9)).unwrap());
    assert!(store.add("alice", &key(3)).unwrap());
    assert!(store.add("alice", &key(5)).unwrap());
    assert!(store.add("shared", &key(3)).unwrap());
    assert_eq!(
        pairs(&store),
        vec![
            ("alice".to_owned(), key(3)),
            ("alice".to_owned(), key(5)),
            ("alice".to_owned(), key(9)),
            ("shared".to_owned(), key(3)),
        ]
    );
    // Removing one key leaves the others, and the other name's use of it.
    assert_eq!(store.remove("alice", Some(&key(3))).unwrap(), 1);
    assert_eq!(store.list().unwrap().len(), 3);
    // None removes every key of the name, and only of that name.
    assert_eq!(store.remove("alice", None).unwrap(), 2);
    assert_eq!(pairs(&store), vec![("shared".to_owned(), key(3))]);
}

#[test]
fn reopen_persists_and_creates_parent_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sub/subscribers.db");
    {
        let store = SubscriberStore::open(&path).unwrap();
        store.add("alice", &key(1)).unwrap();
        store.add("bob", &key(2)).unwrap();
    }
    assert!(path.exists());
    let store = SubscriberStore::open(&path).unwrap();
    assert_eq!(
        pairs(&store),
        vec![("alice".to_owned(), key(1)), ("bob".to_owned(), key(2))]
    );
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn two_connections_see_each_others_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subscribers.db");
    let daemon = SubscriberStore::open(&path).unwrap();
    let cli = SubscriberStore::open(&path).unwrap();

    let v0 = daemon.data_version().unwrap();
    assert_eq!(daemon.data_version().unwrap(), v0, "stable without changes");

    cli.add("alice", &key(1)).unwrap();
    let v1 = daemon.data_version().unwrap();
    assert_ne!(v1, v0, "another connection's commit changes data_version");
    assert_eq!(pairs(&daemon), vec![("alice".to_owned(), key(1))]);

    let cli_v = cli.data_version().unwrap();
    daemon.add("bob", &key(2)).unwrap();
    assert_ne!(cli.data_version().unwrap(), cli_v);
    assert_eq!(cli.list().unwrap().len(), 2);

    cli.remove("alice", None).unwrap();
    assert_ne!(daemon.data_version().unwrap(), v1);
    assert_eq!(pairs(&daemon), vec![("bob".to_owned(), key(2))]);
}

#[test]
fn bad_names_are_refused() {
    let store = SubscriberStore::open_in_memory().unwrap();
    for name in ["", ".hidden", "-opt", "a b", "ünï", "a/b", &"x".repeat(65)] {
        let err = store.add(name, &key(1)).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidName { name: ref n, .. } if n == name),
            "{name:?}: {err}"
        );
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn validate_name_rules() {
    assert_eq!(validate_name(""), Err(NameError::Empty));
    assert_eq!(
        validate_name(&"a".repeat(65)),
        Err(NameError::TooLong { len: 65 })
    );
    assert_eq!(validate_name(".a"), Err(NameError::BadStart));
    assert_eq!(validate_name("-a"), Err(NameError::BadStart));
    assert_eq!(
        validate_name("ab c"),
        Err(NameError::BadChar { ch: ' ', pos: 2 })
    );
    assert_eq!(
        validate_name("abé"),
        Err(NameError::BadChar { ch: 'é', pos: 2 })
    );
    assert_eq!(validate_name(&"a".repeat(64)), Ok(()));
    assert_eq!(validate_name("Alice.B_c+d-2"), Ok(()));
    assert_eq!(validate_name("_x"), Ok(()));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subscribers.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = SubscriberStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported, .. }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("subscribers.db") && msg.contains("newer"),
        "{msg}"
    );
}

#[test]
fn wrong_key_length_is_refused_by_the_schema() {
    // The CHECK guards the file against other writers (e.g. the sqlite3
    // shell); list() could not represent such a row.
    let store = SubscriberStore::open_in_memory().unwrap();
    let insert = |key: Vec<u8>| {
        store.conn.execute(
            "INSERT INTO subscribers VALUES ('alice', ?1, 0, 0, 1, 99)",
            params![key],
        )
    };
    assert!(insert(vec![0u8; 31]).is_err());
    // The same row with a right-sized key is accepted: the CHECK, not
    // the rest of the row, refused it.
    assert!(insert(vec![0u8; 32]).is_ok());
}

#[test]
fn errors_name_path_and_operation() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let err = SubscriberStore::open(&blocker.join("subscribers.db")).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains("cannot create directory"), "{err}");

    let store = SubscriberStore::open_in_memory().unwrap();
    store.conn.execute_batch("DROP TABLE subscribers").unwrap();
    let err = store.list().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(":memory:") && msg.contains("list subscribers"),
        "{msg}"
    );
}

/// A store this process may not write (SQLite opened it read-only, as
/// it does for an ordinary user on root's file) says so, naming the
/// file and who can write it, not "attempt to write a readonly database".
#[test]
fn a_store_without_write_permission_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subscribers.db");
    drop(SubscriberStore::open(&path).unwrap());
    let conn =
        Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let store = SubscriberStore {
        conn,
        path: path.clone(),
    };
    let err = store.add("alice", &[7; 32]).unwrap_err();
    assert!(matches!(err, StoreError::NoPermission { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("permission denied")
            && msg.contains(&path.display().to_string())
            && msg.contains("as root or as the user the daemon runs as"),
        "{msg}"
    );
}

/// A store stand-in whose reads can be made to fail, as a busy or
/// locked database does.
struct Flaky {
    version: std::cell::Cell<i64>,
    fail: std::cell::Cell<bool>,
    subs: std::cell::RefCell<Vec<(&'static str, [u8; 32])>>,
}

impl SnapshotSource for Flaky {
    fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self.version.get())
    }
    fn snapshot(&self) -> Result<crate::proxy::Subscribers, StoreError> {
        if self.fail.get() {
            return Err(StoreError::Sqlite {
                path: PathBuf::from("flaky.db"),
                op: "list subscribers",
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    None,
                ),
            });
        }
        Ok(crate::proxy::Subscribers::new(
            self.subs.borrow().iter().map(|(n, k)| {
                (
                    crate::call::Name::new(n).unwrap(),
                    crate::crypto::PublicKey(*k),
                )
            }),
        ))
    }
}

#[test]
fn a_failed_reload_is_retried_until_applied() {
    let src = Flaky {
        version: 1.into(),
        fail: false.into(),
        subs: vec![("alice", key(1)), ("bob", key(2))].into(),
    };
    let mut watch = ReloadWatch::new(Some(1));
    let mut in_force = None;
    assert!(matches!(
        watch.poll(&src, |s| in_force = Some(s)),
        ReloadOutcome::Unchanged
    ));

    // bob is revoked, but the store is busy when the daemon reads it.
    src.subs.borrow_mut().pop();
    src.version.set(2);
    src.fail.set(true);
    let out = watch.poll(&src, |s| in_force = Some(s));
    assert!(
        matches!(out, ReloadOutcome::Failed { first: true, .. }),
        "{out:?}"
    );
    // Still busy: still failing, and not the first of the streak.
    let out = watch.poll(&src, |s| in_force = Some(s));
    assert!(
        matches!(out, ReloadOutcome::Failed { first: false, .. }),
        "{out:?}"
    );
    assert!(in_force.is_none());

    // Released: the very next poll applies the revocation.
    src.fail.set(false);
    let out = watch.poll(&src, |s| in_force = Some(s));
    assert!(
        matches!(
            out,
            ReloadOutcome::Applied {
                keys: 1,
                after_failures: 2
            }
        ),
        "{out:?}"
    );
    let subs = in_force.take().expect("the revocation is applied");
    assert!(subs.is_authorized(&crate::crypto::PublicKey(key(1))));
    assert!(!subs.is_authorized(&crate::crypto::PublicKey(key(2))));
    assert!(matches!(
        watch.poll(&src, |s| in_force = Some(s)),
        ReloadOutcome::Unchanged
    ));
    assert!(in_force.is_none());
}

/// The row of (`name`, `key(k)`): `(live, changed_ms)`.
fn row(store: &SubscriberStore, name: &str, k: u8) -> Option<(bool, u64)> {
    store.get(name, &key(k)).unwrap()
}

#[test]
fn remove_leaves_a_tombstone_with_its_time_and_snapshot_lists_live_rows_only() {
    let store = SubscriberStore::open_in_memory().unwrap();
    store.add("alice", &key(1)).unwrap();
    store.add("bob", &key(2)).unwrap();
    let (_, added) = row(&store, "alice", 1).unwrap();
    assert_eq!(store.remove("alice", None).unwrap(), 1);
    let (live, removed) = row(&store, "alice", 1).expect("a tombstone is kept");
    assert!(!live);
    assert!(
        removed > added,
        "the removal is newer than the add it undoes"
    );
    // Removing again revokes nothing more.
    assert_eq!(store.remove("alice", None).unwrap(), 0);
    assert_eq!(pairs(&store), vec![("bob".to_owned(), key(2))]);
    let gone = store.list_removed().unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].name.as_str(), gone[0].changed_ms),
        ("alice", removed)
    );
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.len(), 1);
    assert!(!snap.is_authorized(&crate::crypto::PublicKey(key(1))));
    // Adding it back makes it live again, newer than its removal.
    assert!(store.add("alice", &key(1)).unwrap());
    let (live, readded) = row(&store, "alice", 1).unwrap();
    assert!(live && readded > removed);
    assert!(store.list_removed().unwrap().is_empty());
}

/// The proxy that was down: a key removed here must not come back when
/// a peer that missed the removal replays its older add; a newer add
/// (the key authorised again on purpose) does.
#[test]
fn an_older_remote_add_does_not_resurrect_a_removal_and_a_newer_one_does() {
    let store = SubscriberStore::open_in_memory().unwrap();
    store.add("alice", &key(1)).unwrap();
    let (_, added) = row(&store, "alice", 1).unwrap();
    store.remove("alice", Some(&key(1))).unwrap();
    let (_, removed) = row(&store, "alice", 1).unwrap();

    // The peer's copy of the add (same time) and an add older still.
    for at in [added, removed - 1, added.saturating_sub(60_000)] {
        assert_eq!(
            store.apply_remote("alice", &key(1), true, at).unwrap(),
            RemoteOutcome::Stale,
            "add at {at}"
        );
        assert_eq!(row(&store, "alice", 1), Some((false, removed)));
    }
    // At the very same ms, the removal wins (everywhere the same).
    assert_eq!(
        store.apply_remote("alice", &key(1), true, removed).unwrap(),
        RemoteOutcome::Stale
    );
    assert!(store.snapshot().unwrap().is_empty());

    // Authorised again elsewhere, later: it comes back.
    assert_eq!(
        store
            .apply_remote("alice", &key(1), true, removed + 5)
            .unwrap(),
        RemoteOutcome::Applied
    );
    assert_eq!(row(&store, "alice", 1), Some((true, removed + 5)));
    assert_eq!(store.snapshot().unwrap().len(), 1);
    // And an older remote removal does not undo that.
    assert_eq!(
        store
            .apply_remote("alice", &key(1), false, removed + 4)
            .unwrap(),
        RemoteOutcome::Stale
    );
    assert_eq!(store.snapshot().unwrap().len(), 1);
}

#[test]
fn a_remote_removal_of_an_unknown_row_is_kept_against_older_adds() {
    let store = SubscriberStore::open_in_memory().unwrap();
    let t = now_ms() - 10_000;
    assert_eq!(
        store.apply_remote("carol", &key(3), false, t).unwrap(),
        RemoteOutcome::Applied
    );
    assert_eq!(
        store.apply_remote("carol", &key(3), true, t - 1).unwrap(),
        RemoteOutcome::Stale
    );
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.list_removed().unwrap().len(), 1);
}

#[test]
fn a_change_from_a_clock_far_ahead_is_refused() {
    let store = SubscriberStore::open_in_memory().unwrap();
    let ahead = now_ms() + MAX_AHEAD_MS + 60_000;
    assert_eq!(
        store.apply_remote("dave", &key(4), true, ahead).unwrap(),
        RemoteOutcome::TooFarAhead
    );
    assert_eq!(row(&store, "dave", 4), None);
    let err = store
        .apply_remote("bad name", &key(4), true, 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidName { .. }), "{err}");
}

#[test]
fn changes_since_lists_every_change_in_order_and_bounded() {
    let store = SubscriberStore::open_in_memory().unwrap();
    assert!(store.changes_since(0, 10).unwrap().is_empty());
    store.add("alice", &key(1)).unwrap();
    store.add("bob", &key(2)).unwrap();
    store.remove("alice", None).unwrap();
    let all = store.changes_since(0, 100).unwrap();
    // alice's row changed last (its removal), so it comes after bob's.
    let seen: Vec<(&str, bool)> = all.iter().map(|c| (c.name.as_str(), c.live)).collect();
    assert_eq!(seen, vec![("bob", true), ("alice", false)]);
    assert!(all[0].seq < all[1].seq);
    let cursor = all[1].seq;
    assert!(store.changes_since(cursor, 100).unwrap().is_empty());
    // An applied remote change is a change too.
    store
        .apply_remote("carol", &key(3), true, now_ms() - 5)
        .unwrap();
    let next = store.changes_since(cursor, 100).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].name.as_str(), next[0].live), ("carol", true));
    // A stale one is not.
    store.apply_remote("carol", &key(3), false, 1).unwrap();
    assert!(store.changes_since(next[0].seq, 100).unwrap().is_empty());
    // Pages.
    for i in 0..20u8 {
        store.add(&format!("u{i}"), &key(100 + i)).unwrap();
    }
    let mut cursor = 0;
    let mut got = 0;
    loop {
        let page = store.changes_since(cursor, 7).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        assert!(page.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(page[0].seq > cursor);
        cursor = page.last().unwrap().seq;
        got += page.len();
    }
    assert_eq!(got, 23);
    assert_eq!(
        store.changes_since(0, usize::MAX).unwrap().len(),
        23,
        "the page cap is above this"
    );
}

#[test]
fn tombstones_older_than_the_horizon_are_purged_and_numbers_never_reused() {
    let store = SubscriberStore::open_in_memory().unwrap();
    let day = 24 * 3600 * 1000;
    let now = now_ms();
    store.add("alice", &key(1)).unwrap();
    store
        .apply_remote("old", &key(2), false, now - 8 * day)
        .unwrap();
    store
        .apply_remote("recent", &key(3), false, now - 6 * day)
        .unwrap();
    let last = store.changes_since(0, 100).unwrap().last().unwrap().seq;
    assert_eq!(
        store.purge_tombstones(DEFAULT_TOMBSTONE_HORIZON).unwrap(),
        1
    );
    assert_eq!(row(&store, "old", 2), None);
    assert_eq!(row(&store, "recent", 3), Some((false, now - 6 * day)));
    assert_eq!(
        row(&store, "alice", 1).map(|r| r.0),
        Some(true),
        "live rows stay"
    );
    // A shorter horizon (configurable) takes the recent one too.
    assert_eq!(
        store
            .purge_tombstones(Duration::from_secs(5 * 24 * 3600))
            .unwrap(),
        1
    );
    assert!(store.list_removed().unwrap().is_empty());
    // The newest row was purged; the next change still numbers after it.
    store.add("bob", &key(4)).unwrap();
    let after = store.changes_since(last, 100).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].name, "bob");
}

/// A store file written by the previous version (schema 1: no times, no
/// tombstones) opens, is upgraded, keeps every key authorised, and then
/// replicates like a new one.
#[test]
fn a_version_1_store_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subscribers.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE subscribers (
                 name TEXT NOT NULL,
                 public_key BLOB NOT NULL CHECK(length(public_key) = 32),
                 added_unix INTEGER NOT NULL,
                 PRIMARY KEY (name, public_key)
             );
             PRAGMA user_version = 1;",
        )
        .unwrap();
        for (n, k, t) in [("bob", 2u8, 1_700_000_100i64), ("alice", 1, 1_700_000_000)] {
            conn.execute(
                "INSERT INTO subscribers VALUES (?1, ?2, ?3)",
                params![n, key(k), t],
            )
            .unwrap();
        }
    }
    let store = SubscriberStore::open(&path).unwrap();
    assert_eq!(
        pairs(&store),
        vec![("alice".to_owned(), key(1)), ("bob".to_owned(), key(2))]
    );
    assert_eq!(row(&store, "alice", 1), Some((true, 1_700_000_000_000)));
    assert_eq!(store.list().unwrap()[0].added_unix, 1_700_000_000);
    let changes = store.changes_since(0, 10).unwrap();
    assert_eq!(
        changes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        vec!["bob", "alice"],
        "in the order they were added"
    );
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // It works as a new store: a removal leaves a tombstone numbered
    // after the migrated rows, and survives a reopen.
    store.remove("bob", None).unwrap();
    drop(store);
    let store = SubscriberStore::open(&path).unwrap();
    assert_eq!(pairs(&store), vec![("alice".to_owned(), key(1))]);
    let last = store.changes_since(0, 10).unwrap();
    assert_eq!((last[1].name.as_str(), last[1].live), ("bob", false));
    assert!(last[1].seq > last[0].seq);
}

/// A peer's change applied through the daemon's own connection does not
/// move that connection's data_version; `changed_here` makes the next poll
/// reload it all the same.
#[test]
fn a_change_written_through_the_watched_connection_is_reloaded_when_marked() {
    let dir = tempfile::tempdir().unwrap();
    let store = SubscriberStore::open(&dir.path().join("subscribers.db")).unwrap();
    let mut watch = ReloadWatch::new(Some(store.data_version().unwrap()));
    let mut in_force = None;
    let t = now_ms() - 1000;
    assert_eq!(
        store.apply_remote("alice", &key(1), true, t).unwrap(),
        RemoteOutcome::Applied
    );
    // Unmarked, the own write goes unseen: the reason for changed_here.
    assert!(matches!(
        watch.poll(&store, |s| in_force = Some(s)),
        ReloadOutcome::Unchanged
    ));
    watch.changed_here();
    let out = watch.poll(&store, |s| in_force = Some(s));
    assert!(
        matches!(out, ReloadOutcome::Applied { keys: 1, .. }),
        "{out:?}"
    );
    assert!(in_force
        .unwrap()
        .is_authorized(&crate::crypto::PublicKey(key(1))));
    assert!(matches!(
        watch.poll(&store, |_| {}),
        ReloadOutcome::Unchanged
    ));
}

#[test]
fn a_batch_of_remote_changes_has_the_outcome_of_each_change_alone() {
    let store = SubscriberStore::open_in_memory().unwrap();
    store.add("alice", &key(1)).unwrap();
    let (_, added) = row(&store, "alice", 1).unwrap();
    let t = now_ms();
    let ahead = t + MAX_AHEAD_MS + 60_000;
    let (k1, k2, k3, k4) = (key(1), key(2), key(3), key(4));
    let out = store
        .apply_remote_many([
            ("alice", &k1, true, added - 1),
            ("bob", &k2, true, t),
            ("bad name", &k3, true, t),
            ("dave", &k4, true, ahead),
            ("alice", &k1, false, added + 1),
        ])
        .unwrap();
    assert_eq!(
        out,
        [
            RemoteOutcome::Stale,
            RemoteOutcome::Applied,
            RemoteOutcome::Invalid,
            RemoteOutcome::TooFarAhead,
            RemoteOutcome::Applied,
        ]
    );
    // bob in, alice revoked (the later change of the batch), nothing else.
    assert_eq!(pairs(&store), vec![("bob".to_owned(), key(2))]);
    assert_eq!(row(&store, "alice", 1), Some((false, added + 1)));
    assert_eq!(row(&store, "dave", 4), None);
    // The same again, later: nothing is rewritten (no new change to feed).
    let seq = store.changes_since(0, 10).unwrap().last().unwrap().seq;
    let out = store
        .apply_remote_many([("bob", &k2, true, t + 5), ("alice", &k1, false, t + 5)])
        .unwrap();
    assert_eq!(out, [RemoteOutcome::Stale, RemoteOutcome::Stale]);
    assert!(store.changes_since(seq, 10).unwrap().is_empty());
}
