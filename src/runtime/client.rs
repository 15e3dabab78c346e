//! Runs a client core against one proxy address.
//!
//! A driver task owns the socket's receive side and the timers; the
//! application calls async methods on [`ClientRuntime`]. Voice frames go to a
//! callback straight from the receive buffer; everything else arrives as
//! [`Event`]s on a channel.

use super::udp::{RecvBatch, UdpEndpoint};
use super::{unix_nanos, RuntimeError};
use crate::call::{Cause, Name};
use crate::client::{Client, ClientConfig, ClientError, Event, VoiceFrame};
use crate::session::CallId;
use crate::wire::{DropCounters, MAX_DATAGRAM};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// Called for every received voice frame, on the driver task.
pub type VoiceSink = Box<dyn FnMut(&VoiceFrame<'_>) + Send>;

struct Shared {
    client: Mutex<Client>,
    socket: Mutex<Arc<UdpEndpoint>>,
    proxy: SocketAddr,
    wake: Notify,
    /// Datagrams from any address but the proxy's (dropped).
    wrong_source: AtomicU64,
}

/// A client connected (or connecting) to a proxy.
pub struct ClientRuntime {
    shared: Arc<Shared>,
    driver: JoinHandle<()>,
}

fn bind_for(proxy: SocketAddr) -> Result<UdpEndpoint, RuntimeError> {
    let addr: SocketAddr = if proxy.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    UdpEndpoint::bind(addr).map_err(|source| RuntimeError::Bind { addr, source })
}

impl ClientRuntime {
    /// Binds a socket, starts the handshake with `proxy` and returns the
    /// runtime and its event stream.
    pub fn start(
        cfg: ClientConfig,
        proxy: SocketAddr,
        on_voice: VoiceSink,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), RuntimeError> {
        let socket = Arc::new(bind_for(proxy)?);
        let mut client = Client::new(cfg);
        client.connect(Instant::now(), unix_nanos());
        let shared = Arc::new(Shared {
            client: Mutex::new(client),
            socket: Mutex::new(socket),
            proxy,
            wake: Notify::new(),
            wrong_source: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(shared.clone(), tx, on_voice));
        Ok((Self { shared, driver }, rx))
    }

    fn client(&self) -> MutexGuard<'_, Client> {
        self.shared.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The local socket address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        socket(&self.shared).local_addr().ok()
    }

    /// Packets the client core dropped, per reason.
    pub fn drops(&self) -> DropCounters {
        self.client().drops().clone()
    }

    /// Datagrams dropped because they did not come from the proxy address.
    pub fn wrong_source(&self) -> u64 {
        self.shared.wrong_source.load(Ordering::Relaxed)
    }

    /// Runs `f` on the core, then sends what it queued.
    async fn act<R>(&self, f: impl FnOnce(&mut Client, Instant) -> R) -> R {
        let (r, pkts) = {
            let mut c = self.client();
            let r = f(&mut c, Instant::now());
            (r, drain(&mut c))
        };
        send_all(&self.shared, pkts).await;
        self.shared.wake.notify_one();
        r
    }

    /// Restarts the handshake (after a [`Event::Disconnected`]).
    pub async fn reconnect(&self) {
        self.act(|c, now| c.connect(now, unix_nanos())).await
    }

    /// Registers a name and keeps it refreshed.
    pub async fn register(&self, name: Name, expires_s: u32) {
        self.act(|c, now| c.register(now, name, expires_s)).await
    }

    /// Places a call.
    pub async fn call(
        &self,
        to: Name,
        from: Option<Name>,
        codecs: Vec<String>,
    ) -> Result<CallId, ClientError> {
        self.act(|c, now| c.call(now, to, from, codecs)).await
    }

    /// Answers an incoming call.
    pub async fn answer(&self, call: CallId, codec: &str) -> Result<(), ClientError> {
        self.act(|c, now| c.answer(now, call, codec)).await
    }

    /// Refuses an incoming call.
    pub async fn reject(&self, call: CallId, cause: Cause) -> Result<(), ClientError> {
        self.act(|c, now| c.reject(now, call, cause)).await
    }

    /// Ends a call.
    pub async fn hangup(&self, call: CallId, cause: Cause) -> Result<(), ClientError> {
        self.act(|c, now| c.hangup(now, call, cause)).await
    }

    /// Sends a DTMF digit.
    pub async fn send_dtmf(&self, call: CallId, digit: char, ms: u16) -> Result<(), ClientError> {
        self.act(|c, now| c.send_dtmf(now, call, digit, ms)).await
    }

    /// Sends one voice frame. The data path: sealed into a stack buffer,
    /// one send, no allocation.
    pub async fn send_voice(
        &self,
        call: CallId,
        seq: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n =
            self.client()
                .send_voice(Instant::now(), call, seq, timestamp, payload, &mut buf)?;
        let sock = socket(&self.shared);
        if let Err(e) = sock.send_to(&buf[..n], self.shared.proxy, None).await {
            log::debug!("voice send failed: {e}");
        }
        Ok(())
    }

    /// Moves to a new socket with a new local port, as a NAT rebinding
    /// would. The session and its calls carry on: the proxy learns the new
    /// address from the next authenticated packet.
    pub async fn rebind(&self) -> Result<SocketAddr, RuntimeError> {
        let new = Arc::new(bind_for(self.shared.proxy)?);
        let addr = new.local_addr().map_err(|source| RuntimeError::Bind {
            addr: self.shared.proxy,
            source,
        })?;
        *self.shared.socket.lock().unwrap_or_else(|e| e.into_inner()) = new;
        self.shared.wake.notify_one();
        Ok(addr)
    }

    /// Ends every call and removes every registration
    /// ([`Client::shutdown`]), then waits until the proxy has acknowledged
    /// all of it (the driver retransmits meanwhile), at most `wait`.
    /// Returns false if something was still unacknowledged then. Every way
    /// a client application stops should go through this, so that no call
    /// and no registration outlives it at the proxy.
    pub async fn close(&self, wait: Duration) -> bool {
        self.act(|c, now| c.shutdown(now)).await;
        let deadline = Instant::now() + wait;
        loop {
            if self.client().pending_control() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // The driver does the retransmitting; this only watches.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the driver task.
    pub fn shutdown(self) {
        self.driver.abort();
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn socket(shared: &Shared) -> Arc<UdpEndpoint> {
    shared
        .socket
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn drain(c: &mut Client) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_DATAGRAM];
    while let Some(n) = c.poll_transmit(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

async fn send_all(shared: &Shared, pkts: Vec<Vec<u8>>) {
    if pkts.is_empty() {
        return;
    }
    let sock = socket(shared);
    for p in pkts {
        if let Err(e) = sock.send_to(&p, shared.proxy, None).await {
            log::debug!("send to proxy failed: {e}");
        }
    }
}

async fn drive(shared: Arc<Shared>, events: mpsc::UnboundedSender<Event>, mut on_voice: VoiceSink) {
    let mut rx = RecvBatch::new(32);
    loop {
        // Send what the core queued (the first initiation, answers to what
        // was just received) and hand over events before waiting again.
        let (pkts, evs) = {
            let mut c = shared.client.lock().unwrap_or_else(|e| e.into_inner());
            let pkts = drain(&mut c);
            let mut evs = Vec::new();
            while let Some(e) = c.poll_event() {
                evs.push(e);
            }
            (pkts, evs)
        };
        send_all(&shared, pkts).await;
        for e in evs {
            let _ = events.send(e);
        }
        let sock = socket(&shared);
        let deadline = {
            let c = shared.client.lock().unwrap_or_else(|e| e.into_inner());
            c.poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
        };
        tokio::select! {
            r = sock.recv_batch(&mut rx) => {
                if let Err(e) = r {
                    log::warn!("receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let now = Instant::now();
                // One lock per batch, not per datagram.
                let mut client = shared.client.lock().unwrap_or_else(|e| e.into_inner());
                for d in rx.iter_mut() {
                    // Replies must come from the exact address we sent to
                    // (the anycast address): anything else is not our proxy.
                    if d.src != shared.proxy {
                        shared.wrong_source.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if let Some(f) = client.handle_datagram(now, d.data) {
                        on_voice(&f);
                    }
                    // Voice that came before its call's Answer.
                    while let Some(h) = client.poll_held_voice() {
                        on_voice(&h.as_frame());
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                shared
                    .client
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .handle_timeout(Instant::now(), unix_nanos());
            }
            _ = shared.wake.notified() => {}
        }
    }
}
