//! Accepting handshakes: the proxy's side of the Noise IK handshake and the
//! denial-of-service checks in front of it (MAC1, load, cookie and MAC2,
//! per-source rate limit), then the timestamp check (replay and clock skew,
//! see [`crate::handshake::replay`]), the subscriber check and the creation
//! of the session. Refusals are counted per reason and logged in aggregate.

use super::{ClientSession, Keys, Proxy, Transmit};
use super::{ProxyConfig, Subscribers};
use crate::call::reliable::ReliableSender;
use crate::crypto::PublicKey;
use crate::handshake::replay::{ReplayTable, Verdict, WallClock};
use crate::handshake::Responder;
use crate::session::{Epoch, SessionCrypto, SessionId};
use crate::wire::handshake::{
    CookieReply, HandshakeInit, HandshakeStatus, ResponsePayload, COOKIE_NONCE_LEN,
    COOKIE_REPLY_LEN, INIT_MAC1_OFFSET, INIT_MAC2_OFFSET, RESPONSE_LEN,
};
use crate::wire::DropReason;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

impl Proxy {
    pub(super) fn on_init(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst_ip: Option<IpAddr>,
        d: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let init = HandshakeInit::parse(d)?;
        if !self.macs.verify_mac1(&d[..INIT_MAC1_OFFSET], &init.mac1) {
            return Err(DropReason::BadMac1);
        }
        if self.load.record(now) {
            if !self
                .cookies
                .verify_mac2(now, src, &d[..INIT_MAC2_OFFSET], &init.mac2)
            {
                // Under load: answer with a cookie (64 bytes, less than the
                // 148 received) and do no Diffie-Hellman.
                let cookie = self.cookies.cookie_for(now, src);
                let mut nonce = [0u8; COOKIE_NONCE_LEN];
                crate::crypto::random_bytes(&mut nonce);
                let sealed = self.macs.seal_cookie(&cookie, &nonce, &init.mac1);
                let out = out
                    .get_mut(..COOKIE_REPLY_LEN)
                    .ok_or(DropReason::CannotAnswer)?;
                CookieReply::write_prefix(out, init.init_tag);
                out[8..8 + COOKIE_NONCE_LEN].copy_from_slice(&nonce);
                out[8 + COOKIE_NONCE_LEN..].copy_from_slice(&sealed);
                self.stats.cookie_replies += 1;
                self.stats.drops.add(DropReason::CookieRequired);
                return Ok(Some(Transmit {
                    dst: src,
                    src_ip: dst_ip,
                    len: COOKIE_REPLY_LEN,
                }));
            }
            if !self.limiter.allow(now, src.ip()) {
                return Err(DropReason::RateLimited);
            }
        }
        let responder = Responder::read(&self.cfg.network_key, &init)?;
        let client = *responder.client();
        // Every authentic initiation is recorded, whatever its outcome, so a
        // replay of a refused one costs no more Diffie-Hellman and earns no
        // answer.
        let wall = self.wall.at(now);
        let (id, time) = match self.replay.check(&client, responder.timestamp(), wall) {
            Verdict::Replay => return Err(DropReason::StaleTimestamp),
            Verdict::OutsideWindow { hint } => (Err(HandshakeStatus::ClockSkew), hint),
            Verdict::Stale { hint } => (Err(HandshakeStatus::Stale), hint),
            Verdict::Fresh if !self.subscribers.is_authorized(&client) => {
                (Err(HandshakeStatus::UnknownKey), wall)
            }
            // A key that holds a session already replaces it (below): its
            // new login does not add one, so a full table is no reason to
            // refuse it (that would lock a reconnecting device out).
            Verdict::Fresh
                if self.sessions.len() >= self.cfg.max_sessions
                    && !self.by_key.contains_key(&client) =>
            {
                (Err(HandshakeStatus::Busy), wall)
            }
            Verdict::Fresh => {
                // Fresh handshake keys: the reserved epoch 0, so reconnects
                // consume no leased epoch. A proxy with none left in its
                // lease still refuses (its sessions could not move to a new
                // epoch when `seq` wraps), before Accepted is promised
                // (spec 8.8).
                let id = self
                    .new_session_id()
                    .filter(|_| self.epochs.remaining() > 0)
                    .map(|id| (id, Epoch::fresh_keys(&self.epochs)));
                (id.ok_or(HandshakeStatus::Busy), wall)
            }
        };
        let (status, id) = match id {
            Ok(id) => (HandshakeStatus::Accepted, Some(id)),
            Err(status) => (status, None),
        };
        let payload = ResponsePayload {
            status,
            keepalive_s: self.cfg.keepalive_s,
            session_id: id.as_ref().map_or(0, |(id, _)| id.raw()),
            proxy_id: self.cfg.proxy_id.get(),
            observed: src,
            time: crate::crypto::tai64n(time),
        };
        let out: &mut [u8; RESPONSE_LEN] = out
            .get_mut(..RESPONSE_LEN)
            .and_then(|o| o.try_into().ok())
            .ok_or(DropReason::CannotAnswer)?;
        let keys = responder.finish(&payload, out)?;
        match id {
            Some((id, epoch)) => {
                // One session per client key: a reconnecting device replaces
                // its old session (it may have lost it in a reboot).
                if let Some(old) = self.by_key.get(&client).copied() {
                    self.replace_session(now, old);
                }
                let crypto =
                    SessionCrypto::proxy(id, epoch, keys.client_to_proxy, keys.proxy_to_client);
                self.session_order.insert(id);
                self.sessions.insert(
                    id,
                    Box::new(ClientSession {
                        crypto: Keys::whole(crypto),
                        client_key: client,
                        addr: src,
                        local_ip: dst_ip,
                        last_seen: now,
                        reliable: ReliableSender::new(),
                        received: None,
                        serving: self.cfg.proxy_id,
                        adopted: false,
                        floor: 0,
                        pending_move: None,
                    }),
                );
                self.by_key.insert(client, id);
                self.note_serving(id);
                self.arm_expiry(id, now);
                self.emit_session(now, id, true);
                self.stats.handshakes_accepted += 1;
                log::debug!("session {id} for {client} from {src}");
            }
            None => {
                self.stats.handshakes_refused += 1;
                let counter = match status {
                    HandshakeStatus::UnknownKey => &mut self.stats.refused_unknown_key,
                    HandshakeStatus::ClockSkew => &mut self.stats.refused_clock_skew,
                    HandshakeStatus::Stale => &mut self.stats.refused_stale,
                    HandshakeStatus::Busy | HandshakeStatus::Accepted => {
                        &mut self.stats.refused_busy
                    }
                };
                *counter += 1;
                // Anyone with an X25519 key can cause this: log in aggregate.
                self.refusal_log.record(status, client, src);
                self.flush_refusal_log(now);
            }
        }
        Ok(Some(Transmit {
            dst: src,
            src_ip: dst_ip,
            len: RESPONSE_LEN,
        }))
    }

