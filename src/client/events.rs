//! What a client tells its application: events, errors and voice frames.

use crate::call::{Cause, Name};
use crate::crypto::PublicKey;
use crate::handshake::HandshakeError;
use crate::session::{CallId, ProxyId, SessionId};
use std::net::SocketAddr;
use std::time::Duration;

/// What went wrong, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No valid answer to any handshake attempt. The text never quotes
    /// `network`: an untagged private key file (older than the `private:`
    /// tag) passes for a public key, and would be printed.
    #[error(
        "no authenticated answer from the proxy after {attempts} handshake attempts over {:.1} s: \
         the proxy is unreachable, or the network public key this client was given is not the \
         network's key (anytund prints that key when it starts)",
        waited.as_secs_f64()
    )]
    HandshakeTimeout {
        /// Attempts made.
        attempts: u32,
        /// Time from first attempt to giving up.
        waited: Duration,
        /// The network key the client used.
        network: PublicKey,
    },
    /// The proxy authenticated the client but its key is not a subscriber.
    #[error(
        "the proxy refused this client's key {key}: it is not in the subscriber store \
         (add it with: anytun user add NAME {key})"
    )]
    NotAuthorized {
        /// The client's public key.
        key: PublicKey,
    },
    /// The proxy holds as many sessions as it may.
    #[error("the proxy is full and refused a new session; try again later")]
    Busy,
    /// The proxy kept refusing the handshake's timestamp although the
    /// client corrected it from the proxy's answers.
    #[error(
        "the proxy refused this client's handshake timestamps {answers} times: {skew}, and \
         correcting it did not help (check the clocks of this device and of the proxy)"
    )]
    ClockSkew {
        /// The last measured difference.
        skew: ClockSkew,
        /// Refusals for the timestamp in this connection attempt.
        answers: u32,
    },
    /// The proxy went silent.
    #[error("lost the session: nothing heard from the proxy for {:.1} s", .0.as_secs_f64())]
    ConnectionLost(Duration),
    /// A newer login with this client's key replaced the session.
    #[error(
        "replaced by a newer login with the same key: one key holds one session \
         (give each device its own key, all allowed to use the name)"
    )]
    Replaced,
    /// An operation that needs a session, without one.
    #[error("not connected to the proxy")]
    NotConnected,
    /// No call with that id.
    #[error("no call {0}")]
    UnknownCall(CallId),
    /// The call is not in a state that allows the operation.
    #[error("call {call} cannot {what} now")]
    CallState {
        /// The call.
        call: CallId,
        /// What was attempted.
        what: &'static str,
    },
    /// Answering with a codec the caller did not offer.
    #[error("codec {0} was not offered by the caller")]
    CodecNotOffered(String),
    /// The end-to-end handshake failed.
    #[error(transparent)]
    E2e(#[from] crate::call::e2e::E2eError),
    /// The handshake library failed locally.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A message too large for one datagram.
    #[error("message too large for one datagram")]
    TooLarge,
    /// The proxy has not acknowledged the control messages already sent
    /// ([`MAX_PENDING`](crate::call::reliable::MAX_PENDING) of them); try
    /// again once it has.
    #[error("too many control messages unacknowledged by the proxy")]
    Backlog,
    /// A DTMF digit outside 0-9 * # A-D.
    #[error("{0:?} is not a DTMF digit")]
    BadDigit(char),
}

/// How far this client's wall clock is from the proxy's, as measured from a
/// handshake answer (spec 5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSkew {
    /// What the client adds to its clock, in milliseconds: positive when its
    /// clock is behind the proxy's.
    pub offset_ms: i64,
}

impl std::fmt::Display for ClockSkew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.offset_ms.unsigned_abs() as f64 / 1000.0;
        let way = if self.offset_ms >= 0 {
            "behind"
        } else {
            "ahead of"
        };
        write!(f, "the clock of this client is {s:.0} s {way} the proxy's")
    }
}

/// Something that happened, for the application.
#[derive(Debug)]
pub enum Event {
    /// The session is up.
    Connected {
        /// Session id.
        session: SessionId,
        /// The proxy that answered.
        proxy: ProxyId,
        /// The client's address as the proxy saw it (its NAT's outside).
        observed: SocketAddr,
    },
    /// The session failed or was refused; the client is idle again.
    Disconnected(ClientError),
    /// A warning: the proxy refused a handshake because this client's clock
    /// is off; the client now corrects its handshake timestamps by this
    /// much and has retried.
    ClockCorrected(ClockSkew),
    /// The session was lost (the proxy restarted or the path broke); its
    /// calls have ended and the client is connecting again by itself. A
    /// [`Event::Connected`] and the names' [`Event::Registered`] follow.
    Reconnecting(ClientError),
    /// A name is registered (or removed, with 0) for this long.
    Registered {
        /// The name.
        name: Name,
        /// Granted lifetime.
        expires_s: u32,
    },
    /// A registration was refused.
    RegisterFailed {
        /// The name.
        name: Name,
    },
    /// Someone calls.
    IncomingCall {
        /// The call.
        call: CallId,
        /// Caller's name (checked by the proxy).
        from: Name,
        /// The name that was called.
        to: Name,
        /// Offered codecs.
        codecs: Vec<String>,
    },
    /// An incoming call this client refused by itself, with no
    /// [`Event::IncomingCall`] before: it already held
    /// [`max_calls`](super::ClientConfig::max_calls) calls (busy), or it is
    /// closing.
    CallRefused {
        /// The call.
        call: CallId,
        /// Caller's name (checked by the proxy).
        from: Name,
        /// The cause sent to the caller.
        cause: Cause,
    },
    /// The callee's device is ringing.
    Ringing {
        /// The call.
        call: CallId,
    },
    /// The call is answered and end-to-end keys are set.
    Answered {
        /// The call.
        call: CallId,
        /// Codec the callee chose.
        codec: String,
    },
    /// The end-to-end check of an answer failed (the proxy changed what it
    /// relayed, or vouched for another key); the call ends next.
    EndToEndFailed {
        /// The call.
        call: CallId,
        /// What did not match.
        error: crate::call::e2e::E2eError,
    },
    /// The call is over (or never started).
    CallEnded {
        /// The call.
        call: CallId,
        /// Why.
        cause: Cause,
    },
    /// The other side pressed a key.
    Dtmf {
        /// The call.
        call: CallId,
        /// The digit.
        digit: char,
        /// How long.
        duration_ms: u16,
    },
}

/// A voice frame, handed out of the receive buffer without copying.
#[derive(Debug, PartialEq, Eq)]
pub struct VoiceFrame<'a> {
    /// The call.
    pub call: CallId,
    /// Sender's frame sequence number.
    pub seq: u32,
    /// Sender's sample timestamp.
    pub timestamp: u32,
    /// Encoded audio in the call's codec.
    pub payload: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An untagged private key (a network.key copied before the `private:`
    /// tag) passes for a public key; the give-up text must not print it.
    #[test]
    fn handshake_timeout_text_never_quotes_the_key_given() {
        let key = PublicKey([0x5a; 32]);
        let text = ClientError::HandshakeTimeout {
            attempts: 4,
            waited: Duration::from_secs(11),
            network: key,
        }
        .to_string();
        assert!(!text.contains(&key.to_base64()), "{text}");
        assert!(!text.contains(&key.to_base64()[..8]), "{text}");
        assert!(text.contains("is not the network's key"), "{text}");
    }
}
