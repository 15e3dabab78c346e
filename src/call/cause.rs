//! Why a call ended or was refused.
//!
//! Q.850 cause values are 7 bits, 1..=127. A [`Cause`] holds only such a
//! value; everything that comes from outside (a peer's octet on the wire,
//! an `int` from a C host) goes through [`Cause::from_code`], the one place
//! that maps an out-of-range value to a defined cause (0 to normal clearing,
//! 16; everything else to interworking, 127). Its callers count and log
//! what it mapped.

use std::fmt;

/// The highest Q.850 cause value (7 bits).
pub const MAX_CODE: u8 = 127;

/// A Q.850 cause value without a variant of its own in [`Cause`]:
/// 1..=127 by construction ([`Cause::from_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OtherCode(u8);

impl OtherCode {
    /// The value, 1..=127.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// A value outside Q.850's 1..=127, and the defined cause it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a Q.850 cause (1..=127): taken as {mapped}")]
pub struct CauseOutOfRange {
    /// The value received.
    pub value: i64,
    /// What it is taken as: [`Cause::Normal`] for 0 (no cause given),
    /// [`Cause::Interworking`] for anything else.
    pub mapped: Cause,
}

/// A call's end or refusal cause. The values are ITU-T Q.850 cause codes,
/// which is what Asterisk's `HANGUPCAUSE` uses, so they map one to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The name is not known to the network (Q.850 1, unallocated number).
    NotFound,
    /// Normal end of a call (16).
    Normal,
    /// The callee is busy (17).
    Busy,
    /// No device answered in time (19).
    NoAnswer,
    /// The name exists but no device is registered (20, subscriber absent).
    Unavailable,
    /// The callee declined (21, call rejected).
    Rejected,
    /// Another device of the callee answered (26, non-selected user clearing).
    AnsweredElsewhere,
    /// A session or proxy failed (38, network out of order).
    NetworkFailure,
    /// The proxy's calls table is full (34, no circuit/channel available).
    NoCircuit,
    /// The caller holds its most calls already (47, resource unavailable,
    /// unspecified).
    ResourceUnavailable,
    /// The caller may not call as the name it gave (57, not authorised).
    NotAuthorized,
    /// No codec in common (88, incompatible destination).
    IncompatibleCodecs,
    /// A timer expired (102, recovery on timer expiry): a control message
    /// was never acknowledged, or an answered call carried no media from one
    /// side for the media timeout.
    Timeout,
    /// The call id is already in use (41, temporary failure).
    TemporaryFailure,
    /// A value from outside that is no Q.850 cause (127, interworking,
    /// unspecified): see [`Cause::from_code`].
    Interworking,
    /// A cause this implementation does not know; carried unchanged.
    Other(OtherCode),
}

impl Cause {
    /// The Q.850 code.
    pub fn code(self) -> u8 {
        match self {
            Cause::NotFound => 1,
            Cause::Normal => 16,
            Cause::Busy => 17,
            Cause::NoAnswer => 19,
            Cause::Unavailable => 20,
            Cause::Rejected => 21,
            Cause::AnsweredElsewhere => 26,
            Cause::NetworkFailure => 38,
            Cause::NoCircuit => 34,
            Cause::ResourceUnavailable => 47,
            Cause::TemporaryFailure => 41,
            Cause::NotAuthorized => 57,
            Cause::IncompatibleCodecs => 88,
            Cause::Timeout => 102,
            Cause::Interworking => 127,
            Cause::Other(c) => c.0,
        }
    }

    /// The cause for `value`, from a peer's octet or a host's `int`.
    ///
    /// # Errors
    /// [`CauseOutOfRange`] for a value outside 1..=127, holding the defined
    /// cause it is taken as (0: no cause given, normal clearing; anything
    /// else: interworking, 127). The one place that maps such values: its
    /// callers use `mapped`, and count and log the error.
    pub fn from_code(value: impl Into<i64>) -> Result<Self, CauseOutOfRange> {
        let value = value.into();
        match u8::try_from(value) {
            Ok(c @ 1..=MAX_CODE) => Ok(Self::from_q850(c)),
            _ => Err(CauseOutOfRange {
                value,
                mapped: if value == 0 {
                    Cause::Normal
                } else {
                    Cause::Interworking
                },
            }),
        }
    }

    /// [`Cause::from_code`] for a value known to be in 1..=127.
    fn from_q850(c: u8) -> Self {
        match c {
            1 => Cause::NotFound,
            16 => Cause::Normal,
            17 => Cause::Busy,
            19 => Cause::NoAnswer,
            20 => Cause::Unavailable,
            21 => Cause::Rejected,
            26 => Cause::AnsweredElsewhere,
            38 => Cause::NetworkFailure,
            34 => Cause::NoCircuit,
            47 => Cause::ResourceUnavailable,
            41 => Cause::TemporaryFailure,
            57 => Cause::NotAuthorized,
            88 => Cause::IncompatibleCodecs,
            102 => Cause::Timeout,
            127 => Cause::Interworking,
            other => Cause::Other(OtherCode(other)),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Cause::NotFound => "no such name",
            Cause::Normal => "normal clearing",
            Cause::Busy => "busy",
            Cause::NoAnswer => "no answer",
            Cause::Unavailable => "not registered",
            Cause::Rejected => "rejected",
            Cause::AnsweredElsewhere => "answered elsewhere",
            Cause::NetworkFailure => "network failure",
            Cause::NoCircuit => "no circuit available",
            Cause::ResourceUnavailable => "too many calls",
            Cause::TemporaryFailure => "temporary failure",
            Cause::NotAuthorized => "not authorised",
            Cause::IncompatibleCodecs => "no common codec",
            Cause::Timeout => "timeout",
            Cause::Interworking => "interworking",
            Cause::Other(_) => "other",
        };
        write!(f, "{text} (cause {})", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_q850_code_round_trips() {
        for c in 1..=127u8 {
            assert_eq!(Cause::from_code(c).map(Cause::code), Ok(c));
        }
    }

    #[test]
    fn an_out_of_range_value_is_mapped_to_a_defined_cause() {
        let mapped = |v: i64| Cause::from_code(v).map_err(|e| (e.value, e.mapped));
        assert_eq!(mapped(0), Err((0, Cause::Normal)));
        for v in [128, 200, 255, 256, -1, i64::from(i32::MIN), i64::MAX] {
            assert_eq!(mapped(v), Err((v, Cause::Interworking)), "{v}");
        }
        // Whatever comes in, what goes out is a Q.850 value.
        for v in 0..=255u8 {
            let c = Cause::from_code(v).unwrap_or_else(|e| e.mapped);
            assert!((1..=MAX_CODE).contains(&c.code()), "{v} -> {}", c.code());
        }
    }
}
