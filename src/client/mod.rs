//! The client's protocol core: one session to the anycast proxy address.
//!
//! Like the proxy it never touches a socket or a clock. The shell feeds it
//! datagrams from the proxy ([`Client::handle_datagram`], which hands voice
//! frames straight back out of the buffer it was given), sends what
//! [`Client::poll_transmit`] produces to the proxy, drains
//! [`Client::poll_event`], and calls [`Client::handle_timeout`] on time.
//! Call state lives in [`calls`].

pub mod calls;

pub use calls::{CallDirection, CallInfo};

use crate::call::reliable::{ReliableReceiver, ReliableSender};
use crate::call::{Cause, Name};
use crate::crypto::mac::NetworkMacs;
use crate::crypto::{tai64n, PublicKey, SecretKey};
use crate::handshake::{HandshakeError, Initiator};
use crate::session::{CallId, ProxyId, SenderId, SessionCrypto, SessionId};
use crate::wire::control::ControlMsg;
use crate::wire::handshake::{CookieReply, HandshakeResponse, HandshakeStatus, INIT_LEN};
use crate::wire::inner::Inner;
use crate::wire::transport::TransportHeader;
use crate::wire::{classify, DropCounters, DropReason, MessageType, MAX_DATAGRAM};
use calls::ClientCall;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The client's static key (its identity in the subscriber store).
    pub secret: SecretKey,
    /// The network's public key.
    pub network: PublicKey,
    /// Keepalive interval; `None` uses the one the proxy suggests.
    pub keepalive: Option<Duration>,
    /// Time before the first retry of a handshake; later retries wait
    /// twice, then four times as long.
    pub handshake_retry: Duration,
    /// Attempts before giving up with [`ClientError::HandshakeTimeout`].
    pub handshake_attempts: u32,
}

impl ClientConfig {
    /// Defaults: keepalive as the proxy says, 4 handshake attempts with
    /// retries after 1, 2 and 4 s (an error after 11 s without an answer).
    pub fn new(secret: SecretKey, network: PublicKey) -> Self {
        Self {
            secret,
            network,
            keepalive: None,
            handshake_retry: Duration::from_secs(1),
            handshake_attempts: 4,
        }
    }
}

/// What went wrong, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No valid answer to any handshake attempt.
    #[error(
        "no authenticated answer from the proxy after {attempts} handshake attempts over {:.1} s: \
         the proxy is unreachable, or this client's network public key ({network}) is not the \
         network's key",
        waited.as_secs_f64()
    )]
    HandshakeTimeout {
        /// Attempts made.
        attempts: u32,
        /// Time from first attempt to giving up.
        waited: Duration,
        /// The network key the client used.
        network: PublicKey,
    },
    /// The proxy authenticated the client but its key is not a subscriber.
    #[error(
        "the proxy refused this client's key {key}: it is not in the subscriber store \
         (add it with: anytun user add NAME {key})"
    )]
    NotAuthorized {
        /// The client's public key.
        key: PublicKey,
    },
    /// The proxy holds as many sessions as it may.
    #[error("the proxy is full and refused a new session; try again later")]
    Busy,
    /// The proxy went silent.
    #[error("lost the session: nothing heard from the proxy for {:.1} s", .0.as_secs_f64())]
    ConnectionLost(Duration),
    /// An operation that needs a session, without one.
    #[error("not connected to the proxy")]
    NotConnected,
    /// No call with that id.
    #[error("no call {0}")]
    UnknownCall(CallId),
    /// The call is not in a state that allows the operation.
    #[error("call {call} cannot {what} now")]
    CallState {
        /// The call.
        call: CallId,
        /// What was attempted.
        what: &'static str,
    },
    /// Answering with a codec the caller did not offer.
    #[error("codec {0} was not offered by the caller")]
    CodecNotOffered(String),
    /// The end-to-end handshake failed.
    #[error(transparent)]
    E2e(#[from] crate::call::e2e::E2eError),
    /// The handshake library failed locally.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A message too large for one datagram.
    #[error("message too large for one datagram")]
    TooLarge,
    /// A DTMF digit outside 0-9 * # A-D.
    #[error("{0:?} is not a DTMF digit")]
    BadDigit(char),
}

