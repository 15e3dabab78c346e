use super::codec::*;
use super::*;
use crate::proxy::SessionRecord;
use crate::session::{ProxyId, SessionState};
use crate::sync::msg::{caps, Hello, Msg, Push};
use crate::sync::{Entry, Stamp, Version};

const T0: WallMs = 1_800_000_000_000;

fn rep(node: NodeId, peers: &[NodeId]) -> Replicator {
    let mut r = Replicator::new(Config::new(node, [9; 32]), T0);
    for p in peers {
        r.add_peer(*p).unwrap();
        r.peer_connected(T0, *p);
    }
    r
}

/// Delivers every message at once until quiet; returns what each applied.
fn settle(reps: &mut [Replicator], now: WallMs) -> Vec<Vec<Apply>> {
    let mut applied = vec![Vec::new(); reps.len()];
    loop {
        let mut moved = false;
        for i in 0..reps.len() {
            while let Some((to, m)) = reps[i].poll_transmit() {
                moved = true;
                let _ = reps[usize::from(to) - 1].handle_message(now, i as u16 + 1, &m);
            }
        }
        for (i, r) in reps.iter_mut().enumerate() {
            while let Some(a) = r.poll_apply() {
                applied[i].push(a);
            }
        }
        if !moved {
            return applied;
        }
    }
}

fn sid(home: u16, n: u64) -> SessionId {
    SessionId::new(ProxyId::new(home).unwrap(), n)
}

fn record(id: SessionId, serving: u16) -> SessionRecord {
    SessionRecord {
        state: SessionState {
            id,
            client_key: PublicKey([id.raw() as u8; 32]),
            client_to_proxy: [1; 32],
            proxy_to_client: [2; 32],
            client_counter_floor: 77,
            proxy_counter_floors: vec![(ProxyId::new(serving).unwrap(), 5)],
        },
        addr: "[2001:db8::7]:4000".parse().unwrap(),
        local_ip: Some("203.0.113.1".parse().unwrap()),
        serving: ProxyId::new(serving).unwrap(),
        expires_unix_ms: T0 + 60_000,
    }
}

fn nm(s: &str) -> Name {
    Name::new(s).unwrap()
}

#[test]
fn values_round_trip_and_malformed_ones_are_refused() {
    let r = record(sid(1, 5), 1);
    let v = encode_session(&r);
    assert_eq!(decode_session(r.state.id, &v), Some(r.clone()));
    for n in 0..v.len() {
        assert_eq!(decode_session(r.state.id, &v[..n]), None, "prefix {n}");
    }
    assert_eq!(
        decode_session(r.state.id, &[v.clone(), vec![0]].concat()),
        None
    );
    let mut bad = v.clone();
    bad[0] = 2;
    assert_eq!(decode_session(r.state.id, &bad), None);
    let h = CallHead {
        caller: sid(1, 1),
        started_unix_ms: T0,
        callees: vec![sid(2, 2), sid(3, 3)],
        answered: Some((sid(2, 2), T0 + 5)),
        owner: None,
    };
    // Format 1 names no owner; format 2 ends with it (spec 16.2).
    let v1 = encode_call(&h);
    assert_eq!((v1[0], v1.len()), (1, 50));
    assert_eq!(decode_call(&v1), Some(h.clone()));
    let h = CallHead {
        owner: ProxyId::new(3),
        ..h
    };
    let v2 = encode_call(&h);
    assert_eq!((v2[0], &v2[50..]), (2, &[0, 3][..]));
    assert_eq!(decode_call(&v2), Some(h));
    assert_eq!(decode_call(&[&v1[..], &[0, 3]].concat()), None);
    assert_eq!(decode_call(&v2[..51]), None);
    assert_eq!(decode_call(&[&v2[..50], &[0, 0]].concat()), None);
    let reg = encode_registration(&nm("bob"), T0);
    assert_eq!(decode_registration(&reg), Some((nm("bob"), T0)));
    assert_eq!(decode_registration(&reg[..8]), None);
    assert_eq!(decode_leg(&encode_leg(LEG_RINGING)), Some(LEG_RINGING));
    assert_eq!(decode_leg(&[1, 9]), None);
    assert_eq!(decode_handshake(&encode_handshake(&[7; 12])), Some([7; 12]));
    assert_eq!(decode_handshake(&[1; 12]), None);
    let s = encode_subscriber(&nm("alice"), false);
    assert_eq!(decode_subscriber(&s), Some((nm("alice"), false)));
    assert_eq!(decode_subscriber(&[1, 2, b'a']), None);
    let k = registration_key(sid(1, 9), &nm("bob"));
    assert_eq!(
        registration_of_key(&k),
        Some((sid(1, 9), name_hash(&nm("bob"))))
    );
}

