//! res_anytun.so in a real Asterisk 22 (issue 9, tests 1 and 4): two PBXs
//! (alice's and bob's) as anytun clients of an `anytund` on loopback.
//! `Dial(ANYTUN/bob)` with a known tone and DTMF each way, checked in the
//! recordings, in the codecs other than ulaw (ulaw runs behind NAT in the
//! anycast lab: tests/asterisk_nat.rs); many calls at once; unload and
//! reload with calls up; a bad config refused without harm.
//!
//! Needs root and the Debian sid chroot (built here when missing, by
//! scripts/asterisk-chroot.sh): without them these tests fail, saying so.

mod asterisk_lab;

use anytun::audio::read_wav;
use asterisk_lab::calls::{
    alice_extensions, bob_extensions, check_call, place_call, tone_files, ALICE_TONE, BOB_TONE,
};
use asterisk_lab::tones::{analyse, tone_and_digits};
use asterisk_lab::{cpu_seconds, serial, wait_until, wav_bytes, Net, Pbx, ANYTUN};
use std::process::Command;
use std::time::{Duration, Instant};

struct Pair {
    net: Net,
    a: Pbx,
    b: Pbx,
    _conf: (tempfile::TempDir, tempfile::TempDir),
}

/// anytund, and alice's and bob's PBXs registered (both sessions up).
fn pair(codecs: &str) -> Pair {
    let net = Net::start(&[
        ("alice.key", "alice"),
        ("bob.key", "bob"),
        ("bob.key", "echo"),
        ("carol.key", "carol"),
    ]);
    let (ia, ib) = (Pbx::inner_dir("a"), Pbx::inner_dir("b"));
    let extra = format!("codecs = {codecs}\n");
    let (tone_a, tone_b) = tone_files();
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
            || {
                p.rx("anytun show status")
                    .contains("Session:          connected")
            },
        );
    }
    wait_until("bob's names registered", Duration::from_secs(10), || {
        b.rx("anytun show status")
            .contains("Names registered: 2 of")
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
    place_call(&p.a, &p.b, "the call");
    check_call(&p.a, &p.b, codecs, expect_codec);
    assert_no_errors(&p, &[]);
    // `core stop gracefully` runs the module's unload.
    let Pair {
        net, mut a, mut b, ..
    } = p;
    assert!(
        a.stop() && b.stop(),
        "a PBX did not stop by itself:\n{}",
        net.stderr()
    );
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

/// Fails on any ERROR line in either PBX's log but the `expected` ones.
fn assert_no_errors(p: &Pair, expected: &[&str]) {
    let log = p.a.log() + &p.b.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR[") && !expected.iter().any(|e| l.contains(e)))
        .collect();
    assert!(
        errors.is_empty(),
        "errors in the PBXs' logs:\n{}",
        errors.join("\n")
    );
}

/// A number from a line of `anytun show status` ("  Frames sent:  123").
fn status_number(pbx: &Pbx, label: &str) -> u64 {
    let out = pbx.rx("anytun show status");
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{}: no {label:?} in:\n{out}", pbx.name))
}

/// Originates `n` calls from alice's PBX to the name echo at bob's PBX
/// (Echo()), each playing 8 s of tone, and waits until all are up.
/// Returns how long from the first originate until all were up.
fn originate_echo_calls(p: &Pair, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let out = p.a.rx("channel originate ANYTUN/echo extension s@load");
        assert!(!out.contains("rror"), "originate: {out}");
    }
    wait_until(
        &format!("{n} ANYTUN calls up"),
        Duration::from_secs(30),
        || p.a.anytun_calls_up() == n,
    );
    t.elapsed()
}

/// Test 4: 50 concurrent ANYTUN calls through one Asterisk, no frame lost
/// from alice's PBX to bob's; prints Asterisk's CPU per call.
#[test]
fn fifty_concurrent_calls_lose_no_frame() {
    let _g = serial();
    let p = pair("ulaw");
    let cpu0 = cpu_seconds(p.a.pid());
    let t0 = Instant::now();
    let setup = originate_echo_calls(&p, 50);
    assert_eq!(
        p.b.anytun_calls_up(),
        50,
        "bob's PBX: {}",
        p.b.rx("anytun show calls")
    );
    wait_until("the 50 calls to end", Duration::from_secs(60), || {
        p.a.channels() == 0 && p.b.channels() == 0
    });
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(p.a.pid()) - cpu0;
    let a_sent = status_number(&p.a, "Frames sent:");
    let b_received = status_number(&p.b, "Frames received:");
    let b_sent = status_number(&p.b, "Frames sent:");
    let a_received = status_number(&p.a, "Frames received:");
    println!(
        "50 calls: all up in {:.2} s; alice's PBX sent {a_sent} frames, bob's received \
         {b_received}; bob's echoed {b_sent}, alice's received {a_received}; alice's Asterisk \
         used {cpu:.2} s CPU in {secs:.1} s = {:.2} % of a core per call",
        setup.as_secs_f64(),
        cpu / secs / 50.0 * 100.0
    );
    // 8.2 s of tone at 50 frames/s on each of 50 calls.
    assert!(a_sent >= 50 * 400, "alice's PBX sent only {a_sent} frames");
    assert_eq!(b_received, a_sent, "frames lost from alice's PBX to bob's");
    // The echo of the last frames may be in flight when alice hangs up.
    assert!(
        a_received + 50 * 5 >= b_sent && a_received <= b_sent,
        "echo: {a_received} of {b_sent}"
    );
    assert_no_errors(&p, &[]);
}

/// Test 4: 50 unload/load cycles of res_anytun.so with calls up (on
/// alice's PBX, then bob's, alternately); Asterisk keeps running and calls
/// work afterwards.
#[test]
fn fifty_unload_load_cycles_with_calls_up() {
    let _g = serial();
    let p = pair("ulaw");
    let t0 = Instant::now();
    for cycle in 0..50 {
        originate_echo_calls(&p, 2);
        let pbx = if cycle % 2 == 0 { &p.a } else { &p.b };
        let out = pbx.rx("module unload -h res_anytun.so");
        assert!(
            out.contains("Unloaded res_anytun.so"),
            "cycle {cycle}: unload: {out}"
        );
        assert!(
            p.a.running() && p.b.running(),
            "cycle {cycle}: an Asterisk died"
        );
        assert_eq!(
            pbx.channels(),
            0,
            "cycle {cycle}: channels left after unload"
        );
        let out = pbx.rx("module load res_anytun.so");
        assert!(
            out.contains("Loaded res_anytun.so"),
            "cycle {cycle}: load: {out}"
        );
        wait_until(
            &format!("cycle {cycle}: reconnected"),
            Duration::from_secs(10),
            || {
                pbx.rx("anytun show status")
                    .contains("Session:          connected")
            },
        );
        wait_until(
            &format!("cycle {cycle}: calls gone"),
            Duration::from_secs(15),
            || p.a.channels() == 0 && p.b.channels() == 0,
        );
        wait_until(
            &format!("cycle {cycle}: names back"),
            Duration::from_secs(10),
            || {
                p.b.rx("anytun show status")
                    .contains("Names registered: 2 of")
            },
        );
    }
    println!(
        "50 unload/load cycles with 2 calls up: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(p.a.running() && p.b.running());
    originate_echo_calls(&p, 3);
    assert_no_errors(&p, &[]);
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Unload racing new channels: three threads originate ANYTUN calls from
/// alice's PBX in a tight loop while the module is unloaded and loaded
/// again, so that channels are requested (and answered, on bob's side of
/// the echo) at the moment `stopping` is set. Unload must wait for every
/// channel it let bind, so Asterisk stays up and no channel outlives its
/// client.
#[test]
fn unload_load_cycles_while_originating_in_a_tight_loop() {
    let _g = serial();
    let p = pair("ulaw");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let originated = std::sync::atomic::AtomicUsize::new(0);
    let t0 = Instant::now();
    let cycles = 30;
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    p.a.rx("channel originate ANYTUN/echo extension s@load");
                    originated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        // Also on a panic below, so that the scope can end.
        let _stops = StopOnDrop(&stop);
        for cycle in 0..cycles {
            // Calls up, and more being requested, when unload starts.
            wait_until(
                &format!("cycle {cycle}: calls up"),
                Duration::from_secs(20),
                || p.a.anytun_calls_up() >= 2,
            );
            let out = p.a.rx("module unload -h res_anytun.so");
            let up = p.a.running() && p.b.running();
            let loaded = p.a.rx("module load res_anytun.so");
            if !up || !out.contains("Unloaded res_anytun.so") || !loaded.contains("Loaded") {
                panic!(
                    "cycle {cycle}: Asterisks running: {up}; unload: {out}; load: {loaded}\n{}",
                    p.a.log()
                );
            }
            wait_until(
                &format!("cycle {cycle}: reconnected"),
                Duration::from_secs(10),
                || {
                    p.a.rx("anytun show status")
                        .contains("Session:          connected")
                },
            );
        }
    });
    println!(
        "{cycles} unload/load cycles of alice's PBX while {} calls were originated: {:.1} s",
        originated.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    assert!(p.a.running() && p.b.running(), "an Asterisk died");
    wait_until("the calls to end", Duration::from_secs(30), || {
        p.a.rx("module unload -h res_anytun.so")
            .contains("Unloaded res_anytun.so")
            && p.a.rx("module load res_anytun.so").contains("Loaded")
            && p.a.channels() == 0
            && p.b.channels() == 0
    });
    wait_until("reconnected", Duration::from_secs(10), || {
        p.a.rx("anytun show status")
            .contains("Session:          connected")
    });
    originate_echo_calls(&p, 2);
}

/// Test 4: `module reload` with calls up drops none; a connection change
/// waits for them; a broken file is refused and changes nothing.
#[test]
fn reload_with_calls_up_drops_none() {
    let _g = serial();
    let p = pair("ulaw,alaw");
    originate_echo_calls(&p, 5);
    let conf = p.a.dir.join("etc/anytun.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    // A broken file: refused, with the line and the reason.
    std::fs::write(&conf, format!("{good}bogus = 1\n")).unwrap();
    p.a.rx("module reload res_anytun.so");
    wait_until("the refusal in the log", Duration::from_secs(5), || {
        p.a.log().contains("unknown setting 'bogus'")
    });
    assert_eq!(p.a.anytun_calls_up(), 5, "calls after a refused reload");
    // Live settings (codecs) and a connection setting (keepalive).
    std::fs::write(
        &conf,
        good.replace("codecs = ulaw,alaw", "codecs = alaw,ulaw") + "keepalive = 5\n",
    )
    .unwrap();
    let before = status_number(&p.a, "Frames received:");
    p.a.rx("module reload res_anytun.so");
    wait_until("the reload in the log", Duration::from_secs(5), || {
        p.a.log()
            .contains("the new connection settings start once no call is up")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(p.a.anytun_calls_up(), 5, "alice's calls after the reload");
    assert_eq!(p.b.anytun_calls_up(), 5, "bob's calls after alice's reload");
    assert!(
        status_number(&p.a, "Frames received:") > before + 5 * 40,
        "voice stopped flowing after the reload"
    );
    assert!(p
        .a
        .rx("anytun show status")
        .contains("new connection settings, waiting"));
    // Once the calls end, the new session replaces the old one.
    wait_until("the calls to end", Duration::from_secs(30), || {
        p.a.channels() == 0
    });
    wait_until("the new session", Duration::from_secs(10), || {
        p.a.log().contains("new connection settings in use")
            && p.a
                .rx("anytun show status")
                .contains("Session:          connected")
    });
    assert!(p
        .a
        .rx("anytun show status")
        .contains("Codecs:           alaw,ulaw"));
    originate_echo_calls(&p, 1);
    assert_no_errors(&p, &["unknown setting 'bogus'", "reload refused"]);
}

/// res_anytun.so is loaded and running (a module that declined shows as
/// "Not Running").
fn module_running(pbx: &Pbx) -> bool {
    let shown = pbx.rx("module show like res_anytun");
    shown.lines().any(|l| {
        l.starts_with("res_anytun.so") && l.contains(" Running") && !l.contains("Not Running")
    })
}

/// A bad anytun.conf: the module declines to load with a clear error and
/// Asterisk keeps running; fixed, it loads.
#[test]
fn bad_config_refuses_to_load_and_never_crashes() {
    let _g = serial();
    let net = Net::start(&[("alice.key", "alice")]);
    let conf = net.pbx_conf("alice.key", "alice", "", "[general]\n[from-anytun]\n", &[]);
    let good = std::fs::read_to_string(conf.path().join("anytun.conf")).unwrap();
    let cases = [
        (
            good.replace("network_key", ";network_key"),
            "needs key_file (this PBX's anytun key), network_key and proxy",
        ),
        (
            good.replace("register = alice", "register = al ice"),
            "'al ice' is not an anytun name",
        ),
        (
            good.clone() + "max_calls = lots\n",
            "max_calls = 'lots': expected a whole number",
        ),
        (
            good.clone() + "codecs = opus\n",
            "codec 'opus' is not supported",
        ),
        // A value longer than its field is refused, never cut short.
        (
            good.clone() + &format!("context = {}\n", "c".repeat(100)),
            "[general] context is 100 bytes long; the limit is 79 bytes",
        ),
        (
            good.replace("key_file = anytun.key", "key_file = missing.key"),
            "missing.key: No such file",
        ),
        // Proxy mode: the module's own checks, then the library's.
        (
            good.clone() + "[proxy]\nnode_id = 0\nstate_dir = /tmp/p\n",
            "[proxy] node_id '0' is not a number in 1..65534",
        ),
        (
            good.clone() + "[proxy]\nstate_dir = /tmp/p\nlisten_on = 1\n",
            "unknown setting 'listen_on' in [proxy]",
        ),
        (
            good.clone()
                + &format!(
                    "[proxy]\nstate_dir = /tmp/p\nlisten = 127.0.0.1:1,{}\n",
                    "127.0.0.1:2,".repeat(30)
                ),
            "[proxy] listen is 372 bytes long; the limit is 255 bytes",
        ),
        (
            good.clone() + "[proxy]\nnode_id = 3\n",
            "anytun: anytun.conf [proxy]: ",
        ),
        (
            good.clone()
                + "[proxy]\nstate_dir = /tmp/p\nsync_listen = 127.0.0.1:1\n\
                   peer = 7 127.0.0.1:2 not-a-key\n",
            "peers[0]",
        ),
    ];
    std::fs::write(conf.path().join("anytun.conf"), &cases[0].0).unwrap();
    let pbx = Pbx::start("c", conf.path());
    let etc = pbx.dir.join("etc/anytun.conf");
    for (i, (text, why)) in cases.iter().enumerate() {
        std::fs::write(&etc, text).unwrap();
        pbx.rx("module load res_anytun.so");
        wait_until(
            &format!("case {i}: {why:?} in the log"),
            Duration::from_secs(5),
            || pbx.log().contains(why),
        );
        assert!(pbx.running(), "case {i}: Asterisk died");
        assert!(!module_running(&pbx), "case {i}: running anyway");
    }
    // A network key that is not a key: the library refuses it.
    std::fs::write(&etc, good.replace(&net.network, "not-a-key")).unwrap();
    pbx.rx("module load res_anytun.so");
    wait_until("the library's refusal", Duration::from_secs(5), || {
        pbx.log()
            .contains("the anytun client refuses these settings")
    });
    assert!(!module_running(&pbx), "running with a bad network key");
    std::fs::write(&etc, &good).unwrap();
    let out = pbx.rx("module load res_anytun.so");
    assert!(out.contains("Loaded res_anytun.so"), "{out}");
    assert!(module_running(&pbx));
    wait_until("connected", Duration::from_secs(10), || {
        pbx.rx("anytun show status")
            .contains("Session:          connected")
    });
    // The library's own log lines reach Asterisk's logger at their level:
    // a name this key may not register is refused by the proxy.
    std::fs::write(
        &etc,
        good.replace("register = alice", "register = alice,mallory"),
    )
    .unwrap();
    pbx.rx("module reload res_anytun.so");
    wait_until(
        "the library's warning in Asterisk's log",
        Duration::from_secs(10),
        || {
            pbx.log().lines().any(|l| {
                l.contains("WARNING[") && l.contains(": anytun::") && l.contains("mallory")
            })
        },
    );
    drop(net);
}

/// Interoperation with the reference client (`anytun` CLI) in slin, whose
/// byte order on the wire (big-endian) differs from Asterisk's: alice's PBX
/// calls carol (`anytun answer`), and carol (`anytun call`) calls bob's PBX;
/// tone and DTMF checked each way.
#[test]
fn asterisk_and_the_cli_client_slin_both_ways() {
    let _g = serial();
    let p = pair("slin");
    let d = p.net.dir.path();
    let mut carol_play = tone_and_digits(BOB_TONE, 1.0, "2*#");
    carol_play.extend(std::iter::repeat_n(0, 8000 * 5));
    anytun::audio::write_wav(&d.join("carol.wav"), &carol_play).unwrap();
    let client = |args: &[&str]| {
        let mut c = Command::new(ANYTUN);
        c.args(args)
            .args([
                "--key",
                "carol.key",
                "--codecs",
                "slin",
                "--network-key",
                &p.net.network,
            ])
            .args(["--proxy", &format!("127.0.0.1:{}", p.net.port)])
            .current_dir(d);
        c
    };
    // Asterisk calls the CLI.
    let answer = client(&[
        "answer",
        "carol",
        "--play",
        "carol.wav",
        "--record",
        "heard-a.wav",
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    wait_until("carol registered", Duration::from_secs(10), || {
        p.a.rx("channel originate ANYTUN/carol extension s@tx-cli");
        p.a.spool("a-rx.wav").exists()
    });
    let out = answer.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let heard = analyse(&read_wav(&d.join("heard-a.wav")).unwrap());
    println!("carol heard from alice's PBX: {heard:?}");
    assert_eq!(
        heard.tone_hz.map(|f| (f - ALICE_TONE).abs() <= 5.0),
        Some(true),
        "{heard:?}\n{stderr}"
    );
    assert_eq!(heard.digits, "159", "{heard:?}");
    let dtmf: String = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("DTMF "))
        .collect();
    assert_eq!(dtmf, "4821", "DTMF alice's PBX -> carol:\n{stderr}");
    wait_until("alice's call to end", Duration::from_secs(10), || {
        p.a.channels() == 0
    });
    let heard = analyse(&read_wav(&p.a.spool("a-rx.wav")).unwrap());
    println!("alice's PBX heard from carol: {heard:?}");
    assert_eq!(
        heard.tone_hz.map(|f| (f - BOB_TONE).abs() <= 5.0),
        Some(true),
        "{heard:?}"
    );
    assert_eq!(heard.digits, "2*#", "{heard:?}");
    // The CLI calls Asterisk.
    let out = client(&[
        "call",
        "bob",
        "--play",
        "carol.wav",
        "--record",
        "heard-b.wav",
        "--dtmf",
        "4821",
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        std::fs::read_to_string(p.b.spool("b-digits.txt")).unwrap_or_default(),
        "4821",
        "DTMF carol -> bob's PBX:\n{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(p.b.spool("b-caller.txt")).unwrap(),
        "carol|carol|bob|(slin)"
    );
    let heard = analyse(&read_wav(&d.join("heard-b.wav")).unwrap());
    println!("carol heard from bob's PBX: {heard:?}");
    assert_eq!(
        heard.tone_hz.map(|f| (f - BOB_TONE).abs() <= 5.0),
        Some(true),
        "{heard:?}\n{stderr}"
    );
    assert_eq!(heard.digits, "2*#", "{heard:?}");
    let dtmf: String = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("DTMF "))
        .collect();
    assert_eq!(dtmf, "7306", "DTMF bob's PBX -> carol:\n{stderr}");
    let heard = analyse(&read_wav(&p.b.spool("b-rx.wav")).unwrap());
    assert_eq!(
        heard.tone_hz.map(|f| (f - BOB_TONE).abs() <= 5.0),
        Some(true),
        "bob's PBX heard {heard:?}"
    );
    assert_no_errors(&p, &[]);
}

/// Causes both ways: bob's PBX refuses as busy or congested, lets a call
/// ring out, or the name is unknown or unregistered; alice's Dial() reports
/// the matching DIALSTATUS and HANGUPCAUSE, and a ringing callee shows as
/// ringing.
#[test]
fn dial_status_follows_the_far_end() {
    let _g = serial();
    let net = Net::start(&[
        ("alice.key", "alice"),
        ("bob.key", "busy"),
        ("bob.key", "congested"),
        ("bob.key", "slow"),
        ("bob.key", "offline"),
    ]);
    let ia = Pbx::inner_dir("da");
    // Only "slow" rings out Dial's timeout; the others end at the far end's
    // word, however slow a loaded machine is to say it.
    let ext_a = format!(
        "[general]\n[from-anytun]\n[dialtest]\n\
         exten => _[a-z].,1,Dial(ANYTUN/${{EXTEN}},${{IF($[\"${{EXTEN}}\" = \"slow\"]?3:15)}})\n \
         same => n,Set(FILE({ia}/spool/${{EXTEN}}.txt)=${{DIALSTATUS}}|${{HANGUPCAUSE}})\n \
         same => n,Hangup()\n"
    );
    let ext_b = "[general]\n[from-anytun]\n\
                 exten => busy,1,Busy(5)\n\
                 exten => congested,1,Congestion(5)\n\
                 exten => slow,1,Ringing()\n same => n,Wait(20)\n";
    let ca = net.pbx_conf("alice.key", "alice", "", &ext_a, &[]);
    let cb = net.pbx_conf("bob.key", "busy,congested,slow", "", ext_b, &[]);
    let a = Pbx::start("da", ca.path());
    let b = Pbx::start("db", cb.path());
    wait_until("bob's names registered", Duration::from_secs(10), || {
        b.rx("anytun show status")
            .contains("Names registered: 3 of")
    });
    let mut seen = Vec::new();
    for name in ["busy", "congested", "slow", "offline", "nobody"] {
        a.rx(&format!(
            "channel originate Local/{name}@dialtest application Wait 1"
        ));
        let f = a.spool(&format!("{name}.txt"));
        wait_until(
            &format!("Dial(ANYTUN/{name}) to end"),
            Duration::from_secs(15),
            || f.exists(),
        );
        seen.push((name, std::fs::read_to_string(&f).unwrap()));
    }
    println!("{seen:?}");
    let status = |n: &str| seen.iter().find(|(k, _)| *k == n).unwrap().1.clone();
    assert_eq!(status("busy"), "BUSY|17");
    assert_eq!(status("congested"), "CONGESTION|34");
    assert!(
        status("slow").starts_with("NOANSWER|"),
        "{}",
        status("slow")
    );
    assert!(
        a.log().contains("ANYTUN/slow-") && a.log().contains("is ringing"),
        "no ringing seen"
    );
    // A subscriber name with no device, and a name the network does not know.
    assert_eq!(status("offline"), "CHANUNAVAIL|20");
    assert!(
        status("nobody").starts_with("CHANUNAVAIL|1")
            || status("nobody").starts_with("CHANUNAVAIL|20"),
        "{}",
        status("nobody")
    );
    drop(net);
}

/// A PBX that starts while the network is unreachable keeps trying and
/// connects (and registers) once the proxy answers.
#[test]
fn pbx_started_before_the_network_connects_later() {
    let _g = serial();
    let mut net = Net::start(&[("alice.key", "alice")]);
    net.stop_daemon();
    let conf = net.pbx_conf("alice.key", "alice", "", "[general]\n[from-anytun]\n", &[]);
    let pbx = Pbx::start("n", conf.path());
    assert!(
        module_running(&pbx),
        "res_anytun must load without a reachable proxy"
    );
    // Longer than the library's default attempts (0, 1, 3 and 7 s).
    std::thread::sleep(Duration::from_secs(12));
    assert!(!pbx
        .rx("anytun show status")
        .contains("Session:          connected"));
    net.start_daemon();
    let took = wait_until(
        "connected once the proxy is up",
        Duration::from_secs(15),
        || {
            pbx.rx("anytun show status")
                .contains("Names registered: 1 of")
        },
    );
    println!(
        "connected and registered {:.1} s after the proxy started",
        took.as_secs_f64()
    );
}

#[test]
fn dial_anytun_bob_g722_tone_and_dtmf_both_ways() {
    // 16 kHz audio in 160-byte frames on an 8000 Hz timestamp clock.
    call_both_ways("g722", "g722");
}
