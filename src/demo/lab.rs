//! `anytun demo` as root: the anycast lab (three proxies, two NATed
//! sites), a call from site A to site B, the proxy serving the caller
//! killed mid-call, and a report of what happened.

use super::failover::Failover;
use super::DemoReport;
use crate::lab::call::{connect_pair, frames_for, run_call, CallError};
use crate::lab::knobs::Knob;
use crate::lab::{Lab, LabError, Site, P};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The lab demo's own facts, for the human report.
#[derive(Clone, Debug, Default)]
pub struct LabStory {
    /// Which proxy served alice (site A) and bob (site B).
    pub served: (u16, u16),
    /// Their addresses as the proxies saw them (the NATs' outside).
    pub seen_as: (String, String),
    /// The proxy killed.
    pub killed: String,
    /// When it was killed, from the first voice frame, ms.
    pub killed_at_ms: f64,
    /// From the kill until site A's route pointed elsewhere, ms.
    pub route_moved_ms: Option<f64>,
    /// Where it moved.
    pub moved_to: Option<String>,
    /// Longest silence at alice and at bob, ms.
    pub gaps_ms: (f64, f64),
    /// Lab bring-up time, ms.
    pub up_ms: u128,
}

/// How long the route took to move after the kill, and where to.
type RouteMove = (Duration, Option<P>);

/// Why the lab demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum LabDemoError {
    /// The lab.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The call.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Runs the lab demo with `seconds` of audio each way; the caller's proxy
/// is killed a third of the way in. The lab (prefix `atldemo`) is taken
/// down at the end, whatever happened.
pub async fn run(
    seconds: f64,
    anytund: Option<PathBuf>,
) -> Result<(DemoReport, LabStory), LabDemoError> {
    let lab = Lab::new("atldemo", None, anytund)?;
    let l = lab.clone();
    let up = tokio::task::spawn_blocking(move || l.up())
        .await
        .map_err(|e| LabError::NotUp(e.to_string()))?;
    let result = match up {
        Ok(up) => story(&lab, seconds, up.ready_after.as_millis()).await,
        Err(e) => Err(e.into()),
    };
    let l = lab.clone();
    let down = tokio::task::spawn_blocking(move || l.down()).await;
    let (report, story) = result?;
    down.map_err(|e| LabError::NotUp(e.to_string()))??;
    Ok((report, story))
}

async fn story(
    lab: &Lab,
    seconds: f64,
    up_ms: u128,
) -> Result<(DemoReport, LabStory), LabDemoError> {
    let frames = frames_for(seconds);
    let (mut alice, mut bob) = connect_pair(lab, false, "alice", "bob", frames).await?;
    let victim = P(alice.proxy as u8);
    let moved: Arc<Mutex<Option<RouteMove>>> = Arc::default();
    let (l, m) = (lab.clone(), moved.clone());
    let at = Duration::from_secs_f64(seconds / 3.0);
    let r = run_call(&mut alice, &mut bob, frames, Some(at), move || {
        let t0 = std::time::Instant::now();
        if l.knob(Knob::Kill, victim).is_err() {
            return;
        }
        let next = Site::A.preference().into_iter().find(|&p| p != victim);
        if l.wait_route(Site::A, next, Duration::from_secs(5)).is_ok() {
            *m.lock().unwrap_or_else(|e| e.into_inner()) = Some((t0.elapsed(), next));
        }
    })
    .await?;
    let moved = *moved.lock().unwrap_or_else(|e| e.into_inner());
    let dropped = u64::from(r.ended_early.is_some());
    let mut failures = Vec::new();
    if dropped > 0 {
        failures.push(format!(
            "the call ended when {victim} was killed: {}",
            r.ended_early.map_or_else(String::new, |c| c.to_string())
        ));
    }
    if r.handshakes_repeated > 0 {
        failures.push(format!("{} handshakes repeated", r.handshakes_repeated));
    }
    let corrupted = r.a_to_b.corrupted + r.b_to_a.corrupted;
    if corrupted > 0 {
        failures.push(format!("{corrupted} frames corrupted"));
    }
    let story = LabStory {
        served: (alice.proxy, bob.proxy),
        seen_as: (alice.observed.to_string(), bob.observed.to_string()),
        killed: victim.name(),
        killed_at_ms: r.action_at.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        route_moved_ms: moved.map(|(d, _)| d.as_secs_f64() * 1000.0),
        moved_to: moved.and_then(|(_, p)| p).map(|p| p.name()),
        gaps_ms: (r.gap_at_a_ms, r.gap_at_b_ms),
        up_ms,
    };
    let both = |f: fn(&crate::media::Comparison) -> usize| (f(&r.a_to_b) + f(&r.b_to_a)) as u64;
    let report = DemoReport {
        ok: failures.is_empty(),
        proxies: 3,
        calls: 1,
        frames_sent: both(|c| c.sent),
        frames_received: both(|c| c.received),
        frames_lost: both(|c| c.lost),
        frames_corrupted: both(|c| c.corrupted),
        setup_ms: r.setup_ms,
        latency_p50_us: 0,
        latency_p99_us: 0,
        codec: "ulaw".into(),
        audio_seconds: seconds,
        proxy_frames_relayed: 0,
        proxy_drops: 0,
        failures,
        failover: Some(Failover {
            // Whole ms, rounded up: a gap is never reported shorter than it was.
            gap_ms: r.gap_at_a_ms.max(r.gap_at_b_ms).ceil() as u64,
            calls_dropped: dropped,
            handshakes_repeated: u64::from(r.handshakes_repeated),
        }),
    };
    Ok((report, story))
}

/// The report for people.
pub fn human(r: &DemoReport, s: &LabStory) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "anytun demo: the anycast lab (3 proxies announcing 10.200.0.1 over BGP+BFD, \
         2 sites behind NAT), up in {} ms\n",
        s.up_ms
    ));
    o.push_str(&format!(
        "  alice (site A) served by proxy {}, seen as {}; bob (site B) served by proxy {}, seen as {}\n",
        s.served.0, s.seen_as.0, s.served.1, s.seen_as.1
    ));
    o.push_str(&format!(
        "  call alice -> bob answered in {:.1} ms; {:.1} s of voice each way\n",
        r.setup_ms, r.audio_seconds
    ));
    o.push_str(&format!(
        "  {} (serving alice) killed with SIGKILL {:.0} ms into the call\n",
        s.killed, s.killed_at_ms
    ));
    match (s.route_moved_ms, &s.moved_to) {
        (Some(ms), Some(p)) => o.push_str(&format!(
            "  site A's route moved to {p} {ms:.1} ms after the kill\n"
        )),
        _ => o.push_str("  site A's route did not move within 5 s\n"),
    }
    o.push_str(&format!(
        "  longest gap in received voice: {:.1} ms at alice, {:.1} ms at bob\n",
        s.gaps_ms.0, s.gaps_ms.1
    ));
    o.push_str(&format!(
        "  received {} of {} frames: {} lost, {} corrupted (compared sample for sample)\n",
        r.frames_received, r.frames_sent, r.frames_lost, r.frames_corrupted
    ));
    if let Some(f) = &r.failover {
        o.push_str(&format!(
            "  calls dropped: {}, handshakes repeated: {}\n",
            f.calls_dropped, f.handshakes_repeated
        ));
    }
    for f in &r.failures {
        o.push_str(&format!("  FAILED: {f}\n"));
    }
    o.push_str(if r.ok { "OK\n" } else { "FAILED\n" });
    o
}
