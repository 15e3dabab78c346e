//! The `[sync]` table: this proxy as a member of an anypsp network (its node
//! key, where it accepts peer links, its peers) and the restart rules
//! (docs/anypsp-link.md section 3, docs/anypsp-protocol.md section 16).
//!
//! ```toml
//! [sync]
//! node_key = "node.key"            # created on first start; relative: to this file
//! listen = "192.0.2.1:7476"        # TCP, peer links
//! startup_timeout_ms = 3000        # wait this long for peers before serving
//! solo_grace_ms = 5000             # no peer reachable this long: ready (announce) alone
//! peer_detect_ms = 1000            # a link down this long: its clients are adopted
//! keepalive_ms = 5000              # link keepalive ...
//! idle_timeout_ms = 20000          # ... and silence after which a link is dead
//!
//! [[sync.peers]]
//! id = 2                           # the peer's proxy_id
//! address = "192.0.2.2:7476"
//! public_key = "<its node public key: anytund --node-key>"
//! revoked = false                  # true: refused and counted, never linked
//! ```
//!
//! `anytund` applies a changed peer list on SIGHUP without a restart
//! (docs/anypsp-link.md section 3.2): peers left out or `revoked = true`
//! have their link closed and are refused from then on, new peers are
//! linked, unchanged peers keep their links.

use super::source::Source;
use super::ConfigError;
use crate::crypto::PublicKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Spanned, Value};

/// File name of the node key when `node_key` is not written: next to the
/// network key.
pub const NODE_KEY_FILE: &str = "node.key";
/// Default of [`SyncConfig::startup_timeout`].
pub const DEFAULT_STARTUP_TIMEOUT_MS: u64 = 3000;
/// Default of [`SyncConfig::solo_grace`].
pub const DEFAULT_SOLO_GRACE_MS: u64 = 5000;
/// Default of [`SyncConfig::peer_detect`].
pub const DEFAULT_PEER_DETECT_MS: u64 = 1000;
/// Default of [`SyncConfig::keepalive`] (the link's own default).
pub const DEFAULT_KEEPALIVE_MS: u64 = 5000;
/// Default of [`SyncConfig::idle_timeout`] (the link's own default).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 20_000;

const WAIT_RANGE: RangeInclusive<i64> = 0..=600_000;
const KEEPALIVE_RANGE: RangeInclusive<i64> = 100..=60_000;
const IDLE_RANGE: RangeInclusive<i64> = 300..=600_000;
const ID_RANGE: RangeInclusive<i64> = 1..=65534;

/// One configured peer proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its node id: its `proxy_id`.
    pub id: u16,
    /// Unicast TCP address of its peer-link listener (its `[sync] listen`).
    pub address: SocketAddr,
    /// Its node public key.
    pub public_key: PublicKey,
    /// Revoked: its link is closed and every handshake it tries is refused
    /// and counted as `revoked` (not `unknown_peer`). Default false.
    pub revoked: bool,
}

/// The `[sync]` table, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// File holding this node's static private key for peer links (never
    /// the network key); created on first start.
    pub node_key: PathBuf,
    /// TCP address peer links are accepted on; peers dial it.
    pub listen: SocketAddr,
    /// The other proxies (none: this node waits for no one).
    pub peers: Vec<PeerConfig>,
    /// How long a starting proxy waits for a full reconciliation with every
    /// peer before it serves clients anyway.
    pub startup_timeout: Duration,
    /// How long a proxy that is not yet synced goes on with no link to any
    /// configured peer before it counts as ready alone (serves and
    /// announces with the table it has): a lone survivor restarting must
    /// not keep the whole network dark (docs/anypsp-protocol.md 17.3).
    pub solo_grace: Duration,
    /// How long a peer's link must stay down before this proxy adopts that
    /// peer's clients (`Proxy::peer_down`).
    pub peer_detect: Duration,
    /// Link keepalive interval (docs/anypsp-link.md 7.3).
    pub keepalive: Duration,
    /// Link idle timeout: a silent peer is found dead after this long.
    pub idle_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [sync] table")]
pub(super) struct RawSync {
    node_key: Option<Spanned<Value>>,
    listen: Option<Spanned<Value>>,
    startup_timeout_ms: Option<Spanned<Value>>,
    solo_grace_ms: Option<Spanned<Value>>,
    peer_detect_ms: Option<Spanned<Value>>,
    keepalive_ms: Option<Spanned<Value>>,
    idle_timeout_ms: Option<Spanned<Value>>,
    #[serde(default)]
    peers: Vec<Spanned<RawPeer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[sync.peers]] table")]
