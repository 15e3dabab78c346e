//! The client's calls: placing, answering, refusing, ending; voice and DTMF.

use super::early::{EarlyVoice, HeldVoiceFrame, EARLY_VOICE_FRAMES};
use super::{Client, ClientError, Event, VoiceFrame};
use crate::call::e2e::{self, CallerHandshake, E2eSession};
use crate::call::{Cause, Name};
use crate::crypto::PublicKey;
use crate::session::CallId;
use crate::wire::control::ControlMsg;
use crate::wire::e2e::{is_dtmf_digit, E2eMessage, MAX_VOICE_PAYLOAD};
use crate::wire::DropReason;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most DTMF digits held back waiting for an earlier one; beyond, every
/// held digit is delivered at once (in order) and the gap skipped.
pub const MAX_HELD_DTMF: usize = 32;

/// How long a digit is held back waiting for an earlier one that was lost
/// (its retransmission normally comes within a second).
const DTMF_HOLD: Duration = Duration::from_secs(2);

/// Which way a call was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallDirection {
    /// This client called.
    Outgoing,
    /// This client was called.
    Incoming,
}

/// Facts about one call, for status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// The call.
    pub call: CallId,
    /// Which way.
    pub direction: CallDirection,
    /// The other party's name.
    pub peer: Name,
    /// The codec, once answered.
    pub codec: Option<String>,
}

/// A call's state; each variant holds only what that state needs, so an
/// unanswered call cannot carry voice keys and an answered one no handshake.
pub(crate) enum CallState {
    /// We sent an Invite and wait for an answer.
    Dialing {
        handshake: Box<CallerHandshake>,
        to: Name,
        offered: Vec<String>,
        ringing: bool,
        /// Voice that came before the Answer, held until it comes.
        early: EarlyVoice,
    },
    /// We were invited and have not answered.
    Alerting {
        from: Name,
        to: Name,
        peer_key: PublicKey,
        codecs: Vec<String>,
        msg1: Vec<u8>,
    },
    /// Answered: end-to-end keys are set.
    Active(Box<ActiveCall>),
}

/// An answered call: what voice and DTMF need.
pub(crate) struct ActiveCall {
    e2e: E2eSession,
    codec: String,
    peer: Name,
    direction: CallDirection,
    /// DTMF events sent so far (numbers the next one).
    dtmf_sent: u32,
    /// Puts received DTMF back in the order it was sent.
    dtmf_in: DtmfOrder,
    /// When anything last came from the other side on this call.
    last_rx: Instant,
    /// When this side last sent anything on this call.
    last_tx: Instant,
}

impl ActiveCall {
    fn new(
        now: Instant,
        e2e: E2eSession,
        codec: String,
        peer: Name,
        direction: CallDirection,
    ) -> Box<Self> {
        Box::new(Self {
            e2e,
            codec,
            peer,
            direction,
            dtmf_sent: 0,
            dtmf_in: DtmfOrder::default(),
            last_rx: now,
            last_tx: now,
        })
    }
}

/// The receiving side of one call's DTMF: digits carry the sender's event
/// number (1, 2, ...); they travel as reliable control messages, so a lost
/// one is retransmitted and arrives after the ones sent after it. Those
/// wait for it, at most [`DTMF_HOLD`] or [`MAX_HELD_DTMF`] digits.
#[derive(Debug)]
struct DtmfOrder {
    /// The event number expected next.
    next: u32,
    /// Digits that arrived before an earlier one: event -> (digit, ms).
    held: BTreeMap<u32, (u8, u16)>,
    /// When held digits are given up waiting for and delivered.
    hold_until: Option<Instant>,
}

impl Default for DtmfOrder {
    fn default() -> Self {
        Self {
            next: 1,
            held: BTreeMap::new(),
            hold_until: None,
        }
    }
}

impl DtmfOrder {
    /// Takes event `event` and returns the digits now deliverable, in the
    /// order they were sent.
    fn push(&mut self, now: Instant, event: u32, digit: u8, ms: u16) -> Vec<(u8, u16)> {
        if event < self.next {
            // The missing digit after its wait was given up: late, not lost.
            return vec![(digit, ms)];
        }
        self.held.insert(event, (digit, ms));
        if self.held.len() > MAX_HELD_DTMF {
            return self.flush();
        }
        let mut out = Vec::new();
        while let Some(d) = self.held.remove(&self.next) {
            out.push(d);
            self.next = self.next.wrapping_add(1);
        }
        self.hold_until = match self.held.is_empty() {
            true => None,
            false => self.hold_until.or(Some(now + DTMF_HOLD)),
        };
        out
    }

