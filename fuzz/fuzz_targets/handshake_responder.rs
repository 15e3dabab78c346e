//! The proxy's handshake responder behind valid MACs: the fuzzer's bytes
//! are XORed into a genuine initiation (or used raw), then MAC1 is fixed up
//! so the Noise responder itself is exercised, not just the MAC check.
#![no_main]
use anytun::call::Name;
use anytun::crypto::mac::NetworkMacs;
use anytun::crypto::SecretKey;
use anytun::handshake::Initiator;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::session::ProxyId;
use anytun::wire::handshake::{INIT_LEN, INIT_MAC1_OFFSET, INIT_MAC2_OFFSET};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let network = SecretKey::from_bytes([9; 32]);
    let client = SecretKey::from_bytes([7; 32]);
    let macs = NetworkMacs::new(&network.public());
    let mut init = [0u8; INIT_LEN];
    if mode & 1 == 0 {
        Initiator::start(
            &client,
            &network.public(),
            &macs,
            1,
            [0; 12],
            None,
            &mut init,
        )
        .expect("initiation");
        for (b, x) in init[8..INIT_MAC1_OFFSET].iter_mut().zip(data) {
            *b ^= x;
        }
    } else {
        init[0] = 1;
        init[1] = 1;
        let n = data.len().min(INIT_MAC1_OFFSET - 4);
        init[4..4 + n].copy_from_slice(&data[..n]);
    }
    let mac1 = macs.mac1(&init[..INIT_MAC1_OFFSET]);
    init[INIT_MAC1_OFFSET..INIT_MAC2_OFFSET].copy_from_slice(&mac1);
    let subs = Subscribers::new([(Name::new("alice").unwrap(), client.public())]);
    let mut proxy = Proxy::new(
        ProxyConfig::new(ProxyId::new(1).unwrap(), network),
        subs,
        Instant::now(),
    );
    proxy
        .epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    let mut out = [0u8; 1500];
    let src = "192.0.2.1:1000".parse().unwrap();
    if let Some(t) = proxy.handle_datagram(Instant::now(), src, None, &mut init, &mut out) {
        assert!(t.len <= INIT_LEN);
    }
});
