//! A sequence of arbitrary datagrams into one proxy core, from a few source
//! addresses, with time moving on. Checks the amplification rule: nothing
//! but an authenticated transport packet is ever answered with more bytes
//! than it carried.
#![no_main]
use anytun::call::Name;
use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::session::ProxyId;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let client = SecretKey::from_bytes([7; 32]);
    let subs = Subscribers::new([(Name::new("alice").unwrap(), client.public())]);
    let mut cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), SecretKey::from_bytes([9; 32]));
    cfg.dos.under_load_handshakes_per_s = 2;
    let mut proxy = Proxy::new(cfg, subs, now);
    proxy
        .epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    let mut out = [0u8; 1500];
    let mut rest = data;
    let mut t = now;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]) * 8 + usize::from(rest[1] & 7);
        let src = format!("192.0.2.{}:{}", rest[1] >> 3, 1000)
            .parse()
            .unwrap();
        rest = &rest[2..];
        let mut d = rest[..len.min(rest.len())].to_vec();
        rest = &rest[len.min(rest.len())..];
        let in_len = d.len();
        let is_transport = d.first() == Some(&4);
        if let Some(tx) = proxy.handle_datagram(t, src, None, &mut d, &mut out) {
            if !is_transport {
                assert!(tx.len <= in_len, "answered {in_len} bytes with {}", tx.len);
            }
        }
        while proxy.poll_transmit(&mut out).is_some() {}
        t += Duration::from_millis(300);
        proxy.handle_timeout(t);
    }
});
