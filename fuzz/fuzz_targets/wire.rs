//! Every parser on arbitrary bytes; whatever parses must re-encode to the
//! same bytes (the encodings are canonical).
#![no_main]
use anytun::wire::control::ControlMsg;
use anytun::wire::e2e::E2eMessage;
use anytun::wire::handshake::{CookieReply, HandshakeInit, HandshakeResponse, ResponsePayload};
use anytun::wire::inner::Inner;
use anytun::wire::transport::TransportHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = anytun::wire::classify(data);
    let _ = HandshakeInit::parse(data);
    let _ = HandshakeResponse::parse(data);
    let _ = CookieReply::parse(data);
    let _ = TransportHeader::parse(data);
    if let Ok(p) = ResponsePayload::decode(data) {
        assert_eq!(&p.encode()[..], data);
    }
    let mut buf = [0u8; 4096];
    if let Ok(m) = ControlMsg::parse(data) {
        let n = m.encode(&mut buf).expect("a parsed message encodes");
        assert_eq!(&buf[..n], data);
    }
    if let Ok(m) = Inner::parse(data) {
        let n = m.encode(&mut buf).expect("a parsed message encodes");
        assert_eq!(&buf[..n], data);
    }
    if let Ok(m) = E2eMessage::parse(data) {
        let n = m.encode(&mut buf).expect("a parsed message encodes");
        assert_eq!(&buf[..n], data);
    }
});
