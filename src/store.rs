//! The subscriber store: which client public keys (32-byte X25519 keys) are
//! authorised, and under which names.
//!
//! It is a small SQLite file shared by the daemon (which reads it and reloads
//! when [`SubscriberStore::data_version`] changes) and the CLI (which edits
//! it), so it is opened in WAL mode with a busy timeout: readers never block
//! the writer and short write contention waits instead of failing.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, TransactionBehavior};

pub use crate::call::name::{validate_name, NameError, MAX_NAME_LEN};

/// Schema version this code writes and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another process's lock before failing.
/// CLI edits are single short statements, so a few seconds is plenty.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const CREATE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscribers (
    name TEXT NOT NULL,
    public_key BLOB NOT NULL CHECK(length(public_key) = 32),
    added_unix INTEGER NOT NULL,
    PRIMARY KEY (name, public_key)
);";

/// What went wrong in the subscriber store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory that should hold the database could not be created.
    #[error("subscriber store {}: cannot create directory {}: {source}", path.display(), dir.display())]
    CreateDir {
        /// The database path.
        path: PathBuf,
        /// The directory that could not be created.
        dir: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An SQLite call failed.
    #[error("subscriber store {}: {op}: {source}", path.display())]
    Sqlite {
        /// The database path (`:memory:` for an in-memory store).
        path: PathBuf,
        /// What the store was doing, e.g. "add subscriber".
        op: &'static str,
        /// The underlying SQLite error.
        source: rusqlite::Error,
    },
    /// This process may not write the database (or its directory, where
    /// SQLite keeps its `-wal` and `-shm` files): typically an ordinary user
    /// on a store that root owns. SQLite itself says "attempt to write a
    /// readonly database", which does not say why.
    #[error(
        "subscriber store {}: {op}: permission denied: this user cannot write {} (or its \
         directory); run this as root or as the user the daemon runs as",
        path.display(),
        path.display()
    )]
    NoPermission {
        /// The database path.
        path: PathBuf,
        /// What the store was doing.
        op: &'static str,
        /// The underlying SQLite error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of anytun.
    #[error(
        "subscriber store {}: schema version {found} is newer than the supported {supported}; \
         upgrade anytun to use this database",
        path.display()
    )]
    SchemaTooNew {
        /// The database path.
        path: PathBuf,
        /// The `user_version` found in the file.
        found: i64,
        /// The newest version this code understands.
        supported: i64,
    },
    /// A subscriber name was refused.
    #[error("invalid subscriber name {name:?}: {source}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Why it was refused.
        source: NameError,
    },
}

/// An SQLite error of `op` on the store at `path`, as [`StoreError`]: a
/// refusal to write for lack of permission becomes
/// [`StoreError::NoPermission`].
fn sqlite_error(path: PathBuf, op: &'static str, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let denied = match source.sqlite_error_code() {
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => true,
        // "unable to open database file" has many causes; only a file this
        // user may not open is a permission problem.
        Some(ErrorCode::CannotOpen) => std::fs::File::open(&path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied),
        _ => false,
    };
    if denied {
        StoreError::NoPermission { path, op, source }
    } else {
        StoreError::Sqlite { path, op, source }
    }
}

/// One authorised (name, public key) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The subscriber's name, valid per [`validate_name`].
    pub name: String,
    /// The client's static X25519 public key.
    pub public_key: [u8; 32],
    /// When the pair was added, in seconds since the Unix epoch.
    pub added_unix: i64,
}

/// Handle on the subscriber database.
///
/// One handle is one SQLite connection; it is `Send` but not `Sync`, so share
/// it behind a mutex or give each thread its own.
#[derive(Debug)]
pub struct SubscriberStore {
    conn: Connection,
    /// Kept for error messages only.
    path: PathBuf,
}

