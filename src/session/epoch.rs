//! Send epochs: why a proxy never reuses a (key, nonce) pair.
//!
//! A proxy's 64-bit send counter is `epoch << 32 | seq`. Every time a proxy
//! creates send state for a session it did not just key (import, re-import,
//! after a restart) and every time a session's `seq` would wrap, it takes a
//! fresh epoch from its [`Epochs`] allocator, which never hands out an epoch
//! twice for the life of the proxy id, across restarts. With proxy ids
//! unique in a network, (sender id, counter) is then unique under every
//! session key no matter what state a session arrives with (spec 7.2, 8.8).
//!
//! A session made by a handshake has keys no one used before (Noise IK: the
//! proxy's ephemeral is fresh), so its first send state uses the reserved
//! epoch 0 ([`Epoch::fresh_keys`]), which no lease grants: reconnecting
//! clients consume none of the proxy id's finite epoch space.
//!
//! The allocator is sans-IO: it only hands out epochs of a lease the shell
//! has made durable first ([`EpochLease`]). A shell with a disk keeps the
//! lease end in a [`LeaseFile`] and renews when [`Epochs::wants_lease`] says
//! so; with none left, [`Epochs::take`] refuses, never reuses.

use super::id::ProxyId;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The most epochs one lease grants (spec 8.8). At one epoch per import
/// that is 65,536 imports between two writes of the lease file (handshakes
/// take none).
pub const LEASE_BLOCK: u32 = 1 << 16;

/// The first lease after a start. Each renewal doubles the size up to
/// [`LEASE_BLOCK`], so a proxy that restarts often (a crash loop) skips few
/// epochs per start, and a busy one writes its file rarely.
pub const FIRST_LEASE: u32 = 1 << 10;

/// The epoch of a session's first send state after a handshake (fresh
/// keys, [`Epoch::fresh_keys`]). No lease grants it.
pub const FRESH_KEYS_EPOCH: u32 = 0;

/// The largest epoch ever handed out. u32::MAX stays unused so that every
/// counter of every epoch is below [`super::replay::COUNTER_LIMIT`].
pub const MAX_EPOCH: u32 = u32::MAX - 1;

/// One epoch, taken from an [`Epochs`] allocator and never handed out again.
/// Not `Clone`: a proxy's send state is built by consuming one
/// ([`super::SessionCrypto::proxy`]), so two sessions cannot share it.
#[derive(Debug)]
pub struct Epoch {
    value: u32,
    /// Where the session takes its next epoch when its `seq` runs out.
    source: Epochs,
}

impl Epoch {
    /// The epoch number (the high 32 bits of the counters it covers).
    pub fn get(&self) -> u32 {
        self.value
    }

    /// The reserved epoch 0, for the first send state of a session whose
    /// keys a handshake has just made (spec 8.8). Fresh keys make any
    /// counter safe; 0 is never granted by a lease ([`Epochs::grant`]), so
    /// a later import of the session (a leased epoch, at least 1) never
    /// repeats its counters. Only the handshake path may call this: send
    /// state built from an import must take a leased epoch.
    pub(crate) fn fresh_keys(source: &Epochs) -> Self {
        Self {
            value: FRESH_KEYS_EPOCH,
            source: source.clone(),
        }
    }

    pub(super) fn into_parts(self) -> (u32, Epochs) {
        (self.value, self.source)
    }
}

/// A range of epochs `[start, end)` the allocator may hand out. A shell
/// builds one only after `end` is durable ([`LeaseFile`]), so no epoch of it
/// can be handed out again after a restart.
#[derive(Debug, PartialEq, Eq)]
pub struct EpochLease {
    start: u32,
    end: u32,
}

impl EpochLease {
    /// The epochs `[start, end)`. The caller promises that `end` is recorded
    /// durably (it is where the proxy starts after a restart).
    pub fn durable(start: u32, end: u32) -> Self {
        // `end` is exclusive and a u32, so u32::MAX (past MAX_EPOCH) is
        // never handed out.
        Self { start, end }
    }