    fn new_session_id(&self) -> Option<SessionId> {
        // 48 random bits: a collision is astronomically unlikely, but cheap
        // to rule out.
        (0..8)
            .map(|_| SessionId::new(self.cfg.proxy_id, crate::crypto::random_u64()))
            .find(|id| !self.sessions.contains_key(id))
    }
}

/// Refused handshakes are logged at most once per this interval, in
/// aggregate: anyone with an X25519 key can cause one.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Refused handshakes since the last aggregate log line.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    next: Option<Instant>,
    unknown_key: u64,
    busy: u64,
    clock_skew: u64,
    stale: u64,
    last: Option<(HandshakeStatus, PublicKey, SocketAddr)>,
}

impl RefusalLog {
    pub(super) fn record(&mut self, status: HandshakeStatus, key: PublicKey, src: SocketAddr) {
        match status {
            HandshakeStatus::UnknownKey => self.unknown_key += 1,
            HandshakeStatus::ClockSkew => self.clock_skew += 1,
            HandshakeStatus::Stale => self.stale += 1,
            HandshakeStatus::Busy | HandshakeStatus::Accepted => self.busy += 1,
        }
        self.last = Some((status, key, src));
    }

    /// The aggregate line, if one is due at `now`; resets the counts.
    pub(super) fn take_line(&mut self, now: Instant) -> Option<String> {
        let (status, key, src) = self.last?;
        if self.next.is_some_and(|t| now < t) {
            return None;
        }
        let window = match self.next {
            // The first refusal after a quiet interval is logged at once.
            None => String::new(),
            Some(_) => format!(" in the last {} s", REFUSAL_LOG_INTERVAL.as_secs()),
        };
        let total = self.unknown_key + self.busy + self.clock_skew + self.stale;
        let parts: Vec<String> = [
            (self.unknown_key, "unknown key"),
            (self.busy, "busy"),
            (self.clock_skew, "clock skew"),
            (self.stale, "stale timestamp"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        let plural = if total == 1 { "" } else { "s" };
        let line = format!(
            "refused {total} handshake{plural}{window}: {}; last: {status:?} for key {key} from {src}",
            parts.join(", ")
        );
        *self = Self {
            next: Some(now + REFUSAL_LOG_INTERVAL),
            ..Self::default()
        };
        Some(line)
    }

    /// Ends the interval when nothing was refused in it, so the next
    /// refusal is logged at once.
    fn quiet(&mut self, now: Instant) {
        if self.last.is_none() && self.next.is_some_and(|t| now >= t) {
            self.next = None;
        }
    }
}

impl Proxy {
    /// A proxy whose wall clock reads `unix_nanos` (nanoseconds since the
    /// Unix epoch) at `now`; it accepts no handshake timestamped before then.
    pub fn with_wall_clock(
        cfg: ProxyConfig,
        subscribers: Subscribers,
        now: Instant,
        unix_nanos: u128,
    ) -> Self {
        let mut p = Self::new(cfg, subscribers, now);
        p.wall = WallClock::new(now, unix_nanos);
        p.replay = ReplayTable::new(unix_nanos, p.cfg.replay_max_keys);
        p
    }

    /// Sets the wall clock (say, after the system clock was stepped, as NTP
    /// does at boot). The start part of the replay floor follows: it is the
    /// proxy's start time on the new clock.
    pub fn set_wall_clock(&mut self, now: Instant, unix_nanos: u128) {
        self.wall = self.wall.reanchored(now, unix_nanos);
        self.replay.set_start(self.wall.start_unix_nanos());
    }

    /// The proxy's wall clock at `now`, in nanoseconds since the Unix epoch.
    pub fn wall_clock(&self, now: Instant) -> u128 {
        self.wall.at(now)
    }

    /// The handshake replay state, to share with other proxies.
    pub fn replay_table(&self) -> &ReplayTable {
        &self.replay
    }

    /// The handshake replay state, to merge another proxy's into.
    pub fn replay_table_mut(&mut self) -> &mut ReplayTable {
        &mut self.replay
    }

    /// Logs the aggregate of refused handshakes when one is due (called per
    /// refusal and from the once-a-second sweep).
    pub(super) fn flush_refusal_log(&mut self, now: Instant) {
        if let Some(line) = self.refusal_log.take_line(now) {
            log::info!("{line}");
        }
        self.refusal_log.quiet(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_in_aggregate_at_most_once_per_interval() {
        let t = Instant::now();
        let key = PublicKey([7; 32]);
        let src: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let mut log = RefusalLog::default();
        log.record(HandshakeStatus::UnknownKey, key, src);
        let first = log
            .take_line(t)
            .expect("the first refusal is logged at once");
        assert!(
            first.starts_with("refused 1 handshake: 1 unknown key;"),
            "{first}"
        );
        let mut lines = 0;
        for i in 0..523u64 {
            let status = if i % 100 == 0 {
                HandshakeStatus::Busy
            } else {
                HandshakeStatus::UnknownKey
            };
            log.record(status, key, src);
            let at = t + Duration::from_millis(i * 10);
            lines += usize::from(log.take_line(at).is_some());
        }
        assert_eq!(lines, 0, "nothing more within the interval");
        let line = log.take_line(t + REFUSAL_LOG_INTERVAL).unwrap();
        assert!(
            line.starts_with("refused 523 handshakes in the last 10 s: 517 unknown key, 6 busy;"),
            "{line}"
        );
        assert!(log.take_line(t + REFUSAL_LOG_INTERVAL * 3).is_none());
    }
}
