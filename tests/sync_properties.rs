//! Properties of the anypsp sync engine: message encodings round-trip and
//! are canonical; any interleaving of deliveries (reordering, loss,
//! partitions) converges to the last-writer-wins state by (epoch, HLC, node).

use anytun::sync::msg::*;
use anytun::sync::testbed::{Testbed, TEST_FP_KEY};
use anytun::sync::{Config, Entry, Key, NodeId, Scope, Stamp, Version, WriteError};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn key() -> impl Strategy<Value = Key> {
    (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..=64))
        .prop_map(|(k, b)| Key::new(k, &b).unwrap())
}

fn stamp() -> impl Strategy<Value = Stamp> {
    (any::<u32>(), any::<u64>(), any::<u32>(), any::<u16>()).prop_map(
        |(epoch, ms, logical, node)| Stamp {
            epoch,
            version: Version { ms, logical, node },
        },
    )
}

fn entry() -> impl Strategy<Value = (Scope, Entry)> {
    (
        any::<u16>(),
        key(),
        any::<u16>(),
        stamp(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=MAX_VALUE)),
    )
        .prop_map(|(s, key, owner, stamp, v)| {
            (
                Scope(s),
                Entry {
                    key,
                    owner,
                    stamp,
                    value: v.map(Into::into),
                },
            )
        })
}

fn range_fp() -> impl Strategy<Value = RangeFp> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u128>()).prop_map(|(a, b, count, fp)| {
        RangeFp {
            lo: a.min(b),
            hi: a.max(b),
            count,
            fp,
        }
    })
}

/// Ascending, disjoint ranges (what the parser requires) from arbitrary ones.
fn disjoint(mut rs: Vec<RangeFp>) -> Vec<RangeFp> {
    rs.sort_by_key(|r| r.lo);
    let mut out: Vec<RangeFp> = Vec::new();
    for r in rs {
        match out.last() {
            Some(p) if r.lo <= p.hi => {}
            _ => out.push(r),
        }
    }
    out
}

fn message() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u32>(),
            proptest::collection::btree_map(
                any::<u16>(),
                (any::<u64>(), any::<u64>(), any::<u128>()),
                0..8
            )
        )
            .prop_map(|(node, caps, m)| Msg::Hello(Hello {
                node,
                caps,
                scopes: m
                    .into_iter()
                    .map(|(s, (synced_ms, count, fp))| ScopeSummary {
                        scope: Scope(s),
                        synced_ms,
                        count,
                        fp
                    })
                    .collect(),
            })),
        (
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(entry(), 0..6)
        )
            .prop_map(|(req, entries)| Msg::Push(Push { req, entries })),
        (
            any::<u16>(),
            any::<bool>(),
            proptest::collection::vec(range_fp(), 0..20)
        )
            .prop_map(|(s, in_sync, ranges)| Msg::Digest(Digest {
                scope: Scope(s),
                in_sync,
                ranges: disjoint(ranges)
            })),
        (
            any::<u16>(),
            proptest::collection::vec(
                (
                    range_fp(),
                    proptest::collection::vec((key(), stamp()), 0..5)
                ),
                0..6
            )
        )
            .prop_map(|(s, rs)| Msg::RangeItems(RangeItems {
                scope: Scope(s),
                ranges: {
                    let bounds = disjoint(rs.iter().map(|(r, _)| *r).collect());
                    bounds
                        .into_iter()
                        .zip(rs)
                        .map(|(r, (_, ids))| RangeIds {
                            lo: r.lo,
                            hi: r.hi,
                            ids: ids
                                .into_iter()
                                .map(|(key, stamp)| ItemId { key, stamp })
                                .collect(),
                        })
                        .collect()
                },
            })),
        (
            any::<u32>(),
            any::<u16>(),
            proptest::collection::vec(key(), 0..10)
        )
            .prop_map(|(req, s, keys)| Msg::Need(Need {
                req,
                scope: Scope(s),
                keys
            })),
        (any::<u32>(), any::<u16>(), key()).prop_map(|(req, s, key)| Msg::Lookup(Lookup {
            req,
            scope: Scope(s),
            key
        })),
        (
            any::<u32>(),
            any::<u16>(),
            stamp(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_VALUE),
            0u8..3
        )
            .prop_map(
                |(req, owner, stamp, v, which)| Msg::LookupReply(LookupReply {
                    req,
                    status: match which {
                        0 => LookupStatus::Found(Location {
                            owner,
                            stamp,
                            value: v.into()
                        }),
                        1 => LookupStatus::Moved(owner),
                        _ => LookupStatus::NotFound,
                    },
                })
            ),
        (any::<u16>(), any::<u8>()).prop_map(|(s, reason)| Msg::Reset(Reset {
            scope: Scope(s),
            reason
        })),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip_canonically(m in message()) {
        let b = m.encode();
        prop_assert!(b.len() <= MAX_MSG);
        let (back, skipped) = Msg::parse(&b).expect("an encoded message parses");
        prop_assert_eq!(skipped, 0);
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.encode(), b);
    }

    #[test]
    fn unknown_non_critical_fields_are_skipped(m in message(), tag in 0x06u8..0x80, v in proptest::collection::vec(any::<u8>(), 0..20)) {
        let mut b = m.encode();
        // Appended after every known field: a newer peer's extension.
        b.push(tag);
        b.extend_from_slice(&(v.len() as u16).to_be_bytes());
        b.extend_from_slice(&v);
        let (back, skipped) = Msg::parse(&b).expect("skippable");
        prop_assert_eq!(skipped, 1);
        prop_assert_eq!(back, m);
    }

    #[test]
    fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok((m, 0)) = Msg::parse(&b) {
            prop_assert_eq!(m.encode(), b);
        }
    }
}

