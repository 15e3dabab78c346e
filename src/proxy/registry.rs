//! Registrations: which sessions are reachable under which names, until when.
//!
//! Everything a client can trigger here costs O(log n) or O(bound): a name
//! holds at most `max_devices_per_name` bindings and a session at most
//! `max_names_per_session` names (both checked by [`Registry::register`]),
//! a per-session index finds a session's names without scanning every name,
//! and an ordered expiry index makes the sweep touch only what expired.
//!
//! Only the proxy that serves a session expires its bindings
//! (docs/anypsp-protocol.md 16.7): a replica of a binding whose session is
//! served elsewhere outlives its expiry on this proxy's clock by
//! [`REPLICA_GRACE`], waiting for the serving proxy's `Unregistered` (or
//! refresh), and then goes silently.

use crate::call::Name;
use crate::session::SessionId;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How long past its expiry (on this proxy's clock) a replicated binding of
/// a session served by another proxy is kept and still rung, waiting for the
/// serving proxy to refresh or remove it. It covers clock skew between
/// proxies and a replication delayed by a partition; past it the binding
/// goes without an event (the serving proxy's own expiry is what
/// replicates).
pub const REPLICA_GRACE: Duration = Duration::from_secs(60);

/// One device reachable under a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Binding {
    session: SessionId,
    /// When it expires, as its serving proxy granted it.
    expires: Instant,
    /// Its key in the expiry index: `expires`, or `expires + REPLICA_GRACE`
    /// once a sweep found it due while another proxy served its session.
    due: Instant,
}

/// What a sweep did with a due binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lapse {
    /// Expired on the proxy serving its session: removed, and that proxy
    /// tells its peers (`Unregistered`).
    Expired(Name, SessionId),
    /// A replica kept past [`REPLICA_GRACE`] that nobody refreshed or
    /// removed: removed here only, silently.
    Dropped(Name, SessionId),
}

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterLimit {
    /// The session already holds its most names.
    NamesPerSession(usize),
    /// The name already has its most devices.
    DevicesPerName(usize),
}

impl std::fmt::Display for RegisterLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterLimit::NamesPerSession(n) => write!(f, "session holds {n} names already"),
            RegisterLimit::DevicesPerName(n) => write!(f, "name has {n} devices already"),
        }
    }
}

/// Name to sessions, with expiry. A name registered from several devices
/// has several bindings; a call to it rings them all.
#[derive(Debug, Default)]
pub struct Registry {
    by_name: HashMap<Name, Vec<Binding>>,
    /// The names each session holds (the reverse of `by_name`).
    by_session: HashMap<SessionId, Vec<Name>>,
    /// Every binding by `due`, so the sweep pops only what is due.
    expiries: BTreeSet<(Instant, SessionId, Name)>,
}

impl Registry {
    /// Adds or refreshes a binding. A refresh always succeeds; a new binding
    /// is refused when the session already holds `max_names` names or the
    /// name already has `max_devices` devices.
    pub fn register(
        &mut self,
        name: Name,
        session: SessionId,
        expires: Instant,
        max_names: usize,
        max_devices: usize,
    ) -> Result<(), RegisterLimit> {
        if let Some(b) = self
            .by_name
            .get_mut(&name)
            .and_then(|b| b.iter_mut().find(|b| b.session == session))
        {
            self.expiries.remove(&(b.due, session, name.clone()));
            b.expires = expires;
            b.due = expires;
            self.expiries.insert((expires, session, name));
            return Ok(());
        }
        let names = self.by_session.get(&session).map_or(0, Vec::len);
        if names >= max_names {
            return Err(RegisterLimit::NamesPerSession(names));
        }
        let devices = self.by_name.get(&name).map_or(0, Vec::len);
        if devices >= max_devices {
            return Err(RegisterLimit::DevicesPerName(devices));
        }
        self.expiries.insert((expires, session, name.clone()));
        self.by_session
            .entry(session)
            .or_default()
            .push(name.clone());
        self.by_name.entry(name).or_default().push(Binding {
            session,
            expires,
            due: expires,
        });
        Ok(())
    }

