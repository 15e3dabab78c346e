//! A proxy's metrics and status, for Prometheus (`/metrics`), for the CLI
//! (`/status`, JSON) and for load balancers and routing daemons
//! (`/health`).
//!
//! Everything is read from [`Metrics`], a board that the shells write and a
//! scrape reads: the proxy runtime publishes a [`Snapshot`] of the core's
//! counters while it holds the core anyway (after each batch and timer run),
//! and the sync shell sets a [`SyncSnapshot`] and the readiness flag. A
//! scrape copies those under their own short locks and never takes the core
//! lock. The text is encoded with `prometheus-client` (the classic
//! Prometheus text format, `text/plain; version=0.0.4`); the HTTP server is
//! in [`http`].

pub mod http;
mod status;

use crate::proxy::{Proxy, ProxyStats, PspStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use status::{fetch_status, Status, StatusError};

/// The counters and gauges of a proxy core at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Counters since start.
    pub stats: ProxyStats,
    /// anypsp counters since start (take-overs, forwards, applied changes).
    pub psp: PspStats,
    /// Sessions held.
    pub sessions: usize,
    /// Calls ringing or answered.
    pub calls: usize,
    /// Registered (name, device) bindings.
    pub registrations: usize,
    /// Authorised (name, key) pairs in the subscriber snapshot.
    pub subscribers: usize,
    /// Sessions served here with a role in a call
    /// ([`Proxy::carried_sessions`]): 0 when a restart cuts no call.
    pub carried: usize,
}

impl Snapshot {
    /// Copies what `p` counts now. O(1): a copy of fixed-size counters and
    /// five table sizes.
    pub fn of(p: &Proxy) -> Self {
        Self {
            stats: p.stats().clone(),
            psp: p.psp_stats().clone(),
            sessions: p.session_count(),
            calls: p.call_count(),
            registrations: p.registration_count(),
            subscribers: p.subscriber_count(),
            carried: p.carried_sessions(),
        }
    }
}

/// One sync peer's state, as the sync shell sees it (docs/anypsp-protocol.md).
///
/// The shell fills it from the link runtime's
/// [`PeerStatus`](crate::runtime::peers::PeerStatus) (`node`, `address`,
/// `link.is_some()`, `queue_bytes`, `queue_depth`, `last_error`, `connects`,
/// `overflows`) and the sync engine's [`PeerStatus`](crate::sync::PeerStatus)
/// (`ready`, `last_heard_ms`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSnapshot {
    /// The peer's node id (its proxy id).
    pub node: u16,
    /// Its configured unicast address.
    pub addr: SocketAddr,
    /// The encrypted link to it is up.
    pub connected: bool,
    /// Its Hello arrived on the current link: changes flow both ways.
    pub ready: bool,
    /// Bytes queued for it, not yet written to the link.
    pub queued_bytes: usize,
    /// Messages queued for it.
    pub queued_messages: usize,
    /// Wall-clock time (ms since the Unix epoch) of the last message heard
    /// from it, kept across reconnects; `None` if never. The lag is the time
    /// since then (see [`Status::lag_ms`]).
    pub last_heard_ms: Option<u64>,
    /// Why its last link ended or its last connect failed, if it did.
    pub last_error: Option<String>,
    /// Links that came up with it since start.
    pub connects: u64,
    /// Messages not queued for it because its queue was full (it then
    /// catches up by anti-entropy).
    pub overflows: u64,
}

impl PeerSnapshot {
    /// One word for the CLI: `up` (link up and Hello received), `hello`
    /// (link up, waiting for its Hello) or `down`.
    pub fn state(&self) -> &'static str {
        match (self.connected, self.ready) {
            (true, true) => "up",
            (true, false) => "hello",
            (false, _) => "down",
        }
    }
}

