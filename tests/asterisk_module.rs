//! res_anytun.so in a real Asterisk 22 (issue 9, tests 1 and 4): two PBXs
//! (alice's and bob's) as anytun clients of an `anytund` on loopback.
//! `Dial(ANYTUN/bob)` with a known tone and DTMF each way, checked in the
//! recordings; many calls at once; unload and reload with calls up; a bad
//! config refused without harm.
//!
//! Needs root and the Debian sid chroot (built here when missing, by
//! scripts/asterisk-chroot.sh): without them these tests fail, saying so.

mod asterisk_lab;

use anytun::audio::read_wav;
use asterisk_lab::tones::{analyse, tone_and_digits};
use asterisk_lab::{cpu_seconds, serial, wait_until, wav_bytes, Net, Pbx};
use std::time::{Duration, Instant};

const ALICE_TONE: f64 = 1000.0;
const BOB_TONE: f64 = 440.0;

/// Alice's PBX: `channel originate ANYTUN/bob extension s@tx` runs `tx` on
/// the ANYTUN channel once bob answers: record what comes back, play a tone
/// with in-band digits, send DTMF, read bob's DTMF.
fn alice_extensions(inner: &str) -> String {
    format!(
        "[general]\n\
         [from-anytun]\n\
         [tx]\n\
         exten => s,1,MixMonitor({inner}/spool/a-mix.wav,r({inner}/spool/a-rx.wav))\n \
         same => n,Wait(0.3)\n \
         same => n,Playback({inner}/etc/tone-a)\n \
         same => n,SendDTMF(4821,120)\n \
         same => n,Read(DIG,,4,,,10)\n \
         same => n,Set(FILE({inner}/spool/a-digits.txt)=${{DIG}})\n \
         same => n,Hangup()\n\
         [load]\n\
         exten => s,1,Playback({inner}/etc/long)\n \
         same => n,Hangup()\n"
    )
}

/// Bob's PBX: incoming calls to the name bob start at extension bob of
/// from-anytun.
fn bob_extensions(inner: &str) -> String {
    format!(
        "[general]\n\
         [from-anytun]\n\
         exten => bob,1,Answer()\n \
         same => n,Set(FILE({inner}/spool/b-caller.txt)=${{CALLERID(num)}}|${{CALLERID(name)}}|${{EXTEN}}|${{CHANNEL(audionativeformat)}})\n \
         same => n,MixMonitor({inner}/spool/b-mix.wav,r({inner}/spool/b-rx.wav))\n \
         same => n,Read(DIG,,4,,,10)\n \
         same => n,Set(FILE({inner}/spool/b-digits.txt)=${{DIG}})\n \
         same => n,Playback({inner}/etc/tone-b)\n \
         same => n,SendDTMF(7306,120)\n \
         same => n,Wait(5)\n \
         same => n,Hangup()\n\
         exten => echo,1,Answer()\n \
         same => n,Echo()\n"
    )
}

struct Pair {
    net: Net,
    a: Pbx,
    b: Pbx,
    _conf: (tempfile::TempDir, tempfile::TempDir),
}

/// anytund, and alice's and bob's PBXs registered (both sessions up).
fn pair(codecs: &str) -> Pair {
    let net = Net::start(&[("alice.key", "alice"), ("bob.key", "bob"), ("bob.key", "echo")]);
    let (ia, ib) = (Pbx::inner_dir("a"), Pbx::inner_dir("b"));
    let extra = format!("codecs = {codecs}\n");
    let tone_a = wav_bytes(&tone_and_digits(ALICE_TONE, 1.0, "159"));
    let tone_b = wav_bytes(&tone_and_digits(BOB_TONE, 1.0, "2*#"));
    let long: Vec<i16> = tone_and_digits(ALICE_TONE, 8.0, "");
    let ca = net.pbx_conf(
        "alice.key",
        "alice",
        &extra,
        &alice_extensions(&ia),
        &[("tone-a.wav", tone_a), ("long.wav", wav_bytes(&long))],
    );
    let cb = net.pbx_conf(
        "bob.key",
        "bob,echo",
        &extra,
        &bob_extensions(&ib),
        &[("tone-b.wav", tone_b)],
    );
    let a = Pbx::start("a", ca.path());
    let b = Pbx::start("b", cb.path());
    for p in [&a, &b] {
        wait_until(
            &format!("{}: anytun session connected", p.name),
            Duration::from_secs(10),
            || p.rx("anytun show status").contains("Session:          connected"),
        );
    }
    wait_until("bob's names registered", Duration::from_secs(10), || {
        b.rx("anytun show status").contains("Names registered: 2 of")
    });
    Pair {
        net,
        a,
        b,
        _conf: (ca, cb),
    }
}

/// Test 1: alice's PBX dials ANYTUN/bob; tone and DTMF each way, checked in
/// the recordings and by Read().
fn call_both_ways(codecs: &str, expect_codec: &str) {
    let _g = serial();
    let p = pair(codecs);
    let out = p.a.rx("channel originate ANYTUN/bob extension s@tx");
    assert!(!out.contains("rror"), "originate: {out}");
    wait_until("the call to start", Duration::from_secs(10), || {
        p.b.spool("b-caller.txt").exists()
    });
    wait_until("the call to end on both PBXs", Duration::from_secs(40), || {
        p.a.channels() == 0 && p.b.channels() == 0
    });
    let caller = std::fs::read_to_string(p.b.spool("b-caller.txt")).unwrap();
    assert_eq!(caller, format!("alice|alice|bob|{expect_codec}"), "caller id, extension and codec at bob's PBX");
    let read = |f: &str, pbx: &Pbx| std::fs::read_to_string(pbx.spool(f)).unwrap_or_default();
    assert_eq!(read("b-digits.txt", &p.b), "4821", "DTMF alice -> bob (Read at bob's PBX)");
    assert_eq!(read("a-digits.txt", &p.a), "7306", "DTMF bob -> alice (Read at alice's PBX)");
    let heard_by_bob = analyse(&read_wav(&p.b.spool("b-rx.wav")).unwrap());
    let heard_by_alice = analyse(&read_wav(&p.a.spool("a-rx.wav")).unwrap());
    println!("{codecs}: bob heard {heard_by_bob:?}; alice heard {heard_by_alice:?}");
    for (a, tone, digits, who) in [
        (&heard_by_bob, ALICE_TONE, "159", "bob"),
        (&heard_by_alice, BOB_TONE, "2*#", "alice"),
    ] {
        let hz = a.tone_hz.unwrap_or_else(|| panic!("{who} heard no tone: {a:?}"));
        assert!((hz - tone).abs() <= 5.0, "{who} heard {hz} Hz, sent {tone}: {a:?}");
        assert!(a.tone_seconds >= 0.9, "{who} heard the tone for {} s of 1.0: {a:?}", a.tone_seconds);
        assert_eq!(a.digits, digits, "in-band digits {who} heard: {a:?}");
    }
    let log = p.a.log() + &p.b.log();
    assert!(!log.contains("ERROR"), "errors in the PBXs' logs:\n{log}");
    drop(p.net);
}

#[test]
fn dial_anytun_bob_ulaw_tone_and_dtmf_both_ways() {
    call_both_ways("ulaw,alaw", "ulaw");
}

#[test]
fn dial_anytun_bob_slin_tone_and_dtmf_both_ways() {
    // slin is big-endian on the wire and host order in Asterisk: a missing
    // swap turns the tone into noise.
    call_both_ways("slin", "slin");
}

#[test]
fn dial_anytun_bob_alaw_tone_and_dtmf_both_ways() {
    call_both_ways("alaw", "alaw");
}
