//! The C ABI from C: `tests/c/call.c`, compiled with the `cc` crate against
//! `include/anytun.h` and linked with the library's cdylib, runs as a real
//! phone against a real `anytund`: one instance answers, one calls, and
//! each checks the other's audio sample for sample, the tone's frequency,
//! the DTMF digits, and that stopping joins the client's thread. A third
//! run checks the error paths.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ANYTUN: &str = env!("CARGO_BIN_EXE_anytun");
const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");

/// The directory holding the library cargo built with this test:
/// `target/<profile>/deps`, where the test runs from. (`cargo test` does
/// not copy the cdylib up to `target/<profile>`, so one there may be old.)
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    assert!(
        dir.join("libanytun.so").exists(),
        "no libanytun.so in {} (the [lib] crate-type must include cdylib)",
        dir.display()
    );
    dir
}

/// Compiles tests/c/call.c into `out`, linked with libanytun.so.
fn compile(out: &Path) {
    compile_c("tests/c/call.c", out, true);
}

/// Compiles `source` into `out`, linked with libanytun.so or (`link`
/// false) only able to dlopen it.
fn compile_c(source: &str, out: &Path, link: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = env!("ANYTUN_BUILD_TARGET");
    let lib = lib_dir();
    let mut cmd = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .target(target)
        .host(target)
        .opt_level(1)
        .debug(false)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .flag("-std=c99")
        .flag("-pedantic")
        .include(root.join("include"))
        .get_compiler()
        .to_command();
    cmd.arg(root.join(source)).arg("-o").arg(out);
    if link {
        cmd.arg(format!("-L{}", lib.display()))
            // cargo test sets LD_LIBRARY_PATH (target/<profile> first, where
            // an old copy of the cdylib may lie); the runs remove it, so this
            // rpath picks the library.
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-lanytun");
    }
    cmd.args(["-ldl", "-lpthread", "-lm"]);
    let r = cmd
        .output()
        .expect("the C compiler runs (apt-get install build-essential)");
    assert!(
        r.status.success(),
        "compiling {source} failed:\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

fn run_ok(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `anytund` on a loopback port with its own state, and keys for names.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    network: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(names: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.path().join("anytund.toml"),
            format!(
                "listen = [\"127.0.0.1:{port}\"]\nmetrics_listen = \"\"\n\
                 network_key = \"state/network.key\"\nsubscribers = \"state/subscribers.db\"\n\
                 subscriber_reload_ms = 100\n"
            ),
        )
        .unwrap();
        let child = Command::new(ANYTUND)
            .args(["--config", "anytund.toml"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = dir.path();
        let t = Instant::now();
        while !d.join("state/network.key").exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "anytund made no network key"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let network = run_ok(ANYTUN, &["pubkey", "state/network.key"], d);
        for name in names {
            let key = format!("{name}.key");
            run_ok(ANYTUN, &["keygen", "--out", &key], d);
            let public = run_ok(ANYTUN, &["pubkey", &key], d);
            run_ok(
                ANYTUN,
                &["user", "add", name, &public, "--db", "state/subscribers.db"],
                d,
            );
        }
        // The daemon reloads subscribers every 100 ms.
        std::thread::sleep(Duration::from_millis(300));
        Daemon {
            dir,
            child,
            port,
            network,
        }
    }

    fn proxy(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The `RESULT key=value` lines of a run, as (key, value).
fn results(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn get<'a>(r: &'a [(String, String)], key: &str) -> &'a str {
    r.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no RESULT {key} in {r:?}"))
}

fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One call between two C phones: the callee answers with `codec` out of
/// the caller's `offer`. Returns (caller, callee) results.
fn call(
    exe: &Path,
    d: &Daemon,
    offer: &[&str],
    codec: &str,
    frames: u32,
) -> [Vec<(String, String)>; 2] {
    let dir = d.dir.path();
    let frames = frames.to_string();
    let proxy = d.proxy();
    let mut callee = Command::new(exe)
        .args([
            "answer", "bob.key", &d.network, &proxy, "bob", codec, &frames,
        ])
        .env_remove("LD_LIBRARY_PATH")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its stdout: READY once registered, then the results.
    let (tx, rx) = mpsc::channel();
    let stdout = callee.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line == "READY" {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut stderr = callee.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    if rx.recv_timeout(Duration::from_secs(15)).is_err() {
        let _ = callee.kill();
        let _ = callee.wait();
        panic!("the callee never registered:\n{}", errors.join().unwrap());
    }
    let mut args = vec!["call", "alice.key", &d.network, &proxy, "bob", &frames];
    args.extend_from_slice(offer);
    let caller = Command::new(exe)
        .args(&args)
        .env_remove("LD_LIBRARY_PATH")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let caller = wait_output(caller, Duration::from_secs(60), "the caller");
    let callee_status = {
        let t = Instant::now();
        loop {
            if let Some(s) = callee.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = callee.kill();
                panic!("the callee did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let callee_out = reader.join().unwrap();
    let callee_err = errors.join().unwrap();
    let caller_err = String::from_utf8_lossy(&caller.stderr);
    assert!(
        caller.status.success() && callee_status.success(),
        "caller {:?}:\n{caller_err}\ncallee {callee_status:?}:\n{callee_err}",
        caller.status
    );
    [
        results(&String::from_utf8_lossy(&caller.stdout)),
        results(&callee_out),
    ]
}

fn check_call(r: &[Vec<(String, String)>; 2], codec: &str, frames: u32) {
    let [caller, callee] = r;
    let n = frames.to_string();
    for (who, res, freq) in [("caller", caller, 1000.0), ("callee", callee, 440.0)] {
        assert_eq!(get(res, "codec"), codec, "{who}");
        assert_eq!(
            get(res, "frames_ok"),
            n,
            "{who}: every frame, sample for sample"
        );
        assert_eq!(get(res, "frames_bad"), "0", "{who}");
        let f: f64 = get(res, "freq").parse().unwrap();
        assert!(
            (f - freq).abs() < freq * 0.02,
            "{who} heard {f} Hz, sent {freq}"
        );
        assert_eq!(get(res, "end_cause"), "16", "{who}");
        // Before start, while running (exactly one more), after stop.
        let t: Vec<i32> = get(res, "threads")
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!((t[1], t[2]), (t[0] + 1, t[0]), "{who}: threads {t:?}");
        println!(
            "{who}: {codec}, {} of {n} frames exact, tone {f} Hz, digits {:?}, threads {t:?}",
            get(res, "frames_ok"),
            get(res, "digits")
        );
    }
    assert_eq!(get(caller, "digits"), "9*");
    assert_eq!(get(callee, "digits"), "123#");
}

#[test]
fn a_c_phone_calls_a_c_phone_through_anytund() {
    let d = Daemon::start(&["alice", "bob"]);
    let exe = d.dir.path().join("call_test");
    compile(&exe);
    let frames = 50;
    let r = call(&exe, &d, &["g722", "slin", "ulaw"], "slin", frames);
    check_call(&r, "slin", frames);
    assert_eq!(
        get(&r[1], "offer"),
        "g722/3",
        "the callee sees the whole offer"
    );
    let r = call(&exe, &d, &["alaw", "ulaw"], "ulaw", frames);
    check_call(&r, "ulaw", frames);
}

#[test]
fn the_c_abi_error_paths_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("call_test");
    compile(&exe);
    let child = Command::new(&exe)
        .arg("errors")
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30), "call_test errors");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let r = results(&stdout);
    assert_eq!(get(&r, "errors"), "0", "{stderr}");
    let t: Vec<i32> = get(&r, "threads")
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(t[0], t[1], "stop joined the client's thread");
}

/// A module unloaded and loaded again (Asterisk's `module unload` and
/// `load`): dlopen, logger, a client run to its give-up, stop, logger
/// removed, dlclose; five rounds, each hearing only its own logger, none
/// leaving a thread behind.
#[test]
fn the_library_unloads_and_loads_again() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("reload_test");
    compile_c("tests/c/reload.c", &exe, false);
    let lib = lib_dir().join("libanytun.so");
    let child = Command::new(&exe)
        .arg(&lib)
        .arg("5")
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60), "reload_test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rounds = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT round="))
        .count();
    assert_eq!(rounds, 5, "{stdout}");
    println!("{stdout}");
}
