//! The handshake's denial-of-service defences: MAC1, MAC2 and cookies.
//!
//! MAC1 is keyed by a hash of the network's public key, so a proxy can drop
//! packets from anyone who does not know which network they talk to before
//! spending a Diffie-Hellman on them. MAC2 is keyed by a cookie that only the
//! holder of the source address can have received, so under load a proxy can
//! insist that the sender really owns its address before doing any work.

use super::PublicKey;
use blake2::digest::consts::U16;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

type Mac128 = Blake2sMac<U16>;

/// How long a cookie secret is used before a new one is drawn.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

fn derive(label: &[u8; 8], key: &PublicKey) -> [u8; 32] {
    Blake2s256::new()
        .chain_update(label)
        .chain_update(key.0)
        .finalize()
        .into()
}

fn mac128(key: &[u8], msg: &[u8]) -> Mac128 {
    // Blake2sMac accepts keys up to 32 bytes; all keys here are 16 or 32.
    let mut m = <Mac128 as KeyInit>::new_from_slice(key).expect("key of at most 32 bytes");
    Mac::update(&mut m, msg);
    m
}

/// The MAC1 and cookie-sealing keys of one network, derived from its public
/// key. Clients and proxies both hold one.
#[derive(Clone)]
pub struct NetworkMacs {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
}

impl NetworkMacs {
    /// Derives the keys from the network public key.
    pub fn new(network_public: &PublicKey) -> Self {
        Self {
            mac1_key: derive(b"mac1----", network_public),
            cookie_key: derive(b"cookie--", network_public),
        }
    }

    /// MAC1 over `msg` (the initiation up to its mac1 field).
    pub fn mac1(&self, msg: &[u8]) -> [u8; 16] {
        mac128(&self.mac1_key, msg).finalize().into_bytes().into()
    }

    /// Checks MAC1 in constant time.
    pub fn verify_mac1(&self, msg: &[u8], mac: &[u8; 16]) -> bool {
        mac128(&self.mac1_key, msg).verify_slice(mac).is_ok()
    }

    /// Seals a cookie for the client, bound to the initiation's MAC1.
    pub fn seal_cookie(&self, cookie: &[u8; 16], nonce: &[u8; 24], mac1: &[u8; 16]) -> [u8; 32] {
        let aead = XChaCha20Poly1305::new((&self.cookie_key).into());
        let mut buf = *cookie;
        let tag = aead
            .encrypt_in_place_detached(XNonce::from_slice(nonce), mac1, &mut buf)
            .expect("16-byte message");
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&buf);
        out[16..].copy_from_slice(&tag);
        out
    }

    /// Opens a sealed cookie; `None` if it is not authentic.
    pub fn open_cookie(&self, nonce: &[u8], sealed: &[u8], mac1: &[u8; 16]) -> Option<[u8; 16]> {
        if nonce.len() != 24 || sealed.len() != 32 {
            return None;
        }
        let aead = XChaCha20Poly1305::new((&self.cookie_key).into());
        let mut buf = [0u8; 16];
        buf.copy_from_slice(&sealed[..16]);
        aead.decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            mac1,
            &mut buf,
            sealed[16..].into(),
        )
        .ok()?;
        Some(buf)
    }
}

/// MAC2 over `msg` (the initiation up to its mac2 field), keyed by a cookie.
pub fn mac2(cookie: &[u8; 16], msg: &[u8]) -> [u8; 16] {
    mac128(cookie, msg).finalize().into_bytes().into()
}

/// The proxy's rotating cookie secret.
pub struct CookieSecret {
    current: [u8; 32],
    previous: [u8; 32],
    born: Instant,
}

impl CookieSecret {
    /// A fresh secret, born `now`.
    pub fn new(now: Instant) -> Self {
        let mut current = [0u8; 32];
        let mut previous = [0u8; 32];
        super::random_bytes(&mut current);
        super::random_bytes(&mut previous);
        Self {
            current,
            previous,
            born: now,
        }
    }

    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.born);
        if age >= COOKIE_SECRET_LIFETIME {
            // After two lifetimes the current secret is as stale as the
            // previous one: replace both, or old cookies would live forever
            // on a proxy that is rarely under load.
            if age >= 2 * COOKIE_SECRET_LIFETIME {
                super::random_bytes(&mut self.previous);
            } else {
                self.previous = self.current;
            }
            super::random_bytes(&mut self.current);
            self.born = now;
        }
    }

    fn cookie_with(secret: &[u8; 32], src: SocketAddr) -> [u8; 16] {
        let ip = match src.ip().to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut m = mac128(secret, &ip);
        Mac::update(&mut m, &src.port().to_be_bytes());
        m.finalize().into_bytes().into()
    }

    /// The cookie for a source address (rotating the secret when due).
    pub fn cookie_for(&mut self, now: Instant, src: SocketAddr) -> [u8; 16] {
        self.rotate(now);
        Self::cookie_with(&self.current, src)
    }

    /// Checks an initiation's MAC2 against the cookie of its source address,
    /// under the current or the previous secret (so a cookie handed out just
    /// before a rotation still works).
    pub fn verify_mac2(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: &[u8],
        mac: &[u8; 16],
    ) -> bool {
        self.rotate(now);
        [&self.current, &self.previous].into_iter().any(|secret| {
            let cookie = Self::cookie_with(secret, src);
            mac128(&cookie, msg).verify_slice(mac).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    #[test]
    fn mac1_depends_on_network_key() {
        let a = NetworkMacs::new(&SecretKey::generate().public());
        let b = NetworkMacs::new(&SecretKey::generate().public());
        let m = a.mac1(b"message");
        assert!(a.verify_mac1(b"message", &m));
        assert!(!b.verify_mac1(b"message", &m));
        assert!(!a.verify_mac1(b"messagE", &m));
    }

    #[test]
    fn cookie_seal_open_bound_to_mac1() {
        let n = NetworkMacs::new(&SecretKey::generate().public());
        let sealed = n.seal_cookie(&[5; 16], &[9; 24], &[1; 16]);
        assert_eq!(n.open_cookie(&[9; 24], &sealed, &[1; 16]), Some([5; 16]));
        assert_eq!(n.open_cookie(&[9; 24], &sealed, &[2; 16]), None);
        assert_eq!(n.open_cookie(&[9; 23], &sealed, &[1; 16]), None);
    }

    #[test]
    fn mac2_bound_to_address_and_survives_one_rotation() {
        let t0 = Instant::now();
        let mut s = CookieSecret::new(t0);
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:1001".parse().unwrap();
        let cookie = s.cookie_for(t0, a);
        let m = mac2(&cookie, b"init");
        assert!(s.verify_mac2(t0, a, b"init", &m));
        assert!(!s.verify_mac2(t0, b, b"init", &m));
        let t1 = t0 + COOKIE_SECRET_LIFETIME;
        assert!(
            s.verify_mac2(t1, a, b"init", &m),
            "previous secret still valid"
        );
        let t2 = t1 + COOKIE_SECRET_LIFETIME;
        assert!(
            !s.verify_mac2(t2, a, b"init", &m),
            "two rotations later: stale"
        );
    }
}
