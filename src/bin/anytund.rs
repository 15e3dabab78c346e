//! `anytund`: the anytun proxy daemon.
//!
//! Reads a TOML config (built-in defaults without one), creates the network
//! key on first start, serves clients on every listen address, reloads the
//! subscriber store when it changes, and exports metrics for Prometheus.
//! With a `[sync]` table it is a member of an anypsp network: it links to
//! its peers, pulls their tables before it serves, and replicates. The
//! proxy runs on a [`Node`] (its own threads); this file is the thin host:
//! files, keys, signals.

use anytun::config::{self, Config};
use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig};
use anytun::runtime::node::{fingerprint_key, Node, NodeOptions, RemoteSubscriber, SyncSetup, Udp};
use anytun::runtime::subscribers::{Replication, StoreTask};
use anytun::runtime::udp::BindOptions;
use anytun::runtime::RuntimeError;
use anytun::session::epoch::LeaseFile;
use anytun::session::{EpochLease, Epochs, ProxyId};
use anytun::store::{ReloadWatch, SubscriberStore};
use anytun::sync::link::LinkConfig;
use anytun::sync::members::Member;
use clap::Parser;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(name = "anytund", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ANYTUN_COMMIT"), ")"), about = "anytun proxy daemon")]
struct Args {
    /// Config file (TOML), shared with `anytun user`. Without it,
    /// /etc/anytun/anytund.toml if it exists, else built-in defaults.
    #[arg(long, short, env = config::CONFIG_ENV)]
    config: Option<PathBuf>,
    /// Check the config, print what it resolves to, and exit.
    #[arg(long)]
    check_config: bool,
    /// Print this proxy's node public key (for its peers' `[[sync.peers]]`),
    /// creating the node key on first use, and exit. The private key is
    /// never printed.
    #[arg(long)]
    node_key: bool,
}

