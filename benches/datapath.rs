//! Per-packet costs of the data path, single thread, release build.
//!
//! - `aead/*`: seal+open of one 172-byte voice payload with ring (what the
//!   data path uses) and with RustCrypto's chacha20poly1305 (the alternative).
//! - `transport/*`: a full transport packet sealed by a client and opened by
//!   a proxy (header, nonce, replay window).
//! - `proxy/relay_voice`: `Proxy::handle_datagram` on a voice frame of an
//!   answered call: parse, session lookup, replay check, open, call lookup,
//!   seal for the other party. The proxy's whole per-packet work.
//! - `client/send_voice`: a client sealing one frame (end-to-end + transport).

use anytun::session::{CallId, Epochs, ProxyId, SessionCrypto, SessionId};
use anytun::sim::Net;
use anytun::wire::inner::Inner;
use anytun::wire::transport::TransportHeader;
use anytun::wire::MAX_DATAGRAM;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 172;

fn aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("aead");
    g.throughput(Throughput::Elements(1));
    let key = anytun::crypto::DirectionKey::new([7; 32]);
    g.bench_function("ring_seal_open_172B", |b| {
        let mut buf = [0u8; PAYLOAD + 16];
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_be_bytes());
            let tag = key.seal(nonce, b"header", &mut buf[..PAYLOAD]);
            buf[PAYLOAD..].copy_from_slice(&tag);
            black_box(key.open(nonce, b"header", &mut buf).unwrap().len())
        })
    });
    {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let k = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
        g.bench_function("rustcrypto_seal_open_172B", |b| {
            let mut buf = [0u8; PAYLOAD];
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                let tag = k
                    .encrypt_in_place_detached((&nonce).into(), b"header", &mut buf)
                    .unwrap();
                k.decrypt_in_place_detached((&nonce).into(), b"header", &mut buf, &tag)
                    .unwrap();
                black_box(buf[0])
            })
        });
    }
    g.finish();
}

fn transport(c: &mut Criterion) {
    let mut g = c.benchmark_group("transport");
    g.throughput(Throughput::Elements(1));
    let id = SessionId::new(ProxyId::new(1).unwrap(), 9);
    let mut client = SessionCrypto::client(id, [1; 32], [2; 32]);
    let mut proxy = SessionCrypto::proxy(
        id,
        Epochs::ephemeral(ProxyId::new(1).unwrap()).take().unwrap(),
        [1; 32],
        [2; 32],
    );
    let blob = [3u8; PAYLOAD - 9];
    g.bench_function("seal_open_voice_packet", |b| {
        let mut pkt = [0u8; MAX_DATAGRAM];
        b.iter(|| {
            let inner = Inner::Media {
                call: CallId(1),
                e2e: &blob,
            };
            let n = client.seal(&mut pkt, |buf| inner.encode(buf)).unwrap();
            let h = TransportHeader::parse(&pkt[..n]).unwrap();
            black_box(proxy.open(&h, &mut pkt[..n]).unwrap().plaintext.len())
        })
    });
    g.finish();
}

fn proxy_relay(c: &mut Criterion) {
    let mut g = c.benchmark_group("proxy");
    g.throughput(Throughput::Elements(1));
    let mut net = Net::new(&["alice", "bob"]);
    net.connect_all();
    net.register("bob", "bob");
    let call = net.establish_call("alice", "bob");
    let src = net.node("alice").addr;
    let dst_ip = Some(net.proxy_ip());
    // Sealing is the client's cost: done outside the timed region, so the
    // figure is the proxy's work alone.
    g.bench_function("relay_voice", |b| {
        b.iter_custom(|iters| {
            let mut pkts: Vec<Vec<u8>> = (0..iters)
                .map(|i| net.send_voice_unsent("alice", call, i as u32))
                .collect();
            let mut out = [0u8; MAX_DATAGRAM];
            let t = Instant::now();
            for p in &mut pkts {
                let r = net.proxy.handle_datagram(t, src, dst_ip, p, &mut out);
                black_box(r.expect("relayed").len);
            }
            t.elapsed()
        })
    });
    g.bench_function("client_send_voice", |b| {
        let payload = [5u8; 160];
        let now = net.now;
        b.iter_batched_ref(
            || [0u8; MAX_DATAGRAM],
            |out| {
                let alice = &mut net.node("alice").client;
                black_box(alice.send_voice(now, call, 1, 160, &payload, out).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = aead, transport, proxy_relay
}
criterion_main!(benches);
