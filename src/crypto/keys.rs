//! X25519 static keys and their text form (base64, as WireGuard prints them).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::fmt;
use std::path::{Path, PathBuf};

/// A 32-byte X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A 32-byte X25519 private key. Zeroed when dropped; never printed by Debug.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not base64.
    #[error("key is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The decoded key is not 32 bytes.
    #[error("key is {0} bytes long, expected 32")]
    Length(usize),
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key file does not hold one base64 key.
    #[error("{path}: {source}")]
    FileContent {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<KeyError>,
    },
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = B64.decode(text.trim())?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length(len))
}

impl PublicKey {
    /// Parses a base64 public key.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(Self)
    }

    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_base64(s)
    }
}

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        super::random_bytes(&mut k);
        Self(k)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses a base64 private key.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(Self)
    }

    /// The base64 text form (for writing key files only).
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The raw bytes, for the Noise library.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// Reads a key file holding one base64 private key.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::File {
            path: path.to_owned(),
            source,
        })?;
        Self::from_base64(&text).map_err(|e| KeyError::FileContent {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Writes the key to a new file readable by its owner only. Refuses to
    /// overwrite an existing file: losing a network key locks out every client.
    pub fn write_new_file(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| KeyError::File {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        writeln!(f, "{}", self.to_base64()).map_err(err)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a u8; the
            // volatile write keeps the compiler from eliding the zeroing.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_errors() {
        let s = SecretKey::generate();
        let p = s.public();
        assert_eq!(PublicKey::from_base64(&p.to_base64()).unwrap(), p);
        assert_eq!(SecretKey::from_base64(&s.to_base64()).unwrap().public(), p);
        assert!(matches!(
            PublicKey::from_base64("AAAA"),
            Err(KeyError::Length(3))
        ));
        assert!(matches!(
            PublicKey::from_base64("not base64!"),
            Err(KeyError::Base64(_))
        ));
    }

    #[test]
    fn key_file_is_private_and_not_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.key");
        let s = SecretKey::generate();
        s.write_new_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SecretKey::read_file(&path).unwrap().public(), s.public());
        assert!(SecretKey::generate().write_new_file(&path).is_err());
        std::fs::write(&path, "garbage").unwrap();
        let e = SecretKey::read_file(&path).unwrap_err().to_string();
        assert!(e.contains("k.key"), "{e}");
    }
}
