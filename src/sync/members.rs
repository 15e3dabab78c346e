//! Membership of an anypsp network: who the peers are, where they listen,
//! which static key each holds, and who is revoked.
//!
//! Every proxy is a node, named by its [`ProxyId`] (its sender id,
//! 1..=65534), and holds a static X25519 key pair used only for peer links
//! (separate from the network key that clients know). A peer link is
//! accepted only from a configured, unrevoked node whose static key matches
//! the node id it claims (docs/anypsp-link.md, section 3).
//!
//! Besides address and key, a membership record carries the region, the
//! failure domain and the failover set of the node, so that any proxy can
//! compute where copies of an entry live once replication is scoped
//! (anypsp-scale notes, point 4). Version 1 replicates to every peer and
//! only carries these fields.

use crate::crypto::PublicKey;
use crate::session::ProxyId;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

/// One node's membership record as written in a configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Node id (the proxy's sender id), 1..=65534.
    pub node: u16,
    /// Unicast TCP address of its peer-link listener.
    pub address: SocketAddr,
    /// Its static public key for peer links, base64.
    pub public_key: String,
    /// Region name (free text; equal strings mean the same region).
    #[serde(default)]
    pub region: String,
    /// Failure domain (rack, site, provider: whatever fails together).
    #[serde(default)]
    pub failure_domain: String,
    /// The nodes that this node's clients would most likely fail over to,
    /// most likely first.
    #[serde(default)]
    pub failover: Vec<u16>,
    /// A revoked node is refused (its record stays so that the refusal is
    /// counted as `revoked`, not `unknown_peer`).
    #[serde(default)]
    pub revoked: bool,
}

/// The membership section of a configuration: this node and its peers.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MembershipConfig {
    /// This node's own record (its `public_key` must match the private key
    /// it is started with; see [`Membership::check_local_key`]).
    pub local: MemberConfig,
    /// Every peer.
    #[serde(default)]
    pub peers: Vec<MemberConfig>,
    /// Static keys that are refused whatever node id presents them (base64),
    /// so that a stolen key stays refused even if re-added under another id.
    #[serde(default)]
    pub revoked_keys: Vec<String>,
}

/// A validated membership record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub node: ProxyId,
    /// Unicast TCP address of its peer-link listener.
    pub address: SocketAddr,
    /// Static public key for peer links.
    pub public_key: PublicKey,
    /// Region.
    pub region: String,
    /// Failure domain.
    pub failure_domain: String,
    /// Failover set, most likely first.
    pub failover: Vec<ProxyId>,
    /// Whether it is revoked (by its record or by its key).
    pub revoked: bool,
}

/// Why a membership configuration is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    /// A node id of 0 or 65535.
    #[error("node id {0} is reserved (valid ids are 1..=65534)")]
    BadNodeId(u16),
    /// Two records with one node id (or a peer with the local node's id).
    #[error("node id {0} appears twice")]
    DuplicateNode(u16),
    /// Two nodes with one static key: one could pass for the other.
    #[error("nodes {0} and {1} have the same public key")]
    DuplicateKey(u16, u16),
    /// A key that does not parse.
    #[error("node {node}: public key: {reason}")]
    BadKey {
        /// The node whose key is bad (0 for `revoked_keys`).
        node: u16,
        /// Why (never quotes the key text).
        reason: String,
    },
    /// A failover set names a node that is not a member.
    #[error("node {node}: failover node {target} is not a member")]
    UnknownFailover {
        /// The record.
        node: u16,
        /// The unknown node id it names.
        target: u16,
    },
    /// The local record is revoked.
    #[error("the local node {0} is revoked")]
    LocalRevoked(u16),
    /// The local private key does not match the local record's public key.
    #[error("the private key does not match node {0}'s public key")]
    LocalKeyMismatch(u16),
}

/// Why a node may not hold a peer link to us (a subset of the link's
/// refusal reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a configured peer (or our own id).
    Unknown,
    /// Configured but revoked, or its key is revoked.
    Revoked,
}

/// A validated membership: this node and its peers, looked up by node id
/// in O(log n).
#[derive(Clone, Debug)]
pub struct Membership {
    local: Member,
    peers: BTreeMap<ProxyId, Member>,
}

fn node_id(raw: u16) -> Result<ProxyId, MembershipError> {
    ProxyId::new(raw).ok_or(MembershipError::BadNodeId(raw))
}

