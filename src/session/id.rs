//! Identifiers that must be unique across every proxy of a network.

use std::fmt;

/// The id of one proxy in a network (also its sender id on the wire).
///
/// Every proxy has its own, so two proxies that send for one session never use
/// the same nonce. 0 is the client's sender id and 0xFFFF is reserved, so valid
/// proxy ids are 1..=0xFFFE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyId(u16);

impl ProxyId {
    /// Makes a proxy id; `None` for the reserved values 0 and 0xFFFF.
    pub fn new(id: u16) -> Option<Self> {
        (id != 0 && id != 0xFFFF).then_some(Self(id))
    }

    /// The raw value.
    pub fn get(self) -> u16 {
        self.0
    }

    /// This proxy's sender id on the wire.
    pub fn sender(self) -> SenderId {
        SenderId(self.0)
    }
}

impl fmt::Display for ProxyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who sealed a transport packet: the client (0) or a proxy (its [`ProxyId`]).
///
/// It is part of the AEAD nonce, which is what keeps (key, nonce) pairs unique
/// when several proxies send on one session with their own counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SenderId(pub u16);

impl SenderId {
    /// The sender id every client uses.
    pub const CLIENT: SenderId = SenderId(0);

    /// The proxy this sender id names, if it is one.
    pub fn proxy(self) -> Option<ProxyId> {
        ProxyId::new(self.0)
    }
}

/// A session id: 16 bits of the home proxy's id, 48 random bits.
///
/// Carrying the home proxy lets any other proxy that lacks the session know
/// where it lives; the random part keeps ids unguessable and, with the proxy
/// id prefix, unique across the network without coordination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// Builds a session id from its home proxy and 48 random bits.
    pub fn new(home: ProxyId, random48: u64) -> Self {
        Self((u64::from(home.get()) << 48) | (random48 & 0xFFFF_FFFF_FFFF))
    }

    /// Interprets a raw id from the wire; `None` if its home part is not a
    /// valid proxy id.
    pub fn from_raw(raw: u64) -> Option<Self> {
        ProxyId::new((raw >> 48) as u16).map(|_| Self(raw))
    }

    /// The raw 64-bit value.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The proxy that made this session.
    pub fn home(self) -> ProxyId {
        ProxyId((self.0 >> 48) as u16)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A call id, chosen at random by the calling client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_proxy_ids_refused() {
        assert!(ProxyId::new(0).is_none());
        assert!(ProxyId::new(0xFFFF).is_none());
        assert_eq!(ProxyId::new(7).unwrap().sender(), SenderId(7));
        assert!(SenderId::CLIENT.proxy().is_none());
    }

    #[test]
    fn session_id_names_its_home() {
        let home = ProxyId::new(0x1234).unwrap();
        let id = SessionId::new(home, u64::MAX);
        assert_eq!(id.home(), home);
        assert_eq!(id.raw(), 0x1234_FFFF_FFFF_FFFF);
        assert_eq!(SessionId::from_raw(id.raw()), Some(id));
        assert_eq!(SessionId::from_raw(0x0000_0000_0000_0001), None);
    }
}
