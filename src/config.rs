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
//! metrics_listen = "127.0.0.1:9475"            # "" disables metrics
//! subscriber_reload_ms = 1000
//!
//! [dos]
//! under_load_handshakes_per_s = 500
//! per_ip_rate_per_s = 20
//! per_ip_burst = 5
//! ```

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Spanned, Value};

pub mod announce;
pub use announce::AnnounceConfig;

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
/// Default for [`Config::metrics_listen`]: loopback only, since metrics are
/// not authenticated.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9475";
/// Default for [`Config::subscriber_reload_ms`].
pub const DEFAULT_SUBSCRIBER_RELOAD_MS: u64 = 1000;

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
    /// Address of the metrics HTTP endpoint, or `None` for no metrics
    /// (written as `metrics_listen = ""`, since TOML has no null).
    pub metrics_listen: Option<String>,
    /// How often the subscriber store is polled for changes, in milliseconds.
    pub subscriber_reload_ms: u64,
    /// Set `SO_REUSEPORT` on every listen socket, so that several daemons
    /// share one port on purpose. Without it a port in use is an error.
    pub reuse_port: bool,
    /// Denial-of-service protection limits.
    pub dos: DosConfig,
    /// The routing daemon announcing the anycast prefixes while healthy
    /// (`[announce]`); `None`: this daemon announces nothing.
    pub announce: Option<AnnounceConfig>,
}

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
            metrics_listen: Some(DEFAULT_METRICS_LISTEN.to_owned()),
            subscriber_reload_ms: DEFAULT_SUBSCRIBER_RELOAD_MS,
            reuse_port: false,
            dos: DosConfig::default(),
            announce: None,
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
    metrics_listen: Option<Spanned<Value>>,
    subscriber_reload_ms: Option<Spanned<Value>>,
    reuse_port: Option<Spanned<Value>>,
    dos: Option<RawDos>,
    announce: Option<announce::RawAnnounce>,
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
/// Valid range of `media_timeout_s` (0 disables): up to a day.
const MEDIA_TIMEOUT_RANGE: RangeInclusive<i64> = 0..=86_400;
/// Valid range of `subscriber_reload_ms`: up to a day.
const RELOAD_MS_RANGE: RangeInclusive<i64> = 1..=86_400_000;

/// What each key expects, in words, for error messages (a key missing here
/// gets a generic "a value").
fn expected(key: &str) -> &'static str {
    match key {
        "proxy_id" => "a whole number in 1..=65534",
        "listen" => "a list of socket addresses in quotes, e.g. [\"0.0.0.0:7475\", \"[::]:7475\"]",
        "network_key" | "subscribers" => "a file path in quotes",
        "keepalive_s" => "a whole number of seconds in 1..=300",
        "session_timeout_s" => "a whole number of seconds, more than twice keepalive_s",
        "max_register_expires_s" => "a whole number of seconds in 1..=4294967295",
        "media_timeout_s" => "a whole number of seconds in 0..=86400 (0 turns it off)",
        "metrics_listen" => {
            "a socket address in quotes, e.g. \"127.0.0.1:9475\", or \"\" for no metrics"
        }
        "subscriber_reload_ms" => "a whole number of milliseconds in 1..=86400000",
        "reuse_port" => "true or false",
        "dos" => "a table ([dos])",
        "under_load_handshakes_per_s" | "per_ip_rate_per_s" | "per_ip_burst" => {
            "a whole number in 0..=4294967295"
        }
        _ => "a value",
    }
}

