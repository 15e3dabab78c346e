//! The hosted proxy behind `anytun_proxy_*` (daemon builds): the settings
//! of an `anytun_proxy_config` turned into an anytund [`Config`], and the
//! handle that boots it ([`host::boot`]), reports on it and stops it.
//!
//! Locks: the handle's state mutex is never held while the library logs
//! (booting and stopping log, and the host's log callback may ask for the
//! status), so only the short reads of status run under it. Stops and
//! reloads (a restart) are serialised by a second mutex, so every stop
//! returns after the threads were joined and a restart is never raced by
//! a stop.
//!
//! Reloads ([`AnytunProxy::reload`]): a change of the peer list alone is
//! applied live, as anytund's SIGHUP does; any other change restarts the
//! proxy, at once when it carries no call or a peer is up and synced to
//! take its sessions (and may: `reload::peer_may_take`), else deferred
//! ([`Deferral`]) until one of them holds.

mod reload;

use super::errors::FfiError;
use super::{fill_chars_cut, opt_str_arg, sys};
use crate::config::{self, AnnounceConfig, Config, PeerConfig, SyncConfig};
use crate::crypto::PublicKey;
use crate::runtime::host::{self, Booted};
use reload::Deferral;
#[cfg(test)]
pub(super) use reload::{peer_may_take, peers_only};
use std::ffi::c_int;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where a handle is.
enum Phase {
    Idle,
    /// `start` is booting it (outside the lock).
    Starting,
    /// Shared only with a reload or the watcher, for a call that must not
    /// run under the state lock (it may log); a stop, serialised with
    /// them, holds the only reference.
    Running(Arc<Booted>),
    /// `stop` is joining its threads (outside the lock).
    Stopping,
    Stopped,
}

/// An `anytun_proxy`: the [`Hosted`] proxy and the thread that applies a
/// deferred restart.
pub struct AnytunProxy {
    hosted: Arc<Hosted>,
    /// Started by the first deferred restart; joined by `stop`.
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl std::ops::Deref for AnytunProxy {
    type Target = Hosted;
    fn deref(&self) -> &Hosted {
        &self.hosted
    }
}

/// The proxy behind an [`AnytunProxy`], shared with its watcher thread.
pub struct Hosted {
    /// The settings it runs with (replaced by a reload that restarts it).
    cfg: Mutex<Config>,
    phase: Mutex<Phase>,
    stop_lock: Mutex<()>,
    /// A restart waiting for the calls to end, and the watcher's orders.
    deferral: Mutex<Deferral>,
    /// Wakes the watcher: a restart deferred, cancelled, or the stop.
    wake: Condvar,
}

fn state_err(code: c_int, why: &str) -> FfiError {
    FfiError::State {
        code,
        why: why.to_owned(),
    }
}

/// The pieces of a list setting: split at commas and white space.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
}

fn socket_addr(what: &'static str, s: &str) -> Result<SocketAddr, FfiError> {
    s.parse().map_err(|e| {
        FfiError::invalid(
            what,
            format!("{s:?}: {e} (expected IP:PORT or [IPv6]:PORT)"),
        )
    })
}

/// One peer entry, "ID ADDRESS PUBLIC_KEY" (also "ID@ADDRESS PUBLIC_KEY"),
/// with "revoked" after it for a peer refused from now on (as `revoked =
/// true` in anytund's `[[sync.peers]]`).
fn peer(text: &str) -> Result<PeerConfig, String> {
    let mut w: Vec<&str> = text
        .split(|c: char| c == ',' || c == '@' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let revoked = w.len() == 4 && w[3].eq_ignore_ascii_case("revoked");
    if revoked {
        w.pop();
    }
    let [id, address, key] = w[..] else {
        return Err(format!(
            "{text:?}: expected \"ID ADDRESS PUBLIC_KEY\" (3 fields, found {}), or \
             \"revoked\" after them",
            w.len()
        ));
    };
    let id = id
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=65534).contains(n))
        .ok_or_else(|| format!("{text:?}: node id {id:?} is not 1..65534"))?;
    let address = address
        .parse()
        .map_err(|e| format!("{text:?}: address {address:?}: {e}"))?;
    let public_key =
        PublicKey::from_base64(key).map_err(|e| format!("{text:?}: public key: {e}"))?;
    Ok(PeerConfig {
        id,
        address,
        public_key,
        revoked,
    })
}

