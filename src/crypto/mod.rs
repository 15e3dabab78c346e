//! Cryptographic building blocks: static keys, the data-path AEAD, the
//! handshake MACs and cookies, timestamps and randomness.
//!
//! The Noise handshakes themselves use `snow` (see `handshake` and `call::e2e`);
//! everything per packet goes through `ring`, which is several times faster
//! than the pure-Rust ChaCha20-Poly1305 on this class of machine.

pub mod aead;
pub mod keys;
pub mod mac;

pub use aead::DirectionKey;
pub use keys::{KeyError, PublicKey, SecretKey};

/// Fills `buf` with random bytes from the operating system.
///
/// The core's only contact with the outside world besides its inputs; a
/// failing OS RNG is unrecoverable for a cryptographic protocol, so it aborts
/// loudly rather than continue with predictable values.
pub fn random_bytes(buf: &mut [u8]) {
    if let Err(e) = getrandom::getrandom(buf) {
        panic!("operating system random number generator failed: {e}");
    }
}

/// A random u64.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    u64::from_be_bytes(b)
}

/// A TAI64N timestamp (12 bytes) for a wall-clock time given as nanoseconds
/// since the Unix epoch. Big-endian, so later times compare greater bytewise.
pub fn tai64n(unix_nanos: u128) -> [u8; 12] {
    let secs = (unix_nanos / 1_000_000_000) as u64;
    let nanos = (unix_nanos % 1_000_000_000) as u32;
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&(0x4000_0000_0000_000a_u64 + secs).to_be_bytes());
    out[8..].copy_from_slice(&nanos.to_be_bytes());
    out
}

/// The inverse of [`tai64n`]: nanoseconds since the Unix epoch, or `None`
/// for a label before the epoch or a nanosecond field of 10^9 or more (not a
/// TAI64N value [`tai64n`] could have written).
pub fn tai64n_to_unix_nanos(t: &[u8; 12]) -> Option<u128> {
    let label = u64::from_be_bytes(t[..8].try_into().ok()?);
    let nanos = u32::from_be_bytes(t[8..].try_into().ok()?);
    let secs = label.checked_sub(0x4000_0000_0000_000a)?;
    (nanos < 1_000_000_000).then(|| u128::from(secs) * 1_000_000_000 + u128::from(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tai64n_round_trips_and_refuses_non_values() {
        for t in [0, 1, 1_700_000_000_123_456_789] {
            assert_eq!(tai64n_to_unix_nanos(&tai64n(t)), Some(t));
        }
        assert_eq!(tai64n_to_unix_nanos(&[0; 12]), None, "before the epoch");
        let mut bad = tai64n(5);
        bad[8..].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        assert_eq!(tai64n_to_unix_nanos(&bad), None);
    }

    #[test]
    fn tai64n_orders_bytewise() {
        let a = tai64n(1_700_000_000_000_000_000);
        let b = tai64n(1_700_000_000_000_000_001);
        let c = tai64n(1_700_000_001_000_000_000);
        assert!(a < b && b < c);
    }
}
