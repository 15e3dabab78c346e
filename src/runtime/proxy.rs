//! Runs a proxy core on UDP sockets.
//!
//! One task per socket receives a batch (one `recvmmsg`), runs the whole
//! batch through the core under one lock, and sends the answers with one
//! `sendmmsg` per socket. A timer task runs the core's timers and drains what
//! they queue. The core sits behind a mutex taken once per batch, not per
//! packet, and held for a bounded amount of work: one receive batch, or
//! [`TIMER_SESSIONS`] sessions' retransmissions.
//!
//! Metrics never take the core lock: whoever holds it publishes a
//! [`Snapshot`] of the counters to the runtime's [`Metrics`] board before
//! releasing it, and a scrape reads that.

use super::udp::{BindOptions, RecvBatch, SendBatch, UdpEndpoint};
use super::RuntimeError;
use crate::metrics::{Metrics, Snapshot};
use crate::proxy::{Proxy, Transmit};
use crate::session::ProxyId;
use crate::wire::{DropReason, MAX_DATAGRAM};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Datagrams per receive syscall.
const RECV_BATCH: usize = 32;
/// Room for answers per socket per batch: one per datagram plus control
/// fan-out; anything beyond goes out one by one.
const SEND_BATCH: usize = 96;
/// Most sessions whose due retransmissions one timer round serves under the
/// lock (each at most `MAX_PENDING` messages); then the lock is released and
/// the round's datagrams sent before the next round.
const TIMER_SESSIONS: usize = 64;

/// Runs after every lock hold of the core, before the lock is released:
/// drains what the core queued for others (events, peer messages).
pub type AfterLock = Box<dyn Fn(&mut Proxy) + Send + Sync>;

/// A proxy core behind its lock, shared by the UDP tasks, the timer task
/// and whoever else drives it (the anypsp sync task). It can exist before
/// the proxy serves UDP, so that a restarting proxy fills its tables from
/// its peers first.
pub struct SharedCore {
    core: Mutex<Proxy>,
    /// Counters as of the last time someone held `core`, and whatever the
    /// other shells (sync, readiness) put there.
    metrics: Arc<Metrics>,
    /// Wakes the timer task: a deadline may have moved earlier.
    wake: Notify,
    after: Option<AfterLock>,
}

impl SharedCore {
    /// Wraps `core`; `after` (if any) runs at the end of every lock hold.
    pub fn new(core: Proxy, after: Option<AfterLock>) -> Arc<Self> {
        let metrics = Metrics::new(core.epochs().me().get());
        metrics.publish(Snapshot::of(&core));
        Arc::new(Self {
            metrics: Arc::new(metrics),
            core: Mutex::new(core),
            wake: Notify::new(),
            after,
        })
    }

    /// Runs `f` on the core, then the after-lock hook, publishes the
    /// counters, and lets the timer task send whatever `f` queued.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Proxy) -> R) -> R {
        let r = {
            let mut core = lock(&self.core);
            let r = f(&mut core);
            self.release(&mut core);
            r
        };
        self.wake.notify_one();
        r
    }

    /// The proxy's counters as of the last lock hold, without taking the
    /// core lock.
    pub fn snapshot(&self) -> Snapshot {
        self.metrics.snapshot()
    }

    /// The board the core's counters are published to (serve it with
    /// [`metrics::http::serve`](crate::metrics::http::serve); the node
    /// sets the sync state and readiness on it).
    pub fn metrics_board(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// What every lock hold ends with, the core still locked.
    fn release(&self, core: &mut Proxy) {
        if let Some(after) = &self.after {
            after(core);
        }
        self.metrics.publish(Snapshot::of(core));
    }
}

struct Shared {
    core: Arc<SharedCore>,
    endpoints: Vec<UdpEndpoint>,
    /// The endpoints' bound addresses, read once at start.
    addrs: Vec<SocketAddr>,
}

