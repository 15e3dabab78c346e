//! The `/status` document (JSON) and its reader for `anytun peers` and
//! `anytun status`.

use super::{PeerSnapshot, SyncSnapshot};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::Duration;

/// What `/status` answers: who the proxy is, whether it serves, its table
/// sizes, and its sync peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The proxy's id (its node id among peers).
    pub proxy_id: u16,
    /// The daemon's version.
    pub version: String,
    /// What `/health` says: true when the proxy serves.
    pub ready: bool,
    /// Overloaded (`[overload]`): serving, but its anycast routes withdrawn.
    #[serde(default)]
    pub overloaded: bool,
    /// The proxy's wall clock when it answered, ms since the Unix epoch:
    /// lags are measured against it, not against the reader's clock.
    pub now_ms: u64,
    /// Sessions held.
    pub sessions: usize,
    /// Calls ringing or answered.
    pub calls: usize,
    /// Registered (name, device) bindings.
    pub registrations: usize,
    /// Authorised (name, key) pairs.
    pub subscribers: usize,
    /// Sync state; `None` when no peers are configured (the proxy is alone).
    pub sync: Option<SyncSnapshot>,
}

impl Status {
    /// The peer's lag: ms since the last message heard from it, as of
    /// [`now_ms`](Self::now_ms); `None` if never heard.
    pub fn lag_ms(&self, peer: &PeerSnapshot) -> Option<u64> {
        peer.last_heard_ms.map(|t| self.now_ms.saturating_sub(t))
    }

    /// The peer with node id `node`, if configured.
    pub fn peer(&self, node: u16) -> Option<&PeerSnapshot> {
        self.sync.as_ref()?.peers.iter().find(|p| p.node == node)
    }

    /// One line on the proxy and its sync state, e.g. `proxy 1 (0.1.0):
    /// ready, 3 sessions, 1 call, 2 registrations, 5 subscribers; sync:
    /// alone (no peers configured)`.
    pub fn summary(&self) -> String {
        let sync = match &self.sync {
            None => "alone (no peers configured)".to_owned(),
            Some(s) => {
                let up = s.peers.iter().filter(|p| p.state() == "up").count();
                format!(
                    "{}, {up} of {} peer(s) up",
                    if s.synced {
                        "synced"
                    } else if s.solo {
                        "ready alone (no peer reachable)"
                    } else {
                        "pulling tables"
                    },
                    s.peers.len()
                )
            }
        };
        format!(
            "proxy {} ({}): {}, {} session(s), {} call(s), {} registration(s), {} \
             subscriber(s); sync: {sync}",
            self.proxy_id,
            self.version,
            match (self.ready, self.overloaded) {
                (true, false) => "ready",
                (true, true) => "ready but OVERLOADED (routes withdrawn)",
                (false, _) => "NOT READY",
            },
            self.sessions,
            self.calls,
            self.registrations,
            self.subscribers,
        )
    }

    /// The peer table: one row per peer (id, address, state, queue, lag,
    /// last heard), or a line saying there are none.
    pub fn peer_table(&self) -> String {
        let peers = self.sync.as_ref().map_or(&[][..], |s| &s.peers[..]);
        if peers.is_empty() {
            return "no peers: this proxy is alone\n".to_owned();
        }
        let mut out = format!(
            "{:<6} {:<24} {:<6} {:>10} {:>6} {:>10}  {}\n",
            "PEER", "ADDRESS", "STATE", "QUEUE_B", "MSGS", "LAG", "LAST HEARD / ERROR"
        );
        for p in peers {
            let lag = self.lag_ms(p).map_or_else(
                || "-".to_owned(),
                |ms| format!("{:.1}s", ms as f64 / 1000.0),
            );
            let heard = match p.last_heard_ms {
                Some(t) => format!("{} ms ago", self.now_ms.saturating_sub(t)),
                None => "never".to_owned(),
            };
            let tail = match (&p.last_error, p.connected) {
                (Some(e), false) => format!("{heard}; {e}"),
                _ => heard,
            };
            let _ = writeln!(
                out,
                "{:<6} {:<24} {:<6} {:>10} {:>6} {:>10}  {tail}",
                p.node,
                p.addr.to_string(),
                p.state(),
                p.queued_bytes,
                p.queued_messages,
                lag
            );
        }
        out
    }
}

/// Why `/status` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Nothing listens there, or the connection failed.
    #[error(
        "cannot reach anytund's metrics at {addr}: {source} (is anytund running, with \
         metrics_listen = \"{addr}\"?)"
    )]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// No complete answer within the time limit.
    #[error("anytund's metrics at {addr} did not answer within 5 s")]
    Timeout {
        /// The address tried.
        addr: String,
    },
    /// The HTTP exchange failed.
    #[error("HTTP to {addr} failed: {source}")]
    Http {
        /// The address tried.
        addr: String,
        /// Why.
        source: hyper::Error,
    },
    /// An answer other than 200.
    #[error("{addr}/status answered HTTP {code} (an anytund older than this CLI?)")]
    Code {
        /// The address tried.
        addr: String,
        /// The HTTP status code.
        code: u16,
    },
    /// The body is not a status document.
    #[error("{addr}/status is not an anytund status document: {source}")]
    Json {
        /// The address tried.
        addr: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// The longest a status read may take, connect included.
const LIMIT: Duration = Duration::from_secs(5);

/// Largest status body read (a few hundred bytes per peer).
const MAX_BODY: usize = 1 << 20;

/// Reads `/status` from the anytund whose metrics listen on `addr`
/// (`HOST:PORT`), within 5 s.
pub async fn fetch_status(addr: &str) -> Result<Status, StatusError> {
    match tokio::time::timeout(LIMIT, fetch(addr)).await {
        Ok(r) => r,
        Err(_) => Err(StatusError::Timeout {
            addr: addr.to_owned(),
        }),
    }
}

async fn fetch(addr: &str) -> Result<Status, StatusError> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper::body::Bytes;
    let a = || addr.to_owned();
    let http = |source| StatusError::Http { addr: a(), source };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| StatusError::Connect { addr: a(), source })?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(http)?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get("/status")
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .expect("a constant request is valid");
    let resp = send.send_request(req).await.map_err(http);
    let result = async {
        let resp = resp?;
        let code = resp.status().as_u16();
        if code != 200 {
            return Err(StatusError::Code { addr: a(), code });
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| StatusError::Json {
                addr: a(),
                source: serde::de::Error::custom(e),
            })?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|source| StatusError::Json { addr: a(), source })
    }
    .await;
    driver.abort();
    result
}
