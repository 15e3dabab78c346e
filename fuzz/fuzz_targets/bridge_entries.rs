//! The bridge's entry values and keys (docs/anypsp-protocol.md 16) on
//! arbitrary bytes: the decoders never panic and what decodes re-encodes
//! to a value that decodes the same. Then entries of every scope and kind
//! with arbitrary keys and values, pushed by a peer into a replicator: never
//! panics; an entry whose value does not parse is counted and nothing is
//! applied for it. Last, the same bytes as a raw sync message.
#![no_main]
use anytun::session::{ProxyId, SessionId};
use anytun::sync::bridge::codec::{self, kind, SCOPES};
use anytun::sync::bridge::{Apply, Replicator};
use anytun::sync::msg::{caps, Hello, Msg, Push};
use anytun::sync::{Config, Entry, Key, Stamp, Version};
use libfuzzer_sys::fuzz_target;

const T0: u64 = 1_800_000_000_000;

fn codecs(v: &[u8]) {
    let id = SessionId::new(ProxyId::new(1).unwrap(), 1);
    if let Some(r) = codec::decode_session(id, v) {
        assert_eq!(
            codec::decode_session(id, &codec::encode_session(&r)),
            Some(r)
        );
    }
    if let Some((n, e)) = codec::decode_registration(v) {
        assert_eq!(
            codec::decode_registration(&codec::encode_registration(&n, e)),
            Some((n, e))
        );
    }
    if let Some(h) = codec::decode_call(v) {
        assert_eq!(codec::decode_call(&codec::encode_call(&h)), Some(h));
    }
    if let Some(s) = codec::decode_leg(v) {
        assert_eq!(codec::decode_leg(&codec::encode_leg(s)), Some(s));
    }
    if let Some(ts) = codec::decode_handshake(v) {
        assert_eq!(
            codec::decode_handshake(&codec::encode_handshake(&ts)),
            Some(ts)
        );
    }
    if let Some((n, live)) = codec::decode_subscriber(v) {
        assert_eq!(
            codec::decode_subscriber(&codec::encode_subscriber(&n, live)),
            Some((n, live))
        );
    }
    let key = Key::new(kind::SESSION, &v[..v.len().min(64)]).unwrap();
    let _ = codec::session_of_key(&key);
    let _ = codec::registration_of_key(&key);
    let _ = codec::call_of_key(&key);
    let _ = codec::leg_of_key(&key);
}

fuzz_target!(|data: &[u8]| {
    codecs(data);
    let mut r = Replicator::new(Config::new(1, [9; 32]), T0);
    r.add_peer(2).unwrap();
    r.peer_connected(T0, 2);
    let hello = Hello {
        node: 2,
        caps: caps::V1,
        scopes: vec![],
    };
    r.handle_message(T0, 2, &Msg::Hello(hello).encode())
        .unwrap();
    while r.poll_apply().is_some() {}
    while r.poll_transmit().is_some() {}
    // Each entry: scope and kind (1), key length (1), value length (1:
    // 255 = tombstone), then key and value bytes.
    let mut rest = data;
    let mut logical = 0u32;
    while rest.len() >= 3 {
        let scope = SCOPES[usize::from(rest[0] & 7) % SCOPES.len()];
        let kind = u16::from(rest[0] >> 3) % 8;
        let klen = usize::from(rest[1] % 72).min(rest.len() - 3);
        let key_bytes = &rest[3..3 + klen];
        let after = &rest[3 + klen..];
        let (value, vlen) = match rest[2] {
            255 => (None, 0),
            n => {
                let n = usize::from(n).min(after.len());
                (Some(after[..n].to_vec().into_boxed_slice()), n)
            }
        };
        rest = &after[vlen..];
        let Ok(key) = Key::new(kind, key_bytes) else {
            continue;
        };
        logical += 1;
        let e = Entry {
            key,
            owner: 2,
            stamp: Stamp {
                epoch: 1,
                version: Version {
                    ms: T0,
                    logical,
                    node: 2,
                },
            },
            value,
        };
        let bad = r.stats().bad_entries;
        let push = Msg::Push(Push {
            req: None,
            entries: vec![(scope, e)],
        });
        let _ = r.handle_message(T0, 2, &push.encode());
        let mut applied = Vec::new();
        while let Some(a) = r.poll_apply() {
            applied.push(a);
        }
        while r.poll_transmit().is_some() {}
        if r.stats().bad_entries > bad {
            assert!(
                applied.iter().all(|a| matches!(a, Apply::Resync)),
                "a bad entry was applied: {applied:?}"
            );
        }
    }
    let _ = r.handle_message(T0, 2, data);
    while r.poll_apply().is_some() {}
    r.handle_timeout(T0 + 1);
    while r.poll_transmit().is_some() {}
});
