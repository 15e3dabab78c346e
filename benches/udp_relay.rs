//! Relay throughput over real UDP sockets on loopback, both in one run:
//!
//! 1. a plain UDP forwarder (batched `recvmmsg`/`sendmmsg`, no crypto, no
//!    state): the machine's limit for this pattern;
//! 2. the anytun proxy runtime relaying voice frames of an answered call
//!    (open, replay check, call lookup, seal for the other party).
//!
//! The same sender (batches of 32) and receiver are used for both; only the
//! middle box differs. `cargo bench --bench udp_relay` runs ~3 s per case
//! (ANYTUN_BENCH_SECS changes it): the sender sends as fast as it can, so
//! the middle box is overloaded on purpose and what it does not keep up with
//! is lost; the figure is the rate DELIVERED to the receiver, and the ratio
//! compares the two boxes.
//!
//! Under `cargo test` it is a smoke run instead, which checks delivery and
//! measures nothing: a few thousand frames paced far below either box's
//! capacity must all arrive through both.

use anytun::call::{Cause, Name};
use anytun::client::{Client, ClientConfig, Event};
use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig, Subscribers};
use anytun::runtime::proxy::ProxyRuntime;
use anytun::runtime::udp::{RecvBatch, SendBatch, UdpEndpoint};
use anytun::runtime::unix_nanos;
use anytun::session::{CallId, ProxyId};
use anytun::wire::MAX_DATAGRAM;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn any_local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Drives a client core over an endpoint for at most `wait`, or until
/// `done` accepts an event (then returns true).
async fn pump(
    ep: &UdpEndpoint,
    c: &mut Client,
    proxy: SocketAddr,
    wait: Duration,
    mut done: impl FnMut(&Event) -> bool,
) -> bool {
    let mut rx = RecvBatch::new(8);
    let mut buf = [0u8; MAX_DATAGRAM];
    let deadline = Instant::now() + wait;
    loop {
        while let Some(n) = c.poll_transmit(&mut buf) {
            ep.send_to(&buf[..n], proxy, None).await.unwrap();
        }
        while let Some(e) = c.poll_event() {
            if done(&e) {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), ep.recv_batch(&mut rx)).await
        {
            for d in rx.iter_mut() {
                c.handle_datagram(Instant::now(), d.data);
            }
        }
        c.handle_timeout(Instant::now(), unix_nanos());
    }
}

/// How a case is run.
#[derive(Clone, Copy)]
enum Mode {
    /// Send as fast as possible for this many seconds; measure the rate
    /// delivered.
    Bench { secs: f64 },
    /// Send every frame, one batch per millisecond, and count what arrives.
    Smoke,
}

/// Frames sent through each box by the smoke run.
const SMOKE_FRAMES: usize = 3200;
/// Pause between batches of 32 in the smoke run: 32 k frames/s, a small
/// fraction of either box's capacity, so nothing should be lost.
const SMOKE_PACE: Duration = Duration::from_millis(1);

/// Sends `packets` to `dst` in batches until done or `stop`, pausing `pace`
/// after each batch; returns the count.
async fn blast(
    ep: &UdpEndpoint,
    dst: SocketAddr,
    packets: &[Vec<u8>],
    stop: &AtomicBool,
    pace: Option<Duration>,
) -> usize {
    let mut b = SendBatch::new(32);
    let mut sent = 0;
    for chunk in packets.chunks(32) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for p in chunk {
            b.push(dst, None, p).unwrap();
        }
        sent += ep.send_batch(&mut b).await.unwrap_or(0);
        if let Some(pace) = pace {
            tokio::time::sleep(pace).await;
        }
    }
    sent
}

/// Counts datagrams until `quiet` passes without one; returns (count, span).
async fn count(ep: &UdpEndpoint, quiet: Duration) -> (usize, Duration) {
    let mut rx = RecvBatch::new(64);
    let mut n = 0;
    let mut first = None;
    let mut last = Instant::now();
    while let Ok(Ok(k)) = tokio::time::timeout(quiet, ep.recv_batch(&mut rx)).await {
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        n += k;
    }
    (n, last.saturating_duration_since(first.unwrap_or(last)))
}

