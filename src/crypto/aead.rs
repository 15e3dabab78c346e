//! The per-packet AEAD: ChaCha20-Poly1305 from `ring`, in place, no allocation.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};

/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;

/// A key for one direction of traffic.
///
/// `ring`'s `LessSafeKey` lets the caller choose nonces; the protocol's nonce
/// rules (sender id plus a counter that never repeats) are what make that safe.
pub struct DirectionKey {
    key: LessSafeKey,
    raw: [u8; 32],
}

/// The AEAD tag did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct OpenError;

impl DirectionKey {
    /// Builds a key from 32 raw bytes.
    pub fn new(raw: [u8; 32]) -> Self {
        // CHACHA20_POLY1305 takes any 32-byte key, so this cannot fail.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &raw).expect("32-byte key");
        Self {
            key: LessSafeKey::new(unbound),
            raw,
        }
    }

    /// The raw key, for handing a session to another proxy.
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag: Tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            // Only fails for inputs over 256 GiB.
            .expect("packet within AEAD limits");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `ciphertext_and_tag` in place; returns the plaintext, which is
    /// the front of the buffer without the tag.
    pub fn open<'a>(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        ciphertext_and_tag: &'a mut [u8],
    ) -> Result<&'a mut [u8], OpenError> {
        self.key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                ciphertext_and_tag,
            )
            .map_err(|_| OpenError)
    }
}

impl Clone for DirectionKey {
    fn clone(&self) -> Self {
        Self::new(self.raw)
    }
}

impl Drop for DirectionKey {
    fn drop(&mut self) {
        for b in self.raw.iter_mut() {
            // SAFETY: valid exclusive reference; volatile so it is not elided.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl std::fmt::Debug for DirectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let k = DirectionKey::new([7; 32]);
        let mut buf = *b"hello world.....";
        let tag = k.seal([1; 12], b"hdr", &mut buf);
        let mut ct = buf.to_vec();
        ct.extend_from_slice(&tag);
        let mut good = ct.clone();
        assert_eq!(
            k.open([1; 12], b"hdr", &mut good).unwrap(),
            b"hello world....."
        );
        let mut bad_nonce = ct.clone();
        assert!(k.open([2; 12], b"hdr", &mut bad_nonce).is_err());
        let mut bad_aad = ct.clone();
        assert!(k.open([1; 12], b"hdR", &mut bad_aad).is_err());
        for i in 0..ct.len() {
            let mut flipped = ct.clone();
            flipped[i] ^= 0x40;
            assert!(k.open([1; 12], b"hdr", &mut flipped).is_err(), "byte {i}");
        }
    }
}