/// The anytund config an `anytun_proxy_config` asks for.
///
/// # Safety
/// The strings of `c` must be NULL or NUL-terminated; `c.peers` NULL or
/// `c.n_peers` such strings.
pub(crate) unsafe fn settings(c: &sys::anytun_proxy_config) -> Result<Config, FfiError> {
    const WHAT: &str = "anytun_proxy_config";
    if c.flags & !sys::ANYTUN_PROXY_REUSE_PORT != 0 {
        return Err(FfiError::Reserved {
            what: WHAT,
            field: "flags",
        });
    }
    if c.reserved_u32.iter().any(|v| *v != 0) {
        return Err(FfiError::Reserved {
            what: WHAT,
            field: "reserved_u32",
        });
    }
    if c.reserved_ptr.iter().any(|p| !p.is_null()) {
        return Err(FfiError::Reserved {
            what: WHAT,
            field: "reserved_ptr",
        });
    }
    // SAFETY (every string read below): the caller's promise.
    let file = unsafe { opt_str_arg(c.config_file, "config_file") }?;
    let state_dir = unsafe { opt_str_arg(c.state_dir, "state_dir") }?;
    let mut cfg = match file {
        Some(f) => config::load(Path::new(f)).map_err(|e| FfiError::invalid("config_file", e))?,
        None => {
            let Some(_) = state_dir else {
                return Err(FfiError::invalid(
                    "state_dir",
                    "needed without a config_file (where the keys and the store live)",
                ));
            };
            Config {
                metrics_listen: None,
                ..Config::default()
            }
        }
    };
    if let Some(d) = state_dir {
        if d.is_empty() {
            return Err(FfiError::invalid("state_dir", "empty"));
        }
        let d = config::absolute(Path::new(d));
        cfg.network_key = d.join(config::NETWORK_KEY_FILE);
        cfg.subscribers = d.join(config::SUBSCRIBERS_FILE);
        if let Some(s) = &mut cfg.sync {
            s.node_key = d.join(config::NODE_KEY_FILE);
        }
    }
    if let Some(s) = unsafe { opt_str_arg(c.subscribers, "subscribers") }? {
        if s.is_empty() {
            return Err(FfiError::invalid("subscribers", "empty"));
        }
        cfg.subscribers = config::absolute(Path::new(s));
    }
    if c.node_id != 0 {
        cfg.proxy_id = u16::try_from(c.node_id)
            .ok()
            .filter(|n| (1..=65534).contains(n))
            .ok_or_else(|| {
                FfiError::invalid("node_id", format!("{} is not 1..65534", c.node_id))
            })?;
    }
    if c.worker_threads != 0 {
        if c.worker_threads > 64 {
            return Err(FfiError::invalid(
                "worker_threads",
                format!("{} is not 1..64", c.worker_threads),
            ));
        }
        cfg.worker_threads = c.worker_threads as usize;
    }
    if let Some(l) = unsafe { opt_str_arg(c.listen, "listen") }? {
        let list = words(l)
            .map(|a| socket_addr("listen", a).map(|a| a.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(FfiError::invalid("listen", "no address"));
        }
        cfg.listen = list;
    }
    if c.flags & sys::ANYTUN_PROXY_REUSE_PORT != 0 {
        cfg.reuse_port = true;
    }
    if let Some(a) = unsafe { opt_str_arg(c.sync_listen, "sync_listen") }? {
        let listen = socket_addr("sync_listen", a)?;
        match &mut cfg.sync {
            Some(s) => s.listen = listen,
            None => {
                cfg.sync = Some(SyncConfig {
                    node_key: cfg.network_key.with_file_name(config::NODE_KEY_FILE),
                    listen,
                    peers: Vec::new(),
                    startup_timeout: Duration::from_millis(config::DEFAULT_STARTUP_TIMEOUT_MS),
                    solo_grace: Duration::from_millis(config::DEFAULT_SOLO_GRACE_MS),
                    peer_detect: Duration::from_millis(config::DEFAULT_PEER_DETECT_MS),
                    keepalive: Duration::from_millis(config::DEFAULT_KEEPALIVE_MS),
                    idle_timeout: Duration::from_millis(config::DEFAULT_IDLE_TIMEOUT_MS),
                })
            }
        }
    }
    if c.n_peers > 0 {
        if c.peers.is_null() {
            return Err(FfiError::Null("peers"));
        }
        if c.n_peers > 1024 {
            return Err(FfiError::invalid(
                "n_peers",
                format!("{} peers: at most 1024", c.n_peers),
            ));
        }
        let Some(sync) = &mut cfg.sync else {
            return Err(FfiError::invalid(
                "peers",
                "peers need a sync_listen (here or [sync] in the config_file)",
            ));
        };
        let mut peers: Vec<PeerConfig> = Vec::with_capacity(c.n_peers);
        for i in 0..c.n_peers {
            // SAFETY: n_peers readable pointers by the caller's promise.
            let p = unsafe { *c.peers.add(i) };
            let text = unsafe { super::str_arg(p, "peers[i]") }?;
            let bad = |why: String| FfiError::invalid("peers", format!("peers[{i}]: {why}"));
            let pc = peer(text).map_err(bad)?;
            if pc.id == cfg.proxy_id {
                return Err(bad(format!("node id {} is this proxy's own", pc.id)));
            }
            if peers.iter().any(|q| q.id == pc.id) {
                return Err(bad(format!("node id {} is listed twice", pc.id)));
            }
            peers.push(pc);
        }
        sync.peers = peers;
    }
    if let Some(m) = unsafe { opt_str_arg(c.metrics_listen, "metrics_listen") }? {
        cfg.metrics_listen = if m.is_empty() {
            None
        } else {
            socket_addr("metrics_listen", m)?;
            Some(m.to_owned())
        };
    }
    // SAFETY: the caller's promise.
    unsafe { announce_settings(c, &mut cfg) }?;
    if let Some(s) = &cfg.sync {
        if s.peers.iter().any(|p| p.id == cfg.proxy_id) {
            return Err(FfiError::invalid(
                "node_id",
                format!("{} is also the id of one of its peers", cfg.proxy_id),
            ));
        }
    }
    Ok(cfg)
}

/// The announce fields of an `anytun_proxy_config` over the file's
/// `[announce]` (config/announce.rs has the same defaults and checks).
///
/// # Safety
/// As [`settings`].
unsafe fn announce_settings(
    c: &sys::anytun_proxy_config,
    cfg: &mut Config,
) -> Result<(), FfiError> {
    // SAFETY (every string read below): the caller's promise.
    if let Some(b) = unsafe { opt_str_arg(c.bird_config, "bird_config") }? {
        if b.is_empty() {
            return Err(FfiError::invalid("bird_config", "empty"));
        }
        let path = config::absolute(Path::new(b));
        match &mut cfg.announce {
            Some(a) => a.bird_config = path,
            None => {
                cfg.announce = Some(AnnounceConfig {
                    bird: "bird".into(),
                    birdc: "birdc".into(),
                    bird_socket: path.with_extension("ctl"),
                    bird_config: path,
                    protocols: vec!["anycast4".into(), "anycast6".into()],
                })
            }
        }
    }
    let needs = |what: &'static str| {
        FfiError::invalid(
            what,
            "needs bird_config (here or [announce] in the config_file)",
        )
    };
    if let Some(sock) = unsafe { opt_str_arg(c.bird_socket, "bird_socket") }? {
        let a = cfg.announce.as_mut().ok_or_else(|| needs("bird_socket"))?;
        if sock.is_empty() {
            return Err(FfiError::invalid("bird_socket", "empty"));
        }
        a.bird_socket = config::absolute(Path::new(sock));
    }
    if let Some(p) = unsafe { opt_str_arg(c.announce_protocols, "announce_protocols") }? {
        let a = cfg
            .announce
            .as_mut()
            .ok_or_else(|| needs("announce_protocols"))?;
        let list: Vec<String> = words(p).map(str::to_owned).collect();
        if list.is_empty() {
            return Err(FfiError::invalid(
                "announce_protocols",
                "name at least one static protocol",
            ));
        }
        if let Some(why) = list
            .iter()
            .find_map(|w| config::announce::check_protocol(w).err())
        {
            return Err(FfiError::invalid("announce_protocols", why));
        }
        a.protocols = list;
    }
    Ok(())
}

