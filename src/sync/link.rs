//! The anypsp peer link: one mutually authenticated, encrypted byte pipe
//! between two proxies, as a sans-IO state machine.
//!
//! Bytes in ([`Link::handle_input`], [`Link::handle_eof`]), bytes out
//! ([`Link::take_output`]), timers as deadlines ([`Link::poll_timeout`],
//! [`Link::handle_timeout`]), events out ([`Link::poll_event`]). The tokio
//! shell in `runtime::peers` runs one per TCP connection; the simulator and
//! the fuzzers drive it directly.
//!
//! The handshake is Noise KK (both sides know each other's static key from
//! the membership): the initiator's first frame names both node ids in a
//! clear header that is also the Noise prologue, so the responder knows which
//! static key to expect before any Diffie-Hellman, and a peer whose key does
//! not match the id it claims fails to authenticate. After the two handshake
//! messages every frame is a Noise transport message; the initiator's first
//! one confirms its keys before the responder counts the link as up, so a
//! replayed first message cannot displace a live link. Wire format, timers
//! and limits: docs/anypsp-link.md.

use super::members::{Member, Membership, Refusal};
use crate::crypto::SecretKey;
use crate::session::ProxyId;
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// The Noise protocol of the peer link.
pub const NOISE_KK: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";

/// Mixed into the Noise prologue ahead of the clear header, so that a
/// message of another protocol or version cannot complete this handshake.
pub const PROLOGUE: &[u8] = b"anypsp/1 link";

/// First four bytes of an initiator's first frame.
pub const MAGIC: [u8; 4] = *b"APSP";

/// Link protocol version (byte 4 of the clear header, and the `version`
/// field of the hello payload).
pub const LINK_VERSION: u8 = 1;

/// Length of the clear header of the first frame: magic, version, reserved,
/// initiator node id, responder node id.
pub const HEADER_LEN: usize = 10;

/// Largest Noise message (and so largest frame body).
pub const MAX_NOISE_MSG: usize = 65535;

/// ChaCha20-Poly1305 tag length.
pub const TAG_LEN: usize = 16;

const DH_LEN: usize = 32;

/// Largest hello payload (the TLV fields inside Noise messages 1 and 2).
pub const MAX_HELLO_PAYLOAD: usize = 255;

/// Largest first frame an unauthenticated initiator may send.
pub const MAX_HELLO_FRAME: usize = HEADER_LEN + DH_LEN + MAX_HELLO_PAYLOAD + TAG_LEN;

/// Largest message 2 frame.
pub const MAX_RESPONSE_FRAME: usize = DH_LEN + MAX_HELLO_PAYLOAD + TAG_LEN;

/// Bytes of sync message carried by one record (one Noise message holds a
/// record type byte, the data and the tag).
pub const MAX_RECORD_DATA: usize = MAX_NOISE_MSG - TAG_LEN - 1;

/// Record types: the first byte of each transport plaintext.
pub mod record {
    /// A part of a sync message; more parts follow.
    pub const PART: u8 = 1;
    /// The last (or only) part of a sync message.
    pub const END: u8 = 2;
    /// Nothing; sent when the link has been quiet for the keepalive interval.
    pub const KEEPALIVE: u8 = 3;
    /// The sender switches its sending key to REKEY(k) after this record.
    pub const REKEY: u8 = 4;
    /// The sender closes the link; one byte of reason code follows.
    pub const CLOSE: u8 = 5;
    /// The initiator's first transport record: key confirmation.
    pub const CONFIRM: u8 = 6;
    /// Types with this bit set are extensions a receiver that does not know
    /// them skips; other unknown types close the link.
    pub const IGNORABLE: u8 = 0x80;
}

static KK_PARAMS: LazyLock<snow::params::NoiseParams> =
    LazyLock::new(|| NOISE_KK.parse().expect("valid Noise protocol name"));

macro_rules! link_errors {
    ($($(#[$doc:meta])* $name:ident = $code:literal => $label:literal,)*) => {
        /// Why a link was refused or closed. Each has a stable label (the
        /// metric label) and a code (carried in a `CLOSE` record).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum LinkError {
            $($(#[$doc])* $name,)*
        }

        impl LinkError {
            /// Every reason, in counter order.
            pub const ALL: &'static [LinkError] = &[$(LinkError::$name,)*];

            /// Stable snake_case name, used as the metric label.
            pub fn label(self) -> &'static str {
                match self { $(LinkError::$name => $label,)* }
            }

            /// The code carried in a `CLOSE` record.
            pub fn code(self) -> u8 {
                match self { $(LinkError::$name => $code,)* }
            }

            /// The reason for a code; `None` for codes this version does
            /// not know.
            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some(LinkError::$name),)* _ => None }
            }

            /// Index into [`ALL`](Self::ALL), for counter arrays.
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

link_errors! {
    /// The initiator's node id is not a configured peer (or is ours).
    UnknownPeer = 1 => "unknown_peer",
    /// The initiator is a configured peer, but revoked (by record or key).
    Revoked = 2 => "revoked",
    /// A handshake message did not authenticate: the static key is not the
    /// one configured for the node id claimed (a wrong key, or a node
    /// claiming another node's id), or the message was corrupted.
    KeyMismatch = 3 => "key_mismatch",
    /// The first frame names another node as responder (the initiator
    /// dialed the wrong address).
    WrongNode = 4 => "wrong_node",
    /// A malformed first frame or hello payload.
    BadHello = 5 => "bad_hello",
    /// A link version this node does not speak.
    BadVersion = 6 => "bad_version",
    /// The authenticated hello names another node than the header (or than
    /// the node dialed).
    IdMismatch = 7 => "id_mismatch",
    /// The handshake did not complete in time.
    HandshakeTimeout = 8 => "handshake_timeout",
    /// The responder closed the connection before answering the handshake.
    PeerRefused = 9 => "peer_refused",
    /// Too many handshakes in progress: closed at once, unread.
    Busy = 10 => "busy",
    /// A frame shorter than a Noise tag.
    BadFrame = 11 => "bad_frame",
    /// A frame or a reassembled sync message over its limit.
    Oversized = 12 => "oversized",
    /// A transport message did not authenticate.
    DecryptFailed = 13 => "decrypt_failed",
    /// The connection ended in the middle of a frame.
    Truncated = 14 => "truncated",
    /// A record that is not valid in the link's state, or of an unknown,
    /// non-ignorable type.
    Protocol = 15 => "protocol",
    /// Nothing received for the idle timeout.
    IdleTimeout = 16 => "idle_timeout",
    /// Another link to the same peer won the tie-break.
    Duplicate = 17 => "duplicate",
    /// The peer closed the link (end of stream at a frame boundary, or a
    /// `CLOSE` record with a code this version does not know).
    PeerClosed = 18 => "peer_closed",
    /// The link sent its last allowed message under its keys and closes
    /// before any nonce could repeat; the shell reconnects.
    NonceLimit = 19 => "nonce_limit",
    /// The peer was removed from the membership or revoked while connected.
    Removed = 20 => "removed",
    /// This node is shutting down.
    Shutdown = 21 => "shutdown",
    /// A socket error or a failed connect.
    Io = 22 => "io",
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl std::error::Error for LinkError {}

/// Timers and limits of a link (docs/anypsp-link.md, section 7).
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// From creation until the link is up (both sides).
    pub handshake_timeout: Duration,
    /// A `KEEPALIVE` is sent after this long without sending anything.
    pub keepalive_interval: Duration,
    /// The link closes after this long without receiving anything.
    pub idle_timeout: Duration,
    /// Sending key is ratcheted (`REKEY`) after this many messages ...
    pub rekey_after_messages: u64,
    /// ... or this long, whichever comes first.
    pub rekey_interval: Duration,
    /// Most Noise transport messages one side may send on one link (its
    /// nonces are 0..limit-1, the last one for `CLOSE`); then the link
    /// closes with [`LinkError::NonceLimit`] and the shell re-handshakes.
    /// At most `u64::MAX` (the Noise nonce limit).
    pub nonce_limit: u64,
    /// Largest sync message, bytes.
    pub max_message: usize,
    /// Capability bits offered; the link uses the intersection.
    pub capabilities: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            rekey_after_messages: 1 << 20,
            rekey_interval: Duration::from_secs(600),
            nonce_limit: 1 << 60,
            max_message: 4 << 20,
            capabilities: 0,
        }
    }
}

