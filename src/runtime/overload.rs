//! Overload: when a proxy withdraws its anycast routes because it carries
//! more than it can (issue 8: "a drained or overloaded proxy withdraws").
//!
//! [`OverloadMeter`] is sans-IO: fed the proxy's published counters
//! ([`Snapshot`]: sessions held, datagrams received) every
//! [`SAMPLE_EVERY`], it says when the proxy becomes overloaded and when it
//! is clear again, with hysteresis in level (`high_percent` /
//! `low_percent` of each capacity) and in time (`after` / `hold`). The
//! daemon feeds it from the metrics board (never the core lock), sets
//! [`Health::overloaded`](super::announce::Health), the gauge
//! `anytun_overloaded` and logs each change. Rule and figures:
//! docs/anycast-lab.md, "Overload".

use crate::config::OverloadConfig;
use crate::metrics::Snapshot;
use std::time::{Duration, Instant};

/// How often the daemon samples the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The receive rate is measured over windows of this length.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Where one signal stands against its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// At or above `high_percent`.
    High,
    /// Below `low_percent`.
    Low,
    /// In between: neither starts nor ends an overload.
    Between,
}

/// A change of the overload state, in words for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadChange {
    /// Overloaded now (true) or clear again (false).
    pub overloaded: bool,
    /// Which signal, against what, for how long.
    pub why: String,
}

/// The overload state machine of one proxy.
#[derive(Debug)]
pub struct OverloadMeter {
    cfg: OverloadConfig,
    max_sessions: usize,
    overloaded: bool,
    /// Since when some signal is high (while not overloaded).
    high_since: Option<Instant>,
    /// Since when every signal is low (while overloaded).
    low_since: Option<Instant>,
    /// Start of the current rate window and the packet count then.
    window: Option<(Instant, u64)>,
    /// Datagrams per second over the last full window.
    rate: u64,
    /// Times it became overloaded.
    episodes: u64,
}

impl OverloadMeter {
    /// A meter for capacities `max_sessions` and `cfg.max_packets_per_s`.
    pub fn new(cfg: OverloadConfig, max_sessions: usize) -> Self {
        Self {
            cfg,
            max_sessions: max_sessions.max(1),
            overloaded: false,
            high_since: None,
            low_since: None,
            window: None,
            rate: 0,
            episodes: 0,
        }
    }

    /// Whether the proxy is overloaded now.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// Times it became overloaded since start.
    pub fn episodes(&self) -> u64 {
        self.episodes
    }