/// UDP sockets bound for a proxy that does not serve yet: binding first
/// lets a daemon refuse a taken port before it creates a key or leases send
/// epochs (spec 8.8).
pub struct BoundSockets {
    endpoints: Vec<UdpEndpoint>,
    addrs: Vec<SocketAddr>,
}

impl BoundSockets {
    /// Binds every address in `listen` with `opts`. A port in use is
    /// [`RuntimeError::Bind`] with an `AddrInUse` source. Must be called
    /// inside a tokio runtime.
    pub fn bind(listen: &[SocketAddr], opts: BindOptions) -> Result<Self, RuntimeError> {
        let mut endpoints = Vec::new();
        let mut addrs = Vec::new();
        for &addr in listen {
            let bind_err = |source| RuntimeError::Bind { addr, source };
            let ep = UdpEndpoint::bind_with(addr, opts).map_err(bind_err)?;
            addrs.push(ep.local_addr().map_err(bind_err)?);
            endpoints.push(ep);
        }
        Ok(Self { endpoints, addrs })
    }

    /// The bound addresses (with real ports where port 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// A proxy running on sockets.
pub struct ProxyRuntime {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl ProxyRuntime {
    /// Binds every address in `listen` (sharing no port) and starts serving.
    pub async fn start(core: Proxy, listen: &[SocketAddr]) -> Result<Self, RuntimeError> {
        Self::start_with(core, listen, BindOptions::default()).await
    }

    /// Binds every address in `listen` with `opts` and starts serving. A
    /// port in use is [`RuntimeError::Bind`] with an `AddrInUse` source.
    pub async fn start_with(
        core: Proxy,
        listen: &[SocketAddr],
        opts: BindOptions,
    ) -> Result<Self, RuntimeError> {
        Ok(Self::serve(core, BoundSockets::bind(listen, opts)?))
    }

    /// Starts serving `core` on sockets bound beforehand (so that a daemon
    /// can refuse a taken port before it writes any state). Must be called
    /// inside a tokio runtime.
    pub fn serve(core: Proxy, sockets: BoundSockets) -> Self {
        Self::serve_shared(SharedCore::new(core, None), sockets)
    }

    /// Starts serving a core shared with other tasks (see [`SharedCore`]).
    /// Must be called inside a tokio runtime.
    pub fn serve_shared(core: Arc<SharedCore>, sockets: BoundSockets) -> Self {
        let BoundSockets { endpoints, addrs } = sockets;
        let shared = Arc::new(Shared {
            core,
            endpoints,
            addrs,
        });
        let mut tasks = Vec::new();
        for i in 0..shared.endpoints.len() {
            tasks.push(tokio::spawn(serve(shared.clone(), i)));
        }
        tasks.push(tokio::spawn(timers(shared.clone())));
        Self { shared, tasks }
    }

    /// The bound addresses (with real ports where port 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared.addrs.clone()
    }

    /// Runs `f` on the core (for stats, subscriber updates, status), then
    /// lets the timer task send whatever `f` queued.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Proxy) -> R) -> R {
        self.shared.core.with_core(f)
    }

    /// The core shared with this runtime's tasks.
    pub fn core(&self) -> &Arc<SharedCore> {
        &self.shared.core
    }

    /// Handles messages from peer proxies (`Proxy::handle_peer_message`)
    /// under one lock hold, and sends the datagrams they cause to clients.
    pub async fn handle_peer_messages(&self, msgs: &[(ProxyId, Vec<u8>)]) {
        let shared = &self.shared;
        let mut outbox = Outbox::new(shared);
        let moved_earlier = {
            let mut core = lock(&shared.core.core);
            let before = core.poll_timeout();
            let now = Instant::now();
            for (from, bytes) in msgs {
                if let Some(t) = core.handle_peer_message(now, *from, bytes, &mut outbox.out) {
                    outbox.queue(shared, t);
                }
                outbox.drain(shared, &mut core);
            }
            shared.core.release(&mut core);
            core.poll_timeout() < before
        };
        if moved_earlier {
            shared.core.wake.notify_one();
        }
        outbox.flush(shared).await;
    }