/// This node's link identity.
pub struct LocalNode {
    /// Node id.
    pub id: ProxyId,
    /// Static private key for peer links.
    pub key: SecretKey,
    /// Random per process start; lets a peer tell a restart from a
    /// simultaneous dial (see [`prefer_new`]).
    pub instance: u64,
}

impl LocalNode {
    /// An identity with a fresh random instance.
    pub fn new(id: ProxyId, key: SecretKey) -> Self {
        Self {
            id,
            key,
            instance: crate::crypto::random_u64(),
        }
    }
}

/// The hello payload inside Noise messages 1 and 2: TLV fields
/// (type u8, length u8, value), unknown types skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's node id.
    pub node: ProxyId,
    /// Highest link version the sender speaks.
    pub version: u8,
    /// Capability bits the sender offers.
    pub capabilities: u64,
    /// The sender's instance (random per process start).
    pub instance: u64,
    /// The initiator's dial sequence number (0 from the responder).
    pub dial_seq: u64,
}

mod tlv {
    pub const NODE: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const CAPABILITIES: u8 = 3;
    pub const INSTANCE: u8 = 4;
    pub const DIAL_SEQ: u8 = 5;
}

impl Hello {
    /// The canonical encoding (fields in type order).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(37);
        b.extend_from_slice(&[tlv::NODE, 2]);
        b.extend_from_slice(&self.node.get().to_be_bytes());
        b.extend_from_slice(&[tlv::VERSION, 1, self.version]);
        b.extend_from_slice(&[tlv::CAPABILITIES, 8]);
        b.extend_from_slice(&self.capabilities.to_be_bytes());
        b.extend_from_slice(&[tlv::INSTANCE, 8]);
        b.extend_from_slice(&self.instance.to_be_bytes());
        b.extend_from_slice(&[tlv::DIAL_SEQ, 8]);
        b.extend_from_slice(&self.dial_seq.to_be_bytes());
        b
    }

    /// Parses a payload. Every known field exactly once with its exact
    /// length, unknown fields skipped; anything else is
    /// [`LinkError::BadHello`].
    pub fn decode(mut b: &[u8]) -> Result<Self, LinkError> {
        let bad = LinkError::BadHello;
        if b.len() > MAX_HELLO_PAYLOAD {
            return Err(bad);
        }
        let (mut node, mut version, mut caps, mut instance, mut seq) =
            (None, None, None, None, None);
        fn set<T>(slot: &mut Option<T>, v: T) -> Result<(), LinkError> {
            match slot.replace(v) {
                None => Ok(()),
                Some(_) => Err(LinkError::BadHello),
            }
        }
        fn u64_of(v: &[u8]) -> Result<u64, LinkError> {
            Ok(u64::from_be_bytes(
                v.try_into().map_err(|_| LinkError::BadHello)?,
            ))
        }
        while !b.is_empty() {
            let [t, len, rest @ ..] = b else {
                return Err(bad);
            };
            let len = usize::from(*len);
            if rest.len() < len {
                return Err(bad);
            }
            let (v, tail) = rest.split_at(len);
            b = tail;
            match *t {
                tlv::NODE => {
                    let raw = u16::from_be_bytes(v.try_into().map_err(|_| bad)?);
                    set(&mut node, ProxyId::new(raw).ok_or(bad)?)?;
                }
                tlv::VERSION => set(&mut version, *<&[u8; 1]>::try_from(v).map_err(|_| bad)?)?,
                tlv::CAPABILITIES => set(&mut caps, u64_of(v)?)?,
                tlv::INSTANCE => set(&mut instance, u64_of(v)?)?,
                tlv::DIAL_SEQ => set(&mut seq, u64_of(v)?)?,
                _ => {}
            }
        }
        Ok(Self {
            node: node.ok_or(bad)?,
            version: version.ok_or(bad)?[0],
            capabilities: caps.ok_or(bad)?,
            instance: instance.ok_or(bad)?,
            dial_seq: seq.ok_or(bad)?,
        })
    }
}

/// The clear header of an initiator's first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloHeader {
    /// Node id the initiator claims (raw: not yet checked).
    pub initiator: u16,
    /// Node id the initiator means to reach.
    pub responder: u16,
}

impl HelloHeader {
    /// The 10 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = LINK_VERSION;
        h[6..8].copy_from_slice(&self.initiator.to_be_bytes());
        h[8..10].copy_from_slice(&self.responder.to_be_bytes());
        h
    }

    /// Splits a first frame into header and Noise message 1.
    pub fn parse(frame: &[u8]) -> Result<(Self, &[u8]), LinkError> {
        if frame.len() < HEADER_LEN + DH_LEN + TAG_LEN || frame.len() > MAX_HELLO_FRAME {
            return Err(LinkError::BadHello);
        }
        if frame[..4] != MAGIC {
            return Err(LinkError::BadHello);
        }
        if frame[4] != LINK_VERSION {
            return Err(LinkError::BadVersion);
        }
        if frame[5] != 0 {
            return Err(LinkError::BadHello);
        }
        let initiator = u16::from_be_bytes([frame[6], frame[7]]);
        let responder = u16::from_be_bytes([frame[8], frame[9]]);
        Ok((
            Self {
                initiator,
                responder,
            },
            &frame[HEADER_LEN..],
        ))
    }
}

