//! End-to-end encryption between the two clients of a call.
//!
//! Call set-up carries a Noise IX handshake: the caller's message 1 rides in
//! the Invite, the answering device's message 2 in the Answer. Each side checks
//! that the static key the other used is the key the proxy vouches for (the
//! proxy authenticated both clients in their own handshakes). Proxies relay
//! the messages but cannot read or alter voice or DTMF afterwards.
//!
//! Voice and DTMF are then sealed with `ring` under direction keys split from
//! the handshake, nonce `0u32 || counter`, AAD `call_id || counter`.

use crate::crypto::{DirectionKey, PublicKey, SecretKey};
use crate::session::{CallId, ReplayWindow};
use crate::wire::DropReason;
use std::sync::LazyLock;

/// The Noise protocol name of the end-to-end handshake.
pub const NOISE_IX: &str = "Noise_IX_25519_ChaChaPoly_BLAKE2s";

static IX_PARAMS: LazyLock<snow::params::NoiseParams> =
    LazyLock::new(|| NOISE_IX.parse().expect("valid Noise protocol name"));

fn prologue(call: CallId) -> [u8; 28] {
    // Binding the call id means a message 2 from one call cannot finish
    // another call's handshake.
    let mut p = [0u8; 28];
    p[..20].copy_from_slice(b"anytun/1 end-to-end ");
    p[20..].copy_from_slice(&call.0.to_be_bytes());
    p
}

/// Why the end-to-end handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// The Noise library refused the message.
    #[error("end-to-end handshake: {0}")]
    Noise(#[from] snow::Error),
    /// The peer's static key is not the one the proxy authenticated.
    #[error("end-to-end handshake: peer used key {used}, proxy vouches for {vouched}")]
    KeyMismatch {
        /// Key in the handshake.
        used: PublicKey,
        /// Key the proxy named.
        vouched: PublicKey,
    },
    /// The codec in message 2 is not valid UTF-8.
    #[error("end-to-end handshake: malformed codec name")]
    Codec,
    /// The answer chose a codec the caller did not offer.
    #[error("the answer chose codec {0}, which was not offered")]
    CodecNotOffered(String),
}

/// The caller's half-finished handshake, kept until the Answer arrives.
pub struct CallerHandshake {
    state: snow::HandshakeState,
    call: CallId,
}

impl std::fmt::Debug for CallerHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerHandshake(..)")
    }
}

fn remote_key(state: &snow::HandshakeState) -> Option<PublicKey> {
    state
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .map(PublicKey)
}

fn check_key(state: &snow::HandshakeState, vouched: &PublicKey) -> Result<(), E2eError> {
    let used = remote_key(state).unwrap_or(PublicKey([0; 32]));
    if &used == vouched {
        Ok(())
    } else {
        Err(E2eError::KeyMismatch {
            used,
            vouched: *vouched,
        })
    }
}

impl CallerHandshake {
    /// Starts the handshake; returns the state and message 1 for the Invite.
    pub fn start(me: &SecretKey, call: CallId) -> Result<(Self, Vec<u8>), E2eError> {
        let mut state = snow::Builder::new(IX_PARAMS.clone())
            .local_private_key(me.as_bytes())?
            .prologue(&prologue(call))?
            .build_initiator()?;
        let mut msg = vec![0u8; 128];
        let n = state.write_message(&[], &mut msg)?;
        msg.truncate(n);
        Ok((Self { state, call }, msg))
    }

    /// Reads the answering device's message 2; `vouched` is the key the
    /// proxy put in the Answer. Returns the keys and the chosen codec.
    pub fn finish(
        mut self,
        msg2: &[u8],
        vouched: &PublicKey,
    ) -> Result<(E2eSession, String), E2eError> {
        let mut payload = [0u8; 256];
        let n = self.state.read_message(msg2, &mut payload)?;
        check_key(&self.state, vouched)?;
        let codec = std::str::from_utf8(&payload[..n])
            .map_err(|_| E2eError::Codec)?
            .to_owned();
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        Ok((E2eSession::new(self.call, i2r, r2i), codec))
    }
}

/// The callee's side: reads message 1 and answers with message 2 carrying
/// the chosen codec.
pub fn answer(
    me: &SecretKey,
    call: CallId,
    msg1: &[u8],
    vouched_caller: &PublicKey,
    codec: &str,
) -> Result<(E2eSession, Vec<u8>), E2eError> {
    let mut state = snow::Builder::new(IX_PARAMS.clone())
        .local_private_key(me.as_bytes())?
        .prologue(&prologue(call))?
        .build_responder()?;
    let mut scratch = [0u8; 256];
    state.read_message(msg1, &mut scratch)?;
    check_key(&state, vouched_caller)?;
    let mut msg2 = vec![0u8; 256];
    let n = state.write_message(codec.as_bytes(), &mut msg2)?;
    msg2.truncate(n);
    let (i2r, r2i) = state.dangerously_get_raw_split();
    Ok((E2eSession::new(call, r2i, i2r), msg2))
}

