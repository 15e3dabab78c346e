//! Arbitrary peer messages (docs/anypsp-protocol.md 15.5) from configured
//! peers into one proxy that holds a session served here and one served by
//! a peer: never panics; a message that does not parse is counted and
//! changes nothing; whatever parses re-encodes to a message that parses the
//! same; the hand-over and peer queues stay within their limits.
#![no_main]
use anytun::crypto::{PublicKey, SecretKey};
use anytun::proxy::replica::MAX_FORWARD_QUEUE;
use anytun::proxy::{PeerMessage, Proxy, ProxyConfig, ProxyEvent, SessionRecord, Subscribers};
use anytun::session::{ProxyId, SessionId, SessionState};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

/// Peer queue bound: forwarded packets plus authenticated peer traffic,
/// drained after every message here, so far below this.
const QUEUE_BOUND: usize = MAX_FORWARD_QUEUE + 8192;

fn record(id: SessionId, serving: u16) -> SessionRecord {
    SessionRecord {
        state: SessionState {
            id,
            client_key: PublicKey([id.raw() as u8; 32]),
            client_to_proxy: [1; 32],
            proxy_to_client: [2; 32],
            client_counter_floor: 7,
            proxy_counter_floors: vec![(ProxyId::new(serving).unwrap(), 5)],
        },
        addr: "[2001:db8::7]:4000".parse().unwrap(),
        local_ip: Some("203.0.113.1".parse().unwrap()),
        serving: ProxyId::new(serving).unwrap(),
        expires_unix_ms: u64::MAX / 2,
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let me = ProxyId::new(1).unwrap();
    let cfg = ProxyConfig::new(me, SecretKey::from_bytes([9; 32]));
    let mut proxy = Proxy::new(cfg, Subscribers::new([]), now);
    proxy
        .epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    proxy.set_peers([2, 3].map(|n| ProxyId::new(n).unwrap()));
    // Small ids, so the fuzzer finds them: one served here, one by peer 2.
    for (home, serving) in [(1, 1), (2, 2)] {
        let id = SessionId::new(ProxyId::new(home).unwrap(), 1);
        let _ = proxy.apply_remote(now, &ProxyEvent::SessionUp(record(id, serving)));
    }
    let mut out = [0u8; 1500];
    let mut rest = data;
    let mut t = now;
    // Each message: 2 bytes of length (big-endian, 11 bits) and peer, then body.
    while rest.len() >= 2 {
        let len = (usize::from(rest[0]) << 3 | usize::from(rest[1] & 7)).min(rest.len() - 2);
        let from = ProxyId::new(2 + u16::from(rest[1] >> 7)).unwrap();
        let msg = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let parsed = PeerMessage::parse(msg);
        if let Some(m) = &parsed {
            assert_eq!(PeerMessage::parse(&m.encode()).as_ref(), Some(m));
        }
        let malformed = proxy.psp_stats().peer_malformed;
        let handed = proxy.handed_unacked();
        let queued = proxy.peer_queue_len();
        let tx = proxy.handle_peer_message(t, from, msg, &mut out);
        if parsed.is_none() {
            assert_eq!(proxy.psp_stats().peer_malformed, malformed + 1);
            assert!(tx.is_none());
            assert_eq!(proxy.handed_unacked(), handed);
            assert_eq!(proxy.peer_queue_len(), queued);
        }
        assert!(proxy.handed_unacked() <= 2 * anytun::proxy::handed::MAX_HANDED_PER_PEER);
        assert!(proxy.peer_queue_len() <= QUEUE_BOUND);
        while proxy.poll_transmit(&mut out).is_some() {}
        while proxy.poll_peer_transmit().is_some() {}
        t += Duration::from_millis(200);
        proxy.handle_timeout(t);
    }
});