fn prologue(header: &[u8; HEADER_LEN]) -> Vec<u8> {
    [PROLOGUE, &header[..]].concat()
}

/// What an established link is: who, which direction, negotiated terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The peer.
    pub peer: ProxyId,
    /// Which node dialed.
    pub initiator: ProxyId,
    /// The peer's instance (changes when it restarts).
    pub peer_instance: u64,
    /// The initiator's dial sequence number for this link.
    pub dial_seq: u64,
    /// Negotiated link version.
    pub version: u8,
    /// Negotiated capabilities (intersection).
    pub capabilities: u64,
}

/// The tie-break between two established links to one peer (spec section
/// 6): whether `new` should replace `existing`. Both ends reach the same
/// answer from the same facts:
/// 1. the peer's instance differs: it restarted, so the newer link wins;
/// 2. same initiator: it gave up the older dial, so the higher dial
///    sequence number wins;
/// 3. one link each way (simultaneous dial): the link dialed by the lower
///    node id wins.
pub fn prefer_new(existing: &LinkInfo, new: &LinkInfo) -> bool {
    if existing.peer_instance != new.peer_instance {
        true
    } else if existing.initiator == new.initiator {
        new.dial_seq > existing.dial_seq
    } else {
        new.initiator < existing.initiator
    }
}

/// Something a link reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Mutually authenticated, keys confirmed: sync messages may flow.
    Up(LinkInfo),
    /// A whole sync message from the peer.
    Message(Vec<u8>),
    /// The link is closed; nothing more will happen on it.
    Closed(Closed),
}

/// How a link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Why.
    pub reason: LinkError,
    /// Whether the peer said so (a `CLOSE` record or end of stream), rather
    /// than this side deciding.
    pub by_peer: bool,
    /// Whether the link had been up (false: a refused or failed handshake).
    pub was_up: bool,
}

/// Why a message could not be queued on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The link is not up (yet, or any more).
    #[error("link not up")]
    NotUp,
    /// The message exceeds [`LinkConfig::max_message`].
    #[error("message of {0} bytes exceeds the link's limit")]
    TooLarge(usize),
    /// The link reached its nonce limit and closed.
    #[error("link closed: nonce limit")]
    Closed,
}

enum State {
    /// Initiator: message 1 sent, waiting for message 2.
    Dialing {
        hs: Box<snow::HandshakeState>,
        peer: ProxyId,
        dial_seq: u64,
    },
    /// Responder: waiting for the first frame.
    Accepting { members: Arc<Membership> },
    /// Responder: message 2 sent, waiting for the initiator's `CONFIRM`.
    Confirming,
    /// Both: sync messages flow.
    Up,
    /// Nothing more happens.
    Closed,
}

/// One peer link (one TCP connection), sans-IO.
pub struct Link {
    cfg: LinkConfig,
    local: Arc<LocalNode>,
    state: State,
    transport: Option<Box<snow::TransportState>>,
    info: Option<LinkInfo>,
    rx: Vec<u8>,
    out: Vec<u8>,
    plain: Vec<u8>,
    reassembly: Vec<u8>,
    events: VecDeque<LinkEvent>,
    deadline_handshake: Instant,
    last_rx: Instant,
    last_tx: Instant,
    rekey_at: Instant,
    sent_since_rekey: u64,
    closed: Option<Closed>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("local", &self.local.id)
            .field("info", &self.info)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Link {
    fn new(cfg: LinkConfig, local: Arc<LocalNode>, state: State, now: Instant) -> Self {
        Self {
            deadline_handshake: now + cfg.handshake_timeout,
            rekey_at: now + cfg.rekey_interval,
            cfg,
            local,
            state,
            transport: None,
            info: None,
            rx: Vec::new(),
            out: Vec::new(),
            plain: Vec::new(),
            reassembly: Vec::new(),
            events: VecDeque::new(),
            last_rx: now,
            last_tx: now,
            sent_since_rekey: 0,
            closed: None,
        }
    }

    /// Starts a link to `peer` as initiator: message 1 is in the output.
    /// `dial_seq` must grow with every dial of this process (it orders two
    /// links dialed by one node; see [`prefer_new`]).
    pub fn dial(
        cfg: LinkConfig,
        local: Arc<LocalNode>,
        peer: &Member,
        dial_seq: u64,
        now: Instant,
    ) -> Result<Self, LinkError> {
        let header = HelloHeader {
            initiator: local.id.get(),
            responder: peer.node.get(),
        }
        .encode();
        let prologue = prologue(&header);
        let mut hs = snow::Builder::new(KK_PARAMS.clone())
            .local_private_key(local.key.as_bytes())
            .and_then(|b| b.remote_public_key(&peer.public_key.0))
            .and_then(|b| b.prologue(&prologue))
            .and_then(|b| b.build_initiator())
            .map_err(|_| LinkError::Protocol)?;
        let payload = Hello {
            node: local.id,
            version: LINK_VERSION,
            capabilities: cfg.capabilities,
            instance: local.instance,
            dial_seq,
        }
        .encode();
        let mut msg = vec![0u8; DH_LEN + payload.len() + TAG_LEN];
        let n = hs
            .write_message(&payload, &mut msg)
            .map_err(|_| LinkError::Protocol)?;
        let mut link = Self::new(
            cfg,
            local,
            State::Dialing {
                hs: Box::new(hs),
                peer: peer.node,
                dial_seq,
            },
            now,
        );
        let len = (HEADER_LEN + n) as u16;
        link.out.extend_from_slice(&len.to_be_bytes());
        link.out.extend_from_slice(&header);
        link.out.extend_from_slice(&msg[..n]);
        Ok(link)
    }

    /// Starts a link as responder to an accepted connection; `members` is
    /// the membership the initiator is checked against.
    pub fn accept(
        cfg: LinkConfig,
        local: Arc<LocalNode>,
        members: Arc<Membership>,
        now: Instant,
    ) -> Self {
        Self::new(cfg, local, State::Accepting { members }, now)
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up)
    }

    /// How the link ended, once closed.
    pub fn closed(&self) -> Option<Closed> {
        self.closed
    }

    /// The link's peer and terms, once authenticated (the responder knows
    /// them from message 1, before the link is up).
    pub fn info(&self) -> Option<&LinkInfo> {
        self.info.as_ref()
    }

