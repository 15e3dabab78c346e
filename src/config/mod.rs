//! Configuration of the proxy daemon `anytund`, read from a TOML file.
//!
//! The same file tells the CLI (`anytun user ...`) where the subscriber
//! store is: both look for it in the same places ([`locate`]), and the
//! default state directory is absolute ([`default_state_dir`]), so the CLI
//! run from any directory edits the store the daemon reads.
//!
//! Every field has a default, so an empty file (or no file at all, via
//! [`Config::default`]) is a working configuration for a local demo. Unknown
//! keys are errors, so a typo is reported rather than silently ignored, and
//! every error names the file, line and column it is about.
//!
//! ```toml
//! proxy_id = 7
//! listen = ["0.0.0.0:7475", "[::]:7475"]
//! network_key = "/var/lib/anytun/network.key"  # relative paths: to this file
//! subscribers = "/var/lib/anytun/subscribers.db"
//! keepalive_s = 15
//! session_timeout_s = 180
//! max_register_expires_s = 3600
//! media_timeout_s = 15                        # 0 disables
//! ring_timeout_s = 60                         # unanswered: no answer (19)
//! max_calls_per_session = 16                  # a PBX trunk needs more
//! max_sessions = 1048576                       # beyond: handshakes refused Busy
//! relay_via_serving = false                    # true where routers run strict uRPF
//! metrics_listen = "127.0.0.1:9475"            # "" disables metrics
//! subscriber_reload_ms = 1000
//! subscriber_tombstone_days = 7                # keep removals this long
//!
//! [dos]
//! under_load_handshakes_per_s = 500
//! per_ip_rate_per_s = 20
//! per_ip_burst = 5
//! ```

pub mod announce;
pub mod overload;
mod source;
mod sync;

pub use announce::AnnounceConfig;
pub use overload::OverloadConfig;

pub use sync::{
    PeerConfig, SyncConfig, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_KEEPALIVE_MS, DEFAULT_PEER_DETECT_MS,
    DEFAULT_SOLO_GRACE_MS, DEFAULT_STARTUP_TIMEOUT_MS, NODE_KEY_FILE,
};

use std::fmt::Display;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use source::Source;
use toml::{Spanned, Value};

/// Default for [`Config::proxy_id`].
pub const DEFAULT_PROXY_ID: u16 = 1;
/// Default for [`Config::listen`]: every IPv4 and IPv6 address.
pub const DEFAULT_LISTEN: [&str; 2] = ["0.0.0.0:7475", "[::]:7475"];
/// The config file both `anytund` and `anytun` read when none is named
/// (with `--config` or [`CONFIG_ENV`]) and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/anytun/anytund.toml";
/// Environment variable naming the config file, as `--config` does.
pub const CONFIG_ENV: &str = "ANYTUN_CONFIG";
/// State directory (network key, subscriber store) of a system install.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/anytun";
/// File name of the network key in the state directory.
pub const NETWORK_KEY_FILE: &str = "network.key";
/// File name of the subscriber store in the state directory.
pub const SUBSCRIBERS_FILE: &str = "subscribers.db";

/// The default state directory, always absolute, so that the daemon and
/// the CLI find the same store whatever their working directories.
///
/// [`SYSTEM_STATE_DIR`] for root (which can create it) or when it exists (a
/// user's CLI then finds a system daemon's store, and is told if it may not
/// open it); otherwise the user's own `$XDG_STATE_HOME/anytun` (default
/// `~/.local/state/anytun`), so an unprivileged user can run both without
/// creating root-owned paths.
pub fn default_state_dir() -> PathBuf {
    let system = Path::new(SYSTEM_STATE_DIR);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root || system.is_dir() {
        return system.to_owned();
    }
    user_state_dir().unwrap_or_else(|| system.to_owned())
}

