//! Issue 9: Q.850 hangup causes across the anycast network, both ways, in
//! a real Asterisk 22. Alice's PBX runs in site A of the anycast lab and
//! bob's in site B (behind their NATs), so every cause crosses two proxies
//! (p1 and p2) and their anypsp link. Each PBX writes the cause its side saw
//! (`${HANGUPCAUSE}` in the `h` extension, or Dial's `${DIALSTATUS}` and
//! `${HANGUPCAUSE}`) to a file; the test compares both ends:
//! - the caller gives up while the callee rings (Dial's timeout): the
//!   callee sees normal clearing (16), as a Q.850 caller clearing is; a leg
//!   that Dial cancels because another answered (option c) sees 26;
//! - the callee's PBX lets it ring and declares no answer (Hangup(19)):
//!   the caller's Dial ends NOANSWER with cause 19;
//! - after answer, either side hangs up with 16 (Hangup()) or another cause
//!   (Hangup(21), Hangup(31)): the other side's channel ends with it;
//! - the far end's cause reaches the dialplan as Asterisk's own drivers
//!   report theirs (chan_pjsip's "SIP 486 Busy Here"): a Busy() refusal and
//!   a hangup with 21 show in HANGUPCAUSE_KEYS() and HANGUPCAUSE(chan,tech)
//!   ("ANYTUN 17 User busy") and HANGUPCAUSE(chan,ast) on alice's PBX;
//! - an incoming ANYTUN call is itself the caller of a Dial(): bob's PBX
//!   takes "fwd" and dials Local/fwd@relay, whose Dial(ANYTUN/abusy) reaches
//!   alice's PBX and its Busy(); the callee's cause crosses the Local
//!   channel into the incoming ANYTUN channel's HANGUPCAUSE_KEYS() (the
//!   core keeps it only when the driver's indicate declines it);
//! - Hangup(200) on bob's PBX, no Q.850 cause: the library sends 127
//!   (interworking) and counts it (anytun show status); alice sees 127.
//!
//! Busy, congestion and unknown names: dial_status_follows_the_far_end in
//! tests/asterisk_module.rs.
//!
//! Needs root, the lab's tools and the Debian sid chroot: without them this
//! test fails, saying so.

mod asterisk_lab;

use anytun::lab::Site;
use asterisk_lab::netlab::{wait_registered, NetLab};
use asterisk_lab::{serial, Pbx};
use std::time::{Duration, Instant};

/// The calls: (name at bob's PBX, what alice's PBX runs).
const CALLS: [(&str, &str); 10] = [
    ("ring", "dial"),
    ("busy", "dial"),
    ("b200", "post"),
    ("noans", "dial"),
    ("ring2", "fork"),
    ("pick", "fork"),
    ("b16", "post"),
    ("b21", "post"),
    ("a16", "post"),
    ("a31", "post"),
];