    /// Removes one binding; true if there was one.
    pub fn unregister(&mut self, name: &Name, session: SessionId) -> bool {
        let had = self.unbind(name, session);
        if let Some(names) = self.by_session.get_mut(&session) {
            names.retain(|n| n != name);
            if names.is_empty() {
                self.by_session.remove(&session);
            }
        }
        had
    }

    /// Removes `session` from `name`'s bindings and the expiry index (not
    /// from `by_session`).
    fn unbind(&mut self, name: &Name, session: SessionId) -> bool {
        let Some(b) = self.by_name.get_mut(name) else {
            return false;
        };
        let i = b.iter().position(|b| b.session == session);
        if let Some(i) = i {
            let gone = b.remove(i);
            self.expiries.remove(&(gone.due, session, name.clone()));
        }
        if b.is_empty() {
            self.by_name.remove(name);
        }
        i.is_some()
    }

    /// The live sessions registered under `name`, oldest registration first:
    /// those not expired, and those whose session `served_here` says another
    /// proxy serves, up to [`REPLICA_GRACE`] past their expiry.
    pub fn lookup(
        &self,
        name: &Name,
        now: Instant,
        served_here: impl Fn(SessionId) -> bool,
    ) -> Vec<SessionId> {
        self.by_name.get(name).map_or_else(Vec::new, |b| {
            b.iter()
                .filter(|b| {
                    b.expires > now || (b.expires + REPLICA_GRACE > now && !served_here(b.session))
                })
                .map(|b| b.session)
                .collect()
        })
    }

    /// The names `session` is bound to, with their expiry.
    pub fn bindings_of(&self, session: SessionId) -> Vec<(Name, Instant)> {
        let names = self.by_session.get(&session).map_or(&[][..], Vec::as_slice);
        names
            .iter()
            .filter_map(|n| {
                let b = self.by_name.get(n)?.iter().find(|b| b.session == session)?;
                Some((n.clone(), b.expires))
            })
            .collect()
    }

    /// Removes every binding of a session.
    pub fn remove_session(&mut self, session: SessionId) {
        for name in self.by_session.remove(&session).unwrap_or_default() {
            self.unbind(&name, session);
        }
    }

