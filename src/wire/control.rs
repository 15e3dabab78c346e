//! Control messages of the call layer (inside `Inner::Control`).
//!
//! Strings are a 1-byte length and that many bytes; byte blobs a 2-byte length
//! and that many bytes. Each message is accepted only when every byte is
//! consumed.
//!
//! ```text
//! 1 Register       expires_s (4), name
//! 2 Registered     expires_s (4), name            expires_s = 0: removed
//! 3 RegisterFailed cause (1), name
//! 4 Invite         call_id (8), to, from, peer_key (32), n (1), n x codec, e2e blob
//! 5 Ringing        call_id (8)
//! 6 Answer         call_id (8), peer_key (32), e2e blob
//! 7 Reject         call_id (8), cause (1)
//! 8 Hangup         call_id (8), cause (1)
//! 9 CallData       call_id (8), e2e blob           relayed end-to-end message
//! 10 SessionReplaced (no fields)                   proxy to a session a newer login replaced
//! ```
//! `from` may be empty from a client (the proxy fills in its name);
//! `peer_key` is zero from a client and set by the proxy to the other
//! client's authenticated static key. A `cause` is a Q.850 value (1..=127);
//! any other octet parses (the encodings stay canonical) and its receiver
//! maps it with [`CauseOctet::cause`] and counts it.

use super::{DropReason, Reader, Writer};
use crate::call::cause::CauseOutOfRange;
use crate::call::{Cause, Name};
use crate::session::CallId;

/// The cause octet of a Reject or Hangup as carried: a Q.850 cause from a
/// sender that keeps the rules, any octet from one that does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CauseOctet(pub u8);

impl CauseOctet {
    /// The cause it carries.
    ///
    /// # Errors
    /// [`CauseOutOfRange`] for 0 or 128..=255, holding the defined cause it
    /// is taken as ([`Cause::from_code`]); the receiver counts it.
    pub fn cause(self) -> Result<Cause, CauseOutOfRange> {
        Cause::from_code(self.0)
    }
}

impl From<Cause> for CauseOctet {
    fn from(c: Cause) -> Self {
        Self(c.code())
    }
}

/// Most codecs one offer may list.
pub const MAX_CODECS: usize = 16;
/// Longest codec name.
pub const MAX_CODEC_NAME: usize = 32;
/// Longest end-to-end blob in a control message.
pub const MAX_E2E_BLOB: usize = 512;

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RegisterCause {
    /// The client's key is not authorised for that name.
    NotAuthorized = 1,
    /// A bound was reached: the session holds its most names, or the name
    /// has its most devices.
    Limit = 2,
}

/// A call-layer control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMsg {
    /// Client asks to be reachable under `name` for `expires_s` seconds
    /// (0 removes the registration).
    Register {
        /// Requested lifetime.
        expires_s: u32,
        /// The name.
        name: Name,
    },
    /// Proxy confirms a registration with the lifetime it granted.
    Registered {
        /// Granted lifetime (0: removed).
        expires_s: u32,
        /// The name.
        name: Name,
    },
    /// Proxy refuses a registration.
    RegisterFailed {
        /// Why.
        cause: RegisterCause,
        /// The name.
        name: Name,
    },
    /// Call set-up, caller to proxy and proxy to each callee device.
    Invite {
        /// The call.
        call: CallId,
        /// Callee name.
        to: Name,
        /// Caller name (`None` from a client that lets the proxy choose).
        from: Option<Name>,
        /// Caller's static key, set by the proxy.
        peer_key: [u8; 32],
        /// Offered codecs, in order of preference.
        codecs: Vec<String>,
        /// End-to-end handshake message 1 (Noise IX).
        e2e: Vec<u8>,
    },
    /// The callee device is alerting.
    Ringing {
        /// The call.
        call: CallId,
    },
    /// The callee answered.
    Answer {
        /// The call.
        call: CallId,
        /// Answering device's static key, set by the proxy.
        peer_key: [u8; 32],
        /// End-to-end handshake message 2 (Noise IX), carrying the codec.
        e2e: Vec<u8>,
    },
    /// The call was refused before answer.
    Reject {
        /// The call.
        call: CallId,
        /// Why.
        cause: CauseOctet,
    },
    /// The call ended (or was cancelled before answer).
    Hangup {
        /// The call.
        call: CallId,
        /// Why.
        cause: CauseOctet,
    },
    /// A relayed end-to-end message that must arrive (DTMF).
    CallData {
        /// The call.
        call: CallId,
        /// End-to-end blob.
        e2e: Vec<u8>,
    },
    /// Proxy to client: a newer handshake with this client's key replaced
    /// this session, which ends now. Sent (unacknowledged) just before the
    /// proxy forgets the session; the client must not log in again.
    SessionReplaced,
}