    /// Datagrams received per second over the last full window.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    fn level(&self, value: u64, capacity: u64) -> Level {
        // Integer percent of the capacity, without overflow.
        let pct = u128::from(value) * 100;
        let cap = u128::from(capacity);
        if pct >= cap * u128::from(self.cfg.high_percent) {
            Level::High
        } else if pct < cap * u128::from(self.cfg.low_percent) {
            Level::Low
        } else {
            Level::Between
        }
    }

    /// Feeds one sample: `sessions` held and `packets_in` (the counter of
    /// datagrams received since start) at `now`. Returns the change, if
    /// this sample made one.
    pub fn observe(
        &mut self,
        now: Instant,
        sessions: usize,
        packets_in: u64,
    ) -> Option<OverloadChange> {
        match self.window {
            None => self.window = Some((now, packets_in)),
            Some((start, at)) if now.saturating_duration_since(start) >= RATE_WINDOW => {
                let secs = now.saturating_duration_since(start).as_secs_f64();
                self.rate = (packets_in.saturating_sub(at) as f64 / secs) as u64;
                self.window = Some((now, packets_in));
            }
            Some(_) => {}
        }
        let s = self.level(sessions as u64, self.max_sessions as u64);
        let r = if self.cfg.max_packets_per_s == 0 {
            Level::Low
        } else {
            self.level(self.rate, self.cfg.max_packets_per_s)
        };
        let say = |d: Duration| {
            format!(
                "{sessions} sessions held of max_sessions {} ({}%), {} packets/s received{} \
                 (high {}%, low {}%), for {} ms",
                self.max_sessions,
                sessions as u64 * 100 / self.max_sessions as u64,
                self.rate,
                if self.cfg.max_packets_per_s == 0 {
                    String::new()
                } else {
                    format!(" of max_packets_per_s {}", self.cfg.max_packets_per_s)
                },
                self.cfg.high_percent,
                self.cfg.low_percent,
                d.as_millis()
            )
        };
        if !self.overloaded {
            if s == Level::High || r == Level::High {
                let since = *self.high_since.get_or_insert(now);
                let held = now.saturating_duration_since(since);
                if held >= self.cfg.after {
                    self.overloaded = true;
                    self.episodes += 1;
                    self.high_since = None;
                    return Some(OverloadChange {
                        overloaded: true,
                        why: say(held),
                    });
                }
            } else {
                self.high_since = None;
            }
        } else if s == Level::Low && r == Level::Low {
            let since = *self.low_since.get_or_insert(now);
            let held = now.saturating_duration_since(since);
            if held >= self.cfg.hold {
                self.overloaded = false;
                self.low_since = None;
                return Some(OverloadChange {
                    overloaded: false,
                    why: say(held),
                });
            }
        } else {
            self.low_since = None;
        }
        None
    }

    /// [`Self::observe`] on a published [`Snapshot`].
    pub fn observe_snapshot(&mut self, now: Instant, snap: &Snapshot) -> Option<OverloadChange> {
        self.observe(now, snap.sessions, snap.stats.packets_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OverloadConfig {
        OverloadConfig {
            high_percent: 80,
            low_percent: 50,
            max_packets_per_s: 1000,
            after: Duration::from_millis(300),
            hold: Duration::from_millis(1000),
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn sessions_high_for_the_after_time_overload_then_low_for_the_hold_clear() {
        let t0 = Instant::now();
        let mut m = OverloadMeter::new(cfg(), 10);
        // 8 of 10 = 80%: high, but not yet for 300 ms.
        assert_eq!(m.observe(ms(t0, 0), 8, 0), None);
        assert_eq!(m.observe(ms(t0, 200), 8, 0), None);
        // A dip to "between" (6 = 60%) restarts the clock.
        assert_eq!(m.observe(ms(t0, 250), 6, 0), None);
        assert_eq!(m.observe(ms(t0, 400), 9, 0), None);
        assert_eq!(m.observe(ms(t0, 600), 9, 0), None);
        let c = m.observe(ms(t0, 700), 9, 0).expect("overloaded");
        assert!(c.overloaded && c.why.contains("9 sessions"), "{c:?}");
        assert!(m.overloaded());
        assert_eq!(m.episodes(), 1);
        // Between the marks: stays overloaded however long.
        assert_eq!(m.observe(ms(t0, 800), 6, 0), None);
        assert_eq!(m.observe(ms(t0, 5000), 5, 0), None);
        // Low (4 = 40%), but back up before the hold: still overloaded.
        assert_eq!(m.observe(ms(t0, 5100), 4, 0), None);
        assert_eq!(m.observe(ms(t0, 5900), 7, 0), None);
        assert_eq!(m.observe(ms(t0, 6000), 4, 0), None);
        assert_eq!(m.observe(ms(t0, 6900), 0, 0), None);
        let c = m.observe(ms(t0, 7000), 0, 0).expect("clear");
        assert!(!c.overloaded, "{c:?}");
        assert!(!m.overloaded());
    }

    #[test]
    fn the_receive_rate_is_a_signal_only_with_a_capacity() {
        let t0 = Instant::now();
        let mut m = OverloadMeter::new(cfg(), 1000);
        // 900 packets/s of 1000: high once the first window closes.
        let mut packets = 0;
        let mut change = None;
        for i in 0..=20 {
            packets += 90;
            change = change.or(m.observe(ms(t0, i * 100), 0, packets));
        }
        assert!(change.is_some_and(|c| c.overloaded), "{}", m.rate());
        let mut off = cfg();
        off.max_packets_per_s = 0;
        let mut m = OverloadMeter::new(off, 1000);
        let mut packets = 0;
        for i in 0..=20 {
            packets += 100_000;
            assert_eq!(m.observe(ms(t0, i * 100), 0, packets), None);
        }
    }
}
