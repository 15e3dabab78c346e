//! Messages between proxies (docs/anypsp-protocol.md section 15.5): their
//! encoding and parsing. What each one does is in `replica.rs`.

use super::handed::MAX_ACKS_PER_MESSAGE;
use crate::session::SessionId;
use crate::wire::MAX_DATAGRAM;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A message from one proxy to another, carried over the anypsp link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    /// A control message for client session `to`, which the receiver
    /// serves: it sends it (reliably) as if it had made it.
    Control {
        /// The client's session.
        to: SessionId,
        /// Proxies it crossed so far (at most [`MAX_CONTROL_HOPS`](super::replica::MAX_CONTROL_HOPS)).
        hops: u8,
        /// The sender's number for it, acknowledged in [`PeerMessage::Acks`]
        /// (never 0; unique per sender life).
        seq: u64,
        /// The encoded [`ControlMsg`].
        body: Vec<u8>,
    },
    /// The receiver's `Control` messages numbered `seqs` arrived here: the
    /// receiver forgets them (it keeps each until then, to hand it again if
    /// this proxy dies or is replaced as the serving one; spec 15.5).
    Acks {
        /// Their numbers (1 to [`MAX_ACKS_PER_MESSAGE`]).
        seqs: Vec<u64>,
    },
    /// A client's transport packet for a session the sender does not hold,
    /// sent to the session's home, which handles it as if received.
    Forward {
        /// The client's address.
        src: SocketAddr,
        /// The (anycast) address it was sent to.
        dst_ip: Option<IpAddr>,
        /// The datagram, unchanged.
        datagram: Vec<u8>,
    },
    /// "Did you see client counter `counter` of session `to`?": the sender
    /// got it as the newest packet of a session the receiver serves and
    /// takes the session over only if the receiver confirms.
    Probe {
        /// The session.
        to: SessionId,
        /// The client counter of the packet.
        counter: u64,
    },
    /// The answer to a [`PeerMessage::Probe`] when the serving proxy never
    /// saw that counter (nor any newer): the client moved, take it over.
    Confirm {
        /// The session.
        to: SessionId,
        /// The client counter probed.
        counter: u64,
    },
    /// The answer to a [`PeerMessage::Probe`] whose counter the receiver
    /// saw (a replay or a delayed copy), or about a session it does not
    /// serve: do not take over.
    Refuse {
        /// The session.
        to: SessionId,
        /// The client counter probed.
        counter: u64,
    },
    /// A client's call request (Ringing, Answer, Reject, Hangup, CallData)
    /// for a call the sender does not hold (its replication was lost on the
    /// way), sent to the call's owner, which handles it as if `from` had
    /// sent it there (the sender acknowledged it to the client).
    Request {
        /// The client's session.
        from: SessionId,
        /// The encoded [`ControlMsg`].
        body: Vec<u8>,
    },
    /// A voice frame for client session `to`, which the receiver serves
    /// (relay-via-serving mode only, for strict uRPF networks): the
    /// receiver seals it for `to` and sends it.
    Media {
        /// The receiving client's session.
        to: SessionId,
        /// The call.
        call: crate::session::CallId,
        /// The end-to-end blob, still sealed end to end.
        e2e: Vec<u8>,
    },
}

const TAG_CONTROL: u8 = 1;
const TAG_FORWARD: u8 = 2;
const TAG_MEDIA: u8 = 3;
const TAG_PROBE: u8 = 4;
const TAG_CONFIRM: u8 = 5;
const TAG_REFUSE: u8 = 6;
const TAG_REQUEST: u8 = 7;
const TAG_ACKS: u8 = 8;

fn put_ip(v: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        None => v.push(0),
        Some(IpAddr::V4(a)) => {
            v.push(4);
            v.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            v.push(6);
            v.extend_from_slice(&a.octets());
        }
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Some(h)
}

fn get_ip(b: &mut &[u8]) -> Option<Option<IpAddr>> {
    let fam = take(b, 1)?[0];
    Some(match fam {
        0 => None,
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(take(b, 4)?).ok()?,
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(take(b, 16)?).ok()?,
        ))),
        _ => return None,
    })
}