    /// Bytes waiting to be written to the connection.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Takes the bytes to write to the connection.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to be called;
    /// `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Up => Some(
                (self.last_rx + self.cfg.idle_timeout)
                    .min(self.last_tx + self.cfg.keepalive_interval)
                    .min(self.rekey_at),
            ),
            _ => Some(self.deadline_handshake),
        }
    }

    /// Runs the timers due at `now`: handshake timeout, idle timeout,
    /// keepalive, time-based rekey.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Up => {
                if now >= self.last_rx + self.cfg.idle_timeout {
                    self.fail(LinkError::IdleTimeout);
                    return;
                }
                if now >= self.rekey_at {
                    if let Err(e) = self.rekey(now) {
                        self.fail(e);
                        return;
                    }
                }
                if now >= self.last_tx + self.cfg.keepalive_interval {
                    if let Err(e) = self.seal(record::KEEPALIVE, &[], now) {
                        self.fail(e);
                    }
                }
            }
            _ => {
                if now >= self.deadline_handshake {
                    self.fail(LinkError::HandshakeTimeout);
                }
            }
        }
    }

    /// Queues one sync message (split into records as needed). The bytes
    /// are in [`take_output`](Self::take_output) afterwards.
    pub fn send(&mut self, msg: &[u8], now: Instant) -> Result<(), SendError> {
        if !self.is_up() {
            return Err(SendError::NotUp);
        }
        if msg.len() > self.cfg.max_message {
            return Err(SendError::TooLarge(msg.len()));
        }
        let mut chunks = msg.chunks(MAX_RECORD_DATA).peekable();
        if chunks.peek().is_none() {
            return self.seal_or_close(record::END, &[], now);
        }
        while let Some(c) = chunks.next() {
            let kind = if chunks.peek().is_some() {
                record::PART
            } else {
                record::END
            };
            self.seal_or_close(kind, c, now)?;
        }
        Ok(())
    }

    fn seal_or_close(&mut self, kind: u8, data: &[u8], now: Instant) -> Result<(), SendError> {
        self.seal(kind, data, now).map_err(|e| {
            self.fail(e);
            SendError::Closed
        })
    }

    /// Closes the link for `reason`; when up, a `CLOSE` record tells the
    /// peer why (flush [`take_output`](Self::take_output) before
    /// disconnecting).
    pub fn close(&mut self, reason: LinkError) {
        self.fail(reason);
    }

    /// Reports the end of the byte stream from the peer.
    pub fn handle_eof(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let reason = if !self.rx.is_empty() {
            LinkError::Truncated
        } else if matches!(self.state, State::Dialing { .. }) {
            LinkError::PeerRefused
        } else {
            LinkError::PeerClosed
        };
        self.finish(reason, true);
    }

    /// Feeds bytes received from the connection.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.closed.is_some() {
            return;
        }
        let mut rx = std::mem::take(&mut self.rx);
        rx.extend_from_slice(data);
        let mut pos = 0;
        while self.closed.is_none() && rx.len() - pos >= 2 {
            let len = usize::from(u16::from_be_bytes([rx[pos], rx[pos + 1]]));
            let limit = match self.state {
                State::Accepting { .. } => MAX_HELLO_FRAME,
                State::Dialing { .. } => MAX_RESPONSE_FRAME,
                _ => MAX_NOISE_MSG,
            };
            if len > limit {
                // Refused from its length alone, before buffering it.
                self.fail(LinkError::Oversized);
                break;
            }
            if len < TAG_LEN {
                self.fail(LinkError::BadFrame);
                break;
            }
            if rx.len() - pos < 2 + len {
                break;
            }
            self.on_frame(&rx[pos + 2..pos + 2 + len], now);
            pos += 2 + len;
        }
        if self.closed.is_none() {
            rx.drain(..pos);
            self.rx = rx;
        }
    }

    fn on_frame(&mut self, frame: &[u8], now: Instant) {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Accepting { members } => match self.on_hello(&members, frame) {
                Ok(()) => {
                    self.state = State::Confirming;
                    self.last_rx = now;
                }
                Err(e) => self.fail(e),
            },
            State::Dialing { hs, peer, dial_seq } => {
                match self.on_response(*hs, peer, dial_seq, frame) {
                    Ok(info) => {
                        self.state = State::Up;
                        self.last_rx = now;
                        self.rekey_at = now + self.cfg.rekey_interval;
                        self.info = Some(info.clone());
                        match self.seal(record::CONFIRM, &[], now) {
                            Ok(()) => self.events.push_back(LinkEvent::Up(info)),
                            Err(e) => self.fail(e),
                        }
                    }
                    Err(e) => self.fail(e),
                }
            }
            s @ (State::Confirming | State::Up) => {
                self.state = s;
                self.on_transport(frame, now);
            }
            State::Closed => {}
        }
    }

    /// Responder: the initiator's first frame. Nothing is answered unless
    /// message 1 authenticates.
    fn on_hello(&mut self, members: &Membership, frame: &[u8]) -> Result<(), LinkError> {
        let (header, noise) = HelloHeader::parse(frame)?;
        if header.responder != self.local.id.get() {
            return Err(LinkError::WrongNode);
        }
        let initiator = ProxyId::new(header.initiator).ok_or(LinkError::UnknownPeer)?;
        let member = members.authorize(initiator).map_err(|r| match r {
            Refusal::Unknown => LinkError::UnknownPeer,
            Refusal::Revoked => LinkError::Revoked,
        })?;
        let prologue = prologue(&header.encode());
        let mut hs = snow::Builder::new(KK_PARAMS.clone())
            .local_private_key(self.local.key.as_bytes())
            .and_then(|b| b.remote_public_key(&member.public_key.0))
            .and_then(|b| b.prologue(&prologue))
            .and_then(|b| b.build_responder())
            .map_err(|_| LinkError::Protocol)?;
        let mut payload = [0u8; MAX_HELLO_FRAME];
        let n = hs
            .read_message(noise, &mut payload)
            .map_err(|_| LinkError::KeyMismatch)?;
        let hello = Hello::decode(&payload[..n])?;
        if hello.node != initiator {
            return Err(LinkError::IdMismatch);
        }
        if hello.version < LINK_VERSION {
            return Err(LinkError::BadVersion);
        }
        let answer = Hello {
            node: self.local.id,
            version: LINK_VERSION,
            capabilities: self.cfg.capabilities,
            instance: self.local.instance,
            dial_seq: 0,
        }
        .encode();
        let mut msg = [0u8; MAX_RESPONSE_FRAME];
        let n = hs
            .write_message(&answer, &mut msg)
            .map_err(|_| LinkError::Protocol)?;
        let ts = hs.into_transport_mode().map_err(|_| LinkError::Protocol)?;
        self.out.extend_from_slice(&(n as u16).to_be_bytes());
        self.out.extend_from_slice(&msg[..n]);
        self.transport = Some(Box::new(ts));
        self.info = Some(LinkInfo {
            peer: initiator,
            initiator,
            peer_instance: hello.instance,
            dial_seq: hello.dial_seq,
            version: LINK_VERSION.min(hello.version),
            capabilities: self.cfg.capabilities & hello.capabilities,
        });
        Ok(())
    }

    /// Initiator: message 2.
    fn on_response(
        &mut self,
        mut hs: snow::HandshakeState,
        peer: ProxyId,
        dial_seq: u64,
        frame: &[u8],
    ) -> Result<LinkInfo, LinkError> {
        let mut payload = [0u8; MAX_RESPONSE_FRAME];
        let n = hs
            .read_message(frame, &mut payload)
            .map_err(|_| LinkError::KeyMismatch)?;
        let hello = Hello::decode(&payload[..n])?;
        if hello.node != peer {
            return Err(LinkError::IdMismatch);
        }
        if hello.version < LINK_VERSION {
            return Err(LinkError::BadVersion);
        }
        let ts = hs.into_transport_mode().map_err(|_| LinkError::Protocol)?;
        self.transport = Some(Box::new(ts));
        Ok(LinkInfo {
            peer,
            initiator: self.local.id,
            peer_instance: hello.instance,
            dial_seq,
            version: LINK_VERSION.min(hello.version),
            capabilities: self.cfg.capabilities & hello.capabilities,
        })
    }

    /// A transport frame, on a link that is up or confirming.
    fn on_transport(&mut self, frame: &[u8], now: Instant) {
        let Some(ts) = self.transport.as_mut() else {
            return self.fail(LinkError::Protocol);
        };
        self.plain.resize(frame.len(), 0);
        let n = match ts.read_message(frame, &mut self.plain) {
            Ok(n) => n,
            Err(_) => return self.fail(LinkError::DecryptFailed),
        };
        self.last_rx = now;
        let Some((&kind, body)) = self.plain[..n].split_first() else {
            return self.fail(LinkError::Protocol);
        };
        let confirming = matches!(self.state, State::Confirming);
        match kind {
            record::CONFIRM if confirming => {
                self.state = State::Up;
                self.rekey_at = now + self.cfg.rekey_interval;
                if let Some(info) = self.info.clone() {
                    self.events.push_back(LinkEvent::Up(info));
                }
            }
            _ if confirming => self.fail(LinkError::Protocol),
            record::PART | record::END => {
                if self.reassembly.len() + body.len() > self.cfg.max_message {
                    return self.fail(LinkError::Oversized);
                }
                self.reassembly.extend_from_slice(body);
                if kind == record::END {
                    let msg = std::mem::take(&mut self.reassembly);
                    self.events.push_back(LinkEvent::Message(msg));
                }
            }
            record::KEEPALIVE => {}
            record::REKEY => ts.rekey_incoming(),
            record::CLOSE => {
                let reason = body
                    .first()
                    .and_then(|&c| LinkError::from_code(c))
                    .unwrap_or(LinkError::PeerClosed);
                self.finish(reason, true);
            }
            k if k & record::IGNORABLE != 0 => {}
            _ => self.fail(LinkError::Protocol),
        }
    }

    /// Ratchets the sending key, telling the peer first.
    fn rekey(&mut self, now: Instant) -> Result<(), LinkError> {
        self.seal_raw(record::REKEY, &[], now)?;
        if let Some(ts) = self.transport.as_mut() {
            ts.rekey_outgoing();
        }
        self.sent_since_rekey = 0;
        self.rekey_at = now + self.cfg.rekey_interval;
        Ok(())
    }

    /// Seals one record, rekeying first when the policy says so.
    fn seal(&mut self, kind: u8, data: &[u8], now: Instant) -> Result<(), LinkError> {
        if kind != record::CLOSE && self.sent_since_rekey >= self.cfg.rekey_after_messages {
            self.rekey(now)?;
        }
        self.seal_raw(kind, data, now)
    }

    /// Seals one record as one frame. Every record but `CLOSE` leaves one
    /// nonce spare, so that a `CLOSE` can always be sent.
    fn seal_raw(&mut self, kind: u8, data: &[u8], now: Instant) -> Result<(), LinkError> {
        let Some(ts) = self.transport.as_mut() else {
            return Err(LinkError::Protocol);
        };
        let spare = u64::from(kind != record::CLOSE);
        if ts.sending_nonce().saturating_add(spare) >= self.cfg.nonce_limit {
            return Err(LinkError::NonceLimit);
        }
        self.plain.clear();
        self.plain.push(kind);
        self.plain.extend_from_slice(data);
        let start = self.out.len();
        self.out.resize(start + 2 + self.plain.len() + TAG_LEN, 0);
        match ts.write_message(&self.plain, &mut self.out[start + 2..]) {
            Ok(n) => {
                self.out[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
                self.out.truncate(start + 2 + n);
            }
            Err(_) => {
                self.out.truncate(start);
                return Err(LinkError::NonceLimit);
            }
        }
        self.sent_since_rekey += 1;
        self.last_tx = now;
        Ok(())
    }

    /// Closes for a reason found on this side; a link that is up tells
    /// the peer. (A responder still confirming sends nothing more: its
    /// initiator has not proved itself yet.)
    fn fail(&mut self, reason: LinkError) {
        if self.closed.is_some() {
            return;
        }
        if self.is_up() {
            let now = self.last_tx;
            // Best effort: past the nonce limit the peer learns from EOF.
            let _ = self.seal_raw(record::CLOSE, &[reason.code()], now);
        }
        self.finish(reason, false);
    }

    fn finish(&mut self, reason: LinkError, by_peer: bool) {
        let closed = Closed {
            reason,
            by_peer,
            was_up: self.is_up(),
        };
        self.state = State::Closed;
        // Key material goes as soon as it is of no more use.
        self.transport = None;
        self.rx = Vec::new();
        self.reassembly = Vec::new();
        self.closed = Some(closed);
        self.events.push_back(LinkEvent::Closed(closed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::members::Member;

    struct World {
        keys: Vec<SecretKey>,
        now: Instant,
    }

    fn id(n: u16) -> ProxyId {
        ProxyId::new(n).unwrap()
    }

    impl World {
        fn new() -> Self {
            Self {
                keys: (0..4).map(|_| SecretKey::generate()).collect(),
                now: Instant::now(),
            }
        }
        fn member(&self, n: u16) -> Member {
            Member {
                node: id(n),
                address: format!("127.0.0.1:{}", 7000 + n).parse().unwrap(),
                public_key: self.keys[usize::from(n)].public(),
                region: String::new(),
                failure_domain: String::new(),
                failover: vec![],
                revoked: false,
            }
        }
        fn local(&self, n: u16) -> Arc<LocalNode> {
            Arc::new(LocalNode {
                id: id(n),
                key: SecretKey::from_bytes(*self.keys[usize::from(n)].as_bytes()),
                instance: 100 + u64::from(n),
            })
        }
        /// Node `n`'s view: every other of nodes 1..=3 is a peer.
        fn members(&self, n: u16) -> Arc<Membership> {
            let peers = (1..=3).filter(|&p| p != n).map(|p| self.member(p));
            Arc::new(Membership::new(self.member(n), peers).unwrap())
        }
        fn dial(&self, cfg: &LinkConfig, from: u16, to: u16) -> Link {
            Link::dial(cfg.clone(), self.local(from), &self.member(to), 1, self.now).unwrap()
        }
        fn accept(&self, cfg: &LinkConfig, at: u16) -> Link {
            Link::accept(cfg.clone(), self.local(at), self.members(at), self.now)
        }
    }

    /// Moves bytes both ways until neither side has output; returns the
    /// bytes each side sent.
    fn pump(a: &mut Link, b: &mut Link, now: Instant) -> (Vec<u8>, Vec<u8>) {
        let (mut ab, mut ba) = (Vec::new(), Vec::new());
        loop {
            let x = a.take_output();
            let y = b.take_output();
            if x.is_empty() && y.is_empty() {
                return (ab, ba);
            }
            b.handle_input(&x, now);
            a.handle_input(&y, now);
            ab.extend_from_slice(&x);
            ba.extend_from_slice(&y);
        }
    }

    fn events(l: &mut Link) -> Vec<LinkEvent> {
        std::iter::from_fn(|| l.poll_event()).collect()
    }

    fn up_pair(w: &World, cfg: &LinkConfig) -> (Link, Link) {
        let mut a = w.dial(cfg, 1, 2);
        let mut b = w.accept(cfg, 2);
        pump(&mut a, &mut b, w.now);
        assert!(a.is_up() && b.is_up());
        assert!(matches!(events(&mut a)[..], [LinkEvent::Up(_)]));
        assert!(matches!(events(&mut b)[..], [LinkEvent::Up(_)]));
        (a, b)
    }

    #[test]
    fn handshake_authenticates_both_and_messages_flow_encrypted() {
        let w = World::new();
        let cfg = LinkConfig::default();
        let mut a = w.dial(&cfg, 1, 2);
        let mut b = w.accept(&cfg, 2);
        let msg1 = a.take_output();
        b.handle_input(&msg1, w.now);
        let msg2 = b.take_output();
        // The responder answers an unauthenticated message with fewer bytes
        // and is not up until the initiator confirms its keys.
        assert!(msg2.len() <= msg1.len(), "{} > {}", msg2.len(), msg1.len());
        assert!(!b.is_up() && b.poll_event().is_none());
        a.handle_input(&msg2, w.now);
        let Some(LinkEvent::Up(ia)) = a.poll_event() else {
            panic!()
        };
        b.handle_input(&a.take_output(), w.now);
        let Some(LinkEvent::Up(ib)) = b.poll_event() else {
            panic!()
        };
        assert_eq!(
            (ia.peer, ia.initiator, ia.peer_instance),
            (id(2), id(1), 102)
        );
        assert_eq!(
            (ib.peer, ib.initiator, ib.peer_instance),
            (id(1), id(1), 101)
        );
        assert_eq!((ia.dial_seq, ib.dial_seq), (1, 1));

        let marker = b"0123456789abcdef-cleartext-marker";
        let sizes = [0, 1, MAX_RECORD_DATA, MAX_RECORD_DATA + 1, 200_000];
        for &n in &sizes {
            let m: Vec<u8> = marker.iter().cycle().take(n).copied().collect();
            a.send(&m, w.now).unwrap();
            b.send(&m, w.now).unwrap();
        }
        let (ab, ba) = pump(&mut a, &mut b, w.now);
        for wire in [&ab, &ba] {
            assert!(
                !wire.windows(16).any(|x| x == &marker[..16]),
                "clear text on the link"
            );
        }
        for l in [&mut a, &mut b] {
            let got: Vec<usize> = events(l)
                .into_iter()
                .map(|e| match e {
                    LinkEvent::Message(m) => {
                        assert!(m.iter().zip(marker.iter().cycle()).all(|(x, y)| x == y));
                        m.len()
                    }
                    e => panic!("{e:?}"),
                })
                .collect();
            assert_eq!(got, sizes);
        }
        assert_eq!(
            a.send(&vec![0; cfg.max_message + 1], w.now),
            Err(SendError::TooLarge(cfg.max_message + 1))
        );
    }

    /// Runs a handshake from `dialer` (using its key) claiming node `claim`
    /// to the responder `at`; returns the responder's close and how many
    /// bytes it answered.
    fn refused(
        w: &World,
        dialer: Arc<LocalNode>,
        to: Member,
        at: u16,
        members: Arc<Membership>,
    ) -> (Closed, usize, Closed) {
        let cfg = LinkConfig::default();
        let mut a = Link::dial(cfg.clone(), dialer, &to, 1, w.now).unwrap();
        let mut b = Link::accept(cfg, w.local(at), members, w.now);
        b.handle_input(&a.take_output(), w.now);
        let answered = b.take_output().len();
        let Some(LinkEvent::Closed(c)) = b.poll_event() else {
            panic!("not refused")
        };
        a.handle_eof();
        let Some(LinkEvent::Closed(ca)) = a.poll_event() else {
            panic!()
        };
        (c, answered, ca)
    }

    #[test]
    fn unknown_revoked_wrong_key_and_impersonation_are_refused_silently() {
        let w = World::new();
        let refusal = |r| Closed {
            reason: r,
            by_peer: false,
            was_up: false,
        };
        // Node 3 is not in node 2's membership.
        let only1 = Arc::new(Membership::new(w.member(2), [w.member(1)]).unwrap());
        let (c, n, ca) = refused(&w, w.local(3), w.member(2), 2, only1);
        assert_eq!((c, n), (refusal(LinkError::UnknownPeer), 0));
        assert_eq!(
            ca,
            Closed {
                reason: LinkError::PeerRefused,
                by_peer: true,
                was_up: false
            }
        );
        // Node 1 is revoked.
        let mut r1 = w.member(1);
        r1.revoked = true;
        let revoked = Arc::new(Membership::new(w.member(2), [r1, w.member(3)]).unwrap());
        let (c, n, _) = refused(&w, w.local(1), w.member(2), 2, revoked);
        assert_eq!((c, n), (refusal(LinkError::Revoked), 0));
        // Node 1 with a key that is not node 1's.
        let wrong = Arc::new(LocalNode {
            id: id(1),
            key: SecretKey::generate(),
            instance: 1,
        });
        let (c, n, _) = refused(&w, wrong, w.member(2), 2, w.members(2));
        assert_eq!((c, n), (refusal(LinkError::KeyMismatch), 0));
        // Node 3 (with its own, valid key) claiming to be node 1.
        let claim = Arc::new(LocalNode {
            id: id(1),
            key: SecretKey::from_bytes(*w.keys[3].as_bytes()),
            instance: 1,
        });
        let (c, n, _) = refused(&w, claim, w.member(2), 2, w.members(2));
        assert_eq!((c, n), (refusal(LinkError::KeyMismatch), 0));
        // Node 1 dials node 2's key at an address where node 3 answers.
        let (c, n, _) = refused(&w, w.local(1), w.member(2), 3, w.members(3));
        assert_eq!((c, n), (refusal(LinkError::WrongNode), 0));
        // Node 1 dials node 3 expecting node 2's key: node 3 cannot read it.
        let mut fake3 = w.member(3);
        fake3.public_key = w.keys[2].public();
        let (c, n, _) = refused(&w, w.local(1), fake3, 3, w.members(3));
        assert_eq!((c, n), (refusal(LinkError::KeyMismatch), 0));
    }

    #[test]
    fn initiator_refuses_a_responder_with_the_wrong_key() {
        let w = World::new();
        let cfg = LinkConfig::default();
        // Node 2 is configured at node 1 with node 3's key, and node 2's own
        // membership holds node 1: message 1 fails at node 2 (ss differs).
        // The other way round: an impostor holding node 1's record in its
        // membership answers as node 2 without node 2's key: the initiator
        // cannot read message 2.
        let mut a = w.dial(&cfg, 1, 2);
        let impostor = Arc::new(LocalNode {
            id: id(2),
            key: SecretKey::generate(),
            instance: 9,
        });
        // The impostor has node 1's public key, so it can run KK as
        // responder only if it also had node 2's private key; with its own
        // key message 1 does not authenticate.
        let mut b = Link::accept(cfg, impostor, w.members(2), w.now);
        b.handle_input(&a.take_output(), w.now);
        assert_eq!(b.closed().unwrap().reason, LinkError::KeyMismatch);
        assert!(b.take_output().is_empty());
        // A forged message 2 (random bytes) is refused by the initiator.
        let mut forged = vec![0u8, 85];
        forged.extend((0..85).map(|i| i as u8));
        a.handle_input(&forged, w.now);
        assert_eq!(a.closed().unwrap().reason, LinkError::KeyMismatch);
    }

    #[test]
    fn replayed_message_1_never_brings_a_link_up_and_gets_no_more_bytes() {
        let w = World::new();
        let cfg = LinkConfig::default();
        let (mut a, mut b) = up_pair(&w, &cfg);
        let _ = (&mut a, &mut b);
        let mut a2 = w.dial(&cfg, 1, 2);
        let msg1 = a2.take_output();
        let mut replay = w.accept(&cfg, 2);
        replay.handle_input(&msg1, w.now);
        let answer = replay.take_output();
        assert!(answer.len() <= msg1.len());
        assert!(!replay.is_up());
        let t = replay.poll_timeout().unwrap();
        assert_eq!(t, w.now + cfg.handshake_timeout);
        replay.handle_timeout(t);
        assert_eq!(
            replay.poll_event(),
            Some(LinkEvent::Closed(Closed {
                reason: LinkError::HandshakeTimeout,
                by_peer: false,
                was_up: false
            }))
        );
        assert!(
            replay.take_output().is_empty(),
            "nothing more to an unconfirmed peer"
        );
        assert_eq!(replay.poll_timeout(), None);
    }

    #[test]
    fn garbage_truncation_and_bad_lengths_close_the_link() {
        let w = World::new();
        let cfg = LinkConfig::default();
        // A corrupted transport frame: the receiver closes and tells why.
        let (mut a, mut b) = up_pair(&w, &cfg);
        a.send(b"hello", w.now).unwrap();
        let mut wire = a.take_output();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        b.handle_input(&wire, w.now);
        assert_eq!(
            b.closed().unwrap(),
            Closed {
                reason: LinkError::DecryptFailed,
                by_peer: false,
                was_up: true
            }
        );
        a.handle_input(&b.take_output(), w.now);
        assert_eq!(
            a.closed().unwrap(),
            Closed {
                reason: LinkError::DecryptFailed,
                by_peer: true,
                was_up: true
            }
        );
        // Half a frame, then end of stream.
        let (mut a, mut b) = up_pair(&w, &cfg);
        a.send(b"hello", w.now).unwrap();
        let wire = a.take_output();
        b.handle_input(&wire[..wire.len() / 2], w.now);
        assert!(b.closed().is_none());
        b.handle_eof();
        assert_eq!(b.closed().unwrap().reason, LinkError::Truncated);
        // A clean end of stream.
        let (_, mut b) = up_pair(&w, &cfg);
        b.handle_eof();
        assert_eq!(
            b.closed().unwrap(),
            Closed {
                reason: LinkError::PeerClosed,
                by_peer: true,
                was_up: true
            }
        );
        // An unauthenticated first frame announcing more than a hello:
        // refused from the two length bytes alone.
        let mut b = w.accept(&cfg, 2);
        b.handle_input(&[0xFF, 0xFF], w.now);
        assert_eq!(b.closed().unwrap().reason, LinkError::Oversized);
        let mut b = w.accept(&cfg, 2);
        b.handle_input(&[0, 3, 1, 2, 3], w.now);
        assert_eq!(b.closed().unwrap().reason, LinkError::BadFrame);
        let mut b = w.accept(&cfg, 2);
        let mut junk = vec![0, 100];
        junk.extend([7u8; 100]);
        b.handle_input(&junk, w.now);
        assert_eq!(b.closed().unwrap().reason, LinkError::BadHello);
        assert!(b.take_output().is_empty());
        // Wrong version byte in the clear header.
        let mut a = w.dial(&cfg, 1, 2);
        let mut first = a.take_output();
        first[2 + 4] = 2;
        let mut b = w.accept(&cfg, 2);
        b.handle_input(&first, w.now);
        assert_eq!(b.closed().unwrap().reason, LinkError::BadVersion);
        // A tampered header (node ids are in the prologue).
        let mut a = w.dial(&cfg, 1, 2);
        let mut first = a.take_output();
        first[2 + 5] = 0;
        first[2 + 9] ^= 0; // unchanged responder
        first[2 + 7] = 3; // claims node 3 in the clear, but sealed as 1
        let mut b = w.accept(&cfg, 2);
        b.handle_input(&first, w.now);
        assert_eq!(b.closed().unwrap().reason, LinkError::KeyMismatch);
    }

    #[test]
    fn unknown_records_close_unless_ignorable() {
        let w = World::new();
        let cfg = LinkConfig::default();
        let (mut a, mut b) = up_pair(&w, &cfg);
        a.seal_raw(0x85, b"future extension", w.now).unwrap();
        a.send(b"after", w.now).unwrap();
        pump(&mut a, &mut b, w.now);
        assert_eq!(events(&mut b), vec![LinkEvent::Message(b"after".to_vec())]);
        a.seal_raw(0x45, b"", w.now).unwrap();
        pump(&mut a, &mut b, w.now);
        assert_eq!(b.closed().unwrap().reason, LinkError::Protocol);
        assert_eq!(
            a.closed().unwrap(),
            Closed {
                reason: LinkError::Protocol,
                by_peer: true,
                was_up: true
            }
        );
        // A second CONFIRM is a protocol error too.
        let (mut a, mut b) = up_pair(&w, &cfg);
        a.seal_raw(record::CONFIRM, b"", w.now).unwrap();
        pump(&mut a, &mut b, w.now);
        assert_eq!(b.closed().unwrap().reason, LinkError::Protocol);
    }

    #[test]
    fn keepalives_keep_a_quiet_link_up_and_silence_closes_it() {
        let w = World::new();
        let cfg = LinkConfig::default();
        let (mut a, mut b) = up_pair(&w, &cfg);
        let mut now = w.now;
        // A minute of quiet with both sides' timers run: still up.
        while now < w.now + Duration::from_secs(60) {
            now = a.poll_timeout().unwrap().min(b.poll_timeout().unwrap());
            a.handle_timeout(now);
            b.handle_timeout(now);
            pump(&mut a, &mut b, now);
        }
        assert!(a.is_up() && b.is_up());
        // b goes silent: a closes at its idle timeout, not before.
        let last = now;
        loop {
            now = a.poll_timeout().unwrap();
            a.handle_timeout(now);
            let _ = a.take_output();
            if a.closed().is_some() {
                break;
            }
        }
        assert_eq!(now, last + cfg.idle_timeout);
        assert_eq!(a.closed().unwrap().reason, LinkError::IdleTimeout);
    }

    #[test]
    fn rekeying_by_count_and_time_keeps_messages_flowing() {
        let w = World::new();
        let cfg = LinkConfig {
            rekey_after_messages: 3,
            rekey_interval: Duration::from_secs(7),
            ..LinkConfig::default()
        };
        let (mut a, mut b) = up_pair(&w, &cfg);
        let frames_of = |wire: &[u8]| {
            let mut n = 0;
            let mut p = 0;
            while p < wire.len() {
                p += 2 + usize::from(u16::from_be_bytes([wire[p], wire[p + 1]]));
                n += 1;
            }
            n
        };
        for i in 0..10u8 {
            a.send(&[i], w.now).unwrap();
        }
        let (ab, _) = pump(&mut a, &mut b, w.now);
        // Three records per key (the first key also carried CONFIRM): 10
        // messages and 3 REKEY records.
        assert_eq!(frames_of(&ab), 13);
        let got: Vec<_> = events(&mut b).into_iter().collect();
        assert_eq!(
            got,
            (0..10u8)
                .map(|i| LinkEvent::Message(vec![i]))
                .collect::<Vec<_>>()
        );
        // Time-based: the deadline includes the rekey, which is a REKEY record.
        let t = a.poll_timeout().unwrap();
        assert_eq!(t, w.now + Duration::from_secs(5), "keepalive first");
        let later = w.now + Duration::from_secs(7);
        a.handle_timeout(later);
        b.handle_timeout(later);
        a.send(b"x", later).unwrap();
        pump(&mut a, &mut b, later);
        assert!(events(&mut b).contains(&LinkEvent::Message(b"x".to_vec())));
        assert!(a.is_up() && b.is_up());
    }

    #[test]
    fn nonce_limit_closes_before_any_nonce_could_repeat() {
        let w = World::new();
        let cfg = LinkConfig {
            nonce_limit: 6,
            ..LinkConfig::default()
        };
        let (mut a, mut b) = up_pair(&w, &cfg);
        // Nonce 0 went to CONFIRM; 1..=4 carry messages; 5 is kept for CLOSE.
        let mut sent = 0;
        while a.send(&[sent], w.now).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, 4);
        assert_eq!(a.send(b"more", w.now), Err(SendError::NotUp));
        assert_eq!(
            a.closed().unwrap(),
            Closed {
                reason: LinkError::NonceLimit,
                by_peer: false,
                was_up: true
            }
        );
        pump(&mut a, &mut b, w.now);
        let evs = events(&mut b);
        assert_eq!(evs.len(), 5, "{evs:?}");
        assert_eq!(
            evs[4],
            LinkEvent::Closed(Closed {
                reason: LinkError::NonceLimit,
                by_peer: true,
                was_up: true
            })
        );
    }

    #[test]
    fn hello_payload_skips_unknown_fields_and_refuses_malformed_ones() {
        let h = Hello {
            node: id(7),
            version: 1,
            capabilities: 5,
            instance: 9,
            dial_seq: 3,
        };
        let b = h.encode();
        assert_eq!(Hello::decode(&b).unwrap(), h);
        let mut ext = b.clone();
        ext.extend_from_slice(&[200, 3, 1, 2, 3]);
        assert_eq!(Hello::decode(&ext).unwrap(), h);
        let mut dup = b.clone();
        dup.extend_from_slice(&[1, 2, 0, 8]);
        assert_eq!(Hello::decode(&dup), Err(LinkError::BadHello));
        assert_eq!(
            Hello::decode(&b[4..]),
            Err(LinkError::BadHello),
            "node missing"
        );
        assert_eq!(Hello::decode(&b[..b.len() - 1]), Err(LinkError::BadHello));
        let mut zero = b.clone();
        zero[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(Hello::decode(&zero), Err(LinkError::BadHello));
        let mut badlen = b.clone();
        badlen[5] = 2;
        assert_eq!(Hello::decode(&badlen), Err(LinkError::BadHello));
    }

    #[test]
    fn tie_break_keeps_one_link_and_both_ends_agree() {
        // Node 1 and 2 dial each other at once: each holds both links.
        // Seen from node 1, links carry node 2's instance, and vice versa.
        let by = |init: u16, peer: u16, inst: u64, seq: u64| LinkInfo {
            peer: id(peer),
            initiator: id(init),
            peer_instance: inst,
            dial_seq: seq,
            version: 1,
            capabilities: 0,
        };
        let at1 = [by(1, 2, 202, 4), by(2, 2, 202, 9)];
        let at2 = [by(1, 1, 101, 4), by(2, 1, 101, 9)];
        for (first, second) in [(0, 1), (1, 0)] {
            for view in [&at1, &at2] {
                let kept = if prefer_new(&view[first], &view[second]) {
                    second
                } else {
                    first
                };
                assert_eq!(view[kept].initiator, id(1), "lower node id's dial wins");
            }
        }
        // Same initiator: the later dial wins whichever arrives first.
        assert!(prefer_new(&by(1, 2, 202, 4), &by(1, 2, 202, 5)));
        assert!(!prefer_new(&by(1, 2, 202, 5), &by(1, 2, 202, 4)));
        // The peer restarted: its new link wins, even when dialed by the
        // higher id.
        assert!(prefer_new(&by(1, 2, 202, 4), &by(2, 2, 303, 1)));
    }

    #[test]
    fn error_labels_and_codes_are_unique_and_round_trip() {
        let mut labels: Vec<_> = LinkError::ALL.iter().map(|e| e.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), LinkError::ALL.len());
        for (i, e) in LinkError::ALL.iter().enumerate() {
            assert_eq!(LinkError::from_code(e.code()), Some(*e));
            assert_eq!(e.index(), i);
        }
        assert_eq!(LinkError::from_code(0), None);
    }
}
