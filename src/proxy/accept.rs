//! Accepting handshakes: the proxy's side of the Noise IK handshake and the
//! denial-of-service checks in front of it (MAC1, load, cookie and MAC2,
//! per-source rate limit), then the timestamp check, the subscriber check
//! and the creation of the session.

use super::{ClientSession, Proxy, Transmit};
use crate::call::reliable::{ReliableReceiver, ReliableSender};
use crate::handshake::Responder;
use crate::session::{SessionCrypto, SessionId};
use crate::wire::handshake::{
    CookieReply, HandshakeInit, HandshakeStatus, ResponsePayload, COOKIE_NONCE_LEN,
    COOKIE_REPLY_LEN, INIT_MAC1_OFFSET, INIT_MAC2_OFFSET, RESPONSE_LEN,
};
use crate::wire::DropReason;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

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
        if self
            .timestamps
            .get(&client)
            .is_some_and(|last| responder.timestamp() <= last)
        {
            return Err(DropReason::StaleTimestamp);
        }
        let id = if !self.subscribers.is_authorized(&client) {
            Err(HandshakeStatus::UnknownKey)
        } else if self.sessions.len() >= self.cfg.max_sessions {
            Err(HandshakeStatus::Busy)
        } else {
            // The send epoch is taken before Accepted is promised (spec 8.8).
            let epoch = self.epochs.take();
            self.new_session_id()
                .zip(epoch)
                .ok_or(HandshakeStatus::Busy)
        };
        let (status, id) = match id {
            Ok(id) => {
                self.timestamps.insert(client, *responder.timestamp());
                (HandshakeStatus::Accepted, Some(id))
            }
            Err(status) => (status, None),
        };
        let payload = ResponsePayload {
            status,
            keepalive_s: self.cfg.keepalive_s,
            session_id: id.as_ref().map_or(0, |(id, _)| id.raw()),
            proxy_id: self.cfg.proxy_id.get(),
            observed: src,
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
                self.sessions.insert(
                    id,
                    ClientSession {
                        crypto,
                        client_key: client,
                        addr: src,
                        local_ip: dst_ip,
                        last_seen: now,
                        reliable: ReliableSender::new(),
                        received: ReliableReceiver::new(),
                    },
                );
                self.by_key.insert(client, id);
                self.stats.handshakes_accepted += 1;
                log::debug!("session {id} for {client} from {src}");
            }
            None => {
                self.stats.handshakes_refused += 1;
                log::info!("refused handshake from {src}: {status:?} (key {client})");
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
