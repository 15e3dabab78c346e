//! The subscriber store: which client public keys (32-byte X25519 keys) are
//! authorised, and under which names.
//!
//! It is a small SQLite file shared by the daemon (which reads it and reloads
//! when [`SubscriberStore::data_version`] changes) and the CLI (which edits
//! it), so it is opened in WAL mode with a busy timeout: readers never block
//! the writer and short write contention waits instead of failing.
//!
//! For replication between proxies (docs/anypsp-protocol.md), every (name,
//! key) row carries the wall-clock time of its last change (`changed_ms`),
//! and a removal leaves a tombstone (`live = 0`) with its time instead of
//! deleting the row. A proxy that was down while a key was removed elsewhere
//! can then tell that removal from an add: changes are ordered by time, last
//! writer wins ([`SubscriberStore::apply_remote`]), and tombstones are
//! purged once older than a horizon ([`SubscriberStore::purge_tombstones`],
//! default [`DEFAULT_TOMBSTONE_HORIZON`]). Every change, local or applied
//! from a peer, takes the next value of a local sequence, so the daemon
//! reads what changed with [`SubscriberStore::changes_since`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, TransactionBehavior};

pub use crate::call::name::{validate_name, NameError, MAX_NAME_LEN};

/// Schema version this code writes and understands (`PRAGMA user_version`).
/// Version 1 had no times or tombstones; it is upgraded on open.
pub const SCHEMA_VERSION: i64 = 2;

/// How long a tombstone is kept by default: 7 days. A proxy out of contact
/// for longer may resurrect a removal it missed (as the sync engine's own
/// horizon, docs/anypsp-protocol.md Section 4.5).
pub const DEFAULT_TOMBSTONE_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most rows one [`SubscriberStore::changes_since`] call returns.
pub const MAX_CHANGES_PAGE: usize = 1000;

/// Most tombstones one [`SubscriberStore::purge_tombstones`] call deletes.
pub const MAX_PURGE: usize = 10_000;

/// A remote change stamped further ahead of our wall clock than this is
/// refused ([`RemoteOutcome::TooFarAhead`]): a peer with a clock years ahead
/// would otherwise win every later change. The sync engine's default drift
/// bound.
pub const MAX_AHEAD_MS: u64 = 60_000;

/// How long a statement waits for another process's lock before failing.
/// CLI edits are single short statements, so a few seconds is plenty.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `live = 0` is a tombstone. `seq` orders changes for
/// [`SubscriberStore::changes_since`]; `meta.last_seq` is the last one given
/// out, kept apart so that purging the newest row never hands its number
/// out again.
const CREATE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscribers (
    name TEXT NOT NULL,
    public_key BLOB NOT NULL CHECK(length(public_key) = 32),
    added_unix INTEGER NOT NULL,
    changed_ms INTEGER NOT NULL CHECK(changed_ms >= 0),
    live INTEGER NOT NULL CHECK(live IN (0, 1)),
    seq INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (name, public_key)
);
CREATE INDEX IF NOT EXISTS subscribers_tombstones ON subscribers(live, changed_ms);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value)
    SELECT 'last_seq', COALESCE(MAX(seq), 0) FROM subscribers;";

/// Version 1 to 2: every row stays authorised, changed when it was added,
/// numbered in insertion order.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE subscribers RENAME TO subscribers_v1;
CREATE TABLE subscribers (
    name TEXT NOT NULL,
    public_key BLOB NOT NULL CHECK(length(public_key) = 32),
    added_unix INTEGER NOT NULL,
    changed_ms INTEGER NOT NULL CHECK(changed_ms >= 0),
    live INTEGER NOT NULL CHECK(live IN (0, 1)),
    seq INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (name, public_key)
);
INSERT INTO subscribers (name, public_key, added_unix, changed_ms, live, seq)
    SELECT name, public_key, added_unix, MAX(added_unix, 0) * 1000, 1, rowid
    FROM subscribers_v1;
DROP TABLE subscribers_v1;";

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

