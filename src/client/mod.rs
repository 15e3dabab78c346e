//! The client's protocol core: one session to the anycast proxy address.
//!
//! Like the proxy it never touches a socket or a clock. The shell feeds it
//! datagrams from the proxy ([`Client::handle_datagram`], which hands voice
//! frames straight back out of the buffer it was given), sends what
//! [`Client::poll_transmit`] produces to the proxy, drains
//! [`Client::poll_event`], and calls [`Client::handle_timeout`] on time.
//! Call state lives in [`calls`].

pub mod calls;
mod connect;
mod early;
mod events;

pub use calls::{CallDirection, CallInfo};
pub use early::{HeldVoiceFrame, EARLY_VOICE_FRAMES};
pub use events::{ClientError, ClockSkew, Event, VoiceFrame};

use crate::call::reliable::{ReliableReceiver, ReliableSender};
use crate::call::{Cause, Name};
use crate::crypto::mac::NetworkMacs;
use crate::crypto::{PublicKey, SecretKey};
use crate::handshake::Initiator;
use crate::session::{CallId, ProxyId, SenderId, SessionCrypto, SessionId};
use crate::wire::control::ControlMsg;
use crate::wire::inner::Inner;
use crate::wire::transport::TransportHeader;
use crate::wire::{classify, DropCounters, DropReason, MessageType, MAX_DATAGRAM};
use calls::CallState;
pub use calls::MAX_HELD_DTMF;
use std::collections::{HashMap, VecDeque};
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
    /// Attempts before giving up with [`ClientError::HandshakeTimeout`]
    /// (first connection only: after losing an established session the
    /// client keeps trying, every 4 s at most, until told to stop).
    pub handshake_attempts: u32,
    /// An answered call that receives nothing from the other side (no
    /// voice, no end-to-end keepalive, no DTMF) for this long ends with
    /// cause 38 (network failure), and the proxy is told. Like Asterisk's
    /// `rtptimeout`: a vanished peer is noticed in seconds.
    pub media_timeout: Duration,
    /// On an answered call that this side has sent nothing on for this
    /// long, an end-to-end keepalive is sent, so that a quiet (muted) side
    /// is not taken for a vanished one. Must be well below `media_timeout`.
    pub call_keepalive: Duration,
    /// A keepalive or control message that the proxy has not answered for
    /// this long means the session is lost (the proxy restarted or the path
    /// broke): the client connects again and registers its names again.
    pub loss_timeout: Duration,
    /// Most calls at once (ringing, alerting or answered). Invites beyond
    /// are refused at once with busy (Q.850 17).
    pub max_calls: usize,
}

impl ClientConfig {
    /// Defaults: keepalive as the proxy says, 4 handshake attempts with
    /// retries after 1, 2 and 4 s (an error after 11 s without an answer),
    /// a media timeout of 10 s, call keepalives after 1 s of quiet, session
    /// loss after 3 s without an answer, at most 16 calls.
    pub fn new(secret: SecretKey, network: PublicKey) -> Self {
        Self {
            secret,
            network,
            keepalive: None,
            handshake_retry: Duration::from_secs(1),
            handshake_attempts: 4,
            media_timeout: Duration::from_secs(10),
            call_keepalive: Duration::from_secs(1),
            loss_timeout: Duration::from_secs(3),
            max_calls: 16,
        }
    }
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
    /// Duplicate filters for control messages, one per proxy sender id (at
    /// most one per proxy of the network), each for that sender's newest
    /// send epoch only (spec 9.2).
    received: Vec<ControlFilter>,
}

/// The duplicate filter for one proxy sender id. Each send state of a proxy
/// (a handshake, every import of the session) numbers its control messages
/// from 1 again, and each has its own send epoch (the high 32 bits of its
/// counters; a later send state of one proxy id always has a higher one,
/// spec 8.8). So the filter is kept per (sender id, epoch), for the newest
/// epoch only: bounded, and a newer send state's messages are not taken as
/// repeats of an older one's.
struct ControlFilter {
    sender: SenderId,
    epoch: u32,
    seen: ReliableReceiver,
}

