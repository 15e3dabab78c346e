//! Requests handed to a call's owner (spec 15.4): a client's request about
//! a call not held here, and a device's answer or refusal of a forked call
//! set up elsewhere. The latter are kept here until the owner's decision
//! replicates back, so that they are handled again if the owner dies first
//! (a `Request` is not acknowledged as a `Control` is: it would be lost
//! with the owner): then its successor, the lowest member not reported
//! down, decides ([`Proxy::decider`]).
//!
//! Bounded by [`MAX_PENDING_DECISIONS`] (the oldest forgotten first); every
//! change is O(log n) but [`PendingDecisions::take_owner`], which runs when
//! a peer is reported down.

use super::replica::MAX_CALL_OWNERS;
use super::{PeerMessage, Proxy};
use crate::session::{CallId, ProxyId, SessionId};
use crate::wire::control::ControlMsg;
use crate::wire::MAX_DATAGRAM;
use std::collections::BTreeMap;

/// Most requests kept for owners' decisions at once.
pub const MAX_PENDING_DECISIONS: usize = 4096;

/// One request handed to an owner: the device's session and the encoded
/// `ControlMsg`.
#[derive(Debug, Clone)]
struct Pending {
    owner: ProxyId,
    seq: u64,
    body: Vec<u8>,
}

/// The requests handed to owners and not yet decided, per (call, device).
#[derive(Debug, Default)]
pub(crate) struct PendingDecisions {
    /// By (call, device's raw session id).
    by_call: BTreeMap<(CallId, u64), Pending>,
    /// (seq, call, device), oldest first, to forget the oldest.
    order: BTreeMap<u64, (CallId, u64)>,
    next: u64,
    /// Requests forgotten because the table was full.
    pub(crate) forgotten: u64,
}

impl PendingDecisions {
    /// Keeps device `from`'s request `body` about `call`, handed to `owner`
    /// (a newer one from the same device replaces it).
    pub(crate) fn keep(&mut self, owner: ProxyId, call: CallId, from: SessionId, body: Vec<u8>) {
        self.settled(call, Some(from));
        while self.by_call.len() >= MAX_PENDING_DECISIONS {
            let Some((_, k)) = self.order.pop_first() else {
                break;
            };
            self.by_call.remove(&k);
            self.forgotten += 1;
        }
        self.next += 1;
        let seq = self.next;
        self.order.insert(seq, (call, from.raw()));
        self.by_call
            .insert((call, from.raw()), Pending { owner, seq, body });
    }

    /// The owner's decision about `call` (for device `from` only, or for
    /// all of its devices) arrived: nothing to decide here.
    pub(crate) fn settled(&mut self, call: CallId, from: Option<SessionId>) {
        let keys: Vec<(CallId, u64)> = match from {
            Some(s) => vec![(call, s.raw())],
            None => self
                .by_call
                .range((call, 0)..=(call, u64::MAX))
                .map(|(k, _)| *k)
                .collect(),
        };
        for k in keys {
            if let Some(p) = self.by_call.remove(&k) {
                self.order.remove(&p.seq);
            }
        }
    }

    /// Takes the requests handed to `owner` (reported down), oldest first:
    /// (device, encoded message). O(n).
    pub(crate) fn take_owner(&mut self, owner: ProxyId) -> Vec<(SessionId, Vec<u8>)> {
        let mut out = Vec::new();
        let seqs: Vec<u64> = self
            .order
            .iter()
            .filter(|(_, k)| self.by_call.get(k).is_some_and(|p| p.owner == owner))
            .map(|(s, _)| *s)
            .collect();
        for s in seqs {
            if let Some(k) = self.order.remove(&s) {
                let from = SessionId::from_raw(k.1);
                if let (Some(p), Some(from)) = (self.by_call.remove(&k), from) {
                    out.push((from, p.body));
                }
            }
        }
        out
    }

    /// Requests kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_call.len()
    }
}

impl Proxy {
    /// Remembers that `owner` handled the Invite of `call` (bounded, oldest
    /// forgotten first).
    pub(super) fn note_call_owner(&mut self, call: crate::session::CallId, owner: ProxyId) {
        if self.call_owners.contains_key(&call) {
            return;
        }
        while self.call_owner_order.len() >= MAX_CALL_OWNERS {
            if let Some(old) = self.call_owner_order.pop_front() {
                self.call_owners.remove(&old);
            }
        }
        self.call_owners.insert(call, owner);
        self.call_owner_order.push_back(call);
    }

    /// Who decides for a call set up by `owner`: the owner, unless it was
    /// reported down; then its successor, the lowest member not reported
    /// down (this proxy at worst). Every proxy that agrees on who is down
    /// names the same one (spec 15.4). O(log members).
    pub(super) fn decider(&self, owner: ProxyId) -> ProxyId {
        if !self.down.contains(&owner) {
            return owner;
        }
        self.live.first().copied().unwrap_or(self.cfg.proxy_id)
    }

