//! Helpers of the hosted-proxy tests (tests/asterisk_proxy.rs,
//! tests/asterisk_proxy_reload.rs, tests/asterisk_proxy_defer.rs): status
//! figures, a long call with a tone each way, reloads.

use super::calls::bob_extensions;
use super::{run, wait_until, Pbx, ANYTUN};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A TCP port free on loopback right now.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `anytun ARGS` in `dir`.
pub fn anytun(dir: &Path, args: &[&str]) -> String {
    run(Command::new(ANYTUN).args(args).current_dir(dir))
        .trim()
        .to_owned()
}

/// The anytund's /status (through `anytun status --json`); None while it
/// does not answer (starting).
pub fn try_daemon_status(metrics: u16) -> Option<anytun::metrics::Status> {
    let out = Command::new(ANYTUN)
        .args([
            "status",
            "--json",
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// A number before `what` on the line of `anytun show status` starting
/// with `label` ("Proxy voice:  12 frames relayed, ...").
pub fn proxy_figure(pbx: &Pbx, label: &str, what: &str) -> u64 {
    let out = pbx.rx("anytun show status");
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let i = words.iter().position(|w| w.trim_end_matches(',') == what)?;
            words.get(i.checked_sub(1)?)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("{}: no {label:?} ... {what:?} in:\n{out}", pbx.name))
}

/// The number on the line of `anytun show status` (`out`) that starts with
/// `label` ("Frames received:  123"), if there is one.
pub fn status_number(out: &str, label: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Voice frames `pbx`'s client has received so far.
pub fn frames_received(pbx: &Pbx) -> u64 {
    let out = pbx.rx("anytun show status");
    status_number(&out, "Frames received:")
        .unwrap_or_else(|| panic!("{}: no frame count in:\n{out}", pbx.name))
}

/// A long call from alice's PBX to bob's, a 1004 Hz tone each way
/// (Milliwatt, until hung up); returns once both PBXs have it up.
pub fn long_call(a: &Pbx, b: &Pbx) {
    let out = a.rx("channel originate ANYTUN/bob extension s@mw");
    assert!(!out.contains("rror"), "originate: {out}");
    let t = std::time::Instant::now();
    while !(a.anytun_calls_up() == 1 && b.anytun_calls_up() == 1) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the long call is not up on both PBXs within 15 s:\n{}\n{}\n{}\n{}\n{}\n{}",
            a.rx("anytun show status"),
            a.rx("anytun show calls"),
            b.rx("anytun show status"),
            b.rx("anytun show calls"),
            b.rx("anytun show sessions"),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Alice's and bob's dialplans with the long call added: alice's [mw]
/// sends a tone until hung up; bob's [from-anytun] answers bobmw likewise.
pub fn with_milliwatt(ext: String) -> String {
    ext.replace("[tx]\n", "[mw]\nexten => s,1,Milliwatt()\n[tx]\n")
}

/// Bob's dialplan: test 1's answer at extension bob, or, while the file
/// etc/mw exists in his instance (`inner`), a tone until hung up.
pub fn bob_milliwatt(inner: &str) -> String {
    bob_extensions(inner).replace(
        "exten => bob,1,Answer()\n",
        &format!(
            "exten => bob,1,GotoIf($[${{STAT(e,{inner}/etc/mw)}}]?mw,1)\n \
             same => n,Answer()\n\
             exten => mw,1,Answer()\n \
             same => n,Milliwatt()\n\
             exten => bob,3,NoOp()\n"
        ),
    )
}

/// `module reload res_anytun.so` on `pbx`, returning once its log says
/// the reload ran.
pub fn reload(pbx: &Pbx) {
    let before =
        pbx.log().matches("anytun: reloaded").count() + pbx.log().matches("reload refused").count();
    pbx.rx("module reload res_anytun.so");
    wait_until(
        &format!("{}: reloaded", pbx.name),
        Duration::from_secs(30),
        || {
            pbx.log().matches("anytun: reloaded").count()
                + pbx.log().matches("reload refused").count()
                > before
        },
    );
}