/// Loads the network key, creating it on first start.
fn network_key(path: &Path) -> Result<SecretKey, String> {
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

fn addrs(cfg: &Config) -> Result<Vec<SocketAddr>, String> {
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
fn node_key(path: &Path) -> Result<SecretKey, String> {
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
fn node_key_path(cfg: &Config) -> PathBuf {
    match &cfg.sync {
        Some(s) => s.node_key.clone(),
        None => cfg.network_key.with_file_name(config::NODE_KEY_FILE),
    }
}

/// The `[sync]` table as the node takes it.
fn sync_setup(
    s: &config::SyncConfig,
    key: SecretKey,
    network: &SecretKey,
    subscribers: tokio::sync::mpsc::Sender<RemoteSubscriber>,
) -> Result<SyncSetup, String> {
    let peers = s
        .peers
        .iter()
        .map(|p| {
            Ok(Member {
                node: ProxyId::new(p.id).ok_or_else(|| format!("peer id {} is reserved", p.id))?,
                address: p.address,
                public_key: p.public_key,
                region: String::new(),
                failure_domain: String::new(),
                failover: Vec::new(),
                revoked: false,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
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
        peer_detect: s.peer_detect,
        link,
        apply_batch: anytun::runtime::node::APPLY_BATCH,
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

fn run(args: Args) -> Result<(), String> {
    let (cfg, origin) = config::locate(args.config.as_deref()).map_err(|e| e.to_string())?;
    log::info!("using {origin}");
    let listen = addrs(&cfg)?;
    let proxy_id = ProxyId::new(cfg.proxy_id)
        .ok_or_else(|| format!("proxy_id {} is reserved", cfg.proxy_id))?;
    if args.node_key {
        let path = node_key_path(&cfg);
        println!("{}", node_key(&path)?.public());
        return Ok(());
    }
    if args.check_config {
        let sync = match &cfg.sync {
            None => "no [sync]: runs alone".to_owned(),
            Some(s) => format!(
                "peers {:?} (links on {}, node key {})",
                s.peers.iter().map(|p| p.id).collect::<Vec<_>>(),
                s.listen,
                s.node_key.display()
            ),
        };
        println!(
            "config ok, {origin}: proxy_id {proxy_id}, listen {:?}{}, network key {}, \
             subscribers {}, {sync}",
            cfg.listen,
            if cfg.reuse_port { " (reuse_port)" } else { "" },
            cfg.network_key.display(),
            cfg.subscribers.display()
        );
        return Ok(());
    }
    let mut node = Node::new(NodeOptions {
        worker_threads: cfg.worker_threads,
        thread_name: format!("anytund-{proxy_id}"),
        ..NodeOptions::default()
    })
    .map_err(|e| e.to_string())?;
    // Bound before anything is created or announced: a daemon that cannot
    // start must not print a ready line, make a key or lease epochs (8.8).
    let metrics_listener = match &cfg.metrics_listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(|e| metrics_bind_error(addr, &e))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Some((l, addr.clone()))
        }
        None => None,
    };
    // The UDP sockets too: a taken port must not cost a key or a lease.
    let udp = udp(&cfg, &node, listen)?;
    // The store before the key and the lease: a store this daemon cannot
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
    let mut pc = ProxyConfig::new(proxy_id, key);
    pc.keepalive_s = cfg.keepalive_s;
    pc.session_timeout = Duration::from_secs(u64::from(cfg.session_timeout_s));
    pc.max_register_expires_s = cfg.max_register_expires_s;
    pc.media_timeout = Duration::from_secs(u64::from(cfg.media_timeout_s));
    pc.dos = cfg.dos.clone();
    let count = subscribers.len();
    let core = Proxy::new(pc, subscribers, Instant::now());
    // Granted only now, to the one core that runs (spec 8.8).
    let epochs = core.epochs().clone();
    epochs.grant(first_lease);
    let member = sync.is_some();
    node.start(core, udp, sync).map_err(|e| e.to_string())?;
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
    if let Some((l, addr)) = metrics_listener {
        let board = node.metrics_board().expect("started");
        let _guard = h.enter();
        let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
        log::info!("metrics on http://{addr}/metrics (and /status, /health)");
        // A scrape reads the board, not the core.
        h.spawn(anytun::metrics::http::serve(l, board));
    }
    h.spawn({
        let core = core.clone();
        async move {
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
        }
    });
    // The ready line, the ready file, and the end on a failure to serve.
    let mut ready = node.readiness();
    let ready_file = cfg.ready_file.clone();
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let outcome = waiter.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        let mut announced = false;
        let mut file_ready = false;
        loop {
            let r = ready.borrow_and_update().clone();
            if let Some(e) = &r.failed {
                return Err(bind_failure(e));
            }
            if r.serving && !announced {
                announced = true;
                let addrs = node.local_addrs();
                log::info!(
                    "proxy {proxy_id} listening on {addrs:?}; network public key \
                     {network_public}; {count} subscriber key(s) from {}{}",
                    cfg.subscribers.display(),
                    if member {
                        "; member of an anypsp network"
                    } else {
                        ""
                    }
                );
                eprintln!(
                    "anytund: proxy {proxy_id} on {addrs:?}, network public key {network_public}"
                );
            }
            if let Some(f) = &ready_file {
                if r.ready() != file_ready {
                    file_ready = r.ready();
                    set_ready_file(f, file_ready, proxy_id);
                }
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
                c = ready.changed() => if c.is_err() { return Ok(()) },
            }
        }
    });
    log::info!("shutting down");
    if let Some(f) = &ready_file {
        set_ready_file(f, false, proxy_id);
    }
    let report = node.stop();
    if !report.joined {
        log::warn!("some tasks did not stop in time");
    }
    outcome
}

/// A failure to serve, in the operator's words.
fn bind_failure(e: &str) -> String {
    if e.contains("Address already in use") || e.contains("in use") {
        format!("{e}; to share the port on purpose, set reuse_port = true in every daemon's config")
    } else {
        e.to_owned()
    }
}

/// Creates (ready) or removes (not ready) the ready file.
fn set_ready_file(path: &Path, ready: bool, id: ProxyId) {
    let r = if ready {
        std::fs::write(path, format!("proxy {id} ready\n"))
    } else {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            r => r,
        }
    };
    match r {
        Ok(()) => log::info!(
            "{} {}",
            if ready {
                "ready: created"
            } else {
                "not ready: removed"
            },
            path.display()
        ),
        Err(e) => log::error!("ready file {}: {e}", path.display()),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anytund: error: {e}");
            ExitCode::FAILURE
        }
    }
}
