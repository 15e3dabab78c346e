//! `anytun lab`: a small Internet of network namespaces on one machine.
//!
//! Three proxies announce one anycast address (IPv4 and IPv6) to a router
//! over BGP with BFD; two client sites sit behind their own NAT (nftables
//! masquerade with fully random ports); the router gives each site its own
//! nearest proxy. Knobs break the proxies in the ways a real network does.
//! Everything runs real: `ip`, `nft`, `bird`, `anytund`, driven here as
//! processes. Design and figures: docs/anycast-lab.md.
//!
//! - [`topo`]: names and addresses.
//! - [`build`]: namespaces, links, addresses, NAT, routing.
//! - [`conf`]: BIRD and anytund configs (from the samples in docs/bird/).
//! - [`procs`]: the processes and their pids.
//! - [`netns`]: running a client of this process inside a site.
//! - [`measure`]: failover figures (a knob turned mid-call).

pub mod build;
pub mod call;
pub mod cli;
pub mod conf;
pub mod knobs;
pub mod measure;
pub mod netns;
pub mod procs;
mod sh;
pub mod status;
pub mod topo;

use crate::crypto::{PublicKey, SecretKey};
use crate::store::SubscriberStore;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
pub use topo::{Names, Site, P};

/// Why a lab command failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Namespaces, NAT and routing daemons need root.
    #[error("the lab needs root (network namespaces, nftables, BIRD): run it as root")]
    NotRoot,
    /// A tool is missing.
    #[error("{tool} is not installed; install {package} (scripts/test.sh does: apt-get install bird2 nftables conntrack iproute2)")]
    Missing {
        /// The program.
        tool: &'static str,
        /// Its Debian package.
        package: &'static str,
    },
    /// A tool failed.
    #[error("{command}: {why}")]
    Tool {
        /// The command line.
        command: String,
        /// Its error output.
        why: String,
    },
    /// A file of the run folder.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// A signal could not be sent.
    #[error("cannot signal pid {pid}: {why}")]
    Signal {
        /// The process.
        pid: i32,
        /// Why.
        why: String,
    },
    /// The lab is not up (or this proxy is not running).
    #[error("{0}")]
    NotUp(String),
    /// Something did not happen in time.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// What.
        what: String,
        /// How long.
        ms: u128,
    },
}

/// One lab: its namespaces (by prefix), its run folder, its binaries.
#[derive(Debug, Clone)]
pub struct Lab {
    /// Namespace names.
    pub names: Names,
    /// State: configs, keys, pid files, logs, control sockets.
    pub run: PathBuf,
    /// The anytund binary the proxies run.
    pub anytund: PathBuf,
    /// Whether the proxies run anypsp with each other (a `[sync]` table in
    /// each anytund.toml, node keys made by the lab).
    pub sync: bool,
    /// Extra lines of each proxy's anytund.toml, written when the lab is
    /// built: top-level keys (e.g. `max_sessions = 10`) and tables (e.g.
    /// an `[overload]` table). None by default.
    pub extra_toml: fn(P) -> ExtraToml,
}

/// Extra lines of one proxy's anytund.toml (see [`Lab::extra_toml`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraToml {
    /// Top-level keys, one per line.
    pub top: String,
    /// Tables, appended at the end.
    pub tables: String,
}

/// No extra lines.
pub fn no_extra_toml(_: P) -> ExtraToml {
    ExtraToml::default()
}

/// Whether labs run anypsp between their proxies unless told otherwise.
pub const SYNC_DEFAULT: bool = true;

/// The default namespace prefix.
pub const DEFAULT_PREFIX: &str = "atl";

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |e| LabError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Checks that this process is root and the lab's tools are installed.
pub fn preflight() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    for (tool, package) in TOOLS {
        if !sh::have(tool) {
            return Err(LabError::Missing { tool, package });
        }
    }
    Ok(())
}

/// The lab's tools as (program, Debian package).
const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("bird", "bird2"),
    ("birdc", "bird2"),
    ("conntrack", "conntrack"),
];

/// Installs the lab's missing tools from Debian's packages (root, apt):
/// with a `policy-rc.d` that refuses to start services, so no host BIRD
/// starts (it would hold port 179); removed again if this put it there.
pub fn install_tools() -> Result<(), LabError> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(t, _)| !sh::have(t))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !sh::have("apt-get") {
        return preflight();
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").map_err(io_err(policy))?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(policy))?;
    }
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    let r = sh::run("apt-get", &["update", "-qq"]).and_then(|_| sh::run("apt-get", &args));
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    r.map(drop)
}

