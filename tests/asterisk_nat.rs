//! Issue 9, test 1 behind NAT: alice's PBX runs in site A of the anycast
//! lab and bob's in site B (each in its site's network namespace, behind
//! its own nftables masquerade), both anytun clients of the anycast address
//! 10.200.0.1. The router sends site A to proxy p1 and site B to p2 (the
//! lab's anytund, with BIRD and anypsp), so the call crosses two proxies.
//! `Dial(ANYTUN/bob)` with a known tone and DTMF each way, checked in the
//! recordings (tests/asterisk_lab/calls.rs). The other codecs run on
//! loopback in tests/asterisk_module.rs.
//!
//! Needs root, the lab's tools and the Debian sid chroot: without them this
//! test fails, saying so.

mod asterisk_lab;

use anytun::lab::{Site, P};
use asterisk_lab::calls::{check_call, place_call};
use asterisk_lab::netlab::NetLab;
use asterisk_lab::{run, serial};
use std::process::Command;
use std::time::Instant;

/// The NAT's connection tracking for anytun's UDP port: the PBX's flow
/// went out through this NAT (its site address inside, rewritten outside).
fn nat_flows(net: &NetLab, site: Site) -> String {
    run(Command::new("ip").args([
        "netns",
        "exec",
        &net.lab.names.nat(site),
        "conntrack",
        "-L",
        "-p",
        "udp",
        "--dport",
        "7475",
    ]))
}

#[test]
fn dial_anytun_bob_from_site_a_to_site_b_through_nat_and_two_proxies() {
    let _g = serial();
    let t0 = Instant::now();
    let net = NetLab::up("atast1");
    net.user("alice");
    net.user("bob");
    net.wait_subscribers(3);
    // Each PBX is at its site's nearest proxy: the call crosses p1 and p2.
    let (mut a, mut b) = net.call_pbxs("n");
    let ready = t0.elapsed();
    for (site, host) in [(Site::A, Site::A.host4()), (Site::B, Site::B.host4())] {
        let flows = nat_flows(&net, site);
        assert!(
            flows.contains(&format!("src={host} dst=10.200.0.1"))
                && flows.contains(&format!("dst={}", site.nat4())),
            "site {site:?}: no NATed flow from the PBX to the anycast address:\n{flows}"
        );
    }

    place_call(&a, &b, "the call");
    check_call(&a, &b, "behind NAT, p1 -> p2", "ulaw");
    for p in [P(1), P(2)] {
        let s = net.lab.proxy_status(p).unwrap();
        println!("{p}: {}", s.summary());
    }
    let log = a.log() + &b.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR[")).collect();
    assert!(errors.is_empty(), "errors:\n{}", errors.join("\n"));
    assert!(a.stop() && b.stop(), "a PBX did not stop by itself");
    println!(
        "test 1 behind NAT: PBXs registered {:.1} s after the start, whole test {:.1} s",
        ready.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
