//! Announcement follows health: `anytund` runs its routing daemon (BIRD 2)
//! as a child and enables the anycast routes only while it is ready.
//!
//! - BIRD runs in the foreground as a child of a thread that lives as long
//!   as the process, with `PR_SET_PDEATHSIG = SIGKILL`: when `anytund` dies,
//!   even by SIGKILL, the kernel kills BIRD, closes its BGP sessions, and
//!   the router withdraws the route within milliseconds. A BIRD that
//!   outlived its proxy would keep announcing and black-hole the traffic.
//! - The anycast routes are static protocols written `disabled` in BIRD's
//!   config; [`Announcer`] enables them with `birdc enable` only while the
//!   proxy is ready and not drained, and disables them otherwise. A BIRD
//!   that died is started again (routes disabled) and re-enabled if the
//!   proxy is still ready.
//!
//! The design, its sample BIRD config and the measured times are in
//! docs/anycast-lab.md.

use crate::config::AnnounceConfig;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the routing daemon could not be started or told something.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// BIRD could not be started.
    #[error("cannot start {bird} -c {config}: {source}")]
    Spawn {
        /// The BIRD binary.
        bird: String,
        /// Its config file.
        config: String,
        /// Why.
        source: std::io::Error,
    },
    /// The BIRD config does not parse (`bird -p`).
    #[error("{config}: BIRD refuses this config: {why}")]
    BadConfig {
        /// The file.
        config: String,
        /// BIRD's words.
        why: String,
    },
    /// `birdc` failed or BIRD refused the command.
    #[error("birdc {command}: {why}")]
    Control {
        /// The command.
        command: String,
        /// What went wrong.
        why: String,
    },
}

/// The wanted state, from the daemon: ready (serving, and synced when it
/// has peers), drained (told to withdraw while still serving) and
/// overloaded ([`super::overload`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Serving, with its table from its peers.
    pub ready: bool,
    /// Drained by the operator (SIGUSR1) or on shutdown.
    pub drained: bool,
    /// Carrying more than its capacity (`[overload]`): withdrawn while it
    /// lasts, still serving what arrives.
    pub overloaded: bool,
}

impl Health {
    /// Whether the anycast routes should be announced.
    pub fn announce(self) -> bool {
        self.ready && !self.drained && !self.overloaded
    }
}