mod tag {
    pub const REGISTER: u8 = 1;
    pub const REGISTERED: u8 = 2;
    pub const REGISTER_FAILED: u8 = 3;
    pub const INVITE: u8 = 4;
    pub const RINGING: u8 = 5;
    pub const ANSWER: u8 = 6;
    pub const REJECT: u8 = 7;
    pub const HANGUP: u8 = 8;
    pub const CALL_DATA: u8 = 9;
    pub const SESSION_REPLACED: u8 = 10;
}

/// A codec name: 1 to 32 printable ASCII characters, no spaces.
fn valid_codec(c: &str) -> bool {
    !c.is_empty() && c.len() <= MAX_CODEC_NAME && c.bytes().all(|b| b.is_ascii_graphic())
}

fn read_str<'a>(r: &mut Reader<'a>) -> Option<&'a str> {
    let n = r.u8()? as usize;
    std::str::from_utf8(r.bytes(n)?).ok()
}

fn read_name(r: &mut Reader<'_>) -> Option<Name> {
    Name::new(read_str(r)?).ok()
}

fn read_blob(r: &mut Reader<'_>) -> Option<Vec<u8>> {
    let n = r.u16()? as usize;
    (n <= MAX_E2E_BLOB).then_some(())?;
    r.bytes(n).map(<[u8]>::to_vec)
}

fn write_str(w: &mut Writer<'_>, s: &str) {
    // Names and codec names are bounded well below 255 by their validators.
    w.u8(s.len().min(255) as u8).bytes(s.as_bytes());
}

fn write_blob(w: &mut Writer<'_>, b: &[u8]) {
    w.u16(b.len().min(u16::MAX as usize) as u16).bytes(b);
}

impl ControlMsg {
    /// The call a message belongs to, if any.
    pub fn call(&self) -> Option<CallId> {
        match self {
            ControlMsg::Invite { call, .. }
            | ControlMsg::Ringing { call }
            | ControlMsg::Answer { call, .. }
            | ControlMsg::Reject { call, .. }
            | ControlMsg::Hangup { call, .. }
            | ControlMsg::CallData { call, .. } => Some(*call),
            _ => None,
        }
    }

    /// Parses a control body at its exact length.
    pub fn parse(b: &[u8]) -> Result<Self, DropReason> {
        Self::parse_inner(b).ok_or(DropReason::BadInner)
    }

    fn parse_inner(b: &[u8]) -> Option<Self> {
        let mut r = Reader::new(b);
        let msg = match r.u8()? {
            tag::REGISTER => ControlMsg::Register {
                expires_s: r.u32()?,
                name: read_name(&mut r)?,
            },
            tag::REGISTERED => ControlMsg::Registered {
                expires_s: r.u32()?,
                name: read_name(&mut r)?,
            },
            tag::REGISTER_FAILED => ControlMsg::RegisterFailed {
                cause: match r.u8()? {
                    1 => RegisterCause::NotAuthorized,
                    2 => RegisterCause::Limit,
                    _ => return None,
                },
                name: read_name(&mut r)?,
            },
            tag::INVITE => {
                let call = CallId(r.u64()?);
                let to = read_name(&mut r)?;
                let from = match read_str(&mut r)? {
                    "" => None,
                    s => Some(Name::new(s).ok()?),
                };
                let peer_key = r.array()?;
                let n = r.u8()? as usize;
                (n <= MAX_CODECS).then_some(())?;
                let mut codecs = Vec::with_capacity(n);
                for _ in 0..n {
                    let c = read_str(&mut r).filter(|c| valid_codec(c))?;
                    codecs.push(c.to_owned());
                }
                ControlMsg::Invite {
                    call,
                    to,
                    from,
                    peer_key,
                    codecs,
                    e2e: read_blob(&mut r)?,
                }
            }
            tag::RINGING => ControlMsg::Ringing {
                call: CallId(r.u64()?),
            },
            tag::ANSWER => ControlMsg::Answer {
                call: CallId(r.u64()?),
                peer_key: r.array()?,
                e2e: read_blob(&mut r)?,
            },
            tag::REJECT => ControlMsg::Reject {
                call: CallId(r.u64()?),
                cause: CauseOctet(r.u8()?),
            },
            tag::HANGUP => ControlMsg::Hangup {
                call: CallId(r.u64()?),
                cause: CauseOctet(r.u8()?),
            },
            tag::CALL_DATA => ControlMsg::CallData {
                call: CallId(r.u64()?),
                e2e: read_blob(&mut r)?,
            },
            tag::SESSION_REPLACED => ControlMsg::SessionReplaced,
            _ => return None,
        };
        r.finish()?;
        Some(msg)
    }

