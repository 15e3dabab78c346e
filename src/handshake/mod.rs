//! The client-to-proxy handshake: Noise IK with a timestamp, plus MACs.
//!
//! The client knows the network's static public key (every proxy holds the
//! matching private key), so Noise IK gives one round trip, mutual
//! authentication and forward secrecy. The timestamp in message 1 lets the
//! proxy refuse a replayed message 1. The DoS checks that run before any
//! Diffie-Hellman are in [`dos`].

pub mod dos;
pub mod replay;

use crate::crypto::mac::{mac2, NetworkMacs};
use crate::crypto::{PublicKey, SecretKey};
use crate::wire::handshake::{
    HandshakeInit, HandshakeResponse, ResponsePayload, INIT_LEN, INIT_MAC1_OFFSET,
    INIT_MAC2_OFFSET, INIT_NOISE_LEN, MAC_LEN, RESPONSE_LEN, RESPONSE_NOISE_LEN,
    RESPONSE_PAYLOAD_LEN, TIMESTAMP_LEN,
};
use crate::wire::DropReason;
use std::sync::LazyLock;

/// The Noise protocol name of the client-to-proxy handshake.
pub const NOISE_IK: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Prologue mixed into the handshake hash: binds the protocol and version, so
/// a message for another protocol or version cannot complete this handshake.
pub const PROLOGUE: &[u8] = b"anytun/1 client-proxy";

static IK_PARAMS: LazyLock<snow::params::NoiseParams> =
    LazyLock::new(|| NOISE_IK.parse().expect("valid Noise protocol name"));

/// Keys that come out of a completed handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct SplitKeys {
    /// Key of the client-to-proxy direction.
    pub client_to_proxy: [u8; 32],
    /// Key of the proxy-to-client direction.
    pub proxy_to_client: [u8; 32],
}

impl std::fmt::Debug for SplitKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SplitKeys(..)")
    }
}

/// Why the client side of a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The Noise library refused (a key of the wrong size, or a message that
    /// does not authenticate).
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// A message of the wrong length.
    #[error("handshake message has the wrong length")]
    Length,
    /// The response payload is malformed.
    #[error("malformed handshake response: {0:?}")]
    Payload(DropReason),
}

/// The client's side of a handshake in progress.
pub struct Initiator {
    state: snow::HandshakeState,
    init_tag: u32,
    mac1: [u8; MAC_LEN],
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Initiator(tag {:08x})", self.init_tag)
    }
}

impl Initiator {
    /// Writes a handshake initiation into `out` and returns the state that
    /// will read the answer. `timestamp` is [`crate::crypto::tai64n`] of the
    /// wall clock; `cookie` is the last cookie the proxy sent, if any.
    pub fn start(
        client: &SecretKey,
        network: &PublicKey,
        macs: &NetworkMacs,
        init_tag: u32,
        timestamp: [u8; TIMESTAMP_LEN],
        cookie: Option<&[u8; 16]>,
        out: &mut [u8; INIT_LEN],
    ) -> Result<Self, HandshakeError> {
        let mut state = snow::Builder::new(IK_PARAMS.clone())
            .local_private_key(client.as_bytes())?
            .remote_public_key(&network.0)?
            .prologue(PROLOGUE)?
            .build_initiator()?;
        HandshakeInit::write_prefix(out, init_tag);
        let n = state.write_message(&timestamp, &mut out[8..8 + INIT_NOISE_LEN])?;
        if n != INIT_NOISE_LEN {
            return Err(HandshakeError::Length);
        }
        let mac1 = macs.mac1(&out[..INIT_MAC1_OFFSET]);
        out[INIT_MAC1_OFFSET..INIT_MAC2_OFFSET].copy_from_slice(&mac1);
        let m2 = cookie.map_or([0; MAC_LEN], |c| mac2(c, &out[..INIT_MAC2_OFFSET]));
        out[INIT_MAC2_OFFSET..].copy_from_slice(&m2);
        Ok(Self {
            state,
            init_tag,
            mac1,
        })
    }

    /// The tag this attempt's answer must carry.
    pub fn init_tag(&self) -> u32 {
        self.init_tag
    }

    /// MAC1 of the initiation, which a cookie reply is bound to.
    pub fn mac1(&self) -> &[u8; MAC_LEN] {
        &self.mac1
    }

    /// Reads the proxy's response and completes the handshake.
    pub fn finish(
        mut self,
        response: &HandshakeResponse<'_>,
    ) -> Result<(ResponsePayload, SplitKeys), HandshakeError> {
        let mut payload = [0u8; RESPONSE_NOISE_LEN];
        let n = self.state.read_message(response.noise, &mut payload)?;
        if n != RESPONSE_PAYLOAD_LEN {
            return Err(HandshakeError::Length);
        }
        let payload = ResponsePayload::decode(&payload[..n]).map_err(HandshakeError::Payload)?;
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        Ok((
            payload,
            SplitKeys {
                client_to_proxy: i2r,
                proxy_to_client: r2i,
            },
        ))
    }
}

/// A handshake initiation whose Noise message decrypted: the proxy knows
/// who the client claims to be (authenticated by the static-static DH) and
/// when it made the message, and decides whether to accept.
pub struct Responder {
    state: snow::HandshakeState,
    client: PublicKey,
    timestamp: [u8; TIMESTAMP_LEN],
    init_tag: u32,
}

