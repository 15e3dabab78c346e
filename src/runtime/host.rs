//! A proxy booted from a [`Config`] on a [`Node`]: what `anytund` and the
//! C ABI's hosted proxy (`anytun_proxy_*`, res_anytun's proxy mode) both
//! do between reading a config and serving: bind, open the subscriber
//! store, load or create the keys, lease send epochs, start the node, and
//! run the host tasks beside it (epoch lease renewal, the store task,
//! metrics, a status line every minute, and the routes following its health:
//! [`RouteSupervisor`], `[announce]` and `[overload]`). The caller keeps
//! what is its own: signals and the ready file (`anytund`), the handle (the
//! C ABI); it stops the routes before the node.

use crate::config::{self, Config};
use crate::crypto::SecretKey;
use crate::proxy::{Proxy, ProxyConfig};
use crate::runtime::node::{
    fingerprint_key, Node, NodeError, NodeOptions, RemoteSubscriber, SyncSetup, Udp,
};
use crate::runtime::peers::MembershipChange;
use crate::runtime::subscribers::{Replication, StoreTask};
use crate::runtime::supervise::RouteSupervisor;
use crate::runtime::udp::BindOptions;
use crate::runtime::RuntimeError;
use crate::session::epoch::LeaseFile;
use crate::session::{EpochLease, Epochs, ProxyId};
use crate::store::{ReloadWatch, SubscriberStore};
use crate::sync::link::LinkConfig;
use crate::sync::members::Member;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a proxy could not be booted; the text is in the operator's words
/// and names the setting or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A setting, a key file, the store or a socket.
    #[error("{0}")]
    Setup(String),
    /// The node could not start.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl From<String> for BootError {
    fn from(s: String) -> Self {
        Self::Setup(s)
    }
}

/// A booted proxy: the node and what the host reports about it.
///
/// `routes` is declared first: fields drop in declaration order, so a
/// `Booted` dropped without the orderly stop (an error path) stops BIRD
/// before the node, never leaving the routes announced for a node that is
/// gone.
pub struct Booted {
    /// The anycast routes following its health (`[announce]`, `[overload]`,
    /// drains). Stop it ([`RouteSupervisor::stop`]: withdraw, then BIRD
    /// stops) before the node.
    pub routes: RouteSupervisor,
    /// The node (stop it with [`Node::stop`]).
    pub node: Node,
    /// Its proxy id.
    pub proxy_id: ProxyId,
    /// The network's public key (clients need it).
    pub network_public: crate::crypto::PublicKey,
    /// Subscriber keys in the store at start.
    pub subscribers: usize,
    /// Whether it is a member of an anypsp network.
    pub member: bool,
    /// Where metrics are served, if they are.
    pub metrics: Option<SocketAddr>,
}

/// Loads the network key, creating it on first start.
pub fn network_key(path: &Path) -> Result<SecretKey, String> {
    if path.exists() {
        // A key file from before private keys were tagged is rewritten
        // tagged, so a client given it as --network-key refuses it at once.
        match SecretKey::upgrade_file(path) {
            Ok(true) => log::warn!(
                "{}: rewrote the network key in the tagged private-key form (same key)",
                path.display()
            ),
            Ok(false) => {}
            Err(e) => log::warn!("{e}: cannot tag the network key file; it still works"),
        }
        return SecretKey::read_file(path).map_err(|e| e.to_string());
    }
    let key = SecretKey::generate();
    key.write_new_file(path).map_err(|e| e.to_string())?;
    log::warn!(
        "created a new network key at {}; clients need its public key {}",
        path.display(),
        key.public()
    );
    Ok(key)
}

/// Opens the send-epoch lease file (`send-epoch`, next to the network key)
/// and records the first lease of this run in it (spec 8.8).
fn first_epoch_lease(network_key: &Path) -> Result<(LeaseFile, EpochLease), String> {
    let path = network_key.with_file_name("send-epoch");
    let mut file = LeaseFile::open(&path).map_err(|e| e.to_string())?;
    let unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let lease = file.first_lease(unix_secs).map_err(|e| e.to_string())?;
    log::info!(
        "send epochs {}..{} leased in {}",
        lease.start(),
        lease.end(),
        path.display()
    );
    Ok((file, lease))
}

/// Renews the epoch lease whenever the core runs low: the new end is
/// recorded durably (off the async threads) before it is granted.
async fn renew_epoch_lease(epochs: Epochs, mut file: LeaseFile) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !epochs.wants_lease() {
            continue;
        }
        let renewed = tokio::task::spawn_blocking(move || {
            let r = file.renew();
            (file, r)
        })
        .await;
        match renewed {
            Ok((f, Ok(lease))) => {
                file = f;
                log::info!("send epochs leased up to {}", lease.end());
                epochs.grant(lease);
            }
            Ok((f, Err(e))) => {
                file = f;
                // New sessions and imports are refused (Busy) until it works.
                log::error!("cannot renew the send-epoch lease: {e}");
            }
            Err(e) => {
                log::error!("send-epoch lease renewal stopped: {e}");
                return;
            }
        }
    }
}