/// What the client does with a control message (spec 9.2).
#[derive(Debug, PartialEq, Eq)]
enum ControlVerdict {
    /// First arrival in the sender's newest epoch: acknowledge, act on it.
    New,
    /// A repeat in the sender's newest epoch: acknowledge only.
    Repeat,
    /// From an older send epoch of the sender than one already heard: a
    /// delayed packet of a send state that has been replaced. Neither acted
    /// on nor acknowledged: an ack names only the message id, so it would
    /// acknowledge the current send state's message of that id, which the
    /// client has not seen. (After a `seq` wrap the sender is the same and
    /// retransmits the message in its new epoch.)
    Stale,
}

impl ControlFilter {
    /// Classifies control message `msg_id` sent by `sender` in a packet
    /// with counter `counter`, and records it.
    fn check(
        filters: &mut Vec<Self>,
        sender: SenderId,
        counter: u64,
        msg_id: u32,
    ) -> ControlVerdict {
        let epoch = (counter / crate::session::EPOCH_SPAN) as u32;
        let f = match filters.iter_mut().find(|f| f.sender == sender) {
            Some(f) => f,
            None => {
                filters.push(Self {
                    sender,
                    epoch,
                    seen: ReliableReceiver::new(),
                });
                filters.last_mut().expect("just pushed")
            }
        };
        if epoch < f.epoch {
            return ControlVerdict::Stale;
        }
        if epoch > f.epoch {
            // A newer send state: the old filter goes (its messages now come
            // only as Stale).
            f.epoch = epoch;
            f.seen = ReliableReceiver::new();
        }
        if f.seen.first_time(msg_id) {
            ControlVerdict::New
        } else {
            ControlVerdict::Repeat
        }
    }
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
    pub(crate) calls: HashMap<CallId, CallState>,
    events: VecDeque<Event>,
    /// Voice frames held before their call's Answer, opened and ready to
    /// play; at most [`EARLY_VOICE_FRAMES`] per call answered.
    held_voice: VecDeque<HeldVoiceFrame>,
    queue: VecDeque<Vec<u8>>,
    drops: DropCounters,
    /// Rejects and hangups received whose cause octet was no Q.850 value.
    pub(crate) causes_out_of_range: u64,
    /// Correction of handshake timestamps learned from the proxy.
    clock: connect::Clock,
    /// The session was lost after being established: handshakes go on
    /// without an attempt limit until one succeeds.
    reconnecting: bool,
    /// [`Client::shutdown`] ran: no new calls, no reconnecting.
    closing: bool,
    /// While established: when the oldest packet still waiting for an
    /// answer from the proxy (a keepalive, which the proxy echoes, or a
    /// control message, which it acknowledges) was sent; cleared by any
    /// authenticated packet and when the session ends.
    unanswered_since: Option<Instant>,
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
            held_voice: VecDeque::new(),
            queue: VecDeque::new(),
            drops: DropCounters::default(),
            causes_out_of_range: 0,
            clock: connect::Clock::default(),
            reconnecting: false,
            closing: false,
            unanswered_since: None,
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

    /// The next voice frame that arrived before its call's Answer and was
    /// held until it came (spec: client call states). A shell plays these
    /// like the frames [`Client::handle_datagram`] returns, draining them
    /// after each datagram.
    pub fn poll_held_voice(&mut self) -> Option<HeldVoiceFrame> {
        self.held_voice.pop_front()
    }

    /// Packets dropped, per reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Rejects and hangups received whose cause was no Q.850 value (0 or
    /// above 127): the call ended with the defined cause
    /// [`Cause::from_code`] maps it to (16 for 0, else 127).
    pub fn causes_out_of_range(&self) -> u64 {
        self.causes_out_of_range
    }

