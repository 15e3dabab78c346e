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
//!   for with std's process API, tolerating a status the host took,
//!   signalled through a pidfd (never a pid the host reaped and the kernel
//!   reused), and BIRD starts with an empty signal mask.
//!
//! The design, its sample BIRD config and the measured times are in
//! docs/anycast-lab.md.

use crate::config::AnnounceConfig;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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
    withdrawn: watch::Receiver<bool>,
    stopping: Arc<AtomicBool>,
    bird: Arc<Running>,
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
        let bird = Arc::new(Running::default());
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
            let bird = bird.clone();
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
                    bird.set(Some(ChildRef::of(&first)));
                    let _ = first_tx.send(Ok(()));
                    supervise(cfg, first, gen_tx, stopping, bird)
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
        // A fresh BIRD has the routes disabled (its config says so).
        let (withdrawn_tx, withdrawn) = watch::channel(true);
        let task = rt.spawn(reconcile(
            cfg,
            health_rx,
            gen_rx,
            Reported {
                announced: announced_tx,
                withdrawn: withdrawn_tx,
            },
        ));
        Ok(Self {
            health,
            announced,
            withdrawn,
            stopping,
            bird,
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

    /// Waits until BIRD confirmed the routes withdrawn (`birdc disable`
    /// succeeded for every protocol, or a fresh BIRD that never enabled
    /// them), at most `limit`. Returns whether it did. Unlike
    /// [`Self::wait_announced`]`(false, ..)`, which ends as soon as the
    /// withdrawal is asked for, this is the moment a stop's grace may
    /// start ([`super::supervise::DRAIN_GRACE`]).
    pub async fn wait_withdrawn(&self, limit: Duration) -> bool {
        let mut rx = self.withdrawn.clone();
        tokio::time::timeout(limit, rx.wait_for(|w| *w))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The pid of the BIRD child now running (0 if none).
    pub fn bird_pid(&self) -> u32 {
        self.bird.pid()
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
        self.bird.signal(Stop::Term);
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
            self.bird.signal(Stop::Kill);
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

/// A child to signal from another thread: its pid and a pidfd opened
/// right after the spawn. A host that reaps every child itself (Asterisk's
/// SIGCHLD handler, `waitpid(-1)`) may reap it behind our back, and its pid
/// may then be reused by an unrelated process: the pidfd still names our
/// child (the kernel refuses the signal, ESRCH, once it is gone), a bare
/// pid would not.
struct ChildRef {
    pid: u32,
    how: Reach,
}

/// How a [`ChildRef`] reaches its process.
enum Reach {
    /// Through its pidfd: never another process, even after a reap.
    Pidfd(OwnedFd),
    /// By its pid, only where the kernel has no pidfd_open (ENOSYS,
    /// before Linux 5.3), as before pidfds.
    Pid,
    /// Not at all: pidfd_open failed otherwise (ESRCH: the host reaped it
    /// already, so its pid may name another process by now).
    Gone,
}

/// The signals a [`ChildRef`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Term,
    Kill,
}

impl ChildRef {
    /// Opens the pidfd of `child`, just spawned (and not yet waited for,
    /// so its pid is still its own unless the host reaped it already).
    fn of(child: &std::process::Child) -> Self {
        let pid = rustix::process::Pid::from_child(child);
        let how = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => Reach::Pidfd(fd),
            Err(rustix::io::Errno::NOSYS) => {
                log::debug!(
                    "pidfd_open: not in this kernel; signalling pid {}",
                    child.id()
                );
                Reach::Pid
            }
            Err(e) => {
                log::debug!(
                    "pidfd_open({}): {e}; it is gone, never signalled",
                    child.id()
                );
                Reach::Gone
            }
        };
        Self {
            pid: child.id(),
            how,
        }
    }

    /// Sends `sig` unless the child is gone.
    fn signal(&self, sig: Stop) {
        match &self.how {
            Reach::Pidfd(fd) => {
                let sig = match sig {
                    Stop::Kill => rustix::process::Signal::KILL,
                    Stop::Term => rustix::process::Signal::TERM,
                };
                // ESRCH: it has exited (reaped or not); nothing to do.
                let _ = rustix::process::pidfd_send_signal(fd, sig);
            }
            // SAFETY: kill has no memory preconditions; the pid is our
            // child, not yet waited for by us.
            Reach::Pid => unsafe {
                let sig = match sig {
                    Stop::Kill => libc::SIGKILL,
                    Stop::Term => libc::SIGTERM,
                };
                libc::kill(self.pid as libc::pid_t, sig);
            },
            Reach::Gone => {}
        }
    }
}

/// The BIRD child now running, if any: set by its parent thread after
/// each spawn, cleared once it was waited for; signalled by
/// [`Announcer::stop`] from another thread.
#[derive(Default)]
struct Running(Mutex<Option<ChildRef>>);

impl Running {
    fn set(&self, c: Option<ChildRef>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    fn pid(&self) -> u32 {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref().map_or(0, |c| c.pid)
    }

    /// Sends `sig` to the BIRD child now running, if any.
    fn signal(&self, sig: Stop) {
        if let Some(c) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            c.signal(sig);
        }
    }
}

/// `bird -p -c CONFIG`: refuses a config BIRD would not start with.
fn check_config(cfg: &AnnounceConfig) -> Result<(), AnnounceError> {
    let (status, _, err) = output(
        Command::new(&cfg.bird)
            .arg("-p")
            .arg("-c")
            .arg(&cfg.bird_config),
        CHECK_WAIT,
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

/// How long `bird -p` may take to check the config.
const CHECK_WAIT: Duration = Duration::from_secs(30);

/// How long a `birdc` command may take: a BIRD that hangs (or a stuck
/// socket) must not stop the routes from following health for good.
pub const BIRDC_WAIT: Duration = Duration::from_secs(5);

/// Runs `cmd` to its end (blocking), killing it (SIGKILL) after `limit`
/// (an error of kind `TimedOut`): whether it exited 0, its stdout and
/// stderr, trimmed. A host such as Asterisk reaps every child in its own
/// SIGCHLD handler (`waitpid(-1)`), so the exit status may be gone (ECHILD):
/// then `None`, and the caller judges by the output. For the same reason
/// this is std's process API, never tokio's (whose child reaping must not
/// be installed in such a host).
fn output(cmd: &mut Command, limit: Duration) -> std::io::Result<(Option<bool>, String, String)> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The watchdog kills the child at the limit: its pipes close, and the
    // reads below end. It is told before the child is waited for, and
    // signals through a pidfd ([`ChildRef`]), so it never signals a pid the
    // child no longer holds (the host may reap it meanwhile).
    let target = ChildRef::of(&child);
    let (done, told) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::Builder::new()
        .name("anytun-cmd-wait".into())
        .spawn(move || {
            let late = matches!(
                told.recv_timeout(limit),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            if late {
                target.signal(Stop::Kill);
            }
            late
        })?;
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
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    if killed {
        let _ = child.wait();
        log::warn!(
            "{:?} gave no answer within {} ms: killed",
            cmd.get_program(),
            limit.as_millis()
        );
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} ms (killed)", limit.as_millis()),
        ));
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
    // prctl, getppid, close_range or fcntl, getrlimit, _exit) run between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            cloexec_from(3);
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
    // With a pre_exec hook std forks itself and, when exec fails, waits
    // for the child and asserts it could: a host that reaped the child
    // first (Asterisk's SIGCHLD handler) makes that a panic, which would
    // end the bird-supervisor thread and with it BIRD's restarts. Caught
    // here, it is one more failed start (logged, retried).
    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn()))
        .unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the exec failed and its status was reaped by the host",
            ))
        });
    spawned.map_err(|source| AnnounceError::Spawn {
        bird: cfg.bird.display().to_string(),
        config: cfg.bird_config.display().to_string(),
        source,
    })
}