/// The listen addresses, parsed.
pub fn addrs(cfg: &Config) -> Result<Vec<SocketAddr>, String> {
    cfg.listen
        .iter()
        .map(|a| a.parse().map_err(|e| format!("listen address {a}: {e}")))
        .collect()
}

/// The address of a bind error that failed because the port is taken.
fn port_in_use(e: &RuntimeError) -> Option<SocketAddr> {
    match e {
        RuntimeError::Bind { addr, source } if source.kind() == ErrorKind::AddrInUse => Some(*addr),
        _ => None,
    }
}

/// A bind error in the operator's words.
fn bind_error(e: RuntimeError) -> String {
    match port_in_use(&e) {
        Some(addr) => format!(
            "UDP {addr} is in use (another anytund?); to share the port on purpose, \
             set reuse_port = true in every daemon's config"
        ),
        None => e.to_string(),
    }
}

/// A metrics bind error in the operator's words, naming the setting.
fn metrics_bind_error(addr: &str, e: &std::io::Error) -> String {
    let why = if e.kind() == ErrorKind::AddrInUse {
        "in use (another anytund?)".to_owned()
    } else {
        e.to_string()
    };
    format!(
        "metrics on {addr}: {why}; set metrics_listen to another address, or \"\" to turn \
         metrics off"
    )
}

/// Loads the node key for peer links, creating it on first start. Only its
/// public key is ever printed.
pub fn node_key(path: &Path) -> Result<SecretKey, String> {
    if path.exists() {
        return SecretKey::read_file(path).map_err(|e| e.to_string());
    }
    let key = SecretKey::generate();
    key.write_new_file(path).map_err(|e| e.to_string())?;
    log::warn!(
        "created a new node key at {}; peers need its public key {}",
        path.display(),
        key.public()
    );
    Ok(key)
}

/// Where the node key is: `[sync] node_key`, or next to the network key.
pub fn node_key_path(cfg: &Config) -> PathBuf {
    match &cfg.sync {
        Some(s) => s.node_key.clone(),
        None => cfg.network_key.with_file_name(config::NODE_KEY_FILE),
    }
}

/// The `[[sync.peers]]` as the node takes them (revoked ones included:
/// they are refused and counted as `revoked`).
pub fn sync_peers(s: &config::SyncConfig) -> Result<Vec<Member>, String> {
    s.peers
        .iter()
        .map(|p| {
            Ok(Member {
                node: ProxyId::new(p.id).ok_or_else(|| format!("peer id {} is reserved", p.id))?,
                address: p.address,
                public_key: p.public_key,
                region: String::new(),
                failure_domain: String::new(),
                failover: Vec::new(),
                revoked: p.revoked,
            })
        })
        .collect()
}