    /// Every epoch, with nothing recorded. Only for a core that never
    /// imports a session it (or an earlier run with its proxy id) may
    /// already have sent on: tests, the simulator, benchmarks, the demo.
    /// Sessions from handshakes always have fresh keys, so for them any
    /// epoch is safe.
    pub fn ephemeral() -> Self {
        Self::durable(1, MAX_EPOCH + 1)
    }

    /// First epoch of the lease.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// One past the last epoch of the lease.
    pub fn end(&self) -> u32 {
        self.end
    }
}

/// No (suitable) epoch is left in the lease: the session or import is
/// refused (spec 8.8); the shell must renew the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochsExhausted;

impl fmt::Display for EpochsExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no send epoch left in the lease")
    }
}

impl std::error::Error for EpochsExhausted {}

/// One proxy's epoch allocator. Cloning gives another handle to the same
/// allocator (the shell keeps one to grant leases without the core lock),
/// never a second allocator.
#[derive(Clone)]
pub struct Epochs {
    me: ProxyId,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// Next epoch to hand out (u64: may stand at MAX_EPOCH + 1).
    next: u64,
    /// One past the last epoch granted.
    end: u64,
    /// Renew when fewer than this many are left: half the last lease.
    low_water: u64,
}

impl fmt::Debug for Epochs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        write!(f, "Epochs({} next {} end {})", self.me, s.next, s.end)
    }
}

impl Epochs {
    /// The allocator of proxy `me`, with no lease: it refuses until the
    /// shell grants one.
    pub fn new(me: ProxyId) -> Self {
        Self {
            me,
            state: Arc::new(Mutex::new(State {
                next: 0,
                end: 0,
                low_water: 0,
            })),
        }
    }

    /// An allocator with [`EpochLease::ephemeral`] granted: the one-call
    /// set-up for tests and tools.
    pub fn ephemeral(me: ProxyId) -> Self {
        let e = Self::new(me);
        e.grant(EpochLease::ephemeral());
        e
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two integers updated together: always consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The proxy whose epochs these are.
    pub fn me(&self) -> ProxyId {
        self.me
    }

    /// Adds a lease. Epochs below `lease.start()` are never handed out
    /// afterwards; the end only moves up. Epoch 0 is never handed out
    /// (reserved for [`Epoch::fresh_keys`]), even if the lease starts at 0.
    pub fn grant(&self, lease: EpochLease) {
        let mut s = self.lock();
        s.next = s
            .next
            .max(u64::from(lease.start))
            .max(u64::from(FRESH_KEYS_EPOCH) + 1);
        s.end = s.end.max(u64::from(lease.end));
        s.low_water = u64::from(lease.end.saturating_sub(lease.start) / 2);
    }

    /// A fresh epoch, or `None` if the lease is used up.
    pub fn take(&self) -> Option<Epoch> {
        self.take_at_least(0)
    }

    /// A fresh epoch no lower than `min` (epochs below it are skipped for
    /// good), or `None` if the lease has none.
    pub fn take_at_least(&self, min: u64) -> Option<Epoch> {
        let mut s = self.lock();
        let value = s.next.max(min);
        if value >= s.end {
            return None;
        }
        s.next = value + 1;
        Some(Epoch {
            value: value as u32,
            source: self.clone(),
        })
    }

    /// Epochs left in the lease.
    pub fn remaining(&self) -> u64 {
        let s = self.lock();
        s.end.saturating_sub(s.next)
    }

    /// The next epoch to be handed out (for status output).
    pub fn next(&self) -> u64 {
        self.lock().next
    }

    /// True when the shell should renew the lease: fewer than half the
    /// last lease is left (so it is renewed before anyone is refused), and
    /// more epochs exist.
    pub fn wants_lease(&self) -> bool {
        let s = self.lock();
        s.end <= u64::from(MAX_EPOCH) && s.end.saturating_sub(s.next) <= s.low_water
    }
}

/// Why the lease file could not give a lease.
#[derive(Debug)]
pub enum LeaseError {
    /// Reading or writing the file failed.
    Io {
        /// The lease file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file does not hold one decimal number below 2^32.
    Corrupt {
        /// The lease file.
        path: PathBuf,
    },
    /// Every epoch up to [`MAX_EPOCH`] is used: this proxy id must not send
    /// again (give the proxy a new id).
    Exhausted,
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "epoch lease {}: {source}", path.display()),
            Self::Corrupt { path } => write!(
                f,
                "epoch lease {}: not a decimal epoch; refusing to guess (see spec 8.8)",
                path.display()
            ),
            Self::Exhausted => f.write_str("every send epoch of this proxy id is used"),
        }
    }
}