    /// The proxy's counters and gauges in the Prometheus text format, as of
    /// the last batch or timer run. Does not take the core lock: a scrape
    /// never waits for (or delays) the data path.
    pub fn metrics(&self) -> String {
        self.shared.core.metrics.render()
    }

    /// The board this runtime publishes to: serve it with
    /// [`metrics::http::serve`](crate::metrics::http::serve), and set the
    /// sync state and readiness on it.
    pub fn metrics_board(&self) -> Arc<Metrics> {
        self.shared.core.metrics_board()
    }

    /// The proxy's counters and gauges as of the last batch or timer run,
    /// without taking the core lock.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.core.snapshot()
    }

    /// Stops every task.
    pub fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug in the core; keep
    // serving with the state as it is rather than take the proxy down.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which socket a datagram leaves from: same family as its destination, and
/// the one bound to its source address if there is one. Per packet: a scan
/// of a handful of cached addresses, no syscall, no allocation.
fn pick(addrs: &[SocketAddr], t: &Transmit) -> Option<usize> {
    let family_ok = |a: &SocketAddr| a.is_ipv4() == t.dst.is_ipv4();
    let exact = addrs
        .iter()
        .position(|a| family_ok(a) && Some(a.ip()) == t.src_ip);
    exact.or_else(|| addrs.iter().position(family_ok))
}

/// The source address to set: none if it is unspecified or of the other
/// family (the kernel then picks).
fn source(t: &Transmit) -> Option<IpAddr> {
    t.src_ip
        .filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == t.dst.is_ipv4())
}

/// What one task is about to send: a batch per socket, allocated once, and
/// an overflow list for the rare burst beyond a batch (control fan-out).
struct Outbox {
    batches: Vec<SendBatch>,
    overflow: Vec<(usize, Transmit, Vec<u8>)>,
    /// The buffer the core writes each datagram into.
    out: Vec<u8>,
}

impl Outbox {
    fn new(shared: &Shared) -> Self {
        Self {
            batches: shared
                .endpoints
                .iter()
                .map(|_| SendBatch::new(SEND_BATCH))
                .collect(),
            overflow: Vec::new(),
            out: vec![0u8; MAX_DATAGRAM],
        }
    }

    /// Queues `t`, whose bytes the core just wrote into `self.out`.
    fn queue(&mut self, shared: &Shared, t: Transmit) {
        let Some(i) = pick(&shared.addrs, &t) else {
            log::debug!("no socket can reach {}", t.dst);
            return;
        };
        let data = &self.out[..t.len];
        if self.batches[i].push(t.dst, source(&t), data).is_err() {
            self.overflow.push((i, t, data.to_vec()));
        }
    }

    /// Everything the core has queued, after whatever it just returned.
    fn drain(&mut self, shared: &Shared, core: &mut Proxy) {
        while let Some(t) = core.poll_transmit(&mut self.out) {
            self.queue(shared, t);
        }
    }

    /// One `sendmmsg` per socket, then the overflow one by one.
    async fn flush(&mut self, shared: &Shared) {
        for (i, b) in self.batches.iter_mut().enumerate() {
            if !b.is_empty() {
                if let Err(e) = shared.endpoints[i].send_batch(b).await {
                    log::warn!("send failed: {e}");
                }
            }
        }
        for (i, t, data) in self.overflow.drain(..) {
            if let Err(e) = shared.endpoints[i].send_to(&data, t.dst, source(&t)).await {
                log::debug!("send to {} failed: {e}", t.dst);
            }
        }
    }
}