impl SubscriberStore {
    /// Opens (creating if missing, together with its parent directory) the
    /// database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.to_owned(),
                dir: dir.to_owned(),
                source,
            })?;
        }
        let ctx = |op| {
            let path = path.to_owned();
            move |source| sqlite_error(path, op, source)
        };
        let conn = Connection::open(path).map_err(ctx("open"))?;
        // Set before anything else touches the file, so that even schema
        // set-up waits for a concurrent opener instead of failing with BUSY.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(ctx("set busy_timeout"))?;
        // The result is deliberately not checked: where WAL is unavailable
        // (some network file systems) SQLite keeps a rollback journal, which
        // is still correct, only with readers and the writer taking turns.
        let _mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(ctx("set journal_mode=WAL"))?;
        Self::init(conn, path.to_owned())
    }

    /// Opens a private, empty in-memory store (for tests and demos).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            op: "open",
            source,
        })?;
        Self::init(conn, path)
    }

    /// Creates the schema if missing and refuses a newer one.
    fn init(mut conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        let err = |op| {
            let path = path.clone();
            move |source| sqlite_error(path, op, source)
        };
        // IMMEDIATE takes the write lock up front, so two processes creating
        // the same new file do not both see version 0 and race.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin schema transaction"))?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(err("read schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            tx.execute_batch(CREATE_SCHEMA)
                .map_err(err("create schema"))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(err("write schema version"))?;
        }
        tx.commit().map_err(err("commit schema"))?;
        Ok(Self { conn, path })
    }

    fn sqlite_err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| sqlite_error(self.path.clone(), op, source)
    }

    /// Authorises `key` for `name`. Returns `false` if the pair was already
    /// there (its `added_unix` is then left unchanged).
    pub fn add(&self, name: &str, key: &[u8; 32]) -> Result<bool, StoreError> {
        validate_name(name).map_err(|source| StoreError::InvalidName {
            name: name.to_owned(),
            source,
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let inserted = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO subscribers (name, public_key, added_unix)
                 VALUES (?1, ?2, ?3)",
                params![name, key, now],
            )
            .map_err(self.sqlite_err("add subscriber"))?;
        Ok(inserted == 1)
    }

    /// Revokes `key` for `name`, or every key of `name` if `key` is `None`.
    /// Returns how many pairs were removed.
    ///
    /// The name is not validated, so a row put in by other means with a bad
    /// name can still be removed.
    pub fn remove(&self, name: &str, key: Option<&[u8; 32]>) -> Result<usize, StoreError> {
        let removed = match key {
            Some(key) => self.conn.execute(
                "DELETE FROM subscribers WHERE name = ?1 AND public_key = ?2",
                params![name, key],
            ),
            None => self
                .conn
                .execute("DELETE FROM subscribers WHERE name = ?1", params![name]),
        }
        .map_err(self.sqlite_err("remove subscriber"))?;
        Ok(removed)
    }

    /// The store as the proxy core's in-memory [`Subscribers`](crate::proxy::Subscribers) snapshot.
    /// Rows whose name is not valid (written by another tool) are skipped
    /// with a warning rather than failing the whole load.
    pub fn snapshot(&self) -> Result<crate::proxy::Subscribers, StoreError> {
        let rows = self.list()?;
        Ok(crate::proxy::Subscribers::new(rows.into_iter().filter_map(
            |r| match crate::call::Name::new(&r.name) {
                Ok(n) => Some((n, crate::crypto::PublicKey(r.public_key))),
                Err(e) => {
                    log::warn!("subscriber store: skipping {:?}: {e}", r.name);
                    None
                }
            },
        )))
    }

    /// Lists every authorised pair, sorted by name, then by key bytes.
    pub fn list(&self) -> Result<Vec<Subscriber>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, public_key, added_unix FROM subscribers
                 ORDER BY name, public_key",
            )
            .map_err(self.sqlite_err("list subscribers"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Subscriber {
                    name: row.get(0)?,
                    public_key: row.get(1)?,
                    added_unix: row.get(2)?,
                })
            })
            .map_err(self.sqlite_err("list subscribers"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.sqlite_err("list subscribers"))
    }

    /// Returns SQLite's `PRAGMA data_version` for this connection.
    ///
    /// The value changes when *another* connection (e.g. the CLI in another
    /// process) commits a change, and not for this handle's own writes, so a
    /// daemon can poll it cheaply and reload [`list`](Self::list) only when
    /// it differs from the last value seen.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .map_err(self.sqlite_err("read data_version"))
    }
}

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

#[cfg(test)]
mod tests {
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
        let res = store.conn.execute(
            "INSERT INTO subscribers VALUES ('alice', ?1, 0)",
            params![vec![0u8; 31]],
        );
        assert!(res.is_err());
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
}
