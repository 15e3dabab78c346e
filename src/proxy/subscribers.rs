//! The proxy's in-memory view of the subscriber store.
//!
//! The core never reads SQLite (that is I/O); the shell loads the store into a
//! [`Subscribers`] snapshot and hands it over whenever the store changes.

use crate::call::Name;
use crate::crypto::PublicKey;
use std::collections::{HashMap, HashSet};

/// Which client keys are authorised, and for which names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscribers {
    by_key: HashMap<PublicKey, Vec<Name>>,
    names: HashSet<Name>,
    /// (name, key) pairs, counted once when the snapshot is built: the
    /// metrics snapshot reads it after every received batch.
    pairs: usize,
}

impl Subscribers {
    /// Builds the snapshot from (name, key) pairs.
    pub fn new(entries: impl IntoIterator<Item = (Name, PublicKey)>) -> Self {
        let mut s = Self::default();
        for (name, key) in entries {
            s.names.insert(name.clone());
            let names = s.by_key.entry(key).or_default();
            if !names.contains(&name) {
                names.push(name);
                names.sort();
                s.pairs += 1;
            }
        }
        s
    }

    /// Whether a client with this key may open a session at all.
    pub fn is_authorized(&self, key: &PublicKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// Whether this key may register or call as `name`.
    pub fn may_use(&self, key: &PublicKey, name: &Name) -> bool {
        self.by_key.get(key).is_some_and(|n| n.contains(name))
    }

    /// The name a key calls as when it names none: its first in sort order.
    pub fn default_name(&self, key: &PublicKey) -> Option<&Name> {
        self.by_key.get(key).and_then(|n| n.first())
    }

    /// Whether any key may use `name` (tells "not registered" from "no such name").
    pub fn has_name(&self, name: &Name) -> bool {
        self.names.contains(name)
    }

    /// Number of (name, key) pairs.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// True when no key is authorised.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_counts_distinct_name_key_pairs() {
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let n = |s: &str| Name::new(s).unwrap();
        let s = Subscribers::new([(n("bob"), a), (n("bob"), a), (n("b2"), a), (n("bob"), b)]);
        assert_eq!(s.len(), 3);
        assert_eq!(Subscribers::default().len(), 0);
    }
}
