//! Runs a proxy core on UDP sockets.
//!
//! One task per socket receives a batch (one `recvmmsg`), runs the whole
//! batch through the core under one lock, and sends the answers with one
//! `sendmmsg` per socket. A timer task runs the core's timers and drains what
//! they queue. The core sits behind a mutex taken once per batch, not per
//! packet.

use super::udp::{BindOptions, RecvBatch, SendBatch, UdpEndpoint};
use super::RuntimeError;
use crate::proxy::{Proxy, Transmit};
use crate::wire::MAX_DATAGRAM;
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

struct Shared {
    core: Mutex<Proxy>,
    endpoints: Vec<UdpEndpoint>,
    /// The endpoints' bound addresses, read once at start.
    addrs: Vec<SocketAddr>,
    wake: Notify,
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
        let mut endpoints = Vec::new();
        let mut addrs = Vec::new();
        for &addr in listen {
            let bind_err = |source| RuntimeError::Bind { addr, source };
            let ep = UdpEndpoint::bind_with(addr, opts).map_err(bind_err)?;
            addrs.push(ep.local_addr().map_err(bind_err)?);
            endpoints.push(ep);
        }
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            endpoints,
            addrs,
            wake: Notify::new(),
        });
        let mut tasks = Vec::new();
        for i in 0..shared.endpoints.len() {
            tasks.push(tokio::spawn(serve(shared.clone(), i)));
        }
        tasks.push(tokio::spawn(timers(shared.clone())));
        Ok(Self { shared, tasks })
    }

    /// The bound addresses (with real ports where port 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared.addrs.clone()
    }

    /// Runs `f` on the core (for stats, subscriber updates, status), then
    /// lets the timer task send whatever `f` queued.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Proxy) -> R) -> R {
        let r = f(&mut lock(&self.shared.core));
        self.shared.wake.notify_one();
        r
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

fn lock(m: &Mutex<Proxy>) -> MutexGuard<'_, Proxy> {
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
    loop {
        if let Err(e) = shared.endpoints[i].recv_batch(&mut rx).await {
            log::error!("receive failed: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        }
        let moved_earlier = {
            let mut core = lock(&shared.core);
            let before = core.poll_timeout();
            let now = Instant::now();
            for d in rx.iter_mut() {
                if let Some(t) = core.handle_datagram(now, d.src, d.dst, d.data, &mut outbox.out) {
                    outbox.queue(&shared, t);
                }
                outbox.drain(&shared, &mut core);
            }
            core.poll_timeout() < before
        };
        // The timer task sleeps until the deadline it last saw; wake it only
        // if this batch made the next one earlier (a new retransmission),
        // not on every voice batch.
        if moved_earlier {
            shared.wake.notify_one();
        }
        outbox.flush(&shared).await;
    }
}

async fn timers(shared: Arc<Shared>) {
    let mut outbox = Outbox::new(&shared);
    loop {
        let deadline = lock(&shared.core).poll_timeout();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = shared.wake.notified() => {}
        }
        {
            let mut core = lock(&shared.core);
            let now = Instant::now();
            // Follow steps of the system clock (NTP at boot) for handshake
            // timestamps; the replay floor never moves back.
            core.set_wall_clock(now, super::unix_nanos());
            core.handle_timeout(now);
            outbox.drain(&shared, &mut core);
        }
        outbox.flush(&shared).await;
    }
}
