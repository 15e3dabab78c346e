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
    assert!(text.contains("anytun_packets_in_total 1\n"), "{text}");
    assert!(text.contains("anytun_dropped_packets_total{reason=\"unknown_type\"} 1\n"));
    assert!(text.contains("anytun_sessions 0\n"));
    assert!(text.contains("# TYPE anytun_packets_in_total counter\n"));
    assert!(text.contains("# TYPE anytun_sessions gauge\n"));
    for r in crate::wire::DropReason::ALL {
        assert!(text.contains(r.label()));
    }
}

/// Every metric name the README and the tests rely on is still there.
#[test]
fn keeps_the_documented_names() {
    let text = render_snapshot(&Snapshot::default());
    for name in [
        "anytun_packets_in_total 0",
        "anytun_packets_out_total 0",
        "anytun_handshakes_accepted_total 0",
        "anytun_handshakes_refused_total 0",
        "anytun_handshakes_refused_unknown_key_total 0",
        "anytun_handshakes_refused_busy_total 0",
        "anytun_handshakes_refused_clock_skew_total 0",
        "anytun_handshakes_refused_stale_total 0",
        "anytun_cookie_replies_total 0",
        "anytun_sessions_expired_total 0",
        "anytun_address_changes_total 0",
        "anytun_registrations_total 0",
        "anytun_calls_started_total 0",
        "anytun_calls_answered_total 0",
        "anytun_calls_failed_total 0",
        "anytun_media_relayed_total 0",
        "anytun_control_retransmits_total 0",
        "anytun_fork_legs_dropped_total 0",
        "anytun_media_timeouts_total 0",
        "anytun_control_undelivered_total 0",
        "anytun_control_not_queued_total 0",
        "anytun_registrations_refused_total 0",
        "anytun_causes_out_of_range_total 0",
        "anytun_sessions 0",
        "anytun_calls 0",
        "anytun_registrations 0",
        "anytun_subscribers 0",
        "anytun_psp_takeovers_total 0",
        "anytun_ready 0",
        "anytun_sync_synced 1",
        "anytun_sync_peers 0",
    ] {
        assert!(
            text.contains(&format!("{name}\n")),
            "{name} missing:\n{text}"
        );
    }
}

fn peer(node: u16, connected: bool, heard: Option<u64>) -> PeerSnapshot {
    PeerSnapshot {
        node,
        addr: format!("127.0.0.1:{}", 7000 + node).parse().unwrap(),
        connected,
        ready: connected,
        queued_bytes: 1234 * usize::from(node),
        queued_messages: usize::from(node),
        last_heard_ms: heard,
        last_error: (!connected).then(|| "connection refused".to_owned()),
        connects: 3,
        overflows: 1,
    }
}

pub(super) fn two_peers() -> SyncSnapshot {
    let now = wall_ms();
    SyncSnapshot {
        synced: false,
        solo: false,
        peers: vec![peer(2, true, Some(now - 1500)), peer(3, false, None)],
        entries: vec![("sessions".into(), 10), ("subscribers".into(), 4)],
        fingerprints: Vec::new(),
        applied: 7,
        refused: 2,
        drops: vec![("bad_entry".into(), 5)],
        links_refused: vec![("unknown_peer".into(), 1)],
    }
}

fn sample(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{prefix} missing:\n{text}"));
    let v = line[prefix.len()..].trim();
    if v == "+Inf" {
        f64::INFINITY
    } else {
        v.parse().unwrap()
    }
}