struct RawPeer {
    id: Option<Spanned<Value>>,
    address: Option<Spanned<Value>>,
    public_key: Option<Spanned<Value>>,
    revoked: Option<Spanned<Value>>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl RawSync {
    /// Checks the table (written at `span`); `proxy_id` is this node's id,
    /// `network_key` the network key file (the node key defaults next to it).
    pub(super) fn check(
        self,
        src: &Source<'_>,
        span: std::ops::Range<usize>,
        proxy_id: u16,
        network_key: &Path,
    ) -> Result<SyncConfig, ConfigError> {
        let node_key = match self.node_key {
            Some(p) => src.resolve("sync.node_key", p)?,
            None => network_key.with_file_name(NODE_KEY_FILE),
        };
        let listen = match self.listen {
            Some(v) => addr(src, "sync.listen", v)?,
            None => return Err(src.invalid(
                "sync",
                span,
                "listen is missing: the TCP address peers dial, e.g. listen = \"192.0.2.1:7476\"",
            )),
        };
        let n = |key, v, range, d| src.number(key, v, range, d).map(|(x, _)| x);
        let startup = n(
            "sync.startup_timeout_ms",
            self.startup_timeout_ms,
            WAIT_RANGE,
            DEFAULT_STARTUP_TIMEOUT_MS,
        )?;
        let solo = n(
            "sync.solo_grace_ms",
            self.solo_grace_ms,
            WAIT_RANGE,
            DEFAULT_SOLO_GRACE_MS,
        )?;
        let detect = n(
            "sync.peer_detect_ms",
            self.peer_detect_ms,
            WAIT_RANGE,
            DEFAULT_PEER_DETECT_MS,
        )?;
        let keepalive = n(
            "sync.keepalive_ms",
            self.keepalive_ms,
            KEEPALIVE_RANGE,
            DEFAULT_KEEPALIVE_MS,
        )?;
        let (idle, idle_span) = src.number(
            "sync.idle_timeout_ms",
            self.idle_timeout_ms,
            IDLE_RANGE,
            DEFAULT_IDLE_TIMEOUT_MS,
        )?;
        if idle <= keepalive {
            return Err(src.invalid(
                "sync.idle_timeout_ms",
                idle_span.unwrap_or(span.clone()),
                format_args!("{idle} must be more than keepalive_ms ({keepalive})"),
            ));
        }
        let mut peers = Vec::with_capacity(self.peers.len());
        let mut ids: HashMap<u16, ()> = HashMap::new();
        let mut keys: HashMap<PublicKey, u16> = HashMap::new();
        for raw in self.peers {
            let pspan = raw.span();
            let raw = raw.into_inner();
            let missing = |what: &str| {
                src.invalid(
                    "sync.peers",
                    pspan.clone(),
                    format_args!("a peer needs {what}"),
                )
            };
            let (id, id_span) = match src.int("sync.peers.id", raw.id, ID_RANGE)? {
                Some((id, s)) => (id as u16, s),
                None => return Err(missing("id (its proxy_id)")),
            };
            if id == proxy_id {
                return Err(src.invalid(
                    "sync.peers.id",
                    id_span,
                    format_args!("{id} is this proxy's own proxy_id"),
                ));
            }
            if ids.insert(id, ()).is_some() {
                return Err(src.invalid(
                    "sync.peers.id",
                    id_span,
                    format_args!("peer {id} appears twice"),
                ));
            }
            let address = match raw.address {
                Some(v) => addr(src, "sync.peers.address", v)?,
                None => return Err(missing("address (its [sync] listen)")),
            };
            let Some(key) = raw.public_key else {
                return Err(missing("public_key (anytund --node-key on that proxy)"));
            };
            let key = src.string("sync.peers.public_key", key)?;
            // Never quote the text: it may be a private key pasted by mistake.
            let public_key = PublicKey::from_base64(key.get_ref())
                .map_err(|e| src.invalid("sync.peers.public_key", key.span(), e))?;
            if let Some(other) = keys.insert(public_key, id) {
                return Err(src.invalid(
                    "sync.peers.public_key",
                    key.span(),
                    format_args!("peers {other} and {id} have the same public key"),
                ));
            }
            let revoked = src
                .bool("sync.peers.revoked", raw.revoked)?
                .unwrap_or(false);
            peers.push(PeerConfig {
                id,
                address,
                public_key,
                revoked,
            });
        }
        Ok(SyncConfig {
            node_key,
            listen,
            peers,
            startup_timeout: ms(startup),
            solo_grace: ms(solo),
            peer_detect: ms(detect),
            keepalive: ms(keepalive),
            idle_timeout: ms(idle),
        })
    }
}

fn addr(src: &Source<'_>, key: &str, v: Spanned<Value>) -> Result<SocketAddr, ConfigError> {
    let s = src.string(key, v)?;
    src.socket_addr(key, &s)?;
    // Checked just above.
    s.get_ref()
        .parse()
        .map_err(|_| src.invalid(key, s.span(), "not a socket address"))
}