/// One authorised (name, public key) pair, or a revoked one (a tombstone)
/// in [`SubscriberStore::list_removed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The subscriber's name, valid per [`validate_name`].
    pub name: String,
    /// The client's static X25519 public key.
    pub public_key: [u8; 32],
    /// When the pair was (last) added, in seconds since the Unix epoch.
    pub added_unix: i64,
    /// When the pair last changed (added, or removed for a tombstone), in
    /// wall-clock ms since the Unix epoch, here or on the peer it came from.
    pub changed_ms: u64,
}

/// One row as it changed, for replication ([`SubscriberStore::changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its place in this store's order of changes (local, never sent as a
    /// time): pass the last one seen to the next `changes_since`.
    pub seq: u64,
    /// The name.
    pub name: String,
    /// The key.
    pub public_key: [u8; 32],
    /// Authorised (`true`) or revoked (`false`, a tombstone).
    pub live: bool,
    /// When it changed, wall-clock ms since the Unix epoch.
    pub changed_ms: u64,
}

/// What [`SubscriberStore::apply_remote`] did with a peer's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// Stored: it was newer than the row here, or there was none.
    Applied,
    /// Ignored: the row here is as new or newer (last writer wins; at
    /// equal times a removal beats an add).
    Stale,
    /// Refused: stamped more than [`MAX_AHEAD_MS`] ahead of our clock.
    TooFarAhead,
    /// Refused: the name is not valid (only from
    /// [`SubscriberStore::apply_remote_many`], which refuses such a change
    /// alone; [`SubscriberStore::apply_remote`] returns an error).
    Invalid,
}