#[test]
fn per_peer_sync_metrics_come_from_the_sync_snapshot() {
    let m = Metrics::new(1);
    m.set_sync(Some(two_peers()));
    m.set_ready(true);
    let text = m.render();
    assert_eq!(sample(&text, "anytun_sync_peer_up{peer=\"2\"}"), 1.0);
    assert_eq!(sample(&text, "anytun_sync_peer_up{peer=\"3\"}"), 0.0);
    assert_eq!(
        sample(&text, "anytun_sync_peer_queue_bytes{peer=\"3\"}"),
        3702.0
    );
    assert_eq!(
        sample(&text, "anytun_sync_peer_queue_messages{peer=\"2\"}"),
        2.0
    );
    let lag = sample(&text, "anytun_sync_peer_lag_seconds{peer=\"2\"}");
    assert!((1.5..60.0).contains(&lag), "lag {lag}");
    assert_eq!(
        sample(&text, "anytun_sync_peer_lag_seconds{peer=\"3\"}"),
        f64::INFINITY,
        "never heard"
    );
    assert_eq!(
        sample(&text, "anytun_sync_peer_connects_total{peer=\"2\"}"),
        3.0
    );
    assert_eq!(
        sample(&text, "anytun_sync_entries{scope=\"sessions\"}"),
        10.0
    );
    assert_eq!(sample(&text, "anytun_sync_applied_total"), 7.0);
    assert_eq!(sample(&text, "anytun_sync_refused_total"), 2.0);
    assert_eq!(
        sample(&text, "anytun_sync_dropped_total{reason=\"bad_entry\"}"),
        5.0
    );
    assert_eq!(
        sample(
            &text,
            "anytun_sync_links_refused_total{reason=\"unknown_peer\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "anytun_sync_synced"), 0.0);
    assert_eq!(sample(&text, "anytun_sync_peers"), 2.0);
    assert_eq!(sample(&text, "anytun_ready"), 1.0);
}

#[test]
fn status_lists_peers_and_says_alone_without_them() {
    let m = Metrics::new(4);
    let alone = m.status();
    assert_eq!(alone.proxy_id, 4);
    assert!(!alone.ready);
    assert!(alone.summary().contains("alone"), "{}", alone.summary());
    assert!(alone.summary().contains("NOT READY"));
    assert!(alone.peer_table().contains("no peers"));

    m.set_sync(Some(two_peers()));
    let s = m.status();
    let table = s.peer_table();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[1].starts_with("2 ") && rows[1].contains(" up "),
        "{table}"
    );
    assert!(
        rows[2].starts_with("3 ") && rows[2].contains(" down "),
        "{table}"
    );
    assert!(rows[2].contains("never; connection refused"), "{table}");
    assert!(rows[1].contains("127.0.0.1:7002"), "{table}");
    assert_eq!(s.peer(3).map(PeerSnapshot::state), Some("down"));
    assert!(s.peer(4).is_none());
    let lag = s.lag_ms(s.peer(2).unwrap()).unwrap();
    assert!((1500..60_000).contains(&lag), "{lag}");
    assert!(
        s.summary().contains("pulling tables, 1 of 2 peer(s) up"),
        "{}",
        s.summary()
    );
    // What the CLI reads back is what was sent.
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
}

mod http_server {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    async fn start(m: Arc<Metrics>) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (addr, tokio::spawn(http::serve(l, m)))
    }

    /// A plain HTTP/1.1 GET as a scraper sends it (no `Connection:
    /// close`), read to the end: the server must close after answering.
    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A refused connection is closed at once: an empty answer.
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_metrics_status_and_health_over_tcp() {
        let m = Arc::new(Metrics::new(9));
        let (addr, server) = start(m.clone()).await;
        let r = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
            .await
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("\r\n\r\n# HELP anytun_"), "{r}");
        assert!(r.contains("anytun_sessions 0\n"), "{r}");

        let r = tokio::task::spawn_blocking(move || get(addr, "/health"))
            .await
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        m.set_ready(true);
        let r = tokio::task::spawn_blocking(move || get(addr, "/health"))
            .await
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        let r = tokio::task::spawn_blocking(move || get(addr, "/nope"))
            .await
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");

        let sync = two_peers();
        m.set_sync(Some(sync.clone()));
        let s = fetch_status(&addr.to_string()).await.unwrap();
        assert_eq!(s.proxy_id, 9);
        assert!(s.ready);
        assert_eq!(s.sync, Some(sync));
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_status_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = fetch_status(&addr).await.unwrap_err();
        assert!(matches!(e, StatusError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains(&addr), "{e}");
    }

    /// Something else listening there (another HTTP server, or not HTTP at
    /// all) is an error that says so, not a panic or a hang.
    #[tokio::test]
    async fn a_status_from_something_else_is_an_error() {
        async fn canned(answer: &'static [u8]) -> String {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            });
            addr
        }
        let addr = canned(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        let e = fetch_status(&addr).await.unwrap_err();
        assert!(matches!(e, StatusError::Code { code: 404, .. }), "{e:?}");
        let addr = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await;
        let e = fetch_status(&addr).await.unwrap_err();
        assert!(matches!(e, StatusError::Json { .. }), "{e:?}");
        let addr = canned(b"SSH-2.0-OpenSSH\r\n").await;
        let e = fetch_status(&addr).await.unwrap_err();
        assert!(matches!(e, StatusError::Http { .. }), "{e:?}");
    }

    /// Connections beyond the limit are closed and counted; once the
    /// idle ones go, scrapes are served again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_limit_are_refused_and_counted() {
        let m = Arc::new(Metrics::new(1));
        let (addr, server) = start(m.clone()).await;
        let r = tokio::task::spawn_blocking(move || {
            let idle: Vec<_> = (0..http::MAX_CONNECTIONS)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            let mut extra = std::net::TcpStream::connect(addr).unwrap();
            extra
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut out = Vec::new();
            let _ = extra.read_to_end(&mut out);
            drop(idle);
            out
        })
        .await
        .unwrap();
        assert!(r.is_empty(), "the extra connection was served");
        assert!(m.render().contains("anytun_http_refused_total 1\n"));
        // The idle connections' slots come back (they closed).
        let mut served = false;
        for _ in 0..100 {
            let r = tokio::task::spawn_blocking(move || get(addr, "/health"))
                .await
                .unwrap();
            if r.starts_with("HTTP/1.1 503") {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served, "never served again");
        server.abort();
    }
}
