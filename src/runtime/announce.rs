//! Announcement follows health: the proxy's process (`anytund`, or a host
//! of the C ABI's hosted proxy such as Asterisk) runs its routing daemon
//! (BIRD 2) as a child and enables the anycast routes only while the proxy
//! is ready. [`super::supervise`] drives it.
//!
//! - BIRD runs in the foreground as a child of a thread of its own
//!   (`bird-supervisor`, joined by [`Announcer::stop`]), with
//!   `PR_SET_PDEATHSIG = SIGKILL`: when the process dies, even by SIGKILL,
//!   the kernel kills BIRD, closes its BGP sessions, and the router
//!   withdraws the route within milliseconds. A BIRD that outlived its
//!   proxy would keep announcing and black-hole the traffic.
//! - The anycast routes are static protocols written `disabled` in BIRD's
//!   config; [`Announcer`] enables them with `birdc enable` only while the
//!   proxy is ready and not drained, and disables them otherwise. A BIRD
//!   that died is started again (routes disabled) and re-enabled if the
//!   proxy is still ready.
//! - A host may reap children itself (Asterisk's SIGCHLD handler waits for
//!   every child) and block signals in its threads: children are waited
//!   for with std's process API, tolerating a status the host took, and
//!   BIRD starts with an empty signal mask.
//!
//! The design, its sample BIRD config and the measured times are in
//! docs/anycast-lab.md.

