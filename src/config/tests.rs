//! Tests of the configuration parser.

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
ring_timeout_s = 25
max_calls_per_session = 100
relay_via_serving = true
metrics_listen = "[::1]:9100"
subscriber_reload_ms = 250
subscriber_tombstone_days = 30
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
            ring_timeout_s: 25,
            max_calls_per_session: 100,
            relay_via_serving: true,
            metrics_listen: Some("[::1]:9100".to_owned()),
            subscriber_reload_ms: 250,
            subscriber_tombstone_days: 30,
            reuse_port: true,
            dos: DosConfig {
                under_load_handshakes_per_s: 100,
                per_ip_rate_per_s: 3,
                per_ip_burst: 1,
            },
            ..Config::default()
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
        message
            .contains("session_timeout_s (20) must be more than twice keepalive_s (2 x 10 = 20)"),
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
    let (_, _, message) = invalid("subscriber_tombstone_days = 0");
    assert!(
        message.contains("subscriber_tombstone_days") && message.contains("1..=3650"),
        "{message}"
    );
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
fn ring_timeout_defaults_to_a_minute_and_is_bounded() {
    assert_eq!(parse("", origin()).unwrap().ring_timeout_s, 60);
    assert_eq!(
        parse("ring_timeout_s = 1", origin())
            .unwrap()
            .ring_timeout_s,
        1
    );
    assert_eq!(
        parse("ring_timeout_s = 3600", origin())
            .unwrap()
            .ring_timeout_s,
        3600
    );
    for bad in [
        "ring_timeout_s = 0",
        "ring_timeout_s = 3601",
        "ring_timeout_s = -5",
    ] {
        let (line, _, message) = invalid(bad);
        assert_eq!(line, 1, "{bad}");
        assert!(
            message.contains("ring_timeout_s") && message.contains("1..=3600"),
            "{bad}: {message}"
        );
    }
    let (_, _, message) = invalid("ring_timeout_s = \"60\"");
    assert!(message.contains("1..=3600"), "{message}");
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

const PEER_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const PEER_KEY2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

#[test]
fn sync_table_is_read_with_defaults_and_relative_paths() {
    let text = format!(
        "proxy_id = 1\nnetwork_key = \"keys/net.key\"\nworker_threads = 3\nready_file = \"run/ready\"\n\
         [sync]\nlisten = \"127.0.0.1:7476\"\n\
         [[sync.peers]]\nid = 2\naddress = \"127.0.0.1:7477\"\npublic_key = \"{PEER_KEY}\"\n"
    );
    let c = parse(&text, origin()).unwrap();
    assert_eq!(c.worker_threads, 3);
    assert_eq!(
        c.ready_file.as_deref(),
        Some(Path::new("/etc/anytun/run/ready"))
    );
    let s = c.sync.unwrap();
    // The node key defaults to a file next to the network key.
    assert_eq!(s.node_key, Path::new("/etc/anytun/keys/node.key"));
    assert_eq!(s.listen, "127.0.0.1:7476".parse().unwrap());
    assert_eq!(s.startup_timeout, std::time::Duration::from_secs(3));
    assert_eq!(s.solo_grace, std::time::Duration::from_secs(5));
    assert_eq!(s.peer_detect, std::time::Duration::from_secs(1));
    assert_eq!(s.peers.len(), 1);
    assert_eq!(s.peers[0].id, 2);
    assert_eq!(s.peers[0].public_key.to_base64(), PEER_KEY);
    assert!(
        !s.peers[0].revoked,
        "a peer is not revoked unless it says so"
    );
    let revoked = format!("{text}revoked = true\n");
    let s = parse(&revoked, origin()).unwrap().sync.unwrap();
    assert!(s.peers[0].revoked);
    let (l, _, m) = invalid(&format!("{text}revoked = \"yes\"\n"));
    assert_eq!(l, 11, "{m}");
    assert!(m.contains("true or false"), "{m}");
    // Without [sync] the proxy runs alone.
    assert_eq!(parse("", origin()).unwrap().sync, None);
}

#[test]
fn sync_errors_name_line_and_column() {
    let head = "proxy_id = 1\n[sync]\nlisten = \"127.0.0.1:7476\"\n";
    let peer = |id: &str, key: &str| {
        format!("[[sync.peers]]\nid = {id}\naddress = \"127.0.0.1:7477\"\npublic_key = \"{key}\"\n")
    };
    // Its own id as a peer.
    let (l, c, m) = invalid(&format!("{head}{}", peer("1", PEER_KEY)));
    assert_eq!((l, c), (5, 6), "{m}");
    assert!(m.contains("own proxy_id"), "{m}");
    // The same peer twice, and one key for two peers.
    let (l, _, m) = invalid(&format!(
        "{head}{}{}",
        peer("2", PEER_KEY),
        peer("2", PEER_KEY2)
    ));
    assert_eq!(l, 9, "{m}");
    assert!(m.contains("appears twice"), "{m}");
    let (l, _, m) = invalid(&format!(
        "{head}{}{}",
        peer("2", PEER_KEY),
        peer("3", PEER_KEY)
    ));
    assert_eq!(l, 11, "{m}");
    assert!(m.contains("same public key"), "{m}");
    // A private key pasted as a public key is refused and not quoted.
    let private = crate::crypto::SecretKey::generate().to_base64();
    let (l, _, m) = invalid(&format!("{head}{}", peer("2", &private)));
    assert_eq!(l, 7, "{m}");
    assert!(m.contains("private key") && !m.contains(&private), "{m}");
    // A missing listen, a bad address, an unknown key.
    let (l, _, m) = invalid("[sync]\n");
    assert_eq!(l, 1, "{m}");
    assert!(m.contains("listen is missing"), "{m}");
    let (l, c, m) = invalid("[sync]\nlisten = \"nowhere\"\n");
    assert_eq!((l, c), (2, 10), "{m}");
    let (l, _, m) = invalid("[sync]\nlisten = \"127.0.0.1:1\"\npeer = 3\n");
    assert_eq!(l, 3, "{m}");
    // A peer without an address.
    let (l, _, m) = invalid(&format!(
        "{head}[[sync.peers]]\nid = 2\npublic_key = \"{PEER_KEY}\"\n"
    ));
    assert_eq!(l, 4, "{m}");
    assert!(m.contains("needs address"), "{m}");
    // idle timeout not above keepalive.
    let (l, _, m) = invalid(&format!(
        "{head}keepalive_ms = 1000\nidle_timeout_ms = 1000\n"
    ));
    assert_eq!(l, 5, "{m}");
    let (_, _, m) = invalid("worker_threads = 0\n");
    assert!(m.contains("out of range"), "{m}");
}