/// A registration that reaches a node before its session waits and is
/// applied right after the session's SessionUp (anti-entropy would never
/// send it again).
#[test]
fn a_registration_before_its_session_is_parked_then_applied_after_it() {
    let mut r = rep(2, &[1]);
    while r.poll_transmit().is_some() {}
    let hello = Msg::Hello(Hello {
        node: 1,
        caps: caps::V1,
        scopes: vec![],
    });
    r.handle_message(T0, 1, &hello.encode()).unwrap();
    let s = sid(1, 4);
    let entry = |key: Key, value: Vec<u8>, ms: u64| Entry {
        key,
        owner: 1,
        stamp: Stamp {
            epoch: 0,
            version: Version {
                ms,
                logical: 0,
                node: 1,
            },
        },
        value: Some(value.into()),
    };
    let reg = entry(
        registration_key(s, &nm("bob")),
        encode_registration(&nm("bob"), T0 + 300_000),
        T0 + 2,
    );
    let push = |scope, e| {
        Msg::Push(Push {
            req: None,
            entries: vec![(scope, e)],
        })
        .encode()
    };
    r.handle_message(T0, 1, &push(SCOPE_REGISTRATIONS, reg))
        .unwrap();
    assert_eq!(r.poll_apply(), None, "applied before its session");
    assert_eq!(r.stats().parked, 1);
    let sess = entry(session_key(s), encode_session(&record(s, 1)), T0 + 1);
    r.handle_message(T0, 1, &push(SCOPE_SESSIONS, sess))
        .unwrap();
    assert!(matches!(
        r.poll_apply(),
        Some(Apply::Proxy(ProxyEvent::SessionUp(x))) if x.state.id == s
    ));
    assert_eq!(
        r.poll_apply(),
        Some(Apply::Proxy(ProxyEvent::Registered {
            name: nm("bob"),
            session: s,
            expires_unix_ms: T0 + 300_000
        }))
    );
    assert_eq!(r.poll_apply(), None);
    assert_eq!(r.stats().unparked, 1);
}

/// A call head names its owner (format 2), which the receiver applies; a
/// format-1 head names none, and its writer (the entry's owner) stands in
/// (spec 16.2).
#[test]
fn a_call_heads_owner_is_applied_from_the_value_or_else_its_writer() {
    let mut r = rep(2, &[1]);
    while r.poll_transmit().is_some() {}
    let hello = Msg::Hello(Hello {
        node: 1,
        caps: caps::V1,
        scopes: vec![],
    });
    r.handle_message(T0, 1, &hello.encode()).unwrap();
    let head = |owner| CallHead {
        caller: sid(1, 1),
        started_unix_ms: T0,
        callees: vec![sid(1, 2), sid(3, 3)],
        answered: None,
        owner,
    };
    for (call, owner, applied) in [(5, ProxyId::new(3), 3), (6, None, 1)] {
        let e = Entry {
            key: call_key(CallId(call)),
            owner: 1,
            stamp: Stamp {
                epoch: 0,
                version: Version {
                    ms: T0 + 1,
                    logical: 0,
                    node: 1,
                },
            },
            value: Some(encode_call(&head(owner)).into()),
        };
        let push = Msg::Push(Push {
            req: None,
            entries: vec![(SCOPE_CALLS, e)],
        });
        r.handle_message(T0, 1, &push.encode()).unwrap();
        assert_eq!(
            r.poll_apply(),
            Some(Apply::Proxy(ProxyEvent::CallStarted {
                call: CallId(call),
                caller: sid(1, 1),
                callees: vec![sid(1, 2), sid(3, 3)],
                at_unix_ms: T0,
                owner: ProxyId::new(applied),
            }))
        );
    }
    assert_eq!(r.stats().bad_entries, 0);
}

