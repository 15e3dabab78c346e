//! `anytund`: the anytun proxy daemon.
//!
//! Reads a TOML config (built-in defaults without one), creates the network
//! key on first start, serves clients on every listen address, reloads the
//! subscriber store when it changes, and exports metrics for Prometheus.

use anytun::config::{self, Config};
use anytun::crypto::SecretKey;
use anytun::proxy::{Proxy, ProxyConfig};
use anytun::runtime::announce;
use anytun::runtime::proxy::{BoundSockets, ProxyRuntime};
use anytun::runtime::udp::BindOptions;
use anytun::runtime::RuntimeError;
use anytun::session::epoch::LeaseFile;
use anytun::session::{EpochLease, Epochs, ProxyId};
use anytun::store::{ReloadOutcome, ReloadWatch, SubscriberStore};
use clap::Parser;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
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

async fn run(args: Args) -> Result<(), String> {
    let (cfg, origin) = config::locate(args.config.as_deref()).map_err(|e| e.to_string())?;
    log::info!("using {origin}");
    let listen = addrs(&cfg)?;
    let proxy_id = ProxyId::new(cfg.proxy_id)
        .ok_or_else(|| format!("proxy_id {} is reserved", cfg.proxy_id))?;
    if args.check_config {
        println!(
            "config ok, {origin}: proxy_id {proxy_id}, listen {:?}{}, network key {}, \
             subscribers {}",
            cfg.listen,
            if cfg.reuse_port { " (reuse_port)" } else { "" },
            cfg.network_key.display(),
            cfg.subscribers.display()
        );
        return Ok(());
    }
    // Bound before anything is created or announced: a daemon that cannot
    // start must not print a ready line, make a key or lease epochs (8.8).
    let metrics_listener = match &cfg.metrics_listen {
        Some(addr) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| metrics_bind_error(addr, &e))?,
            addr,
        )),
        None => None,
    };
    let bind = BindOptions {
        reuse_port: cfg.reuse_port,
    };
    let explicit_listen = cfg.listen != Config::default().listen;
    // The UDP sockets too: a taken port must not cost a key or a lease.
    let sockets = match BoundSockets::bind(&listen, bind) {
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
            BoundSockets::bind(&v4, bind).map_err(bind_error)?
        }
        Err(e) => return Err(e.to_string()),
    };
    // The store before the key and the lease: a store this daemon cannot
    // open or read must not cost a lease either.
    let store = SubscriberStore::open(&cfg.subscribers).map_err(|e| e.to_string())?;
    // The version is read first, so a change committed while the snapshot
    // is read is reloaded on the first tick rather than missed.
    let version = store.data_version().map_err(|e| e.to_string())?;
    let subscribers = store.snapshot().map_err(|e| e.to_string())?;
    let key = network_key(&cfg.network_key)?;
    let (lease_file, first_lease) = first_epoch_lease(&cfg.network_key)?;
    let network_public = key.public();
    let mut watch = ReloadWatch::new(Some(version));
    let mut pc = ProxyConfig::new(proxy_id, key);
    pc.keepalive_s = cfg.keepalive_s;
    pc.session_timeout = Duration::from_secs(u64::from(cfg.session_timeout_s));
    pc.max_register_expires_s = cfg.max_register_expires_s;
    pc.media_timeout = Duration::from_secs(u64::from(cfg.media_timeout_s));
    pc.dos = cfg.dos.clone();
    let count = subscribers.len();
    let core = Proxy::new(pc, subscribers, Instant::now());
    let rt = ProxyRuntime::serve(core, sockets);
    let rt = Arc::new(rt);
    // Granted only now, to the one core that runs (spec 8.8).
    let epochs = rt.with_core(|p| p.epochs().clone());
    epochs.grant(first_lease);
    let lease = tokio::spawn(renew_epoch_lease(epochs, lease_file));
    log::info!(
        "proxy {proxy_id} listening on {:?}; network public key {network_public}; {count} subscriber key(s) from {}",
        rt.local_addrs(),
        cfg.subscribers.display()
    );
    eprintln!(
        "anytund: proxy {proxy_id} on {:?}, network public key {network_public}",
        rt.local_addrs()
    );

    // Reload the store when another process (anytun user ...) changes it.
    let reload = {
        let rt = rt.clone();
        let every = Duration::from_millis(cfg.subscriber_reload_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let apply = |subs| rt.with_core(|p| p.set_subscribers(Instant::now(), subs));
                match watch.poll(&store, apply) {
                    ReloadOutcome::Unchanged => {}
                    ReloadOutcome::Applied {
                        keys,
                        after_failures: 0,
                    } => log::info!("subscriber store changed: {keys} key(s)"),
                    ReloadOutcome::Applied {
                        keys,
                        after_failures,
                    } => log::warn!(
                        "subscriber store readable again after {after_failures} failed \
                         attempt(s): {keys} key(s)"
                    ),
                    // Logged once per failure streak; retried every tick.
                    ReloadOutcome::Failed { error, first: true } => log::error!(
                        "cannot reload subscribers (retrying every {} ms): {error}",
                        every.as_millis()
                    ),
                    ReloadOutcome::Failed {
                        error,
                        first: false,
                    } => {
                        log::debug!("cannot reload subscribers: {error}")
                    }
                }
            }
        })
    };

    let metrics = match metrics_listener {
        Some((l, addr)) => {
            log::info!("metrics on http://{addr}/metrics");
            let rt = rt.clone();
            Some(tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    let rt = rt.clone();
                    // A scrape reads the runtime's snapshot, not the core.
                    tokio::spawn(anytun::metrics::serve_one(s, move || rt.metrics()));
                }
            }))
        }
        None => None,
    };

    let status = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let (s, c, r, relayed, drops) = rt.with_core(|p| {
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
        })
    };

    // Announcement follows health (docs/anycast-lab.md): BIRD runs as our
    // child and the anycast routes are enabled only while we are ready.
    let announcer = match cfg.announce.clone() {
        Some(a) => Some(announce::start(a)?),
        None => None,
    };
    if let Some(a) = &announcer {
        // Serving now; with peers, ready will also wait for the table.
        a.update(|h| h.ready = true);
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    announce::serve_signals(announcer.as_ref(), async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await?;
    log::info!("shutting down");
    if let Some(a) = announcer {
        announce::drain_and_stop(a).await;
    }
    reload.abort();
    status.abort();
    lease.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("anytund: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anytund: error: {e}");
            ExitCode::FAILURE
        }
    }
}
