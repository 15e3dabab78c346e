//! X25519 static keys and their text form (base64, as WireGuard prints them).
//!
//! A public key is written as bare base64. A private key is written with a
//! [`PRIVATE_PREFIX`] (`private:<base64>`), so that one given where a public
//! key belongs (e.g. the daemon's `network.key` as a client's
//! `--network-key`) is recognised and refused without ever being echoed.
//! Private key files written before the prefix existed (bare base64) are
//! still read as private keys.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::fmt;
use std::path::{Path, PathBuf};

/// Tag that starts a private key's text form (key files and `anytun keygen`
/// output).
pub const PRIVATE_PREFIX: &str = "private:";

/// A 32-byte X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A 32-byte X25519 private key. Zeroed when dropped; never printed by Debug.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

/// Why a key could not be read. No variant carries or prints any of the
/// key text, since that text may be a private key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not base64. (The decoder's own message is not kept: it
    /// quotes the offending character of what may be a secret.)
    #[error("not a key: expected 44 characters of base64 (A-Z a-z 0-9 + / =)")]
    Base64,
    /// The decoded key is not 32 bytes.
    #[error("key is {0} bytes long, expected 32")]
    Length(usize),
    /// A private key was given where a public key belongs.
    #[error("this is a private key; give the PUBLIC key: `anytun pubkey --key FILE` prints it")]
    PrivateKey,
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

impl KeyError {
    /// Whether this is (or wraps) [`KeyError::PrivateKey`].
    pub fn is_private_key(&self) -> bool {
        match self {
            Self::PrivateKey => true,
            Self::FileContent { source, .. } => source.is_private_key(),
            _ => false,
        }
    }
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = B64.decode(text.trim()).map_err(|_| KeyError::Base64)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length(len))
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::File {
        path: path.to_owned(),
        source,
    })
}

impl PublicKey {
    /// Parses a base64 public key. A private key's text form is refused as
    /// [`KeyError::PrivateKey`].
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        if text.trim_start().starts_with(PRIVATE_PREFIX) {
            return Err(KeyError::PrivateKey);
        }
        decode32(text).map(Self)
    }

    /// Reads a file holding one base64 public key; a private key file is
    /// refused as [`KeyError::PrivateKey`] (wrapped in `FileContent`).
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_base64(&read_text(path)?).map_err(|e| KeyError::FileContent {
            path: path.to_owned(),
            source: Box::new(e),
        })
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

    /// Parses a private key's text form: `private:<base64>`, or bare
    /// base64 as older key files hold.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        decode32(text.strip_prefix(PRIVATE_PREFIX).unwrap_or(text)).map(Self)
    }

    /// The text form, `private:<base64>` (for key files and `anytun keygen`
    /// only).
    pub fn to_base64(&self) -> String {
        format!("{PRIVATE_PREFIX}{}", B64.encode(self.0))
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

    /// Reads a key file holding one private key (see
    /// [`from_base64`](Self::from_base64)).
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_text(path)?;
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

impl SecretKey {
    /// Rewrites a private key file of the old bare-base64 form in the
    /// tagged form, so that it is recognised (and refused) wherever a
    /// public key belongs. The new file replaces the old one by an atomic
    /// rename, with mode 0600, so a crash leaves one of the two whole.
    /// Returns whether the file was rewritten (false: already tagged).
    pub fn upgrade_file(path: &Path) -> Result<bool, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = read_text(path)?;
        if text.trim_start().starts_with(PRIVATE_PREFIX) {
            return Ok(false);
        }
        let key = Self::from_base64(&text).map_err(|e| KeyError::FileContent {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let err = |source| KeyError::File {
            path: path.to_owned(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        // A leftover from a crash holds this same key or garbage: replace it.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        writeln!(f, "{}", key.to_base64()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(true)
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
            Err(KeyError::Base64)
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

    #[test]
    fn private_keys_are_tagged_and_refused_as_public_keys() {
        let s = SecretKey::generate();
        let bare = B64.encode(s.as_bytes());
        let text = s.to_base64();
        assert_eq!(text, format!("private:{bare}"));
        // Given where a public key belongs, it is refused, and the error
        // says so without quoting any of it.
        for given in [text.clone(), format!("  {text}\n")] {
            let err = PublicKey::from_base64(&given).unwrap_err();
            assert!(err.is_private_key(), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("private key") && msg.contains("anytun pubkey"),
                "{msg}"
            );
            assert_no_part_of(&msg, &bare);
        }
        // A private key file too (as the daemon's network.key).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.key");
        s.write_new_file(&path).unwrap();
        let err = PublicKey::read_file(&path).unwrap_err();
        assert!(err.is_private_key(), "{err}");
        assert_no_part_of(&err.to_string(), &bare);
        // Both forms still read as private keys (files from before the tag).
        assert_eq!(SecretKey::read_file(&path).unwrap().public(), s.public());
        assert_eq!(SecretKey::from_base64(&bare).unwrap().public(), s.public());
        // A public key file reads as one.
        let pub_path = dir.path().join("network.pub");
        std::fs::write(&pub_path, format!("{}\n", s.public())).unwrap();
        assert_eq!(PublicKey::read_file(&pub_path).unwrap(), s.public());
    }

    #[test]
    fn errors_and_debug_never_show_secret_material() {
        let s = SecretKey::generate();
        let bare = B64.encode(s.as_bytes());
        assert_no_part_of(&format!("{s:?}"), &bare);
        // A bad character in a would-be key is not quoted back.
        let mut typo = bare.clone();
        typo.replace_range(5..6, "!");
        let msg = PublicKey::from_base64(&typo).unwrap_err().to_string();
        assert_no_part_of(&msg, &bare);
        assert!(!msg.contains('!') && !msg.contains("33"), "{msg}");
        // A session handed between proxies holds its direction keys; its
        // Debug form shows neither.
        let state = crate::session::SessionState {
            id: crate::session::SessionId::new(crate::session::ProxyId::new(1).unwrap(), 9),
            client_key: s.public(),
            client_to_proxy: [0xAB; 32],
            proxy_to_client: [0xCD; 32],
            client_counter_floor: 0,
            proxy_counter_floors: Vec::new(),
        };
        let debug = format!("{state:?}");
        assert!(!debug.contains("171") && !debug.contains("205"), "{debug}");
        assert!(!debug.to_lowercase().contains("abab"), "{debug}");
    }

    /// Asserts that `text` holds no 8-character piece of `secret`.
    fn assert_no_part_of(text: &str, secret: &str) {
        for i in 0..secret.len() - 8 {
            let piece = &secret[i..i + 8];
            assert!(
                !text.contains(piece),
                "{text:?} shows {piece:?} of the secret"
            );
        }
    }

    #[test]
    fn old_private_key_files_are_upgraded_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.key");
        let s = SecretKey::generate();
        std::fs::write(&path, format!("{}\n", B64.encode(s.as_bytes()))).unwrap();
        // Before: indistinguishable from a public key.
        assert!(PublicKey::read_file(&path).is_ok());
        assert!(SecretKey::upgrade_file(&path).unwrap());
        assert!(PublicKey::read_file(&path).unwrap_err().is_private_key());
        assert_eq!(SecretKey::read_file(&path).unwrap().public(), s.public());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!SecretKey::upgrade_file(&path).unwrap(), "only once");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
