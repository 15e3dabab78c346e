//! The anypsp peer link on arbitrary bytes: from an unauthenticated
//! stranger (to a responder) and injected into an established link. No
//! panic; nothing but a genuine handshake brings a link up; a stranger gets
//! no more bytes back than it sent; no forged message is delivered; the
//! hello payload and header parsers re-encode what they accept.
#![no_main]
use anytun::crypto::SecretKey;
use anytun::session::ProxyId;
use anytun::sync::link::{Hello, HelloHeader, Link, LinkConfig, LinkEvent, LocalNode};
use anytun::sync::members::{Member, Membership};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

struct Fixture {
    local1: Arc<LocalNode>,
    local2: Arc<LocalNode>,
    member2: Member,
    members2: Arc<Membership>,
}

fn member(n: u16, key: &SecretKey) -> Member {
    Member {
        node: ProxyId::new(n).unwrap(),
        address: "127.0.0.1:7476".parse().unwrap(),
        public_key: key.public(),
        region: String::new(),
        failure_domain: String::new(),
        failover: vec![],
        revoked: false,
    }
}

static FIX: LazyLock<Fixture> = LazyLock::new(|| {
    let k1 = SecretKey::from_bytes([1; 32]);
    let k2 = SecretKey::from_bytes([2; 32]);
    let members2 = Arc::new(Membership::new(member(2, &k2), [member(1, &k1)]).unwrap());
    Fixture {
        member2: member(2, &k2),
        local1: Arc::new(LocalNode {
            id: ProxyId::new(1).unwrap(),
            key: k1,
            instance: 1,
        }),
        local2: Arc::new(LocalNode {
            id: ProxyId::new(2).unwrap(),
            key: k2,
            instance: 2,
        }),
        members2,
    }
});

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Hello::decode(data) {
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
    }
    if let Ok((h, rest)) = HelloHeader::parse(data) {
        assert_eq!(&h.encode()[..], &data[..data.len() - rest.len()]);
    }
    let f = &*FIX;
    let now = Instant::now();
    let cfg = LinkConfig::default();
    // A stranger's bytes, delivered in chunks whose size the input picks.
    let step = data.first().map_or(1, |b| usize::from(*b).max(1));
    let mut r = Link::accept(cfg.clone(), f.local2.clone(), f.members2.clone(), now);
    let mut answered = 0;
    for chunk in data.chunks(step) {
        r.handle_input(chunk, now);
        answered += r.take_output().len();
    }
    assert!(!r.is_up());
    assert!(
        answered <= data.len(),
        "answered {answered} bytes to {}",
        data.len()
    );
    r.handle_eof();
    r.handle_timeout(now + Duration::from_secs(3600));
    assert!(r.closed().is_some());
    // The same bytes injected into an established link.
    let mut a = Link::dial(cfg.clone(), f.local1.clone(), &f.member2, 1, now).unwrap();
    let mut b = Link::accept(cfg, f.local2.clone(), f.members2.clone(), now);
    for _ in 0..3 {
        b.handle_input(&a.take_output(), now);
        a.handle_input(&b.take_output(), now);
    }
    assert!(a.is_up() && b.is_up());
    while b.poll_event().is_some() {}
    for chunk in data.chunks(step) {
        b.handle_input(chunk, now);
    }
    while let Some(ev) = b.poll_event() {
        assert!(
            !matches!(ev, LinkEvent::Message(_) | LinkEvent::Up(_)),
            "forged {ev:?}"
        );
    }
});
