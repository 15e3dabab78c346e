//! Property tests: every encoder/decoder pair round-trips, no parser panics
//! on any input, and no mutation of a sealed packet is ever accepted.

use anytun::call::Name;
use anytun::session::{CallId, Epochs, ProxyId, SenderId, SessionCrypto, SessionId};
use anytun::wire::control::{CauseOctet, ControlMsg, RegisterCause};
use anytun::wire::e2e::E2eMessage;
use anytun::wire::handshake::{
    CookieReply, HandshakeInit, HandshakeResponse, HandshakeStatus, ResponsePayload,
};
use anytun::wire::inner::Inner;
use anytun::wire::transport::TransportHeader;
use anytun::wire::{classify, DropReason};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Name> {
    "[A-Za-z0-9_+][A-Za-z0-9._+-]{0,63}".prop_map(|s| Name::new(&s).unwrap())
}

/// Any octet: out-of-range causes parse too, and re-encode as sent.
fn cause() -> impl Strategy<Value = CauseOctet> {
    any::<u8>().prop_map(CauseOctet)
}

fn codec() -> impl Strategy<Value = String> {
    "[!-~]{1,32}"
}

fn control() -> impl Strategy<Value = ControlMsg> {
    let call = any::<u64>().prop_map(CallId);
    let blob = proptest::collection::vec(any::<u8>(), 0..=512);
    prop_oneof![
        (any::<u32>(), name())
            .prop_map(|(expires_s, name)| ControlMsg::Register { expires_s, name }),
        (any::<u32>(), name())
            .prop_map(|(expires_s, name)| ControlMsg::Registered { expires_s, name }),
        name().prop_map(|name| ControlMsg::RegisterFailed {
            cause: RegisterCause::NotAuthorized,
            name
        }),
        (
            call.clone(),
            name(),
            proptest::option::of(name()),
            any::<[u8; 32]>(),
            proptest::collection::vec(codec(), 0..=16),
            blob.clone()
        )
            .prop_map(
                |(call, to, from, peer_key, codecs, e2e)| ControlMsg::Invite {
                    call,
                    to,
                    from,
                    peer_key,
                    codecs,
                    e2e
                }
            ),
        call.clone().prop_map(|call| ControlMsg::Ringing { call }),
        (call.clone(), any::<[u8; 32]>(), blob.clone()).prop_map(|(call, peer_key, e2e)| {
            ControlMsg::Answer {
                call,
                peer_key,
                e2e,
            }
        }),
        (call.clone(), cause()).prop_map(|(call, cause)| ControlMsg::Reject { call, cause }),
        (call.clone(), cause()).prop_map(|(call, cause)| ControlMsg::Hangup { call, cause }),
        (call, blob).prop_map(|(call, e2e)| ControlMsg::CallData { call, e2e }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn control_round_trips(m in control()) {
        let mut buf = [0u8; 2048];
        let n = m.encode(&mut buf).expect("fits");
        prop_assert_eq!(ControlMsg::parse(&buf[..n]), Ok(m));
        // Any shorter prefix is refused.
        if n > 0 {
            prop_assert!(ControlMsg::parse(&buf[..n - 1]).is_err());
        }
    }

    #[test]
    fn inner_round_trips(kind in 0u8..4, id in any::<u32>(), call in any::<u64>(),
                         body in proptest::collection::vec(any::<u8>(), 25..400)) {
        let m = match kind {
            0 => Inner::Keepalive,
            1 => Inner::Control { msg_id: id, body: &body },
            2 => Inner::Ack { msg_id: id },
            _ => Inner::Media { call: CallId(call), e2e: &body },
        };
        let mut buf = [0u8; 1024];
        let n = m.encode(&mut buf).unwrap();
        prop_assert_eq!(Inner::parse(&buf[..n]), Ok(m));
    }

    #[test]
    fn e2e_round_trips(seq in any::<u32>(), ts in any::<u32>(),
                       payload in proptest::collection::vec(any::<u8>(), 1..=640),
                       digit in proptest::sample::select(b"0123456789*#ABCD".to_vec()),
                       ms in any::<u16>(), voice in any::<bool>()) {
        let m = if voice {
            E2eMessage::Voice { seq, timestamp: ts, payload: &payload }
        } else {
            E2eMessage::Dtmf { event: seq, digit, duration_ms: ms }
        };
        let mut buf = [0u8; 1024];
        let n = m.encode(&mut buf).unwrap();
        prop_assert_eq!(E2eMessage::parse(&buf[..n]), Ok(m));
    }

    #[test]
    fn response_payload_round_trips(status in 0u8..5, ka in any::<u16>(), sid in any::<u64>(),
                                    pid in any::<u16>(), v6 in any::<bool>(),
                                    ip in any::<[u8; 16]>(), port in any::<u16>(),
                                    time in any::<[u8; 12]>()) {
        let ip: std::net::IpAddr = if v6 {
            std::net::Ipv6Addr::from(ip).into()
        } else {
            std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).into()
        };
        let p = ResponsePayload {
            status: [HandshakeStatus::Accepted, HandshakeStatus::UnknownKey, HandshakeStatus::Busy,
                     HandshakeStatus::ClockSkew, HandshakeStatus::Stale][status as usize],
            keepalive_s: ka, session_id: sid, proxy_id: pid,
            observed: std::net::SocketAddr::new(ip, port), time,
        };
        prop_assert_eq!(ResponsePayload::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn transport_header_round_trips(sender in any::<u16>(), home in 1u16..0xFFFF,
                                    rand in any::<u64>(), counter in any::<u64>()) {
        let h = TransportHeader {
            sender: SenderId(sender),
            session: SessionId::new(ProxyId::new(home).unwrap(), rand),
            counter,
        };
        let mut pkt = [0u8; 64];
        h.write((&mut pkt[..20]).try_into().unwrap());
        prop_assert_eq!(TransportHeader::parse(&pkt), Ok(h));
    }

    /// Arbitrary bytes through every parser: an error or a value, never a panic.
    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = classify(&data);
        let _ = HandshakeInit::parse(&data);
        let _ = HandshakeResponse::parse(&data);
        let _ = CookieReply::parse(&data);
        let _ = TransportHeader::parse(&data);
        let _ = Inner::parse(&data);
        let _ = ControlMsg::parse(&data);
        let _ = E2eMessage::parse(&data);
        let _ = ResponsePayload::decode(&data);
    }

    /// Flip any bits anywhere in a sealed packet: it is never accepted.
    #[test]
    fn mutated_packets_never_authenticate(pos in any::<prop::sample::Index>(), bits in 1u8..=255,
                                          body in proptest::collection::vec(any::<u8>(), 25..300)) {
        let id = SessionId::new(ProxyId::new(1).unwrap(), 5);
        let mut client = SessionCrypto::client(id, [1; 32], [2; 32]);
        let mut proxy = SessionCrypto::proxy(id, Epochs::ephemeral(ProxyId::new(1).unwrap()).take().unwrap(), [1; 32], [2; 32]);
        let mut pkt = [0u8; 400];
        let inner = Inner::Media { call: CallId(1), e2e: &body };
        let n = client.seal(&mut pkt, |b| inner.encode(b)).unwrap();
        let mut m = pkt[..n].to_vec();
        let i = pos.index(n);
        m[i] ^= bits;
        let accepted = TransportHeader::parse(&m).and_then(|h| proxy.open(&h, &mut m).map(|_| ()));
        prop_assert!(accepted.is_err());
        // ...and the genuine packet is still accepted afterwards.
        let mut good = pkt[..n].to_vec();
        let h = TransportHeader::parse(&good).unwrap();
        prop_assert!(proxy.open(&h, &mut good).is_ok());
    }

    /// Truncating a sealed packet anywhere makes it unacceptable.
    #[test]
    fn truncated_packets_never_authenticate(cut in any::<prop::sample::Index>()) {
        let id = SessionId::new(ProxyId::new(1).unwrap(), 5);
        let mut client = SessionCrypto::client(id, [1; 32], [2; 32]);
        let mut proxy = SessionCrypto::proxy(id, Epochs::ephemeral(ProxyId::new(1).unwrap()).take().unwrap(), [1; 32], [2; 32]);
        let mut pkt = [0u8; 400];
        let n = client.seal(&mut pkt, |b| Inner::Ack { msg_id: 3 }.encode(b)).unwrap();
        let len = cut.index(n);
        let mut m = pkt[..len].to_vec();
        let r = TransportHeader::parse(&m).and_then(|h| proxy.open(&h, &mut m).map(|_| ()));
        prop_assert!(matches!(r, Err(DropReason::Truncated) | Err(DropReason::BadTag) | Err(DropReason::UnknownType)));
    }
}