impl Responder {
    /// Reads message 1. MACs must already have been checked (see [`dos`]).
    pub fn read(network: &SecretKey, init: &HandshakeInit<'_>) -> Result<Self, DropReason> {
        let mut state = snow::Builder::new(IK_PARAMS.clone())
            .local_private_key(network.as_bytes())
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_responder())
            .map_err(|_| DropReason::HandshakeFailed)?;
        let mut payload = [0u8; INIT_NOISE_LEN];
        let n = state
            .read_message(init.noise, &mut payload)
            .map_err(|_| DropReason::HandshakeFailed)?;
        let timestamp: [u8; TIMESTAMP_LEN] = payload[..n]
            .try_into()
            .map_err(|_| DropReason::HandshakeFailed)?;
        let client = state
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .map(PublicKey)
            .ok_or(DropReason::HandshakeFailed)?;
        Ok(Self {
            state,
            client,
            timestamp,
            init_tag: init.init_tag,
        })
    }

    /// The client's authenticated static key.
    pub fn client(&self) -> &PublicKey {
        &self.client
    }

    /// The timestamp from message 1.
    pub fn timestamp(&self) -> &[u8; TIMESTAMP_LEN] {
        &self.timestamp
    }

    /// Writes the response into `out` and returns the session keys.
    pub fn finish(
        mut self,
        payload: &ResponsePayload,
        out: &mut [u8; RESPONSE_LEN],
    ) -> Result<SplitKeys, DropReason> {
        HandshakeResponse::write_prefix(out, self.init_tag);
        let n = self
            .state
            .write_message(&payload.encode(), &mut out[8..])
            .map_err(|_| DropReason::HandshakeFailed)?;
        if n != RESPONSE_NOISE_LEN {
            return Err(DropReason::HandshakeFailed);
        }
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        Ok(SplitKeys {
            client_to_proxy: i2r,
            proxy_to_client: r2i,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::handshake::HandshakeStatus;

    fn payload() -> ResponsePayload {
        ResponsePayload {
            status: HandshakeStatus::Accepted,
            keepalive_s: 15,
            session_id: 0x0001_0000_0000_0042,
            proxy_id: 1,
            observed: "198.51.100.4:5000".parse().unwrap(),
            time: crate::crypto::tai64n(1_800_000_000_000_000_000),
        }
    }

    #[test]
    fn handshake_both_ways_gives_matching_keys() {
        let client = SecretKey::generate();
        let network = SecretKey::generate();
        let macs = NetworkMacs::new(&network.public());
        let mut init = [0u8; INIT_LEN];
        let ts = crate::crypto::tai64n(1);
        let ini =
            Initiator::start(&client, &network.public(), &macs, 5, ts, None, &mut init).unwrap();
        let parsed = HandshakeInit::parse(&init).unwrap();
        assert!(macs.verify_mac1(&init[..INIT_MAC1_OFFSET], &parsed.mac1));
        assert_eq!(parsed.mac2, [0; 16]);
        let resp = Responder::read(&network, &parsed).unwrap();
        assert_eq!(resp.client(), &client.public());
        assert_eq!(resp.timestamp(), &ts);
        let mut out = [0u8; RESPONSE_LEN];
        let proxy_keys = resp.finish(&payload(), &mut out).unwrap();
        let r = HandshakeResponse::parse(&out).unwrap();
        assert_eq!(r.init_tag, 5);
        let (p, client_keys) = ini.finish(&r).unwrap();
        assert_eq!(p, payload());
        assert_eq!(client_keys, proxy_keys);
        assert_ne!(client_keys.client_to_proxy, client_keys.proxy_to_client);
    }

    #[test]
    fn wrong_network_key_cannot_be_read() {
        let client = SecretKey::generate();
        let network = SecretKey::generate();
        let wrong = SecretKey::generate().public();
        let macs = NetworkMacs::new(&wrong);
        let mut init = [0u8; INIT_LEN];
        Initiator::start(&client, &wrong, &macs, 1, [0; 12], None, &mut init).unwrap();
        let parsed = HandshakeInit::parse(&init).unwrap();
        assert!(Responder::read(&network, &parsed).is_err());
    }

    #[test]
    fn any_flipped_bit_in_message_one_fails() {
        let client = SecretKey::generate();
        let network = SecretKey::generate();
        let macs = NetworkMacs::new(&network.public());
        let mut init = [0u8; INIT_LEN];
        Initiator::start(
            &client,
            &network.public(),
            &macs,
            1,
            [0; 12],
            None,
            &mut init,
        )
        .unwrap();
        // Byte 8 onwards is the Noise message; the ephemeral key (first 32
        // bytes) may still be a valid point when flipped, but the tags fail.
        for i in 8..INIT_MAC1_OFFSET {
            let mut m = init;
            m[i] ^= 0x01;
            let parsed = HandshakeInit::parse(&m).unwrap();
            assert!(Responder::read(&network, &parsed).is_err(), "byte {i}");
        }
    }

    #[test]
    fn response_for_another_initiation_fails() {
        let client = SecretKey::generate();
        let network = SecretKey::generate();
        let macs = NetworkMacs::new(&network.public());
        let mut a = [0u8; INIT_LEN];
        let mut b = [0u8; INIT_LEN];
        let _ia =
            Initiator::start(&client, &network.public(), &macs, 1, [0; 12], None, &mut a).unwrap();
        let ib =
            Initiator::start(&client, &network.public(), &macs, 2, [0; 12], None, &mut b).unwrap();
        let ra = Responder::read(&network, &HandshakeInit::parse(&a).unwrap()).unwrap();
        let mut out = [0u8; RESPONSE_LEN];
        ra.finish(&payload(), &mut out).unwrap();
        assert!(ib.finish(&HandshakeResponse::parse(&out).unwrap()).is_err());
    }
}
