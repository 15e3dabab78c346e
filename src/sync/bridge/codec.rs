//! Entry kinds of the proxy core: scopes, keys and value layouts
//! (docs/anypsp-protocol.md Section 16). Every value starts with a format
//! byte (1) so a later version can change a layout; a value that does not
//! parse is dropped and counted by the caller, never a panic.

use crate::call::Name;
use crate::crypto::PublicKey;
use crate::proxy::SessionRecord;
use crate::session::{CallId, ProxyId, SessionId, SessionState};
use crate::sync::{Key, Scope};
use blake2::digest::consts::U16;
use blake2::digest::Digest;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Sessions (kind [`kind::SESSION`]): owner = the serving proxy.
pub const SCOPE_SESSIONS: Scope = Scope(1);
/// Registrations (kind [`kind::REGISTRATION`]): owner = the proxy that made
/// or last refreshed the binding.
pub const SCOPE_REGISTRATIONS: Scope = Scope(2);
/// Calls: heads ([`kind::CALL`]) and legs ([`kind::CALL_LEG`]).
pub const SCOPE_CALLS: Scope = Scope(3);
/// Newest handshake time stamp per client key ([`kind::HANDSHAKE`]).
pub const SCOPE_HANDSHAKES: Scope = Scope(4);
/// Subscribers and revocations ([`kind::SUBSCRIBER`]).
pub const SCOPE_SUBSCRIBERS: Scope = Scope(5);
/// Every scope the proxy core uses, in order.
pub const SCOPES: [Scope; 5] = [
    SCOPE_SESSIONS,
    SCOPE_REGISTRATIONS,
    SCOPE_CALLS,
    SCOPE_HANDSHAKES,
    SCOPE_SUBSCRIBERS,
];

/// Entry kinds (the 16-bit kind of a [`Key`]).
pub mod kind {
    /// Key: session id (8, BE). Value: [`super::encode_session`].
    pub const SESSION: u16 = 1;
    /// Key: session id (8) | BLAKE2s-128 of the name (16). Value: format 1
    /// (1) | expiry ms (8) | name (1..=64).
    pub const REGISTRATION: u16 = 2;
    /// Key: call id (8). Value: [`super::CallHead`].
    pub const CALL: u16 = 3;
    /// Key: call id (8) | callee session id (8). Value: format 1 (1) |
    /// state (1: 1 ringing, 2 dropped).
    pub const CALL_LEG: u16 = 4;
    /// Key: client public key (32). Value: format 1 (1) | TAI64N (12).
    pub const HANDSHAKE: u16 = 5;
    /// Key: client public key (32) | BLAKE2s-128 of the name (16). Value:
    /// format 1 (1) | live (1: 1 authorised, 0 revoked) | name (1..=64).
    pub const SUBSCRIBER: u16 = 6;
}

const FMT: u8 = 1;
/// Most proxy counter floors a session value carries (the largest ones).
pub const MAX_FLOORS: usize = 64;
/// Leg state: the device rang.
pub const LEG_RINGING: u8 = 1;
/// Leg state: the device left the offer.
pub const LEG_DROPPED: u8 = 2;

fn key(kind: u16, b: &[u8]) -> Key {
    Key::new(kind, b).expect("every layout is within MAX_KEY")
}

/// BLAKE2s-128 of a name: names are up to 64 bytes, keys too, so a key
/// that pairs a name with something else carries its hash (the name itself
/// is in the value).
pub fn name_hash(n: &Name) -> [u8; 16] {
    let d = blake2::Blake2s::<U16>::digest(n.as_str().as_bytes());
    d.into()
}

/// Key of a session.
pub fn session_key(id: SessionId) -> Key {
    key(kind::SESSION, &id.raw().to_be_bytes())
}

/// Key of a registration.
pub fn registration_key(session: SessionId, name: &Name) -> Key {
    reg_key_hashed(session, &name_hash(name))
}

pub(crate) fn reg_key_hashed(session: SessionId, h: &[u8; 16]) -> Key {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&session.raw().to_be_bytes());
    b[8..].copy_from_slice(h);
    key(kind::REGISTRATION, &b)
}

/// Key of a call head.
pub fn call_key(call: CallId) -> Key {
    key(kind::CALL, &call.0.to_be_bytes())
}

/// Key of a call leg.
pub fn leg_key(call: CallId, callee: SessionId) -> Key {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&call.0.to_be_bytes());
    b[8..].copy_from_slice(&callee.raw().to_be_bytes());
    key(kind::CALL_LEG, &b)
}

/// Key of a client key's newest handshake time stamp.
pub fn handshake_key(k: &PublicKey) -> Key {
    key(kind::HANDSHAKE, &k.0)
}

/// Key of a subscriber (name, key) pair.
pub fn subscriber_key(name: &Name, k: &PublicKey) -> Key {
    let mut b = [0u8; 48];
    b[..32].copy_from_slice(&k.0);
    b[32..].copy_from_slice(&name_hash(name));
    key(kind::SUBSCRIBER, &b)
}

struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn ip(&mut self) -> Option<Option<IpAddr>> {
        Some(match self.u8()? {
            0 => None,
            4 => Some(IpAddr::V4(Ipv4Addr::from(self.arr::<4>()?))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(self.arr::<16>()?))),
            _ => return None,
        })
    }
    fn sid(&mut self) -> Option<SessionId> {
        SessionId::from_raw(self.u64()?)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn put_ip(v: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        None => v.push(0),
        Some(IpAddr::V4(a)) => {
            v.push(4);
            v.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            v.push(6);
            v.extend_from_slice(&a.octets());
        }
    }
}

/// Session value: format 1 (1) | client key (32) | client-to-proxy key (32)
/// | proxy-to-client key (32) | client counter floor (8) | serving proxy
/// (2) | expiry ms (8) | client address: family 4|6 (1), address (4|16),
/// port (2) | local address: family 0|4|6 (1), address (0|4|16) | floor
/// count n (1, at most [`MAX_FLOORS`]) | n x (proxy id (2), next counter
/// (8)). All integers big endian. 127 to 791 bytes.
pub fn encode_session(r: &SessionRecord) -> Vec<u8> {
    let s = &r.state;
    let mut v = Vec::with_capacity(160);
    v.push(FMT);
    v.extend_from_slice(&s.client_key.0);
    v.extend_from_slice(&s.client_to_proxy);
    v.extend_from_slice(&s.proxy_to_client);
    v.extend_from_slice(&s.client_counter_floor.to_be_bytes());
    v.extend_from_slice(&r.serving.get().to_be_bytes());
    v.extend_from_slice(&r.expires_unix_ms.to_be_bytes());
    put_ip(&mut v, Some(r.addr.ip()));
    v.extend_from_slice(&r.addr.port().to_be_bytes());
    put_ip(&mut v, r.local_ip);
    let mut floors = s.proxy_counter_floors.clone();
    if floors.len() > MAX_FLOORS {
        // Informational only (an importer takes a fresh epoch): keep the
        // largest.
        floors.sort_by_key(|f| std::cmp::Reverse(f.1));
        floors.truncate(MAX_FLOORS);
    }
    v.push(floors.len() as u8);
    for (p, c) in floors {
        v.extend_from_slice(&p.get().to_be_bytes());
        v.extend_from_slice(&c.to_be_bytes());
    }
    v
}

/// Parses [`encode_session`]'s layout for session `id`.
pub fn decode_session(id: SessionId, v: &[u8]) -> Option<SessionRecord> {
    let mut r = Rd(v);
    if r.u8()? != FMT {
        return None;
    }
    let client_key = PublicKey(r.arr::<32>()?);
    let client_to_proxy = r.arr::<32>()?;
    let proxy_to_client = r.arr::<32>()?;
    let client_counter_floor = r.u64()?;
    let serving = ProxyId::new(r.u16()?)?;
    let expires_unix_ms = r.u64()?;
    let ip = r.ip()??;
    let port = r.u16()?;
    let local_ip = r.ip()?;
    let n = r.u8()? as usize;
    if n > MAX_FLOORS {
        return None;
    }
    let mut proxy_counter_floors = Vec::with_capacity(n);
    for _ in 0..n {
        proxy_counter_floors.push((ProxyId::new(r.u16()?)?, r.u64()?));
    }
    if !r.done() {
        return None;
    }
    Some(SessionRecord {
        state: SessionState {
            id,
            client_key,
            client_to_proxy,
            proxy_to_client,
            client_counter_floor,
            proxy_counter_floors,
        },
        addr: SocketAddr::new(ip, port),
        local_ip,
        serving,
        expires_unix_ms,
    })
}

/// Session id of a session key.
pub fn session_of_key(k: &Key) -> Option<SessionId> {
    (k.kind == kind::SESSION)
        .then(|| Rd(&k.bytes).sid())
        .flatten()
}

/// (session, name hash) of a registration key.
pub fn registration_of_key(k: &Key) -> Option<(SessionId, [u8; 16])> {
    if k.kind != kind::REGISTRATION || k.bytes.len() != 24 {
        return None;
    }
    let mut r = Rd(&k.bytes);
    Some((r.sid()?, r.arr::<16>()?))
}

/// Registration value.
pub fn encode_registration(name: &Name, expires_unix_ms: u64) -> Vec<u8> {
    let mut v = vec![FMT];
    v.extend_from_slice(&expires_unix_ms.to_be_bytes());
    v.extend_from_slice(name.as_str().as_bytes());
    v
}

/// Parses a registration value: (name, expiry ms).
pub fn decode_registration(v: &[u8]) -> Option<(Name, u64)> {
    let mut r = Rd(v);
    if r.u8()? != FMT {
        return None;
    }
    let exp = r.u64()?;
    let name = Name::new(std::str::from_utf8(r.0).ok()?).ok()?;
    Some((name, exp))
}

/// A call head as replicated: who calls whom, and who answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallHead {
    /// The caller's session.
    pub caller: SessionId,
    /// When the call started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// The devices offered the call (at most 255).
    pub callees: Vec<SessionId>,
    /// The answering device and when (ms), once answered.
    pub answered: Option<(SessionId, u64)>,
    /// The proxy that set the call up, which decides a forked call's
    /// answers and refusals (spec 15.4); `None` in a format-1 value.
    pub owner: Option<ProxyId>,
}