    /// Encodes into `out`; `None` if it does not fit or a field is out of
    /// bounds (too many codecs, an oversized blob), so nothing unparsable is
    /// ever sent.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let mut w = Writer::new(out);
        match self {
            ControlMsg::Register { expires_s, name } => {
                w.u8(tag::REGISTER).u32(*expires_s);
                write_str(&mut w, name.as_str());
            }
            ControlMsg::Registered { expires_s, name } => {
                w.u8(tag::REGISTERED).u32(*expires_s);
                write_str(&mut w, name.as_str());
            }
            ControlMsg::RegisterFailed { cause, name } => {
                w.u8(tag::REGISTER_FAILED).u8(*cause as u8);
                write_str(&mut w, name.as_str());
            }
            ControlMsg::Invite {
                call,
                to,
                from,
                peer_key,
                codecs,
                e2e,
            } => {
                let codecs_ok = codecs.len() <= MAX_CODECS && codecs.iter().all(|c| valid_codec(c));
                if !codecs_ok || e2e.len() > MAX_E2E_BLOB {
                    return None;
                }
                w.u8(tag::INVITE).u64(call.0);
                write_str(&mut w, to.as_str());
                write_str(&mut w, from.as_ref().map_or("", Name::as_str));
                w.bytes(peer_key).u8(codecs.len() as u8);
                for c in codecs {
                    write_str(&mut w, c);
                }
                write_blob(&mut w, e2e);
            }
            ControlMsg::Ringing { call } => {
                w.u8(tag::RINGING).u64(call.0);
            }
            ControlMsg::Answer {
                call,
                peer_key,
                e2e,
            } => {
                if e2e.len() > MAX_E2E_BLOB {
                    return None;
                }
                w.u8(tag::ANSWER).u64(call.0).bytes(peer_key);
                write_blob(&mut w, e2e);
            }
            ControlMsg::Reject { call, cause } => {
                w.u8(tag::REJECT).u64(call.0).u8(cause.0);
            }
            ControlMsg::Hangup { call, cause } => {
                w.u8(tag::HANGUP).u64(call.0).u8(cause.0);
            }
            ControlMsg::CallData { call, e2e } => {
                if e2e.len() > MAX_E2E_BLOB {
                    return None;
                }
                w.u8(tag::CALL_DATA).u64(call.0);
                write_blob(&mut w, e2e);
            }
            ControlMsg::SessionReplaced => {
                w.u8(tag::SESSION_REPLACED);
            }
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    pub(crate) fn samples() -> Vec<ControlMsg> {
        vec![
            ControlMsg::Register {
                expires_s: 300,
                name: name("alice"),
            },
            ControlMsg::Registered {
                expires_s: 0,
                name: name("alice"),
            },
            ControlMsg::RegisterFailed {
                cause: RegisterCause::NotAuthorized,
                name: name("bob"),
            },
            ControlMsg::RegisterFailed {
                cause: RegisterCause::Limit,
                name: name("bob"),
            },
            ControlMsg::Invite {
                call: CallId(5),
                to: name("bob"),
                from: None,
                peer_key: [3; 32],
                codecs: vec!["ulaw".into(), "opus".into()],
                e2e: vec![1, 2, 3],
            },
            ControlMsg::Ringing { call: CallId(5) },
            ControlMsg::Answer {
                call: CallId(5),
                peer_key: [9; 32],
                e2e: vec![4; 100],
            },
            ControlMsg::Reject {
                call: CallId(5),
                cause: Cause::Busy.into(),
            },
            ControlMsg::Hangup {
                call: CallId(5),
                // Out of range: parsed and re-encoded as sent.
                cause: CauseOctet(200),
            },
            ControlMsg::CallData {
                call: CallId(5),
                e2e: vec![0; 30],
            },
            ControlMsg::SessionReplaced,
        ]
    }

    #[test]
    fn every_message_round_trips_and_rejects_truncation_and_trailing_bytes() {
        let mut buf = [0u8; 1024];
        for m in samples() {
            let n = m.encode(&mut buf).unwrap();
            assert_eq!(ControlMsg::parse(&buf[..n]), Ok(m.clone()));
            for cut in 0..n {
                assert!(
                    ControlMsg::parse(&buf[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
            assert!(ControlMsg::parse(&buf[..n + 1]).is_err(), "{m:?} + 1 byte");
        }
    }

    #[test]
    fn encode_refuses_out_of_bounds_fields() {
        let mut buf = [0u8; 2048];
        let too_many = ControlMsg::Invite {
            call: CallId(1),
            to: name("b"),
            from: None,
            peer_key: [0; 32],
            codecs: vec!["x".into(); MAX_CODECS + 1],
            e2e: vec![],
        };
        assert_eq!(too_many.encode(&mut buf), None);
        let big = ControlMsg::CallData {
            call: CallId(1),
            e2e: vec![0; MAX_E2E_BLOB + 1],
        };
        assert_eq!(big.encode(&mut buf), None);
        let small = ControlMsg::Ringing { call: CallId(1) };
        assert_eq!(small.encode(&mut buf[..3]), None);
    }
}