/// `$XDG_STATE_HOME/anytun`, or `$HOME/.local/state/anytun`; only absolute
/// values count (the XDG rule), so the result never depends on the working
/// directory.
fn user_state_dir() -> Option<PathBuf> {
    let abs = |var| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    abs("XDG_STATE_HOME")
        .or_else(|| abs("HOME").map(|h| h.join(".local/state")))
        .map(|d| d.join("anytun"))
}

/// Where a loaded configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// This file (absolute path).
    File(PathBuf),
    /// No file was named and [`SYSTEM_CONFIG`] does not exist.
    BuiltIn,
}

impl Display for ConfigOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "config {}", p.display()),
            Self::BuiltIn => write!(
                f,
                "built-in defaults (no --config, no {CONFIG_ENV}, no {SYSTEM_CONFIG})"
            ),
        }
    }
}

/// Finds and loads the configuration shared by `anytund` and `anytun`:
/// `named` (from `--config` or [`CONFIG_ENV`]) must exist; without one,
/// [`SYSTEM_CONFIG`] if it exists; otherwise the built-in defaults.
pub fn locate(named: Option<&Path>) -> Result<(Config, ConfigOrigin), ConfigError> {
    let path = match named {
        Some(p) => p.to_owned(),
        None if Path::new(SYSTEM_CONFIG).exists() => PathBuf::from(SYSTEM_CONFIG),
        None => return Ok((Config::default(), ConfigOrigin::BuiltIn)),
    };
    let path = absolute(&path);
    let config = load(&path)?;
    Ok((config, ConfigOrigin::File(path)))
}

/// `path` made absolute against the working directory (unchanged if that
/// cannot be read), for messages that must name one file unambiguously.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Default for [`Config::keepalive_s`].
pub const DEFAULT_KEEPALIVE_S: u16 = 15;
/// Default for [`Config::session_timeout_s`].
pub const DEFAULT_SESSION_TIMEOUT_S: u32 = 180;
/// Default for [`Config::max_register_expires_s`].
pub const DEFAULT_MAX_REGISTER_EXPIRES_S: u32 = 3600;
/// Default for [`Config::media_timeout_s`].
pub const DEFAULT_MEDIA_TIMEOUT_S: u32 = 15;
/// Default for [`Config::ring_timeout_s`] (`ProxyConfig`'s).
pub const DEFAULT_RING_TIMEOUT_S: u32 = 60;
/// Default for [`Config::max_sessions`] (`ProxyConfig`'s).
pub const DEFAULT_MAX_SESSIONS: usize = 1 << 20;
/// Valid range of `max_sessions`.
const MAX_SESSIONS_RANGE: RangeInclusive<i64> = 1..=(1 << 26);
/// Default for [`Config::max_calls_per_session`] (`ProxyConfig`'s).
pub const DEFAULT_MAX_CALLS_PER_SESSION: u32 = 16;
/// Default for [`Config::metrics_listen`]: loopback only, since metrics are
/// not authenticated.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9475";
/// Default for [`Config::subscriber_reload_ms`].
pub const DEFAULT_SUBSCRIBER_RELOAD_MS: u64 = 1000;
/// Default for [`Config::subscriber_tombstone_days`] (the store's
/// [`DEFAULT_TOMBSTONE_HORIZON`](crate::store::DEFAULT_TOMBSTONE_HORIZON)).
pub const DEFAULT_SUBSCRIBER_TOMBSTONE_DAYS: u32 = 7;