/// The settings of `new` that differ from `old`, by name.
fn differences(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut d = Vec::new();
    let mut check = |same: bool, name| {
        if !same {
            d.push(name)
        }
    };
    check(old.proxy_id == new.proxy_id, "node_id");
    check(old.listen == new.listen, "listen");
    check(old.reuse_port == new.reuse_port, "reuse_port");
    check(old.worker_threads == new.worker_threads, "worker_threads");
    check(
        old.network_key == new.network_key,
        "state_dir (network key)",
    );
    check(old.subscribers == new.subscribers, "subscribers");
    check(old.metrics_listen == new.metrics_listen, "metrics_listen");
    check(old.announce == new.announce, "bird_config ([announce])");
    let (os, ns) = (old.sync.as_ref(), new.sync.as_ref());
    check(os.map(|s| s.listen) == ns.map(|s| s.listen), "sync_listen");
    check(os.map(|s| &s.peers) == ns.map(|s| &s.peers), "peers");
    if d.is_empty() && old != new {
        d.push("other settings of the config_file");
    }
    d
}

impl AnytunProxy {
    /// A handle for `cfg`, not started.
    pub fn new(cfg: Config) -> Self {
        Self {
            hosted: Arc::new(Hosted {
                cfg: Mutex::new(cfg),
                phase: Mutex::new(Phase::Idle),
                stop_lock: Mutex::new(()),
                deferral: Mutex::new(Deferral::default()),
                wake: Condvar::new(),
            }),
            watcher: Mutex::new(None),
        }
    }

