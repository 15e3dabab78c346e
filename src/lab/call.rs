//! Calls across the lab with the project's own client, run in this process
//! with each client's socket made inside its site's namespace: voice both
//! ways compared sample for sample, and the gap in received voice measured
//! at both ends while a knob is turned mid-call.

use super::netns;
use super::topo::{anycast, Site};
use super::{Lab, LabError};
use crate::audio::{test_signal, Codec, SAMPLE_RATE};
use crate::call::{Cause, Name};
use crate::client::{ClientConfig, ClientError, Event};
use crate::media::{self, Comparison, Recording};
use crate::runtime::client::ClientRuntime;
use crate::session::CallId;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// Why a lab call could not be run.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A client failed.
    #[error("{who}: {source}")]
    Client {
        /// Which client.
        who: String,
        /// What failed.
        source: ClientError,
    },
    /// The call ended before it was answered.
    #[error("{who}: the call ended before the answer: {cause}")]
    Ended {
        /// Which client.
        who: String,
        /// Why.
        cause: Cause,
    },
    /// Something did not come in time.
    #[error("{who}: no {what} within {secs} s")]
    Timeout {
        /// Which client.
        who: String,
        /// What it waited for.
        what: &'static str,
        /// How long.
        secs: u64,
    },
}

/// A client in a site, connected through the anycast address.
pub struct Party {
    /// Its name (registered for calls).
    pub name: String,
    /// Its site.
    pub site: Site,
    /// The runtime.
    pub rt: ClientRuntime,
    /// Its events.
    pub events: UnboundedReceiver<Event>,
    /// What it received.
    pub rec: Arc<Mutex<Recording>>,
    /// The proxy that answered its handshake.
    pub proxy: u16,
    /// Its address as the proxy saw it (the NAT's outside address and port).
    pub observed: SocketAddr,
}

const WAIT: Duration = Duration::from_secs(10);

async fn next<T>(
    who: &str,
    what: &'static str,
    rx: &mut UnboundedReceiver<Event>,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> Result<T, CallError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) | Ok(None) => {
                return Err(CallError::Timeout {
                    who: who.to_owned(),
                    what,
                    secs: WAIT.as_secs(),
                })
            }
            Ok(Some(Event::Disconnected(source))) => {
                return Err(CallError::Client {
                    who: who.to_owned(),
                    source,
                })
            }
            Ok(Some(e)) => {
                if let Some(t) = f(&e) {
                    return Ok(t);
                }
            }
        }
    }
}

/// Frames of `seconds` of audio.
pub fn frames_for(seconds: f64) -> usize {
    ((seconds * f64::from(SAMPLE_RATE)) as usize).div_ceil(160)
}

impl Party {
    /// Adds `name` to the lab's store, starts a client inside `site`'s
    /// namespace towards the anycast address (IPv6 if `v6`), waits for its
    /// session and registers `name`. A key the proxies have not reloaded
    /// yet (200 ms) is tried again.
    pub async fn connect(
        lab: &Lab,
        site: Site,
        v6: bool,
        name: &str,
        frames: usize,
    ) -> Result<Party, CallError> {
        lab.add_user(name)?;
        Self::connect_to(lab, site, anycast(v6), name, frames).await
    }

    /// As [`Party::connect`], to `proxy` (e.g. one proxy's unicast
    /// address), for a `name` already in the stores.
    pub async fn connect_to(
        lab: &Lab,
        site: Site,
        proxy: SocketAddr,
        name: &str,
        frames: usize,
    ) -> Result<Party, CallError> {
        let key = lab.user_key(name)?;
        let network = lab.network_public()?;
        let ns = lab.names.site(site);
        let t0 = Instant::now();
        loop {
            let rec = Arc::new(Mutex::new(Recording::new(Codec::Ulaw, frames)));
            let sink = {
                let rec = rec.clone();
                Box::new(move |f: &crate::client::VoiceFrame<'_>| {
                    let now = Instant::now();
                    rec.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .on_frame(f, now);
                }) as crate::runtime::client::VoiceSink
            };
            let mut cfg = ClientConfig::new(key.clone(), network);
            cfg.max_calls = 4;
            let (rt, mut events) = netns::within(&ns, || ClientRuntime::start(cfg, proxy, sink))?
                .map_err(|e| {
                CallError::Lab(LabError::Io {
                    path: ns.clone(),
                    why: e.to_string(),
                })
            })?;
            let connected = next(name, "session", &mut events, |e| match e {
                Event::Connected {
                    proxy, observed, ..
                } => Some((proxy.get(), *observed)),
                _ => None,
            })
            .await;
            let (proxy, observed) = match connected {
                Ok(c) => c,
                Err(CallError::Client {
                    source: ClientError::NotAuthorized { .. },
                    ..
                }) if t0.elapsed() < Duration::from_secs(3) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let n = Name::new(name).map_err(|_| LabError::NotUp(format!("bad name {name}")))?;
            rt.register(n, 300).await;
            next(name, "registration", &mut events, |e| {
                matches!(e, Event::Registered { .. }).then_some(())
            })
            .await?;
            return Ok(Party {
                name: name.to_owned(),
                site,
                rt,
                events,
                rec,
                proxy,
                observed,
            });
        }
    }
}

