//! Test 1's call, shared by the client-mode and proxy-mode tests: alice's
//! PBX originates ANYTUN/bob into [tx]; bob's PBX answers at extension bob
//! of [from-anytun]; each plays a tone with in-band digits and sends DTMF;
//! `check_call` reads the recordings and the digits.

use super::tones::{analyse, tone_and_digits};
use super::{wait_until, wav_bytes, Pbx};
use anytun::audio::read_wav;
use std::time::Duration;

pub const ALICE_TONE: f64 = 1000.0;
pub const BOB_TONE: f64 = 440.0;

/// Alice's PBX: `channel originate ANYTUN/bob extension s@tx` runs `tx` on
/// the ANYTUN channel once bob answers: record what comes back, play a tone
/// with in-band digits, send DTMF, read bob's DTMF.
pub fn alice_extensions(inner: &str) -> String {
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
         [tx-cli]\n\
         exten => s,1,MixMonitor({inner}/spool/a-mix.wav,r({inner}/spool/a-rx.wav))\n \
         same => n,Wait(0.3)\n \
         same => n,Playback({inner}/etc/tone-a)\n \
         same => n,SendDTMF(4821,120)\n \
         same => n,Wait(2)\n \
         same => n,Hangup()\n\
         [load]\n\
         exten => s,1,Playback({inner}/etc/long)\n \
         same => n,Hangup()\n"
    )
}

/// Bob's PBX: incoming calls to the name bob start at extension bob of
/// from-anytun.
pub fn bob_extensions(inner: &str) -> String {
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

/// tone-a.wav (alice's tone with in-band 159) and tone-b.wav (bob's, 2*#)
/// for the PBXs' configuration directories.
pub fn tone_files() -> (Vec<u8>, Vec<u8>) {
    (
        wav_bytes(&tone_and_digits(ALICE_TONE, 1.0, "159")),
        wav_bytes(&tone_and_digits(BOB_TONE, 1.0, "2*#")),
    )
}

/// Places test 1's call: alice's PBX (`a`) originates ANYTUN/bob into
/// [tx]; returns once it started at bob's PBX (`b`, within 10 s) and ended
/// on both (within 40 s). `what` names it in failures ("the call").
pub fn place_call(a: &Pbx, b: &Pbx, what: &str) {
    let out = a.rx("channel originate ANYTUN/bob extension s@tx");
    assert!(!out.contains("rror"), "originate: {out}");
    wait_until(&format!("{what} to start"), Duration::from_secs(10), || {
        b.spool("b-caller.txt").exists()
    });
    wait_until(
        &format!("{what} to end on both PBXs"),
        Duration::from_secs(40),
        || a.channels() == 0 && b.channels() == 0,
    );
}

/// After the call has ended on both PBXs: caller id and codec at bob's
/// PBX, DTMF read each way, tone and in-band digits in each recording.
pub fn check_call(a: &Pbx, b: &Pbx, codecs: &str, expect_codec: &str) {
    let caller = std::fs::read_to_string(b.spool("b-caller.txt")).unwrap();
    assert_eq!(
        caller,
        format!("alice|alice|bob|({expect_codec})"),
        "caller id, extension and codec at bob's PBX"
    );
    let read = |f: &str, pbx: &Pbx| std::fs::read_to_string(pbx.spool(f)).unwrap_or_default();
    assert_eq!(
        read("b-digits.txt", b),
        "4821",
        "DTMF alice -> bob (Read at bob's PBX)"
    );
    assert_eq!(
        read("a-digits.txt", a),
        "7306",
        "DTMF bob -> alice (Read at alice's PBX)"
    );
    let heard_by_bob = analyse(&read_wav(&b.spool("b-rx.wav")).unwrap());
    let heard_by_alice = analyse(&read_wav(&a.spool("a-rx.wav")).unwrap());
    println!("{codecs}: bob heard {heard_by_bob:?}; alice heard {heard_by_alice:?}");
    for (a, tone, digits, who) in [
        (&heard_by_bob, ALICE_TONE, "159", "bob"),
        (&heard_by_alice, BOB_TONE, "2*#", "alice"),
    ] {
        let hz = a
            .tone_hz
            .unwrap_or_else(|| panic!("{who} heard no tone: {a:?}"));
        assert!(
            (hz - tone).abs() <= 5.0,
            "{who} heard {hz} Hz, sent {tone}: {a:?}"
        );
        assert!(
            a.tone_seconds >= 0.9,
            "{who} heard the tone for {} s of 1.0: {a:?}",
            a.tone_seconds
        );
        assert_eq!(a.digits, digits, "in-band digits {who} heard: {a:?}");
        assert!(
            a.seconds >= 2.0,
            "{who}'s recording is {} s long",
            a.seconds
        );
    }
}