async fn measure(
    sender: Arc<UdpEndpoint>,
    to: SocketAddr,
    receiver: Arc<UdpEndpoint>,
    packets: Arc<Vec<Vec<u8>>>,
    mode: Mode,
) -> (usize, usize, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = tokio::spawn(async move { count(&receiver, Duration::from_millis(300)).await });
    let s = stop.clone();
    let pace = matches!(mode, Mode::Smoke).then_some(SMOKE_PACE);
    let sending = tokio::spawn(async move { blast(&sender, to, &packets, &s, pace).await });
    if let Mode::Bench { secs } = mode {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let sent = sending.await.unwrap();
    let (received, span) = counter.await.unwrap();
    (
        sent,
        received,
        received as f64 / span.as_secs_f64().max(1e-9),
    )
}

async fn plain(packets: Arc<Vec<Vec<u8>>>, mode: Mode) -> (usize, usize, f64) {
    let fwd = Arc::new(UdpEndpoint::bind(any_local()).unwrap());
    let receiver = Arc::new(UdpEndpoint::bind(any_local()).unwrap());
    let sender = Arc::new(UdpEndpoint::bind(any_local()).unwrap());
    let to = receiver.local_addr().unwrap();
    let f = fwd.clone();
    let forwarder = tokio::spawn(async move {
        let mut rx = RecvBatch::new(32);
        let mut tx = SendBatch::new(32);
        loop {
            if f.recv_batch(&mut rx).await.is_err() {
                continue;
            }
            for d in rx.iter_mut() {
                let _ = tx.push(to, None, d.data);
            }
            let _ = f.send_batch(&mut tx).await;
        }
    });
    let r = measure(sender, fwd.local_addr().unwrap(), receiver, packets, mode).await;
    forwarder.abort();
    r
}

async fn anytun_relay(frames: usize, mode: Mode) -> (usize, usize, f64, usize) {
    let network = SecretKey::generate();
    let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
    let name = |s: &str| Name::new(s).unwrap();
    let subs = Subscribers::new([(name("alice"), ka.public()), (name("bob"), kb.public())]);
    let core = Proxy::new(
        ProxyConfig::new(ProxyId::new(1).unwrap(), network.clone()),
        subs,
        Instant::now(),
    );
    core.epochs()
        .grant(anytun::session::EpochLease::ephemeral());
    let proxy = ProxyRuntime::start(core, &[any_local()]).await.unwrap();
    let p = proxy.local_addrs()[0];
    let ea = Arc::new(UdpEndpoint::bind(any_local()).unwrap());
    let eb = Arc::new(UdpEndpoint::bind(any_local()).unwrap());
    let mut a = Client::new(ClientConfig::new(ka, network.public()));
    let mut b = Client::new(ClientConfig::new(kb, network.public()));
    a.connect(Instant::now(), unix_nanos());
    b.connect(Instant::now(), unix_nanos());
    let step = Duration::from_secs(5);
    let settle = Duration::from_millis(200);
    assert!(
        pump(&ea, &mut a, p, step, |e| matches!(
            e,
            Event::Connected { .. }
        ))
        .await
    );
    assert!(
        pump(&eb, &mut b, p, step, |e| matches!(
            e,
            Event::Connected { .. }
        ))
        .await
    );
    b.register(Instant::now(), name("bob"), 300);
    assert!(
        pump(&eb, &mut b, p, step, |e| matches!(
            e,
            Event::Registered { .. }
        ))
        .await
    );
    let call = a
        .call(Instant::now(), name("bob"), None, vec!["ulaw".into()])
        .unwrap();
    pump(&ea, &mut a, p, settle, |_| false).await;
    let mut incoming = CallId(0);
    let rang = pump(&eb, &mut b, p, step, |e| match e {
        Event::IncomingCall { call, .. } => {
            incoming = *call;
            true
        }
        _ => false,
    })
    .await;
    assert!(rang, "bob was not called");
    b.answer(Instant::now(), incoming, "ulaw").unwrap();
    pump(&eb, &mut b, p, settle, |_| false).await;
    assert!(
        pump(&ea, &mut a, p, step, |e| matches!(
            e,
            Event::Answered { .. }
        ))
        .await
    );
    // Seal every frame before timing: the client's cost is not measured.
    let mut buf = [0u8; MAX_DATAGRAM];
    let packets: Vec<Vec<u8>> = (0..frames as u32)
        .map(|seq| {
            let n = a
                .send_voice(Instant::now(), call, seq, seq * 160, &[7; 160], &mut buf)
                .unwrap();
            buf[..n].to_vec()
        })
        .collect();
    let size = packets[0].len();
    let (sent, received, pps) = measure(ea, p, eb, Arc::new(packets), mode).await;
    let _ = a.hangup(Instant::now(), call, Cause::Normal);
    proxy.shutdown();
    (sent, received, pps, size)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let mode = if bench {
        Mode::Bench {
            secs: std::env::var("ANYTUN_BENCH_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3.0),
        }
    } else {
        Mode::Smoke
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let frames = match mode {
            // Enough frames that the sender never runs dry within `secs`.
            Mode::Bench { secs } => ((secs * 1_500_000.0) as usize).max(10_000),
            Mode::Smoke => SMOKE_FRAMES,
        };
        let (a_sent, a_recv, a_pps, size) = anytun_relay(frames, mode).await;
        let packets: Arc<Vec<Vec<u8>>> = Arc::new(vec![vec![0x55; size]; frames]);
        let (p_sent, p_recv, p_pps) = plain(packets, mode).await;
        match mode {
            Mode::Bench { secs } => {
                println!(
                    "udp relay on loopback, {size}-byte datagrams, batches of 32, {secs} s each; \
                     the sender outpaces the box on purpose, so the rate is what was DELIVERED:"
                );
                println!(
                    "  plain UDP forwarder: {p_pps:>10.0} pkt/s delivered ({p_recv} of {p_sent} sent)"
                );
                println!(
                    "  anytun proxy relay:  {a_pps:>10.0} pkt/s delivered ({a_recv} of {a_sent} sent)"
                );
                println!("  anytun / plain:      {:>10.2}", a_pps / p_pps.max(1.0));
                assert!(a_recv > 0 && p_recv > 0, "nothing was relayed");
            }
            Mode::Smoke => {
                println!(
                    "udp relay smoke run (checks delivery, measures nothing; \
                     `cargo bench --bench udp_relay` measures): {size}-byte frames paced at \
                     32 per {} ms: plain forwarder delivered {p_recv} of {p_sent}, \
                     anytun relay delivered {a_recv} of {a_sent}",
                    SMOKE_PACE.as_millis()
                );
                // Paced this slowly, loss means a fault, not load; a little
                // slack keeps a starved test machine from failing the run.
                for (what, sent, recv) in [("plain", p_sent, p_recv), ("anytun", a_sent, a_recv)] {
                    assert_eq!(sent, frames, "{what}: the sender could not send every frame");
                    assert!(
                        recv * 100 >= sent * 95,
                        "{what}: only {recv} of {sent} paced frames arrived"
                    );
                }
            }
        }
    });
}