/// The sync state of a proxy that has peers, set by the sync shell with
/// [`Metrics::set_sync`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSnapshot {
    /// The proxy has pulled its peers' tables since it started (a restarted
    /// proxy serves only once this is true).
    pub synced: bool,
    /// Never synced, but ready alone: no configured peer was reachable
    /// for `sync.solo_grace_ms` (docs/anypsp-protocol.md 17.3).
    #[serde(default)]
    pub solo: bool,
    /// Every configured peer, in node order.
    pub peers: Vec<PeerSnapshot>,
    /// Entries held per table scope (scope name, entries including
    /// tombstones).
    pub entries: Vec<(String, u64)>,
    /// Fingerprint of each table scope (scope name, 32 hex digits): equal
    /// on two proxies with equal entry counts, their tables are equal
    /// (docs/anypsp-protocol.md Section 6).
    #[serde(default)]
    pub fingerprints: Vec<(String, String)>,
    /// Remote changes applied since start.
    pub applied: u64,
    /// Remote changes refused since start.
    pub refused: u64,
    /// Peer messages (or entries in them) dropped, per reason label
    /// (`SyncDrop::label`, docs/anypsp-protocol.md Section 11).
    pub drops: Vec<(String, u64)>,
    /// Peer links refused, per reason (unknown or revoked peer, a node
    /// claiming another's id, ...).
    pub links_refused: Vec<(String, u64)>,
}

/// The board a proxy's shells write and scrapes read. Shared as
/// `Arc<Metrics>`; every method takes `&self` and holds a lock only for a
/// copy, so writers on the data path never wait for a scrape's encoding.
#[derive(Debug)]
pub struct Metrics {
    board: Arc<Board>,
    registry: Registry,
}

#[derive(Debug)]
struct Board {
    proxy_id: u16,
    proxy: Mutex<Snapshot>,
    /// `None`: no peers configured (the proxy is alone).
    sync: Mutex<Option<SyncSnapshot>>,
    ready: AtomicBool,
    /// Overloaded now (`[overload]`): routes withdrawn.
    overloaded: AtomicBool,
    /// Times the proxy became overloaded.
    overload_episodes: AtomicU64,
    /// HTTP connections refused because too many were open.
    http_refused: AtomicU64,
}

impl Metrics {
    /// A board for proxy `proxy_id`: not ready, alone, all counters zero.
    pub fn new(proxy_id: u16) -> Self {
        let board = Arc::new(Board {
            proxy_id,
            proxy: Mutex::new(Snapshot::default()),
            sync: Mutex::new(None),
            ready: AtomicBool::new(false),
            overloaded: AtomicBool::new(false),
            overload_episodes: AtomicU64::new(0),
            http_refused: AtomicU64::new(0),
        });
        let mut registry = Registry::with_prefix("anytun");
        registry.register_collector(Box::new(BoardCollector(board.clone())));
        Self { board, registry }
    }

    /// The proxy id this board reports.
    pub fn proxy_id(&self) -> u16 {
        self.board.proxy_id
    }

    /// Replaces the core's counters (the runtime calls it with the core
    /// locked, after each batch).
    pub fn publish(&self, snap: Snapshot) {
        *lock(&self.board.proxy) = snap;
    }

    /// The core's counters as last published.
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.board.proxy).clone()
    }

    /// Sets the sync state (the sync shell calls it when it changes, or
    /// every second or so). `None` means no peers are configured.
    pub fn set_sync(&self, sync: Option<SyncSnapshot>) {
        *lock(&self.board.sync) = sync;
    }

    /// The sync state as last set.
    pub fn sync(&self) -> Option<SyncSnapshot> {
        lock(&self.board.sync).clone()
    }

    /// Sets whether the proxy serves: `/health` answers 200 when true, 503
    /// when false. A proxy alone is ready once it serves; one with peers
    /// once it has pulled their tables.
    pub fn set_ready(&self, ready: bool) {
        self.board.ready.store(ready, Ordering::Relaxed);
    }

    /// What [`set_ready`](Self::set_ready) said last (false at first).
    pub fn is_ready(&self) -> bool {
        self.board.ready.load(Ordering::Relaxed)
    }

    /// Sets whether the proxy is overloaded (its routes withdrawn for it);
    /// counts an episode when it becomes so.
    pub fn set_overloaded(&self, overloaded: bool) {
        if overloaded && !self.board.overloaded.swap(true, Ordering::Relaxed) {
            self.board.overload_episodes.fetch_add(1, Ordering::Relaxed);
        } else if !overloaded {
            self.board.overloaded.store(false, Ordering::Relaxed);
        }
    }

    /// What [`set_overloaded`](Self::set_overloaded) said last.
    pub fn is_overloaded(&self) -> bool {
        self.board.overloaded.load(Ordering::Relaxed)
    }

    /// Counts an HTTP connection refused for lack of room.
    fn count_http_refused(&self) {
        self.board.http_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail, and our collector does not.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            log::error!("metrics encoding failed: {e}");
        }
        out
    }

    /// The status the CLI reads (`/status`), as of now.
    pub fn status(&self) -> Status {
        let snap = self.snapshot();
        Status {
            proxy_id: self.board.proxy_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ready: self.is_ready(),
            overloaded: self.is_overloaded(),
            now_ms: wall_ms(),
            sessions: snap.sessions,
            calls: snap.calls,
            registrations: snap.registrations,
            subscribers: snap.subscribers,
            sync: self.sync(),
        }
    }
}

