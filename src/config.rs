//! Configuration of the proxy daemon `anytund`, read from a TOML file.
//!
//! Every field has a default, so an empty file (or no file at all, via
//! [`Config::default`]) is a working configuration for a local demo. Unknown
//! keys are errors, so a typo is reported rather than silently ignored, and
//! every error names the file, line and column it is about.
//!
//! ```toml
//! proxy_id = 7
//! listen = ["0.0.0.0:7475", "[::]:7475"]
//! network_key = "anytun-state/network.key"     # relative to this file
//! subscribers = "anytun-state/subscribers.db"  # relative to this file
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
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// Default for [`Config::proxy_id`].
pub const DEFAULT_PROXY_ID: u16 = 1;
/// Default for [`Config::listen`]: every IPv4 and IPv6 address.
pub const DEFAULT_LISTEN: [&str; 2] = ["0.0.0.0:7475", "[::]:7475"];
/// Default for [`Config::network_key`].
pub const DEFAULT_NETWORK_KEY: &str = "anytun-state/network.key";
/// Default for [`Config::subscribers`].
pub const DEFAULT_SUBSCRIBERS: &str = "anytun-state/subscribers.db";
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
    /// Denial-of-service protection limits.
    pub dos: DosConfig,
}

/// Denial-of-service limits, the `[dos]` table (the same type the core uses).
pub use crate::handshake::dos::DosConfig;

impl Default for Config {
    /// The demo configuration; its paths are relative to the current
    /// directory.
    fn default() -> Self {
        Self {
            proxy_id: DEFAULT_PROXY_ID,
            listen: DEFAULT_LISTEN.iter().map(|s| (*s).to_owned()).collect(),
            network_key: PathBuf::from(DEFAULT_NETWORK_KEY),
            subscribers: PathBuf::from(DEFAULT_SUBSCRIBERS),
            keepalive_s: DEFAULT_KEEPALIVE_S,
            session_timeout_s: DEFAULT_SESSION_TIMEOUT_S,
            max_register_expires_s: DEFAULT_MAX_REGISTER_EXPIRES_S,
            media_timeout_s: DEFAULT_MEDIA_TIMEOUT_S,
            metrics_listen: Some(DEFAULT_METRICS_LISTEN.to_owned()),
            subscriber_reload_ms: DEFAULT_SUBSCRIBER_RELOAD_MS,
            dos: DosConfig::default(),
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

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
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
        src.error(e.span().unwrap_or(0..0), e.message().trim_end())
    })?;
    raw.check(&src)
}

/// The file as written: every field optional and spanned, so that defaults
/// can be told apart from written values and checks done after
/// deserialising can still point at the offending line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of anytund settings")]
struct RawConfig {
    proxy_id: Option<Spanned<u16>>,
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    network_key: Option<Spanned<PathBuf>>,
    subscribers: Option<Spanned<PathBuf>>,
    keepalive_s: Option<Spanned<u16>>,
    session_timeout_s: Option<Spanned<u32>>,
    max_register_expires_s: Option<Spanned<u32>>,
    media_timeout_s: Option<u32>,
    metrics_listen: Option<Spanned<String>>,
    subscriber_reload_ms: Option<Spanned<u64>>,
    dos: Option<RawDos>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [dos] table")]
struct RawDos {
    under_load_handshakes_per_s: Option<u32>,
    per_ip_rate_per_s: Option<u32>,
    per_ip_burst: Option<u32>,
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

    /// Makes a relative path from the file relative to the file's directory,
    /// so the config means the same whatever the daemon's working directory.
    fn resolve(&self, key: &str, value: Spanned<PathBuf>) -> Result<PathBuf, ConfigError> {
        let span = value.span();
        let path = value.into_inner();
        if path.as_os_str().is_empty() {
            return Err(self.invalid(key, span, "path is empty"));
        }
        Ok(match self.origin.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        })
    }

    fn socket_addr(&self, key: &str, value: &Spanned<String>) -> Result<(), ConfigError> {
        value
            .get_ref()
            .parse::<SocketAddr>()
            .map(drop)
            .map_err(|_| {
                self.invalid(
                    key,
                    value.span(),
                    format_args!(
                        "{:?} is not a socket address (e.g. \"0.0.0.0:7475\" or \"[::]:7475\")",
                        value.get_ref()
                    ),
                )
            })
    }
}

/// Splits an optional spanned value into the value (or `default`) and its
/// span, if it was written.
fn or_default<T>(value: Option<Spanned<T>>, default: T) -> (T, Option<Range<usize>>) {
    match value {
        Some(v) => {
            let span = v.span();
            (v.into_inner(), Some(span))
        }
        None => (default, None),
    }
}