#[test]
fn hangup_causes_cross_both_ways() {
    let _g = serial();
    let t0 = Instant::now();
    let net = NetLab::up("atastc");
    net.user("alice");
    net.user("bob");
    for (name, _) in CALLS {
        net.alias(name, "bob");
    }
    // fwd: bob's PBX forwards it to abusy, alice's, which is busy.
    net.alias("fwd", "bob");
    net.alias("abusy", "alice");
    net.wait_subscribers(5 + CALLS.len());
    let (ia, ib) = (Pbx::inner_dir("ca"), Pbx::inner_dir("cb"));
    // Alice's PBX. [dial]: Dial() from a Local channel, its outcome kept.
    // [post]: runs on the ANYTUN channel itself once bob's PBX answers; its
    // h extension keeps the cause the channel ended with.
    let ext_a = format!(
        "[general]\n[from-anytun]\n\
         exten => abusy,1,Busy(5)\n\
         [dial]\n\
         exten => ring,1,Dial(ANYTUN/ring,2)\n \
         same => n,Set(FILE({ia}/spool/dial-ring.txt)=${{DIALSTATUS}}|${{HANGUPCAUSE}})\n\
         exten => busy,1,Dial(ANYTUN/busy,15)\n \
         same => n,Set(K=${{HANGUPCAUSE_KEYS()}})\n \
         same => n,Set(FILE({ia}/spool/dial-busy.txt)=${{DIALSTATUS}}|${{HANGUPCAUSE}}|${{K}}|\
${{HANGUPCAUSE(${{K}},tech)}}|${{HANGUPCAUSE(${{K}},ast)}})\n\
         exten => noans,1,Dial(ANYTUN/noans,15)\n \
         same => n,Set(FILE({ia}/spool/dial-noans.txt)=${{DIALSTATUS}}|${{HANGUPCAUSE}})\n\
         exten => fork,1,Dial(ANYTUN/ring2&ANYTUN/pick,15,cg)\n \
         same => n,Set(FILE({ia}/spool/dial-fork.txt)=${{DIALSTATUS}})\n\
         [post]\n\
         exten => _[ab].,1,Set(WHO=${{EXTEN}})\n \
         same => n,GotoIf($[\"${{EXTEN:0:1}}\" = \"a\"]?mine)\n \
         same => n,Wait(20)\n \
         same => n(mine),Wait(1)\n \
         same => n,Hangup(${{EXTEN:1}})\n\
         exten => h,1,Set(FILE({ia}/spool/a-${{WHO}}.txt)=${{HANGUPCAUSE}})\n \
         same => n,Set(FILE({ia}/spool/a-${{WHO}}-tech.txt)=${{HANGUPCAUSE_KEYS()}}|\
${{HANGUPCAUSE(${{CHANNEL}},tech)}}|${{HANGUPCAUSE(${{CHANNEL}},ast)}})\n"
    );
    // Bob's PBX: each name its own behaviour; h keeps the cause.
    let ext_b = format!(
        "[general]\n[from-anytun]\n\
         exten => ring,1,Set(WHO=ring)\n same => n,Ringing()\n same => n,Wait(20)\n\
         exten => ring2,1,Set(WHO=ring2)\n same => n,Ringing()\n same => n,Wait(20)\n\
         exten => pick,1,Set(WHO=pick)\n same => n,Wait(1)\n same => n,Answer()\n \
         same => n,Wait(1)\n same => n,Hangup()\n\
         exten => busy,1,Set(WHO=busy)\n same => n,Busy(5)\n\
         exten => noans,1,Set(WHO=noans)\n same => n,Ringing()\n same => n,Wait(1)\n \
         same => n,Hangup(19)\n\
         exten => _b.,1,Set(WHO=${{EXTEN}})\n same => n,Answer()\n same => n,Wait(1)\n \
         same => n,Hangup(${{EXTEN:1}})\n\
         exten => _a.,1,Set(WHO=${{EXTEN}})\n same => n,Answer()\n same => n,Wait(20)\n\
         exten => fwd,1,Set(WHO=fwd)\n same => n,Dial(Local/fwd@relay,15)\n \
         same => n,Set(K=${{HANGUPCAUSE_KEYS()}})\n \
         same => n,Set(FILE({ib}/spool/b-fwd-keys.txt)=${{DIALSTATUS}}|${{HANGUPCAUSE}}|${{K}}|\
${{HANGUPCAUSE(${{K}},tech)}}|${{HANGUPCAUSE(${{K}},ast)}})\n\
         exten => h,1,Set(FILE({ib}/spool/b-${{WHO}}.txt)=${{HANGUPCAUSE}})\n\
         [relay]\n\
         exten => fwd,1,Dial(ANYTUN/abusy,15)\n"
    );
    let mut names: Vec<&str> = CALLS.iter().map(|(n, _)| *n).collect();
    names.push("fwd");
    let ca = net.pbx_conf("alice", "alice,abusy", "", &ext_a, &[]);
    let cb = net.pbx_conf("bob", &names.join(","), "", &ext_b, &[]);
    // HANGUPCAUSE() and HANGUPCAUSE_KEYS().
    let funcs = "func_hangupcause.so";
    let a = Pbx::start_in(&net.site(Site::A), "ca", ca.path(), funcs);
    let b = Pbx::start_in(&net.site(Site::B), "cb", cb.path(), funcs);
    let st_a = wait_registered(&a, 2);
    let st_b = wait_registered(&b, names.len());
    assert!(st_a.contains("(proxy 1)"), "alice's PBX:\n{st_a}");
    assert!(st_b.contains("(proxy 2)"), "bob's PBX:\n{st_b}");
    // All at once: each call is its own pair of channels.
    for (name, how) in CALLS {
        let cmd = match how {
            "dial" => format!("channel originate Local/{name}@dial application Wait 1"),
            "fork" if name == "pick" => continue,
            "fork" => "channel originate Local/fork@dial application Wait 5".to_owned(),
            _ => format!("channel originate ANYTUN/{name} extension {name}@post"),
        };
        let out = a.rx(&cmd);
        assert!(!out.contains("rror"), "{cmd}: {out}");
    }
    let out = a.rx("channel originate ANYTUN/fwd application Wait 5");
    assert!(!out.contains("rror"), "fwd: {out}");
    let read = |pbx: &Pbx, f: &str| std::fs::read_to_string(pbx.spool(f)).ok();
    let files: Vec<(&Pbx, String)> = vec![
        (&a, "dial-ring.txt".into()),
        (&a, "dial-noans.txt".into()),
        (&a, "dial-busy.txt".into()),
        (&b, "b-busy.txt".into()),
        (&b, "b-fwd-keys.txt".into()),
        (&a, "a-b21-tech.txt".into()),
        (&a, "a-a31-tech.txt".into()),
        (&a, "a-b200.txt".into()),
        (&a, "a-b200-tech.txt".into()),
        (&b, "b-b200.txt".into()),
        (&b, "b-ring.txt".into()),
        (&b, "b-noans.txt".into()),
        (&a, "dial-fork.txt".into()),
        (&b, "b-ring2.txt".into()),
        (&b, "b-pick.txt".into()),
        (&a, "a-b16.txt".into()),
        (&a, "a-b21.txt".into()),
        (&b, "b-b16.txt".into()),
        (&b, "b-b21.txt".into()),
        (&a, "a-a16.txt".into()),
        (&a, "a-a31.txt".into()),
        (&b, "b-a16.txt".into()),
        (&b, "b-a31.txt".into()),
    ];
    let started = Instant::now();
    while files.iter().any(|(p, f)| read(p, f).is_none()) {
        let missing: Vec<&str> = files
            .iter()
            .filter(|(p, f)| read(p, f).is_none())
            .map(|(_, f)| f.as_str())
            .collect();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "calls not ended on both PBXs within 30 s: no {missing:?}\nalice's PBX:\n{}\nbob's PBX:\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = started.elapsed();
    let seen: Vec<(String, String)> = files
        .iter()
        .map(|(p, f)| (f.clone(), read(p, f).unwrap()))
        .collect();
    println!("causes seen: {seen:?}");
    let got = |f: &str| seen.iter().find(|(k, _)| k == f).unwrap().1.as_str();
    let want = [
        // The caller gave up while bob's PBX rang (Dial's timeout; Dial
        // leaves the caller's own HANGUPCAUSE unset then).
        ("dial-ring.txt", "NOANSWER|0"),
        ("b-ring.txt", "16"),
        // The caller's Dial cancelled one leg when the other answered
        // (option c; g: the dialplan goes on after the call): that callee
        // sees 26, answered elsewhere.
        ("dial-fork.txt", "ANSWER"),
        ("b-ring2.txt", "26"),
        ("b-pick.txt", "16"),
        // Bob's PBX declared no answer.
        ("dial-noans.txt", "NOANSWER|19"),
        ("b-noans.txt", "19"),
        // After answer, bob's side hung up with 16 and 21.
        ("b-b16.txt", "16"),
        ("a-b16.txt", "16"),
        ("b-b21.txt", "21"),
        ("a-b21.txt", "21"),
        // After answer, alice's side hung up with 16 and 31.
        ("a-a16.txt", "16"),
        ("b-a16.txt", "16"),
        ("a-a31.txt", "31"),
        ("b-a31.txt", "31"),
        // Bob's PBX refused with Busy(): 17 both sides.
        ("b-busy.txt", "17"),
        // Hangup(200) on bob's PBX: no Q.850 cause; 127 on the wire.
        ("b-b200.txt", "200"),
        ("a-b200.txt", "127"),
        // Alice hung up herself: no far-end cause to report.
        ("a-a31-tech.txt", "||"),
    ];
    let wrong: Vec<String> = want
        .iter()
        .filter(|(f, w)| got(f) != *w)
        .map(|(f, w)| format!("{f}: saw {:?}, want {w:?}", got(f)))
        .collect();
    assert!(wrong.is_empty(), "causes:\n{}", wrong.join("\n"));
    // The far end's cause, as HANGUPCAUSE_KEYS() and HANGUPCAUSE(chan,tech|ast)
    // show it: the ANYTUN channel's name (its counter varies), then
    // "ANYTUN <Q.850 cause> <Asterisk's text for it>", then Asterisk's text
    // for the cause it took (HANGUPCAUSE(chan,ast) gives ast_cause2str's).
    let tech = |file: &str, text: &str, name: &str, want: &str| {
        let f: Vec<&str> = text.split('|').collect();
        let ok = f.len() == 3
            && f[0].starts_with(&format!("ANYTUN/{name}-"))
            && !f[0].contains(',')
            && f[1..] == want.split('|').collect::<Vec<_>>()[..];
        assert!(ok, "{file}: saw {text:?}, want ANYTUN/{name}-...|{want}");
    };
    let (b21, b200) = (got("a-b21-tech.txt"), got("a-b200-tech.txt"));
    tech(
        "a-b21-tech.txt",
        b21,
        "b21",
        "ANYTUN 21 Call Rejected|Call Rejected",
    );
    tech(
        "a-b200-tech.txt",
        b200,
        "b200",
        "ANYTUN 127 Interworking, unspecified|Interworking, unspecified",
    );
    let busy = got("dial-busy.txt");
    let (status, rest) = busy.split_once("|17|").unwrap_or(("", ""));
    assert_eq!(status, "BUSY", "dial-busy.txt: {busy:?}");
    tech(
        "dial-busy.txt",
        rest,
        "busy",
        "ANYTUN 17 User busy|User busy",
    );
    // Bob's incoming "fwd" channel, the caller of Dial(Local/...): the
    // callee's cause from alice's PBX, through the Local channel.
    let fwd = got("b-fwd-keys.txt");
    let (status, rest) = fwd.split_once('|').unwrap_or(("", ""));
    let rest = rest.split_once('|').map_or("", |(_, r)| r);
    assert_eq!(status, "BUSY", "b-fwd-keys.txt: {fwd:?}");
    tech(
        "b-fwd-keys.txt",
        rest,
        "abusy",
        "ANYTUN 17 User busy|User busy",
    );
    // The library mapped bob's 200 and counted it; alice's sent none.
    let mapped = |pbx: &Pbx| {
        let st = pbx.rx("anytun show status");
        st.lines()
            .find_map(|l| l.trim().strip_prefix("Causes mapped:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no \"Causes mapped\" in:\n{st}"))
    };
    assert_eq!(mapped(&b), "1", "bob's PBX");
    assert_eq!(mapped(&a), "0", "alice's PBX");
    asterisk_lab::wait_until("no channel left", Duration::from_secs(10), || {
        a.channels() == 0 && b.channels() == 0
    });
    println!(
        "causes: every call ended on both sides {:.1} s after the originates; whole test {:.1} s",
        waited.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
