//! The `[overload]` table of `anytund.toml`: when a proxy counts as
//! overloaded and withdraws its anycast routes (docs/anycast-lab.md,
//! "Overload").
//!
//! ```toml
//! max_sessions = 1048576       # top level: sessions held at most (beyond: Busy)
//!
//! [overload]
//! high_percent = 90            # overloaded at this share of a capacity ...
//! low_percent = 75             # ... clear again below this share
//! max_packets_per_s = 0        # receive capacity, packets/s (0: not a signal)
//! after_ms = 1000              # a signal high this long: withdraw
//! hold_ms = 10000              # every signal low this long: announce again
//! ```

use super::source::Source;
use super::ConfigError;
use serde::Deserialize;
use std::ops::RangeInclusive;
use std::time::Duration;
use toml::{Spanned, Value};

/// Default of [`OverloadConfig::high_percent`].
pub const DEFAULT_HIGH_PERCENT: u8 = 90;
/// Default of [`OverloadConfig::low_percent`].
pub const DEFAULT_LOW_PERCENT: u8 = 75;
/// Default of [`OverloadConfig::after`], ms.
pub const DEFAULT_AFTER_MS: u64 = 1000;
/// Default of [`OverloadConfig::hold`], ms.
pub const DEFAULT_HOLD_MS: u64 = 10_000;

const PERCENT_RANGE: RangeInclusive<i64> = 1..=100;
const RATE_RANGE: RangeInclusive<i64> = 0..=1_000_000_000;
const MS_RANGE: RangeInclusive<i64> = 0..=3_600_000;

/// When the proxy is overloaded: a signal at or above `high_percent` of its
/// capacity for `after`, and clear again once every signal stayed below
/// `low_percent` for `hold` (hysteresis in level and in time, so that a
/// proxy whose withdrawal moved its load away does not flap).
///
/// The signals, both counted by the proxy already: sessions held (its
/// table, served here or replicated from peers) against `max_sessions`,
/// and datagrams received per second against [`Self::max_packets_per_s`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Share of a capacity, percent, at or above which a signal is high.
    pub high_percent: u8,
    /// Share of a capacity, percent, below which a signal is low (less
    /// than `high_percent`).
    pub low_percent: u8,
    /// Datagrams per second this proxy can take; 0: the receive rate is
    /// not a signal.
    pub max_packets_per_s: u64,
    /// How long a signal must stay high before the proxy is overloaded.
    pub after: Duration,
    /// How long every signal must stay low before it is no longer.
    pub hold: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            high_percent: DEFAULT_HIGH_PERCENT,
            low_percent: DEFAULT_LOW_PERCENT,
            max_packets_per_s: 0,
            after: Duration::from_millis(DEFAULT_AFTER_MS),
            hold: Duration::from_millis(DEFAULT_HOLD_MS),
        }
    }
}

/// The table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [overload] table")]
pub(super) struct RawOverload {
    high_percent: Option<Spanned<Value>>,
    low_percent: Option<Spanned<Value>>,
    max_packets_per_s: Option<Spanned<Value>>,
    after_ms: Option<Spanned<Value>>,
    hold_ms: Option<Spanned<Value>>,
}

impl RawOverload {
    /// Checks the table, written at `span`.
    pub(super) fn check(
        self,
        src: &Source<'_>,
        span: std::ops::Range<usize>,
    ) -> Result<OverloadConfig, ConfigError> {
        let d = OverloadConfig::default();
        let (high_percent, _) = src.number(
            "overload.high_percent",
            self.high_percent,
            PERCENT_RANGE,
            d.high_percent,
        )?;
        let (low_percent, low_span) = src.number(
            "overload.low_percent",
            self.low_percent,
            PERCENT_RANGE,
            d.low_percent,
        )?;
        if low_percent >= high_percent {
            return Err(src.invalid(
                "overload.low_percent",
                low_span.unwrap_or(span),
                format_args!("{low_percent} must be less than high_percent ({high_percent})"),
            ));
        }
        let n = |key, v, range, d| src.number(key, v, range, d).map(|(x, _)| x);
        Ok(OverloadConfig {
            high_percent,
            low_percent,
            max_packets_per_s: n(
                "overload.max_packets_per_s",
                self.max_packets_per_s,
                RATE_RANGE,
                0,
            )?,
            after: Duration::from_millis(n(
                "overload.after_ms",
                self.after_ms,
                MS_RANGE,
                DEFAULT_AFTER_MS,
            )?),
            hold: Duration::from_millis(n(
                "overload.hold_ms",
                self.hold_ms,
                MS_RANGE,
                DEFAULT_HOLD_MS,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ConfigError};
    use super::*;
    use std::path::Path;

    fn origin() -> &'static Path {
        Path::new("/etc/anytun/anytund.toml")
    }

    #[test]
    fn overload_defaults_and_values() {
        let c = parse("", origin()).unwrap();
        assert_eq!(c.overload, OverloadConfig::default());
        assert_eq!(c.max_sessions, super::super::DEFAULT_MAX_SESSIONS);
        let c = parse(
            "max_sessions = 10\n[overload]\nhigh_percent = 80\nlow_percent = 50\n\
             max_packets_per_s = 2000\nafter_ms = 300\nhold_ms = 1000\n",
            origin(),
        )
        .unwrap();
        assert_eq!(c.max_sessions, 10);
        assert_eq!(
            c.overload,
            OverloadConfig {
                high_percent: 80,
                low_percent: 50,
                max_packets_per_s: 2000,
                after: Duration::from_millis(300),
                hold: Duration::from_millis(1000),
            }
        );
    }

    #[test]
    fn overload_refuses_a_low_mark_at_or_above_the_high_one() {
        for (text, says) in [
            (
                "[overload]\nlow_percent = 90\n",
                "less than high_percent (90)",
            ),
            ("[overload]\nhigh_percent = 0\n", "1..=100"),
            ("[overload]\nafter = 3\n", "unknown field"),
            ("max_sessions = 0\n", "max_sessions"),
        ] {
            match parse(text, origin()) {
                Err(ConfigError::Invalid { message, .. }) => {
                    assert!(message.contains(says), "{text:?}: {message}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
