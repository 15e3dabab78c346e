//! Layouts of the three handshake messages.
//!
//! ```text
//! HandshakeInit (148 bytes, client -> proxy)
//!   0  type = 1            1  version = 1       2  reserved (2) = 0
//!   4  init_tag (4)        chosen by the client, echoed in the answer
//!   8  noise (108)         Noise IK message 1: e, s, {timestamp}
//! 116  mac1 (16)           keyed by the network public key, over bytes 0..116
//! 132  mac2 (16)           keyed by a cookie, over bytes 0..132, or zero
//!
//! HandshakeResponse (101 bytes, proxy -> client)
//!   0  type = 2            1  version = 1       2  reserved (2) = 0
//!   4  init_tag (4)        copied from the initiation
//!   8  noise (93)          Noise IK message 2: e, {ResponsePayload}
//!
//! CookieReply (64 bytes, proxy -> client)
//!   0  type = 3            1  version = 1       2  reserved (2) = 0
//!   4  init_tag (4)        copied from the initiation
//!   8  nonce (24)          XChaCha20-Poly1305 nonce
//!  32  cookie (32)         sealed 16-byte cookie, AAD = the initiation's mac1
//! ```

use super::{DropReason, Reader, Writer, VERSION};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Length of the timestamp carried in the initiation (TAI64N).
pub const TIMESTAMP_LEN: usize = 12;
/// Length of Noise IK message 1 with a timestamp payload.
pub const INIT_NOISE_LEN: usize = 32 + (32 + 16) + (TIMESTAMP_LEN + 16);
/// Length of a MAC field.
pub const MAC_LEN: usize = 16;
/// Offset of mac1 in a [`HandshakeInit`].
pub const INIT_MAC1_OFFSET: usize = 8 + INIT_NOISE_LEN;
/// Offset of mac2 in a [`HandshakeInit`].
pub const INIT_MAC2_OFFSET: usize = INIT_MAC1_OFFSET + MAC_LEN;
/// Length of a [`HandshakeInit`].
pub const INIT_LEN: usize = INIT_MAC2_OFFSET + MAC_LEN;
/// Length of the response payload inside Noise message 2.
pub const RESPONSE_PAYLOAD_LEN: usize = 45;
/// Length of Noise IK message 2 with a response payload.
pub const RESPONSE_NOISE_LEN: usize = 32 + RESPONSE_PAYLOAD_LEN + 16;
/// Length of a [`HandshakeResponse`].
pub const RESPONSE_LEN: usize = 8 + RESPONSE_NOISE_LEN;
/// Length of the XChaCha20 nonce in a cookie reply.
pub const COOKIE_NONCE_LEN: usize = 24;
/// Length of the sealed cookie (16-byte cookie plus 16-byte tag).
pub const SEALED_COOKIE_LEN: usize = 32;
/// Length of a [`CookieReply`].
pub const COOKIE_REPLY_LEN: usize = 8 + COOKIE_NONCE_LEN + SEALED_COOKIE_LEN;

// The amplification rule, checked at compile time: before authentication a
// proxy never answers with more bytes than the initiation carried.
const _: () = assert!(RESPONSE_LEN <= INIT_LEN && COOKIE_REPLY_LEN <= INIT_LEN);

/// A parsed handshake initiation; borrows the datagram.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeInit<'a> {
    /// The client's tag for this attempt.
    pub init_tag: u32,
    /// Noise IK message 1.
    pub noise: &'a [u8],
    /// MAC1 as received.
    pub mac1: [u8; MAC_LEN],
    /// MAC2 as received (all zero when the client holds no cookie).
    pub mac2: [u8; MAC_LEN],
}

/// Reads the common 8-byte prefix (type, version, reserved, init_tag) of a
/// handshake message whose type and version were already classified.
fn prefix<'a>(d: &'a [u8], len: usize) -> Result<(u32, Reader<'a>), DropReason> {
    if d.len() < len {
        return Err(DropReason::Truncated);
    }
    if d.len() > len {
        return Err(DropReason::Oversized);
    }
    let mut r = Reader::new(d);
    r.bytes(2).ok_or(DropReason::Truncated)?;
    if r.u16() != Some(0) {
        return Err(DropReason::BadReserved);
    }
    let tag = r.u32().ok_or(DropReason::Truncated)?;
    Ok((tag, r))
}

impl<'a> HandshakeInit<'a> {
    /// Parses an initiation at its exact length.
    pub fn parse(d: &'a [u8]) -> Result<Self, DropReason> {
        let (init_tag, mut r) = prefix(d, INIT_LEN)?;
        let noise = r.bytes(INIT_NOISE_LEN).ok_or(DropReason::Truncated)?;
        let mac1 = r.array().ok_or(DropReason::Truncated)?;
        let mac2 = r.array().ok_or(DropReason::Truncated)?;
        r.finish().ok_or(DropReason::Oversized)?;
        Ok(Self {
            init_tag,
            noise,
            mac1,
            mac2,
        })
    }