fn parse_key(node: u16, text: &str) -> Result<PublicKey, MembershipError> {
    PublicKey::from_base64(text).map_err(|e| MembershipError::BadKey {
        node,
        reason: e.to_string(),
    })
}

impl Member {
    fn from_config(
        c: &MemberConfig,
        revoked_keys: &HashSet<PublicKey>,
    ) -> Result<Self, MembershipError> {
        let public_key = parse_key(c.node, &c.public_key)?;
        Ok(Self {
            node: node_id(c.node)?,
            address: c.address,
            public_key,
            region: c.region.clone(),
            failure_domain: c.failure_domain.clone(),
            failover: c
                .failover
                .iter()
                .map(|&f| node_id(f))
                .collect::<Result<_, _>>()?,
            revoked: c.revoked || revoked_keys.contains(&public_key),
        })
    }
}

impl Membership {
    /// Validates a configuration: node ids valid and unique, keys parse and
    /// are unique, failover sets name members, the local node not revoked.
    pub fn from_config(cfg: &MembershipConfig) -> Result<Self, MembershipError> {
        let revoked_keys = cfg
            .revoked_keys
            .iter()
            .map(|k| parse_key(0, k))
            .collect::<Result<HashSet<_>, _>>()?;
        let local = Member::from_config(&cfg.local, &revoked_keys)?;
        if local.revoked {
            return Err(MembershipError::LocalRevoked(local.node.get()));
        }
        let mut peers = BTreeMap::new();
        let mut keys: HashMap<PublicKey, u16> = HashMap::new();
        keys.insert(local.public_key, local.node.get());
        for c in &cfg.peers {
            let m = Member::from_config(c, &revoked_keys)?;
            if m.node == local.node || peers.contains_key(&m.node) {
                return Err(MembershipError::DuplicateNode(c.node));
            }
            if let Some(other) = keys.insert(m.public_key, c.node) {
                return Err(MembershipError::DuplicateKey(other, c.node));
            }
            peers.insert(m.node, m);
        }
        for m in std::iter::once(&local).chain(peers.values()) {
            if let Some(t) = m
                .failover
                .iter()
                .find(|t| **t != local.node && !peers.contains_key(t))
            {
                return Err(MembershipError::UnknownFailover {
                    node: m.node.get(),
                    target: t.get(),
                });
            }
        }
        Ok(Self { local, peers })
    }

    /// Builds a membership from validated records (tests and the
    /// simulator); the same checks as [`from_config`](Self::from_config)
    /// apply except for failover sets.
    pub fn new(
        local: Member,
        peers: impl IntoIterator<Item = Member>,
    ) -> Result<Self, MembershipError> {
        let mut map = BTreeMap::new();
        let mut keys: HashMap<PublicKey, u16> = HashMap::new();
        keys.insert(local.public_key, local.node.get());
        for m in peers {
            if m.node == local.node || map.contains_key(&m.node) {
                return Err(MembershipError::DuplicateNode(m.node.get()));
            }
            if let Some(other) = keys.insert(m.public_key, m.node.get()) {
                return Err(MembershipError::DuplicateKey(other, m.node.get()));
            }
            map.insert(m.node, m);
        }
        Ok(Self { local, peers: map })
    }

    /// Checks that `key` is the private key of the local record.
    pub fn check_local_key(&self, key: &crate::crypto::SecretKey) -> Result<(), MembershipError> {
        if key.public() == self.local.public_key {
            Ok(())
        } else {
            Err(MembershipError::LocalKeyMismatch(self.local.node.get()))
        }
    }

    /// This node's record.
    pub fn local(&self) -> &Member {
        &self.local
    }

    /// Every peer (revoked ones included), by node id.
    pub fn peers(&self) -> impl Iterator<Item = &Member> {
        self.peers.values()
    }

    /// The peers a link should be kept to: configured and not revoked.
    pub fn active_peers(&self) -> impl Iterator<Item = &Member> {
        self.peers.values().filter(|m| !m.revoked)
    }

    /// The record of `node`, if it is a peer (revoked or not).
    pub fn get(&self, node: ProxyId) -> Option<&Member> {
        self.peers.get(&node)
    }