    /// Boots the proxy (outside the state lock: booting logs).
    pub fn start(&self) -> Result<(), FfiError> {
        {
            let mut p = self.phase();
            match *p {
                Phase::Idle => *p = Phase::Starting,
                Phase::Starting | Phase::Running(_) => {
                    return Err(state_err(
                        sys::ANYTUN_ERR_ALREADY_STARTED,
                        "the proxy is already started",
                    ))
                }
                Phase::Stopping | Phase::Stopped => {
                    return Err(state_err(
                        sys::ANYTUN_ERR_STOPPED,
                        "the proxy was stopped (free it and make a new one)",
                    ))
                }
            }
        }
        let booted = boot(&self.cfg(), false);
        let mut p = self.phase();
        match booted {
            Ok(b) => {
                *p = Phase::Running(b.into());
                Ok(())
            }
            Err(e) => {
                // Nothing runs: the node was dropped, its threads joined.
                *p = Phase::Idle;
                Err(e)
            }
        }
    }

    /// Stops it and joins every thread it started.
    pub fn stop(&self) -> Result<(), FfiError> {
        // Node::stop must not run on one of its own threads (the log
        // callback runs there) or inside any tokio runtime.
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(FfiError::InCallback("anytun_proxy_stop/free"));
        }
        // A restart waiting for the calls to end is dropped; the watcher
        // (perhaps restarting the proxy now) ends and is joined first, as
        // it takes the stop lock too.
        self.end_watcher();
        let _serial = self.stop_lock.lock().unwrap_or_else(|e| e.into_inner());
        let booted = {
            let mut p = self.phase();
            match std::mem::replace(&mut *p, Phase::Stopping) {
                Phase::Running(b) => b,
                Phase::Idle | Phase::Stopped | Phase::Stopping => {
                    *p = Phase::Stopped;
                    return Ok(());
                }
                // A start on another thread: let it finish, then stop.
                Phase::Starting => {
                    *p = Phase::Starting;
                    // No watcher runs before it runs: a later reload may
                    // defer again.
                    self.deferral().quit = false;
                    return Err(state_err(
                        sys::ANYTUN_ERR_ALREADY_STARTED,
                        "the proxy is starting on another thread; stop it once started",
                    ));
                }
            }
        };
        halt(booted);
        *self.phase() = Phase::Stopped;
        Ok(())
    }

    /// Withdraws (`true`) or announces again (`false`) the anycast routes
    /// of the running proxy, which keeps serving (anytund's SIGUSR1/2).
    pub fn drain(&self, on: bool) -> Result<(), FfiError> {
        // The log line is written outside the state lock.
        let routes = {
            let p = self.phase();
            match &*p {
                Phase::Running(b) => b.routes.state(),
                _ => {
                    return Err(state_err(
                        sys::ANYTUN_ERR_NOT_STARTED,
                        "the proxy is not running (anytun_proxy_start)",
                    ))
                }
            }
        };
        if !routes.announcing {
            return Err(FfiError::invalid(
                "drain",
                "this proxy announces nothing (no bird_config or [announce])",
            ));
        }
        let why = if on {
            "anytun_proxy_drain"
        } else {
            "anytun_proxy_drain off"
        };
        let done = match &*self.phase() {
            Phase::Running(b) => {
                b.routes.set_drained(on);
                Ok(())
            }
            _ => Err(state_err(
                sys::ANYTUN_ERR_NOT_STARTED,
                "the proxy is not running (anytun_proxy_start)",
            )),
        };
        if done.is_ok() {
            log::info!("{why}: {}", drain_words(on));
        }
        done
    }

    /// The status, read under the state lock (nothing in it logs).
    pub fn status(&self, s: &mut sys::anytun_proxy_status) -> Result<(), FfiError> {
        {
            let cfg = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
            s.node_id = u32::from(cfg.proxy_id);
            s.peers = cfg.sync.as_ref().map_or(0, |x| x.peers.len() as u32);
        }
        s.reload_pending = u32::from(self.deferral().pending.is_some());
        let p = self.phase();
        let b = match &*p {
            Phase::Idle | Phase::Starting => {
                s.state = sys::ANYTUN_PROXY_IDLE as i32;
                return Ok(());
            }
            Phase::Stopping | Phase::Stopped => {
                s.state = sys::ANYTUN_PROXY_STOPPED as i32;
                return Ok(());
            }
            Phase::Running(b) => b,
        };
        let r = b.node.readiness().borrow().clone();
        s.state = if r.failed.is_some() {
            sys::ANYTUN_PROXY_FAILED
        } else if r.serving {
            sys::ANYTUN_PROXY_SERVING
        } else {
            sys::ANYTUN_PROXY_SYNCING
        } as i32;
        s.ready = u32::from(r.ready());
        s.peers_up = r.peers_up as u32;
        s.peers_synced = r.peers_synced as u32;
        if let Some(snap) = b.node.snapshot() {
            s.sessions = snap.sessions as u32;
            s.calls = snap.calls as u32;
            s.registrations = snap.registrations as u32;
            s.carried = snap.carried as u32;
            s.subscribers = snap.subscribers as u32;
            s.frames_relayed = snap.stats.media_relayed;
            s.dropped = snap.stats.drops.total();
        }
        s.udp_port = b.node.local_addrs().first().map_or(0, |a| a.port());
        s.sync_port = b.node.peer_addr().map_or(0, |a| a.port());
        fill_chars_cut(&mut s.network_key, &b.network_public.to_base64());
        fill_chars_cut(&mut s.detail, r.failed.as_deref().unwrap_or(""));
        let routes = b.routes.state();
        s.routes = [
            (routes.announcing, sys::ANYTUN_PROXY_ROUTES_ANNOUNCING),
            (routes.announced, sys::ANYTUN_PROXY_ROUTES_ANNOUNCED),
            (routes.overloaded, sys::ANYTUN_PROXY_ROUTES_OVERLOADED),
            (routes.drained, sys::ANYTUN_PROXY_ROUTES_DRAINED),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |bits, (_, bit)| bits | bit);
        Ok(())
    }

    /// The configured peers with their link states, by node id, as the
    /// sync task last published them on the metrics board (what `/status`
    /// says): at once on a link or sync state change, figures at most
    /// 500 ms old.
    pub fn peers(&self) -> Result<Vec<sys::anytun_proxy_peer_info>, FfiError> {
        let cfg = self.cfg();
        let Some(sync) = &cfg.sync else {
            return Ok(Vec::new());
        };
        let board = match &*self.phase() {
            Phase::Running(b) => b.node.metrics_board().and_then(|m| m.sync()),
            _ => None,
        };
        let mut v: Vec<_> = sync
            .peers
            .iter()
            .map(|pc| {
                let mut info = sys::anytun_proxy_peer_info {
                    node_id: u32::from(pc.id),
                    state: sys::ANYTUN_PEER_DOWN as i32,
                    ..Default::default()
                };
                fill_chars_cut(&mut info.address, &pc.address.to_string());
                if let Some(ps) = board
                    .as_ref()
                    .and_then(|b| b.peers.iter().find(|p| p.node == pc.id))
                {
                    if ps.connected {
                        info.state = sys::ANYTUN_PEER_UP as i32;
                    }
                    info.connects = ps.connects;
                    info.queued_bytes = ps.queued_bytes as u64;
                    info.last_heard_ms = ps.last_heard_ms.unwrap_or(0);
                    fill_chars_cut(&mut info.last_error, ps.last_error.as_deref().unwrap_or(""));
                }
                info
            })
            .collect();
        v.sort_by_key(|i| i.node_id);
        Ok(v)
    }

    /// The node's public key, the node key made when missing.
    pub fn node_key(&self) -> Result<String, FfiError> {
        let path: PathBuf = host::node_key_path(&self.cfg());
        host::node_key(&path)
            .map(|k| k.public().to_base64())
            .map_err(FfiError::Boot)
    }

    /// A page of the proxy's client sessions after `after` (see
    /// `anytun_proxy_sessions`); empty unless running.
    pub fn sessions(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<sys::anytun_proxy_session_info>, FfiError> {
        let p = self.phase();
        let Phase::Running(b) = &*p else {
            return Ok(Vec::new());
        };
        // 0 is no session id: from the first.
        let after = crate::session::SessionId::from_raw(after);
        let page = b
            .node
            .with_core(|core| core.sessions_page(after, limit))
            .unwrap_or_default();
        Ok(page
            .into_iter()
            .map(|(s, names, calls)| {
                let mut info = sys::anytun_proxy_session_info {
                    session_id: s.id.raw(),
                    serving: u32::from(s.serving.get()),
                    calls: u32::try_from(calls).unwrap_or(u32::MAX),
                    ..Default::default()
                };
                fill_chars_cut(&mut info.address, &s.addr.to_string());
                fill_chars_cut(&mut info.client_key, &s.client_key.to_base64());
                let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                fill_chars_cut(&mut info.names, &names.join(","));
                info
            })
            .collect())
    }
}