    /// Writes the fixed prefix of an initiation into `out[..8]`; the caller
    /// writes the Noise message at 8 and the MACs after it.
    pub fn write_prefix(out: &mut [u8; INIT_LEN], init_tag: u32) {
        out[0] = super::MessageType::HandshakeInit as u8;
        out[1] = VERSION;
        out[2..4].fill(0);
        out[4..8].copy_from_slice(&init_tag.to_be_bytes());
    }
}

/// A parsed handshake response; borrows the datagram.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeResponse<'a> {
    /// The tag of the initiation this answers.
    pub init_tag: u32,
    /// Noise IK message 2.
    pub noise: &'a [u8],
}

impl<'a> HandshakeResponse<'a> {
    /// Parses a response at its exact length.
    pub fn parse(d: &'a [u8]) -> Result<Self, DropReason> {
        let (init_tag, mut r) = prefix(d, RESPONSE_LEN)?;
        let noise = r.rest();
        Ok(Self { init_tag, noise })
    }

    /// Writes the fixed 8-byte prefix of a response.
    pub fn write_prefix(out: &mut [u8], init_tag: u32) {
        out[0] = super::MessageType::HandshakeResponse as u8;
        out[1] = VERSION;
        out[2..4].fill(0);
        out[4..8].copy_from_slice(&init_tag.to_be_bytes());
    }
}

/// A parsed cookie reply; borrows the datagram.
#[derive(Debug, Clone, Copy)]
pub struct CookieReply<'a> {
    /// The tag of the initiation this answers.
    pub init_tag: u32,
    /// XChaCha20-Poly1305 nonce.
    pub nonce: &'a [u8],
    /// Sealed cookie.
    pub sealed_cookie: &'a [u8],
}

impl<'a> CookieReply<'a> {
    /// Parses a cookie reply at its exact length.
    pub fn parse(d: &'a [u8]) -> Result<Self, DropReason> {
        let (init_tag, mut r) = prefix(d, COOKIE_REPLY_LEN)?;
        let nonce = r.bytes(COOKIE_NONCE_LEN).ok_or(DropReason::Truncated)?;
        let sealed_cookie = r.rest();
        Ok(Self {
            init_tag,
            nonce,
            sealed_cookie,
        })
    }

    /// Writes the fixed 8-byte prefix of a cookie reply.
    pub fn write_prefix(out: &mut [u8], init_tag: u32) {
        out[0] = super::MessageType::CookieReply as u8;
        out[1] = VERSION;
        out[2..4].fill(0);
        out[4..8].copy_from_slice(&init_tag.to_be_bytes());
    }
}

/// Outcome of a handshake, as the proxy reports it to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HandshakeStatus {
    /// The session is established.
    Accepted = 0,
    /// The client's static key is not in the subscriber store.
    UnknownKey = 1,
    /// The proxy cannot take more sessions now.
    Busy = 2,
    /// The initiation's timestamp is more than the freshness window from the
    /// proxy's clock (the client's clock is wrong); `time` in the payload is
    /// a timestamp the proxy would accept now.
    ClockSkew = 3,
    /// The timestamp is within the window but not newer than the newest the
    /// proxy holds for this key or its restart floor; `time` is a timestamp
    /// the proxy would accept now.
    Stale = 4,
}

impl HandshakeStatus {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Accepted),
            1 => Some(Self::UnknownKey),
            2 => Some(Self::Busy),
            3 => Some(Self::ClockSkew),
            4 => Some(Self::Stale),
            _ => None,
        }
    }
}

/// The payload the proxy puts in Noise message 2 (45 bytes).
///
/// ```text
///  0 status (1)   1 reserved (1)   2 keepalive_s (2)   4 session_id (8)
/// 12 proxy_id (2) 14 family (1: 4 or 6)  15 port (2)   17 address (16)
/// 33 time (12, TAI64N)
/// ```
/// The observed address is where the proxy saw the client's packet come
/// from: the client's outside NAT address, which helps operators debug NAT.
/// `time` is the proxy's wall clock; with [`HandshakeStatus::ClockSkew`] and
/// [`HandshakeStatus::Stale`] it is raised to a timestamp the proxy would
/// accept now, which the client adopts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePayload {
    /// Whether the session was established.
    pub status: HandshakeStatus,
    /// Keepalive interval the client should use, in seconds.
    pub keepalive_s: u16,
    /// The new session's id (0 when not accepted).
    pub session_id: u64,
    /// The id of the proxy that answered.
    pub proxy_id: u16,
    /// The client's address as the proxy saw it.
    pub observed: SocketAddr,
    /// The proxy's wall clock, or the timestamp to use (see above).
    pub time: [u8; TIMESTAMP_LEN],
}

