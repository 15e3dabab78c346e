//! What [`boot`](super::boot) hands the proxy core from a config.

use super::proxy_config;
use crate::config;
use crate::crypto::SecretKey;
use crate::session::ProxyId;
use std::path::Path;
use std::time::Duration;

/// Every timer and limit of anytund.toml reaches the core, none left at
/// the core's own default (each value differs from it).
#[test]
fn the_core_gets_the_config_s_timers_and_limits() {
    let text = "proxy_id = 7\n\
                keepalive_s = 20\n\
                session_timeout_s = 41\n\
                max_register_expires_s = 600\n\
                media_timeout_s = 30\n\
                ring_timeout_s = 2\n\
                max_calls_per_session = 100\n\
                max_sessions = 5000\n\
                relay_via_serving = true\n";
    let cfg = config::parse(text, Path::new("/etc/anytun/anytund.toml")).unwrap();
    let id = ProxyId::new(7).unwrap();
    let pc = proxy_config(&cfg, id, SecretKey::generate());
    let default = crate::proxy::ProxyConfig::new(id, SecretKey::generate());
    assert_eq!(pc.ring_timeout, Duration::from_secs(2));
    assert_ne!(pc.ring_timeout, default.ring_timeout);
    assert_eq!(pc.keepalive_s, 20);
    assert_eq!(pc.session_timeout, Duration::from_secs(41));
    assert_eq!(pc.max_register_expires_s, 600);
    assert_eq!(pc.media_timeout, Duration::from_secs(30));
    assert_eq!(pc.max_calls_per_session, 100);
    assert_eq!(pc.max_sessions, 5000);
    assert!(pc.relay_via_serving);
}