impl Hosted {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deferral(&self) -> MutexGuard<'_, Deferral> {
        self.deferral.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the settings in force.
    fn cfg(&self) -> Config {
        self.cfg.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a drain does, for the log.
fn drain_words(on: bool) -> &'static str {
    if on {
        "draining (withdrawing the anycast routes, still serving)"
    } else {
        "announcing the anycast routes again (when ready)"
    }
}

/// Boots `cfg` (its panics kept here), logging where it runs.
fn boot(cfg: &Config, drained: bool) -> Result<Box<Booted>, FfiError> {
    let name = format!("anytun-px{}", cfg.proxy_id);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        host::boot_drained(cfg, &name, drained)
    })) {
        Ok(Ok(b)) => {
            log::info!(
                "proxy {} started in this process; network public key {}",
                b.proxy_id,
                b.network_public
            );
            Ok(Box::new(b))
        }
        Ok(Err(e)) => Err(FfiError::Boot(e.to_string())),
        Err(_) => Err(FfiError::Internal("starting the proxy panicked".into())),
    }
}

/// Stops a booted proxy; every thread it started is joined on return.
/// Only the stop lock's holder calls it, when no other reference is left.
fn halt(b: Arc<Booted>) {
    let Some(b) = Arc::into_inner(b) else {
        log::error!("proxy: still in use by another thread: not stopped");
        return;
    };
    let id = b.proxy_id;
    // Withdrawn first (BIRD stopped, its thread joined), as anytund does.
    b.routes.stop();
    let report = b.node.stop();
    if !report.joined {
        log::warn!("proxy {id}: some tasks took longer than the stop timeout to end");
    }
    log::info!("proxy {id} stopped");
}
