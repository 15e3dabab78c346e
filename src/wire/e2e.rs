//! End-to-end messages between the two clients of a call.
//!
//! Proxies relay these as opaque blobs. A blob is
//! `counter (8) || ChaCha20-Poly1305(plaintext) || tag (16)` with nonce
//! `0u32 || counter` under the sender's direction key, and associated data
//! `call_id (8) || counter (8)`. The plaintext is one of:
//!
//! ```text
//! Voice  kind = 1, seq (4), timestamp (4), payload (1..=640)
//! Dtmf   kind = 2, event (4), digit (1: ASCII 0-9 * # A-D), duration_ms (2)
//! Alive  kind = 3                       (no fields: "still here" on a quiet call)
//! ```

use super::{DropReason, Reader, Writer};

/// Largest voice payload: 40 ms of 16-bit linear audio at 8 kHz.
pub const MAX_VOICE_PAYLOAD: usize = 640;

/// A decoded end-to-end message; borrows the decrypted buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E2eMessage<'a> {
    /// One frame of audio in the call's negotiated codec.
    Voice {
        /// Frame sequence number, +1 per frame.
        seq: u32,
        /// Sample timestamp of the frame's first sample (8 kHz clock).
        timestamp: u32,
        /// Encoded audio.
        payload: &'a [u8],
    },
    /// A DTMF digit.
    Dtmf {
        /// Sender's event number, so repeats of one press are recognised.
        event: u32,
        /// The digit: ASCII `0-9`, `*`, `#`, `A-D`.
        digit: u8,
        /// How long the key was held.
        duration_ms: u16,
    },
    /// Sent on the media path when a call has carried nothing from this
    /// side for a while (muted, no audio to play), so the other side can
    /// tell a quiet peer from a vanished one.
    Alive,
}

const VOICE: u8 = 1;
const DTMF: u8 = 2;
const ALIVE: u8 = 3;

/// Whether `d` is a valid DTMF digit.
pub fn is_dtmf_digit(d: u8) -> bool {
    matches!(d, b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D')
}

impl<'a> E2eMessage<'a> {
    /// Parses a decrypted end-to-end message at its exact length.
    pub fn parse(b: &'a [u8]) -> Result<Self, DropReason> {
        let mut r = Reader::new(b);
        let msg = match r.u8().ok_or(DropReason::BadInner)? {
            VOICE => {
                let seq = r.u32().ok_or(DropReason::BadInner)?;
                let timestamp = r.u32().ok_or(DropReason::BadInner)?;
                let payload = r.rest();
                if payload.is_empty() || payload.len() > MAX_VOICE_PAYLOAD {
                    return Err(DropReason::BadInner);
                }
                E2eMessage::Voice {
                    seq,
                    timestamp,
                    payload,
                }
            }
            DTMF => {
                let event = r.u32().ok_or(DropReason::BadInner)?;
                let digit = r.u8().filter(|d| is_dtmf_digit(*d));
                let digit = digit.ok_or(DropReason::BadInner)?;
                let duration_ms = r.u16().ok_or(DropReason::BadInner)?;
                E2eMessage::Dtmf {
                    event,
                    digit,
                    duration_ms,
                }
            }
            ALIVE => E2eMessage::Alive,
            _ => return Err(DropReason::BadInner),
        };
        r.finish().ok_or(DropReason::BadInner)?;
        Ok(msg)
    }

    /// Encodes into `out`; `None` if it does not fit.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let mut w = Writer::new(out);
        match *self {
            E2eMessage::Voice {
                seq,
                timestamp,
                payload,
            } => {
                w.u8(VOICE).u32(seq).u32(timestamp).bytes(payload);
            }
            E2eMessage::Dtmf {
                event,
                digit,
                duration_ms,
            } => {
                w.u8(DTMF).u32(event).u8(digit).u16(duration_ms);
            }
            E2eMessage::Alive => {
                w.u8(ALIVE);
            }
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_and_dtmf_bounds() {
        let mut buf = [0u8; 700];
        let payload = [7u8; MAX_VOICE_PAYLOAD];
        let v = E2eMessage::Voice {
            seq: 1,
            timestamp: 160,
            payload: &payload,
        };
        let n = v.encode(&mut buf).unwrap();
        assert_eq!(E2eMessage::parse(&buf[..n]), Ok(v));
        // One byte more than the largest payload.
        buf[n] = 0;
        assert!(E2eMessage::parse(&buf[..n + 1]).is_err());
        assert!(E2eMessage::parse(&buf[..9]).is_err());
        let d = E2eMessage::Dtmf {
            event: 1,
            digit: b'#',
            duration_ms: 100,
        };
        let n = d.encode(&mut buf).unwrap();
        assert_eq!(E2eMessage::parse(&buf[..n]), Ok(d));
        buf[5] = b'x';
        assert!(E2eMessage::parse(&buf[..n]).is_err());
        let n = E2eMessage::Alive.encode(&mut buf).unwrap();
        assert_eq!(E2eMessage::parse(&buf[..n]), Ok(E2eMessage::Alive));
        assert!(E2eMessage::parse(&[3, 0]).is_err());
    }
}
