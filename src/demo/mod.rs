//! `anytun demo`: the whole system on loopback with built-in defaults.
//!
//! Starts a proxy and two clients (alice and bob) over real UDP sockets,
//! registers both names from a subscriber store, places a call from alice to
//! bob, sends generated audio both ways for a few seconds, and checks every
//! frame that arrived sample for sample against what was sent.

pub mod failover;

use crate::audio::{test_signal, Codec, SAMPLE_RATE};
use crate::call::{Cause, Name};
use crate::client::{ClientConfig, ClientError, Event};
use crate::crypto::SecretKey;
use crate::media::{self, Comparison, Recording};
use crate::proxy::{Proxy, ProxyConfig};
use crate::runtime::client::ClientRuntime;
use crate::runtime::proxy::ProxyRuntime;
use crate::runtime::RuntimeError;
use crate::session::{EpochLease, ProxyId};
use crate::store::{StoreError, SubscriberStore};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

pub mod lab;

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Seconds of audio each way.
    pub seconds: f64,
    /// Codec to answer with.
    pub codec: Codec,
    /// Where the proxy listens (port 0: any free port).
    pub listen: SocketAddr,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            seconds: 5.0,
            codec: Codec::Ulaw,
            listen: "127.0.0.1:0".parse().expect("literal"),
        }
    }
}

/// What the demo measured. Serialised as the `--json` output.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DemoReport {
    /// Every check passed.
    pub ok: bool,
    /// Proxies that took part.
    pub proxies: u32,
    /// Calls answered.
    pub calls: u32,
    /// Voice frames sent, both directions.
    pub frames_sent: u64,
    /// Voice frames received, both directions.
    pub frames_received: u64,
    /// Frames sent but never received.
    pub frames_lost: u64,
    /// Frames received with different samples than sent.
    pub frames_corrupted: u64,
    /// From Invite sent to Answer received, milliseconds to the microsecond
    /// (at most 3 decimals).
    pub setup_ms: f64,
    /// Median one-way latency (send call to receive callback), microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile one-way latency, microseconds.
    pub latency_p99_us: u64,
    /// The codec of the call.
    pub codec: String,
    /// Seconds of audio each way.
    pub audio_seconds: f64,
    /// Frames the proxy relayed.
    pub proxy_frames_relayed: u64,
    /// Packets the proxy dropped (any reason).
    pub proxy_drops: u64,
    /// Why `ok` is false, if it is.
    pub failures: Vec<String>,
    /// The lab demo only: what killing the serving proxy did to the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<failover::Failover>,
}

/// Why the demo could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A socket could not be bound.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The subscriber store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A client failed.
    #[error("{who}: {source}")]
    Client {
        /// Which client.
        who: &'static str,
        /// What failed.
        source: ClientError,
    },
    /// An expected event did not come.
    #[error("{who}: timed out after {secs} s waiting for {what}")]
    Timeout {
        /// Which client.
        who: &'static str,
        /// What it waited for.
        what: &'static str,
        /// How long.
        secs: u64,
    },
    /// The demo's own audio could not be encoded.
    #[error("codec: {0}")]
    Codec(#[from] crate::audio::CodecError),
}

const WAIT: Duration = Duration::from_secs(10);

/// Waits for the first event `f` accepts; a disconnect is an error.
async fn wait_for<T>(
    who: &'static str,
    what: &'static str,
    rx: &mut UnboundedReceiver<Event>,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> Result<T, DemoError> {
    let timeout = DemoError::Timeout {
        who,
        what,
        secs: WAIT.as_secs(),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv()).await;
        match ev {
            Err(_) | Ok(None) => return Err(timeout),
            Ok(Some(Event::Disconnected(source))) => return Err(DemoError::Client { who, source }),
            Ok(Some(e)) => {
                if let Some(t) = f(&e) {
                    return Ok(t);
                }
            }
        }
    }
}

fn client_err(who: &'static str) -> impl Fn(ClientError) -> DemoError {
    move |source| DemoError::Client { who, source }
}

type Shared<T> = Arc<Mutex<T>>;