impl PeerMessage {
    /// Encodes: a tag byte, then for `Control` the session id (8 bytes, big
    /// endian), the hop count and the body; for `Forward` the source
    /// address (family 4/6, address, port), the destination address
    /// (family 0/4/6, address) and the datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MAX_DATAGRAM + 32);
        match self {
            Self::Control {
                to,
                hops,
                seq,
                body,
            } => {
                v.push(TAG_CONTROL);
                v.extend_from_slice(&to.raw().to_be_bytes());
                v.push(*hops);
                v.extend_from_slice(&seq.to_be_bytes());
                v.extend_from_slice(body);
            }
            Self::Acks { seqs } => {
                v.push(TAG_ACKS);
                for s in seqs {
                    v.extend_from_slice(&s.to_be_bytes());
                }
            }
            Self::Forward {
                src,
                dst_ip,
                datagram,
            } => {
                v.push(TAG_FORWARD);
                put_ip(&mut v, Some(src.ip()));
                v.extend_from_slice(&src.port().to_be_bytes());
                put_ip(&mut v, *dst_ip);
                v.extend_from_slice(datagram);
            }
            Self::Probe { to, counter }
            | Self::Confirm { to, counter }
            | Self::Refuse { to, counter } => {
                let tag = match self {
                    Self::Probe { .. } => TAG_PROBE,
                    Self::Confirm { .. } => TAG_CONFIRM,
                    _ => TAG_REFUSE,
                };
                v.push(tag);
                v.extend_from_slice(&to.raw().to_be_bytes());
                v.extend_from_slice(&counter.to_be_bytes());
            }
            Self::Request { from, body } => {
                v.push(TAG_REQUEST);
                v.extend_from_slice(&from.raw().to_be_bytes());
                v.extend_from_slice(body);
            }
            Self::Media { to, call, e2e } => {
                v.push(TAG_MEDIA);
                v.extend_from_slice(&to.raw().to_be_bytes());
                v.extend_from_slice(&call.0.to_be_bytes());
                v.extend_from_slice(e2e);
            }
        }
        v
    }

    /// Parses what [`PeerMessage::encode`] wrote; `None` if malformed.
    pub fn parse(mut b: &[u8]) -> Option<Self> {
        let b = &mut b;
        match take(b, 1)?[0] {
            TAG_CONTROL => {
                let to = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                let to = SessionId::from_raw(to)?;
                let hops = take(b, 1)?[0];
                let seq = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                if seq == 0 || b.is_empty() || b.len() > MAX_DATAGRAM {
                    return None;
                }
                Some(Self::Control {
                    to,
                    hops,
                    seq,
                    body: b.to_vec(),
                })
            }
            TAG_ACKS => {
                let n = b.len() / 8;
                if b.len() % 8 != 0 || n == 0 || n > MAX_ACKS_PER_MESSAGE {
                    return None;
                }
                let seqs = b
                    .chunks_exact(8)
                    .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
                    .collect();
                Some(Self::Acks { seqs })
            }
            TAG_FORWARD => {
                let ip = get_ip(b)??;
                let port = u16::from_be_bytes(take(b, 2)?.try_into().ok()?);
                let dst_ip = get_ip(b)?;
                if b.is_empty() || b.len() > MAX_DATAGRAM {
                    return None;
                }
                Some(Self::Forward {
                    src: SocketAddr::new(ip, port),
                    dst_ip,
                    datagram: b.to_vec(),
                })
            }
            TAG_MEDIA => {
                let to = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                let to = SessionId::from_raw(to)?;
                let call = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                if b.len() > MAX_DATAGRAM {
                    return None;
                }
                Some(Self::Media {
                    to,
                    call: crate::session::CallId(call),
                    e2e: b.to_vec(),
                })
            }
            TAG_REQUEST => {
                let from = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                let from = SessionId::from_raw(from)?;
                if b.is_empty() || b.len() > MAX_DATAGRAM {
                    return None;
                }
                Some(Self::Request {
                    from,
                    body: b.to_vec(),
                })
            }
            tag @ (TAG_PROBE | TAG_CONFIRM | TAG_REFUSE) => {
                let to = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                let to = SessionId::from_raw(to)?;
                let counter = u64::from_be_bytes(take(b, 8)?.try_into().ok()?);
                if !b.is_empty() {
                    return None;
                }
                Some(match tag {
                    TAG_PROBE => Self::Probe { to, counter },
                    TAG_CONFIRM => Self::Confirm { to, counter },
                    _ => Self::Refuse { to, counter },
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{CallId, ProxyId};

    fn samples() -> Vec<PeerMessage> {
        let sid = SessionId::new(ProxyId::new(7).unwrap(), 0x1234_5678_9abc);
        vec![
            PeerMessage::Control {
                to: sid,
                hops: 1,
                seq: 1 << 33,
                body: vec![1, 2, 3],
            },
            PeerMessage::Acks {
                seqs: vec![1, u64::MAX, 7],
            },
            PeerMessage::Forward {
                src: "198.51.100.7:4000".parse().unwrap(),
                dst_ip: Some("203.0.113.1".parse().unwrap()),
                datagram: vec![4; 40],
            },
            PeerMessage::Forward {
                src: "[2001:db8::1]:4000".parse().unwrap(),
                dst_ip: None,
                datagram: vec![4; 40],
            },
            PeerMessage::Media {
                to: sid,
                call: CallId(99),
                e2e: vec![5; 60],
            },
            PeerMessage::Probe {
                to: sid,
                counter: 1 << 40,
            },
            PeerMessage::Confirm {
                to: sid,
                counter: 7,
            },
            PeerMessage::Refuse {
                to: sid,
                counter: 8,
            },
        ]
    }

    #[test]
    fn peer_messages_round_trip() {
        for m in samples() {
            assert_eq!(PeerMessage::parse(&m.encode()), Some(m));
        }
    }

    #[test]
    fn truncated_or_garbage_peer_messages_are_refused_without_panic() {
        for m in samples() {
            let b = m.encode();
            for n in 0..b.len() {
                // Every strict prefix that cuts a fixed field is refused;
                // none panics.
                let _ = PeerMessage::parse(&b[..n]);
            }
            let mut bad = b.clone();
            bad[0] = 0xEE;
            assert_eq!(PeerMessage::parse(&bad), None);
        }
        assert_eq!(PeerMessage::parse(&[]), None);
        assert_eq!(PeerMessage::parse(&[TAG_FORWARD, 5, 0, 0]), None);
        // Acks: whole numbers only, 1 to MAX_ACKS_PER_MESSAGE of them.
        assert_eq!(PeerMessage::parse(&[TAG_ACKS]), None);
        assert_eq!(
            PeerMessage::parse(&[TAG_ACKS, 0, 0, 0, 0, 0, 0, 0, 1, 2]),
            None
        );
        let too_many = [vec![TAG_ACKS], vec![1; 8 * (MAX_ACKS_PER_MESSAGE + 1)]].concat();
        assert_eq!(PeerMessage::parse(&too_many), None);
        // A Control numbered 0 (never assigned) is malformed.
        let zero = PeerMessage::Control {
            to: SessionId::new(ProxyId::new(7).unwrap(), 1),
            hops: 0,
            seq: 0,
            body: vec![1],
        };
        assert_eq!(PeerMessage::parse(&zero.encode()), None);
        let sid = SessionId::new(ProxyId::new(7).unwrap(), 1)
            .raw()
            .to_be_bytes();
        let ok = [
            vec![TAG_MEDIA],
            sid.to_vec(),
            vec![0; 8],
            vec![0; MAX_DATAGRAM],
        ]
        .concat();
        assert!(PeerMessage::parse(&ok).is_some());
        let oversized = [ok, vec![0]].concat();
        assert_eq!(PeerMessage::parse(&oversized), None);
    }
}
