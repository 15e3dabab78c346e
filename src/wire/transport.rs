//! Layout of a transport packet.
//!
//! ```text
//!  0  type = 4       1  version = 1
//!  2  sender_id (2)  0 for the client, the proxy id for a proxy
//!  4  session_id (8)
//! 12  counter (8)    per (session, direction, sender); never repeats
//! 20  ciphertext of the inner message (at least 1 byte)
//! ..  tag (16)       ChaCha20-Poly1305 over the ciphertext, AAD = bytes 0..20
//! ```
//! The AEAD nonce is `sender_id as u32 (big-endian) || counter (big-endian)`.

use super::{DropReason, MessageType, Reader, MAX_DATAGRAM, VERSION};
use crate::session::{SenderId, SessionId};

/// Length of the plaintext header, which is also the AEAD associated data.
pub const HEADER_LEN: usize = 20;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes a transport packet adds around its inner message.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Smallest transport packet: header, one byte of inner message, tag.
pub const MIN_LEN: usize = OVERHEAD + 1;
/// Largest inner message that fits in one datagram.
pub const MAX_INNER: usize = MAX_DATAGRAM - OVERHEAD;

/// The plaintext header of a transport packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportHeader {
    /// Who sealed the packet.
    pub sender: SenderId,
    /// The session it belongs to.
    pub session: SessionId,
    /// The sender's packet counter.
    pub counter: u64,
}

impl TransportHeader {
    /// Parses the header of a transport packet and checks its length bounds.
    pub fn parse(d: &[u8]) -> Result<Self, DropReason> {
        if d.len() < MIN_LEN {
            return Err(DropReason::Truncated);
        }
        if d.len() > MAX_DATAGRAM {
            return Err(DropReason::Oversized);
        }
        let mut r = Reader::new(d);
        let ty = r.u8().ok_or(DropReason::Truncated)?;
        let ver = r.u8().ok_or(DropReason::Truncated)?;
        if ty != MessageType::Transport as u8 {
            return Err(DropReason::UnknownType);
        }
        if ver != VERSION {
            return Err(DropReason::BadVersion);
        }
        let sender = SenderId(r.u16().ok_or(DropReason::Truncated)?);
        let session = r
            .u64()
            .and_then(SessionId::from_raw)
            .ok_or(DropReason::UnknownSession)?;
        let counter = r.u64().ok_or(DropReason::Truncated)?;
        Ok(Self {
            sender,
            session,
            counter,
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = MessageType::Transport as u8;
        out[1] = VERSION;
        out[2..4].copy_from_slice(&self.sender.0.to_be_bytes());
        out[4..12].copy_from_slice(&self.session.raw().to_be_bytes());
        out[12..20].copy_from_slice(&self.counter.to_be_bytes());
    }

    /// The 12-byte AEAD nonce for this header.
    pub fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[2..4].copy_from_slice(&self.sender.0.to_be_bytes());
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ProxyId;

    fn header() -> TransportHeader {
        TransportHeader {
            sender: SenderId(3),
            session: SessionId::new(ProxyId::new(3).unwrap(), 99),
            counter: 42,
        }
    }

    #[test]
    fn header_round_trip_and_bounds() {
        let mut pkt = [0u8; MIN_LEN];
        header().write((&mut pkt[..HEADER_LEN]).try_into().unwrap());
        assert_eq!(TransportHeader::parse(&pkt), Ok(header()));
        assert_eq!(
            TransportHeader::parse(&pkt[..MIN_LEN - 1]),
            Err(DropReason::Truncated)
        );
        let big = [4u8; MAX_DATAGRAM + 1];
        assert_eq!(TransportHeader::parse(&big), Err(DropReason::Oversized));
    }

    #[test]
    fn nonce_separates_senders() {
        let a = header();
        let b = TransportHeader {
            sender: SenderId(4),
            ..a
        };
        assert_ne!(a.nonce(), b.nonce());
        assert_eq!(&a.nonce()[4..], &42u64.to_be_bytes());
    }
}