/// Marks every descriptor from `first` up close-on-exec, in a forked child
/// before exec. A host such as Asterisk opens its sockets and logs without
/// `O_CLOEXEC` (its own fork helper closes them); BIRD must not keep the
/// host's SIP, AMI or HTTP sockets open. Close-on-exec rather than close:
/// std's exec-error pipe must survive until exec. `close_range` (Linux
/// 5.11) in one call; on an older kernel, `fcntl` on each possible
/// descriptor below the open-files limit (at most 2^20).
///
/// # Safety
/// Async-signal-safe; call it only between fork and exec.
unsafe fn cloexec_from(first: libc::c_uint) {
    if libc::syscall(
        libc::SYS_close_range,
        first,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) == 0
    {
        return;
    }
    let mut lim: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        lim.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1024
    };
    for fd in first as libc::c_int..max {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

/// Waits for BIRD; starts it again (after a second) when it dies while
/// the daemon runs, and bumps the generation so the routes are re-enabled.
fn supervise(
    cfg: AnnounceConfig,
    mut child: std::process::Child,
    generation: watch::Sender<u64>,
    stopping: Arc<AtomicBool>,
    bird: Arc<Running>,
) {
    loop {
        let status = child.wait();
        bird.set(None);
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
        bird.set(Some(ChildRef::of(&child)));
        generation.send_modify(|g| *g += 1);
    }
}

/// How often a refused `birdc` (BIRD still starting) is retried.
const RETRY: Duration = Duration::from_millis(50);

/// What [`reconcile`] reports: `announced` only once BIRD confirmed an
/// enable (false from the moment a disable is asked for); `withdrawn` only
/// once BIRD confirmed a disable (false from the moment an enable is asked
/// for). Both false while a change is under way.
struct Reported {
    announced: watch::Sender<bool>,
    withdrawn: watch::Sender<bool>,
}

/// Brings BIRD's protocols in line with the wanted health, again after
/// every BIRD restart.
async fn reconcile(
    cfg: AnnounceConfig,
    mut health: watch::Receiver<Health>,
    mut generation: watch::Receiver<u64>,
    report: Reported,
) {
    // What BIRD has now (None: unknown, after a failed command that may
    // have changed some protocols): a fresh BIRD has them disabled.
    let mut applied = Some(false);
    let mut failing = false;
    loop {
        let want = health.borrow_and_update().announce();
        if applied != Some(want) {
            // Neither state holds until BIRD confirms the new one.
            report.announced.send_replace(false);
            report.withdrawn.send_replace(false);
            match birdc_set(&cfg, want).await {
                Ok(()) => {
                    applied = Some(want);
                    report.announced.send_replace(want);
                    report.withdrawn.send_replace(!want);
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
                    // Some protocols may have changed: redo the whole set,
                    // even if the wish turns back meanwhile.
                    applied = None;
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
                report.announced.send_replace(false);
                report.withdrawn.send_replace(true);
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
        BIRDC_WAIT,
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

#[cfg(test)]
#[path = "announce_tests.rs"]
mod tests;
