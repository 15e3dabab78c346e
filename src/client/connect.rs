//! The client's side of the handshake: initiations with retries and
//! backoff, cookies under load, and the answer that establishes (or
//! refuses) the session.

use super::{Client, ClientError, ClockSkew, Conn, Established, Event};
use crate::call::reliable::ReliableSender;
use crate::call::Name;
use crate::crypto::{tai64n, tai64n_to_unix_nanos};
use crate::handshake::Initiator;
use crate::session::{ProxyId, SessionCrypto, SessionId};
use crate::wire::handshake::{
    CookieReply, HandshakeResponse, HandshakeStatus, ResponsePayload, INIT_LEN,
};
use crate::wire::DropReason;
use std::time::{Duration, Instant};

impl Client {
    /// Starts (or restarts) the handshake. `unix_nanos` is the wall clock,
    /// used for the replay-protecting timestamp.
    pub fn connect(&mut self, now: Instant, unix_nanos: u128) {
        self.conn = Conn::Idle;
        self.clock.refusals = 0;
        self.send_init(now, unix_nanos);
    }

    /// Sends a (new) initiation. Retries back off (1, 2, 4, 4 s ...) so
    /// that a slow path, whose answers take longer than the first retry
    /// interval, still gets an answer to its latest attempt.
    pub(super) fn send_init(&mut self, now: Instant, unix_nanos: u128) {
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
            self.clock.stamp(now, unix_nanos),
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

    pub(super) fn on_response(&mut self, now: Instant, d: &[u8]) -> Result<(), DropReason> {
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
            HandshakeStatus::ClockSkew | HandshakeStatus::Stale => {
                return self.on_timestamp_refused(now, &payload);
            }
        };
        if let Some(err) = refused {
            if self.reconnecting && matches!(err, ClientError::Busy) {
                // A full proxy (one just restarted, say) is transient: a
                // device that had a session keeps trying on the retry timer.
                log::debug!("proxy busy while reconnecting; trying again");
                return Ok(());
            }
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
        // The next session's handshakes (reconnecting after a loss) start
        // with a clean count of timestamp refusals.
        self.clock.refusals = 0;
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

    /// The proxy refused the timestamp and said which it would accept now:
    /// adopt the difference as the clock's correction and retry at once.
    fn on_timestamp_refused(
        &mut self,
        now: Instant,
        payload: &ResponsePayload,
    ) -> Result<(), DropReason> {
        let (sent_at, local_sent) = self.clock.last_init.ok_or(DropReason::Unexpected)?;
        let hint = tai64n_to_unix_nanos(&payload.time).ok_or(DropReason::BadInner)?;
        // This device's (uncorrected) wall clock now, from the monotonic one.
        let local_now = local_sent + now.saturating_duration_since(sent_at).as_nanos();
        let offset = hint as i128 - local_now as i128;
        self.clock.offset_ns = offset;
        self.clock.refusals += 1;
        let skew = self.clock.skew();
        if payload.status == HandshakeStatus::ClockSkew {
            // The event carries it; the application reports it once.
            log::debug!("{skew}; corrected");
            self.events.push_back(Event::ClockCorrected(skew));
        } else {
            // Stale: a restarted proxy, a clock stepped back a little, or
            // another device with this key. Not worth a warning.
            log::debug!("handshake timestamp stale at the proxy; moved by {offset} ns");
        }
        if self.clock.refusals > MAX_CLOCK_CORRECTIONS {
            if self.reconnecting {
                // Reconnecting goes on without a limit: wait for the retry
                // timer rather than answer the proxy at once.
                return Ok(());
            }
            self.conn = Conn::Idle;
            let err = self.clock.failure().unwrap_or(ClientError::NotConnected);
            self.events.push_back(Event::Disconnected(err));
            return Ok(());
        }
        self.send_init(now, local_now);
        Ok(())
    }

    pub(super) fn on_cookie(&mut self, now: Instant, d: &[u8]) -> Result<(), DropReason> {
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
}

/// Timestamp refusals one connection attempt corrects before it gives up
/// with [`ClientError::ClockSkew`].
const MAX_CLOCK_CORRECTIONS: u32 = 3;

/// The correction this client applies to its wall clock for handshake
/// timestamps, learned from the proxy's answers (spec 5.3, 5.5). Kept
/// across connections: a wrong clock stays wrong.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// Added to the wall clock the shell passes in, in nanoseconds.
    offset_ns: i128,
    /// Monotonic and uncorrected wall time of the latest initiation.
    last_init: Option<(Instant, u128)>,
    /// Timestamp refusals in the current connection attempt.
    refusals: u32,
}

impl Clock {
    /// The corrected timestamp for an initiation sent at `now`, when the
    /// device's wall clock reads `unix_nanos`.
    fn stamp(&mut self, now: Instant, unix_nanos: u128) -> [u8; 12] {
        self.last_init = Some((now, unix_nanos));
        let t = u128::try_from(unix_nanos as i128 + self.offset_ns).unwrap_or(0);
        tai64n(t)
    }

    fn skew(&self) -> ClockSkew {
        let ms = self.offset_ns / 1_000_000;
        ClockSkew {
            offset_ms: i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX }),
        }
    }

    /// The error to report when this connection attempt fails after the
    /// proxy refused its timestamps.
    pub(super) fn failure(&self) -> Option<ClientError> {
        (self.refusals > 0).then(|| ClientError::ClockSkew {
            skew: self.skew(),
            answers: self.refusals,
        })
    }
}