    /// The session id, when connected.
    pub fn session(&self) -> Option<SessionId> {
        match &self.conn {
            Conn::Established(e) => Some(e.crypto.id()),
            _ => None,
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
        self.unanswered_since = None;
        let plaintext = opened.plaintext;
        match Inner::parse(plaintext)? {
            Inner::Keepalive => Ok(None),
            Inner::Ack { msg_id } => {
                est.reliable.ack(msg_id);
                Ok(None)
            }
            Inner::Control { msg_id, body } => {
                // CallData for a call still dialing: the proxy's Answer was
                // lost and is on its way again. Not acknowledged (nor marked
                // seen), so the proxy sends the data again after the Answer,
                // rather than the client dropping a digit for good.
                if let Ok(ControlMsg::CallData { call, .. }) = ControlMsg::parse(body) {
                    if matches!(self.calls.get(&call), Some(CallState::Dialing { .. })) {
                        return Err(DropReason::AnswerPending);
                    }
                }
                let verdict =
                    ControlFilter::check(&mut est.received, header.sender, header.counter, msg_id);
                if verdict == ControlVerdict::Stale {
                    return Err(DropReason::StaleControl);
                }
                let mut ack = vec![0u8; 64];
                if let Some(n) = est
                    .crypto
                    .seal(&mut ack, |b| Inner::Ack { msg_id }.encode(b))
                {
                    ack.truncate(n);
                    est.last_tx = now;
                    self.queue.push_back(ack);
                }
                if verdict == ControlVerdict::New {
                    let msg = ControlMsg::parse(body)?;
                    self.on_control(now, msg);
                }
                Ok(None)
            }
            Inner::Media { call, e2e } => {
                // The blob is the tail of the inner message; take it mutably
                // to decrypt the end-to-end layer in place as well.
                let start = plaintext.len() - e2e.len();
                self.open_voice(now, call, &mut plaintext[start..])
            }
        }
    }

    pub(crate) fn on_control(&mut self, now: Instant, msg: ControlMsg) {
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
            ControlMsg::SessionReplaced => {
                // Final: logging in again would evict the newer login,
                // which would evict us in turn.
                // The Disconnected event carries it; the application
                // reports it once.
                log::debug!("the proxy replaced this session with a newer login of this key");
                self.conn = Conn::Idle;
                self.unanswered_since = None;
                self.reconnecting = false;
                self.registrations.clear();
                self.events
                    .push_back(Event::Disconnected(ClientError::Replaced));
                self.end_all_calls(Cause::NetworkFailure);
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
        // The end of a call waits behind the call's earlier unacknowledged
        // messages (`push_after`), so they arrive before it.
        let ends_call = matches!(msg, ControlMsg::Hangup { .. } | ControlMsg::Reject { .. });
        let (msg_id, send_now) = if ends_call {
            est.reliable.push_after(now, body.clone(), msg.call())
        } else {
            est.reliable
                .push(now, body.clone(), msg.call())
                .map(|id| (id, true))
        }
        .ok_or(ClientError::Backlog)?;
        self.unanswered_since.get_or_insert(now);
        if !send_now {
            return Ok(());
        }
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
                let deaf = self.deaf_after(est.keepalive);
                let mut t =
                    (est.last_tx + est.keepalive).min(est.last_rx + dead_after(est.keepalive));
                // The same probe deadline handle_timeout checks: while a
                // packet is unanswered it probes every PROBE_INTERVAL, else
                // after `deaf` of silence (a deadline it would not act on
                // makes a time-jumping driver spin).
                t = match self.unanswered_since {
                    Some(since) => t
                        .min(since + self.cfg.loss_timeout)
                        .min(est.last_probe.max(since) + PROBE_INTERVAL),
                    None => t.min(est.last_rx.max(est.last_probe) + deaf),
                };
                if let Some(r) = est.reliable.next_due() {
                    t = t.min(r);
                }
                if let Some(c) = self.next_call_timer() {
                    t = t.min(c);
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
            Conn::Idle => self.unanswered_since = None,
            Conn::Handshaking {
                attempts,
                first_sent,
                next_retry,
                ..
            } => {
                self.unanswered_since = None;
                if now < *next_retry {
                    return;
                }
                let (attempts, first_sent) = (*attempts, *first_sent);
                if attempts >= self.cfg.handshake_attempts && !self.reconnecting {
                    self.conn = Conn::Idle;
                    let err = self
                        .clock
                        .failure()
                        .unwrap_or(ClientError::HandshakeTimeout {
                            attempts,
                            waited: now.saturating_duration_since(first_sent),
                            network: self.cfg.network,
                        });
                    self.events.push_back(Event::Disconnected(err));
                    self.end_all_calls(Cause::NetworkFailure);
                } else {
                    self.send_init(now, unix_nanos);
                }
            }
            Conn::Established(est) => {
                self.reconnecting = false;
                let silent = now.saturating_duration_since(est.last_rx);
                let unanswered = self
                    .unanswered_since
                    .is_some_and(|t| now >= t + self.cfg.loss_timeout);
                if unanswered || silent >= dead_after(est.keepalive) {
                    self.session_lost(now, unix_nanos, ClientError::ConnectionLost(silent));
                    return;
                }
                let keepalive = est.keepalive;
                let deaf_after = self.deaf_after(keepalive);
                let unanswered_since = self.unanswered_since;
                let Conn::Established(est) = &mut self.conn else {
                    return;
                };
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
                let deaf = match unanswered_since {
                    // Probing already: again every PROBE_INTERVAL, so one
                    // lost probe does not end the session.
                    Some(since) => now >= est.last_probe.max(since) + PROBE_INTERVAL,
                    None => now >= est.last_rx.max(est.last_probe) + deaf_after,
                };
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
                    self.unanswered_since.get_or_insert(now);
                }
                for lost in gone {
                    // The proxy never acknowledged a message about this call:
                    // end it here, and tell the proxy (best effort) so the
                    // other side is not left in a call that is gone.
                    if let Some(call) = lost.call {
                        if self.end_call(call, Cause::Timeout) {
                            let cause = Cause::Timeout;
                            let _ = self.send_control(
                                now,
                                ControlMsg::Hangup {
                                    call,
                                    cause: cause.into(),
                                },
                            );
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
                self.call_timers(now);
            }
        }
    }

    /// How long to hear nothing before probing the proxy: the keepalive
    /// interval, or one second during an answered call (voice or call
    /// keepalives flow then, so silence means trouble).
    fn deaf_after(&self, keepalive: Duration) -> Duration {
        if self.has_active_call() {
            keepalive.min(Duration::from_secs(1))
        } else {
            keepalive
        }
    }

    /// The session is gone (the proxy restarted, or the path broke): calls
    /// end, and unless shutting down the client connects again at once,
    /// keeping its names (sent again once connected).
    fn session_lost(&mut self, now: Instant, unix_nanos: u128, why: ClientError) {
        self.conn = Conn::Idle;
        self.unanswered_since = None;
        if self.closing {
            self.events.push_back(Event::Disconnected(why));
            self.end_all_calls(Cause::NetworkFailure);
            return;
        }
        log::info!("{why}; connecting again");
        self.events.push_back(Event::Reconnecting(why));
        self.end_all_calls(Cause::NetworkFailure);
        self.reconnecting = true;
        self.send_init(now, unix_nanos);
    }

    /// Ends every call (cause 16; a call still ringing here is refused
    /// with 20) and removes every registration, for a
    /// client about to stop. The Hangups and unregistrations are sent
    /// reliably; keep driving the client until
    /// [`Client::pending_control`] is 0 (all acknowledged) or a deadline
    /// passes. After this the client neither accepts calls nor reconnects.
    pub fn shutdown(&mut self, now: Instant) {
        self.closing = true;
        let calls: Vec<CallId> = self.calls.keys().copied().collect();
        for call in calls {
            // A call still ringing here never connected: the caller is told
            // this device is gone (20), not "normal call clearing" (16).
            let _ = match self.calls.get(&call) {
                Some(CallState::Alerting { .. }) => self.reject(now, call, Cause::Unavailable),
                _ => self.hangup(now, call, Cause::Normal),
            };
            self.events.push_back(Event::CallEnded {
                call,
                cause: Cause::Normal,
            });
        }
        let names: Vec<Name> = self.registrations.drain(..).map(|r| r.name).collect();
        for name in names {
            let _ = self.send_control(now, ControlMsg::Register { expires_s: 0, name });
        }
    }

    /// Control messages sent but not yet acknowledged by the proxy (0 when
    /// not connected: nothing can be acknowledged then).
    pub fn pending_control(&self) -> usize {
        match &self.conn {
            Conn::Established(est) => est.reliable.in_flight(),
            _ => 0,
        }
    }
}

/// Interval between keepalive probes while the proxy has not answered.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How long to wait for Registered before sending the Register again.
const REGISTER_RETRY: Duration = Duration::from_secs(20);

/// Silence after which the session counts as lost: three keepalive periods
/// plus slack, since the proxy answers every keepalive.
fn dead_after(keepalive: Duration) -> Duration {
    keepalive * 3 + Duration::from_secs(1)
}