/// Something that happened, for the application.
#[derive(Debug)]
pub enum Event {
    /// The session is up.
    Connected {
        /// Session id.
        session: SessionId,
        /// The proxy that answered.
        proxy: ProxyId,
        /// The client's address as the proxy saw it (its NAT's outside).
        observed: SocketAddr,
    },
    /// The session failed or was refused; the client is idle again.
    Disconnected(ClientError),
    /// A name is registered (or removed, with 0) for this long.
    Registered {
        /// The name.
        name: Name,
        /// Granted lifetime.
        expires_s: u32,
    },
    /// A registration was refused.
    RegisterFailed {
        /// The name.
        name: Name,
    },
    /// Someone calls.
    IncomingCall {
        /// The call.
        call: CallId,
        /// Caller's name (checked by the proxy).
        from: Name,
        /// The name that was called.
        to: Name,
        /// Offered codecs.
        codecs: Vec<String>,
    },
    /// The callee's device is ringing.
    Ringing {
        /// The call.
        call: CallId,
    },
    /// The call is answered and end-to-end keys are set.
    Answered {
        /// The call.
        call: CallId,
        /// Codec the callee chose.
        codec: String,
    },
    /// The call is over (or never started).
    CallEnded {
        /// The call.
        call: CallId,
        /// Why.
        cause: Cause,
    },
    /// The other side pressed a key.
    Dtmf {
        /// The call.
        call: CallId,
        /// The digit.
        digit: char,
        /// How long.
        duration_ms: u16,
    },
}

/// A voice frame, handed out of the receive buffer without copying.
#[derive(Debug, PartialEq, Eq)]
pub struct VoiceFrame<'a> {
    /// The call.
    pub call: CallId,
    /// Sender's frame sequence number.
    pub seq: u32,
    /// Sender's sample timestamp.
    pub timestamp: u32,
    /// Encoded audio in the call's codec.
    pub payload: &'a [u8],
}

enum Conn {
    Idle,
    Handshaking {
        /// The latest attempt; `None` after a response that failed to
        /// authenticate (the next retry sends a fresh one). Only the latest
        /// is answerable: the proxy keeps the session of the newest
        /// initiation it saw, so accepting an older one's answer would bind
        /// the client to a session the proxy has already replaced.
        initiator: Option<Box<Initiator>>,
        attempts: u32,
        first_sent: Instant,
        next_retry: Instant,
        cookie: Option<[u8; 16]>,
    },
    Established(Box<Established>),
}

struct Established {
    crypto: SessionCrypto,
    proxy: ProxyId,
    keepalive: Duration,
    last_rx: Instant,
    last_tx: Instant,
    /// Last keepalive sent because nothing was heard (see `handle_timeout`).
    last_probe: Instant,
    reliable: ReliableSender,
    /// Duplicate filters per proxy sender id: each proxy numbers its own
    /// control messages.
    received: Vec<(SenderId, ReliableReceiver)>,
}

struct Registration {
    name: Name,
    requested_s: u32,
    refresh_at: Option<Instant>,
}

/// The client state machine.
pub struct Client {
    cfg: ClientConfig,
    macs: NetworkMacs,
    conn: Conn,
    registrations: Vec<Registration>,
    pub(crate) calls: HashMap<CallId, ClientCall>,
    events: VecDeque<Event>,
    queue: VecDeque<Vec<u8>>,
    drops: DropCounters,
}

impl Client {
    /// A client that is not connected yet.
    pub fn new(cfg: ClientConfig) -> Self {
        Self {
            macs: NetworkMacs::new(&cfg.network),
            cfg,
            conn: Conn::Idle,
            registrations: Vec::new(),
            calls: HashMap::new(),
            events: VecDeque::new(),
            queue: VecDeque::new(),
            drops: DropCounters::default(),
        }
    }

