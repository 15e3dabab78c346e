//! Why a call ended or was refused.

use std::fmt;

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
    /// A cause this implementation does not know; carried unchanged.
    Other(u8),
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
            Cause::Other(c) => c,
        }
    }

    /// The cause for a Q.850 code.
    pub fn from_code(c: u8) -> Self {
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
            other => Cause::Other(other),
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
            Cause::Other(_) => "other",
        };
        write!(f, "{text} (cause {})", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            assert_eq!(Cause::from_code(c).code(), c);
        }
    }
}