/// A TOML value's type in words, with the value itself for scalars.
fn found(value: &Value) -> String {
    match value {
        Value::String(s) => format!("a string ({s:?})"),
        Value::Integer(i) => format!("a whole number ({i})"),
        Value::Float(f) => format!("a decimal number ({f})"),
        Value::Boolean(b) => format!("true or false ({b})"),
        Value::Datetime(d) => format!("a date ({d})"),
        Value::Array(_) => "a list".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

/// The text being parsed and where it came from, for error positions.
struct Source<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn invalid(&self, key: &str, span: Range<usize>, what: impl Display) -> ConfigError {
        self.error(span, format!("invalid value for {key}: {what}"))
    }

    /// A value of the wrong type for `key`.
    fn wrong_type(&self, key: &str, value: &Spanned<Value>) -> ConfigError {
        self.invalid(
            key,
            value.span(),
            format_args!(
                "expected {}, found {}",
                expected(key),
                found(value.get_ref())
            ),
        )
    }

    /// A syntax error, reworded when it is a key with no value (`key =`),
    /// which the TOML parser reports as "string values must be quoted".
    fn syntax(&self, span: Range<usize>, message: &str) -> ConfigError {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line = &self.text[line_start..line_end];
        if let Some((key, rest)) = line.split_once('=') {
            let key = key.trim();
            let rest = rest.trim_start();
            let is_key = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if is_key && (rest.is_empty() || rest.starts_with('#')) {
                return self.error(
                    span,
                    format!("{key} has no value: expected {}", expected(key)),
                );
            }
            // A typed table (`[dos]`) given as another type: serde says
            // "invalid type: integer `3`, expected ..."; say it in words.
            if let Some(what) = message
                .strip_prefix("invalid type: ")
                .and_then(|m| m.split_once(", expected"))
                .map(|(what, _)| what)
            {
                if is_key {
                    let words = [
                        ("integer", "a whole number"),
                        ("floating point", "a decimal number"),
                        ("string", "a string"),
                        ("boolean", "true or false"),
                        ("sequence", "a list"),
                        ("map", "a table"),
                    ]
                    .iter()
                    .find(|(serde, _)| what.starts_with(serde))
                    .map_or(what, |(_, words)| words);
                    return self.invalid(
                        key,
                        span,
                        format_args!("expected {}, found {words}", expected(key)),
                    );
                }
            }
        }
        self.error(span, message)
    }

    /// A whole number in `range`.
    fn int(
        &self,
        key: &str,
        value: Option<Spanned<Value>>,
        range: RangeInclusive<i64>,
    ) -> Result<Option<(i64, Range<usize>)>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let Value::Integer(n) = *value.get_ref() else {
            return Err(self.wrong_type(key, &value));
        };
        if !range.contains(&n) {
            return Err(self.out_of_range(key, value.span(), n, &range));
        }
        Ok(Some((n, value.span())))
    }

    fn out_of_range(
        &self,
        key: &str,
        span: Range<usize>,
        n: i64,
        range: &RangeInclusive<i64>,
    ) -> ConfigError {
        self.invalid(
            key,
            span,
            format_args!(
                "{n} is out of range (valid: {}..={})",
                range.start(),
                range.end()
            ),
        )
    }

    /// A whole number in `range`, converted to the field's type.
    fn number<T: TryFrom<i64>>(
        &self,
        key: &str,
        value: Option<Spanned<Value>>,
        range: RangeInclusive<i64>,
        default: T,
    ) -> Result<(T, Option<Range<usize>>), ConfigError> {
        Ok(match self.int(key, value, range)? {
            // The range check above keeps every valid range inside T.
            Some((n, span)) => match T::try_from(n) {
                Ok(v) => (v, Some(span)),
                Err(_) => return Err(self.invalid(key, span, "out of range")),
            },
            None => (default, None),
        })
    }

    fn string(&self, key: &str, value: Spanned<Value>) -> Result<Spanned<String>, ConfigError> {
        let span = value.span();
        match value.into_inner() {
            Value::String(s) => Ok(Spanned::new(span, s)),
            other => Err(self.wrong_type(key, &Spanned::new(span, other))),
        }
    }

    fn bool(&self, key: &str, value: Option<Spanned<Value>>) -> Result<Option<bool>, ConfigError> {
        match value {
            None => Ok(None),
            Some(v) => match *v.get_ref() {
                Value::Boolean(b) => Ok(Some(b)),
                _ => Err(self.wrong_type(key, &v)),
            },
        }
    }

    /// Makes a relative path from the file relative to the file's directory,
    /// so the config means the same whatever the daemon's working directory.
    fn resolve(&self, key: &str, value: Spanned<Value>) -> Result<PathBuf, ConfigError> {
        let value = self.string(key, value)?;
        let span = value.span();
        let path = PathBuf::from(value.into_inner());
        if path.as_os_str().is_empty() {
            return Err(self.invalid(key, span, "path is empty"));
        }
        Ok(match self.origin.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        })
    }

    /// Checks that `value` is a socket address; the error's example fits
    /// the setting (a metrics address for `metrics_listen`, not the UDP
    /// port clients use).
    fn socket_addr(&self, key: &str, value: &Spanned<String>) -> Result<(), ConfigError> {
        let example = if key == "metrics_listen" {
            "\"127.0.0.1:9475\" or \"[::1]:9475\""
        } else {
            "\"0.0.0.0:7475\" or \"[::]:7475\""
        };
        value
            .get_ref()
            .parse::<SocketAddr>()
            .map(drop)
            .map_err(|_| {
                self.invalid(
                    key,
                    value.span(),
                    format_args!(
                        "{:?} is not a socket address (e.g. {example})",
                        value.get_ref()
                    ),
                )
            })
    }

    /// The `listen` list. `toml::Value` arrays keep no spans, so each entry
    /// is deserialised again from the array's own text to point at a bad
    /// entry's line.
    fn listen(&self, value: Spanned<Value>) -> Result<Vec<String>, ConfigError> {
        let span = value.span();
        if !matches!(value.get_ref(), Value::Array(_)) {
            return Err(self.wrong_type("listen", &value));
        }
        let entries: Vec<Spanned<Value>> = {
            #[derive(Deserialize)]
            struct Listen {
                listen: Vec<Spanned<Value>>,
            }
            let re = format!("listen = {}", &self.text[span.clone()]);
            let offset = span.start as isize - "listen = ".len() as isize;
            let parsed: Listen = toml::from_str(&re)
                .map_err(|e| self.error(span.clone(), e.message().trim_end().to_owned()))?;
            parsed
                .listen
                .into_iter()
                .map(|v| {
                    let s = v.span();
                    let shift = |x: usize| (x as isize + offset).max(0) as usize;
                    Spanned::new(shift(s.start)..shift(s.end), v.into_inner())
                })
                .collect()
        };
        if entries.is_empty() {
            return Err(self.invalid(
                "listen",
                span,
                "the list is empty; name at least one address",
            ));
        }
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let span = entry.span();
            let Value::String(s) = entry.get_ref() else {
                return Err(self.invalid(
                    "listen",
                    span,
                    format_args!(
                        "expected a socket address in quotes, e.g. \"0.0.0.0:7475\", found {}",
                        found(entry.get_ref())
                    ),
                ));
            };
            let s = Spanned::new(span, s.clone());
            self.socket_addr("listen", &s)?;
            out.push(s.into_inner());
        }
        Ok(out)
    }
}

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

        let announce = match self.announce {
            Some(raw) => Some(
                raw.check(src.origin)
                    .map_err(|(message, span)| src.error(span, message))?,
            ),
            None => None,
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
            metrics_listen,
            subscriber_reload_ms,
            reuse_port,
            dos,
            announce,
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
mod tests {
    use super::*;

    fn origin() -> &'static Path {
        Path::new("/etc/anytun/anytund.toml")
    }

    /// Parses `text` expecting an error, and returns (line, column, message).
    fn invalid(text: &str) -> (usize, usize, String) {
        match parse(text, origin()) {
            Err(ConfigError::Invalid {
                path,
                line,
                column,
                message,
            }) => {
                assert_eq!(path, origin());
                (line, column, message)
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("", origin()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.proxy_id, 1);
        assert_eq!(config.listen, ["0.0.0.0:7475", "[::]:7475"]);
        let state = default_state_dir();
        assert!(state.is_absolute(), "{}", state.display());
        assert_eq!(config.network_key, state.join("network.key"));
        assert_eq!(config.subscribers, state.join("subscribers.db"));
        assert!(!config.reuse_port);
        assert_eq!(config.keepalive_s, 15);
        assert_eq!(config.session_timeout_s, 180);
        assert_eq!(config.max_register_expires_s, 3600);
        assert_eq!(config.metrics_listen.as_deref(), Some("127.0.0.1:9475"));
        assert_eq!(config.subscriber_reload_ms, 1000);
        assert_eq!(config.dos.under_load_handshakes_per_s, 500);
        assert_eq!(config.dos.per_ip_rate_per_s, 20);
        assert_eq!(config.dos.per_ip_burst, 5);
        // Comments and an empty [dos] table change nothing either.
        assert_eq!(
            parse("# nothing\n\n[dos]\n", origin()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn every_field_is_read() {
        let text = r#"
proxy_id = 65534
listen = ["127.0.0.1:9000"]
network_key = "/var/lib/anytun/net.key"
subscribers = "/var/lib/anytun/subs.db"
keepalive_s = 20
session_timeout_s = 41
max_register_expires_s = 600
media_timeout_s = 30
metrics_listen = "[::1]:9100"
subscriber_reload_ms = 250
reuse_port = true

[dos]
under_load_handshakes_per_s = 100
per_ip_rate_per_s = 3
per_ip_burst = 1
"#;
        let config = parse(text, origin()).unwrap();
        assert_eq!(
            config,
            Config {
                proxy_id: 65534,
                listen: vec!["127.0.0.1:9000".to_owned()],
                network_key: PathBuf::from("/var/lib/anytun/net.key"),
                subscribers: PathBuf::from("/var/lib/anytun/subs.db"),
                keepalive_s: 20,
                session_timeout_s: 41,
                max_register_expires_s: 600,
                media_timeout_s: 30,
                metrics_listen: Some("[::1]:9100".to_owned()),
                subscriber_reload_ms: 250,
                reuse_port: true,
                dos: DosConfig {
                    under_load_handshakes_per_s: 100,
                    per_ip_rate_per_s: 3,
                    per_ip_burst: 1,
                },
                announce: None,
            }
        );
    }

    #[test]
    fn unknown_field_is_an_error_with_its_line() {
        let (line, column, message) = invalid("proxy_id = 2\n\n\n\nkeepalive = 10\n");
        assert_eq!((line, column), (5, 1));
        assert!(message.contains("unknown field `keepalive`"), "{message}");
        assert!(
            message.contains("keepalive_s"),
            "lists valid keys: {message}"
        );

        let (line, column, message) = invalid("[dos]\nper_ip_burst = 1\nburst = 2\n");
        assert_eq!((line, column), (3, 1));
        assert!(message.contains("unknown field `burst`"), "{message}");
    }

    #[test]
    fn wrong_type_says_the_expected_type_in_words() {
        let (line, column, message) = invalid("proxy_id = 3\nkeepalive_s = \"15\"\n");
        assert_eq!((line, column), (2, 15));
        assert_eq!(
            message,
            "invalid value for keepalive_s: expected a whole number of seconds in 1..=300, \
             found a string (\"15\")"
        );
        let cases = [
            (
                "proxy_id = 1.5",
                "proxy_id",
                "a whole number in 1..=65534",
                "a decimal number",
            ),
            (
                "listen = \"0.0.0.0:7475\"",
                "listen",
                "a list of socket addresses",
                "a string",
            ),
            (
                "listen = [1]",
                "listen",
                "a socket address in quotes",
                "a whole number",
            ),
            (
                "network_key = 5",
                "network_key",
                "a file path in quotes",
                "a whole number",
            ),
            (
                "metrics_listen = false",
                "metrics_listen",
                "a socket address",
                "true or false",
            ),
            (
                "reuse_port = \"yes\"",
                "reuse_port",
                "true or false",
                "a string",
            ),
            (
                "[dos]\nper_ip_burst = [1]",
                "per_ip_burst",
                "a whole number",
                "a list",
            ),
            ("dos = 3", "dos", "a table", "a whole number"),
        ];
        for (text, key, expected, found) in cases {
            let (_, _, message) = invalid(text);
            assert!(
                message.contains(&format!("invalid value for {key}: expected {expected}")),
                "{text}: {message}"
            );
            assert!(
                message.contains(&format!("found {found}")),
                "{text}: {message}"
            );
            // No Rust type names.
            for rust in ["u16", "u32", "u64", "sequence", "invalid type"] {
                assert!(!message.contains(rust), "{text}: {message}");
            }
        }
    }

    #[test]
    fn out_of_range_says_the_valid_range() {
        let (line, column, message) = invalid("\nproxy_id = 70000\n");
        assert_eq!((line, column), (2, 12));
        assert_eq!(
            message,
            "invalid value for proxy_id: 70000 is out of range (valid: 1..=65534)"
        );
        let (_, _, message) = invalid("proxy_id = -1");
        assert!(
            message.contains("-1 is out of range (valid: 1..=65534)"),
            "{message}"
        );
        let (line, _, message) = invalid("[dos]\nper_ip_burst = -1\n");
        assert_eq!(line, 2);
        assert!(
            message.contains("per_ip_burst: -1 is out of range (valid: 0..=4294967295)"),
            "{message}"
        );
        let (_, _, message) = invalid("keepalive_s = 100000");
        assert!(message.contains("(valid: 1..=300)"), "{message}");
    }

    #[test]
    fn missing_value_names_the_key_and_what_it_expects() {
        let (line, column, message) = invalid("proxy_id = 2\nkeepalive_s =\n");
        assert_eq!((line, column), (2, 14));
        assert_eq!(
            message,
            "keepalive_s has no value: expected a whole number of seconds in 1..=300"
        );
        let (line, _, message) = invalid("\nproxy_id =    # which one?\n");
        assert_eq!(line, 2);
        assert!(
            message.contains("proxy_id has no value: expected a whole number in 1..=65534"),
            "{message}"
        );
        let (line, _, message) = invalid("[dos]\nper_ip_burst =\n");
        assert_eq!(line, 2);
        assert!(message.contains("per_ip_burst has no value"), "{message}");
        let (_, _, message) = invalid("network_key =\n");
        assert!(
            message.contains("network_key has no value: expected a file path in quotes"),
            "{message}"
        );
        for text in ["proxy_id =", "listen =\n", "reuse_port="] {
            let (_, _, message) = invalid(text);
            assert!(message.contains("has no value"), "{text}: {message}");
            assert!(!message.contains("quoted"), "{text}: {message}");
        }
    }

    #[test]
    fn syntax_error_has_its_line() {
        let (line, _, _) = invalid("proxy_id = 2\nlisten = [\"a\"\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn reserved_proxy_ids_are_refused() {
        let err = parse("# demo\n\nproxy_id = 0\n", Path::new("anytund.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "anytund.toml:3:12: invalid value for proxy_id: 0 is reserved (use 1..=65534)"
        );
        let (line, column, message) = invalid("proxy_id = 65535");
        assert_eq!((line, column), (1, 12));
        assert!(message.contains("65535 is reserved"), "{message}");
    }

    #[test]
    fn bad_listen_address_is_refused_naming_it() {
        let text = "listen = [\n  \"0.0.0.0:7475\",\n  \"localhost:7475\",\n]\n";
        let (line, column, message) = invalid(text);
        assert_eq!((line, column), (3, 3));
        assert!(message.contains("\"localhost:7475\""), "{message}");
        assert!(message.contains("listen"), "{message}");

        let (line, _, message) = invalid("\nlisten = []\n");
        assert_eq!(line, 2);
        assert!(message.contains("empty"), "{message}");

        let (line, _, message) = invalid("metrics_listen = \"9475\"\n");
        assert_eq!(line, 1);
        assert!(message.contains("metrics_listen"), "{message}");
    }

    /// A bad address's example fits the setting: a metrics address, not
    /// the UDP port clients use, for `metrics_listen`.
    #[test]
    fn a_bad_metrics_listen_suggests_a_metrics_address() {
        let (_, _, message) = invalid("metrics_listen = \"9475\"\n");
        assert!(message.contains("\"127.0.0.1:9475\""), "{message}");
        assert!(!message.contains("7475"), "{message}");
        let (_, _, message) = invalid("listen = [\"7475\"]\n");
        assert!(message.contains("\"0.0.0.0:7475\""), "{message}");
    }

    /// A keepalive too long for the default session timeout says the
    /// timeout is the default and spells out the comparison.
    #[test]
    fn a_session_timeout_conflict_says_which_value_is_the_default() {
        let (_, _, message) = invalid("keepalive_s = 100\n");
        assert!(
            message.contains(
                "session_timeout_s (180, the default) must be more than twice keepalive_s \
                 (2 x 100 = 200)"
            ),
            "{message}"
        );
        let (_, _, message) = invalid("keepalive_s = 10\nsession_timeout_s = 20\n");
        assert!(
            message.contains(
                "session_timeout_s (20) must be more than twice keepalive_s (2 x 10 = 20)"
            ),
            "{message}"
        );
        let (_, _, message) = invalid("session_timeout_s = 20\n");
        assert!(
            message.contains(
                "session_timeout_s (20) must be more than twice keepalive_s (15, the default; \
                 2 x 15 = 30)"
            ),
            "{message}"
        );
    }

    #[test]
    fn empty_metrics_listen_disables_metrics() {
        let config = parse("metrics_listen = \"\"", origin()).unwrap();
        assert_eq!(config.metrics_listen, None);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let text = "network_key = \"keys/net.key\"\nsubscribers = \"/abs/subs.db\"\n";
        let config = parse(text, origin()).unwrap();
        assert_eq!(config.network_key, Path::new("/etc/anytun/keys/net.key"));
        assert_eq!(config.subscribers, Path::new("/abs/subs.db"));

        // A config named without a directory leaves relative paths alone.
        let config = parse(text, Path::new("anytund.toml")).unwrap();
        assert_eq!(config.network_key, Path::new("keys/net.key"));

        let (line, _, message) = invalid("\nsubscribers = \"\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("empty"), "{message}");
    }

    #[test]
    fn keepalive_and_session_timeout_ranges() {
        let (line, _, message) = invalid("keepalive_s = 0");
        assert_eq!(line, 1);
        assert!(
            message.contains("keepalive_s: 0 is out of range"),
            "{message}"
        );
        let (_, _, message) = invalid("keepalive_s = 301\nsession_timeout_s = 1000\n");
        assert!(message.contains("301 is out of range"), "{message}");
        assert!(parse("keepalive_s = 300\nsession_timeout_s = 601", origin()).is_ok());

        // Equal to twice the keepalive is not enough.
        let (line, _, message) = invalid("keepalive_s = 10\nsession_timeout_s = 20\n");
        assert_eq!(line, 2);
        assert!(message.contains("must be more than twice"), "{message}");
        // With the timeout left at its default, the keepalive is blamed.
        let (line, _, message) = invalid("\nkeepalive_s = 90\n");
        assert_eq!(line, 2);
        assert!(
            message.contains("invalid value for keepalive_s"),
            "{message}"
        );
    }

    #[test]
    fn zero_intervals_are_refused() {
        let (_, _, message) = invalid("subscriber_reload_ms = 0");
        assert!(message.contains("subscriber_reload_ms"), "{message}");
        let (_, _, message) = invalid("max_register_expires_s = 0");
        assert!(message.contains("max_register_expires_s"), "{message}");
    }

    #[test]
    fn media_timeout_zero_is_off_and_a_day_is_the_most() {
        let config = parse("media_timeout_s = 0", origin()).unwrap();
        assert_eq!(config.media_timeout_s, 0);
        let (_, _, message) = invalid("media_timeout_s = 86401");
        assert!(message.contains("0..=86400"), "{message}");
    }

    #[test]
    fn load_reads_the_file_and_names_it_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anytund.toml");
        std::fs::write(&path, "proxy_id = 9\nsubscribers = \"s.db\"\n").unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.proxy_id, 9);
        assert_eq!(config.subscribers, dir.path().join("s.db"));

        let missing = dir.path().join("missing.toml");
        let err = load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Io { ref path, .. } if *path == missing));
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 3), (2, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        // "é" is two bytes but one column.
        assert_eq!(line_column("é = 1", 3), (1, 3));
        assert_eq!(line_column("ab", 99), (1, 3));
        assert_eq!(line_column("é", 1), (1, 1));
    }

    #[test]
    fn locate_uses_the_named_file_and_makes_its_paths_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anytund.toml");
        std::fs::write(&path, "subscribers = \"state/s.db\"\n").unwrap();
        let (config, origin) = locate(Some(&path)).unwrap();
        assert_eq!(origin, ConfigOrigin::File(path.clone()));
        assert_eq!(config.subscribers, dir.path().join("state/s.db"));
        assert!(origin.to_string().contains(&path.display().to_string()));
        // A named file that is missing is an error, not the defaults.
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            locate(Some(&missing)),
            Err(ConfigError::Io { .. })
        ));
        // The defaults' paths are absolute whatever the working directory.
        let d = Config::default();
        assert!(d.subscribers.is_absolute() && d.network_key.is_absolute());
    }
}