/// Why a reload of `[sync]` was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A setting only a restart applies changed; nothing was applied.
    #[error("{0} changed: restart to apply it (the peer list is applied on reload)")]
    NeedsRestart(&'static str),
    /// The new peer list was refused (nothing changed), or the node stopped.
    #[error("peers not reloaded: {0}")]
    Node(#[from] NodeError),
    /// A peer entry cannot be used.
    #[error("{0}")]
    Setup(String),
}

/// What of `[sync]` a reload applies: the peer list. Checks that nothing
/// else changed between `running` and `new` (those need a restart).
/// `Ok(None)`: neither config is a member (nothing to do).
fn reload_peers(running: &Config, new: &Config) -> Result<Option<Vec<Member>>, ReloadError> {
    let (old, new) = match (&running.sync, &new.sync) {
        (None, None) => return Ok(None),
        (Some(o), Some(n)) => (o, n),
        _ => return Err(ReloadError::NeedsRestart("[sync] (added or removed)")),
    };
    if old.listen != new.listen {
        return Err(ReloadError::NeedsRestart("sync.listen"));
    }
    if old.node_key != new.node_key {
        return Err(ReloadError::NeedsRestart("sync.node_key"));
    }
    if (
        old.startup_timeout,
        old.peer_detect,
        old.keepalive,
        old.idle_timeout,
        old.solo_grace,
    ) != (
        new.startup_timeout,
        new.peer_detect,
        new.keepalive,
        new.idle_timeout,
        new.solo_grace,
    ) {
        return Err(ReloadError::NeedsRestart("a [sync] timer"));
    }
    sync_peers(new).map(Some).map_err(ReloadError::Setup)
}

/// Applies the `[sync]` peer list of `new` to a running node booted from
/// `running` (docs/anypsp-link.md 3.2), as `anytund` does on SIGHUP: peers
/// removed or `revoked = true` have their links closed and are refused and
/// counted from then on, new peers are linked, unchanged peers keep their
/// links. Every other `[sync]` setting needs a restart (refused, nothing
/// applied). `Ok(None)` for a proxy that is not a member.
///
/// # Errors
/// [`ReloadError`].
pub async fn reload_sync(
    node: &Node,
    running: &Config,
    new: &Config,
) -> Result<Option<MembershipChange>, ReloadError> {
    match reload_peers(running, new)? {
        None => Ok(None),
        Some(peers) => Ok(Some(node.set_peers(peers).await?)),
    }
}

/// As [`reload_sync`], blocking the calling thread, which must not be a
/// tokio runtime's (for the C ABI's `anytun_proxy_reload`).
///
/// # Errors
/// [`ReloadError`].
pub fn reload_sync_blocking(
    node: &Node,
    running: &Config,
    new: &Config,
) -> Result<Option<MembershipChange>, ReloadError> {
    match reload_peers(running, new)? {
        None => Ok(None),
        Some(peers) => Ok(Some(node.set_peers_blocking(peers)?)),
    }
}

/// The `[sync]` table as the node takes it.
fn sync_setup(
    s: &config::SyncConfig,
    key: SecretKey,
    network: &SecretKey,
    subscribers: tokio::sync::mpsc::Sender<RemoteSubscriber>,
) -> Result<SyncSetup, String> {
    let peers = sync_peers(s)?;
    let link = LinkConfig {
        keepalive_interval: s.keepalive,
        idle_timeout: s.idle_timeout,
        ..LinkConfig::default()
    };
    Ok(SyncSetup {
        node_key: key,
        listen: s.listen,
        peers,
        fp_key: fingerprint_key(network),
        startup_timeout: s.startup_timeout,
        solo_grace: s.solo_grace,
        peer_detect: s.peer_detect,
        link,
        apply_batch: crate::runtime::node::APPLY_BATCH,
        subscribers: Some(subscribers),
    })
}

/// The UDP sockets: bound now (a taken port costs no key and no lease), or
/// deferred until the node has synced when it shares its port with other
/// proxies (`reuse_port` and peers), so the kernel sends it no client
/// before it holds the tables.
fn udp(cfg: &Config, node: &Node, listen: Vec<SocketAddr>) -> Result<Udp, String> {
    let bind = BindOptions {
        reuse_port: cfg.reuse_port,
    };
    if cfg.sync.is_some() && cfg.reuse_port {
        return Ok(Udp::Deferred { listen, opts: bind });
    }
    let explicit_listen = cfg.listen != Config::default().listen;
    Ok(Udp::Bound(match node.bind_udp(&listen, bind) {
        Ok(s) => s,
        // A port in use is never a reason to carry on with fewer addresses.
        Err(e @ RuntimeError::Bind { .. }) if port_in_use(&e).is_some() => {
            return Err(bind_error(e))
        }
        // The built-in defaults listen on IPv6 too; a host without IPv6
        // should still start on IPv4. Explicitly configured addresses must
        // all work.
        Err(RuntimeError::Bind { addr, source }) if addr.is_ipv6() && !explicit_listen => {
            log::warn!("cannot listen on {addr} ({source}); continuing on IPv4 only");
            let v4: Vec<SocketAddr> = listen.iter().copied().filter(SocketAddr::is_ipv4).collect();
            node.bind_udp(&v4, bind).map_err(bind_error)?
        }
        Err(e) => return Err(e.to_string()),
    }))
}

/// The proxy core's settings from the config's (seconds become
/// [`Duration`]s).
fn proxy_config(cfg: &Config, proxy_id: ProxyId, key: SecretKey) -> ProxyConfig {
    let mut pc = ProxyConfig::new(proxy_id, key);
    pc.keepalive_s = cfg.keepalive_s;
    pc.session_timeout = Duration::from_secs(u64::from(cfg.session_timeout_s));
    pc.max_register_expires_s = cfg.max_register_expires_s;
    pc.media_timeout = Duration::from_secs(u64::from(cfg.media_timeout_s));
    pc.ring_timeout = Duration::from_secs(u64::from(cfg.ring_timeout_s));
    pc.max_calls_per_session = cfg.max_calls_per_session as usize;
    pc.max_sessions = cfg.max_sessions;
    pc.relay_via_serving = cfg.relay_via_serving;
    pc.dos = cfg.dos.clone();
    pc
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;

/// Boots the proxy `cfg` describes on a new node whose threads are named
/// `thread_name`. Everything that can fail for a reason the operator can
/// fix (a port in use, the store, a key file) fails before a key is made
/// or an epoch leased. On error every thread started is joined again.
pub fn boot(cfg: &Config, thread_name: &str) -> Result<Booted, BootError> {
    boot_drained(cfg, thread_name, false)
}

/// As [`boot`], with its routes drained from the start when `drained`
/// (a host restarting a drained proxy: [`RouteSupervisor::start`]).
///
/// # Errors
/// As [`boot`].
pub fn boot_drained(cfg: &Config, thread_name: &str, drained: bool) -> Result<Booted, BootError> {
    let listen = addrs(cfg)?;
    let proxy_id = ProxyId::new(cfg.proxy_id)
        .ok_or_else(|| format!("proxy_id {} is reserved", cfg.proxy_id))?;
    let mut node = Node::new(NodeOptions {
        worker_threads: cfg.worker_threads,
        thread_name: thread_name.to_owned(),
        ..NodeOptions::default()
    })?;
    // Bound before anything is created or announced: a proxy that cannot
    // start must not make a key or lease epochs (8.8).
    let metrics_listener = match &cfg.metrics_listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(|e| metrics_bind_error(addr, &e))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Some(l)
        }
        None => None,
    };
    // The UDP sockets too: a taken port must not cost a key or a lease.
    let udp = udp(cfg, &node, listen)?;
    // The store before the key and the lease: a store this proxy cannot
    // open or read must not cost a lease either.
    let store = SubscriberStore::open(&cfg.subscribers).map_err(|e| e.to_string())?;
    // The version is read first, so a change committed while the snapshot
    // is read is reloaded on the first tick rather than missed.
    let version = store.data_version().map_err(|e| e.to_string())?;
    let subscribers = store.snapshot().map_err(|e| e.to_string())?;
    let key = network_key(&cfg.network_key)?;
    let (remote_tx, remote_rx) = tokio::sync::mpsc::channel(1024);
    let sync = match &cfg.sync {
        Some(s) => Some(sync_setup(s, node_key(&s.node_key)?, &key, remote_tx)?),
        None => None,
    };
    let (lease_file, first_lease) = first_epoch_lease(&cfg.network_key)?;
    let network_public = key.public();
    let pc = proxy_config(cfg, proxy_id, key);
    let count = subscribers.len();
    let core = Proxy::new(pc, subscribers, Instant::now());
    // Granted only now, to the one core that runs (spec 8.8).
    let epochs = core.epochs().clone();
    epochs.grant(first_lease);
    let member = sync.is_some();
    node.start(core, udp, sync)?;
    if let Some(a) = node.peer_addr() {
        log::info!("anypsp: peer links on {a}");
    }
    let h = node.handle();
    let core = node.shared_core().expect("started");
    h.spawn(renew_epoch_lease(epochs, lease_file));
    // The store: reloads, tombstone purges, replication.
    h.spawn(
        StoreTask {
            store,
            watch: ReloadWatch::new(Some(version)),
            core: core.clone(),
            every: Duration::from_millis(cfg.subscriber_reload_ms),
            tombstone_horizon: Duration::from_secs(
                u64::from(cfg.subscriber_tombstone_days) * 86_400,
            ),
            replication: node.local_subscribers().map(|local| Replication {
                local,
                remote: remote_rx,
                feed: node.readiness(),
            }),
        }
        .run(),
    );
    let mut metrics = None;
    if let Some(l) = metrics_listener {
        let board = node.metrics_board().expect("started");
        let _guard = h.enter();
        let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
        metrics = l.local_addr().ok();
        if let Some(addr) = metrics {
            log::info!("metrics on http://{addr}/metrics (and /status, /health)");
        }
        // A scrape reads the board, not the core.
        h.spawn(crate::metrics::http::serve(l, board));
    }
    h.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let (s, c, r, relayed, drops) = core.with_core(|p| {
                (
                    p.session_count(),
                    p.call_count(),
                    p.registration_count(),
                    p.stats().media_relayed,
                    p.stats().drops.total(),
                )
            });
            log::info!("status: {s} sessions, {c} calls, {r} registrations, {relayed} frames relayed, {drops} drops");
        }
    });
    // Last: nothing after it can fail, so BIRD never outlives a failed
    // boot (a refused BIRD config drops the node, its threads joined).
    let routes = RouteSupervisor::start(&node, cfg, drained).map_err(|e| e.to_string())?;
    Ok(Booted {
        routes,
        node,
        proxy_id,
        network_public,
        subscribers: count,
        member,
        metrics,
    })
}
