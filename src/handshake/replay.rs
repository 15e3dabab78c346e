//! Replay protection of handshake initiations (spec 5.3).
//!
//! A proxy accepts an initiation only if its TAI64N timestamp is within
//! [`FRESHNESS_WINDOW`] of the proxy's wall clock, newer than the newest
//! timestamp it holds for that client key, and newer than its floor. The
//! floor starts at the proxy's start time, so no initiation with a timestamp
//! before a (re)start is ever accepted after it, with nothing written to disk.
//!
//! The shared part of the state is a max-register of timestamps per client
//! key plus the floor; merging two tables takes the maximum of each, so every
//! proxy of a network can share it ([`ReplayTable::merge`]). A timestamp
//! answered as too far ahead is recorded in that register too, so its replay
//! is refused when the clocks reach it, at every proxy the state reaches;
//! the answering proxy alone keeps the gap below it open, so that the client
//! that corrects its clock back is accepted at once. Entries whose newest
//! timestamp has left the window are forgotten (the window refuses those
//! timestamps anyway); a hard cap bounds the table, and an entry evicted to
//! stay under it raises the floor (at most to the proxy's clock) instead of
//! being forgotten.
//!
//! Timestamps outside the window, and stale ones, are answered with a hint
//! (see [`Verdict`]) so that a client with a wrong clock corrects it instead
//! of being locked out: once per timestamp and per kind (ahead, behind,
//! stale) while the key's entry lives (at least two windows after its last
//! answer, and until its newest timestamp is behind the window).

use crate::crypto::{tai64n, tai64n_to_unix_nanos, PublicKey};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far an initiation's timestamp may be from the proxy's wall clock,
/// either way. Wide enough for phones whose clock is a minute off, narrow
/// enough that an entry is needed for only a few minutes.
pub const FRESHNESS_WINDOW: Duration = Duration::from_secs(120);

/// Default cap on the client keys a [`ReplayTable`] holds (about 25 MB).
pub const DEFAULT_MAX_KEYS: usize = 1 << 18;

/// The proxy's wall clock, derived from one reading and the monotonic clock,
/// so the core never reads a clock itself (it is sans-IO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// When the proxy started (its replay floor is the wall clock then).
    start: Instant,
    anchor: Instant,
    unix_nanos: u128,
}

impl WallClock {
    /// A clock that reads `unix_nanos` (nanoseconds since the Unix epoch) at
    /// `now`.
    pub fn new(now: Instant, unix_nanos: u128) -> Self {
        Self {
            start: now,
            anchor: now,
            unix_nanos,
        }
    }

    /// The same clock, set to read `unix_nanos` at `now` (after a step of
    /// the system clock); the start instant is kept.
    pub fn reanchored(&self, now: Instant, unix_nanos: u128) -> Self {
        Self {
            start: self.start,
            anchor: now,
            unix_nanos,
        }
    }

    /// What this clock reads for the instant it was created at.
    pub fn start_unix_nanos(&self) -> u128 {
        self.at(self.start)
    }

    /// A clock anchored at the operating system's wall clock, read once.
    pub fn system(now: Instant) -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self::new(now, unix)
    }

    /// Nanoseconds since the Unix epoch at `now`.
    pub fn at(&self, now: Instant) -> u128 {
        if now >= self.anchor {
            self.unix_nanos + (now - self.anchor).as_nanos()
        } else {
            self.unix_nanos
                .saturating_sub((self.anchor - now).as_nanos())
        }
    }
}