/// Configuration of the proxy daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This proxy's identifier within the network, 1..=65534 (0 and 0xFFFF
    /// are reserved).
    pub proxy_id: u16,
    /// UDP socket addresses to listen on; each parses as a [`SocketAddr`].
    pub listen: Vec<String>,
    /// File holding the network's private key.
    pub network_key: PathBuf,
    /// SQLite subscriber database (see `crate::store`).
    pub subscribers: PathBuf,
    /// Keepalive interval, in seconds, 1..=300.
    pub keepalive_s: u16,
    /// Idle time after which a session is dropped, in seconds; more than
    /// twice `keepalive_s`.
    pub session_timeout_s: u32,
    /// Longest registration lifetime a client may ask for, in seconds.
    pub max_register_expires_s: u32,
    /// An answered call with no media from one side for this many seconds
    /// ends with cause 102; 0 disables (`ProxyConfig::media_timeout`).
    pub media_timeout_s: u32,
    /// A call not answered within this many seconds ends with cause 19 (no
    /// answer) for the caller and every device it rang; 1..=3600
    /// (`ProxyConfig::ring_timeout`, docs/anytun-protocol.md "Ring timeout").
    pub ring_timeout_s: u32,
    /// Most calls one session is part of at once (a PBX is one session:
    /// its concurrent calls); `ProxyConfig::max_calls_per_session`.
    pub max_calls_per_session: u32,
    /// Most sessions held at once (served here or replicated from peers);
    /// a new client beyond it is refused Busy (`ProxyConfig::max_sessions`).
    /// The capacity the overload rule measures sessions against.
    pub max_sessions: usize,
    /// Relay voice for a party served by another proxy through that proxy
    /// (one more hop, one peer-link crossing per frame) instead of sending
    /// it straight from here: for networks whose routers drop packets from
    /// the anycast address arriving on an unexpected path (strict uRPF).
    /// `ProxyConfig::relay_via_serving`; docs/anypsp-protocol.md 15.8.
    pub relay_via_serving: bool,
    /// Address of the metrics HTTP endpoint, or `None` for no metrics
    /// (written as `metrics_listen = ""`, since TOML has no null).
    pub metrics_listen: Option<String>,
    /// How often the subscriber store is polled for changes, in milliseconds.
    pub subscriber_reload_ms: u64,
    /// How long a removed subscriber key is kept as a tombstone, in days, so
    /// that a peer that missed the removal cannot bring the key back.
    pub subscriber_tombstone_days: u32,
    /// Set `SO_REUSEPORT` on every listen socket, so that several daemons
    /// share one port on purpose. Without it a port in use is an error.
    pub reuse_port: bool,
    /// Denial-of-service protection limits.
    pub dos: DosConfig,
    /// Threads of the proxy's own runtime (UDP relay, peer links, sync).
    pub worker_threads: usize,
    /// A file created when the proxy is ready (serving, and synced with its
    /// peers or past the startup timeout) and removed when it stops: the
    /// anycast route may be announced while it exists.
    pub ready_file: Option<PathBuf>,
    /// Membership of an anypsp network; `None`: this proxy runs alone.
    pub sync: Option<SyncConfig>,
    /// The routing daemon announcing the anycast prefixes while ready
    /// (`[announce]`); `None`: this daemon announces nothing.
    pub announce: Option<AnnounceConfig>,
    /// When the proxy is overloaded and withdraws its routes (`[overload]`).
    pub overload: OverloadConfig,
}

/// Default of [`Config::worker_threads`]: small, since the data path is
/// syscall-bound and the host may be shared (an Asterisk module).
pub const DEFAULT_WORKER_THREADS: usize = 2;
/// Valid range of `worker_threads`.
const WORKER_RANGE: RangeInclusive<i64> = 1..=64;

/// Denial-of-service limits, the `[dos]` table (the same type the core uses).
pub use crate::handshake::dos::DosConfig;