/// Wall-clock ms since the Unix epoch (0 before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` as SQLite's signed integer (times beyond year 292 million clamp).
fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// True when a change `(at, live)` beats the row's `(t, row_live)`: later
/// wins, and at the same ms a removal wins, so that every store orders the
/// same two changes the same way.
fn beats(at: u64, live: bool, t: u64, row_live: bool) -> bool {
    at > t || (at == t && !live && row_live)
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
        if found == 1 {
            tx.execute_batch(MIGRATE_1_TO_2)
                .map_err(err("upgrade schema 1 to 2"))?;
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
    /// authorised (it is then left unchanged). A pair removed before is
    /// authorised again, changed now (at least 1 ms after its removal, so
    /// that the add wins over it everywhere even if the clock stepped back).
    pub fn add(&self, name: &str, key: &[u8; 32]) -> Result<bool, StoreError> {
        validate_name(name).map_err(|source| StoreError::InvalidName {
            name: name.to_owned(),
            source,
        })?;
        self.write("add subscriber", |tx| {
            let row = Self::row_in(tx, name, key)?;
            if row.is_some_and(|(live, _)| live) {
                return Ok(false);
            }
            let at = row.map_or(now_ms(), |(_, t)| now_ms().max(t.saturating_add(1)));
            Self::put(tx, name, key, true, at)?;
            Ok(true)
        })
    }

    /// Authorises every `(name, key)` pair in one transaction (one commit,
    /// one reload of the daemon, instead of one per pair); like [`add`]
    /// otherwise. Returns how many pairs were new. A bad name fails the
    /// whole batch and changes nothing.
    ///
    /// [`add`]: Self::add
    pub fn add_many<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a [u8; 32])>,
    ) -> Result<usize, StoreError> {
        let pairs: Vec<_> = pairs.into_iter().collect();
        for (name, _) in &pairs {
            validate_name(name).map_err(|source| StoreError::InvalidName {
                name: (*name).to_owned(),
                source,
            })?;
        }
        self.write("add subscribers", |tx| {
            let mut added = 0;
            for (name, key) in &pairs {
                let row = Self::row_in(tx, name, key)?;
                if row.is_some_and(|(live, _)| live) {
                    continue;
                }
                let at = row.map_or(now_ms(), |(_, t)| now_ms().max(t.saturating_add(1)));
                Self::put(tx, name, key, true, at)?;
                added += 1;
            }
            Ok(added)
        })
    }

    /// Revokes `key` for `name`, or every key of `name` if `key` is `None`.
    /// Returns how many authorised pairs were revoked. Each leaves a
    /// tombstone changed now (at least 1 ms after the add it undoes).
    ///
    /// The name is not validated, so a row put in by other means with a bad
    /// name can still be removed.
    pub fn remove(&self, name: &str, key: Option<&[u8; 32]>) -> Result<usize, StoreError> {
        self.write("remove subscriber", |tx| {
            let keys: Vec<([u8; 32], u64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT public_key, changed_ms FROM subscribers
                     WHERE name = ?1 AND live = 1 AND (?2 IS NULL OR public_key = ?2)",
                )?;
                let rows = stmt.query_map(params![name, key], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            for (k, t) in &keys {
                Self::put(tx, name, k, false, now_ms().max(t.saturating_add(1)))?;
            }
            Ok(keys.len())
        })
    }

    /// Applies a change made on a peer: `key` authorised (`live`) or revoked
    /// for `name` at `at_ms` (wall-clock ms since the Unix epoch, as that
    /// peer's [`Change::changed_ms`]). Last writer wins: a change older than
    /// the row here does not undo it ([`RemoteOutcome::Stale`]); a removal
    /// for a row this store never had is kept as a tombstone, so that an
    /// older add arriving later stays undone.
    pub fn apply_remote(
        &self,
        name: &str,
        key: &[u8; 32],
        live: bool,
        at_ms: u64,
    ) -> Result<RemoteOutcome, StoreError> {
        validate_name(name).map_err(|source| StoreError::InvalidName {
            name: name.to_owned(),
            source,
        })?;
        if at_ms > now_ms().saturating_add(MAX_AHEAD_MS) {
            return Ok(RemoteOutcome::TooFarAhead);
        }
        self.write("apply remote subscriber change", |tx| {
            match Self::row_in(tx, name, key)? {
                Some((row_live, t)) if !beats(at_ms, live, t, row_live) => Ok(RemoteOutcome::Stale),
                _ => {
                    Self::put(tx, name, key, live, at_ms)?;
                    Ok(RemoteOutcome::Applied)
                }
            }
        })
    }

    /// [`apply_remote`](Self::apply_remote) for every change of a batch
    /// `(name, key, live, at_ms)`, in one transaction (one commit and one
    /// reload for a bulk of replicated changes, not one per change). One
    /// outcome per change, in order; a change with a bad name is refused
    /// alone ([`RemoteOutcome::Invalid`]), the others are kept. Unlike
    /// `apply_remote`, a change that leaves a row as live (or as revoked)
    /// as it is is not written ([`RemoteOutcome::Stale`]): the caller
    /// stamps every change with its own clock, which would otherwise
    /// rewrite every row a peer sends again.
    pub fn apply_remote_many<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, &'a [u8; 32], bool, u64)>,
    ) -> Result<Vec<RemoteOutcome>, StoreError> {
        let ahead = now_ms().saturating_add(MAX_AHEAD_MS);
        self.write("apply remote subscriber changes", |tx| {
            let mut out = Vec::new();
            for (name, key, live, at_ms) in changes {
                out.push(if validate_name(name).is_err() {
                    RemoteOutcome::Invalid
                } else if at_ms > ahead {
                    RemoteOutcome::TooFarAhead
                } else {
                    match Self::row_in(tx, name, key)? {
                        // Nothing to write: a restarted proxy pulling keys
                        // its store already holds rewrites (and reloads)
                        // nothing.
                        Some((row_live, t))
                            if row_live == live || !beats(at_ms, live, t, row_live) =>
                        {
                            RemoteOutcome::Stale
                        }
                        _ => {
                            Self::put(tx, name, key, live, at_ms)?;
                            RemoteOutcome::Applied
                        }
                    }
                });
            }
            Ok(out)
        })
    }

    /// Every row (authorised or tombstone) changed after `after` (a
    /// [`Change::seq`]; 0 for all), in the order of change, at most
    /// `limit` (capped at [`MAX_CHANGES_PAGE`]). Changes applied from peers
    /// are included: handing one back to the sync engine changes nothing,
    /// since its time is not newer than what the engine holds. An empty
    /// answer means the caller is up to date.
    pub fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let limit = limit.min(MAX_CHANGES_PAGE);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, name, public_key, live, changed_ms FROM subscribers
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(self.sqlite_err("read changes"))?;
        let rows = stmt
            .query_map(params![sql_ms(after), limit as i64], |r| {
                Ok(Change {
                    seq: r.get::<_, i64>(0)?.max(0) as u64,
                    name: r.get(1)?,
                    public_key: r.get(2)?,
                    live: r.get(3)?,
                    changed_ms: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .map_err(self.sqlite_err("read changes"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.sqlite_err("read changes"))
    }

    /// Deletes tombstones changed more than `horizon` ago, at most
    /// [`MAX_PURGE`] per call (call again while it returns that many).
    /// Returns how many were deleted. Authorised rows are never purged.
    pub fn purge_tombstones(&self, horizon: Duration) -> Result<usize, StoreError> {
        let horizon_ms = u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX);
        let before = now_ms().saturating_sub(horizon_ms);
        self.conn
            .execute(
                "DELETE FROM subscribers WHERE rowid IN (
                     SELECT rowid FROM subscribers WHERE live = 0 AND changed_ms < ?1 LIMIT ?2)",
                params![sql_ms(before), MAX_PURGE as i64],
            )
            .map_err(self.sqlite_err("purge tombstones"))
    }

    /// The row of (`name`, `key`): `Some((live, changed_ms))`, or `None` if
    /// there is none (never added, or its tombstone was purged).
    pub fn get(&self, name: &str, key: &[u8; 32]) -> Result<Option<(bool, u64)>, StoreError> {
        Self::row_in(&self.conn, name, key).map_err(self.sqlite_err("read subscriber"))
    }

    fn row_in(
        conn: &Connection,
        name: &str,
        key: &[u8; 32],
    ) -> rusqlite::Result<Option<(bool, u64)>> {
        use rusqlite::OptionalExtension;
        conn.prepare_cached(
            "SELECT live, changed_ms FROM subscribers WHERE name = ?1 AND public_key = ?2",
        )?
        .query_row(params![name, key], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .optional()
    }

    /// Writes the row's new state with the next sequence number. Within
    /// the caller's write transaction.
    fn put(
        tx: &Connection,
        name: &str,
        key: &[u8; 32],
        live: bool,
        at_ms: u64,
    ) -> rusqlite::Result<()> {
        let seq: i64 = tx.query_row(
            "UPDATE meta SET value = value + 1 WHERE key = 'last_seq' RETURNING value",
            [],
            |r| r.get(0),
        )?;
        let added_unix = sql_ms(at_ms / 1000);
        tx.execute(
            "INSERT INTO subscribers (name, public_key, added_unix, changed_ms, live, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name, public_key) DO UPDATE SET
                 added_unix = CASE WHEN excluded.live AND NOT live
                                   THEN excluded.added_unix ELSE added_unix END,
                 changed_ms = excluded.changed_ms,
                 live = excluded.live,
                 seq = excluded.seq",
            params![name, key, added_unix, sql_ms(at_ms), live, seq],
        )?;
        Ok(())
    }

    /// Runs `f` in an IMMEDIATE transaction (the write lock taken up front,
    /// so a read-then-write never races another process's write).
    fn write<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.sqlite_err(op))?;
        let r = f(&tx).map_err(self.sqlite_err(op))?;
        tx.commit().map_err(self.sqlite_err(op))?;
        Ok(r)
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
        self.list_where(true)
    }

    /// Lists every revoked pair still kept as a tombstone (its
    /// `changed_ms` is when it was removed), sorted as [`list`](Self::list).
    pub fn list_removed(&self) -> Result<Vec<Subscriber>, StoreError> {
        self.list_where(false)
    }

    fn list_where(&self, live: bool) -> Result<Vec<Subscriber>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, public_key, added_unix, changed_ms FROM subscribers
                 WHERE live = ?1 ORDER BY name, public_key",
            )
            .map_err(self.sqlite_err("list subscribers"))?;
        let rows = stmt
            .query_map([live], |row| {
                Ok(Subscriber {
                    name: row.get(0)?,
                    public_key: row.get(1)?,
                    added_unix: row.get(2)?,
                    changed_ms: row.get::<_, i64>(3)?.max(0) as u64,
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

mod reload;
pub use reload::{ReloadOutcome, ReloadWatch, SnapshotSource};

#[cfg(test)]
mod tests;