impl ResponsePayload {
    /// Encodes into exactly [`RESPONSE_PAYLOAD_LEN`] bytes.
    pub fn encode(&self) -> [u8; RESPONSE_PAYLOAD_LEN] {
        let mut out = [0u8; RESPONSE_PAYLOAD_LEN];
        let mut w = Writer::new(&mut out);
        w.u8(self.status as u8)
            .u8(0)
            .u16(self.keepalive_s)
            .u64(self.session_id)
            .u16(self.proxy_id);
        encode_addr(&mut w, self.observed);
        w.bytes(&self.time);
        debug_assert_eq!(w.finish(), Some(RESPONSE_PAYLOAD_LEN));
        out
    }

    /// Decodes exactly [`RESPONSE_PAYLOAD_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Result<Self, DropReason> {
        let mut r = Reader::new(b);
        let status = r
            .u8()
            .and_then(HandshakeStatus::from_byte)
            .ok_or(DropReason::BadInner)?;
        if r.u8() != Some(0) {
            return Err(DropReason::BadReserved);
        }
        let keepalive_s = r.u16().ok_or(DropReason::Truncated)?;
        let session_id = r.u64().ok_or(DropReason::Truncated)?;
        let proxy_id = r.u16().ok_or(DropReason::Truncated)?;
        let observed = decode_addr(&mut r).ok_or(DropReason::BadInner)?;
        let time = r.array().ok_or(DropReason::Truncated)?;
        r.finish().ok_or(DropReason::Oversized)?;
        Ok(Self {
            status,
            keepalive_s,
            session_id,
            proxy_id,
            observed,
            time,
        })
    }
}

/// Writes a socket address as family (4 or 6), port, 16 address bytes
/// (IPv4 in the first four, the rest zero): 19 bytes.
pub fn encode_addr(w: &mut Writer<'_>, addr: SocketAddr) {
    let mut ip = [0u8; 16];
    let family = match addr.ip() {
        IpAddr::V4(v4) => {
            ip[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            ip = v6.octets();
            6
        }
    };
    w.u8(family).u16(addr.port()).bytes(&ip);
}

/// Reads what [`encode_addr`] wrote; `None` on a bad family or non-zero
/// padding after an IPv4 address.
pub fn decode_addr(r: &mut Reader<'_>) -> Option<SocketAddr> {
    let family = r.u8()?;
    let port = r.u16()?;
    let ip: [u8; 16] = r.array()?;
    let ip = match family {
        4 if ip[4..].iter().all(|&b| b == 0) => {
            IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
        }
        6 => IpAddr::V6(Ipv6Addr::from(ip)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_the_spec() {
        assert_eq!(INIT_NOISE_LEN, 108);
        assert_eq!(INIT_LEN, 148);
        assert_eq!(RESPONSE_LEN, 101);
        assert_eq!(COOKIE_REPLY_LEN, 64);
    }

    #[test]
    fn init_only_at_exact_length() {
        let mut m = [0u8; INIT_LEN];
        HandshakeInit::write_prefix(&mut m, 7);
        assert_eq!(HandshakeInit::parse(&m).unwrap().init_tag, 7);
        assert_eq!(
            HandshakeInit::parse(&m[..INIT_LEN - 1]).unwrap_err(),
            DropReason::Truncated
        );
        let mut long = [0u8; INIT_LEN + 1];
        long[..INIT_LEN].copy_from_slice(&m);
        assert_eq!(
            HandshakeInit::parse(&long).unwrap_err(),
            DropReason::Oversized
        );
        m[3] = 1;
        assert_eq!(
            HandshakeInit::parse(&m).unwrap_err(),
            DropReason::BadReserved
        );
    }

    #[test]
    fn response_payload_round_trip_v4_v6() {
        for observed in ["192.0.2.7:40000", "[2001:db8::5]:1"] {
            let p = ResponsePayload {
                status: HandshakeStatus::Accepted,
                keepalive_s: 15,
                session_id: 0x0001_2345_6789_abcd,
                proxy_id: 1,
                observed: observed.parse().unwrap(),
                time: crate::crypto::tai64n(1_800_000_000_000_000_007),
            };
            assert_eq!(ResponsePayload::decode(&p.encode()), Ok(p));
        }
    }

    #[test]
    fn response_payload_rejects_bad_family_and_padding() {
        let p = ResponsePayload {
            status: HandshakeStatus::Accepted,
            keepalive_s: 15,
            session_id: 1,
            proxy_id: 1,
            observed: "192.0.2.7:4".parse().unwrap(),
            time: [0; 12],
        };
        let mut b = p.encode();
        b[14] = 5;
        assert!(ResponsePayload::decode(&b).is_err());
        let mut b = p.encode();
        b[30] = 1; // padding after an IPv4 address
        assert!(ResponsePayload::decode(&b).is_err());
        let mut b = p.encode();
        b[0] = 9;
        assert!(ResponsePayload::decode(&b).is_err());
    }
}