/// The newest handshake time stamp is a max-register: when a lower stamp
/// wins last-writer-wins (it was written later), the holder of the higher
/// one writes it back, and every node ends with the maximum.
#[test]
fn handshake_stamps_converge_to_the_maximum_whatever_the_write_order() {
    let mut reps = vec![rep(1, &[2]), rep(2, &[1])];
    settle(&mut reps, T0);
    let k = PublicKey([4; 32]);
    let (hi, lo) = (
        [0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    reps[0].on_handshake(T0 + 1, &k, hi);
    reps[1].on_handshake(T0 + 2, &k, lo);
    let applied = settle(&mut reps, T0 + 3);
    for r in &reps {
        let v = r
            .engine()
            .get(SCOPE_HANDSHAKES, &handshake_key(&k))
            .unwrap();
        assert_eq!(decode_handshake(v.value.as_ref().unwrap()), Some(hi));
    }
    assert!(reps[0].stats().rewrites >= 1);
    assert!(applied[1].contains(&Apply::Handshake { key: k, ts: hi }));
    assert_eq!(
        reps[0].engine().digest(SCOPE_HANDSHAKES),
        reps[1].engine().digest(SCOPE_HANDSHAKES)
    );
    // A lower stamp given later changes nothing.
    reps[1].on_handshake(T0 + 9, &k, lo);
    assert_eq!(reps[1].poll_transmit(), None);
}

/// A call ended on one proxy while another answers it (the answer takes
/// the head over at a higher epoch, so it beats the end): the end wins,
/// everywhere.
#[test]
fn an_ended_call_stays_ended_when_a_concurrent_answer_beats_it() {
    let mut reps = vec![rep(1, &[2]), rep(2, &[1])];
    settle(&mut reps, T0);
    let (call, a, b) = (CallId(77), sid(1, 1), sid(2, 2));
    reps[0].on_proxy_event(
        T0 + 1,
        &ProxyEvent::CallStarted {
            call,
            caller: a,
            callees: vec![b],
            at_unix_ms: T0 + 1,
            owner: ProxyId::new(1),
        },
    );
    settle(&mut reps, T0 + 1);
    reps[0].on_proxy_event(
        T0 + 5,
        &ProxyEvent::CallEnded {
            call,
            cause: Cause::Normal,
            at_unix_ms: T0 + 5,
        },
    );
    reps[1].on_proxy_event(
        T0 + 6,
        &ProxyEvent::CallAnswered {
            call,
            caller: a,
            callee: b,
            at_unix_ms: T0 + 6,
        },
    );
    let applied = settle(&mut reps, T0 + 7);
    for r in &reps {
        let e = r.engine().get(SCOPE_CALLS, &call_key(call)).unwrap();
        assert!(e.is_tombstone(), "the call revived at node {}", r.node());
    }
    assert_eq!(
        reps[0].engine().digest(SCOPE_CALLS),
        reps[1].engine().digest(SCOPE_CALLS)
    );
    assert!(applied[1]
        .iter()
        .any(|x| matches!(x, Apply::Proxy(ProxyEvent::CallEnded { call: c, .. }) if *c == call)));
}

/// A session that ends takes its registrations with it (there are no
/// Unregistered events), also those another proxy wrote.
#[test]
fn a_session_down_deletes_its_registrations() {
    let mut reps = vec![rep(1, &[2]), rep(2, &[1])];
    settle(&mut reps, T0);
    let s = sid(1, 3);
    reps[0].on_proxy_event(T0 + 1, &ProxyEvent::SessionUp(record(s, 1)));
    for (i, n) in [(0, "bob"), (1, "bobby")] {
        reps[i].on_proxy_event(
            T0 + 2,
            &ProxyEvent::Registered {
                name: nm(n),
                session: s,
                expires_unix_ms: T0 + 300_000,
            },
        );
        settle(&mut reps, T0 + 2);
    }
    assert_eq!(
        reps[1].engine().table(SCOPE_REGISTRATIONS).unwrap().len(),
        2
    );
    reps[0].on_proxy_event(
        T0 + 3,
        &ProxyEvent::SessionDown {
            id: s,
            cause: Cause::Normal,
        },
    );
    let applied = settle(&mut reps, T0 + 3);
    for r in &reps {
        let t = r.engine().table(SCOPE_REGISTRATIONS).unwrap();
        assert!(t.iter().all(Entry::is_tombstone), "node {}", r.node());
    }
    assert!(applied[1]
        .iter()
        .any(|x| matches!(x, Apply::Proxy(ProxyEvent::SessionDown { id, .. }) if *id == s)));
}

/// `synced` is false on a node that has not yet reconciled with its
/// connected peer, and turns true once it holds the peer's table.
#[test]
fn synced_turns_true_once_the_peers_table_is_pulled() {
    let mut old = rep(1, &[]);
    old.add_peer(2).unwrap();
    for i in 0..50 {
        let s = sid(1, i + 1);
        old.on_proxy_event(T0, &ProxyEvent::SessionUp(record(s, 1)));
    }
    let mut reps = vec![old, rep(2, &[])];
    assert!(!reps[1].synced() || reps[1].engine().peers().next().is_none());
    reps[1].add_peer(1).unwrap();
    assert!(!reps[1].synced(), "synced with no exchange");
    reps[0].peer_connected(T0 + 10, 2);
    reps[1].peer_connected(T0 + 10, 1);
    let mut now = T0 + 10;
    let mut applied = 0;
    while !reps[1].synced() {
        applied += settle(&mut reps, now)[1].len();
        now += 50;
        for r in reps.iter_mut() {
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
            }
        }
        assert!(now < T0 + 30_000, "never synced");
    }
    applied += settle(&mut reps, now)[1].len();
    assert_eq!(applied, 50);
    assert_eq!(
        reps[1].engine().digest(SCOPE_SESSIONS),
        reps[0].engine().digest(SCOPE_SESSIONS)
    );
}
