//! The inner message of a transport packet (what the AEAD protects).
//!
//! ```text
//! Keepalive  kind = 0                                  exactly 1 byte
//! Control    kind = 1, msg_id (4), control body (1..)  see `control`
//! Ack        kind = 2, msg_id (4)                      exactly 5 bytes
//! Media      kind = 3, call_id (8), e2e blob (25..)    relayed, see `e2e`
//! ```

use super::{DropReason, Reader, Writer};
use crate::session::CallId;

/// Smallest end-to-end blob: counter (8), one byte of ciphertext, tag (16).
pub const MIN_E2E_BLOB: usize = 8 + 1 + 16;

/// A decoded inner message; borrows the decrypted buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner<'a> {
    /// Keeps NAT bindings open; carries nothing.
    Keepalive,
    /// A reliably delivered control message.
    Control {
        /// Per-sender message id, used for acks and duplicate suppression.
        msg_id: u32,
        /// The encoded control message.
        body: &'a [u8],
    },
    /// Acknowledges a control message.
    Ack {
        /// The id acknowledged.
        msg_id: u32,
    },
    /// A voice frame, end-to-end encrypted between the two clients.
    Media {
        /// The call it belongs to.
        call: CallId,
        /// The end-to-end blob, relayed unchanged by proxies.
        e2e: &'a [u8],
    },
}

const KEEPALIVE: u8 = 0;
const CONTROL: u8 = 1;
const ACK: u8 = 2;
const MEDIA: u8 = 3;

impl<'a> Inner<'a> {
    /// Parses an inner message at its exact length.
    pub fn parse(b: &'a [u8]) -> Result<Self, DropReason> {
        let mut r = Reader::new(b);
        let msg = match r.u8().ok_or(DropReason::BadInner)? {
            KEEPALIVE => Inner::Keepalive,
            CONTROL => {
                let msg_id = r.u32().ok_or(DropReason::BadInner)?;
                let body = r.rest();
                if body.is_empty() {
                    return Err(DropReason::BadInner);
                }
                Inner::Control { msg_id, body }
            }
            ACK => Inner::Ack {
                msg_id: r.u32().ok_or(DropReason::BadInner)?,
            },
            MEDIA => {
                let call = CallId(r.u64().ok_or(DropReason::BadInner)?);
                let e2e = r.rest();
                if e2e.len() < MIN_E2E_BLOB {
                    return Err(DropReason::BadInner);
                }
                Inner::Media { call, e2e }
            }
            _ => return Err(DropReason::BadInner),
        };
        r.finish().ok_or(DropReason::BadInner)?;
        Ok(msg)
    }

    /// Encodes into `out`; `None` if it does not fit.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let mut w = Writer::new(out);
        match *self {
            Inner::Keepalive => {
                w.u8(KEEPALIVE);
            }
            Inner::Control { msg_id, body } => {
                w.u8(CONTROL).u32(msg_id).bytes(body);
            }
            Inner::Ack { msg_id } => {
                w.u8(ACK).u32(msg_id);
            }
            Inner::Media { call, e2e } => {
                w.u8(MEDIA).u64(call.0).bytes(e2e);
            }
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_lengths() {
        assert_eq!(Inner::parse(&[0]), Ok(Inner::Keepalive));
        assert_eq!(Inner::parse(&[0, 0]), Err(DropReason::BadInner));
        assert_eq!(Inner::parse(&[2, 0, 0, 0, 9]), Ok(Inner::Ack { msg_id: 9 }));
        assert_eq!(Inner::parse(&[2, 0, 0, 9]), Err(DropReason::BadInner));
        assert_eq!(Inner::parse(&[2, 0, 0, 0, 9, 1]), Err(DropReason::BadInner));
        assert_eq!(Inner::parse(&[1, 0, 0, 0, 1]), Err(DropReason::BadInner));
        assert_eq!(
            Inner::parse(&[3; 9 + MIN_E2E_BLOB - 1]),
            Err(DropReason::BadInner)
        );
        assert_eq!(Inner::parse(&[]), Err(DropReason::BadInner));
        assert_eq!(Inner::parse(&[9]), Err(DropReason::BadInner));
    }
}
