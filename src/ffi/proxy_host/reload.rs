//! Reloads of the hosted proxy ([`AnytunProxy::reload`]): what changed,
//! the live peer-list path, and the restart, at once or deferred until the
//! proxy carries no call (or a synced peer may carry them), with the
//! watcher thread that runs a deferred one. No log line is made while the
//! deferral's lock is held: the host's log callback may read the status.

use super::{boot, differences, halt, state_err, AnytunProxy, Booted, Hosted, Phase};
use crate::config::Config;
use crate::ffi::errors::FfiError;
use crate::ffi::sys;
use crate::runtime::host;
use std::time::Duration;

/// How often the watcher looks whether the proxy still carries a call,
/// while a restart waits (one O(1) read of the counters the core published
/// after its last batch; no lock of the core taken).
const WATCH_TICK: Duration = Duration::from_millis(200);

/// At most one restart waits: a later reload replaces it, a reload back to
/// the running settings cancels it, a stop drops it.
#[derive(Default)]
pub(super) struct Deferral {
    /// The settings to restart with, and what changed (for the log).
    pub(super) pending: Option<(Config, String)>,
    /// The handle is stopping: the watcher ends.
    pub(super) quit: bool,
}

impl AnytunProxy {
    /// Tells the watcher to end (dropping a deferred restart) and joins
    /// it.
    pub(super) fn end_watcher(&self) {
        // Logged after the lock is released: the host's log callback may
        // ask for the status, which takes it.
        let dropped = {
            let mut d = self.deferral();
            d.quit = true;
            d.pending.take()
        };
        if let Some((_, what)) = dropped {
            log::info!("proxy: stopped with a restart pending ({what} changed): dropped");
        }
        self.wake.notify_all();
        let w = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = w {
            let _ = w.join();
        }
    }

    /// Applies a reload (see `anytun_proxy_reload` in include/anytun.h):
    /// nothing when `new` asks for what runs (a pending restart is then
    /// cancelled); a change of the peer list alone applied live, as
    /// anytund's SIGHUP does ([`host::reload_sync_blocking`]); any other
    /// change restarts the proxy with `new` (the old settings again if
    /// `new` cannot start), at once if it carries no call or a peer is up
    /// and synced to take its sessions ([`peer_may_take`]), else once one
    /// of them holds (deferred; a later reload replaces it). Serialised
    /// with stops, except for their end of the watcher ([`Self::defer`]);
    /// never on one of the node's threads.
    pub fn reload(&self, new: Config) -> Result<(), FfiError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(FfiError::InCallback("anytun_proxy_reload"));
        }
        let _serial = self.stop_lock.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.cfg();
        let running = match &*self.phase() {
            Phase::Running(b) => b.clone(),
            _ => {
                return Err(state_err(
                    sys::ANYTUN_ERR_NOT_STARTED,
                    "the proxy is not running (anytun_proxy_start)",
                ))
            }
        };
        let id = running.proxy_id;
        let changed = differences(&old, &new);
        if changed.is_empty() {
            drop(running);
            // Taken out first: no log line under the lock (see end_watcher).
            let cancelled = self.deferral().pending.take();
            if let Some((_, what)) = cancelled {
                log::info!(
                    "proxy {id}: reloaded with the settings it runs: the pending restart \
                     ({what} changed) is cancelled"
                );
            }
            return Ok(());
        }
        if peers_only(&old, &new) {
            // Outside the state lock: applying it logs.
            let applied = host::reload_sync_blocking(&running.node, &old, &new);
            drop(running);
            let change = applied.map_err(|e| FfiError::Boot(e.to_string()))?;
            if let Some(c) = change {
                log::info!(
                    "proxy {id}: peers changed: applied live (linked: {:?}; closed: {:?}); \
                     the other links and the calls stay up",
                    c.added,
                    c.removed
                );
            }
            *self.cfg.lock().unwrap_or_else(|e| e.into_inner()) = new;
            let cancelled = self.deferral().pending.take();
            if let Some((_, what)) = cancelled {
                log::info!(
                    "proxy {id}: the rest of the settings are those it runs: the pending \
                     restart ({what} changed) is cancelled"
                );
            }
            return Ok(());
        }
        let what = changed.join(", ");
        let (go, carried) = restart_now(&running, &old, &new);
        drop(running);
        if go.is_none() {
            return self.defer(id, new, what, carried);
        }
        // This restart applies `new`, which replaces a pending one.
        self.deferral().pending = None;
        match self.restart(old, new, &what, false)? {
            None => Ok(()),
            Some((new, carried)) => self.defer(id, new, what, carried),
        }
    }

    /// Records a restart to apply once the proxy carries no call (or a
    /// synced peer may carry them), and makes sure the watcher runs
    /// (joined by `stop`); `ANYTUN_ERR_STOPPED` if a stop came first.
    fn defer(
        &self,
        id: crate::session::ProxyId,
        new: Config,
        what: String,
        carried: usize,
    ) -> Result<(), FfiError> {
        let replaced = {
            let mut d = self.deferral();
            if d.quit {
                // Stopping: no watcher may start again.
                return Err(state_err(sys::ANYTUN_ERR_STOPPED, "the proxy is stopping"));
            }
            d.pending.replace((new, what.clone()))
        };
        match replaced {
            None => log::warn!(
                "proxy {id}: {what} changed: the restart is deferred until the calls it \
                 carries end ({carried} sessions it serves are in calls, and no peer up \
                 and synced may take them across this change); `anytun show status` shows \
                 it pending"
            ),
            Some((_, before)) => log::warn!(
                "proxy {id}: {what} changed: replaces the pending restart ({before} changed), \
                 still deferred until the calls it carries end"
            ),
        }
        let mut w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        // A stop that came meanwhile (it does not wait for the stop lock
        // before ending the watcher) has dropped the restart and may have
        // found no watcher to join: none may start now. Checked under the
        // watcher's lock, which that stop takes after setting `quit`.
        if self.deferral().quit {
            return Err(state_err(sys::ANYTUN_ERR_STOPPED, "the proxy is stopping"));
        }
        if w.is_none() {
            let hosted = self.hosted.clone();
            match std::thread::Builder::new()
                .name(format!("anytun-px{id}-reload"))
                .spawn(move || hosted.watch())
            {
                Ok(h) => *w = Some(h),
                // Nothing watches: the next reload tries again.
                Err(e) => log::error!("proxy {id}: cannot start the reload watcher: {e}"),
            }
        }
        self.wake.notify_all();
        Ok(())
    }
}