/// What the proxy should do with an authentic initiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fresh: its timestamp is now recorded; go on (accept or refuse it on
    /// other grounds).
    Fresh,
    /// Already seen or already answered: drop it without an answer (and
    /// without the Diffie-Hellman work of one).
    Replay,
    /// The timestamp is more than [`FRESHNESS_WINDOW`] from the proxy's
    /// clock: answer with "clock skew" and `hint`.
    OutsideWindow {
        /// A timestamp (ns since the Unix epoch) that would be accepted now.
        hint: u128,
    },
    /// Within the window but not newer than the newest timestamp held for
    /// the key or the floor (a clock stepped back, a proxy restart, another
    /// device with the same key): answer with "stale" and `hint`.
    Stale {
        /// A timestamp (ns since the Unix epoch) that would be accepted now.
        hint: u128,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    /// Newest authentic timestamp seen, accepted or answered as ahead of
    /// the window (0: none). The shared, mergeable part: every proxy that
    /// holds it refuses timestamps at or below it.
    newest: u128,
    /// Local only. When non-zero, the lowest timestamp answered as ahead
    /// since the key was last accepted above it: timestamps in
    /// `ahead_lo..=newest` are refused here, and so are those at or below
    /// `below`, but the gap between (`below`, `ahead_lo`) stays open so that
    /// a client that corrected its clock back is accepted at once.
    ahead_lo: u128,
    /// Local only, meaningful when `ahead_lo` is non-zero: timestamps at or
    /// below it are refused (the newest accepted or merged one).
    below: u128,
    /// Newest timestamp answered as behind the window (local only).
    answered_behind: u128,
    /// Newest timestamp answered as stale within the window (local only).
    answered_stale: u128,
    /// When the entry may be forgotten (proxy wall clock, ns).
    expires: u128,
}

impl Entry {
    /// True if this proxy refuses `ts` for this key (the floor aside).
    fn refuses(&self, ts: u128) -> bool {
        if self.ahead_lo == 0 {
            ts <= self.newest
        } else {
            ts <= self.below || (self.ahead_lo..=self.newest).contains(&ts)
        }
    }

    /// The lowest timestamp at or above `t` this proxy accepts for the key.
    fn accepted_from(&self, t: u128) -> u128 {
        let t = if self.ahead_lo == 0 {
            t
        } else {
            t.max(self.below + 1)
        };
        if self.ahead_lo == 0 || t >= self.ahead_lo {
            t.max(self.newest + 1)
        } else {
            t
        }
    }

    /// Refuses everything at or below `t` from now on.
    fn refuse_up_to(&mut self, t: u128) {
        self.newest = self.newest.max(t);
        self.below = self.below.max(t);
        if self.ahead_lo != 0 && self.below.saturating_add(1) >= self.ahead_lo {
            self.ahead_lo = 0;
        }
    }
}

/// Per-client-key max-register of handshake timestamps, plus a floor.
#[derive(Debug)]
pub struct ReplayTable {
    window: u128,
    max_keys: usize,
    /// Timestamps at or below this are refused for every key (ns): the
    /// larger of `start - 1` and `raised`.
    floor: u128,
    /// The largest floor set by eviction, merging or [`ReplayTable::raise_floor`].
    raised: u128,
    entries: HashMap<PublicKey, Entry>,
    /// Entries in order of expiry: expiry and eviction are O(log n).
    by_expiry: BTreeSet<(u128, PublicKey)>,
    /// Keys whose newest time stamp grew here (not by a merge) since
    /// [`ReplayTable::take_changed`] last took them: what the sync bridge
    /// replicates. A subset of `entries`, so bounded by `max_keys`.
    changed: BTreeSet<PublicKey>,
}

impl ReplayTable {
    /// An empty table for a proxy that starts at `start_unix_nanos`: no
    /// timestamp before then is accepted. Holds at most `max_keys` keys (at
    /// least 1).
    pub fn new(start_unix_nanos: u128, max_keys: usize) -> Self {
        Self {
            window: FRESHNESS_WINDOW.as_nanos(),
            max_keys: max_keys.max(1),
            floor: start_unix_nanos.saturating_sub(1),
            raised: 0,
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            changed: BTreeSet::new(),
        }
    }