    /// This client's public key.
    pub fn public_key(&self) -> PublicKey {
        self.cfg.secret.public()
    }

    /// The proxy that holds the session, when connected.
    pub fn proxy(&self) -> Option<ProxyId> {
        match &self.conn {
            Conn::Established(e) => Some(e.proxy),
            _ => None,
        }
    }

    /// Packets dropped, per reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The session id, when connected.
    pub fn session(&self) -> Option<SessionId> {
        match &self.conn {
            Conn::Established(e) => Some(e.crypto.id()),
            _ => None,
        }
    }

    /// Starts (or restarts) the handshake. `unix_nanos` is the wall clock,
    /// used for the replay-protecting timestamp.
    pub fn connect(&mut self, now: Instant, unix_nanos: u128) {
        self.conn = Conn::Idle;
        self.send_init(now, unix_nanos);
    }

    /// Sends a (new) initiation. Retries back off (1, 2, 4, 4 s ...) so
    /// that a slow path, whose answers take longer than the first retry
    /// interval, still gets an answer to its latest attempt.
    fn send_init(&mut self, now: Instant, unix_nanos: u128) {
        let (attempts, first_sent, cookie) = match &self.conn {
            Conn::Handshaking {
                attempts,
                first_sent,
                cookie,
                ..
            } => (*attempts, *first_sent, *cookie),
            _ => (0, now, None),
        };
        let mut pkt = [0u8; INIT_LEN];
        let tag = crate::crypto::random_u64() as u32;
        match Initiator::start(
            &self.cfg.secret,
            &self.cfg.network,
            &self.macs,
            tag,
            tai64n(unix_nanos),
            cookie.as_ref(),
            &mut pkt,
        ) {
            Ok(initiator) => {
                self.queue.push_back(pkt.to_vec());
                let backoff = self.cfg.handshake_retry * 2u32.pow(attempts.min(2));
                self.conn = Conn::Handshaking {
                    initiator: Some(Box::new(initiator)),
                    attempts: attempts + 1,
                    first_sent,
                    next_retry: now + backoff,
                    cookie,
                };
            }
            Err(e) => {
                self.conn = Conn::Idle;
                self.events.push_back(Event::Disconnected(e.into()));
            }
        }
    }