    /// The record of a node that may hold a link to us, or why not.
    pub fn authorize(&self, node: ProxyId) -> Result<&Member, Refusal> {
        match self.peers.get(&node) {
            None => Err(Refusal::Unknown),
            Some(m) if m.revoked => Err(Refusal::Revoked),
            Some(m) => Ok(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn rec(node: u16, key: &PublicKey) -> MemberConfig {
        MemberConfig {
            node,
            address: format!("127.0.0.1:{}", 7000 + node % 1000).parse().unwrap(),
            public_key: key.to_base64(),
            region: "eu".into(),
            failure_domain: format!("rack{node}"),
            failover: vec![],
            revoked: false,
        }
    }

    #[test]
    fn parses_toml_and_authorizes() {
        let keys: Vec<_> = (0..4).map(|_| SecretKey::generate().public()).collect();
        let text = format!(
            r#"
            revoked_keys = ["{k3}"]
            [local]
            node = 1
            address = "127.0.0.1:7001"
            public_key = "{k0}"
            region = "eu-west"
            failure_domain = "par1"
            failover = [2]
            [[peers]]
            node = 2
            address = "127.0.0.1:7002"
            public_key = "{k1}"
            [[peers]]
            node = 3
            address = "127.0.0.1:7003"
            public_key = "{k2}"
            revoked = true
            [[peers]]
            node = 4
            address = "127.0.0.1:7004"
            public_key = "{k3}"
            "#,
            k0 = keys[0],
            k1 = keys[1],
            k2 = keys[2],
            k3 = keys[3]
        );
        let cfg: MembershipConfig = toml::from_str(&text).unwrap();
        let m = Membership::from_config(&cfg).unwrap();
        assert_eq!(m.local().region, "eu-west");
        assert_eq!(m.local().failover, vec![ProxyId::new(2).unwrap()]);
        let id = |n| ProxyId::new(n).unwrap();
        assert_eq!(m.authorize(id(2)).unwrap().public_key, keys[1]);
        assert_eq!(m.authorize(id(3)), Err(Refusal::Revoked));
        assert_eq!(m.authorize(id(4)), Err(Refusal::Revoked), "revoked by key");
        assert_eq!(m.authorize(id(5)), Err(Refusal::Unknown));
        assert_eq!(m.authorize(id(1)), Err(Refusal::Unknown), "own id");
        let active: Vec<_> = m.active_peers().map(|p| p.node.get()).collect();
        assert_eq!(active, vec![2]);
    }

    #[test]
    fn invalid_configs_are_refused_with_reasons() {
        let k: Vec<_> = (0..3).map(|_| SecretKey::generate().public()).collect();
        let base = MembershipConfig {
            local: rec(1, &k[0]),
            peers: vec![rec(2, &k[1])],
            revoked_keys: vec![],
        };
        assert!(Membership::from_config(&base).is_ok());
        let mut c = base.clone();
        c.peers.push(rec(2, &k[2]));
        assert_eq!(
            Membership::from_config(&c).unwrap_err(),
            MembershipError::DuplicateNode(2)
        );
        let mut c = base.clone();
        c.peers.push(rec(1, &k[2]));
        assert_eq!(
            Membership::from_config(&c).unwrap_err(),
            MembershipError::DuplicateNode(1)
        );
        let mut c = base.clone();
        c.peers.push(rec(3, &k[1]));
        assert_eq!(
            Membership::from_config(&c).unwrap_err(),
            MembershipError::DuplicateKey(2, 3)
        );
        let mut c = base.clone();
        c.peers.push(rec(0xFFFF, &k[2]));
        assert_eq!(
            Membership::from_config(&c).unwrap_err(),
            MembershipError::BadNodeId(0xFFFF)
        );
        let mut c = base.clone();
        c.local.failover = vec![9];
        assert!(matches!(
            Membership::from_config(&c).unwrap_err(),
            MembershipError::UnknownFailover { node: 1, target: 9 }
        ));
        let mut c = base.clone();
        c.revoked_keys = vec![k[0].to_base64()];
        assert_eq!(
            Membership::from_config(&c).unwrap_err(),
            MembershipError::LocalRevoked(1)
        );
        // A private key where a public key belongs: refused, never echoed.
        let s = SecretKey::generate();
        let mut c = base.clone();
        c.peers[0].public_key = s.to_base64();
        let e = Membership::from_config(&c).unwrap_err().to_string();
        assert!(
            e.contains("private key") && !e.contains(&s.to_base64()[10..20]),
            "{e}"
        );
        let m = Membership::from_config(&base).unwrap();
        assert!(m.check_local_key(&SecretKey::generate()).is_err());
    }
}