/// Format of a call head that names its owner (spec 16.2).
const FMT_CALL_OWNER: u8 = 2;

/// Call head value: format (1) | caller (8) | started ms (8) | callee
/// count n (1) | n x callee (8) | answered callee (8, 0: none) | answered
/// ms (8), then, in format 2 only, the owner (2). Format 2 when the owner
/// is known, else format 1 (spec 16.2).
pub fn encode_call(h: &CallHead) -> Vec<u8> {
    let n = h.callees.len().min(255);
    let mut v = Vec::with_capacity(36 + 8 * n);
    v.push(if h.owner.is_some() {
        FMT_CALL_OWNER
    } else {
        FMT
    });
    v.extend_from_slice(&h.caller.raw().to_be_bytes());
    v.extend_from_slice(&h.started_unix_ms.to_be_bytes());
    v.push(n as u8);
    for c in &h.callees[..n] {
        v.extend_from_slice(&c.raw().to_be_bytes());
    }
    let (a, at) = h.answered.map_or((0, 0), |(s, t)| (s.raw(), t));
    v.extend_from_slice(&a.to_be_bytes());
    v.extend_from_slice(&at.to_be_bytes());
    if let Some(o) = h.owner {
        v.extend_from_slice(&o.get().to_be_bytes());
    }
    v
}

/// Parses a call head value, format 1 or 2.
pub fn decode_call(v: &[u8]) -> Option<CallHead> {
    let mut r = Rd(v);
    let fmt = r.u8()?;
    if fmt != FMT && fmt != FMT_CALL_OWNER {
        return None;
    }
    let caller = r.sid()?;
    let started_unix_ms = r.u64()?;
    let n = r.u8()? as usize;
    let mut callees = Vec::with_capacity(n);
    for _ in 0..n {
        callees.push(r.sid()?);
    }
    let a = r.u64()?;
    let at = r.u64()?;
    let answered = if a == 0 {
        None
    } else {
        Some((SessionId::from_raw(a)?, at))
    };
    let owner = if fmt == FMT_CALL_OWNER {
        Some(ProxyId::new(r.u16()?)?)
    } else {
        None
    };
    r.done().then_some(CallHead {
        caller,
        started_unix_ms,
        callees,
        answered,
        owner,
    })
}

/// Call id of a call head key.
pub fn call_of_key(k: &Key) -> Option<CallId> {
    (k.kind == kind::CALL && k.bytes.len() == 8).then(|| CallId(Rd(&k.bytes).u64().unwrap_or(0)))
}

/// (call, callee) of a leg key.
pub fn leg_of_key(k: &Key) -> Option<(CallId, SessionId)> {
    if k.kind != kind::CALL_LEG || k.bytes.len() != 16 {
        return None;
    }
    let mut r = Rd(&k.bytes);
    Some((CallId(r.u64()?), r.sid()?))
}

/// Leg value.
pub fn encode_leg(state: u8) -> Vec<u8> {
    vec![FMT, state]
}

/// Parses a leg value: its state.
pub fn decode_leg(v: &[u8]) -> Option<u8> {
    match v {
        [FMT, s @ (LEG_RINGING | LEG_DROPPED)] => Some(*s),
        _ => None,
    }
}

/// Client key of a handshake key.
pub fn handshake_of_key(k: &Key) -> Option<PublicKey> {
    (k.kind == kind::HANDSHAKE)
        .then(|| Rd(&k.bytes).arr::<32>().map(PublicKey))
        .flatten()
}

/// Handshake value.
pub fn encode_handshake(ts: &[u8; 12]) -> Vec<u8> {
    let mut v = vec![FMT];
    v.extend_from_slice(ts);
    v
}

/// Parses a handshake value: the TAI64N stamp (its byte order is its time
/// order).
pub fn decode_handshake(v: &[u8]) -> Option<[u8; 12]> {
    match v {
        [FMT, rest @ ..] => rest.try_into().ok(),
        _ => None,
    }
}

/// Client key of a subscriber key.
pub fn subscriber_of_key(k: &Key) -> Option<PublicKey> {
    if k.kind != kind::SUBSCRIBER || k.bytes.len() != 48 {
        return None;
    }
    Rd(&k.bytes).arr::<32>().map(PublicKey)
}

/// Subscriber value.
pub fn encode_subscriber(name: &Name, live: bool) -> Vec<u8> {
    let mut v = vec![FMT, u8::from(live)];
    v.extend_from_slice(name.as_str().as_bytes());
    v
}

/// Parses a subscriber value: (name, live).
pub fn decode_subscriber(v: &[u8]) -> Option<(Name, bool)> {
    let mut r = Rd(v);
    if r.u8()? != FMT {
        return None;
    }
    let live = match r.u8()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let name = Name::new(std::str::from_utf8(r.0).ok()?).ok()?;
    Some((name, live))
}
