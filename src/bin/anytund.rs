//! `anytund`: the anytun proxy daemon.
//!
//! Reads a TOML config (built-in defaults without one), creates the network
//! key on first start, serves clients on every listen address, reloads the
//! subscriber store when it changes, and exports metrics for Prometheus.
//! With a `[sync]` table it is a member of an anypsp network: it links to
//! its peers, pulls their tables before it serves, and replicates. The
//! proxy is booted by [`host::boot`] on a node (its own threads); this file
//! is the thin host: arguments, signals, the ready file. SIGHUP reads the
//! config again and applies its `[sync]` peer list (revoked and removed
//! peers are cut off, new ones linked) without a restart.

use anytun::config;
use anytun::runtime::announce;
use anytun::runtime::host::{self, Booted};
use anytun::session::ProxyId;
use clap::Parser;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

fn run(args: Args) -> Result<(), String> {
    let (cfg, origin) = config::locate(args.config.as_deref()).map_err(|e| e.to_string())?;
    log::info!("using {origin}");
    host::addrs(&cfg)?;
    let proxy_id = ProxyId::new(cfg.proxy_id)
        .ok_or_else(|| format!("proxy_id {} is reserved", cfg.proxy_id))?;
    if args.node_key {
        let path = host::node_key_path(&cfg);
        println!("{}", host::node_key(&path)?.public());
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
    let Booted {
        node,
        network_public,
        subscribers: count,
        member,
        routes,
        ..
    } = host::boot(&cfg, &format!("anytund-{proxy_id}")).map_err(|e| e.to_string())?;
    // The ready line, the ready file, and the end on a failure to serve.
    // The routes follow health on their own (runtime::supervise, started
    // by the boot); this loop only passes the drain signals on.
    let mut ready = node.readiness();
    let ready_file = cfg.ready_file.clone();
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let outcome = waiter.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        let mut drain = announce::DrainSignals::new()?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| e.to_string())?;
        let mut running = cfg.clone();
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
                d = drain.recv() => {
                    routes.drain(d, if d { "SIGUSR1" } else { "SIGUSR2" });
                }
                _ = hup.recv() => reload(&node, &mut running, args.config.as_deref()).await,
            }
        }
    });
    log::info!("shutting down");
    // Withdraw first, serve what is still on its way, then stop BIRD.
    routes.stop();
    if let Some(f) = &ready_file {
        set_ready_file(f, false, proxy_id);
    }
    let report = node.stop();
    if !report.joined {
        log::warn!("some tasks did not stop in time");
    }
    outcome
}

/// SIGHUP: reads the config again and applies its `[sync]` peer list.
/// A config that does not load, or that changes what needs a restart, is
/// logged and nothing is applied: the proxy runs on as before.
async fn reload(
    node: &anytun::runtime::node::Node,
    running: &mut config::Config,
    named: Option<&Path>,
) {
    let new = match config::locate(named) {
        Ok((c, _)) => c,
        Err(e) => {
            log::error!("SIGHUP: config not reloaded: {e}");
            return;
        }
    };
    let rest = |c: &config::Config| config::Config {
        sync: None,
        ..c.clone()
    };
    if rest(&new) != rest(running) {
        log::warn!("SIGHUP: only the [sync] peers are applied; other changes need a restart");
    }
    match host::reload_sync(node, running, &new).await {
        Ok(None) => log::info!("SIGHUP: no [sync]: nothing to reload"),
        Ok(Some(change)) => {
            log::info!(
                "SIGHUP: [sync] peers reloaded: added {:?}, removed {:?}",
                change.added.iter().map(|p| p.get()).collect::<Vec<_>>(),
                change.removed.iter().map(|p| p.get()).collect::<Vec<_>>()
            );
            running.sync = new.sync;
        }
        Err(e) => log::error!("SIGHUP: {e}"),
    }
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