/// What one call measured.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// Frames each side sent.
    pub frames: usize,
    /// Caller to callee, sample for sample.
    pub a_to_b: Comparison,
    /// Callee to caller.
    pub b_to_a: Comparison,
    /// Longest silence in the voice the callee received (the largest gap
    /// between two arrivals, less one 20 ms frame), milliseconds.
    pub gap_at_b_ms: f64,
    /// The same at the caller.
    pub gap_at_a_ms: f64,
    /// Handshakes made during the call, both sides (a repeated handshake
    /// is a reconnection).
    pub handshakes_repeated: u32,
    /// How the call ended, if it ended before the caller hung up.
    pub ended_early: Option<Cause>,
    /// Invite to Answer, milliseconds.
    pub setup_ms: f64,
    /// When the action ran, from the first frame.
    pub action_at: Option<Duration>,
}

impl CallReport {
    /// Whether voice arrived complete and intact both ways and the call
    /// lasted.
    pub fn intact(&self) -> bool {
        [self.a_to_b, self.b_to_a]
            .iter()
            .all(|c| c.lost == 0 && c.corrupted == 0 && c.received == c.sent)
            && self.ended_early.is_none()
    }
}

/// Longest silence between arrivals, less one frame, in ms.
fn longest_gap(rec: &Recording) -> f64 {
    let mut t: Vec<Instant> = rec.arrivals.iter().flatten().copied().collect();
    t.sort_unstable();
    let max = t
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    (max.as_secs_f64() * 1000.0 - 20.0).max(0.0)
}

/// Counts handshakes and watches for the call's end while voice flows.
async fn watch(
    mut rx: UnboundedReceiver<Event>,
    call: CallId,
    stop: Arc<AtomicBool>,
) -> (UnboundedReceiver<Event>, u32, Option<Cause>) {
    let mut handshakes = 0;
    let mut ended = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            Ok(Some(Event::Connected { .. })) => handshakes += 1,
            Ok(Some(Event::CallEnded { call: c, cause })) if c == call => {
                ended = Some(cause);
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => break,
        }
    }
    (rx, handshakes, ended)
}