impl Drop for AnytunProxy {
    /// No watcher outlives its handle (`stop` has joined it already).
    fn drop(&mut self) {
        self.end_watcher();
    }
}

/// Whether only the peer list differs between `old` and `new`.
pub(in crate::ffi) fn peers_only(old: &Config, new: &Config) -> bool {
    let (Some(o), Some(n)) = (&old.sync, &new.sync) else {
        return false;
    };
    let mut same = old.clone();
    if let Some(s) = &mut same.sync {
        s.peers = n.peers.clone();
    }
    o.peers != n.peers && same == *new
}

/// Why a restart may run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Go {
    /// The proxy carries no call.
    Idle,
    /// It carries calls, but a peer is up and synced to take its sessions
    /// while it is down.
    PeerTakes,
}

/// Whether a restart from `old` to `new` may run now (and why), and how
/// many sessions it serves are in calls: when it carries no call, or when
/// a peer is up and synced to take its sessions while it is down and
/// [`peer_may_take`] the change (its clients reach that peer on the shared
/// anycast address, and it takes them back after, spec 15).
fn restart_now(b: &Booted, old: &Config, new: &Config) -> (Option<Go>, usize) {
    let carried = b.node.snapshot().map_or(0, |s| s.carried);
    if carried == 0 {
        return (Some(Go::Idle), 0);
    }
    let r = b.node.readiness().borrow().clone();
    let peer_takes = r.peers_up > 0 && r.peers_synced > 0 && peer_may_take(old, new);
    (peer_takes.then_some(Go::PeerTakes), carried)
}

/// Whether a synced peer may carry this proxy's calls across a restart
/// from `old` to `new`: only when it comes back as the same member of the
/// same network where its clients send. A new node id would leave its
/// peers' records naming the old one (it could not take its sessions
/// back); a new network key (state_dir) or a [sync] added, removed or
/// listening elsewhere is not the member its peers synced with; a new
/// listen set or reuse_port may no longer be where its clients send, or
/// share the port with the peer. Other changes (threads, the store, the
/// metrics, timers) keep it that member.
pub(in crate::ffi) fn peer_may_take(old: &Config, new: &Config) -> bool {
    let member = |c: &Config| {
        c.sync.as_ref().map(|s| {
            (
                c.proxy_id,
                c.network_key.clone(),
                s.listen,
                s.node_key.clone(),
            )
        })
    };
    member(old).is_some()
        && member(old) == member(new)
        && old.listen == new.listen
        && old.reuse_port == new.reuse_port
}

