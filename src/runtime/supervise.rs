//! Route supervision of a running proxy: its anycast routes follow its
//! health (docs/anycast-lab.md). One implementation for every host of a
//! proxy: `anytund` and the C ABI's hosted proxy (res_anytun's proxy mode)
//! both get a [`RouteSupervisor`] from [`super::host::boot`].
//!
//! - With `[announce]`, BIRD runs as a child of this process
//!   ([`Announcer`]) and the routes are announced only while the proxy is
//!   ready (serving, synced with its peers), not drained and not
//!   overloaded.
//! - `[overload]` is measured every [`SAMPLE_EVERY`] from the core's
//!   published counters ([`OverloadMeter`]; never the core lock): the gauge
//!   `anytun_overloaded`, a log line per change, and the routes withdrawn
//!   while it lasts (the proxy still serves what arrives).
//! - A drain ([`RouteSupervisor::drain`]: `anytund`'s SIGUSR1/SIGUSR2)
//!   withdraws the routes while the proxy keeps serving.
//! - [`RouteSupervisor::stop`] withdraws, serves [`DRAIN_GRACE`] longer
//!   for what is on its way, then stops BIRD and joins its thread: call it
//!   before stopping the node.

use super::announce::{AnnounceError, Announcer};
use super::node::{Node, Readiness};
use super::overload::{OverloadChange, OverloadMeter, SAMPLE_EVERY};
use super::proxy::SharedCore;
use crate::config::Config;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a stopping proxy keeps serving after its routes are
/// withdrawn, for the packets already on their way to it.
pub const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// How long [`RouteSupervisor::stop`] waits for BIRD to confirm the
/// withdrawal before it stops BIRD anyway (which withdraws too).
const WITHDRAW_WAIT: Duration = Duration::from_secs(1);

/// Where a proxy's routes stand (for status pages: `anytun show status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteState {
    /// It has `[announce]`: BIRD runs and follows its health.
    pub announcing: bool,
    /// BIRD confirmed the routes are announced now.
    pub announced: bool,
    /// Overloaded (`[overload]`): withdrawn while it lasts.
    pub overloaded: bool,
    /// Drained: withdrawn on request (or stopping), still serving.
    pub drained: bool,
}

