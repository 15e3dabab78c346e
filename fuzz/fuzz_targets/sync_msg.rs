//! The anypsp sync message parser on arbitrary bytes: never panics;
//! whatever parses with no skipped field re-encodes to the same bytes (the
//! encodings are canonical). Then the same bytes through an engine with a
//! ready peer: never panics, and a dropped message changes no table.
#![no_main]
use anytun::sync::msg::Msg;
use anytun::sync::{AllPeers, Config, Engine, Key, Scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((m, 0)) = Msg::parse(data) {
        assert_eq!(m.encode(), data);
    }
    let t0 = 1_700_000_000_000;
    let mut e = Engine::new(Config::new(1, [7; 32]), Box::new(AllPeers), t0);
    e.add_peer(2).expect("one peer");
    e.peer_connected(t0, 2);
    let hello = anytun::sync::msg::Hello {
        node: 2,
        caps: anytun::sync::msg::caps::V1,
        scopes: vec![],
    };
    e.handle_message(t0, 2, &Msg::Hello(hello).encode())
        .expect("hello");
    e.write(t0, Scope(1), Key::new(1, b"k").expect("short"), b"v")
        .expect("write");
    let before = e.digest(Scope(1));
    if e.handle_message(t0, 2, data).is_err() && !matches!(Msg::parse(data), Ok((Msg::Push(_), _)))
    {
        assert_eq!(e.digest(Scope(1)), before);
    }
    while e.poll_transmit().is_some() {}
    while e.poll_event().is_some() {}
    e.handle_timeout(t0 + 1);
});