impl RawConfig {
    fn check(self, src: &Source<'_>) -> Result<Config, ConfigError> {
        let defaults = Config::default();

        let (proxy_id, span) = or_default(self.proxy_id, defaults.proxy_id);
        if proxy_id == 0 || proxy_id == u16::MAX {
            return Err(src.invalid(
                "proxy_id",
                span.unwrap_or_default(),
                format_args!("{proxy_id} is reserved (use 1..=65534)"),
            ));
        }

        let listen = match self.listen {
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(src.invalid(
                        "listen",
                        list.span(),
                        "the list is empty; name at least one address",
                    ));
                }
                let entries = list.into_inner();
                for entry in &entries {
                    src.socket_addr("listen", entry)?;
                }
                entries.into_iter().map(Spanned::into_inner).collect()
            }
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

        let (keepalive_s, keepalive_span) = or_default(self.keepalive_s, defaults.keepalive_s);
        if !(1..=300).contains(&keepalive_s) {
            return Err(src.invalid(
                "keepalive_s",
                keepalive_span.unwrap_or_default(),
                format_args!("{keepalive_s} is out of range (use 1..=300)"),
            ));
        }

        let (session_timeout_s, timeout_span) =
            or_default(self.session_timeout_s, defaults.session_timeout_s);
        // A session must survive at least two lost keepalives in a row, or
        // ordinary packet loss would drop live clients.
        if u64::from(session_timeout_s) <= 2 * u64::from(keepalive_s) {
            let (key, span) = match (timeout_span, keepalive_span) {
                (Some(span), _) => ("session_timeout_s", span),
                (None, Some(span)) => ("keepalive_s", span),
                // Unreachable with the shipped defaults, kept for safety.
                (None, None) => ("session_timeout_s", 0..0),
            };
            return Err(src.invalid(
                key,
                span,
                format_args!(
                    "session_timeout_s ({session_timeout_s}) must be greater than \
                     2 * keepalive_s ({keepalive_s})"
                ),
            ));
        }

        let (max_register_expires_s, span) =
            or_default(self.max_register_expires_s, defaults.max_register_expires_s);
        if max_register_expires_s == 0 {
            return Err(src.invalid(
                "max_register_expires_s",
                span.unwrap_or_default(),
                "must be at least 1",
            ));
        }

        let metrics_listen = match self.metrics_listen {
            Some(addr) if addr.get_ref().is_empty() => None,
            Some(addr) => {
                src.socket_addr("metrics_listen", &addr)?;
                Some(addr.into_inner())
            }
            None => defaults.metrics_listen,
        };

        let (subscriber_reload_ms, span) =
            or_default(self.subscriber_reload_ms, defaults.subscriber_reload_ms);
        // Zero would be a busy loop (and tokio's interval panics on it).
        if subscriber_reload_ms == 0 {
            return Err(src.invalid(
                "subscriber_reload_ms",
                span.unwrap_or_default(),
                "must be at least 1",
            ));
        }

        let dos = match self.dos {
            Some(raw) => {
                let d = defaults.dos;
                DosConfig {
                    under_load_handshakes_per_s: raw
                        .under_load_handshakes_per_s
                        .unwrap_or(d.under_load_handshakes_per_s),
                    per_ip_rate_per_s: raw.per_ip_rate_per_s.unwrap_or(d.per_ip_rate_per_s),
                    per_ip_burst: raw.per_ip_burst.unwrap_or(d.per_ip_burst),
                }
            }
            None => defaults.dos,
        };

        Ok(Config {
            proxy_id,
            listen,
            network_key,
            subscribers,
            keepalive_s,
            session_timeout_s,
            max_register_expires_s,
            media_timeout_s: self.media_timeout_s.unwrap_or(defaults.media_timeout_s),
            metrics_listen,
            subscriber_reload_ms,
            dos,
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
        assert_eq!(config.network_key, Path::new("anytun-state/network.key"));
        assert_eq!(config.subscribers, Path::new("anytun-state/subscribers.db"));
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
                dos: DosConfig {
                    under_load_handshakes_per_s: 100,
                    per_ip_rate_per_s: 3,
                    per_ip_burst: 1,
                },
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
    fn wrong_type_is_an_error_with_its_line() {
        let (line, column, message) = invalid("proxy_id = 3\nkeepalive_s = \"15\"\n");
        assert_eq!((line, column), (2, 15));
        assert!(message.contains("invalid type"), "{message}");

        // Out of the integer type's range is reported by the parser too.
        let (line, _, message) = invalid("\nproxy_id = 70000\n");
        assert_eq!(line, 2);
        assert!(message.contains("70000"), "{message}");

        let (line, _, _) = invalid("[dos]\nper_ip_burst = -1\n");
        assert_eq!(line, 2);
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
        assert!(message.contains("must be greater than"), "{message}");
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
}