/// Runs the announcer and the overload meter beside a node.
pub struct RouteSupervisor {
    announcer: Option<Arc<Announcer>>,
    overloaded: Arc<AtomicBool>,
    rt: tokio::runtime::Handle,
    stop_tx: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RouteSupervisor {
    /// Starts BIRD (with `[announce]`; its config checked first) and the
    /// task that moves the routes with `node`'s readiness and load, on the
    /// node's runtime. `drained`: starts drained (a restart of a drained
    /// proxy), so the routes are never announced before a
    /// [`Self::set_drained`]`(false)`. `node` must be started. Callable
    /// from any thread.
    ///
    /// # Errors
    /// [`AnnounceError`]: BIRD refuses its config or cannot start.
    pub fn start(node: &Node, cfg: &Config, drained: bool) -> Result<Self, AnnounceError> {
        let rt = node.handle();
        let announcer = match &cfg.announce {
            Some(a) => {
                let a = Announcer::start(a.clone(), &rt)?;
                log::info!(
                    "routing daemon bird started (pid {}); anycast routes follow this proxy's \
                     health",
                    a.bird_pid()
                );
                // Before the task that reports readiness starts: a fresh
                // announcer is not ready, so nothing was announced yet.
                a.update(|h| h.drained = drained);
                Some(Arc::new(a))
            }
            None => None,
        };
        let overloaded = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = rt.spawn(follow(
            node.readiness(),
            node.shared_core(),
            node.metrics_board(),
            OverloadMeter::new(cfg.overload.clone(), cfg.max_sessions),
            announcer.clone(),
            overloaded.clone(),
            stop_rx,
        ));
        Ok(Self {
            announcer,
            overloaded,
            rt,
            stop_tx,
            task: Some(task),
        })
    }

    /// Drains (`true`: withdraw the routes, keep serving) or announces
    /// again when ready (`false`); `why` names the request in the log
    /// line. False without `[announce]` (nothing to move; logged).
    pub fn drain(&self, drain: bool, why: &str) -> bool {
        let Some(a) = &self.announcer else {
            log::warn!("{why} (drain) ignored: no [announce] in the config");
            return false;
        };
        if drain {
            log::info!("{why}: draining (withdrawing the anycast routes, still serving)");
        } else {
            log::info!("{why}: announcing again (when ready)");
        }
        a.update(|h| h.drained = drain);
        true
    }

    /// As [`Self::drain`], without the log line (a host that must not log
    /// under its own lock logs after). No-op without `[announce]`.
    pub fn set_drained(&self, drain: bool) {
        if let Some(a) = &self.announcer {
            a.update(|h| h.drained = drain);
        }
    }

    /// Where the routes stand now.
    pub fn state(&self) -> RouteState {
        let overloaded = self.overloaded.load(Ordering::Relaxed);
        match &self.announcer {
            None => RouteState {
                overloaded,
                ..RouteState::default()
            },
            Some(a) => RouteState {
                announcing: true,
                announced: a.announced(),
                overloaded,
                drained: a.health().drained,
            },
        }
    }

    /// The pid of the BIRD child now running (0 if none or no `[announce]`).
    pub fn bird_pid(&self) -> u32 {
        self.announcer.as_ref().map_or(0, |a| a.bird_pid())
    }

    /// Withdraws the routes, serves [`DRAIN_GRACE`] longer, stops BIRD and
    /// joins its thread. Blocks: call it from a thread outside any tokio
    /// runtime, before the node stops.
    pub fn stop(mut self) {
        let _ = self.stop_tx.send(true);
        let task = self.task.take();
        let announcer = self.announcer.take();
        let a2 = announcer.clone();
        self.rt.block_on(async move {
            if let Some(t) = task {
                let _ = t.await;
            }
            if let Some(a) = &a2 {
                a.update(|h| h.drained = true);
                // The grace starts once BIRD confirmed the withdrawal
                // (not when it was asked for).
                if a.wait_withdrawn(WITHDRAW_WAIT).await {
                    tokio::time::sleep(DRAIN_GRACE).await;
                }
            }
        });
        if let Some(a) = announcer {
            a.stop();
        }
    }
}

impl Drop for RouteSupervisor {
    /// Not stopped by [`RouteSupervisor::stop`] (an error path): stops
    /// BIRD at once, so it never announces for a proxy that is gone.
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(a) = self.announcer.take() {
            a.stop();
        }
    }
}

/// The task: readiness into the announcer's health, overload sampled.
async fn follow(
    mut ready: watch::Receiver<Readiness>,
    core: Option<Arc<SharedCore>>,
    board: Option<Arc<Metrics>>,
    mut meter: OverloadMeter,
    announcer: Option<Arc<Announcer>>,
    overloaded: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let r = ready.borrow_and_update().ready();
        if let Some(a) = &announcer {
            a.update(|h| h.ready = r);
        }
        tokio::select! {
            _ = stop.changed() => return,
            c = ready.changed() => if c.is_err() { return },
            _ = sample.tick() => {
                let Some(snap) = core.as_ref().map(|c| c.snapshot()) else { continue };
                if let Some(c) = meter.observe_snapshot(std::time::Instant::now(), &snap) {
                    on_overload(board.as_deref(), announcer.as_deref(), &overloaded, c);
                }
            }
        }
    }
}

/// Acts on an overload change: the gauge, the log line, the routes.
fn on_overload(
    board: Option<&Metrics>,
    announcer: Option<&Announcer>,
    overloaded: &AtomicBool,
    c: OverloadChange,
) {
    overloaded.store(c.overloaded, Ordering::Relaxed);
    if let Some(board) = board {
        board.set_overloaded(c.overloaded);
    }
    let routes = match (announcer, c.overloaded) {
        (None, _) => "no [announce]: no routes to move",
        (Some(_), true) => "withdrawing the anycast routes, still serving what arrives",
        (Some(_), false) => "announcing the anycast routes again (when ready)",
    };
    if c.overloaded {
        log::warn!("overloaded: {}; {routes}", c.why);
    } else {
        log::info!("no longer overloaded: {}; {routes}", c.why);
    }
    if let Some(a) = announcer {
        a.update(|h| h.overloaded = c.overloaded);
    }
}
