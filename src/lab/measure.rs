//! Failover figures: a call from site A (served by p1) to site B (p2), a
//! knob turned on p1 mid-call, the gap in received voice measured at both
//! ends; then the knob undone and the lab settled for the next run. Used
//! by the lab's tests (one run, outcome asserted) and by
//! `benches/lab_failover.rs` (several runs, median and worst printed).

use super::call::{connect_pair, frames_for, run_call, CallError, CallReport};
use super::knobs::Knob;
use super::topo::{Site, P};
use super::{Lab, LabError};
use std::time::Duration;

/// A failure of the serving proxy and how it is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Its name in reports.
    pub name: &'static str,
    /// The knob turned on p1 mid-call.
    pub knob: Knob,
    /// The knob that undoes it after the call.
    pub undo: Knob,
}

/// The failures of issue 8's figures: SIGKILL, SIGSTOP, a black-holed
/// link, a graceful drain. A freeze is undone by a restart: a thawed
/// BIRD's BGP and BFD sessions flap for seconds.
pub const FAILURES: [Failure; 4] = [
    Failure {
        name: "SIGKILL of the serving anytund",
        knob: Knob::Kill,
        undo: Knob::Restart,
    },
    Failure {
        name: "SIGSTOP of the serving proxy",
        knob: Knob::Freeze,
        undo: Knob::Restart,
    },
    Failure {
        name: "black-holed link of the serving proxy",
        knob: Knob::Blackhole,
        undo: Knob::Heal,
    },
    Failure {
        name: "graceful drain (withdraw)",
        knob: Knob::Withdraw,
        undo: Knob::Announce,
    },
];

/// How long site A's route must stay on p1 after `undo` before the next
/// run: after a heal (or thaw) the router's BFD session with p1 comes up
/// and may go down once more about 2.2 s later before it stays up.
pub fn hold_after(undo: Knob) -> Duration {
    match undo {
        Knob::Thaw | Knob::Heal => Duration::from_secs(4),
        _ => Duration::from_millis(500),
    }
}

/// One run: a call of `seconds` from site A to site B (v4), `f.knob` on
/// p1 at `at` into the voice; the report once the call is over. The
/// parties are named from `tag`. The knob is not undone (see
/// [`undo_and_settle`]).
pub async fn failover_call(
    lab: &Lab,
    f: Failure,
    seconds: f64,
    at: Duration,
    tag: &str,
) -> Result<CallReport, CallError> {
    let (mut a, mut b) = connect_pair(
        lab,
        false,
        &format!("alice{tag}"),
        &format!("bob{tag}"),
        frames_for(seconds),
    )
    .await?;
    if (a.proxy, b.proxy) != (1, 2) {
        return Err(LabError::NotUp(format!(
            "site A on proxy {}, site B on proxy {}: not each on its nearest (p1, p2)",
            a.proxy, b.proxy
        ))
        .into());
    }
    let l = lab.clone();
    let knob = f.knob;
    let r = run_call(&mut a, &mut b, frames_for(seconds), Some(at), move || {
        if let Err(e) = l.knob(knob, P(1)) {
            log::error!("{knob:?} on p1: {e}");
        }
    })
    .await?;
    // Hang up cleanly: no registration or call outlives the run.
    for p in [&a, &b] {
        p.rt.close(Duration::from_secs(1)).await;
    }
    Ok(r)
}

/// Undoes `f` on p1 and waits until the lab is as before: every proxy
/// ready and synced, site A's route back on p1 and stable, BFD at 20 ms.
pub fn undo_and_settle(lab: &Lab, f: Failure) -> Result<(), LabError> {
    lab.knob(f.undo, P(1))?;
    lab.wait_settled(Duration::from_secs(30))?;
    lab.wait_route_stable(
        Site::A,
        Some(P(1)),
        hold_after(f.undo),
        Duration::from_secs(30),
    )?;
    lab.wait_bfd(P(1), Duration::from_secs(10)).map(drop)
}

/// Median and worst of `v` (None if empty).
pub fn median_worst(v: &[f64]) -> Option<(f64, f64)> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    Some((*v.get(v.len() / 2)?, *v.last()?))
}

/// What several runs of one failure measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Gap in received voice at the caller (site A), ms, per run.
    pub gap_at_a_ms: Vec<f64>,
    /// At the callee (site B).
    pub gap_at_b_ms: Vec<f64>,
    /// Frames lost, both ways, per run.
    pub lost: Vec<usize>,
    /// Calls that ended before the hangup, or failed.
    pub dropped: usize,
    /// Handshakes repeated, all runs.
    pub handshakes_repeated: u32,
    /// Frames corrupted, all runs.
    pub corrupted: usize,
}

impl Figures {
    /// Adds one run.
    pub fn add(&mut self, r: &CallReport) {
        self.gap_at_a_ms.push(r.gap_at_a_ms);
        self.gap_at_b_ms.push(r.gap_at_b_ms);
        self.lost.push(r.a_to_b.lost + r.b_to_a.lost);
        self.dropped += usize::from(r.ended_early.is_some());
        self.handshakes_repeated += r.handshakes_repeated;
        self.corrupted += r.a_to_b.corrupted + r.b_to_a.corrupted;
    }

    /// One line: median and worst per end, frames lost, calls dropped,
    /// handshakes repeated.
    pub fn line(&self) -> String {
        let mw = |v: &[f64]| {
            median_worst(v).map_or("-".into(), |(m, w)| {
                format!("median {m:.1} ms, worst {w:.1} ms")
            })
        };
        format!(
            "{} run(s): gap at caller {}; at callee {}; frames lost {:?}; calls dropped {}; \
             handshakes repeated {}; frames corrupted {}",
            self.gap_at_a_ms.len(),
            mw(&self.gap_at_a_ms),
            mw(&self.gap_at_b_ms),
            self.lost,
            self.dropped,
            self.handshakes_repeated,
            self.corrupted
        )
    }
}
