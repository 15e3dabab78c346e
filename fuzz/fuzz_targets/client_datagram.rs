//! Arbitrary datagrams into a client core that is waiting for its handshake
//! answer, then its timers.
#![no_main]
use anytun::client::{Client, ClientConfig};
use anytun::crypto::SecretKey;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let network = SecretKey::from_bytes([9; 32]).public();
    let mut c = Client::new(ClientConfig::new(SecretKey::from_bytes([7; 32]), network));
    c.connect(now, 1);
    let mut out = [0u8; 1500];
    while c.poll_transmit(&mut out).is_some() {}
    for chunk in data.split(|b| *b == 0xA5) {
        let mut d = chunk.to_vec();
        let _ = c.handle_datagram(now, &mut d);
        while c.poll_event().is_some() {}
    }
    c.handle_timeout(now + Duration::from_secs(2), 2);
    while c.poll_transmit(&mut out).is_some() {}
});
