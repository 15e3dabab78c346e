//! The client's side of the handshake: initiations with retries and
//! backoff, cookies under load, and the answer that establishes (or
//! refuses) the session.

use super::{Client, ClientError, Conn, Established, Event};
use crate::call::reliable::ReliableSender;
use crate::call::Name;
use crate::crypto::tai64n;
use crate::handshake::Initiator;
use crate::session::{ProxyId, SessionCrypto, SessionId};
use crate::wire::handshake::{CookieReply, HandshakeResponse, HandshakeStatus, INIT_LEN};
use crate::wire::DropReason;
use std::time::{Duration, Instant};

impl Client {
    /// Starts (or restarts) the handshake. `unix_nanos` is the wall clock,
    /// used for the replay-protecting timestamp.
    pub fn connect(&mut self, now: Instant, unix_nanos: u128) {
        self.conn = Conn::Idle;
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