    /// Delivers every held digit in order, skipping the gaps.
    fn flush(&mut self) -> Vec<(u8, u16)> {
        self.hold_until = None;
        let held = std::mem::take(&mut self.held);
        if let Some(last) = held.keys().next_back() {
            self.next = last.wrapping_add(1);
        }
        held.into_values().collect()
    }
}

impl Client {
    /// Places a call to `to`. `from` picks which of our names to call as
    /// (`None`: the proxy picks our first). `codecs` in order of preference.
    pub fn call(
        &mut self,
        now: Instant,
        to: Name,
        from: Option<Name>,
        codecs: Vec<String>,
    ) -> Result<CallId, ClientError> {
        if self.session().is_none() {
            return Err(ClientError::NotConnected);
        }
        let call = CallId(crate::crypto::random_u64());
        let binding = e2e::CallBinding {
            call,
            to: &to,
            codecs: &codecs,
        };
        let (handshake, msg1) = CallerHandshake::start(&self.cfg.secret, &binding, from.as_ref())?;
        self.send_control(
            now,
            ControlMsg::Invite {
                call,
                to: to.clone(),
                from,
                peer_key: [0; 32],
                codecs: codecs.clone(),
                e2e: msg1,
            },
        )?;
        let state = CallState::Dialing {
            handshake: Box::new(handshake),
            to,
            offered: codecs,
            ringing: false,
            early: EarlyVoice::default(),
        };
        self.calls.insert(call, state);
        Ok(call)
    }

    /// Answers an incoming call with `codec`, which the caller must have offered.
    pub fn answer(&mut self, now: Instant, call: CallId, codec: &str) -> Result<(), ClientError> {
        let c = self
            .calls
            .get(&call)
            .ok_or(ClientError::UnknownCall(call))?;
        let CallState::Alerting {
            from,
            to,
            peer_key,
            codecs,
            msg1,
        } = c
        else {
            return Err(ClientError::CallState {
                call,
                what: "be answered",
            });
        };
        let Some(codec) = codecs
            .iter()
            .find(|c| c.eq_ignore_ascii_case(codec))
            .cloned()
        else {
            return Err(ClientError::CodecNotOffered(codec.to_owned()));
        };
        let binding = e2e::CallBinding { call, to, codecs };
        let (session, msg2) =
            e2e::answer(&self.cfg.secret, &binding, from, msg1, peer_key, &codec)?;
        let peer = from.clone();
        self.send_control(
            now,
            ControlMsg::Answer {
                call,
                peer_key: [0; 32],
                e2e: msg2,
            },
        )?;
        let active = ActiveCall::new(now, session, codec, peer, CallDirection::Incoming);
        self.calls.insert(call, CallState::Active(active));
        Ok(())
    }

    /// Refuses an incoming call.
    pub fn reject(&mut self, now: Instant, call: CallId, cause: Cause) -> Result<(), ClientError> {
        match self.calls.get(&call) {
            Some(CallState::Alerting { .. }) => {}
            Some(_) => {
                return Err(ClientError::CallState {
                    call,
                    what: "be rejected",
                })
            }
            None => return Err(ClientError::UnknownCall(call)),
        }
        self.calls.remove(&call);
        self.forget_pending(call);
        self.send_control(
            now,
            ControlMsg::Reject {
                call,
                cause: cause.into(),
            },
        )
    }

    /// Ends a call in any state (cancels an unanswered outgoing one). The
    /// Hangup of an answered call waits behind the call's unacknowledged
    /// messages (digits), so they arrive before it (at most
    /// [`HANGUP_HOLD`](crate::call::reliable::HANGUP_HOLD)); an unanswered
    /// call's pending Invite or Ringing is dropped.
    pub fn hangup(&mut self, now: Instant, call: CallId, cause: Cause) -> Result<(), ClientError> {
        let state = self
            .calls
            .remove(&call)
            .ok_or(ClientError::UnknownCall(call))?;
        if !matches!(state, CallState::Active(_)) {
            self.forget_pending(call);
        }
        self.send_control(
            now,
            ControlMsg::Hangup {
                call,
                cause: cause.into(),
            },
        )
    }