/// Wall-clock ms since the Unix epoch (0 before it).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding a board lock leaves plain data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Renders the proxy's counters and gauges in the Prometheus text format
/// (for tests and one-off dumps; a daemon serves [`Metrics::render`]).
pub fn render(p: &Proxy) -> String {
    render_snapshot(&Snapshot::of(p))
}

/// Renders a [`Snapshot`] alone (no sync state, not ready).
pub fn render_snapshot(snap: &Snapshot) -> String {
    let m = Metrics::new(0);
    m.publish(snap.clone());
    m.render()
}

/// Encodes the board at scrape time.
#[derive(Debug)]
struct BoardCollector(Arc<Board>);

/// Writes one counter without labels; `name` has no `_total` (the encoder
/// appends it).
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Writes one gauge without labels.
fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Writes a family with one label, one sample per `(label value, v)`.
fn family<'a, N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, N)>,
) -> fmt::Result
where
    N: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (value, v) in samples {
        let labels = [(label, value)];
        let mut s = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => s.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
            _ => s.encode_gauge(&v)?,
        }
    }
    Ok(())
}

impl Collector for BoardCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let snap = lock(&self.0.proxy).clone();
        let sync = lock(&self.0.sync).clone();
        encode_proxy(&mut enc, &snap)?;
        encode_psp(&mut enc, &snap.psp)?;
        gauge(
            &mut enc,
            "ready",
            "1 when the proxy serves (what /health answers 200 for).",
            i64::from(self.0.ready.load(Ordering::Relaxed)),
        )?;
        gauge(
            &mut enc,
            "overloaded",
            "1 while the proxy is overloaded ([overload]): its anycast routes are withdrawn.",
            i64::from(self.0.overloaded.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut enc,
            "overload_episodes",
            "Times the proxy became overloaded and withdrew its anycast routes.",
            self.0.overload_episodes.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "http_refused",
            "Metrics/status HTTP connections refused: too many open.",
            self.0.http_refused.load(Ordering::Relaxed),
        )?;
        encode_sync(&mut enc, sync.as_ref())
    }
}

fn encode_proxy(enc: &mut DescriptorEncoder, snap: &Snapshot) -> fmt::Result {
    let s = &snap.stats;
    for (name, help, v) in [
        ("packets_in", "Datagrams received.", s.packets_in),
        ("packets_out", "Datagrams sent.", s.packets_out),
        (
            "handshakes_accepted",
            "Sessions established.",
            s.handshakes_accepted,
        ),
        (
            "handshakes_refused",
            "Handshakes refused with an answer (all reasons).",
            s.handshakes_refused,
        ),
        (
            "handshakes_refused_unknown_key",
            "Handshakes refused: key not a subscriber.",
            s.refused_unknown_key,
        ),
        (
            "handshakes_refused_busy",
            "Handshakes refused: no room or no send epoch.",
            s.refused_busy,
        ),
        (
            "handshakes_refused_clock_skew",
            "Handshakes refused: client clock too far off.",
            s.refused_clock_skew,
        ),
        (
            "handshakes_refused_stale",
            "Handshakes refused: timestamp not newer than the last.",
            s.refused_stale,
        ),
        (
            "cookie_replies",
            "Cookie replies sent under load.",
            s.cookie_replies,
        ),
        (
            "sessions_expired",
            "Sessions ended by silence.",
            s.sessions_expired,
        ),
        (
            "address_changes",
            "Client address changes learned from authenticated packets.",
            s.address_changes,
        ),
        (
            "registrations",
            "Registrations accepted, including refreshes.",
            s.registrations,
        ),
        (
            "calls_started",
            "Calls offered to at least one device.",
            s.calls_started,
        ),
        ("calls_answered", "Calls answered.", s.calls_answered),
        ("calls_failed", "Calls refused before answer.", s.calls_failed),
        ("media_relayed", "Voice frames relayed.", s.media_relayed),
        (
            "control_retransmits",
            "Control messages retransmitted.",
            s.control_retransmits,
        ),
        (
            "fork_legs_dropped",
            "Devices dropped from a call's offer as unresponsive.",
            s.fork_legs_dropped,
        ),
        (
            "media_timeouts",
            "Answered calls ended for lack of media from one side.",
            s.media_timeouts,
        ),
        (
            "control_undelivered",
            "Control messages never acknowledged (given up on).",
            s.control_undelivered,
        ),
        (
            "control_not_queued",
            "Control messages not queued: the recipient's queue of unacknowledged messages was full.",
            s.control_not_queued,
        ),
        (
            "registrations_refused",
            "Registrations refused (key not authorised for the name).",
            s.registrations_refused,
        ),
        (
            "causes_out_of_range",
            "Client rejects and hangups whose cause was no Q.850 value (passed on as 16 or 127).",
            s.causes_out_of_range,
        ),
    ] {
        counter(enc, name, help, v)?;
    }
    family(
        enc,
        "dropped_packets",
        "Packets dropped, by reason.",
        MetricType::Counter,
        "reason",
        s.drops.iter().map(|(r, n)| (r.label(), n)),
    )?;
    for (name, help, v) in [
        ("sessions", "Sessions held.", snap.sessions),
        ("calls", "Calls ringing or answered.", snap.calls),
        (
            "registrations",
            "Registered (name, device) bindings.",
            snap.registrations,
        ),
        (
            "subscribers",
            "Authorised (name, key) pairs loaded from the store.",
            snap.subscribers,
        ),
    ] {
        gauge(enc, name, help, v)?;
    }
    Ok(())
}