/// Calls `b` from `a`, plays `frames` frames each way (test signals),
/// runs `action` (blocking, e.g. a knob) `action_at` after the first frame,
/// hangs up, and reports.
pub async fn run_call(
    a: &mut Party,
    b: &mut Party,
    frames: usize,
    action_at: Option<Duration>,
    action: impl FnOnce() + Send + 'static,
) -> Result<CallReport, CallError> {
    let codec = Codec::Ulaw;
    let b_name = Name::new(&b.name).map_err(|_| LabError::NotUp("bad name".into()))?;
    let t0 = Instant::now();
    let call =
        a.rt.call(b_name, None, vec!["ulaw".into()])
            .await
            .map_err(|source| CallError::Client {
                who: a.name.clone(),
                source,
            })?;
    let incoming = next(&b.name, "incoming call", &mut b.events, |e| match e {
        Event::IncomingCall { call, .. } => Some(Ok(*call)),
        Event::CallEnded { cause, .. } => Some(Err(*cause)),
        _ => None,
    })
    .await?
    .map_err(|cause| CallError::Ended {
        who: b.name.clone(),
        cause,
    })?;
    b.rt.answer(incoming, "ulaw")
        .await
        .map_err(|source| CallError::Client {
            who: b.name.clone(),
            source,
        })?;
    let answered = next(&a.name, "answer", &mut a.events, |e| match e {
        Event::Answered { .. } => Some(None),
        Event::CallEnded { cause, .. } => Some(Some(*cause)),
        _ => None,
    })
    .await?;
    if let Some(cause) = answered {
        return Err(CallError::Ended {
            who: a.name.clone(),
            cause,
        });
    }
    let setup = t0.elapsed();
    for p in [&*a, &*b] {
        *p.rec.lock().unwrap_or_else(|e| e.into_inner()) = Recording::new(codec.clone(), frames);
    }
    let audio_a = test_signal(1, frames * 160);
    let audio_b = test_signal(2, frames * 160);
    let enc = |s: &[i16]| media::encode_frames(&codec, s).expect("ulaw encodes any audio");
    let (frames_a, frames_b) = (enc(&audio_a), enc(&audio_b));
    let stop = Arc::new(AtomicBool::new(false));
    let (ev_a, ev_b) = (
        std::mem::replace(&mut a.events, tokio::sync::mpsc::unbounded_channel().1),
        std::mem::replace(&mut b.events, tokio::sync::mpsc::unbounded_channel().1),
    );
    let wa = tokio::spawn(watch(ev_a, call, stop.clone()));
    let wb = tokio::spawn(watch(ev_b, incoming, stop.clone()));
    let started = Instant::now();
    let act = action_at.map(|at| {
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            let t = started.elapsed();
            let _ = tokio::task::spawn_blocking(action).await;
            t
        })
    });
    let never = AtomicBool::new(false);
    let (ra, rb) = tokio::join!(
        media::play(&a.rt, call, &frames_a, &never, |_| {}),
        media::play(&b.rt, incoming, &frames_b, &never, |_| {}),
    );
    // The last frames land before the hangup.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let action_ran = match act {
        Some(h) => h.await.ok(),
        None => None,
    };
    let (ev_a, ha, ea) = wa.await.map_err(|e| LabError::NotUp(e.to_string()))?;
    let (ev_b, hb, eb) = wb.await.map_err(|e| LabError::NotUp(e.to_string()))?;
    a.events = ev_a;
    b.events = ev_b;
    let ended_early = ea.or(eb).or(match (&ra, &rb) {
        (Err(_), _) | (_, Err(_)) => Some(Cause::NetworkFailure),
        _ => None,
    });
    if ended_early.is_none() {
        let _ = a.rt.hangup(call, Cause::Normal).await;
    }
    let expect_b = media::expected_audio(&codec, &audio_a).expect("ulaw");
    let expect_a = media::expected_audio(&codec, &audio_b).expect("ulaw");
    let rb_ = b.rec.lock().unwrap_or_else(|e| e.into_inner());
    let ra_ = a.rec.lock().unwrap_or_else(|e| e.into_inner());
    Ok(CallReport {
        frames,
        a_to_b: media::compare(&expect_b, &rb_),
        b_to_a: media::compare(&expect_a, &ra_),
        gap_at_b_ms: longest_gap(&rb_),
        gap_at_a_ms: longest_gap(&ra_),
        handshakes_repeated: ha + hb,
        ended_early,
        setup_ms: setup.as_micros() as f64 / 1000.0,
        action_at: action_ran,
    })
}

/// Connects `a_name` in site A and `b_name` in site B, and waits until the
/// caller's proxy knows the callee's registration (anypsp replicates it
/// from the callee's proxy), so a call placed now finds it.
pub async fn connect_pair(
    lab: &Lab,
    v6: bool,
    a_name: &str,
    b_name: &str,
    frames: usize,
) -> Result<(Party, Party), CallError> {
    let a = Party::connect(lab, Site::A, v6, a_name, frames).await?;
    let home = super::P(a.proxy as u8);
    let l = lab.clone();
    let before = tokio::task::spawn_blocking(move || l.proxy_status(home))
        .await
        .map_err(|e| LabError::NotUp(e.to_string()))??
        .registrations;
    let b = Party::connect(lab, Site::B, v6, b_name, frames).await?;
    let l = lab.clone();
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        loop {
            if l.proxy_status(home)?.registrations > before {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > WAIT {
                return Err(LabError::Timeout {
                    what: format!("{home} to learn the callee's registration"),
                    ms: WAIT.as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .await
    .map_err(|e| LabError::NotUp(e.to_string()))??;
    Ok((a, b))
}