impl Lab {
    /// A lab with namespace prefix `prefix` (at most 8 characters, so
    /// every name fits), state in `run` (default
    /// `/run/anytun-lab/PREFIX`), proxies running `anytund` (default: the
    /// `anytund` beside this executable).
    pub fn new(
        prefix: &str,
        run: Option<PathBuf>,
        anytund: Option<PathBuf>,
    ) -> Result<Self, LabError> {
        if prefix.is_empty()
            || prefix.len() > 8
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(LabError::NotUp(format!(
                "prefix {prefix:?}: 1 to 8 letters or digits"
            )));
        }
        let anytund = match anytund {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(io_err(Path::new("current_exe")))?
                .with_file_name("anytund"),
        };
        Ok(Self {
            names: Names {
                prefix: prefix.to_owned(),
            },
            run: run.unwrap_or_else(|| Path::new("/run/anytun-lab").join(prefix)),
            anytund,
            sync: SYNC_DEFAULT,
            extra_toml: no_extra_toml,
        })
    }

    /// Proxy `p`'s folder in the run folder.
    pub fn proxy_dir(&self, p: P) -> PathBuf {
        self.run.join(p.name())
    }

    /// Proxy `p`'s anytund pid, if it runs (alive or stopped).
    pub fn anytund_pid(&self, p: P) -> Option<i32> {
        procs::read_pid(&self.proxy_dir(p).join("anytund.pid")).filter(|&pid| procs::alive(pid))
    }

    /// Proxy `p`'s BIRD pid (a child of its anytund), if it runs.
    pub fn bird_pid(&self, p: P) -> Option<i32> {
        let pid = self.anytund_pid(p)?;
        procs::children(pid).into_iter().find(|&c| {
            std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|s| s.trim() == "bird")
        })
    }

    /// The network's public key (clients need it).
    pub fn network_public(&self) -> Result<PublicKey, LabError> {
        let path = self.run.join("network.key");
        SecretKey::read_file(&path)
            .map(|k| k.public())
            .map_err(|e| LabError::Io {
                path: path.display().to_string(),
                why: e.to_string(),
            })
    }

    /// The subscriber stores: one per proxy when they run anypsp (which
    /// replicates changes between them), else one shared file.
    pub fn stores(&self) -> Vec<std::path::PathBuf> {
        if self.sync {
            P::all()
                .map(|p| self.proxy_dir(p).join("subscribers.db"))
                .collect()
        } else {
            vec![self.run.join("subscribers.db")]
        }
    }

    /// Adds a subscriber `name` with its key (made once, kept in
    /// `keys/NAME.key`) to every proxy's store; they reload within 200 ms.
    pub fn add_user(&self, name: &str) -> Result<SecretKey, LabError> {
        self.add_user_at(name, None)
    }

    /// Adds `name` to proxy `at`'s store only (anypsp carries it to the
    /// others), or to every store (`None`).
    pub fn add_user_at(&self, name: &str, at: Option<P>) -> Result<SecretKey, LabError> {
        let key = self.user_key(name)?;
        for db in self.store_paths(at) {
            self.open_store(&db)?
                .add(name, &key.public().0)
                .map_err(|e| LabError::Io {
                    path: db.display().to_string(),
                    why: e.to_string(),
                })?;
        }
        Ok(key)
    }

    /// `name`'s private key (`keys/NAME.key`), made on first use; no store
    /// is touched.
    pub fn user_key(&self, name: &str) -> Result<SecretKey, LabError> {
        let dir = self.run.join("keys");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{name}.key"));
        let key = if path.exists() {
            SecretKey::read_file(&path)
        } else {
            let k = SecretKey::generate();
            k.write_new_file(&path).map(|()| k)
        }
        .map_err(|e| LabError::Io {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(key)
    }

    /// Revokes `name` (every key) in proxy `at`'s store only.
    pub fn remove_user_at(&self, name: &str, at: P) -> Result<usize, LabError> {
        let mut n = 0;
        for db in self.store_paths(Some(at)) {
            n += self
                .open_store(&db)?
                .remove(name, None)
                .map_err(|e| LabError::Io {
                    path: db.display().to_string(),
                    why: e.to_string(),
                })?;
        }
        Ok(n)
    }

    fn store_paths(&self, at: Option<P>) -> Vec<std::path::PathBuf> {
        match at {
            Some(p) if self.sync => vec![self.proxy_dir(p).join("subscribers.db")],
            _ => self.stores(),
        }
    }

    fn open_store(&self, db: &Path) -> Result<SubscriberStore, LabError> {
        SubscriberStore::open(db).map_err(|e| LabError::Io {
            path: db.display().to_string(),
            why: e.to_string(),
        })
    }

    /// The proxy the router now sends `site`'s packets for the anycast
    /// address to (IPv4 or IPv6); `None`: no route (nobody announces).
    pub fn route(&self, site: Site, v6: bool) -> Result<Option<P>, LabError> {
        let (fam, dst) = if v6 {
            ("-6", format!("{}/128", topo::ANYCAST6))
        } else {
            ("-4", format!("{}/32", topo::ANYCAST4))
        };
        let out = match sh::ip(
            &self.names.router(),
            &format!("{fam} route show table {} {dst}", site.table()),
        ) {
            Ok(out) => out,
            // The kernel makes a table with its first route.
            Err(LabError::Tool { why, .. }) if why.contains("does not exist") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(P::all().find(|p| {
            let via = if v6 {
                p.up6().to_string()
            } else {
                p.up4().to_string()
            };
            out.split_whitespace().any(|w| w == via)
        }))
    }

    /// Waits until the router sends `site`'s packets to `want` (both
    /// families when `both`, else IPv4); returns how long that took.
    pub fn wait_route(
        &self,
        site: Site,
        want: Option<P>,
        limit: Duration,
    ) -> Result<Duration, LabError> {
        let t0 = Instant::now();
        loop {
            if self.route(site, false)? == want && self.route(site, true)? == want {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                return Err(LabError::Timeout {
                    what: format!(
                        "site {}'s route to be {}",
                        site.letter(),
                        want.map_or("none".into(), |p| p.name())
                    ),
                    ms: limit.as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the router's BFD sessions with proxy `p` (IPv4 and IPv6)
    /// are up with their 60 ms detection time: only then does a frozen or silent `p` get noticed in 60 ms
    /// (until then only BGP's hold timer would, in seconds).
    pub fn bfd_up(&self, p: P) -> Result<bool, LabError> {
        let sock = self.run.join("router/bird.ctl").display().to_string();
        let out = sh::run("birdc", &["-s", &sock, "show", "bfd", "sessions"])?;
        let up = |addr: String| {
            out.lines().any(|l| {
                let mut w = l.split_whitespace();
                // Up, and past the slow start: BFD begins at its idle
                // interval (1 s) and moves to 20 ms x 3 with a poll sequence.
                w.next() == Some(addr.as_str())
                    && l.contains(" Up ")
                    && w.last()
                        .and_then(|t| t.parse::<f64>().ok())
                        .is_some_and(|t| t <= 0.1)
            })
        };
        Ok(up(p.up4().to_string()) && up(p.up6().to_string()))
    }

    /// Waits until [`Lab::bfd_up`] for `p`.
    pub fn wait_bfd(&self, p: P, limit: Duration) -> Result<Duration, LabError> {
        let t0 = Instant::now();
        while !self.bfd_up(p)? {
            if t0.elapsed() > limit {
                return Err(LabError::Timeout {
                    what: format!("the router's BFD sessions with {p}"),
                    ms: limit.as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(t0.elapsed())
    }

    /// Waits until the router has sent `site` to `want` (both families)
    /// for `hold` without a change: a proxy coming back after a freeze
    /// may have its BGP session closed once more by its own stale one.
    pub fn wait_route_stable(
        &self,
        site: Site,
        want: Option<P>,
        hold: Duration,
        limit: Duration,
    ) -> Result<Duration, LabError> {
        let t0 = Instant::now();
        let mut since: Option<Instant> = None;
        loop {
            let ok = self.route(site, false)? == want && self.route(site, true)? == want;
            match (ok, since) {
                (true, Some(s)) if s.elapsed() >= hold => return Ok(t0.elapsed()),
                (true, None) => since = Some(Instant::now()),
                (false, _) => since = None,
                _ => {}
            }
            if t0.elapsed() > limit {
                return Err(LabError::Timeout {
                    what: format!("site {}'s route to stay on {want:?}", site.letter()),
                    ms: limit.as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