    /// A client's request about a call this proxy does not hold, whose
    /// owner handed it the Invite, or a device's answer or refusal of a
    /// forked call set up elsewhere (its owner named by the replicated
    /// call): handed to the call's decider, the owner or, once it is
    /// reported down, its successor (spec 15.4). False if it is not such a
    /// request, or if this proxy decides.
    pub(super) fn request_to_owner(&mut self, from: SessionId, msg: &ControlMsg) -> bool {
        let call = match msg {
            ControlMsg::Ringing { call }
            | ControlMsg::Answer { call, .. }
            | ControlMsg::Reject { call, .. }
            | ControlMsg::Hangup { call, .. }
            | ControlMsg::CallData { call, .. } => *call,
            _ => return false,
        };
        let decision = matches!(
            msg,
            ControlMsg::Answer { .. } | ControlMsg::Reject { .. } | ControlMsg::Hangup { .. }
        );
        let held = self.calls.get(&call);
        if let Some(c) = held {
            // Held: handled here, unless it answers or refuses a forked
            // call set up elsewhere (its owner decides those).
            if !(decision && c.owner_decides(from)) {
                return false;
            }
        }
        // The replicated call names its owner (a device whose route moved
        // after its Invite has it only that way); else the Invite did.
        let owner = match held {
            Some(c) => c.owner(),
            None => self.call_owners.get(&call).copied(),
        };
        let held = held.is_some();
        let Some(owner) = owner.map(|o| self.decider(o)) else {
            return false;
        };
        if owner == self.cfg.proxy_id {
            return false;
        }
        let mut body = vec![0u8; MAX_DATAGRAM];
        let Some(n) = msg.encode(&mut body) else {
            return false;
        };
        body.truncate(n);
        if held {
            // Decided here after all if the owner dies first.
            self.decisions.keep(owner, call, from, body.clone());
        }
        if self.send_peer(owner, &PeerMessage::Request { from, body }) {
            self.psp.requests_to_owner += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner decides while it is not reported down; then the lowest
    /// member not reported down, whoever asks; a peer up again decides
    /// its calls again.
    #[test]
    fn the_decider_is_the_owner_else_the_lowest_live_member() {
        use crate::crypto::SecretKey;
        use crate::proxy::{ProxyConfig, Subscribers};
        let id = |i| ProxyId::new(i).unwrap();
        let now = std::time::Instant::now();
        let cfg = ProxyConfig::new(id(3), SecretKey::generate());
        let mut p = Proxy::new(cfg, Subscribers::new([]), now);
        p.set_peers([id(1), id(2), id(3), id(4)]);
        assert_eq!((p.decider(id(1)), p.decider(id(4))), (id(1), id(4)));
        p.peer_down(now, id(1));
        p.peer_down(now, id(9));
        assert_eq!((p.decider(id(1)), p.decider(id(4))), (id(2), id(4)));
        p.peer_down(now, id(2));
        assert_eq!((p.decider(id(1)), p.decider(id(2))), (id(3), id(3)));
        p.peer_up(id(1));
        assert_eq!((p.decider(id(1)), p.decider(id(2))), (id(1), id(1)));
        p.peer_up(id(2));
        p.peer_down(now, id(3));
        assert_eq!(p.decider(id(3)), id(3), "a proxy never thinks itself down");
    }

    #[test]
    fn kept_until_settled_or_taken_and_bounded() {
        let (o1, o2) = (ProxyId::new(1).unwrap(), ProxyId::new(2).unwrap());
        let s = |i| SessionId::new(o2, i);
        let mut d = PendingDecisions::default();
        d.keep(o1, CallId(1), s(1), vec![1]);
        d.keep(o1, CallId(1), s(2), vec![2]);
        d.keep(o2, CallId(2), s(1), vec![3]);
        d.keep(o1, CallId(1), s(1), vec![4]);
        assert_eq!(d.len(), 3);
        d.settled(CallId(2), None);
        assert_eq!(d.len(), 2);
        assert_eq!(d.take_owner(o1), vec![(s(2), vec![2]), (s(1), vec![4])]);
        assert_eq!(d.len(), 0);
        for i in 0..MAX_PENDING_DECISIONS as u64 + 5 {
            d.keep(o1, CallId(i), s(1), vec![]);
        }
        assert_eq!(d.len(), MAX_PENDING_DECISIONS);
        assert_eq!(d.forgotten, 5);
        assert_eq!(d.order.len(), MAX_PENDING_DECISIONS);
    }
}