fn recorder(rec: &Shared<Recording>) -> crate::runtime::client::VoiceSink {
    let rec = rec.clone();
    Box::new(move |f| {
        let now = Instant::now();
        rec.lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_frame(f, now);
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the demo and reports what it measured.
pub async fn run(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    let network = SecretKey::generate();
    let alice_key = SecretKey::generate();
    let bob_key = SecretKey::generate();
    let store = SubscriberStore::open_in_memory()?;
    store.add("alice", &alice_key.public().0)?;
    store.add("bob", &bob_key.public().0)?;

    let proxy_id = ProxyId::new(1).expect("1 is a valid proxy id");
    let core = Proxy::new(
        ProxyConfig::new(proxy_id, network.clone()),
        store.snapshot()?,
        Instant::now(),
    );
    // The demo's proxy never imports a session: any epoch is safe for it.
    core.epochs().grant(EpochLease::ephemeral());
    let proxy = ProxyRuntime::start(core, &[opts.listen]).await?;
    let proxy_addr = proxy.local_addrs()[0];

    let frames = ((opts.seconds * f64::from(SAMPLE_RATE)) as usize).div_ceil(160);
    let rec_at_bob = Arc::new(Mutex::new(Recording::new(opts.codec.clone(), frames)));
    let rec_at_alice = Arc::new(Mutex::new(Recording::new(opts.codec.clone(), frames)));
    let (alice, mut alice_ev) = ClientRuntime::start(
        ClientConfig::new(alice_key, network.public()),
        proxy_addr,
        recorder(&rec_at_alice),
    )?;
    let (bob, mut bob_ev) = ClientRuntime::start(
        ClientConfig::new(bob_key, network.public()),
        proxy_addr,
        recorder(&rec_at_bob),
    )?;
    for (who, rx) in [("alice", &mut alice_ev), ("bob", &mut bob_ev)] {
        wait_for(who, "the session", rx, |e| {
            matches!(e, Event::Connected { .. }).then_some(())
        })
        .await?;
    }
    let bob_name = Name::new("bob").expect("valid");
    bob.register(bob_name.clone(), 300).await;
    wait_for("bob", "registration", &mut bob_ev, |e| {
        matches!(e, Event::Registered { .. }).then_some(())
    })
    .await?;

    // Offer the chosen codec first, then the others it can fall back to.
    let mut offer = vec![opts.codec.name().to_owned()];
    for c in ["ulaw", "alaw", "slin"] {
        if !offer.iter().any(|o| o == c) {
            offer.push(c.to_owned());
        }
    }
    let t0 = Instant::now();
    let call = alice
        .call(bob_name, None, offer)
        .await
        .map_err(client_err("alice"))?;
    let incoming = wait_for("bob", "the incoming call", &mut bob_ev, |e| match e {
        Event::IncomingCall { call, .. } => Some(*call),
        _ => None,
    })
    .await?;
    bob.answer(incoming, opts.codec.name())
        .await
        .map_err(client_err("bob"))?;
    let codec = wait_for("alice", "the answer", &mut alice_ev, |e| match e {
        Event::Answered { codec, .. } => Some(codec.clone()),
        _ => None,
    })
    .await?;
    let setup = t0.elapsed();

    let audio_a = test_signal(1, frames * 160);
    let audio_b = test_signal(2, frames * 160);
    let frames_a = media::encode_frames(&opts.codec, &audio_a)?;
    let frames_b = media::encode_frames(&opts.codec, &audio_b)?;
    let sent_a: Shared<Vec<Option<Instant>>> = Arc::new(Mutex::new(vec![None; frames]));
    let sent_b: Shared<Vec<Option<Instant>>> = Arc::new(Mutex::new(vec![None; frames]));
    let stop = AtomicBool::new(false);
    let mark = |v: &Shared<Vec<Option<Instant>>>| {
        let v = v.clone();
        move |seq: u32| {
            if let Some(slot) = v
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(seq as usize)
            {
                *slot = Some(Instant::now());
            }
        }
    };
    let (ra, rb) = tokio::join!(
        media::play(&alice, call, &frames_a, &stop, mark(&sent_a)),
        media::play(&bob, incoming, &frames_b, &stop, mark(&sent_b)),
    );
    ra.map_err(client_err("alice"))?;
    rb.map_err(client_err("bob"))?;
    // Let the last frames land before hanging up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice
        .hangup(call, Cause::Normal)
        .await
        .map_err(client_err("alice"))?;
    let end_cause = wait_for("bob", "the hangup", &mut bob_ev, |e| match e {
        Event::CallEnded { cause, .. } => Some(*cause),
        _ => None,
    })
    .await?;

    let expect_at_bob = media::expected_audio(&opts.codec, &audio_a)?;
    let expect_at_alice = media::expected_audio(&opts.codec, &audio_b)?;
    let (to_bob, to_alice, mut latencies) = {
        let rb = rec_at_bob.lock().unwrap_or_else(|e| e.into_inner());
        let ra = rec_at_alice.lock().unwrap_or_else(|e| e.into_inner());
        let mut lat = Vec::with_capacity(2 * frames);
        for (rec, sent) in [(&rb, &sent_a), (&ra, &sent_b)] {
            let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
            for (i, arrival) in rec.arrivals.iter().enumerate() {
                if let (Some(a), Some(Some(s))) = (arrival, sent.get(i)) {
                    lat.push(a.saturating_duration_since(*s).as_micros() as u64);
                }
            }
        }
        (
            media::compare(&expect_at_bob, &rb),
            media::compare(&expect_at_alice, &ra),
            lat,
        )
    };
    latencies.sort_unstable();
    let (relayed, drops) = proxy.with_core(|p| (p.stats().media_relayed, p.stats().drops.total()));
    alice.shutdown();
    bob.shutdown();
    proxy.shutdown();

    let both = |f: fn(&Comparison) -> usize| (f(&to_bob) + f(&to_alice)) as u64;
    let mut failures = Vec::new();
    if codec != opts.codec.name() {
        failures.push(format!(
            "answered with {codec}, asked for {}",
            opts.codec.name()
        ));
    }
    if end_cause != Cause::Normal {
        failures.push(format!("call ended with {end_cause}"));
    }
    for (dir, c) in [("alice -> bob", &to_bob), ("bob -> alice", &to_alice)] {
        if c.lost > 0 || c.corrupted > 0 || c.received != c.sent || c.sent != frames {
            failures.push(format!(
                "{dir}: {} of {} frames received, {} lost, {} corrupted",
                c.received, c.sent, c.lost, c.corrupted
            ));
        }
    }
    Ok(DemoReport {
        ok: failures.is_empty(),
        proxies: 1,
        calls: 1,
        frames_sent: both(|c| c.sent),
        frames_received: both(|c| c.received),
        frames_lost: both(|c| c.lost),
        frames_corrupted: both(|c| c.corrupted),
        // Whole microseconds over 1000: prints with at most 3 decimals.
        setup_ms: setup.as_micros() as f64 / 1000.0,
        latency_p50_us: percentile(&latencies, 0.50),
        latency_p99_us: percentile(&latencies, 0.99),
        codec,
        audio_seconds: opts.seconds,
        proxy_frames_relayed: relayed,
        proxy_drops: drops,
        failures,
        failover: None,
    })
}

impl DemoReport {
    /// The report for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let per_dir = self.frames_sent / 2;
        s.push_str("anytun demo: one proxy and two clients (alice, bob) over UDP on loopback\n");
        s.push_str(&format!(
            "  call alice -> bob by name: answered in {:.1} ms, codec {}, end-to-end encrypted\n",
            self.setup_ms, self.codec
        ));
        s.push_str(&format!(
            "  voice: {:.1} s each way, {} frames per direction\n",
            self.audio_seconds, per_dir
        ));
        s.push_str(&format!(
            "  received {} of {} frames: {} lost, {} corrupted (compared sample for sample)\n",
            self.frames_received, self.frames_sent, self.frames_lost, self.frames_corrupted
        ));
        s.push_str(&format!(
            "  one-way latency through the proxy: p50 {} us, p99 {} us\n",
            self.latency_p50_us, self.latency_p99_us
        ));
        s.push_str(&format!(
            "  proxy relayed {} frames, dropped {} packets\n",
            self.proxy_frames_relayed, self.proxy_drops
        ));
        for f in &self.failures {
            s.push_str(&format!("  FAILED: {f}\n"));
        }
        s.push_str(if self.ok { "OK\n" } else { "FAILED\n" });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--json` carries times at microsecond precision (3 decimals of a
    /// millisecond), not float noise such as 0.8144889999999999.
    #[tokio::test]
    async fn json_times_have_microsecond_precision() {
        let opts = DemoOptions {
            seconds: 0.1,
            ..DemoOptions::default()
        };
        let report = run(&opts).await.unwrap();
        let json = serde_json::to_value(&report).unwrap();
        let setup = json["setup_ms"].to_string();
        let decimals = setup.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "setup_ms {setup}");
        assert!(report.setup_ms > 0.0);
    }
}
