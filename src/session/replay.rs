//! Sliding-window replay protection (the RFC 6479 ring-of-words scheme).
//!
//! A receiver keeps one window per sender. A counter is accepted once, and only
//! if it is newer than the newest seen minus [`WINDOW`]. Checking is split from
//! marking so a packet is marked only after its tag verified: a forged packet
//! must not be able to burn a counter the real sender has yet to use.

const WORDS: usize = 32;
const BITS: u64 = 64;

/// How far behind the newest counter a packet may arrive and still count.
/// At 50 packets per second of voice that is almost 40 seconds of reordering.
pub const WINDOW: u64 = (WORDS as u64 - 1) * BITS;

/// Counters at or above this are refused so the window arithmetic never
/// overflows: 2^64 - 2^32, the first counter of epoch 2^32 - 1, which no
/// proxy uses (a proxy counter is `epoch << 32 | seq`, spec 7.2).
pub const COUNTER_LIMIT: u64 = u64::MAX - (u32::MAX as u64);

/// The replay window of one sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    bitmap: [u64; WORDS],
    /// Newest counter seen plus one; 0 when nothing was seen yet.
    top: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        Self {
            bitmap: [0; WORDS],
            top: 0,
        }
    }

    /// A window that refuses everything below `floor`: used when a session is
    /// installed from another proxy's state, so counters it already saw stay
    /// refused here.
    pub fn with_floor(floor: u64) -> Self {
        let mut w = Self::new();
        if floor > 0 {
            let top = floor.min(COUNTER_LIMIT);
            // Everything below the floor counts as seen; the newest word keeps
            // its bits above the floor clear so those counters stay usable.
            w.top = top;
            w.bitmap = [u64::MAX; WORDS];
            let last = top - 1;
            let keep = last % BITS;
            w.bitmap[(last / BITS) as usize % WORDS] = if keep == 63 {
                u64::MAX
            } else {
                (1u64 << (keep + 1)) - 1
            };
        }
        w
    }

    /// Refuses everything below `floor` from now on (a floor another proxy
    /// reported for the same sender). A floor at or below the newest counter
    /// seen changes nothing.
    pub fn raise_floor(&mut self, floor: u64) {
        if floor > self.top {
            *self = Self::with_floor(floor);
        }
    }

    /// Newest counter seen plus one (0 if none): the floor to hand on.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Whether `counter` would be accepted. Does not change the window.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= COUNTER_LIMIT {
            return false;
        }
        if counter >= self.top {
            return true;
        }
        if counter + WINDOW < self.top {
            return false;
        }
        let word = self.bitmap[(counter / BITS) as usize % WORDS];
        word & (1 << (counter % BITS)) == 0
    }

    /// Marks `counter` as seen. Returns false (and changes nothing) if it
    /// would not be accepted.
    pub fn mark(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        let index = counter / BITS;
        if counter >= self.top {
            if self.top == 0 {
                self.bitmap = [0; WORDS];
            } else {
                let current = (self.top - 1) / BITS;
                let advance = (index - current).min(WORDS as u64);
                for i in 1..=advance {
                    self.bitmap[((current + i) % WORDS as u64) as usize] = 0;
                }
            }
            self.top = counter + 1;
        }
        self.bitmap[index as usize % WORDS] |= 1 << (counter % BITS);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The specification of the window, written the obvious way.
    #[derive(Default)]
    struct Model {
        seen: HashSet<u64>,
        top: u64,
    }

    impl Model {
        fn mark(&mut self, c: u64) -> bool {
            let ok = c < COUNTER_LIMIT && !self.seen.contains(&c) && c + WINDOW >= self.top;
            if ok {
                self.seen.insert(c);
                self.top = self.top.max(c + 1);
            }
            ok
        }
    }

    /// Every sequence of four counters drawn from the values where the window
    /// has edges: word boundaries, the window size, the limit.
    #[test]
    fn exhaustive_against_model() {
        let w = WINDOW;
        let values = [
            0,
            1,
            63,
            64,
            65,
            w - 1,
            w,
            w + 1,
            w + 63,
            w + 64,
            2 * w,
            2 * w + 1,
            // Epoch boundaries of a proxy's counter (epoch << 32 | seq).
            (1 << 32) - 1,
            1 << 32,
            COUNTER_LIMIT - 1,
            COUNTER_LIMIT,
        ];
        let n = values.len();
        let mut cases = 0;
        for a in 0..n {
            for b in 0..n {
                for c in 0..n {
                    for d in 0..n {
                        let mut win = ReplayWindow::new();
                        let mut model = Model::default();
                        for &i in &[a, b, c, d] {
                            let v = values[i];
                            assert_eq!(win.check(v), model.clone_check(v), "check {v}");
                            assert_eq!(win.mark(v), model.mark(v), "seq {a} {b} {c} {d} at {v}");
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, n.pow(4));
    }

    impl Model {
        fn clone_check(&self, c: u64) -> bool {
            c < COUNTER_LIMIT && !self.seen.contains(&c) && c + WINDOW >= self.top
        }
    }

    /// Long pseudo-random walks with reordering, duplicates and jumps.
    #[test]
    fn random_walks_against_model() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20 {
            let mut win = ReplayWindow::new();
            let mut model = Model::default();
            let mut base = 0u64;
            for _ in 0..20_000 {
                let r = next();
                let c = match r % 10 {
                    0 => base + (r >> 8) % (3 * WINDOW), // jump ahead
                    1..=3 => base.saturating_sub((r >> 8) % (WINDOW + 70)), // late
                    _ => base + (r >> 8) % 4,            // in order, with duplicates
                };
                base = base.max(c);
                assert_eq!(win.mark(c), model.mark(c), "counter {c}");
            }
        }
    }

    #[test]
    fn every_counter_in_order_then_all_replays_refused() {
        let mut win = ReplayWindow::new();
        for c in 0..5000 {
            assert!(win.mark(c));
        }
        for c in 0..5000 {
            assert!(!win.mark(c), "{c} replayed");
        }
        assert!(win.mark(5000));
    }

    #[test]
    fn floor_refuses_below_and_accepts_above() {
        let mut win = ReplayWindow::with_floor(1000);
        assert!(!win.check(0));
        assert!(!win.check(999));
        assert!(win.mark(1005));
        assert!(win.mark(1000), "above the floor, in the same word");
        assert!(win.mark(1003));
        assert!(!win.mark(1000));
        assert_eq!(ReplayWindow::with_floor(0), ReplayWindow::new());
    }
}
