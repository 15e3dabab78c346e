//! Reading the TOML text: typed values with their positions, and error messages in the operator's words.

use super::{line_column, ConfigError};
use serde::Deserialize;
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use toml::{Spanned, Value};

/// What each key expects, in words, for error messages (a key missing here
/// gets a generic "a value").
pub(super) fn expected(key: &str) -> &'static str {
    match key {
        "proxy_id" => "a whole number in 1..=65534",
        "listen" => "a list of socket addresses in quotes, e.g. [\"0.0.0.0:7475\", \"[::]:7475\"]",
        "network_key" | "subscribers" => "a file path in quotes",
        "keepalive_s" => "a whole number of seconds in 1..=300",
        "session_timeout_s" => "a whole number of seconds, more than twice keepalive_s",
        "max_register_expires_s" => "a whole number of seconds in 1..=4294967295",
        "media_timeout_s" => "a whole number of seconds in 0..=86400 (0 turns it off)",
        "ring_timeout_s" => "a whole number of seconds in 1..=3600",
        "max_calls_per_session" => "a whole number in 1..=65535",
        "max_sessions" => "a whole number in 1..=67108864",
        "overload" => "a table ([overload])",
        "overload.high_percent" | "overload.low_percent" => "a whole number of percent in 1..=100",
        "overload.max_packets_per_s" => "a whole number of packets per second (0: off)",
        "overload.after_ms" | "overload.hold_ms" => "a whole number of milliseconds in 0..=3600000",
        "metrics_listen" => {
            "a socket address in quotes, e.g. \"127.0.0.1:9475\", or \"\" for no metrics"
        }
        "subscriber_reload_ms" => "a whole number of milliseconds in 1..=86400000",
        "subscriber_tombstone_days" => "a whole number of days in 1..=3650",
        "reuse_port" | "relay_via_serving" | "sync.peers.revoked" => "true or false",
        "worker_threads" => "a whole number of threads in 1..=64",
        "sync" => "a table ([sync])",
        "ready_file" => "a file path in quotes",
        "sync.node_key" | "sync.ready_file" => "a file path in quotes",
        "sync.listen" => "a socket address in quotes, e.g. \"192.0.2.1:7476\"",
        "sync.startup_timeout_ms" => "a whole number of milliseconds in 0..=600000",
        "sync.peer_detect_ms" | "sync.solo_grace_ms" => {
            "a whole number of milliseconds in 0..=600000"
        }
        "sync.keepalive_ms" => "a whole number of milliseconds in 100..=60000",
        "sync.idle_timeout_ms" => {
            "a whole number of milliseconds in 300..=600000, more than keepalive_ms"
        }
        "sync.peers" => "a list of tables ([[sync.peers]])",
        "sync.peers.id" => "a whole number in 1..=65534 (the peer's proxy_id)",
        "sync.peers.address" => "a socket address in quotes, e.g. \"192.0.2.2:7476\"",
        "sync.peers.public_key" => "the peer's node public key in quotes (anytund --node-key)",
        "dos" => "a table ([dos])",
        "under_load_handshakes_per_s" | "per_ip_rate_per_s" | "per_ip_burst" => {
            "a whole number in 0..=4294967295"
        }
        _ => "a value",
    }
}

/// A TOML value's type in words, with the value itself for scalars.
pub(super) fn found(value: &Value) -> String {
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
pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a Path,
}

impl Source<'_> {
    pub(super) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(super) fn invalid(&self, key: &str, span: Range<usize>, what: impl Display) -> ConfigError {
        self.error(span, format!("invalid value for {key}: {what}"))
    }

    /// A value of the wrong type for `key`.
    pub(super) fn wrong_type(&self, key: &str, value: &Spanned<Value>) -> ConfigError {
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
    pub(super) fn syntax(&self, span: Range<usize>, message: &str) -> ConfigError {
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
    pub(super) fn int(
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

    pub(super) fn out_of_range(
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
    pub(super) fn number<T: TryFrom<i64>>(
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

    pub(super) fn string(
        &self,
        key: &str,
        value: Spanned<Value>,
    ) -> Result<Spanned<String>, ConfigError> {
        let span = value.span();
        match value.into_inner() {
            Value::String(s) => Ok(Spanned::new(span, s)),
            other => Err(self.wrong_type(key, &Spanned::new(span, other))),
        }
    }

    pub(super) fn bool(
        &self,
        key: &str,
        value: Option<Spanned<Value>>,
    ) -> Result<Option<bool>, ConfigError> {
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
    pub(super) fn resolve(&self, key: &str, value: Spanned<Value>) -> Result<PathBuf, ConfigError> {
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
    pub(super) fn socket_addr(
        &self,
        key: &str,
        value: &Spanned<String>,
    ) -> Result<(), ConfigError> {
        let example = match key {
            "metrics_listen" | "sync.health_listen" => "\"127.0.0.1:9475\" or \"[::1]:9475\"",
            "sync.listen" | "sync.peers.address" => "\"192.0.2.1:7476\" or \"[2001:db8::1]:7476\"",
            _ => "\"0.0.0.0:7475\" or \"[::]:7475\"",
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
    pub(super) fn listen(&self, value: Spanned<Value>) -> Result<Vec<String>, ConfigError> {
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