async fn serve(shared: Arc<Shared>, i: usize) {
    let mut rx = RecvBatch::new(RECV_BATCH);
    let mut outbox = Outbox::new(&shared);
    let mut truncated = 0;
    loop {
        if let Err(e) = shared.endpoints[i].recv_batch(&mut rx).await {
            log::error!("receive failed: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        }
        let moved_earlier = {
            let mut core = lock(&shared.core.core);
            // Datagrams larger than the receive buffer never reach the core
            // (they would arrive cut short); it counts them all the same.
            for _ in truncated..rx.truncated() {
                core.count_drop(DropReason::Oversized);
            }
            truncated = rx.truncated();
            let before = core.poll_timeout();
            let now = Instant::now();
            for d in rx.iter_mut() {
                if let Some(t) = core.handle_datagram(now, d.src, d.dst, d.data, &mut outbox.out) {
                    outbox.queue(&shared, t);
                }
                outbox.drain(&shared, &mut core);
            }
            shared.core.release(&mut core);
            core.poll_timeout() < before
        };
        // The timer task sleeps until the deadline it last saw; wake it only
        // if this batch made the next one earlier (a new retransmission),
        // not on every voice batch.
        if moved_earlier {
            shared.core.wake.notify_one();
        }
        outbox.flush(&shared).await;
    }
}

async fn timers(shared: Arc<Shared>) {
    let mut outbox = Outbox::new(&shared);
    loop {
        let deadline = lock(&shared.core.core).poll_timeout();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = shared.core.wake.notified() => {}
        }
        // Rounds of bounded work: a burst of due retransmissions never
        // holds the lock for long, and its datagrams leave between rounds.
        let now = Instant::now();
        let unix = super::unix_nanos();
        loop {
            let more = {
                let mut core = lock(&shared.core.core);
                // Follow steps of the system clock (NTP at boot) for handshake
                // timestamps; the replay floor never moves back.
                core.set_wall_clock(now, unix);
                let more = core.handle_timeout_limited(now, TIMER_SESSIONS);
                outbox.drain(&shared, &mut core);
                shared.core.release(&mut core);
                more
            };
            outbox.flush(&shared).await;
            if !more {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::proxy::{ProxyConfig, Subscribers};
    use crate::session::ProxyId;
    use crate::wire::DropReason;
    use std::time::Duration;

    async fn start() -> ProxyRuntime {
        let cfg = ProxyConfig::new(ProxyId::new(1).unwrap(), SecretKey::generate());
        let core = Proxy::new(cfg, Subscribers::default(), Instant::now());
        ProxyRuntime::start(core, &["127.0.0.1:0".parse().unwrap()])
            .await
            .unwrap()
    }

    /// Polls `f` until it holds, for at most 5 s.
    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn datagram_larger_than_the_receive_buffer_is_counted() {
        let rt = start().await;
        let to = rt.local_addrs()[0];
        let oversized = || rt.with_core(|p| p.stats().drops.get(DropReason::Oversized));
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Beyond the socket layer's buffer: truncated by the kernel, must not
        // reach the core cut short, must be counted.
        sock.send_to(&[4u8; 3000], to).await.unwrap();
        assert!(eventually(|| oversized() == 1).await, "not counted");
        assert_eq!(rt.with_core(|p| p.stats().packets_in), 0);
        // Beyond the protocol's limit but within the buffer: the core
        // counts it under the same reason.
        sock.send_to(&[4u8; MAX_DATAGRAM + 1], to).await.unwrap();
        assert!(eventually(|| oversized() == 2).await, "not counted");
        rt.shutdown();
    }

    #[test]
    fn a_scrape_does_not_wait_for_the_core_lock() {
        let tokio_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let rt = Arc::new(tokio_rt.block_on(start()));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let rt = rt.clone();
            std::thread::spawn(move || {
                rt.with_core(|_| {
                    held_tx.send(()).unwrap();
                    let _ = release_rx.recv_timeout(Duration::from_secs(10));
                })
            })
        };
        held_rx.recv().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let scraper = {
            let rt = rt.clone();
            std::thread::spawn(move || done_tx.send(rt.metrics()).unwrap())
        };
        let scraped = done_rx.recv_timeout(Duration::from_secs(2));
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        scraper.join().unwrap();
        let text = scraped.expect("the scrape waited for the core lock");
        assert!(text.contains("anytun_sessions 0\n"), "{text}");
    }
}