/// Runs BIRD and keeps its anycast routes in line with [`Health`].
pub struct Announcer {
    health: watch::Sender<Health>,
    announced: watch::Receiver<bool>,
    stopping: Arc<AtomicBool>,
    bird_pid: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Announcer {
    /// Checks the BIRD config, starts BIRD (routes disabled) and the task
    /// that enables or disables the routes as [`Announcer::set`] says.
    /// Must be called inside a tokio runtime.
    pub fn start(cfg: AnnounceConfig) -> Result<Self, AnnounceError> {
        check_config(&cfg)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let bird_pid = Arc::new(AtomicU32::new(0));
        let (gen_tx, gen_rx) = watch::channel(0u64);
        // The first start is synchronous, so a BIRD that cannot start at
        // all is an error of this call rather than a log line.
        let first = spawn_bird(&cfg)?;
        bird_pid.store(first.id(), Ordering::Relaxed);
        {
            let cfg = cfg.clone();
            let stopping = stopping.clone();
            let bird_pid = bird_pid.clone();
            // This thread is BIRD's parent for the whole process lifetime:
            // PR_SET_PDEATHSIG fires when the forking *thread* ends, so it
            // must not be a pool thread that may exit when idle.
            std::thread::Builder::new()
                .name("bird-supervisor".into())
                .spawn(move || supervise(cfg, first, gen_tx, stopping, bird_pid))
                .map_err(|source| AnnounceError::Spawn {
                    bird: "bird-supervisor thread".into(),
                    config: String::new(),
                    source,
                })?;
        }
        let (health, health_rx) = watch::channel(Health::default());
        let (announced_tx, announced) = watch::channel(false);
        let task = tokio::spawn(reconcile(cfg, health_rx, gen_rx, announced_tx));
        Ok(Self {
            health,
            announced,
            stopping,
            bird_pid,
            task,
        })
    }

    /// Changes the wanted state with `f`; the routes follow within the time
    /// `birdc` takes (a few milliseconds).
    pub fn update(&self, f: impl FnOnce(&mut Health)) {
        self.health.send_modify(f);
    }

    /// The current wanted state.
    pub fn health(&self) -> Health {
        *self.health.borrow()
    }

    /// Whether the routes are announced now (BIRD confirmed the last
    /// enable, and no disable since).
    pub fn announced(&self) -> bool {
        *self.announced.borrow()
    }

    /// Waits until the announced state equals `want`, at most `limit`.
    /// Returns whether it did.
    pub async fn wait_announced(&self, want: bool, limit: Duration) -> bool {
        let mut rx = self.announced.clone();
        tokio::time::timeout(limit, rx.wait_for(|a| *a == want))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The pid of the BIRD child now running (0 if none).
    pub fn bird_pid(&self) -> u32 {
        self.bird_pid.load(Ordering::Relaxed)
    }

    /// Stops BIRD (SIGTERM; the kernel kills it anyway when this process
    /// ends) and the task.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.task.abort();
        let pid = self.bird_pid();
        if pid != 0 {
            // SAFETY: kill has no memory preconditions; the pid is our child
            // (not yet reaped by the supervisor, so not reused).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
}

/// `bird -p -c CONFIG`: refuses a config BIRD would not start with.
fn check_config(cfg: &AnnounceConfig) -> Result<(), AnnounceError> {
    let out = Command::new(&cfg.bird)
        .arg("-p")
        .arg("-c")
        .arg(&cfg.bird_config)
        .output()
        .map_err(|source| AnnounceError::Spawn {
            bird: cfg.bird.display().to_string(),
            config: cfg.bird_config.display().to_string(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(AnnounceError::BadConfig {
        config: cfg.bird_config.display().to_string(),
        why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// Starts `bird -f` as a child that the kernel kills when this process
/// dies.
fn spawn_bird(cfg: &AnnounceConfig) -> Result<std::process::Child, AnnounceError> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut cmd = Command::new(&cfg.bird);
    cmd.arg("-f")
        .arg("-c")
        .arg(&cfg.bird_config)
        .arg("-s")
        .arg(&cfg.bird_socket)
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) run
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl took effect: no signal will
            // come, so do not start an orphan that would announce.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| AnnounceError::Spawn {
        bird: cfg.bird.display().to_string(),
        config: cfg.bird_config.display().to_string(),
        source,
    })
}

/// Waits for BIRD; starts it again (after a second) when it dies while
/// the daemon runs, and bumps the generation so the routes are re-enabled.
fn supervise(
    cfg: AnnounceConfig,
    mut child: std::process::Child,
    generation: watch::Sender<u64>,
    stopping: Arc<AtomicBool>,
    pid: Arc<AtomicU32>,
) {
    loop {
        let status = child.wait();
        pid.store(0, Ordering::Relaxed);
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        log::error!(
            "bird (routing daemon) exited ({}); the anycast routes are not announced; \
             starting it again in 1 s",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        );
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            match spawn_bird(&cfg) {
                Ok(c) => {
                    child = c;
                    break;
                }
                Err(e) => log::error!("{e}; retrying in 1 s"),
            }
        }
        pid.store(child.id(), Ordering::Relaxed);
        generation.send_modify(|g| *g += 1);
    }
}

/// How often a refused `birdc` (BIRD still starting) is retried.
const RETRY: Duration = Duration::from_millis(50);

/// Brings BIRD's protocols in line with the wanted health, again after
/// every BIRD restart.
async fn reconcile(
    cfg: AnnounceConfig,
    mut health: watch::Receiver<Health>,
    mut generation: watch::Receiver<u64>,
    announced: watch::Sender<bool>,
) {
    // What BIRD has now: a fresh BIRD has them disabled (its config says so).
    let mut applied = Some(false);
    let mut failing = false;
    loop {
        let want = health.borrow_and_update().announce();
        if applied != Some(want) {
            if want {
                // Routes first reported as announced only once BIRD says so.
            } else {
                announced.send_replace(false);
            }
            match birdc_set(&cfg, want).await {
                Ok(()) => {
                    applied = Some(want);
                    announced.send_replace(want);
                    if failing {
                        log::warn!("birdc works again");
                        failing = false;
                    }
                    if want {
                        log::info!(
                            "announcing the anycast routes ({})",
                            cfg.protocols.join(", ")
                        );
                    } else {
                        log::info!("withdrew the anycast routes ({})", cfg.protocols.join(", "));
                    }
                }
                Err(e) => {
                    if !failing {
                        log::warn!("{e}; retrying every {} ms", RETRY.as_millis());
                        failing = true;
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        tokio::select! {
            r = health.changed() => if r.is_err() { return },
            r = generation.changed() => {
                if r.is_err() { return }
                generation.borrow_and_update();
                // A new BIRD starts with the routes disabled.
                applied = Some(false);
                announced.send_replace(false);
            }
        }
    }
}

/// `birdc -s SOCKET enable|disable PROTO` for every protocol.
async fn birdc_set(cfg: &AnnounceConfig, on: bool) -> Result<(), AnnounceError> {
    let verb = if on { "enable" } else { "disable" };
    for proto in &cfg.protocols {
        let command = format!("{verb} {proto}");
        let out = tokio::process::Command::new(&cfg.birdc)
            .arg("-s")
            .arg(&cfg.bird_socket)
            .arg(verb)
            .arg(proto)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| AnnounceError::Control {
                command: command.clone(),
                why: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.trim();
        // birdc exits 0 on BIRD's refusals too; its answer says which.
        let done = text.contains(&format!("{proto}: {verb}d"))
            || text.contains(&format!("{proto}: already {verb}d"));
        if !out.status.success() || !done {
            let why = if text.is_empty() {
                String::from_utf8_lossy(&out.stderr).trim().to_owned()
            } else {
                text.lines().last().unwrap_or_default().to_owned()
            };
            return Err(AnnounceError::Control { command, why });
        }
    }
    Ok(())
}

/// Starts the announcer, in the daemon's words on failure.
pub fn start(cfg: AnnounceConfig) -> Result<Announcer, String> {
    let a = Announcer::start(cfg).map_err(|e| e.to_string())?;
    log::info!(
        "routing daemon bird started (pid {}); anycast routes follow this daemon's health",
        a.bird_pid()
    );
    Ok(a)
}

/// SIGUSR1 (drain: withdraw the anycast routes, keep serving) and
/// SIGUSR2 (announce again), for the daemon's main loop.
pub struct DrainSignals {
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl DrainSignals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn new() -> Result<Self, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let e = |e: std::io::Error| format!("cannot handle signals: {e}");
        Ok(Self {
            usr1: signal(SignalKind::user_defined1()).map_err(e)?,
            usr2: signal(SignalKind::user_defined2()).map_err(e)?,
        })
    }

    /// The next signal: `true` for drain (SIGUSR1), `false` for announce
    /// again (SIGUSR2).
    pub async fn recv(&mut self) -> bool {
        tokio::select! {
            _ = self.usr1.recv() => true,
            _ = self.usr2.recv() => false,
        }
    }
}

/// Acts on a [`DrainSignals`] signal.
pub fn on_drain_signal(announcer: Option<&Announcer>, drain: bool) {
    match (announcer, drain) {
        (Some(a), true) => {
            log::info!("SIGUSR1: draining (withdrawing the anycast routes, still serving)");
            a.update(|h| h.drained = true);
        }
        (Some(a), false) => {
            log::info!("SIGUSR2: announcing again (when ready)");
            a.update(|h| h.drained = false);
        }
        (None, _) => log::warn!("SIGUSR1/SIGUSR2 (drain) ignored: no [announce] in the config"),
    }
}

/// How long a stopping daemon keeps serving after its routes are
/// withdrawn, for the packets already on their way to it.
pub const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// On shutdown: withdraw, serve [`DRAIN_GRACE`] longer, stop BIRD.
pub async fn drain_and_stop(a: Announcer) {
    a.update(|h| h.drained = true);
    if a.wait_announced(false, Duration::from_secs(1)).await {
        tokio::time::sleep(DRAIN_GRACE).await;
    }
    a.stop();
}
