//! Scenario steps and checks shared by the test bed's tests: a call set up
//! across proxies, a kill in the middle of it, the frames a side missed,
//! what a client was told.

use super::Bed;
use crate::call::Cause;
use crate::client::Event;
use crate::session::CallId;
use std::ops::Range;
use std::time::Duration;

impl Bed {
    /// How many events of site `who` match `f`.
    pub fn count(&self, who: &str, f: impl Fn(&Event) -> bool) -> usize {
        self.sites[self.idx(who)]
            .events
            .iter()
            .filter(|e| f(e))
            .count()
    }

    /// How many sessions site `who` opened (handshakes it completed).
    pub fn connected(&self, who: &str) -> usize {
        self.count(who, |e| matches!(e, Event::Connected { .. }))
    }

    /// The causes of the call ends site `who` was told of, in order.
    pub fn ended_causes(&self, who: &str) -> Vec<Cause> {
        self.sites[self.idx(who)]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::CallEnded { cause, .. } => Some(*cause),
                _ => None,
            })
            .collect()
    }

    /// Frames `seqs` from `from` that `to` did not hear. Every frame it did
    /// hear must carry `from`'s payload sample for sample (panics if not),
    /// and no frame may be heard twice.
    pub fn missing(&self, from: &str, to: &str, seqs: Range<u32>) -> Vec<u32> {
        let heard = &self.sites[self.idx(to)].heard;
        let mut missing = Vec::new();
        for s in seqs {
            let mut copies = heard.iter().filter(|f| f.seq == s);
            match copies.next() {
                Some(f) => {
                    assert_eq!(f.payload, self.payload(from, s), "frame {s} altered");
                    assert!(copies.next().is_none(), "frame {s} from {from} twice");
                }
                None => missing.push(s),
            }
        }
        missing
    }

    /// Largest time between two frames heard by `who`, in ms.
    pub fn largest_gap_ms(&self, who: &str) -> u128 {
        let h = &self.sites[self.idx(who)].heard;
        h.windows(2)
            .map(|w| (w[1].at - w[0].at).as_millis())
            .max()
            .unwrap_or(0)
    }

    /// Panics unless `caller` and `callee` each made one handshake, the
    /// callee was offered the call once, the caller heard it answered once,
    /// and neither heard it end: no log-in and no set-up was repeated.
    pub fn assert_nothing_repeated(&self, caller: &str, callee: &str) {
        assert_eq!(self.connected(caller), 1, "{caller} made a new handshake");
        assert_eq!(self.connected(callee), 1, "{callee} made a new handshake");
        let offered = self.count(callee, |e| matches!(e, Event::IncomingCall { .. }));
        assert_eq!(offered, 1, "{callee} offered the call {offered} times");
        let answered = self.count(caller, |e| matches!(e, Event::Answered { .. }));
        assert_eq!(answered, 1, "{caller} heard {answered} answers");
        assert_eq!(self.ended_causes(caller), [], "{caller}'s call ended");
        assert_eq!(self.ended_causes(callee), [], "{callee}'s call ended");
    }

    /// Site `from` calls name `to` (ulaw) and the network runs 200 ms.
    pub fn call(&mut self, from: &str, to: &str) -> CallId {
        let a = self.idx(from);
        let now = self.now;
        let codecs = vec!["ulaw".into()];
        let call = self.sites[a]
            .client
            .call(now, super::name(to), None, codecs)
            .unwrap();
        self.run_for(Duration::from_millis(200));
        call
    }

    /// Site `who` answers `call` (ulaw); the network runs 200 ms.
    pub fn answer(&mut self, who: &str, call: CallId) {
        let now = self.now;
        self.site(who).client.answer(now, call, "ulaw").unwrap();
        self.run_for(Duration::from_millis(200));
    }

    /// Site `who` hangs `call` up (normal clearing); the network runs
    /// 200 ms.
    pub fn hangup(&mut self, who: &str, call: CallId) {
        let now = self.now;
        self.site(who)
            .client
            .hangup(now, call, Cause::Normal)
            .unwrap();
        self.run_for(Duration::from_millis(200));
    }

    /// Three proxies, alice on proxy 1 (index 0) and bob on proxy 2
    /// (index 1), bob registered, a call from alice ringing at bob. Panics
    /// unless bob was offered it once and alice heard it ring once.
    pub fn ringing_across(seed: u64) -> (Self, CallId) {
        let mut bed = Self::new(3, &["alice", "bob"], seed);
        bed.connect_all();
        bed.register("bob", "bob");
        let call = bed.call("alice", "bob");
        assert_eq!(
            bed.count("bob", |e| matches!(e, Event::IncomingCall { .. })),
            1
        );
        assert_eq!(
            bed.count("alice", |e| matches!(e, Event::Ringing { .. })),
            1
        );
        (bed, call)
    }

    /// [`Bed::ringing_across`], answered by bob: a call between clients
    /// served by different proxies.
    pub fn call_across(seed: u64) -> (Self, CallId) {
        let (mut bed, call) = Self::ringing_across(seed);
        bed.answer("bob", call);
        assert_eq!(
            bed.count("alice", |e| matches!(e, Event::Answered { .. })),
            1
        );
        (bed, call)
    }

    /// Three proxies; alice on proxy 1 (index 0) calls "bob", registered
    /// from three devices: bob (proxy 2), bobm (proxy 3) and bobt (proxy
    /// 1). bobm's and bobt's keys are allowed the name on one proxy each
    /// (the addition replicates). Panics unless every proxy holds the three
    /// bindings, every device was offered the call once and alice heard it
    /// ring once.
    pub fn forked_across(seed: u64) -> (Self, CallId) {
        let mut bed = Self::new(3, &["alice", "bob", "bobm", "bobt"], seed);
        bed.allow(2, "bobm", "bob");
        bed.allow(0, "bobt", "bob");
        bed.connect_all();
        for d in ["bob", "bobm", "bobt"] {
            bed.register(d, "bob");
            let ok = bed.count(d, |e| matches!(e, Event::Registered { .. }));
            assert_eq!(ok, 1, "{d} registered");
        }
        bed.run_for(Duration::from_secs(1));
        for p in 0..3 {
            assert_eq!(bed.proxy(p).registration_count(), 3, "proxy {p}");
        }
        let call = bed.call("alice", "bob");
        for d in ["bob", "bobm", "bobt"] {
            let rung = bed.count(d, |e| matches!(e, Event::IncomingCall { .. }));
            assert_eq!(rung, 1, "{d} rung");
        }
        assert_eq!(
            bed.count("alice", |e| matches!(e, Event::Ringing { .. })),
            1
        );
        (bed, call)
    }

    /// alice and bob talk frames 0..100 of `call`; at frame 50 proxy `dead`
    /// (which serves `side`) is killed and `side`'s route cut; at frame
    /// `50 + routing_frames` it reaches proxy index `to`. Runs 100 ms more.
    pub fn talk_through_kill(
        &mut self,
        call: CallId,
        side: &str,
        dead: usize,
        routing_frames: u32,
        to: usize,
    ) {
        self.talk("alice", "bob", call, 0..100, |bed, seq| {
            if seq == 50 {
                bed.kill(dead);
                bed.set_route(side, None);
            }
            if seq == 50 + routing_frames {
                bed.set_route(side, Some(to));
            }
        });
        self.run_for(Duration::from_millis(100));
    }

    /// Proxy `to`'s link layer reports proxy `peer` (indexes) down now: a
    /// false suspicion if `peer` lives (its link timed out, it did not die).
    pub fn report_down(&mut self, to: usize, peer: usize) {
        let peer = crate::session::ProxyId::new(peer as u16 + 1).unwrap();
        self.schedule(Duration::ZERO, super::Packet::PeerDown { to, peer });
    }

    /// Indexes of the live proxies.
    pub fn live(&self) -> Vec<usize> {
        (0..self.proxies.len())
            .filter(|i| self.proxies[*i].is_some())
            .collect()
    }

    /// True if every live proxy holds the same tables, digest for digest.
    pub fn same_digests(&self) -> bool {
        let l = self.live();
        let d = self.digests(l[0]);
        l.iter().all(|i| self.digests(*i) == d)
    }
}