    /// Judges (and records) an authentic initiation from `key` made at `ts`,
    /// received when the proxy's clock reads `now` (ns since the Unix
    /// epoch). O(log n).
    pub fn check(&mut self, key: &PublicKey, ts: &[u8; 12], now: u128) -> Verdict {
        self.expire(now);
        // A malformed TAI64N is as useless as one from 1970: behind.
        let ts = tai64n_to_unix_nanos(ts).unwrap_or(0);
        let old = self.entries.get(key).copied().unwrap_or_default();
        // The lowest timestamp accepted now: the window is centred on it
        // rather than on `now` when the key's state is ahead of the clock
        // (the clock was stepped back, or the client was told to run ahead),
        // so that a client that adopts it is accepted.
        let hint = old.accepted_from(now.max(self.floor + 1));
        let mut e = old;
        let verdict = if ts > hint + self.window {
            // Answered, and recorded as the key's newest (shared): a replay
            // of it is refused everywhere the state reaches, also when the
            // clock reaches it. The range of such answers stays open below
            // (`below`..`ahead_lo`) here, for the client that corrects.
            // (Below `ahead_lo` is `hint`, so `ts` is either in the answered
            // range, or a new answer.)
            if old.ahead_lo != 0 && (old.ahead_lo..=old.newest).contains(&ts) {
                return Verdict::Replay;
            }
            if e.ahead_lo == 0 {
                e.below = e.newest;
                e.ahead_lo = ts;
            }
            e.ahead_lo = e.ahead_lo.min(ts);
            e.newest = e.newest.max(ts);
            Verdict::OutsideWindow { hint }
        } else if ts + self.window < now {
            if old.answered_behind >= ts {
                return Verdict::Replay;
            }
            e.answered_behind = ts;
            Verdict::OutsideWindow { hint }
        } else if ts > self.floor && !old.refuses(ts) {
            if ts > e.newest {
                e.ahead_lo = 0;
            }
            e.refuse_up_to(ts);
            Verdict::Fresh
        } else if ts == old.newest || ts == old.ahead_lo || old.answered_stale >= ts {
            return Verdict::Replay;
        } else {
            e.answered_stale = ts;
            Verdict::Stale { hint }
        };
        if e.newest > old.newest {
            self.changed.insert(*key);
        }
        self.store(key, e, now);
        verdict
    }

    fn store(&mut self, key: &PublicKey, mut e: Entry, now: u128) {
        match self.entries.get(key) {
            Some(old) => {
                self.by_expiry.remove(&(old.expires, *key));
            }
            None => {
                if self.entries.len() >= self.max_keys {
                    self.evict_first(now);
                }
            }
        }
        // An accepted timestamp is at most the hint + window, so the entry
        // is needed until `newest` (which may be ahead, answered as such) is
        // behind the window: never expire it before, or a replay of it could
        // be accepted then.
        e.expires = (now + 2 * self.window)
            .max(e.newest.saturating_add(self.window))
            .max(e.expires);
        self.by_expiry.insert((e.expires, *key));
        self.entries.insert(*key, e);
    }

    /// Drops the entry that expires first, raising the floor to its newest
    /// timestamp so that what it protected stays refused, but never beyond
    /// `now`: any key (known or not) can earn an entry with timestamps
    /// ahead of the clock, and must not push the floor of every other key
    /// to where clients with right clocks are refused. (What an evicted key
    /// made ahead of `now` is then no longer refused: spec 13.3.)
    fn evict_first(&mut self, now: u128) {
        if let Some((_, key)) = self.by_expiry.pop_first() {
            self.changed.remove(&key);
            if let Some(e) = self.entries.remove(&key) {
                self.raise(e.newest.min(now));
            }
        }
    }

    fn raise(&mut self, t: u128) {
        self.raised = self.raised.max(t);
        self.floor = self.floor.max(t);
    }

