//! Asterisk's CPU per call: the same audio (8 s of tone from alice's PBX,
//! echoed by bob's) over N concurrent ANYTUN calls through an `anytund`,
//! and over N PJSIP calls (SIP + RTP) straight between the two PBXs.
//! Prints the figures; asserts only that every call was up and carried
//! audio both ways (issue 9's report figure). Needs root and the chroot.

mod asterisk_lab;

use asterisk_lab::tones::tone_and_digits;
use asterisk_lab::{
    cpu_seconds, free_port, serial, wait_until, wav_bytes, Net, Pbx, PJSIP_MODULES,
};
use std::time::{Duration, Instant};

const CALLS: usize = 30;

fn pjsip_conf(me: u16, peer: &str, peer_port: u16) -> String {
    format!(
        "[transport-udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:{me}\n\n\
         [{peer}]\ntype=endpoint\ncontext=from-anytun\ndisallow=all\nallow=ulaw\naors={peer}\n\
         direct_media=no\nmedia_address=127.0.0.1\nbind_rtp_to_media_address=yes\n\n\
         [{peer}]\ntype=aor\ncontact=sip:{peer}@127.0.0.1:{peer_port}\n\n\
         [{peer}]\ntype=identify\nendpoint={peer}\nmatch=127.0.0.1\n"
    )
}

/// Originates CALLS calls with `dial` on `a`, waits until `b` has them
/// all up and they all end; returns (CPU seconds of a, of b, wall seconds).
fn measure(a: &Pbx, b: &Pbx, dial: &str) -> (f64, f64, f64) {
    let (ca, cb) = (cpu_seconds(a.pid()), cpu_seconds(b.pid()));
    let t = Instant::now();
    for _ in 0..CALLS {
        let out = a.rx(&format!("channel originate {dial} extension s@load"));
        assert!(!out.contains("rror"), "originate {dial}: {out}");
    }
    wait_until(
        &format!("{CALLS} calls up at bob's PBX ({dial})"),
        Duration::from_secs(30),
        || {
            b.rx("core show channels")
                .lines()
                .filter(|l| l.contains("Echo("))
                .count()
                == CALLS
        },
    );
    wait_until("the calls to end", Duration::from_secs(60), || {
        a.channels() == 0 && b.channels() == 0
    });
    (
        cpu_seconds(a.pid()) - ca,
        cpu_seconds(b.pid()) - cb,
        t.elapsed().as_secs_f64(),
    )
}

#[test]
fn cpu_per_call_anytun_beside_pjsip() {
    let _g = serial();
    let net = Net::start(&[("alice.key", "alice"), ("bob.key", "echo")]);
    let (pa, pb) = (free_port(), free_port());
    let inner_a = Pbx::inner_dir("ca");
    let long = wav_bytes(&tone_and_digits(1000.0, 8.0, ""));
    let ext_a = format!(
        "[general]\n[from-anytun]\n[load]\nexten => s,1,Playback({inner_a}/etc/long)\n same => n,Hangup()\n"
    );
    let ext_b = "[general]\n[from-anytun]\nexten => echo,1,Answer()\n same => n,Echo()\n";
    let ca = net.pbx_conf(
        "alice.key",
        "alice",
        "codecs = ulaw\n",
        &ext_a,
        &[
            ("long.wav", long),
            ("pjsip.conf", pjsip_conf(pa, "b", pb).into_bytes()),
            (
                "rtp.conf",
                b"[general]\nrtpstart=20000\nrtpend=24999\n".to_vec(),
            ),
        ],
    );
    let cb = net.pbx_conf(
        "bob.key",
        "echo",
        "codecs = ulaw\n",
        ext_b,
        &[
            ("pjsip.conf", pjsip_conf(pb, "a", pa).into_bytes()),
            (
                "rtp.conf",
                b"[general]\nrtpstart=25000\nrtpend=29999\n".to_vec(),
            ),
        ],
    );
    let a = Pbx::start_with("ca", ca.path(), PJSIP_MODULES);
    let b = Pbx::start_with("cb", cb.path(), PJSIP_MODULES);
    for p in [&a, &b] {
        wait_until("anytun session connected", Duration::from_secs(10), || {
            p.rx("anytun show status")
                .contains("Session:          connected")
        });
    }
    wait_until("echo registered", Duration::from_secs(10), || {
        b.rx("anytun show status")
            .contains("Names registered: 1 of")
    });
    let anytun = measure(&a, &b, "ANYTUN/echo");
    let sip = measure(&a, &b, "PJSIP/echo@b");
    let frames = |p: &Pbx| -> String {
        p.rx("anytun show status")
            .lines()
            .filter(|l| l.contains("Frames"))
            .map(|l| l.trim().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("alice's PBX: {}; bob's PBX: {}", frames(&a), frames(&b));
    for (what, (cpu_a, cpu_b, secs)) in [("ANYTUN", anytun), ("PJSIP", sip)] {
        println!(
            "{what}: {CALLS} calls of 8.2 s in {secs:.1} s: caller's Asterisk {cpu_a:.2} s CPU \
             ({:.2} % of a core per call), callee's (Echo) {cpu_b:.2} s ({:.2} % per call)",
            cpu_a / secs / CALLS as f64 * 100.0,
            cpu_b / secs / CALLS as f64 * 100.0
        );
    }
    let received: u64 = b
        .rx("anytun show status")
        .lines()
        .find_map(|l| l.trim().strip_prefix("Frames received:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(
        received >= CALLS as u64 * 400,
        "ANYTUN calls carried {received} frames"
    );
    drop(net);
}