    /// Seals one voice frame for `call` into `out` (a datagram for the
    /// proxy) and returns its length. Allocates nothing.
    pub fn send_voice(
        &mut self,
        now: Instant,
        call: CallId,
        seq: u32,
        timestamp: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, ClientError> {
        if payload.is_empty() || payload.len() > MAX_VOICE_PAYLOAD {
            return Err(ClientError::TooLarge);
        }
        let c = self.active(call, "carry voice before it is answered")?;
        let mut blob = [0u8; MAX_VOICE_PAYLOAD + 9 + e2e::E2E_OVERHEAD];
        let msg = E2eMessage::Voice {
            seq,
            timestamp,
            payload,
        };
        let n = c
            .e2e
            .seal(&mut blob, |b| msg.encode(b))
            .ok_or(ClientError::TooLarge)?;
        c.last_tx = now;
        self.seal_media(now, call, &blob[..n], out)
    }

    /// Sends a DTMF digit end to end, reliably.
    pub fn send_dtmf(
        &mut self,
        now: Instant,
        call: CallId,
        digit: char,
        duration_ms: u16,
    ) -> Result<(), ClientError> {
        let d = u8::try_from(digit).ok().filter(|d| is_dtmf_digit(*d));
        let d = d.ok_or(ClientError::BadDigit(digit))?;
        let c = self.active(call, "send DTMF before it is answered")?;
        c.dtmf_sent += 1;
        let msg = E2eMessage::Dtmf {
            event: c.dtmf_sent,
            digit: d,
            duration_ms,
        };
        let mut blob = vec![0u8; 64];
        let n = c
            .e2e
            .seal(&mut blob, |b| msg.encode(b))
            .ok_or(ClientError::TooLarge)?;
        blob.truncate(n);
        c.last_tx = now;
        self.send_control(now, ControlMsg::CallData { call, e2e: blob })
    }

    /// Every call this client has.
    pub fn calls(&self) -> Vec<CallInfo> {
        self.calls
            .iter()
            .map(|(id, c)| match c {
                CallState::Dialing { to, .. } => CallInfo {
                    call: *id,
                    direction: CallDirection::Outgoing,
                    peer: to.clone(),
                    codec: None,
                },
                CallState::Alerting { from, .. } => CallInfo {
                    call: *id,
                    direction: CallDirection::Incoming,
                    peer: from.clone(),
                    codec: None,
                },
                CallState::Active(a) => CallInfo {
                    call: *id,
                    direction: a.direction,
                    peer: a.peer.clone(),
                    codec: Some(a.codec.clone()),
                },
            })
            .collect()
    }

    pub(super) fn on_call_control(&mut self, now: Instant, msg: ControlMsg) {
        match msg {
            ControlMsg::Invite {
                call,
                to,
                from: Some(from),
                peer_key,
                codecs,
                e2e: msg1,
            } => {
                if self.calls.contains_key(&call) {
                    return;
                }
                if self.closing || self.calls.len() >= self.cfg.max_calls {
                    log::debug!("call {call} from {from}: refused as busy");
                    let cause = Cause::Busy;
                    let _ = self.send_control(
                        now,
                        ControlMsg::Reject {
                            call,
                            cause: cause.into(),
                        },
                    );
                    self.events
                        .push_back(Event::CallRefused { call, from, cause });
                    return;
                }
                let peer_key = PublicKey(peer_key);
                let binding = e2e::CallBinding {
                    call,
                    to: &to,
                    codecs: &codecs,
                };
                if !e2e::check_invite(&binding, &msg1, &peer_key) {
                    // The proxy vouches for a key the caller did not use.
                    log::warn!("call {call}: caller key does not match the proxy's; refused");
                    let cause = Cause::TemporaryFailure;
                    let _ = self.send_control(
                        now,
                        ControlMsg::Reject {
                            call,
                            cause: cause.into(),
                        },
                    );
                    return;
                }
                let state = CallState::Alerting {
                    from: from.clone(),
                    to: to.clone(),
                    peer_key,
                    codecs: codecs.clone(),
                    msg1,
                };
                self.calls.insert(call, state);
                let _ = self.send_control(now, ControlMsg::Ringing { call });
                self.events.push_back(Event::IncomingCall {
                    call,
                    from,
                    to,
                    codecs,
                });
            }
            ControlMsg::Ringing { call } => {
                if let Some(CallState::Dialing { ringing, .. }) = self.calls.get_mut(&call) {
                    if !*ringing {
                        *ringing = true;
                        self.events.push_back(Event::Ringing { call });
                    }
                }
            }
            ControlMsg::Answer {
                call,
                peer_key,
                e2e: msg2,
            } => self.on_answer(now, call, PublicKey(peer_key), &msg2),
            ControlMsg::Reject { call, cause } | ControlMsg::Hangup { call, cause } => {
                // An octet outside Q.850 (a proxy that broke the rule) ends
                // the call all the same, with the defined cause it maps to.
                let cause = cause.cause().unwrap_or_else(|e| {
                    self.causes_out_of_range += 1;
                    log::debug!("call {call}: {e}");
                    e.mapped
                });
                self.end_call(call, cause);
            }
            ControlMsg::CallData {
                call,
                e2e: mut blob,
            } => self.on_call_data(now, call, &mut blob),
            _ => self.drops.add(DropReason::Unexpected),
        }
    }

    fn on_answer(&mut self, now: Instant, call: CallId, peer_key: PublicKey, msg2: &[u8]) {
        let Some(c) = self.calls.remove(&call) else {
            // An answer to a call we gave up on: tell the proxy it is over,
            // or the answering side would wait for voice that never comes.
            let cause = Cause::NetworkFailure;
            let _ = self.send_control(
                now,
                ControlMsg::Hangup {
                    call,
                    cause: cause.into(),
                },
            );
            return;
        };
        let CallState::Dialing {
            handshake,
            to,
            offered,
            early,
            ..
        } = c
        else {
            self.calls.insert(call, c);
            return;
        };
        let result = handshake.finish(msg2, &peer_key).and_then(|(s, codec)| {
            if offered.iter().any(|o| o.eq_ignore_ascii_case(&codec)) {
                Ok((s, codec))
            } else {
                Err(e2e::E2eError::CodecNotOffered(codec))
            }
        });
        match result {
            Ok((session, codec)) => {
                let active =
                    ActiveCall::new(now, session, codec.clone(), to, CallDirection::Outgoing);
                self.calls.insert(call, CallState::Active(active));
                self.events.push_back(Event::Answered { call, codec });
                self.release_early(now, call, early);
            }
            Err(e) => {
                self.drops.add_n(DropReason::EarlyVoiceDropped, early.len());
                // The event carries it; the application reports it once.
                log::debug!("call {call}: end-to-end handshake failed: {e}");
                let cause = Cause::TemporaryFailure;
                let _ = self.send_control(
                    now,
                    ControlMsg::Hangup {
                        call,
                        cause: cause.into(),
                    },
                );
                self.events
                    .push_back(Event::EndToEndFailed { call, error: e });
                self.events.push_back(Event::CallEnded { call, cause });
            }
        }
    }

    fn on_call_data(&mut self, now: Instant, call: CallId, blob: &mut [u8]) {
        let Some(CallState::Active(c)) = self.calls.get_mut(&call) else {
            return self.drops.add(DropReason::UnknownCall);
        };
        let Ok(plain) = c.e2e.open(blob) else {
            return self.drops.add(DropReason::BadEndToEnd);
        };
        c.last_rx = now;
        match E2eMessage::parse(plain) {
            // Repeats cannot get here: the reliable layer drops repeated
            // control messages and the end-to-end replay window repeated
            // blobs. But a retransmitted digit arrives after the ones sent
            // after it: put them back in the order they were sent.
            Ok(E2eMessage::Dtmf {
                event,
                digit,
                duration_ms,
            }) => {
                for (digit, duration_ms) in c.dtmf_in.push(now, event, digit, duration_ms) {
                    self.events.push_back(Event::Dtmf {
                        call,
                        digit: char::from(digit),
                        duration_ms,
                    });
                }
            }
            _ => self.drops.add(DropReason::BadInner),
        }
    }

    /// Decrypts and parses a relayed voice frame (or call keepalive, which
    /// gives no frame), in place.
    pub(super) fn open_voice<'a>(
        &mut self,
        now: Instant,
        call: CallId,
        blob: &'a mut [u8],
    ) -> Result<Option<VoiceFrame<'a>>, DropReason> {
        let c = match self.calls.get_mut(&call) {
            Some(CallState::Active(c)) => c,
            // Voice before the Answer (it took the longer way, through
            // the peer link): held until the Answer opens it.
            Some(CallState::Dialing { early, .. }) => {
                if early.push(blob) {
                    self.drops.add(DropReason::EarlyVoiceDropped);
                }
                return Ok(None);
            }
            _ => return Err(DropReason::UnknownCall),
        };
        let msg = E2eMessage::parse(c.e2e.open(blob)?)?;
        c.last_rx = now;
        match msg {
            E2eMessage::Voice {
                seq,
                timestamp,
                payload,
            } => Ok(Some(VoiceFrame {
                call,
                seq,
                timestamp,
                payload,
            })),
            E2eMessage::Alive => Ok(None),
            E2eMessage::Dtmf { .. } => Err(DropReason::BadInner),
        }
    }

    /// Opens the voice held for `call` before its Answer and queues it for
    /// [`Client::poll_held_voice`], oldest first; what does not open is
    /// counted like any relayed frame that does not.
    fn release_early(&mut self, now: Instant, call: CallId, early: EarlyVoice) {
        for mut blob in early.take() {
            match self.open_voice(now, call, &mut blob) {
                Ok(Some(f)) => {
                    let held = HeldVoiceFrame {
                        call,
                        seq: f.seq,
                        timestamp: f.timestamp,
                        payload: f.payload.to_vec(),
                    };
                    // An application that never drains them cannot grow
                    // the queue: a few calls' worth at most.
                    if self.held_voice.len() >= 4 * EARLY_VOICE_FRAMES {
                        self.held_voice.pop_front();
                        self.drops.add(DropReason::EarlyVoiceDropped);
                    }
                    self.held_voice.push_back(held);
                }
                Ok(None) => {}
                Err(r) => self.drops.add(r),
            }
        }
    }

    /// Whether any call is answered.
    pub(super) fn has_active_call(&self) -> bool {
        self.calls
            .values()
            .any(|c| matches!(c, CallState::Active(_)))
    }

    /// The earliest per-call timer: a call keepalive, the media timeout, or
    /// held DTMF. Calls are few ([`super::ClientConfig::max_calls`]).
    pub(super) fn next_call_timer(&self) -> Option<Instant> {
        let (keepalive, timeout) = (self.cfg.call_keepalive, self.cfg.media_timeout);
        self.calls
            .values()
            .filter_map(|c| match c {
                CallState::Active(a) => {
                    let t = (a.last_tx + keepalive).min(a.last_rx + timeout);
                    Some(a.dtmf_in.hold_until.map_or(t, |h| h.min(t)))
                }
                _ => None,
            })
            .min()
    }

    /// Runs the per-call timers due at `now`: ends calls whose other side
    /// went silent (telling the proxy), sends call keepalives on quiet
    /// calls, delivers DTMF held too long.
    pub(super) fn call_timers(&mut self, now: Instant) {
        let (keepalive, timeout) = (self.cfg.call_keepalive, self.cfg.media_timeout);
        let mut dead = Vec::new();
        let mut quiet = Vec::new();
        for (id, c) in &mut self.calls {
            let CallState::Active(a) = c else { continue };
            if now >= a.last_rx + timeout {
                dead.push(*id);
                continue;
            }
            if a.dtmf_in.hold_until.is_some_and(|t| now >= t) {
                for (digit, duration_ms) in a.dtmf_in.flush() {
                    self.events.push_back(Event::Dtmf {
                        call: *id,
                        digit: char::from(digit),
                        duration_ms,
                    });
                }
            }
            if now >= a.last_tx + keepalive {
                quiet.push(*id);
            }
        }
        for call in dead {
            log::info!(
                "call {call}: nothing from the other side for {:.1} s; ending it",
                timeout.as_secs_f64()
            );
            let cause = Cause::NetworkFailure;
            if self.end_call(call, cause) {
                let _ = self.send_control(
                    now,
                    ControlMsg::Hangup {
                        call,
                        cause: cause.into(),
                    },
                );
            }
        }
        for call in quiet {
            let _ = self.send_call_keepalive(now, call);
        }
    }

    /// Sends an end-to-end keepalive on `call` over the media path.
    fn send_call_keepalive(&mut self, now: Instant, call: CallId) -> Result<(), ClientError> {
        let c = self.active(call, "carry a keepalive before it is answered")?;
        let mut blob = [0u8; 1 + e2e::E2E_OVERHEAD];
        let n = c
            .e2e
            .seal(&mut blob, |b| E2eMessage::Alive.encode(b))
            .ok_or(ClientError::TooLarge)?;
        c.last_tx = now;
        let mut pkt = vec![0u8; crate::wire::MAX_DATAGRAM];
        let len = self.seal_media(now, call, &blob[..n], &mut pkt)?;
        pkt.truncate(len);
        self.queue.push_back(pkt);
        Ok(())
    }

    /// The answered call `call`, or why `what` cannot be done to it.
    fn active(&mut self, call: CallId, what: &'static str) -> Result<&mut ActiveCall, ClientError> {
        match self.calls.get_mut(&call) {
            Some(CallState::Active(a)) => Ok(a),
            Some(_) => Err(ClientError::CallState { call, what }),
            None => Err(ClientError::UnknownCall(call)),
        }
    }

    /// Ends a call locally and tells the application. False if there was
    /// no such call.
    pub(super) fn end_call(&mut self, call: CallId, cause: Cause) -> bool {
        let removed = self.calls.remove(&call);
        let existed = removed.is_some();
        if let Some(CallState::Dialing { early, .. }) = &removed {
            self.drops.add_n(DropReason::EarlyVoiceDropped, early.len());
        }
        if let Some(CallState::Active(mut a)) = removed {
            // Digits received but held for an earlier one are the other
            // side's: delivered (in order) before the call's end, not lost.
            for (digit, duration_ms) in a.dtmf_in.flush() {
                self.events.push_back(Event::Dtmf {
                    call,
                    digit: char::from(digit),
                    duration_ms,
                });
            }
        }
        if existed {
            self.forget_pending(call);
            self.events.push_back(Event::CallEnded { call, cause });
        }
        existed
    }

    /// Stops retransmitting what is still unacknowledged about an ended
    /// call (Ringing, DTMF): nothing of a call outlives it. Runs before the
    /// final Hangup or Reject is sent, which must still arrive.
    fn forget_pending(&mut self, call: CallId) {
        if let super::Conn::Established(est) = &mut self.conn {
            est.reliable.forget_call(call);
        }
    }

    pub(super) fn end_all_calls(&mut self, cause: Cause) {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for call in ids {
            self.end_call(call, cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(v: Vec<(u8, u16)>) -> String {
        v.into_iter().map(|(d, _)| char::from(d)).collect()
    }

    #[test]
    fn dtmf_waits_for_a_missing_digit_then_gives_up() {
        let t0 = Instant::now();
        let mut o = DtmfOrder::default();
        assert_eq!(digits(o.push(t0, 2, b'2', 100)), "");
        assert_eq!(digits(o.push(t0, 3, b'3', 100)), "");
        assert_eq!(o.hold_until, Some(t0 + DTMF_HOLD));
        assert_eq!(digits(o.push(t0, 1, b'1', 100)), "123");
        assert_eq!(o.hold_until, None);
        // 4 never comes: 5 is delivered when the wait is over.
        assert_eq!(digits(o.push(t0, 5, b'5', 100)), "");
        assert_eq!(digits(o.flush()), "5");
        assert_eq!(digits(o.push(t0, 6, b'6', 100)), "6");
        // The lost one, late: delivered rather than dropped.
        assert_eq!(digits(o.push(t0, 4, b'4', 100)), "4");
    }

    #[test]
    fn dtmf_holds_a_bounded_number_of_digits() {
        let t0 = Instant::now();
        let mut o = DtmfOrder::default();
        for e in 2..=(MAX_HELD_DTMF as u32 + 1) {
            assert!(o.push(t0, e, b'9', 100).is_empty());
        }
        let out = o.push(t0, MAX_HELD_DTMF as u32 + 2, b'#', 100);
        assert_eq!(out.len(), MAX_HELD_DTMF + 1);
        assert!(o.held.is_empty());
        assert_eq!(o.next, MAX_HELD_DTMF as u32 + 3);
    }
}