impl std::error::Error for LeaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The shell's durable record of the lease end: one decimal number in a
/// small file (spec 8.8), replaced by write, fsync, rename, fsync of the
/// directory, so after a crash it holds the old or the new end, never less.
#[derive(Debug)]
pub struct LeaseFile {
    path: PathBuf,
    /// The end last made durable (0 if the file did not exist).
    end: u32,
    /// Size of the next lease: [`FIRST_LEASE`], doubling to [`LEASE_BLOCK`].
    block: u32,
}

impl LeaseFile {
    /// Reads the lease file at `path`; a missing file is an end of 0.
    pub fn open(path: &Path) -> Result<Self, LeaseError> {
        let end = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().parse().map_err(|_| LeaseError::Corrupt {
                path: path.to_owned(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(LeaseError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(Self {
            path: path.to_owned(),
            end,
            block: FIRST_LEASE,
        })
    }

    /// The end last made durable.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// The first lease of a starting proxy: from the larger of the recorded
    /// end and the wall clock in seconds since the Unix epoch (so a lost
    /// file reuses nothing unless the proxy took more than one epoch per
    /// second on average), [`FIRST_LEASE`] long, recorded before returned.
    pub fn first_lease(&mut self, unix_secs: u64) -> Result<EpochLease, LeaseError> {
        let start = u64::from(self.end).max(unix_secs).max(1);
        self.lease_from(start)
    }

    /// The next lease, from the recorded end on, twice as long as the last
    /// (at most [`LEASE_BLOCK`]), recorded before returned.
    pub fn renew(&mut self) -> Result<EpochLease, LeaseError> {
        self.lease_from(u64::from(self.end))
    }

    fn lease_from(&mut self, start: u64) -> Result<EpochLease, LeaseError> {
        if start > u64::from(MAX_EPOCH) {
            return Err(LeaseError::Exhausted);
        }
        let end = (start + u64::from(self.block)).min(u64::from(MAX_EPOCH) + 1) as u32;
        self.store(end)?;
        self.block = self.block.saturating_mul(2).min(LEASE_BLOCK);
        Ok(EpochLease::durable(start as u32, end))
    }

    fn store(&mut self, end: u32) -> Result<(), LeaseError> {
        let io = |source| LeaseError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        writeln!(f, "{end}").map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // The rename itself must be durable before the lease is used.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        self.end = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ProxyId {
        ProxyId::new(3).unwrap()
    }

    #[test]
    fn epochs_are_handed_out_once_and_refused_when_the_lease_ends() {
        let e = Epochs::new(me());
        assert!(e.take().is_none(), "no lease, no epoch");
        e.grant(EpochLease::durable(10, 13));
        let got: Vec<u32> = std::iter::from_fn(|| e.take().map(|x| x.get())).collect();
        assert_eq!(got, [10, 11, 12]);
        assert!(e.take().is_none());
        // A renewal continues where the last lease ended.
        e.grant(EpochLease::durable(13, 15));
        assert_eq!(e.take().unwrap().get(), 13);
        // An older lease never moves the allocator back.
        e.grant(EpochLease::durable(0, 5));
        assert_eq!(e.take().unwrap().get(), 14);
        assert!(e.take().is_none());
    }

    #[test]
    fn no_lease_grants_the_fresh_keys_epoch() {
        let e = Epochs::new(me());
        e.grant(EpochLease::durable(0, 3));
        let got: Vec<u32> = std::iter::from_fn(|| e.take().map(|x| x.get())).collect();
        assert_eq!(got, [1, 2], "0 is reserved for sessions with fresh keys");
        assert_eq!(Epoch::fresh_keys(&e).get(), FRESH_KEYS_EPOCH);
        assert_eq!(e.next(), 3, "the fresh-keys epoch takes nothing");
    }

    #[test]
    fn take_at_least_skips_and_never_goes_back() {
        let e = Epochs::new(me());
        e.grant(EpochLease::durable(1, 100));
        assert_eq!(e.take_at_least(50).unwrap().get(), 50);
        assert_eq!(e.take().unwrap().get(), 51);
        assert_eq!(e.take_at_least(5).unwrap().get(), 52);
        assert!(e.take_at_least(100).is_none(), "beyond the lease");
        assert_eq!(e.take().unwrap().get(), 53, "a refusal skips nothing");
    }

    #[test]
    fn wants_a_lease_at_half_the_last_one() {
        let e = Epochs::new(me());
        assert!(e.wants_lease());
        e.grant(EpochLease::durable(1, 1 + 100));
        for _ in 0..49 {
            assert!(!e.wants_lease());
            e.take().unwrap();
        }
        assert!(!e.wants_lease(), "51 left");
        e.take().unwrap();
        assert!(e.wants_lease(), "50 left");
        // At the very end of the epoch space there is nothing to ask for.
        let last = Epochs::ephemeral(me());
        assert!(!last.wants_lease());
    }

    #[test]
    fn lease_file_round_trip_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("send-epoch");
        let mut f = LeaseFile::open(&path).unwrap();
        assert_eq!(f.end(), 0);
        let first = f.first_lease(1_000).unwrap();
        assert_eq!((first.start(), first.end()), (1_000, 1_000 + FIRST_LEASE));
        let second = f.renew().unwrap();
        assert_eq!(second.start(), first.end());
        assert_eq!(second.end() - second.start(), 2 * FIRST_LEASE, "doubles");
        for _ in 0..20 {
            f.renew().unwrap();
        }
        let big = f.renew().unwrap();
        assert_eq!(big.end() - big.start(), LEASE_BLOCK, "up to a block");
        let second = big;
        // Restart: the file, not the clock, decides when the clock is behind.
        let mut again = LeaseFile::open(&path).unwrap();
        assert_eq!(again.end(), second.end());
        let third = again.first_lease(5).unwrap();
        assert_eq!(third.start(), second.end());
        // The clock decides when it is ahead (a lost or old file).
        let fourth = LeaseFile::open(&path)
            .unwrap()
            .first_lease(u64::from(third.end()) + 7)
            .unwrap();
        assert_eq!(fourth.start(), third.end() + 7);
        assert!(!dir.path().join("send-epoch.tmp").exists());
    }

    #[test]
    fn corrupt_or_exhausted_lease_file_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("send-epoch");
        std::fs::write(&path, "twelve\n").unwrap();
        assert!(matches!(
            LeaseFile::open(&path),
            Err(LeaseError::Corrupt { .. })
        ));
        std::fs::write(&path, format!("{}\n", u64::from(MAX_EPOCH) + 1)).unwrap();
        let mut f = LeaseFile::open(&path).unwrap();
        assert!(matches!(f.renew(), Err(LeaseError::Exhausted)));
        assert!(matches!(f.first_lease(0), Err(LeaseError::Exhausted)));
        // The last lease is cut at MAX_EPOCH.
        std::fs::write(&path, format!("{}\n", MAX_EPOCH - 2)).unwrap();
        let l = LeaseFile::open(&path).unwrap().renew().unwrap();
        assert_eq!((l.start(), l.end()), (MAX_EPOCH - 2, MAX_EPOCH + 1));
    }
}