impl Hosted {
    /// The watcher thread: idle until a restart is deferred, then a look
    /// every [`WATCH_TICK`] at the proxy's O(1) count of what it carries,
    /// until the restart ran, was cancelled, or the handle stops.
    fn watch(&self) {
        let mut d = self.deferral();
        loop {
            if d.quit {
                return;
            }
            if d.pending.is_none() {
                d = self.wake.wait(d).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            d = match self.wake.wait_timeout(d, WATCH_TICK) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            if d.quit || d.pending.is_none() {
                continue;
            }
            drop(d);
            self.apply_deferred();
            d = self.deferral();
        }
    }

    /// Runs the pending restart if the proxy may restart now.
    fn apply_deferred(&self) {
        let _serial = self.stop_lock.lock().unwrap_or_else(|e| e.into_inner());
        let running = match &*self.phase() {
            Phase::Running(b) => Some(b.clone()),
            _ => None,
        };
        let Some(running) = running else {
            // Stopped meanwhile (a failed restart): nothing to restart.
            self.deferral().pending = None;
            return;
        };
        let id = running.proxy_id;
        let old = self.cfg();
        let peek = {
            let d = self.deferral();
            d.pending
                .as_ref()
                .filter(|_| !d.quit)
                .map(|(n, _)| n.clone())
        };
        let Some(new) = peek else { return };
        let (go, _) = restart_now(&running, &old, &new);
        drop(running);
        if go.is_none() {
            return;
        }
        // Under the stop lock no reload replaced it; a stop may drop it.
        let pending = {
            let mut d = self.deferral();
            if d.quit {
                None
            } else {
                d.pending.take()
            }
        };
        let Some((new, what)) = pending else { return };
        match self.restart(old, new, &what, true) {
            Ok(None) => {}
            Ok(Some((new, carried))) => {
                let back = {
                    let mut d = self.deferral();
                    let back = !d.quit && d.pending.is_none();
                    if back {
                        d.pending = Some((new, what));
                    }
                    back
                };
                if back {
                    log::info!(
                        "proxy {id}: a call came up ({carried} sessions it serves are in calls): \
                         the restart is deferred again"
                    );
                }
            }
            Err(e) => log::error!("proxy {id}: the deferred restart: {e}"),
        }
    }

    /// Restarts the running proxy with `new` (`old` again if `new` cannot
    /// start), if it still may ([`restart_now`], looked at again right
    /// before it stops: a call may have come up since the caller looked);
    /// else it runs on and `new` comes back with the sessions in calls, to
    /// be deferred. `deferred`: a deferred restart (logged as such). The
    /// caller holds the stop lock.
    fn restart(
        &self,
        old: Config,
        new: Config,
        what: &str,
        deferred: bool,
    ) -> Result<Option<(Config, usize)>, FfiError> {
        let not_running = || {
            state_err(
                sys::ANYTUN_ERR_NOT_STARTED,
                "the proxy is not running (anytun_proxy_start)",
            )
        };
        // Logged before the last look, outside the state lock.
        let (go, carried, id) = match &*self.phase() {
            Phase::Running(b) => {
                let (go, carried) = restart_now(b, &old, &new);
                (go, carried, b.proxy_id)
            }
            _ => return Err(not_running()),
        };
        let why = match go {
            None => return Ok(Some((new, carried))),
            Some(Go::Idle) => "it carries no call now".to_owned(),
            Some(Go::PeerTakes) => format!(
                "{carried} sessions it serves are in calls, and a peer is up and synced to \
                 take them while it restarts"
            ),
        };
        if deferred {
            log::info!("proxy {id}: {why}: the deferred restart runs");
        }
        log::info!("proxy {id}: {what} changed: restarting it with the new settings ({why})");
        let running = {
            let mut p = self.phase();
            // The last look: a call set up since would be cut (within the
            // core's last batch, whose counters it reads).
            let now = match &*p {
                Phase::Running(b) => restart_now(b, &old, &new),
                _ => return Err(not_running()),
            };
            if let (None, carried) = now {
                drop(p);
                return Ok(Some((new, carried)));
            }
            // Seen as stopping by status calls until it runs again.
            match std::mem::replace(&mut *p, Phase::Stopping) {
                Phase::Running(b) => b,
                other => {
                    *p = other;
                    return Err(not_running());
                }
            }
        };
        // An operator's drain outlives the restart (read before the stop,
        // which drains too): maintenance must not end by a reload.
        let drained = running.routes.state().drained;
        if drained {
            log::info!("proxy {id}: drained, and stays drained after the restart");
        }
        // Stopped first: the new settings may bind the same ports.
        halt(running);
        let (result, cfg, booted) = match boot(&new, drained) {
            Ok(b) => (Ok(()), new, Ok(b)),
            Err(e) => {
                log::error!("proxy: {what} changed, but it cannot start with them: {e}");
                let again = boot(&old, drained);
                let why = match &again {
                    Ok(_) => FfiError::Boot(format!(
                        "{what} changed, but {e}: the proxy runs again with its old settings"
                    )),
                    Err(e2) => FfiError::Internal(format!(
                        "{what} changed, but {e}; with its old settings again: {e2}: \
                         the proxy is stopped"
                    )),
                };
                (Err(why), old, again)
            }
        };
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
        *self.phase() = match booted {
            Ok(b) => Phase::Running(b.into()),
            Err(_) => Phase::Stopped,
        };
        result.map(|()| None)
    }
}
