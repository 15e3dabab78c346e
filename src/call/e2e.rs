//! End-to-end encryption between the two clients of a call.
//!
//! Call set-up carries a Noise IX handshake: the caller's message 1 rides in
//! the Invite, the answering device's message 2 in the Answer. Each side checks
//! that the static key the other used is the key the proxy vouches for (the
//! proxy authenticated both clients in their own handshakes). Proxies relay
//! the messages but cannot read or alter voice or DTMF afterwards.
//!
//! What the two clients agree on through the proxy is bound into the
//! handshake (spec 11.2, 11.3): the call id, the name dialled
//! and the exact codec offer go into the prologue ([`CallBinding`]), and
//! message 2 carries, encrypted, the chosen codec and the caller name the
//! answering device was shown. A proxy that changes any of them makes the
//! caller's check fail, and the call ends before any voice flows.
//!
//! Voice and DTMF are then sealed with `ring` under direction keys split from
//! the handshake, nonce `0u32 || counter`, AAD `call_id || counter`.

use crate::call::Name;
use crate::crypto::{DirectionKey, PublicKey, SecretKey};
use crate::session::{CallId, ReplayWindow};
use crate::wire::DropReason;
use std::sync::LazyLock;

/// The Noise protocol name of the end-to-end handshake.
pub const NOISE_IX: &str = "Noise_IX_25519_ChaChaPoly_BLAKE2s";

static IX_PARAMS: LazyLock<snow::params::NoiseParams> =
    LazyLock::new(|| NOISE_IX.parse().expect("valid Noise protocol name"));

/// What both clients of a call know from the Invite, bound into the
/// end-to-end handshake's prologue: the caller from what it sent, the
/// answering device from what it received. If the proxy changed any of it,
/// the two prologues differ and message 2 fails to authenticate.
#[derive(Clone, Copy, Debug)]
pub struct CallBinding<'a> {
    /// The call id (a message 2 from one call cannot finish another).
    pub call: CallId,
    /// The name dialled.
    pub to: &'a Name,
    /// The codecs offered, in the caller's order.
    pub codecs: &'a [String],
}

impl CallBinding<'_> {
    fn prologue(&self) -> Vec<u8> {
        // Every field length-prefixed, so no two bindings encode alike.
        let mut p = Vec::with_capacity(64);
        p.extend_from_slice(b"anytun/1 end-to-end ");
        p.extend_from_slice(&self.call.0.to_be_bytes());
        let mut field = |b: &[u8]| {
            p.extend_from_slice(&(b.len() as u16).to_be_bytes());
            p.extend_from_slice(b);
        };
        field(self.to.as_str().as_bytes());
        field(&(self.codecs.len() as u16).to_be_bytes());
        for c in self.codecs {
            field(c.as_bytes());
        }
        p
    }
}

/// Message 2's payload: codec length (1), codec, then the caller name the
/// answering device was shown.
fn encode_answer(codec: &str, from: &Name) -> Option<Vec<u8>> {
    let n = u8::try_from(codec.len()).ok()?;
    let mut p = vec![n];
    p.extend_from_slice(codec.as_bytes());
    p.extend_from_slice(from.as_str().as_bytes());
    Some(p)
}

fn decode_answer(p: &[u8]) -> Option<(String, String)> {
    let (&n, rest) = p.split_first()?;
    let (codec, from) = rest.split_at_checked(usize::from(n))?;
    Some((
        std::str::from_utf8(codec).ok()?.to_owned(),
        std::str::from_utf8(from).ok()?.to_owned(),
    ))
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
    /// Message 2's payload (codec and caller name) is malformed.
    #[error("end-to-end handshake: malformed codec or caller name")]
    Codec,
    /// Message 2 does not authenticate against the call as this client
    /// placed it: the Invite was changed on the way (the name dialled, the
    /// codec offer), or the answer belongs to another call.
    #[error(
        "end-to-end check failed: the answering device saw a different call than was placed \
         (the name dialled or the codec offer was changed in transit)"
    )]
    Tampered,
    /// The answering device was shown another caller name than this client
    /// called as.
    #[error("end-to-end check failed: called as {sent}, but the callee was shown {shown}")]
    CallerNameChanged {
        /// The name this client called as.
        sent: String,
        /// The name the answering device saw.
        shown: String,
    },
    /// The answer chose a codec the caller did not offer.
    #[error("the answer chose codec {0}, which was not offered")]
    CodecNotOffered(String),
}