    /// Handles a datagram from the proxy. Voice frames come back directly,
    /// decrypted in place in `datagram`; everything else becomes events.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        datagram: &'a mut [u8],
    ) -> Option<VoiceFrame<'a>> {
        let r = match classify(datagram) {
            Ok(MessageType::Transport) => self.on_transport(now, datagram),
            Ok(MessageType::HandshakeResponse) => self.on_response(now, datagram).map(|()| None),
            Ok(MessageType::CookieReply) => self.on_cookie(now, datagram).map(|()| None),
            Ok(MessageType::HandshakeInit) => Err(DropReason::Unexpected),
            Err(r) => Err(r),
        };
        r.unwrap_or_else(|reason| {
            self.drops.add(reason);
            None
        })
    }

    fn on_response(&mut self, now: Instant, d: &[u8]) -> Result<(), DropReason> {
        let resp = HandshakeResponse::parse(d)?;
        let Conn::Handshaking {
            initiator: slot,
            next_retry,
            ..
        } = &mut self.conn
        else {
            return Err(DropReason::Unexpected);
        };
        if slot.as_ref().map(|i| i.init_tag()) != Some(resp.init_tag) {
            return Err(DropReason::Unexpected);
        }
        let initiator = slot.take().ok_or(DropReason::Unexpected)?;
        let (payload, keys) = match initiator.finish(&resp) {
            Ok(ok) => ok,
            Err(_) => {
                // Not from the holder of the network key. That Noise state is
                // spent, so retry with a fresh initiation now.
                *next_retry = now;
                return Err(DropReason::HandshakeFailed);
            }
        };
        let refused = match payload.status {
            HandshakeStatus::Accepted => None,
            HandshakeStatus::UnknownKey => Some(ClientError::NotAuthorized {
                key: self.public_key(),
            }),
            HandshakeStatus::Busy => Some(ClientError::Busy),
        };
        if let Some(err) = refused {
            // An authenticated refusal is final: retrying would not change it.
            self.conn = Conn::Idle;
            self.events.push_back(Event::Disconnected(err));
            return Ok(());
        }
        let (Some(session), Some(proxy)) = (
            SessionId::from_raw(payload.session_id),
            ProxyId::new(payload.proxy_id),
        ) else {
            return Err(DropReason::BadInner);
        };
        let keepalive = self
            .cfg
            .keepalive
            .unwrap_or(Duration::from_secs(u64::from(payload.keepalive_s.max(1))));
        self.conn = Conn::Established(Box::new(Established {
            crypto: SessionCrypto::client(session, keys.client_to_proxy, keys.proxy_to_client),
            proxy,
            keepalive,
            last_rx: now,
            last_tx: now,
            last_probe: now,
            reliable: ReliableSender::new(),
            received: Vec::new(),
        }));
        self.events.push_back(Event::Connected {
            session,
            proxy,
            observed: payload.observed,
        });
        // A new session knows none of our names: register them again.
        let names: Vec<(Name, u32)> = self
            .registrations
            .iter()
            .map(|r| (r.name.clone(), r.requested_s))
            .collect();
        for (name, expires_s) in names {
            self.send_register(now, name, expires_s);
        }
        Ok(())
    }

    fn on_cookie(&mut self, now: Instant, d: &[u8]) -> Result<(), DropReason> {
        let reply = CookieReply::parse(d)?;
        let Conn::Handshaking {
            initiator: Some(initiator),
            cookie,
            next_retry,
            ..
        } = &mut self.conn
        else {
            return Err(DropReason::Unexpected);
        };
        if initiator.init_tag() != reply.init_tag {
            return Err(DropReason::Unexpected);
        }
        let c = self
            .macs
            .open_cookie(reply.nonce, reply.sealed_cookie, initiator.mac1())
            .ok_or(DropReason::BadTag)?;
        *cookie = Some(c);
        // Retry at once with the cookie rather than wait out the timer.
        *next_retry = now;
        Ok(())
    }

    fn on_transport<'a>(
        &mut self,
        now: Instant,
        d: &'a mut [u8],
    ) -> Result<Option<VoiceFrame<'a>>, DropReason> {
        let header = TransportHeader::parse(d)?;
        let Conn::Established(est) = &mut self.conn else {
            return Err(DropReason::UnknownSession);
        };
        if header.session != est.crypto.id() {
            return Err(DropReason::UnknownSession);
        }
        let opened = est.crypto.open(&header, d)?;
        est.last_rx = now;
        let plaintext = opened.plaintext;
        match Inner::parse(plaintext)? {
            Inner::Keepalive => Ok(None),
            Inner::Ack { msg_id } => {
                est.reliable.ack(msg_id);
                Ok(None)
            }
            Inner::Control { msg_id, body } => {
                let first = match est.received.iter_mut().find(|(s, _)| *s == header.sender) {
                    Some((_, r)) => r.first_time(msg_id),
                    None => {
                        let mut r = ReliableReceiver::new();
                        r.first_time(msg_id);
                        est.received.push((header.sender, r));
                        true
                    }
                };
                let mut ack = vec![0u8; 64];
                if let Some(n) = est
                    .crypto
                    .seal(&mut ack, |b| Inner::Ack { msg_id }.encode(b))
                {
                    ack.truncate(n);
                    est.last_tx = now;
                    self.queue.push_back(ack);
                }
                if first {
                    let msg = ControlMsg::parse(body)?;
                    self.on_control(now, msg);
                }
                Ok(None)
            }
            Inner::Media { call, e2e } => {
                // The blob is the tail of the inner message; take it mutably
                // to decrypt the end-to-end layer in place as well.
                let start = plaintext.len() - e2e.len();
                self.open_voice(call, &mut plaintext[start..]).map(Some)
            }
        }
    }

    fn on_control(&mut self, now: Instant, msg: ControlMsg) {
        match msg {
            ControlMsg::Registered { expires_s, name } => {
                if let Some(r) = self.registrations.iter_mut().find(|r| r.name == name) {
                    // Refresh at 80 % of the lifetime, so a lost refresh has
                    // time for retransmissions before the binding lapses.
                    r.refresh_at = (expires_s > 0)
                        .then(|| now + Duration::from_millis(u64::from(expires_s) * 800));
                }
                self.events.push_back(Event::Registered { name, expires_s });
            }
            ControlMsg::RegisterFailed { name, .. } => {
                self.registrations.retain(|r| r.name != name);
                self.events.push_back(Event::RegisterFailed { name });
            }
            other => self.on_call_control(now, other),
        }
    }

    /// Registers `name` for `expires_s` seconds and keeps it refreshed.
    pub fn register(&mut self, now: Instant, name: Name, expires_s: u32) {
        self.registrations.retain(|r| r.name != name);
        if expires_s > 0 {
            self.registrations.push(Registration {
                name: name.clone(),
                requested_s: expires_s,
                refresh_at: None,
            });
        }
        if matches!(self.conn, Conn::Established(_)) {
            self.send_register(now, name, expires_s);
        }
    }

    /// Sends a Register and arms a fallback refresh: if no Registered comes
    /// back (every retransmission lost), it is tried again rather than let
    /// the binding lapse silently.
    fn send_register(&mut self, now: Instant, name: Name, expires_s: u32) {
        if let Some(r) = self.registrations.iter_mut().find(|r| r.name == name) {
            r.refresh_at = Some(now + REGISTER_RETRY);
        }
        // Cannot fail: connected, and a valid name always fits.
        let _ = self.send_control(now, ControlMsg::Register { expires_s, name });
    }

    /// Sends a control message reliably.
    pub(crate) fn send_control(
        &mut self,
        now: Instant,
        msg: ControlMsg,
    ) -> Result<(), ClientError> {
        let Conn::Established(est) = &mut self.conn else {
            return Err(ClientError::NotConnected);
        };
        let mut body = vec![0u8; MAX_DATAGRAM];
        let n = msg.encode(&mut body).ok_or(ClientError::TooLarge)?;
        body.truncate(n);
        let msg_id = est.reliable.push(now, body.clone(), msg.call());
        let mut pkt = vec![0u8; MAX_DATAGRAM];
        let inner = Inner::Control {
            msg_id,
            body: &body,
        };
        let n = est
            .crypto
            .seal(&mut pkt, |b| inner.encode(b))
            .ok_or(ClientError::TooLarge)?;
        pkt.truncate(n);
        est.last_tx = now;
        self.queue.push_back(pkt);
        Ok(())
    }

    /// Seals a media blob for the proxy into `out`; the data path.
    pub(crate) fn seal_media(
        &mut self,
        now: Instant,
        call: CallId,
        blob: &[u8],
        out: &mut [u8],
    ) -> Result<usize, ClientError> {
        let Conn::Established(est) = &mut self.conn else {
            return Err(ClientError::NotConnected);
        };
        let n = est
            .crypto
            .seal(out, |b| Inner::Media { call, e2e: blob }.encode(b))
            .ok_or(ClientError::TooLarge)?;
        est.last_tx = now;
        Ok(n)
    }

    /// The next datagram to send to the proxy, written into `out`.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        let pkt = self.queue.pop_front()?;
        let n = pkt.len().min(out.len());
        out[..n].copy_from_slice(&pkt[..n]);
        Some(n)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.conn {
            Conn::Idle => None,
            Conn::Handshaking { next_retry, .. } => Some(*next_retry),
            Conn::Established(est) => {
                let mut t = (est.last_tx + est.keepalive)
                    .min(est.last_rx.max(est.last_probe) + est.keepalive)
                    .min(est.last_rx + dead_after(est.keepalive));
                if let Some(r) = est.reliable.next_due() {
                    t = t.min(r);
                }
                for reg in &self.registrations {
                    if let Some(r) = reg.refresh_at {
                        t = t.min(r);
                    }
                }
                Some(t)
            }
        }
    }

    /// Runs the timers due at `now`: handshake retries, keepalives,
    /// retransmissions, registration refreshes, loss detection.
    pub fn handle_timeout(&mut self, now: Instant, unix_nanos: u128) {
        match &mut self.conn {
            Conn::Idle => {}
            Conn::Handshaking {
                attempts,
                first_sent,
                next_retry,
                ..
            } => {
                if now < *next_retry {
                    return;
                }
                let (attempts, first_sent) = (*attempts, *first_sent);
                if attempts >= self.cfg.handshake_attempts {
                    self.conn = Conn::Idle;
                    self.events
                        .push_back(Event::Disconnected(ClientError::HandshakeTimeout {
                            attempts,
                            waited: now.saturating_duration_since(first_sent),
                            network: self.cfg.network,
                        }));
                    self.end_all_calls(Cause::NetworkFailure);
                } else {
                    self.send_init(now, unix_nanos);
                }
            }
            Conn::Established(est) => {
                let silent = now.saturating_duration_since(est.last_rx);
                if silent >= dead_after(est.keepalive) {
                    self.conn = Conn::Idle;
                    self.events
                        .push_back(Event::Disconnected(ClientError::ConnectionLost(silent)));
                    self.end_all_calls(Cause::NetworkFailure);
                    return;
                }
                let queue = &mut self.queue;
                let crypto = &mut est.crypto;
                let mut sent = false;
                let gone = est.reliable.poll(now, |msg_id, body| {
                    let mut pkt = vec![0u8; MAX_DATAGRAM];
                    let inner = Inner::Control { msg_id, body };
                    if let Some(n) = crypto.seal(&mut pkt, |b| inner.encode(b)) {
                        pkt.truncate(n);
                        queue.push_back(pkt);
                        sent = true;
                    }
                });
                // Keep the NAT binding open when we send nothing, and probe
                // when we hear nothing (the proxy echoes keepalives), so a
                // client that only sends voice does not think the path dead.
                let idle = now >= est.last_tx + est.keepalive;
                let deaf = now >= est.last_rx.max(est.last_probe) + est.keepalive;
                if (!sent && idle) || deaf {
                    let mut pkt = vec![0u8; 64];
                    if let Some(n) = est.crypto.seal(&mut pkt, |b| Inner::Keepalive.encode(b)) {
                        pkt.truncate(n);
                        self.queue.push_back(pkt);
                        sent = true;
                        if deaf {
                            est.last_probe = now;
                        }
                    }
                }
                if sent {
                    est.last_tx = now;
                }
                for lost in gone {
                    // The proxy never acknowledged a message about this call:
                    // end it here, and tell the proxy (best effort) so the
                    // other side is not left in a call that is gone.
                    if let Some(call) = lost.call {
                        if self.end_call(call, Cause::Timeout) {
                            let cause = Cause::Timeout;
                            let _ = self.send_control(now, ControlMsg::Hangup { call, cause });
                        }
                    }
                }
                let due: Vec<(Name, u32)> = self
                    .registrations
                    .iter_mut()
                    .filter(|r| r.refresh_at.is_some_and(|t| t <= now))
                    .map(|r| {
                        r.refresh_at = None;
                        (r.name.clone(), r.requested_s)
                    })
                    .collect();
                for (name, expires_s) in due {
                    self.send_register(now, name, expires_s);
                }
            }
        }
    }
}

/// How long to wait for Registered before sending the Register again.
const REGISTER_RETRY: Duration = Duration::from_secs(20);

/// Silence after which the session counts as lost: three keepalive periods
/// plus slack, since the proxy answers every keepalive.
fn dead_after(keepalive: Duration) -> Duration {
    keepalive * 3 + Duration::from_secs(1)
}
