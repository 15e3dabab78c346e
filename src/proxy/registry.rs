//! Registrations: which sessions are reachable under which names, until when.

use crate::call::Name;
use crate::session::SessionId;
use std::collections::HashMap;
use std::time::Instant;

/// One device reachable under a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Binding {
    session: SessionId,
    expires: Instant,
}

/// Name to sessions, with expiry. A name registered from several devices
/// has several bindings; a call to it rings them all.
#[derive(Debug, Default)]
pub struct Registry {
    by_name: HashMap<Name, Vec<Binding>>,
}

impl Registry {
    /// Adds or refreshes a binding.
    pub fn register(&mut self, name: Name, session: SessionId, expires: Instant) {
        let bindings = self.by_name.entry(name).or_default();
        match bindings.iter_mut().find(|b| b.session == session) {
            Some(b) => b.expires = expires,
            None => bindings.push(Binding { session, expires }),
        }
    }

    /// Removes one binding.
    pub fn unregister(&mut self, name: &Name, session: SessionId) {
        if let Some(b) = self.by_name.get_mut(name) {
            b.retain(|b| b.session != session);
            if b.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    /// The live sessions registered under `name`.
    pub fn lookup(&self, name: &Name, now: Instant) -> Vec<SessionId> {
        self.by_name.get(name).map_or_else(Vec::new, |b| {
            b.iter()
                .filter(|b| b.expires > now)
                .map(|b| b.session)
                .collect()
        })
    }

    /// Removes every binding of a session.
    pub fn remove_session(&mut self, session: SessionId) {
        self.retain(|_, s| s != session);
    }

    /// Keeps only the bindings for which `keep(name, session)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Name, SessionId) -> bool) {
        self.by_name.retain(|name, b| {
            b.retain(|b| keep(name, b.session));
            !b.is_empty()
        });
    }

    /// Drops expired bindings.
    pub fn sweep(&mut self, now: Instant) {
        self.by_name.retain(|_, b| {
            b.retain(|b| b.expires > now);
            !b.is_empty()
        });
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ProxyId;
    use std::time::Duration;

    #[test]
    fn several_devices_expiry_and_removal() {
        let t = Instant::now();
        let p = ProxyId::new(1).unwrap();
        let (a, b) = (SessionId::new(p, 1), SessionId::new(p, 2));
        let bob = Name::new("bob").unwrap();
        let mut r = Registry::default();
        r.register(bob.clone(), a, t + Duration::from_secs(10));
        r.register(bob.clone(), b, t + Duration::from_secs(20));
        r.register(bob.clone(), a, t + Duration::from_secs(30));
        assert_eq!(r.len(), 2);
        assert_eq!(r.lookup(&bob, t), vec![a, b]);
        assert_eq!(r.lookup(&bob, t + Duration::from_secs(25)), vec![a]);
        r.sweep(t + Duration::from_secs(25));
        assert_eq!(r.len(), 1);
        r.remove_session(a);
        assert!(r.is_empty());
    }
}