impl Default for Config {
    /// The built-in defaults; the network key and subscriber store are in
    /// [`default_state_dir`] (absolute).
    fn default() -> Self {
        let state = default_state_dir();
        Self {
            proxy_id: DEFAULT_PROXY_ID,
            listen: DEFAULT_LISTEN.iter().map(|s| (*s).to_owned()).collect(),
            network_key: state.join(NETWORK_KEY_FILE),
            subscribers: state.join(SUBSCRIBERS_FILE),
            keepalive_s: DEFAULT_KEEPALIVE_S,
            session_timeout_s: DEFAULT_SESSION_TIMEOUT_S,
            max_register_expires_s: DEFAULT_MAX_REGISTER_EXPIRES_S,
            media_timeout_s: DEFAULT_MEDIA_TIMEOUT_S,
            ring_timeout_s: DEFAULT_RING_TIMEOUT_S,
            max_calls_per_session: DEFAULT_MAX_CALLS_PER_SESSION,
            max_sessions: DEFAULT_MAX_SESSIONS,
            relay_via_serving: false,
            metrics_listen: Some(DEFAULT_METRICS_LISTEN.to_owned()),
            subscriber_reload_ms: DEFAULT_SUBSCRIBER_RELOAD_MS,
            subscriber_tombstone_days: DEFAULT_SUBSCRIBER_TOMBSTONE_DAYS,
            reuse_port: false,
            dos: DosConfig::default(),
            worker_threads: DEFAULT_WORKER_THREADS,
            ready_file: None,
            sync: None,
            announce: None,
            overload: OverloadConfig::default(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds a bad value.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters) of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Reads and checks the config file at `path`. Relative paths in the file
/// are relative to the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let path = &absolute(path);
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and checks config `text`; `origin` is the file it came from, used
/// in error messages and to resolve relative paths.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let src = Source { text, origin };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        // Errors without a span are rare (whole-document ones); they are
        // reported at the start of the file.
        src.syntax(e.span().unwrap_or(0..0), e.message().trim_end())
    })?;
    raw.check(&src)
}