    /// Moves the start part of the floor (the proxy's start time, `start`
    /// ns since the Unix epoch) after a step of the proxy's clock; floors
    /// raised otherwise stay.
    pub fn set_start(&mut self, start: u128) {
        self.floor = start.saturating_sub(1).max(self.raised);
    }

    /// Forgets entries whose timestamps the window refuses by now.
    fn expire(&mut self, now: u128) {
        while let Some(&(expires, key)) = self.by_expiry.first() {
            if expires >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&key);
            self.changed.remove(&key);
        }
    }

    /// Timestamps at or below the floor are refused for every key.
    pub fn floor(&self) -> [u8; 12] {
        tai64n(self.floor)
    }

    /// Raises the floor to `ts` (never lowers it).
    pub fn raise_floor(&mut self, ts: &[u8; 12]) {
        if let Some(t) = tai64n_to_unix_nanos(ts) {
            self.raise(t);
        }
    }

    /// The newest timestamp recorded for `key`, if any.
    pub fn newest(&self, key: &PublicKey) -> Option<[u8; 12]> {
        self.entries
            .get(key)
            .filter(|e| e.newest > 0)
            .map(|e| tai64n(e.newest))
    }

    /// The shareable state: every key's newest timestamp (the floor is
    /// [`ReplayTable::floor`]).
    pub fn iter(&self) -> impl Iterator<Item = (PublicKey, [u8; 12])> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.newest > 0)
            .map(|(k, e)| (*k, tai64n(e.newest)))
    }

    /// Merges another proxy's state (its floor and per-key newest
    /// timestamps) into this one: the maximum of each wins, so merging is
    /// commutative, associative and idempotent. `now` is this proxy's clock.
    pub fn merge(
        &mut self,
        floor: &[u8; 12],
        entries: impl IntoIterator<Item = (PublicKey, [u8; 12])>,
        now: u128,
    ) {
        self.raise_floor(floor);
        self.expire(now);
        for (key, ts) in entries {
            let Some(ts) = tai64n_to_unix_nanos(&ts) else {
                continue;
            };
            // Already behind the window: nothing to protect.
            if ts + self.window < now {
                continue;
            }
            let mut e = self.entries.get(&key).copied().unwrap_or_default();
            // Another proxy refuses everything at or below `ts`: so does
            // this one (it closes the local gap below an ahead answer).
            let refused_up_to = if e.ahead_lo == 0 { e.newest } else { e.below };
            if ts <= refused_up_to {
                continue;
            }
            e.refuse_up_to(ts);
            self.store(&key, e, now);
        }
    }

    /// Takes one key whose newest time stamp grew here since it was last
    /// taken, with that stamp (TAI64N): the sync bridge replicates it
    /// (docs/anypsp-protocol.md Section 16.5). Growth by
    /// [`ReplayTable::merge`] is not reported (it came from a peer).
    /// O(log n).
    pub fn take_changed(&mut self) -> Option<(PublicKey, [u8; 12])> {
        while let Some(k) = self.changed.pop_first() {
            if let Some(e) = self.entries.get(&k).filter(|e| e.newest > 0) {
                return Some((k, tai64n(e.newest)));
            }
        }
        None
    }

    /// Client keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u128 = 1_000_000_000;
    const T0: u128 = 1_800_000_000 * S;

    fn key(i: u32) -> PublicKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        PublicKey(k)
    }

    #[test]
    fn window_floor_and_max_register() {
        let mut t = ReplayTable::new(T0, 16);
        let k = key(1);
        assert!(matches!(
            t.check(&k, &tai64n(T0 - S), T0),
            Verdict::Stale { hint } if hint == T0
        ));
        assert_eq!(t.check(&k, &tai64n(T0 + 1), T0), Verdict::Fresh);
        assert_eq!(t.check(&k, &tai64n(T0 + 1), T0), Verdict::Replay);
        // Older than the newest: stale, answered once, with a hint above it.
        assert_eq!(
            t.check(&k, &tai64n(T0 - S / 2), T0 + S),
            Verdict::Stale { hint: T0 + S }
        );
        assert_eq!(t.check(&k, &tai64n(T0 - S / 2), T0 + S), Verdict::Replay);
        assert_eq!(t.check(&k, &tai64n(T0 + 2), T0 + S), Verdict::Fresh);
        // Far ahead and far behind: answered once each.
        let ahead = T0 + 3600 * S;
        assert!(matches!(
            t.check(&k, &tai64n(ahead), T0 + S),
            Verdict::OutsideWindow { .. }
        ));
        assert_eq!(t.check(&k, &tai64n(ahead), T0 + S), Verdict::Replay);
        // The answered-ahead timestamp is the key's shared newest.
        assert_eq!(t.newest(&k), Some(tai64n(ahead)));
        let behind = T0 - 3600 * S;
        assert!(matches!(
            t.check(&k, &tai64n(behind), T0 + S),
            Verdict::OutsideWindow { .. }
        ));
        assert_eq!(t.check(&k, &tai64n(behind), T0 + S), Verdict::Replay);
        // The corrected clock is accepted.
        assert_eq!(t.check(&k, &tai64n(T0 + S), T0 + S), Verdict::Fresh);
        // The answered-ahead initiation stays refused when its time comes.
        assert_eq!(t.check(&k, &tai64n(ahead), ahead), Verdict::Replay);
    }

    #[test]
    fn expired_entries_go_in_time_order() {
        let mut t = ReplayTable::new(T0, 1000);
        for i in 0..10 {
            assert_eq!(
                t.check(&key(i), &tai64n(T0 + u128::from(i)), T0 + u128::from(i) * S),
                Verdict::Fresh
            );
        }
        assert_eq!(t.len(), 10);
        // After two windows the first five are behind the window for good.
        t.check(&key(99), &tai64n(T0 + 245 * S), T0 + 245 * S);
        assert_eq!(t.len(), 6, "keys 5..9 and 99 remain");
        assert!(t.newest(&key(4)).is_none() && t.newest(&key(5)).is_some());
    }

    #[test]
    fn cap_evicts_oldest_and_raises_the_floor() {
        let mut t = ReplayTable::new(T0, 4);
        let now = T0 + S;
        for i in 0..100 {
            let ts = T0 + u128::from(i) * 1000 + 1;
            assert_eq!(t.check(&key(i), &tai64n(ts), now), Verdict::Fresh);
            assert!(t.len() <= 4);
        }
        assert_eq!(t.floor(), tai64n(T0 + 95 * 1000 + 1));
        // Key 0 was evicted, but its timestamp is still refused.
        assert!(t.newest(&key(0)).is_none());
        assert!(matches!(
            t.check(&key(0), &tai64n(T0 + 1), now),
            Verdict::Stale { .. }
        ));
        // An evicted timestamp ahead of the clock raises the floor only to
        // the clock.
        for i in 100..110 {
            assert_eq!(t.check(&key(i), &tai64n(now + S), now), Verdict::Fresh);
        }
        assert_eq!(t.floor(), tai64n(now));
    }

    #[test]
    fn merge_takes_the_maximum() {
        let mut a = ReplayTable::new(T0, 16);
        let mut b = ReplayTable::new(T0 + 5, 16);
        a.check(&key(1), &tai64n(T0 + 10), T0);
        b.check(&key(1), &tai64n(T0 + 20), T0);
        b.check(&key(2), &tai64n(T0 + 30), T0);
        let (floor, entries): ([u8; 12], Vec<_>) = (b.floor(), b.iter().collect());
        a.merge(&floor, entries.clone(), T0);
        a.merge(&floor, entries, T0);
        assert_eq!(a.floor(), tai64n(T0 + 4));
        assert_eq!(a.newest(&key(1)), Some(tai64n(T0 + 20)));
        assert_eq!(a.newest(&key(2)), Some(tai64n(T0 + 30)));
        assert_eq!(a.check(&key(2), &tai64n(T0 + 30), T0), Verdict::Replay);
    }

    #[test]
    fn a_clock_stepped_back_locks_nobody_out() {
        // Started with the clock an hour ahead; a client corrected to it.
        let hour = 3600 * S;
        let mut t = ReplayTable::new(T0 + hour, 16);
        let k = key(1);
        assert_eq!(
            t.check(&k, &tai64n(T0 + hour + 1), T0 + hour),
            Verdict::Fresh
        );
        // NTP steps the clock back an hour.
        t.set_start(T0);
        // A client with a right clock is accepted at once...
        assert_eq!(t.check(&key(2), &tai64n(T0 + 5), T0 + 5), Verdict::Fresh);
        // ...and one whose state is ahead is told a timestamp that works.
        let Verdict::Stale { hint } = t.check(&k, &tai64n(T0 + 6), T0 + 6) else {
            panic!("stale");
        };
        assert_eq!(hint, T0 + hour + 2);
        assert_eq!(t.check(&k, &tai64n(hint), T0 + 7), Verdict::Fresh);
    }

    #[test]
    fn wall_clock_follows_the_monotonic_clock() {
        let t = Instant::now() + Duration::from_secs(10);
        let w = WallClock::new(t, T0);
        assert_eq!(w.at(t + Duration::from_secs(3)), T0 + 3 * S);
        assert_eq!(w.at(t - Duration::from_secs(3)), T0 - 3 * S);
        let stepped = w.reanchored(t + Duration::from_secs(5), T0 - 100 * S);
        assert_eq!(stepped.start_unix_nanos(), T0 - 105 * S);
    }
}

