//! Packet layouts of the anytun protocol, byte by byte.
//!
//! Everything that turns bytes from the network into values lives here. Each
//! parser accepts a message only at its exact type and length (or length range,
//! for variable messages) and returns a [`DropReason`] otherwise, which the
//! caller counts. No parser panics on any input; the fuzz targets in `fuzz/`
//! hold them to that.
//!
//! The layouts are specified in `docs/anytun-protocol.md`; keep the two in step.

pub mod control;
pub mod cursor;
pub mod e2e;
pub mod handshake;
pub mod inner;
pub mod transport;

pub use cursor::{Reader, Writer};

/// Protocol version carried in byte 1 of every packet.
pub const VERSION: u8 = 1;

/// Largest datagram either side sends or accepts. Below common path MTUs
/// (1500 minus IPv6 and UDP headers, with room for tunnels) so nothing fragments.
pub const MAX_DATAGRAM: usize = 1400;

/// Message type, byte 0 of every packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Client to proxy: first handshake message (Noise IK message 1).
    HandshakeInit = 1,
    /// Proxy to client: second handshake message (Noise IK message 2).
    HandshakeResponse = 2,
    /// Proxy to client: "under load, prove your address" (cookie).
    CookieReply = 3,
    /// Either direction: an AEAD-sealed transport packet.
    Transport = 4,
}

impl MessageType {
    /// Maps byte 0 of a packet to its type.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::HandshakeInit),
            2 => Some(Self::HandshakeResponse),
            3 => Some(Self::CookieReply),
            4 => Some(Self::Transport),
            _ => None,
        }
    }
}

/// Classifies a datagram by its first two bytes: type and version.
///
/// This is the first check every received datagram goes through; it costs two
/// byte reads and rejects most garbage before any lookup or cryptography.
pub fn classify(datagram: &[u8]) -> Result<MessageType, DropReason> {
    if datagram.len() < 2 {
        return Err(DropReason::Truncated);
    }
    if datagram.len() > MAX_DATAGRAM {
        return Err(DropReason::Oversized);
    }
    let ty = MessageType::from_byte(datagram[0]).ok_or(DropReason::UnknownType)?;
    if datagram[1] != VERSION {
        return Err(DropReason::BadVersion);
    }
    Ok(ty)
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident => $label:literal,)*) => {
        /// Why a received packet was dropped. Every drop is counted per reason
        /// (see [`DropCounters`]) and exported as a metric.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];

            /// Stable snake_case name, used as the metric label.
            pub fn label(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the smallest valid message of its type.
    Truncated => "truncated",
    /// Longer than the largest valid message of its type.
    Oversized => "oversized",
    /// Byte 0 names no known message type.
    UnknownType => "unknown_type",
    /// Byte 1 is not [`VERSION`].
    BadVersion => "bad_version",
    /// Reserved bytes are not zero.
    BadReserved => "bad_reserved",
    /// A handshake initiation whose MAC1 does not match this network's key.
    BadMac1 => "bad_mac1",
    /// Under load, a handshake initiation without a valid cookie MAC2
    /// (answered with a cookie reply, not processed).
    CookieRequired => "cookie_required",
    /// The per-source-IP handshake rate limit was exceeded.
    RateLimited => "rate_limited",
    /// The Noise handshake message did not decrypt or authenticate.
    HandshakeFailed => "handshake_failed",
    /// A handshake initiation whose timestamp is not newer than the last one
    /// accepted for that client key (a replayed first message).
    StaleTimestamp => "stale_timestamp",
    /// A message that is valid but not expected in the receiver's state
    /// (a response to a handshake the client is not doing, say).
    Unexpected => "unexpected",
    /// A transport packet for a session this node does not hold.
    UnknownSession => "unknown_session",
    /// A transport packet whose counter was already seen or is too old.
    Replay => "replay",
    /// A transport packet whose AEAD tag did not verify (forged or corrupted).
    BadTag => "bad_tag",
    /// A transport packet from a sender id that may not send on this session.
    BadSender => "bad_sender",
    /// The decrypted content of a transport packet is malformed.
    BadInner => "bad_inner",
    /// A media or call message for a call that does not exist (any more).
    UnknownCall => "unknown_call",
    /// The end-to-end layer rejected the message (bad tag or replay).
    BadEndToEnd => "bad_e2e",
    /// The packet was valid but its answer could not be built: the caller's
    /// output buffer is too small, or the session's send counter is spent.
    CannotAnswer => "cannot_answer",
    /// An Invite refused because a bound on calls was reached (per session,
    /// per device or the whole proxy's table).
    CallLimit => "call_limit",
    /// A Register refused because a bound on registrations was reached (names
    /// per session or devices per name).
    RegistrationLimit => "registration_limit",
    /// An authenticated control message the proxy did not act on (nor
    /// acknowledge) because the sender's queue of unacknowledged control
    /// messages is full: the sender must acknowledge what it was sent before
    /// it is served again (spec "Reliable delivery of control messages").
    ControlBacklog => "control_backlog",
    /// A control message from an older send epoch of a proxy than one the
    /// client already heard (a delayed packet of a replaced send state):
    /// neither acted on nor acknowledged (spec 9.2).
    StaleControl => "stale_control",
    /// CallData from a device whose Answer has not arrived yet (it was lost
    /// and is being retransmitted): not acknowledged, so the device sends it
    /// again once its Answer is through (spec 10.4).
    AnswerPending => "answer_pending",
    /// A voice frame held by a caller for a call whose Answer had not
    /// arrived, given up: pushed out by a newer one (the hold is bounded) or
    /// the call ended unanswered (spec: client call states).
    EarlyVoiceDropped => "early_voice_dropped",
}

/// Counters of dropped packets, one per [`DropReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::ALL.len()],
}

impl DropCounters {
    /// Counts one dropped packet.
    pub fn add(&mut self, reason: DropReason) {
        self.counts[reason as usize] += 1;
    }

    /// Counts `n` dropped packets.
    pub fn add_n(&mut self, reason: DropReason, n: usize) {
        self.counts[reason as usize] += n as u64;
    }

    /// How many packets were dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }

    /// Total drops over all reasons.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Every reason with its count, for metrics and reports.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_rejects_short_unknown_and_versions() {
        assert_eq!(classify(&[]), Err(DropReason::Truncated));
        assert_eq!(classify(&[4]), Err(DropReason::Truncated));
        assert_eq!(classify(&[0, 1]), Err(DropReason::UnknownType));
        assert_eq!(classify(&[5, 1]), Err(DropReason::UnknownType));
        assert_eq!(classify(&[4, 2]), Err(DropReason::BadVersion));
        assert_eq!(classify(&[4, 1]), Ok(MessageType::Transport));
        assert_eq!(
            classify(&[4u8; MAX_DATAGRAM + 1]),
            Err(DropReason::Oversized)
        );
    }

    #[test]
    fn drop_reason_labels_are_unique() {
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL must be in discriminant order");
        }
    }
}