/// The file as written: every field optional, spanned and of any TOML type,
/// so that defaults can be told apart from written values, and a value of
/// the wrong type or out of range is reported in the operator's words
/// (see [`Source::int`]) at its own line rather than as a Rust type name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of anytund settings")]
struct RawConfig {
    proxy_id: Option<Spanned<Value>>,
    listen: Option<Spanned<Value>>,
    network_key: Option<Spanned<Value>>,
    subscribers: Option<Spanned<Value>>,
    keepalive_s: Option<Spanned<Value>>,
    session_timeout_s: Option<Spanned<Value>>,
    max_register_expires_s: Option<Spanned<Value>>,
    media_timeout_s: Option<Spanned<Value>>,
    ring_timeout_s: Option<Spanned<Value>>,
    max_calls_per_session: Option<Spanned<Value>>,
    max_sessions: Option<Spanned<Value>>,
    relay_via_serving: Option<Spanned<Value>>,
    metrics_listen: Option<Spanned<Value>>,
    subscriber_reload_ms: Option<Spanned<Value>>,
    subscriber_tombstone_days: Option<Spanned<Value>>,
    reuse_port: Option<Spanned<Value>>,
    dos: Option<RawDos>,
    worker_threads: Option<Spanned<Value>>,
    ready_file: Option<Spanned<Value>>,
    sync: Option<Spanned<sync::RawSync>>,
    announce: Option<announce::RawAnnounce>,
    overload: Option<Spanned<overload::RawOverload>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [dos] table")]
struct RawDos {
    under_load_handshakes_per_s: Option<Spanned<Value>>,
    per_ip_rate_per_s: Option<Spanned<Value>>,
    per_ip_burst: Option<Spanned<Value>>,
}

/// Valid range of `proxy_id` (0 and 0xFFFF are reserved).
const PROXY_ID_RANGE: RangeInclusive<i64> = 1..=65534;
/// Valid range of `keepalive_s`.
const KEEPALIVE_RANGE: RangeInclusive<i64> = 1..=300;
/// Valid range of the `u32` settings that must be positive.
const POSITIVE_U32: RangeInclusive<i64> = 1..=u32::MAX as i64;
/// Valid range of the `[dos]` limits.
const ANY_U32: RangeInclusive<i64> = 0..=u32::MAX as i64;
/// Valid range of `max_calls_per_session`.
const CALLS_PER_SESSION_RANGE: RangeInclusive<i64> = 1..=65_535;
/// Valid range of `media_timeout_s` (0 disables): up to a day.
const MEDIA_TIMEOUT_RANGE: RangeInclusive<i64> = 0..=86_400;
/// Valid range of `ring_timeout_s`: a second (0 would refuse every call
/// unanswered) up to an hour.
const RING_TIMEOUT_RANGE: RangeInclusive<i64> = 1..=3600;
/// Valid range of `subscriber_reload_ms`: up to a day.
const RELOAD_MS_RANGE: RangeInclusive<i64> = 1..=86_400_000;
/// Valid range of `subscriber_tombstone_days`: up to ten years.
const TOMBSTONE_DAYS_RANGE: RangeInclusive<i64> = 1..=3650;

impl RawConfig {
    fn check(self, src: &Source<'_>) -> Result<Config, ConfigError> {
        let defaults = Config::default();

        // 0 and 65535 would fit the field but are reserved: said as such.
        let proxy_id = match src.int("proxy_id", self.proxy_id, i64::MIN..=i64::MAX)? {
            None => defaults.proxy_id,
            Some((n @ (0 | 65535), span)) => {
                return Err(src.invalid(
                    "proxy_id",
                    span,
                    format_args!("{n} is reserved (use 1..=65534)"),
                ))
            }
            Some((n, span)) => match u16::try_from(n) {
                Ok(id) if PROXY_ID_RANGE.contains(&n) => id,
                _ => return Err(src.out_of_range("proxy_id", span, n, &PROXY_ID_RANGE)),
            },
        };

        let listen = match self.listen {
            Some(list) => src.listen(list)?,
            None => defaults.listen,
        };

        let network_key = match self.network_key {
            Some(p) => src.resolve("network_key", p)?,
            None => defaults.network_key,
        };
        let subscribers = match self.subscribers {
            Some(p) => src.resolve("subscribers", p)?,
            None => defaults.subscribers,
        };

        let (keepalive_s, keepalive_span) = src.number(
            "keepalive_s",
            self.keepalive_s,
            KEEPALIVE_RANGE,
            defaults.keepalive_s,
        )?;
        let (session_timeout_s, timeout_span) = src.number(
            "session_timeout_s",
            self.session_timeout_s,
            POSITIVE_U32,
            defaults.session_timeout_s,
        )?;
        // A session must survive at least two lost keepalives in a row, or
        // ordinary packet loss would drop live clients.
        if u64::from(session_timeout_s) <= 2 * u64::from(keepalive_s) {
            // Say which value was not written, so the operator knows which
            // one to set.
            let default = |span: &Option<Range<usize>>| match span {
                Some(_) => "",
                None => ", the default",
            };
            let (t_default, k_default) = (default(&timeout_span), default(&keepalive_span));
            let (key, span) = match (timeout_span, keepalive_span) {
                (Some(span), _) => ("session_timeout_s", span),
                (None, Some(span)) => ("keepalive_s", span),
                // Unreachable with the shipped defaults, kept for safety.
                (None, None) => ("session_timeout_s", 0..0),
            };
            let k = if k_default.is_empty() {
                String::new()
            } else {
                format!("{keepalive_s}{k_default}; ")
            };
            let twice = 2 * u64::from(keepalive_s);
            return Err(src.invalid(
                key,
                span,
                format_args!(
                    "session_timeout_s ({session_timeout_s}{t_default}) must be more than twice \
                     keepalive_s ({k}2 x {keepalive_s} = {twice})"
                ),
            ));
        }

        let (max_register_expires_s, _) = src.number(
            "max_register_expires_s",
            self.max_register_expires_s,
            POSITIVE_U32,
            defaults.max_register_expires_s,
        )?;
        let (media_timeout_s, _) = src.number(
            "media_timeout_s",
            self.media_timeout_s,
            MEDIA_TIMEOUT_RANGE,
            defaults.media_timeout_s,
        )?;
        let (ring_timeout_s, _) = src.number(
            "ring_timeout_s",
            self.ring_timeout_s,
            RING_TIMEOUT_RANGE,
            defaults.ring_timeout_s,
        )?;
        let (max_calls_per_session, _) = src.number(
            "max_calls_per_session",
            self.max_calls_per_session,
            CALLS_PER_SESSION_RANGE,
            defaults.max_calls_per_session,
        )?;
        let (max_sessions, _) = src.number(
            "max_sessions",
            self.max_sessions,
            MAX_SESSIONS_RANGE,
            defaults.max_sessions,
        )?;
        let relay_via_serving = src
            .bool("relay_via_serving", self.relay_via_serving)?
            .unwrap_or(defaults.relay_via_serving);

        let metrics_listen = match self.metrics_listen {
            Some(addr) => {
                let addr = src.string("metrics_listen", addr)?;
                if addr.get_ref().is_empty() {
                    None
                } else {
                    src.socket_addr("metrics_listen", &addr)?;
                    Some(addr.into_inner())
                }
            }
            None => defaults.metrics_listen,
        };

        // Zero would be a busy loop (and tokio's interval panics on it).
        let (subscriber_reload_ms, _) = src.number(
            "subscriber_reload_ms",
            self.subscriber_reload_ms,
            RELOAD_MS_RANGE,
            defaults.subscriber_reload_ms,
        )?;
        let (subscriber_tombstone_days, _) = src.number(
            "subscriber_tombstone_days",
            self.subscriber_tombstone_days,
            TOMBSTONE_DAYS_RANGE,
            defaults.subscriber_tombstone_days,
        )?;

        let reuse_port = src
            .bool("reuse_port", self.reuse_port)?
            .unwrap_or(defaults.reuse_port);

        let dos = match self.dos {
            Some(raw) => {
                let d = defaults.dos;
                DosConfig {
                    under_load_handshakes_per_s: src
                        .number(
                            "under_load_handshakes_per_s",
                            raw.under_load_handshakes_per_s,
                            ANY_U32,
                            d.under_load_handshakes_per_s,
                        )?
                        .0,
                    per_ip_rate_per_s: src
                        .number(
                            "per_ip_rate_per_s",
                            raw.per_ip_rate_per_s,
                            ANY_U32,
                            d.per_ip_rate_per_s,
                        )?
                        .0,
                    per_ip_burst: src
                        .number("per_ip_burst", raw.per_ip_burst, ANY_U32, d.per_ip_burst)?
                        .0,
                }
            }
            None => defaults.dos,
        };

        let (worker_threads, _) = src.number(
            "worker_threads",
            self.worker_threads,
            WORKER_RANGE,
            defaults.worker_threads,
        )?;
        let ready_file = match self.ready_file {
            Some(p) => Some(src.resolve("ready_file", p)?),
            None => None,
        };
        let sync = match self.sync {
            Some(raw) => {
                let span = raw.span();
                Some(raw.into_inner().check(src, span, proxy_id, &network_key)?)
            }
            None => None,
        };
        let announce = match self.announce {
            Some(raw) => Some(
                raw.check(src.origin)
                    .map_err(|(message, span)| src.error(span, message))?,
            ),
            None => None,
        };
        let overload = match self.overload {
            Some(raw) => {
                let span = raw.span();
                raw.into_inner().check(src, span)?
            }
            None => defaults.overload,
        };

        Ok(Config {
            proxy_id,
            listen,
            network_key,
            subscribers,
            keepalive_s,
            session_timeout_s,
            max_register_expires_s,
            media_timeout_s,
            ring_timeout_s,
            max_calls_per_session,
            max_sessions,
            relay_via_serving,
            metrics_listen,
            subscriber_reload_ms,
            subscriber_tombstone_days,
            reuse_port,
            dos,
            worker_threads,
            ready_file,
            sync,
            announce,
            overload,
        })
    }
}

/// 1-based line and column (in characters, as editors count) of byte
/// `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    // Spans come from the parser and should be on char boundaries; stepping
    // back guards the slicing below against a panic if one is not.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