    /// Keeps only the bindings for which `keep(name, session)` holds. Scans
    /// everything: for operator actions (a new subscriber snapshot), never
    /// for what a client sends.
    /// Returns the bindings removed.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&Name, SessionId) -> bool,
    ) -> Vec<(Name, SessionId)> {
        let mut gone = Vec::new();
        for (name, bindings) in &self.by_name {
            for b in bindings {
                if !keep(name, b.session) {
                    gone.push((name.clone(), b.session));
                }
            }
        }
        for (name, session) in &gone {
            self.unregister(name, *session);
        }
        gone
    }

    /// Handles the bindings due at `now`, O(log n) each: one whose session
    /// `served_here` is removed ([`Lapse::Expired`]); a replica (its
    /// session served by another proxy) is kept until [`REPLICA_GRACE`]
    /// past its expiry, then removed ([`Lapse::Dropped`]).
    pub fn sweep(&mut self, now: Instant, served_here: impl Fn(SessionId) -> bool) -> Vec<Lapse> {
        let mut gone = Vec::new();
        let mut kept = Vec::new();
        while let Some(first) = self.expiries.first() {
            if first.0 > now {
                break;
            }
            let (_, session, name) = self.expiries.pop_first().expect("not empty");
            if served_here(session) {
                self.unregister(&name, session);
                gone.push(Lapse::Expired(name, session));
                continue;
            }
            let b = self
                .by_name
                .get_mut(&name)
                .and_then(|b| b.iter_mut().find(|b| b.session == session))
                .expect("indexed binding exists");
            let until = b.expires + REPLICA_GRACE;
            if until > now {
                b.due = until;
                kept.push((until, session, name));
            } else {
                // The index entry is gone already; unbind finds none.
                self.unregister(&name, session);
                gone.push(Lapse::Dropped(name, session));
            }
        }
        self.expiries.extend(kept);
        gone
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.expiries.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.expiries.is_empty()
    }

    /// Entries of the expiry index and of the per-session index (for checks
    /// that the indexes stay in step with the bindings).
    pub(crate) fn index_sizes(&self) -> (usize, usize) {
        let names = self.by_session.values().map(Vec::len).sum();
        (self.expiries.len(), names)
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
        let secs = |s| t + Duration::from_secs(s);
        r.register(bob.clone(), a, secs(10), 8, 8).unwrap();
        r.register(bob.clone(), b, secs(20), 8, 8).unwrap();
        r.register(bob.clone(), a, secs(30), 8, 8).unwrap();
        assert_eq!(r.len(), 2);
        let here = |_: SessionId| true;
        assert_eq!(r.lookup(&bob, t, here), vec![a, b]);
        assert_eq!(r.lookup(&bob, secs(25), here), vec![a]);
        assert_eq!(
            r.sweep(secs(25), here),
            vec![Lapse::Expired(bob.clone(), b)]
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r.index_sizes(), (1, 1));
        r.remove_session(a);
        assert!(r.is_empty());
        assert_eq!(r.index_sizes(), (0, 0));
    }

    /// A binding whose session another proxy serves is not expired here:
    /// kept (and rung) until REPLICA_GRACE past its expiry, then dropped
    /// silently; a refresh re-arms it.
    #[test]
    fn replicas_outlive_their_expiry_by_the_grace_only() {
        let t = Instant::now();
        let p = ProxyId::new(1).unwrap();
        let (mine, theirs) = (SessionId::new(p, 1), SessionId::new(p, 2));
        let bob = Name::new("bob").unwrap();
        let served_here = move |s: SessionId| s == mine;
        let secs = |s| t + Duration::from_secs(s);
        let mut r = Registry::default();
        r.register(bob.clone(), mine, secs(10), 8, 8).unwrap();
        r.register(bob.clone(), theirs, secs(10), 8, 8).unwrap();
        assert_eq!(
            r.sweep(secs(10), served_here),
            vec![Lapse::Expired(bob.clone(), mine)]
        );
        assert_eq!(r.lookup(&bob, secs(11), served_here), vec![theirs]);
        let g = REPLICA_GRACE.as_secs();
        assert!(r.sweep(secs(9 + g), served_here).is_empty());
        // Refreshed by its serving proxy: armed at the new expiry.
        r.register(bob.clone(), theirs, secs(20), 8, 8).unwrap();
        assert!(r.sweep(secs(10 + g), served_here).is_empty());
        assert_eq!(r.index_sizes(), (1, 1));
        assert!(r.sweep(secs(20), served_here).is_empty());
        assert_eq!(r.lookup(&bob, secs(19 + g), served_here), vec![theirs]);
        assert!(r.lookup(&bob, secs(20 + g), served_here).is_empty());
        assert_eq!(
            r.sweep(secs(20 + g), served_here),
            vec![Lapse::Dropped(bob.clone(), theirs)]
        );
        assert!(r.is_empty());
        assert_eq!(r.index_sizes(), (0, 0));
    }

    #[test]
    fn bounds_per_session_and_per_name() {
        let t = Instant::now() + Duration::from_secs(60);
        let p = ProxyId::new(1).unwrap();
        let s = |i| SessionId::new(p, i);
        let n = |i: u32| Name::new(&format!("n{i}")).unwrap();
        let mut r = Registry::default();
        for i in 0..2 {
            r.register(n(i), s(1), t, 2, 2).unwrap();
        }
        assert_eq!(
            r.register(n(2), s(1), t, 2, 2),
            Err(RegisterLimit::NamesPerSession(2))
        );
        // A refresh is not a new name.
        r.register(n(0), s(1), t, 2, 2).unwrap();
        r.register(n(0), s(2), t, 2, 2).unwrap();
        assert_eq!(
            r.register(n(0), s(3), t, 2, 2),
            Err(RegisterLimit::DevicesPerName(2))
        );
        r.unregister(&n(0), s(2));
        r.register(n(0), s(3), t, 2, 2).unwrap();
        assert_eq!(r.len(), 3);
        r.retain(|_, sid| sid != s(1));
        assert_eq!(r.len(), 1);
        assert_eq!(r.index_sizes(), (1, 1));
    }
}