/// The caller's half-finished handshake, kept until the Answer arrives.
pub struct CallerHandshake {
    state: snow::HandshakeState,
    call: CallId,
    /// The name the caller chose to call as (`None`: the proxy's choice).
    from: Option<Name>,
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
    /// Starts the handshake for the Invite described by `binding`, sent
    /// as `from` (`None`: the proxy picks the caller name, and the caller
    /// accepts its choice); returns the state and message 1 for the Invite.
    pub fn start(
        me: &SecretKey,
        binding: &CallBinding<'_>,
        from: Option<&Name>,
    ) -> Result<(Self, Vec<u8>), E2eError> {
        let mut state = snow::Builder::new(IX_PARAMS.clone())
            .local_private_key(me.as_bytes())?
            .prologue(&binding.prologue())?
            .build_initiator()?;
        let mut msg = vec![0u8; 128];
        let n = state.write_message(&[], &mut msg)?;
        msg.truncate(n);
        let hs = Self {
            state,
            call: binding.call,
            from: from.cloned(),
        };
        Ok((hs, msg))
    }

    /// Reads the answering device's message 2; `vouched` is the key the
    /// proxy put in the Answer. Returns the keys and the chosen codec.
    ///
    /// # Errors
    /// [`E2eError::Tampered`] when the answering device bound another call
    /// (a changed Invite), [`E2eError::CallerNameChanged`] when it was shown
    /// another caller name, [`E2eError::KeyMismatch`] when the proxy vouches
    /// for another key than the one used.
    pub fn finish(
        mut self,
        msg2: &[u8],
        vouched: &PublicKey,
    ) -> Result<(E2eSession, String), E2eError> {
        let mut payload = [0u8; 256];
        let n = self
            .state
            .read_message(msg2, &mut payload)
            .map_err(|e| match e {
                snow::Error::Decrypt => E2eError::Tampered,
                e => E2eError::Noise(e),
            })?;
        check_key(&self.state, vouched)?;
        let (codec, shown) = decode_answer(&payload[..n]).ok_or(E2eError::Codec)?;
        if let Some(sent) = &self.from {
            if sent.as_str() != shown {
                return Err(E2eError::CallerNameChanged {
                    sent: sent.to_string(),
                    shown,
                });
            }
        }
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        Ok((E2eSession::new(self.call, i2r, r2i), codec))
    }
}

/// The callee's side: reads message 1 of the Invite described by
/// `binding`, as received, from the caller shown as `from`, and answers with
/// message 2 carrying the chosen codec and `from`.
pub fn answer(
    me: &SecretKey,
    binding: &CallBinding<'_>,
    from: &Name,
    msg1: &[u8],
    vouched_caller: &PublicKey,
    codec: &str,
) -> Result<(E2eSession, Vec<u8>), E2eError> {
    let mut state = snow::Builder::new(IX_PARAMS.clone())
        .local_private_key(me.as_bytes())?
        .prologue(&binding.prologue())?
        .build_responder()?;
    let mut scratch = [0u8; 256];
    state.read_message(msg1, &mut scratch)?;
    check_key(&state, vouched_caller)?;
    let payload = encode_answer(codec, from).ok_or(E2eError::Codec)?;
    let mut msg2 = vec![0u8; 256];
    let n = state.write_message(&payload, &mut msg2)?;
    msg2.truncate(n);
    let (i2r, r2i) = state.dangerously_get_raw_split();
    Ok((E2eSession::new(binding.call, r2i, i2r), msg2))
}