const S: Scope = Scope(1);
const T0: u64 = 1_700_000_000_000;

/// One operation of a random history.
#[derive(Clone, Debug)]
struct Op {
    node: usize,
    key: u8,
    action: u8,
    advance_ms: u8,
    /// Toggle a partition of this node from the others before the write.
    flip: bool,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0usize..3,
        0u8..6,
        0u8..10,
        0u8..4,
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(node, key, action, advance_ms, flip)| Op {
            node,
            key,
            action,
            advance_ms,
            flip,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any interleaving of deliveries (seeded reordering, loss, partitions
    /// coming and going between writes) ends in the same table everywhere,
    /// and that table is the last-writer-wins state by (epoch, HLC, node)
    /// of every accepted write.
    #[test]
    fn any_interleaving_converges_to_lww(seed in any::<u64>(), jitter in 0u64..20, loss in 0u32..200_000, ops in proptest::collection::vec(op(), 1..80)) {
        let mut tb = Testbed::new(3, seed, T0, |n: NodeId| {
            let mut c = Config::new(n, TEST_FP_KEY);
            c.ae_interval_ms = 500;
            c.tombstone_ttl_ms = 3_600_000;
            c.seed = n as u64 * 31;
            c
        });
        tb.jitter_ms = jitter;
        tb.loss_ppm = loss;
        let mut model: BTreeMap<Key, (Stamp, NodeId, Option<Vec<u8>>)> = BTreeMap::new();
        let mut cut: Option<usize> = None;
        for (i, o) in ops.iter().enumerate() {
            if o.flip {
                match cut.take() {
                    Some(_) => tb.heal(),
                    None => {
                        let others: Vec<usize> = (0..3).filter(|&j| j != o.node).collect();
                        tb.partition(&[&[o.node], &others]);
                        cut = Some(o.node);
                    }
                }
            }
            let k = Key::new(1, &[o.key]).unwrap();
            let now = tb.now;
            let val = (i as u32).to_be_bytes();
            let n = &mut tb.nodes[o.node];
            let r = match o.action {
                0..=5 => n.write(now, S, k.clone(), &val).map(|s| (s, Some(val.to_vec()))),
                6..=7 => n.delete(now, S, k.clone()).map(|s| (s, None)),
                _ => n.take_over(now, S, k.clone(), &val).map(|s| (s, Some(val.to_vec()))),
            };
            match r {
                Ok((stamp, v)) => {
                    let e = model.entry(k).or_insert((stamp, o.node as NodeId + 1, v.clone()));
                    if stamp > e.0 {
                        *e = (stamp, o.node as NodeId + 1, v);
                    }
                }
                Err(WriteError::NotOwner { .. } | WriteError::NotFound) => {}
                Err(e) => panic!("{e}"),
            }
            let t = tb.now + o.advance_ms as u64;
            tb.run_to(t);
        }
        tb.heal();
        let now = tb.now;
        let done = tb.run_until(now + 30_000, |tb| tb.converged(S));
        prop_assert!(done.is_some(), "did not converge: {:?}", tb.digests(S));
        for n in &tb.nodes {
            // A node where nothing was ever written in the scope (every
            // operation a refused delete, say) holds no table: zero entries.
            let len = n.table(S).map_or(0, |t| t.len());
            prop_assert_eq!(len, model.len());
            for (k, (stamp, owner, v)) in &model {
                let e = n.get(S, k).expect("held");
                prop_assert_eq!(e.stamp, *stamp);
                prop_assert_eq!(e.owner, *owner);
                prop_assert_eq!(e.value.as_deref(), v.as_deref());
            }
        }
    }
}