fn encode_psp(enc: &mut DescriptorEncoder, p: &PspStats) -> fmt::Result {
    for (name, help, v) in [
        (
            "psp_takeovers",
            "Sessions taken over from another proxy.",
            p.takeovers,
        ),
        (
            "psp_forwarded_to_home",
            "Packets for a session not held here forwarded to its home proxy.",
            p.forwarded_to_home,
        ),
        (
            "psp_forward_limited",
            "Packets not forwarded to their home: source, or all sources, over the rate limit.",
            p.forward_limited,
        ),
        (
            "psp_forward_queue_full",
            "Packets not forwarded to their home: the forward queue was full.",
            p.forward_queue_full,
        ),
        (
            "psp_probes_sent",
            "Take-over probes sent to a client's serving proxy.",
            p.probes_sent,
        ),
        (
            "psp_probes_confirmed",
            "Take-over probes confirmed: the client moved.",
            p.probes_confirmed,
        ),
        (
            "psp_probes_refused",
            "Take-over probes refused: a replayed or delayed client packet.",
            p.probes_refused,
        ),
        (
            "psp_probes_unanswered",
            "Sessions taken over because their serving proxy answered no probe.",
            p.probes_unanswered,
        ),
        (
            "psp_requests_to_owner",
            "Call requests for a call not held here, handed to its owner.",
            p.requests_to_owner,
        ),
        (
            "psp_requests_from_peer",
            "Call requests handed here by a peer.",
            p.requests_from_peer,
        ),
        (
            "psp_forwarded_in",
            "Forwarded packets received and handled.",
            p.forwarded_in,
        ),
        (
            "psp_forwarded_unknown",
            "Forwarded packets whose session the home does not hold either.",
            p.forwarded_unknown,
        ),
        (
            "psp_control_to_peer",
            "Control messages handed to their client's serving proxy.",
            p.control_to_peer,
        ),
        (
            "psp_control_from_peer",
            "Control messages received from peers for clients served here.",
            p.control_from_peer,
        ),
        (
            "psp_control_rehandled",
            "Handed control messages not acknowledged by a dead or replaced serving proxy, handled again.",
            p.control_rehandled,
        ),
        (
            "psp_control_acks_in",
            "Acknowledgements received for control messages handed to peers.",
            p.control_acks_in,
        ),
        (
            "psp_control_acks_out",
            "Acknowledgements sent for control messages handed here.",
            p.control_acks_out,
        ),
        (
            "psp_acks_not_owed",
            "Acknowledgements dropped: too many owed to one peer.",
            p.acks_not_owed,
        ),
        (
            "psp_handed_forgotten",
            "Handed control messages forgotten unacknowledged: too many held for one peer.",
            p.handed_forgotten,
        ),
        (
            "psp_adopted",
            "Sessions adopted because their serving proxy went down.",
            p.adopted,
        ),
        (
            "psp_control_lost",
            "Control messages dropped after too many hops.",
            p.control_lost,
        ),
        (
            "psp_not_a_peer",
            "Peer messages for a proxy that is not a configured peer.",
            p.not_a_peer,
        ),
        (
            "psp_peer_queue_full",
            "Peer messages dropped: the peer-bound queue was full.",
            p.peer_queue_full,
        ),
        (
            "psp_peer_malformed",
            "Peer messages that did not parse.",
            p.peer_malformed,
        ),
        (
            "psp_applied",
            "Replicated changes installed in the core.",
            p.applied,
        ),
        (
            "psp_apply_refused",
            "Replicated changes refused by the core.",
            p.apply_refused,
        ),
    ] {
        counter(enc, name, help, v)?;
    }
    Ok(())
}