/// Checks message 1 without answering, so a callee can refuse an Invite whose
/// caller key does not match before it rings. (Message 1 of IX carries no
/// MAC, so a changed Invite shows only when the caller reads message 2.)
pub fn check_invite(binding: &CallBinding<'_>, msg1: &[u8], vouched_caller: &PublicKey) -> bool {
    let prologue = binding.prologue();
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

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn codecs() -> Vec<String> {
        vec!["ulaw".into(), "alaw".into()]
    }

    #[test]
    fn handshake_and_traffic_both_ways() {
        let (alice, bob, call) = setup();
        let (to, offer, from) = (n("bob"), codecs(), n("alice"));
        let binding = CallBinding {
            call,
            to: &to,
            codecs: &offer,
        };
        let (hs, m1) = CallerHandshake::start(&alice, &binding, Some(&from)).unwrap();
        assert!(check_invite(&binding, &m1, &alice.public()));
        let (mut b, m2) = answer(&bob, &binding, &from, &m1, &alice.public(), "ulaw").unwrap();
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
        let (to, offer, from) = (n("bob"), codecs(), n("alice"));
        let binding = CallBinding {
            call,
            to: &to,
            codecs: &offer,
        };
        let mallory = SecretKey::generate();
        let (hs, m1) = CallerHandshake::start(&mallory, &binding, None).unwrap();
        // The proxy vouches for alice, but the handshake came from mallory.
        assert!(!check_invite(&binding, &m1, &alice.public()));
        assert!(matches!(
            answer(&bob, &binding, &from, &m1, &alice.public(), "ulaw"),
            Err(E2eError::KeyMismatch { .. })
        ));
        // And the other way: an answer from mallory posing as bob.
        let (_b, m2) = answer(&mallory, &binding, &from, &m1, &mallory.public(), "ulaw").unwrap();
        assert!(matches!(
            hs.finish(&m2, &bob.public()),
            Err(E2eError::KeyMismatch { .. })
        ));
    }

    /// What the proxy relays is bound: any change to the Invite as the
    /// answering device received it makes the caller's check fail.
    #[test]
    fn a_changed_invite_is_detected_by_the_caller() {
        let (alice, bob, call) = setup();
        let (to, offer, from) = (n("bob"), codecs(), n("alice"));
        let sent = CallBinding {
            call,
            to: &to,
            codecs: &offer,
        };
        let (other_to, fewer, reordered) = (
            n("bobby"),
            vec!["ulaw".to_string()],
            vec!["alaw".to_string(), "ulaw".to_string()],
        );
        let received = [
            CallBinding {
                call: CallId(43),
                ..sent
            },
            CallBinding {
                to: &other_to,
                ..sent
            },
            CallBinding {
                codecs: &fewer,
                ..sent
            },
            CallBinding {
                codecs: &reordered,
                ..sent
            },
        ];
        for seen in received {
            let (hs, m1) = CallerHandshake::start(&alice, &sent, Some(&from)).unwrap();
            let (_b, m2) = answer(&bob, &seen, &from, &m1, &alice.public(), "ulaw").unwrap();
            assert!(
                matches!(hs.finish(&m2, &bob.public()), Err(E2eError::Tampered)),
                "{seen:?}"
            );
        }
        // Another caller name shown to the callee.
        let (hs, m1) = CallerHandshake::start(&alice, &sent, Some(&from)).unwrap();
        let (_b, m2) = answer(&bob, &sent, &n("bank"), &m1, &alice.public(), "ulaw").unwrap();
        assert!(matches!(
            hs.finish(&m2, &bob.public()),
            Err(E2eError::CallerNameChanged { .. })
        ));
        // A caller that let the proxy choose its name accepts the choice.
        let (hs, m1) = CallerHandshake::start(&alice, &sent, None).unwrap();
        let (_b, m2) = answer(&bob, &sent, &from, &m1, &alice.public(), "ulaw").unwrap();
        assert!(hs.finish(&m2, &bob.public()).is_ok());
    }
}
