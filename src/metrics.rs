//! Prometheus text exposition of a proxy's counters, and a minimal HTTP
//! listener that serves it on `/metrics`.
//!
//! A scrape renders a [`Snapshot`], a copy of the counters and gauges that
//! the runtime takes while it holds the core anyway (after each batch and
//! timer run), so a scrape never takes the core lock.

use crate::proxy::{Proxy, ProxyStats};
use std::fmt::Write;

/// The counters and gauges of a proxy at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Counters since start.
    pub stats: ProxyStats,
    /// Sessions held.
    pub sessions: usize,
    /// Calls ringing or answered.
    pub calls: usize,
    /// Registered (name, device) bindings.
    pub registrations: usize,
    /// Authorised (name, key) pairs in the subscriber snapshot.
    pub subscribers: usize,
}

impl Snapshot {
    /// Copies what `p` counts now. O(1): a copy of fixed-size counters and
    /// four table sizes.
    pub fn of(p: &Proxy) -> Self {
        Self {
            stats: p.stats().clone(),
            sessions: p.session_count(),
            calls: p.call_count(),
            registrations: p.registration_count(),
            subscribers: p.subscriber_count(),
        }
    }
}

/// Renders the proxy's counters and gauges in the Prometheus text format.
pub fn render(p: &Proxy) -> String {
    render_snapshot(&Snapshot::of(p))
}

/// Renders a [`Snapshot`] in the Prometheus text format.
pub fn render_snapshot(snap: &Snapshot) -> String {
    let s = &snap.stats;
    let mut out = String::with_capacity(4096);
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP anytun_{name} {help}\n# TYPE anytun_{name} counter\nanytun_{name} {v}"
        );
    };
    counter("packets_in_total", "Datagrams received.", s.packets_in);
    counter("packets_out_total", "Datagrams sent.", s.packets_out);
    counter(
        "handshakes_accepted_total",
        "Sessions established.",
        s.handshakes_accepted,
    );
    counter(
        "handshakes_refused_total",
        "Handshakes refused with an answer (all reasons).",
        s.handshakes_refused,
    );
    for (reason, v) in [
        ("unknown_key", s.refused_unknown_key),
        ("busy", s.refused_busy),
        ("clock_skew", s.refused_clock_skew),
        ("stale", s.refused_stale),
    ] {
        counter(
            &format!("handshakes_refused_{reason}_total"),
            "Handshakes refused for this reason.",
            v,
        );
    }
    counter(
        "cookie_replies_total",
        "Cookie replies sent under load.",
        s.cookie_replies,
    );
    counter(
        "sessions_expired_total",
        "Sessions ended by silence.",
        s.sessions_expired,
    );
    counter(
        "address_changes_total",
        "Client address changes learned from authenticated packets.",
        s.address_changes,
    );
    counter(
        "registrations_total",
        "Registrations accepted, including refreshes.",
        s.registrations,
    );
    counter(
        "calls_started_total",
        "Calls offered to at least one device.",
        s.calls_started,
    );
    counter("calls_answered_total", "Calls answered.", s.calls_answered);
    counter(
        "calls_failed_total",
        "Calls refused before answer.",
        s.calls_failed,
    );
    counter(
        "media_relayed_total",
        "Voice frames relayed.",
        s.media_relayed,
    );
    counter(
        "control_retransmits_total",
        "Control messages retransmitted.",
        s.control_retransmits,
    );
    counter(
        "fork_legs_dropped_total",
        "Devices dropped from a call's offer as unresponsive.",
        s.fork_legs_dropped,
    );
    counter(
        "media_timeouts_total",
        "Answered calls ended for lack of media from one side.",
        s.media_timeouts,
    );
    counter(
        "control_undelivered_total",
        "Control messages never acknowledged (given up on).",
        s.control_undelivered,
    );
    counter(
        "control_not_queued_total",
        "Control messages not queued: the recipient's queue of unacknowledged messages was full.",
        s.control_not_queued,
    );
    counter(
        "registrations_refused_total",
        "Registrations refused (key not authorised for the name).",
        s.registrations_refused,
    );
    let _ = writeln!(out, "# HELP anytun_dropped_packets_total Packets dropped, by reason.\n# TYPE anytun_dropped_packets_total counter");
    for (reason, n) in s.drops.iter() {
        let _ = writeln!(
            out,
            "anytun_dropped_packets_total{{reason=\"{}\"}} {n}",
            reason.label()
        );
    }
    let mut gauge = |name: &str, help: &str, v: usize| {
        let _ = writeln!(
            out,
            "# HELP anytun_{name} {help}\n# TYPE anytun_{name} gauge\nanytun_{name} {v}"
        );
    };
    gauge("sessions", "Sessions held.", snap.sessions);
    gauge("calls", "Calls ringing or answered.", snap.calls);
    gauge(
        "registrations",
        "Registered (name, device) bindings.",
        snap.registrations,
    );
    gauge(
        "subscribers",
        "Authorised (name, key) pairs loaded from the store.",
        snap.subscribers,
    );
    out
}

/// Answers one HTTP request on `stream` with `body` if it asks for
/// `/metrics` (or `/`), 404 otherwise. Reads at most one small request.
pub async fn serve_one(mut stream: tokio::net::TcpStream, body: impl FnOnce() -> String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 1024];
    let n = match tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf))
        .await
    {
        Ok(Ok(n)) => n,
        _ => return,
    };
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let resp = if path == "/metrics" || path == "/" {
        let b = body();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = stream.write_all(resp.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::proxy::{ProxyConfig, Subscribers};
    use crate::session::ProxyId;

    #[test]
    fn renders_every_drop_reason_and_gauges() {
        let mut p = Proxy::new(
            ProxyConfig::new(ProxyId::new(1).unwrap(), SecretKey::generate()),
            Subscribers::default(),
            std::time::Instant::now(),
        );
        let mut out = [0u8; 1500];
        let mut junk = [9u8; 3];
        p.handle_datagram(
            std::time::Instant::now(),
            "127.0.0.1:1".parse().unwrap(),
            None,
            &mut junk,
            &mut out,
        );
        let text = render(&p);
        assert!(text.contains("anytun_packets_in_total 1\n"));
        assert!(text.contains("anytun_dropped_packets_total{reason=\"unknown_type\"} 1\n"));
        assert!(text.contains("anytun_sessions 0\n"));
        for r in crate::wire::DropReason::ALL {
            assert!(text.contains(r.label()));
        }
    }
}