use crate::config::AnnounceConfig;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
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
    /// BIRD's parent thread; joined by [`Announcer::stop`].
    supervisor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Announcer {
    /// Checks the BIRD config, starts BIRD (routes disabled) and the task
    /// (on `rt`) that enables or disables the routes as
    /// [`Announcer::update`] says. Callable from any thread.
    pub fn start(cfg: AnnounceConfig, rt: &tokio::runtime::Handle) -> Result<Self, AnnounceError> {
        check_config(&cfg)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let bird_pid = Arc::new(AtomicU32::new(0));
        let (gen_tx, gen_rx) = watch::channel(0u64);
        // BIRD is forked by this thread, which is its parent until
        // [`Announcer::stop`]: PR_SET_PDEATHSIG fires when the forking
        // *thread* ends, so neither a pool thread that may exit when idle
        // nor the caller's (a host's CLI thread, say) may fork it. The
        // first start is still reported here, so a BIRD that cannot start
        // at all is an error of this call rather than a log line.
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let supervisor = {
            let cfg = cfg.clone();
            let stopping = stopping.clone();
            let bird_pid = bird_pid.clone();
            std::thread::Builder::new()
                .name("bird-supervisor".into())
                .spawn(move || {
                    let first = match spawn_bird(&cfg) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = first_tx.send(Err(e));
                            return;
                        }
                    };
                    bird_pid.store(first.id(), Ordering::Relaxed);
                    let _ = first_tx.send(Ok(()));
                    supervise(cfg, first, gen_tx, stopping, bird_pid)
                })
                .map_err(|source| AnnounceError::Spawn {
                    bird: "bird-supervisor thread".into(),
                    config: String::new(),
                    source,
                })?
        };
        let first = first_rx.recv().unwrap_or_else(|_| {
            Err(AnnounceError::Control {
                command: "start bird".into(),
                why: "the bird-supervisor thread ended".into(),
            })
        });
        if let Err(e) = first {
            let _ = supervisor.join();
            return Err(e);
        }
        let (health, health_rx) = watch::channel(Health::default());
        let (announced_tx, announced) = watch::channel(false);
        let task = rt.spawn(reconcile(cfg, health_rx, gen_rx, announced_tx));
        Ok(Self {
            health,
            announced,
            stopping,
            bird_pid,
            task,
            supervisor: Mutex::new(Some(supervisor)),
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

    /// Stops BIRD (SIGTERM, SIGKILL after [`BIRD_STOP_WAIT`]; the kernel
    /// kills it anyway when its parent thread ends) and the task, and
    /// joins BIRD's parent thread. BIRD's BGP sessions close with it, so
    /// the router drops the routes at once. Blocks for BIRD's exit: call
    /// it outside async code. Idempotent; dropping an announcer stops it.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.task.abort();
        let Some(supervisor) = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        signal_bird(&self.bird_pid, libc::SIGTERM);
        let deadline = std::time::Instant::now() + BIRD_STOP_WAIT;
        while !supervisor.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !supervisor.is_finished() {
            log::warn!(
                "bird did not stop within {} ms of SIGTERM: SIGKILL",
                BIRD_STOP_WAIT.as_millis()
            );
            // Read again: a BIRD restarted meanwhile is killed too.
            signal_bird(&self.bird_pid, libc::SIGKILL);
        }
        if supervisor.join().is_err() {
            log::error!("the bird-supervisor thread panicked");
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long [`Announcer::stop`] waits for BIRD after SIGTERM.
pub const BIRD_STOP_WAIT: Duration = Duration::from_secs(2);

/// Sends `sig` to the BIRD child now running, if any.
fn signal_bird(pid: &AtomicU32, sig: libc::c_int) {
    let pid = pid.load(Ordering::Relaxed);
    if pid != 0 {
        // SAFETY: kill has no memory preconditions; the pid is our child,
        // cleared by the supervisor once it was waited for.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// `bird -p -c CONFIG`: refuses a config BIRD would not start with.
fn check_config(cfg: &AnnounceConfig) -> Result<(), AnnounceError> {
    let (status, _, err) = output(
        Command::new(&cfg.bird)
            .arg("-p")
            .arg("-c")
            .arg(&cfg.bird_config),
    )
    .map_err(|source| AnnounceError::Spawn {
        bird: cfg.bird.display().to_string(),
        config: cfg.bird_config.display().to_string(),
        source,
    })?;
    // Reaped by the host (no status): BIRD says nothing on success.
    if status.unwrap_or(err.is_empty()) {
        return Ok(());
    }
    Err(AnnounceError::BadConfig {
        config: cfg.bird_config.display().to_string(),
        why: err,
    })
}

/// Runs `cmd` to its end (blocking): whether it exited 0, its stdout and
/// stderr, trimmed. A host such as Asterisk reaps every child in its own
/// SIGCHLD handler (`waitpid(-1)`), so the exit status may be gone (ECHILD):
/// then `None`, and the caller judges by the output. For the same reason
/// this is std's process API, never tokio's (whose child reaping must not
/// be installed in such a host).
fn output(cmd: &mut Command) -> std::io::Result<(Option<bool>, String, String)> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The tools' answers are a few lines: reading one pipe to its end
    // before the other cannot fill the other.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = match child.wait() {
        Ok(s) => Some(s.success()),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => None,
        Err(e) => return Err(e),
    };
    Ok((status, out.trim().to_owned(), err.trim().to_owned()))
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
    // SAFETY: only async-signal-safe calls (sigemptyset, pthread_sigmask,
    // prctl, getppid, _exit) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // A host's thread may block signals (Asterisk's block SIGTERM
            // and others), and the mask survives exec: BIRD would never
            // hear its SIGTERM.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
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
        let (birdc, socket, p) = (cfg.birdc.clone(), cfg.bird_socket.clone(), proto.clone());
        let ran = tokio::task::spawn_blocking(move || birdc_run(&birdc, &socket, verb, &p)).await;
        let command = format!("{verb} {proto}");
        let (success, text, err) =
            ran.map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|why| AnnounceError::Control {
                    command: command.clone(),
                    why,
                })?;
        // birdc exits 0 on BIRD's refusals too; its answer says which.
        let done = text.contains(&format!("{proto}: {verb}d"))
            || text.contains(&format!("{proto}: already {verb}d"));
        if !success || !done {
            let why = if text.is_empty() {
                err
            } else {
                text.lines().last().unwrap_or_default().to_owned()
            };
            return Err(AnnounceError::Control { command, why });
        }
    }
    Ok(())
}

/// Runs `birdc -s SOCKET VERB PROTO` (blocking): whether it exited 0 (a
/// child the host reaped first counts as 0: its answer decides), its
/// answer and its complaints.
fn birdc_run(
    birdc: &Path,
    socket: &Path,
    verb: &str,
    proto: &str,
) -> Result<(bool, String, String), String> {
    let (status, out, err) = output(
        Command::new(birdc)
            .arg("-s")
            .arg(socket)
            .arg(verb)
            .arg(proto),
    )
    .map_err(|e| format!("{}: {e}", birdc.display()))?;
    Ok((status.unwrap_or(true), out, err))
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