/// Review R1: attacks on the replay table.
#[cfg(test)]
mod review_r1 {
    use super::*;

    const S: u128 = 1_000_000_000;
    const T0: u128 = 1_800_000_000 * S;

    fn key(i: u32) -> PublicKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k[31] = 0xA5;
        PublicKey(k)
    }

    /// A client whose clock is 5 minutes fast sends two initiations (a
    /// retry) that are both answered "clock skew"; it then adopts the hint
    /// and connects. An attacker who captured the FIRST initiation replays
    /// it once the proxy's clock brings it inside the window: it must be
    /// refused (it was answered once already), but only the newest
    /// answered-ahead timestamp is remembered, so it is accepted as fresh:
    /// a captured handshake accepted, and the legitimate session replaced.
    #[test]
    fn earlier_answered_ahead_initiation_is_not_accepted_when_its_time_comes() {
        let mut t = ReplayTable::new(T0, 16);
        let k = key(1);
        let ts1 = T0 + 300 * S;
        let ts2 = T0 + 305 * S; // the client's retry, 5 s later
        assert!(matches!(
            t.check(&k, &tai64n(ts1), T0),
            Verdict::OutsideWindow { .. }
        ));
        assert!(matches!(
            t.check(&k, &tai64n(ts2), T0 + 5 * S),
            Verdict::OutsideWindow { .. }
        ));
        // The client adopts the hint and connects.
        assert_eq!(t.check(&k, &tai64n(T0 + 6 * S), T0 + 6 * S), Verdict::Fresh);
        // 200 s later ts1 is inside the window: the replay of it.
        let now = T0 + 200 * S;
        assert_eq!(
            t.check(&k, &tai64n(ts1), now),
            Verdict::Replay,
            "a captured initiation once answered as ahead is accepted"
        );
    }

    /// The same initiation (answered "ahead" before a restart) replayed
    /// after the proxy restarts: the new table's floor is the start time,
    /// below ts1. A lone restarted proxy keeps nothing and cannot tell that
    /// replay from a fresh initiation of a client whose clock is 100 s fast
    /// (spec 13.3); but the answer is now part of the shared state, so a
    /// restarted proxy that merges its peers' state before serving refuses
    /// it.
    #[test]
    fn answered_ahead_initiation_is_not_accepted_after_a_restart() {
        let k = key(2);
        let ts1 = T0 + 300 * S;
        let mut before = ReplayTable::new(T0, 16);
        assert!(matches!(
            before.check(&k, &tai64n(ts1), T0),
            Verdict::OutsideWindow { .. }
        ));
        // A peer merged the state before the restart.
        let mut peer = ReplayTable::new(T0, 16);
        peer.merge(&before.floor(), before.iter().collect::<Vec<_>>(), T0 + S);
        // Restart 10 s later, merge the peer's state; replay at T0 + 200 s.
        let mut after = ReplayTable::new(T0 + 10 * S, 16);
        after.merge(&peer.floor(), peer.iter().collect::<Vec<_>>(), T0 + 10 * S);
        assert_ne!(
            after.check(&k, &tai64n(ts1), T0 + 200 * S),
            Verdict::Fresh,
            "a captured handshake made before the restart is accepted after it"
        );
    }

    /// The whole kind: an answered-ahead initiation is refused when its
    /// time comes even if the client never connected in between, and at a
    /// peer that merged right after the answer; the client that corrects
    /// back is accepted at once, and again when its clock later reaches
    /// the answered range (after one Stale answer whose hint is accepted).
    #[test]
    fn answered_ahead_timestamps_stay_refused_and_the_client_is_never_locked_out() {
        let k = key(4);
        let ts1 = T0 + 300 * S;
        let ts2 = T0 + 301 * S;
        let mut t = ReplayTable::new(T0, 16);
        assert!(matches!(
            t.check(&k, &tai64n(ts1), T0),
            Verdict::OutsideWindow { hint } if hint == T0
        ));
        assert!(matches!(
            t.check(&k, &tai64n(ts2), T0 + S),
            Verdict::OutsideWindow { hint } if hint == T0 + S
        ));
        let mut peer = ReplayTable::new(T0, 16);
        peer.merge(&t.floor(), t.iter().collect::<Vec<_>>(), T0 + S);
        // Both replayed when the clocks reach them, nothing accepted between.
        let mut lone = ReplayTable::new(T0, 16);
        lone.merge(&t.floor(), t.iter().collect::<Vec<_>>(), T0 + S);
        for ts in [ts1, ts2] {
            assert_ne!(t.check(&k, &tai64n(ts), ts), Verdict::Fresh);
            assert_ne!(peer.check(&k, &tai64n(ts), ts - 100 * S), Verdict::Fresh);
            assert_ne!(lone.check(&k, &tai64n(ts), ts), Verdict::Fresh);
        }
        // The client, corrected, connects at once at the answering proxy...
        let mut t = ReplayTable::new(T0, 16);
        t.check(&k, &tai64n(ts1), T0);
        t.check(&k, &tai64n(ts2), T0 + S);
        for s in [2, 60, 250] {
            let now = T0 + s * S;
            assert_eq!(t.check(&k, &tai64n(now), now), Verdict::Fresh);
        }
        // ...is told a working timestamp when its clock reaches the range...
        let v = t.check(&k, &tai64n(ts1 + S / 2), ts1 + S / 2);
        let Verdict::Stale { hint } = v else {
            panic!("{v:?}");
        };
        assert_eq!(hint, ts2 + 1);
        assert_eq!(t.check(&k, &tai64n(hint), ts1 + S / 2), Verdict::Fresh);
        // ...and at a peer, which knows only the shared newest, likewise.
        let mut peer = ReplayTable::new(T0, 16);
        peer.merge(&t.floor(), t.iter().collect::<Vec<_>>(), T0 + S);
        let now = T0 + 2 * S;
        let Verdict::Stale { hint } = peer.check(&k, &tai64n(now), now) else {
            panic!("stale");
        };
        assert!(hint > ts2);
        assert_eq!(peer.check(&k, &tai64n(hint), now), Verdict::Fresh);
    }

    /// Any X25519 key earns an entry (refused handshakes are recorded). An
    /// attacker with fresh keys and timestamps at the top of the window
    /// fills the table; each eviction raises the floor of EVERY key to
    /// now + window. Then a legitimate client with a correct clock is
    /// refused as stale: the floor must not be movable by unknown keys to
    /// where honest clocks are refused.
    #[test]
    fn unknown_keys_cannot_push_the_floor_past_honest_clocks() {
        let cap = 64;
        let mut t = ReplayTable::new(T0, cap);
        let now = T0 + 10 * S;
        let top = now + FRESHNESS_WINDOW.as_nanos();
        for i in 0..(2 * cap as u32) {
            assert_eq!(t.check(&key(1000 + i), &tai64n(top), now), Verdict::Fresh);
        }
        // An honest client, clock exact, a fresh initiation.
        assert_eq!(
            t.check(&key(1), &tai64n(now + S), now + S),
            Verdict::Fresh,
            "an honest client is refused: the floor is at {} s past now",
            (tai64n_to_unix_nanos(&t.floor()).unwrap() - now) / S
        );
    }
    /// The shared state carries only each key's newest accepted timestamp,
    /// not what was answered as ahead: an initiation answered "clock skew"
    /// at one proxy is accepted as fresh at another that merged everything
    /// the first shares, once the clocks reach it.
    #[test]
    fn answered_ahead_initiation_is_not_accepted_at_a_proxy_that_merged_the_state() {
        let k = key(3);
        let ts1 = T0 + 300 * S;
        let mut x = ReplayTable::new(T0 - 1000 * S, 16);
        assert!(matches!(
            x.check(&k, &tai64n(ts1), T0),
            Verdict::OutsideWindow { .. }
        ));
        assert_eq!(x.check(&k, &tai64n(T0 + S), T0 + S), Verdict::Fresh);
        let mut y = ReplayTable::new(T0 - 1000 * S, 16);
        let floor = x.floor();
        y.merge(&floor, x.iter().collect::<Vec<_>>(), T0 + 2 * S);
        assert_ne!(
            y.check(&k, &tai64n(ts1), T0 + 200 * S),
            Verdict::Fresh,
            "a captured initiation answered as ahead at X is accepted at Y"
        );
    }

    #[test]
    fn take_changed_reports_local_growth_once_not_merges_nor_evicted_keys() {
        let mut t = ReplayTable::new(T0, 2);
        let (a, b, c) = (key(1), key(2), key(3));
        assert_eq!(t.check(&a, &tai64n(T0 + 1), T0 + 1), Verdict::Fresh);
        assert_eq!(t.check(&a, &tai64n(T0 + 2), T0 + 2), Verdict::Fresh);
        // A replay changes nothing.
        assert_eq!(t.check(&a, &tai64n(T0 + 2), T0 + 2), Verdict::Replay);
        // Grown by a peer: not ours to report.
        t.merge(&t.floor(), [(b, tai64n(T0 + 5))], T0 + 3);
        assert_eq!(t.take_changed(), Some((a, tai64n(T0 + 2))));
        assert_eq!(t.take_changed(), None);
        assert_eq!(t.check(&b, &tai64n(T0 + 6), T0 + 6), Verdict::Fresh);
        // A third key evicts the oldest entry (a): b and c are reported,
        // the set never outgrows the table.
        assert_eq!(t.check(&a, &tai64n(T0 + 7), T0 + 7), Verdict::Fresh);
        assert_eq!(t.check(&c, &tai64n(T0 + 8), T0 + 8), Verdict::Fresh);
        assert!(t.changed.len() <= t.len());
        let got: Vec<_> = std::iter::from_fn(|| t.take_changed())
            .map(|x| x.0)
            .collect();
        assert!(got.contains(&c) && got.len() == t.len(), "{got:?}");
    }
}