/// Seconds since `last_heard_ms` at `now_ms`; +Inf if never heard.
fn lag_seconds(now_ms: u64, last_heard_ms: Option<u64>) -> f64 {
    match last_heard_ms {
        Some(t) => now_ms.saturating_sub(t) as f64 / 1000.0,
        None => f64::INFINITY,
    }
}

fn encode_sync(enc: &mut DescriptorEncoder, sync: Option<&SyncSnapshot>) -> fmt::Result {
    let empty = SyncSnapshot::default();
    let s = sync.unwrap_or(&empty);
    gauge(
        enc,
        "sync_synced",
        "1 when the proxy has pulled its peers' tables since start (1 when alone).",
        i64::from(sync.is_none_or(|s| s.synced)),
    )?;
    gauge(
        enc,
        "sync_solo",
        "1 when the proxy never synced but is ready alone (no peer reachable for sync.solo_grace_ms).",
        i64::from(s.solo),
    )?;
    gauge(enc, "sync_peers", "Configured sync peers.", s.peers.len())?;
    let ids: Vec<String> = s.peers.iter().map(|p| p.node.to_string()).collect();
    let per_peer = |f: fn(&PeerSnapshot) -> u64| {
        ids.iter()
            .map(String::as_str)
            .zip(s.peers.iter().map(f))
            .collect::<Vec<_>>()
    };
    let gauge_family = MetricType::Gauge;
    family(
        enc,
        "sync_peer_up",
        "1 when the encrypted link to the peer is up.",
        gauge_family,
        "peer",
        per_peer(|p| u64::from(p.connected)),
    )?;
    family(
        enc,
        "sync_peer_ready",
        "1 when the peer's Hello arrived on the current link.",
        gauge_family,
        "peer",
        per_peer(|p| u64::from(p.ready)),
    )?;
    family(
        enc,
        "sync_peer_queue_bytes",
        "Bytes queued for the peer.",
        gauge_family,
        "peer",
        per_peer(|p| p.queued_bytes as u64),
    )?;
    family(
        enc,
        "sync_peer_queue_messages",
        "Messages queued for the peer.",
        gauge_family,
        "peer",
        per_peer(|p| p.queued_messages as u64),
    )?;
    let now = wall_ms();
    family(
        enc,
        "sync_peer_lag_seconds",
        "Seconds since the last message heard from the peer (+Inf: never).",
        gauge_family,
        "peer",
        ids.iter()
            .map(String::as_str)
            .zip(s.peers.iter().map(|p| lag_seconds(now, p.last_heard_ms))),
    )?;
    family(
        enc,
        "sync_peer_connects",
        "Links that came up with the peer.",
        MetricType::Counter,
        "peer",
        per_peer(|p| p.connects),
    )?;
    family(
        enc,
        "sync_peer_overflows",
        "Messages not queued for the peer: its queue was full.",
        MetricType::Counter,
        "peer",
        per_peer(|p| p.overflows),
    )?;
    family(
        enc,
        "sync_entries",
        "Replicated entries held, by table scope (tombstones included).",
        gauge_family,
        "scope",
        s.entries.iter().map(|(k, v)| (k.as_str(), *v)),
    )?;
    counter(enc, "sync_applied", "Remote changes applied.", s.applied)?;
    counter(enc, "sync_refused", "Remote changes refused.", s.refused)?;
    family(
        enc,
        "sync_dropped",
        "Peer messages or entries dropped, by reason.",
        MetricType::Counter,
        "reason",
        s.drops.iter().map(|(k, v)| (k.as_str(), *v)),
    )?;
    family(
        enc,
        "sync_links_refused",
        "Peer links refused, by reason.",
        MetricType::Counter,
        "reason",
        s.links_refused.iter().map(|(k, v)| (k.as_str(), *v)),
    )
}

#[cfg(test)]
mod tests;