/// Checks message 1 without answering, so a callee can refuse an Invite whose
/// caller key does not match before it rings.
pub fn check_invite(call: CallId, msg1: &[u8], vouched_caller: &PublicKey) -> bool {
    let prologue = prologue(call);
    let Ok(mut state) = snow::Builder::new(IX_PARAMS.clone())
        .local_private_key(&[1; 32])
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
    else {
        return false;
    };
    let mut scratch = [0u8; 256];
    state.read_message(msg1, &mut scratch).is_ok() && check_key(&state, vouched_caller).is_ok()
}

/// Established end-to-end keys of one call at one client.
#[derive(Debug)]
pub struct E2eSession {
    call: CallId,
    send: DirectionKey,
    recv: DirectionKey,
    send_counter: u64,
    window: ReplayWindow,
}

/// Bytes an end-to-end blob adds around its plaintext (counter and tag).
pub const E2E_OVERHEAD: usize = 8 + 16;

impl E2eSession {
    fn new(call: CallId, send: [u8; 32], recv: [u8; 32]) -> Self {
        Self {
            call,
            send: DirectionKey::new(send),
            recv: DirectionKey::new(recv),
            send_counter: 0,
            window: ReplayWindow::new(),
        }
    }

    fn aad(call: CallId, counter: u64) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&call.0.to_be_bytes());
        a[8..].copy_from_slice(&counter.to_be_bytes());
        a
    }

    fn nonce(counter: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_be_bytes());
        n
    }

    /// Seals an end-to-end message built in place by `write` into `out`
    /// (counter, ciphertext, tag). Returns the blob length.
    pub fn seal(
        &mut self,
        out: &mut [u8],
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        if out.len() < E2E_OVERHEAD + 1 {
            return None;
        }
        let counter = self.send_counter;
        let room = out.len() - E2E_OVERHEAD;
        let n = write(&mut out[8..8 + room]).filter(|&n| n >= 1 && n <= room)?;
        out[..8].copy_from_slice(&counter.to_be_bytes());
        let tag = self.send.seal(
            Self::nonce(counter),
            &Self::aad(self.call, counter),
            &mut out[8..8 + n],
        );
        out[8 + n..8 + n + 16].copy_from_slice(&tag);
        self.send_counter += 1;
        Some(E2E_OVERHEAD + n)
    }

    /// Opens a blob in place; returns the plaintext.
    pub fn open<'a>(&mut self, blob: &'a mut [u8]) -> Result<&'a [u8], DropReason> {
        if blob.len() < E2E_OVERHEAD + 1 {
            return Err(DropReason::BadEndToEnd);
        }
        let (head, body) = blob.split_at_mut(8);
        let counter = u64::from_be_bytes(head.try_into().map_err(|_| DropReason::BadEndToEnd)?);
        if !self.window.check(counter) {
            return Err(DropReason::BadEndToEnd);
        }
        let plain = self
            .recv
            .open(Self::nonce(counter), &Self::aad(self.call, counter), body)
            .map_err(|_| DropReason::BadEndToEnd)?;
        self.window.mark(counter);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SecretKey, SecretKey, CallId) {
        (SecretKey::generate(), SecretKey::generate(), CallId(42))
    }

    #[test]
    fn handshake_and_traffic_both_ways() {
        let (alice, bob, call) = setup();
        let (hs, m1) = CallerHandshake::start(&alice, call).unwrap();
        assert!(check_invite(call, &m1, &alice.public()));
        let (mut b, m2) = answer(&bob, call, &m1, &alice.public(), "ulaw").unwrap();
        let (mut a, codec) = hs.finish(&m2, &bob.public()).unwrap();
        assert_eq!(codec, "ulaw");
        let mut buf = [0u8; 64];
        let n = a.seal(&mut buf, |b| {
            b[..5].copy_from_slice(b"hello");
            Some(5)
        });
        let n = n.unwrap();
        let mut copy = buf;
        assert_eq!(b.open(&mut buf[..n]).unwrap(), b"hello");
        assert!(b.open(&mut copy[..n]).is_err(), "replay refused");
        let n = b.seal(&mut buf, |b| {
            b[0] = 1;
            Some(1)
        });
        assert_eq!(a.open(&mut buf[..n.unwrap()]).unwrap(), &[1]);
    }

    #[test]
    fn substituted_keys_are_detected() {
        let (alice, bob, call) = setup();
        let mallory = SecretKey::generate();
        let (hs, m1) = CallerHandshake::start(&mallory, call).unwrap();
        // The proxy vouches for alice, but the handshake came from mallory.
        assert!(!check_invite(call, &m1, &alice.public()));
        assert!(matches!(
            answer(&bob, call, &m1, &alice.public(), "ulaw"),
            Err(E2eError::KeyMismatch { .. })
        ));
        // And the other way: an answer from mallory posing as bob.
        let (_b, m2) = answer(&mallory, call, &m1, &mallory.public(), "ulaw").unwrap();
        assert!(matches!(
            hs.finish(&m2, &bob.public()),
            Err(E2eError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn message_two_of_another_call_fails() {
        let (alice, bob, call) = setup();
        let other = CallId(43);
        // IX message 1 carries no MAC, so the mismatch shows at message 2.
        let (hs, m1) = CallerHandshake::start(&alice, call).unwrap();
        let (_b, m2) = answer(&bob, other, &m1, &alice.public(), "ulaw").unwrap();
        assert!(hs.finish(&m2, &bob.public()).is_err());
    }
}
