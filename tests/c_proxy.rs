//! Proxy mode of the C ABI from C: `tests/c/proxy.c` hosts a proxy through
//! `anytun_proxy_*` (as res_anytun does inside Asterisk), which syncs with a
//! standalone `anytund`; two C phones (`tests/c/call.c`), one served by
//! each proxy, call each other through them and check each other's audio
//! sample for sample, the tone, the DTMF digits. The host checks the
//! proxy's status and peers while the call is up, a reload, and that
//! stopping joins every thread the proxy started (/proc/self/task).

use anytun::crypto::SecretKey;
use anytun::store::SubscriberStore;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");

/// `target/<profile>/deps`, where this test runs and cargo built the cdylib.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    assert!(
        dir.join("libanytun.so").exists(),
        "no libanytun.so in {}",
        dir.display()
    );
    dir
}

/// Compiles `source` into `out`, linked with libanytun.so.
fn compile_c(source: &str, out: &Path) {
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
    cmd.arg(root.join(source))
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lanytun", "-ldl", "-lpthread", "-lm"]);
    let r = cmd
        .output()
        .expect("the C compiler runs (apt-get install build-essential)");
    assert!(
        r.status.success(),
        "compiling {source} failed:\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// A child whose output lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    what: &'static str,
}

impl Proc {
    /// Starts `cmd`, reading its stdout (`stdout`) or its stderr lines.
    fn spawn(mut cmd: Command, stdout: bool, what: &'static str) -> Proc {
        cmd.env_remove("LD_LIBRARY_PATH")
            .stdin(Stdio::piped())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if stdout {
                Stdio::inherit()
            } else {
                Stdio::piped()
            });
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn Read + Send> = if stdout {
            Box::new(child.stdout.take().unwrap())
        } else {
            Box::new(child.stderr.take().unwrap())
        };
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            what,
        }
    }

    /// Waits (`within`) for a line containing `needle`.
    fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "{} never said {needle:?}; it said:\n{}",
                    self.what,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends `cmd` and returns the next line starting with `prefix`.
    fn ask(&mut self, cmd: &str, prefix: &str) -> String {
        self.send(cmd);
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{} did not answer {cmd}", self.what));
            self.seen.push(l.clone());
            if let Some(rest) = l.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the exit; every line it printed.
    fn finish(&mut self, within: Duration) -> (bool, Vec<String>) {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(t.elapsed() < within, "{} did not exit", self.what);
            std::thread::sleep(Duration::from_millis(10));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (status.success(), self.seen.clone())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `RESULT key=value` lines, as (key, value).
fn results(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn get<'a>(r: &'a [(String, String)], key: &str) -> &'a str {
    r.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no RESULT {key} in {r:?}"))
}

fn metric_at(addr: SocketAddr, metric: &str) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let prefix = format!("{metric} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The sum of a labelled counter's series.
fn metric_sum(addr: SocketAddr, metric: &str) -> u64 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Which proxy the kernel gives datagrams from `local` to the shared port
/// (SO_REUSEPORT picks a socket by a hash of the addresses): a probe that
/// one of them counts as dropped. True: the hosted proxy.
fn lands_on_hosted(local: u16, shared: u16, host: &mut Proc, m1: SocketAddr) -> bool {
    const DROPS: &str = "anytun_dropped_packets";
    let dropped2 = |h: &mut Proc| h.ask("status", "STATUS dropped=").parse::<u64>().unwrap();
    let (b1, b2) = (metric_sum(m1, DROPS), dropped2(host));
    let probe = std::net::UdpSocket::bind(("127.0.0.1", local)).unwrap();
    probe.send_to(b"probe", ("127.0.0.1", shared)).unwrap();
    let t = Instant::now();
    loop {
        if metric_sum(m1, DROPS) > b1 {
            return false;
        }
        if dropped2(host) > b2 {
            return true;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "neither proxy counted the probe from port {local}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A local port whose datagrams the kernel gives to the hosted proxy
/// (`hosted`) or to anytund.
fn port_for(hosted: bool, shared: u16, host: &mut Proc, m1: SocketAddr) -> u16 {
    for _ in 0..32 {
        let p = free_port(true);
        if lands_on_hosted(p, shared, host, m1) == hosted {
            return p;
        }
    }
    panic!("no port of 32 tried lands on the wanted proxy");
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

fn phone(exe: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(exe);
    c.args(args).current_dir(dir);
    c
}

#[test]
fn a_proxy_hosted_through_the_c_abi_syncs_with_anytund_and_carries_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host_exe = d.join("proxy_test");
    let call_exe = d.join("call_test");
    compile_c("tests/c/proxy.c", &host_exe);
    compile_c("tests/c/call.c", &call_exe);

    let network = SecretKey::generate();
    let (k1, k2) = (SecretKey::generate(), SecretKey::generate());
    let (p1, p2) = (d.join("p1"), d.join("p2"));
    network.write_new_file(&p1.join("network.key")).unwrap();
    network.write_new_file(&p2.join("network.key")).unwrap();
    k1.write_new_file(&p1.join("node.key")).unwrap();
    k2.write_new_file(&p2.join("node.key")).unwrap();
    for user in ["alice", "bob"] {
        let key = SecretKey::generate();
        key.write_new_file(&d.join(format!("{user}.key"))).unwrap();
        // Each user is added on both proxies' stores.
        for s in [&p1, &p2] {
            SubscriberStore::open(&s.join("subscribers.db"))
                .unwrap()
                .add(user, &key.public().0)
                .unwrap();
        }
    }
    // Both proxies share one UDP port, as anycast proxies share an address.
    let udp = free_port(true);
    let (udp1, udp2) = (udp, udp);
    let (link1, link2, metrics1) = (free_port(false), free_port(false), free_port(false));

    // Proxy 1: a standalone anytund.
    std::fs::write(
        p1.join("anytund.toml"),
        format!(
            "proxy_id = 1\nlisten = [\"127.0.0.1:{udp1}\"]\n\
             network_key = \"network.key\"\nsubscribers = \"subscribers.db\"\n\
             metrics_listen = \"127.0.0.1:{metrics1}\"\nsubscriber_reload_ms = 200\n\
             reuse_port = true\n\
             ready_file = \"ready\"\n\
             [sync]\nnode_key = \"node.key\"\nlisten = \"127.0.0.1:{link1}\"\n\
             startup_timeout_ms = 10000\n\
             [[sync.peers]]\nid = 2\naddress = \"127.0.0.1:{link2}\"\npublic_key = \"{}\"\n",
            k2.public()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(ANYTUND);
    cmd.args(["--config", "anytund.toml"])
        .current_dir(&p1)
        .env_remove("ANYTUN_CONFIG")
        .env("RUST_LOG", "info");
    let mut daemon = Proc::spawn(cmd, false, "anytund");

    // Proxy 2: hosted by the C program, from the struct's fields.
    let mut cmd = Command::new(&host_exe);
    cmd.arg(&p2)
        .arg("2")
        .arg(format!("127.0.0.1:{udp2}"))
        .arg(format!("127.0.0.1:{link2}"))
        .arg(format!("1 127.0.0.1:{link1} {}", k1.public()));
    let mut host = Proc::spawn(cmd, true, "proxy_test");

    host.wait_for("READY", Duration::from_secs(60));
    daemon.wait_for("ready: created", Duration::from_secs(60));
    let r = results(&host.seen);
    assert_eq!(get(&r, "node_key"), k2.public().to_base64());
    assert_eq!(get(&r, "udp_port"), udp2.to_string());
    let network_public = network.public().to_base64();
    assert_eq!(get(&r, "network_key"), network_public);

    // Bob on the hosted proxy, alice on anytund.
    let m1: SocketAddr = format!("127.0.0.1:{metrics1}").parse().unwrap();
    let bob_port = port_for(true, udp, &mut host, m1);
    let alice_port = port_for(false, udp, &mut host, m1);
    let frames = 100u32;
    let n = frames.to_string();
    let hosted = format!("127.0.0.1:{udp2}");
    let standalone = format!("127.0.0.1:{udp1}");
    let callee = phone(
        &call_exe,
        d,
        &[
            "answer",
            "bob.key",
            &network_public,
            &hosted,
            "bob",
            "ulaw",
            &n,
        ],
    );
    let mut callee = callee;
    callee.env("ANYTUN_TEST_BIND", format!("127.0.0.1:{bob_port}"));
    // The answer takes the peer link to alice, the voice a direct path: a
    // frame sent at once can overtake the answer and be dropped by her
    // library (seen: 1 of 100). The callee talks once the answer is there.
    callee.env("ANYTUN_TEST_TALK_DELAY_MS", "300");
    let mut callee = Proc::spawn(callee, true, "the callee");
    callee.wait_for("READY", Duration::from_secs(15));
    // Bob's registration reaches anytund by replication before alice calls.
    let t = Instant::now();
    while metric_at(m1, "anytun_registrations").unwrap_or(0) < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "bob's registration never reached anytund"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut caller = phone(
        &call_exe,
        d,
        &[
            "call",
            "alice.key",
            &network_public,
            &standalone,
            "bob",
            &n,
            "alaw",
            "ulaw",
        ],
    );
    let caller = caller
        .env("ANYTUN_TEST_BIND", format!("127.0.0.1:{alice_port}"))
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    host.send("waitcall");
    host.wait_for("DONE", Duration::from_secs(40));
    let caller = wait_output(caller, Duration::from_secs(60), "the caller");
    let (callee_ok, callee_lines) = callee.finish(Duration::from_secs(30));
    assert!(
        caller.status.success() && callee_ok,
        "caller {:?}:\n{}\ncallee:\n{}",
        caller.status,
        String::from_utf8_lossy(&caller.stderr),
        callee_lines.join("\n")
    );
    let caller_lines: Vec<String> = String::from_utf8_lossy(&caller.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    for (who, res, freq) in [
        ("caller (alice, on anytund)", results(&caller_lines), 1000.0),
        (
            "callee (bob, on the hosted proxy)",
            results(&callee_lines),
            440.0,
        ),
    ] {
        assert_eq!(get(&res, "codec"), "ulaw", "{who}");
        assert_eq!(get(&res, "frames_ok"), n, "{who}: every frame exact");
        assert_eq!(get(&res, "frames_bad"), "0", "{who}");
        let f: f64 = get(&res, "freq").parse().unwrap();
        assert!((f - freq).abs() < freq * 0.02, "{who} heard {f} Hz");
        assert_eq!(get(&res, "end_cause"), "16", "{who}");
        println!(
            "{who}: {} of {n} frames exact, tone {f} Hz, digits {}",
            get(&res, "frames_ok"),
            get(&res, "digits")
        );
    }

    // While the call was up, the hosted proxy held it and its peer was up.
    let r = results(&host.seen);
    assert!(get(&r, "calls").parse::<u32>().unwrap() >= 1, "{r:?}");
    assert!(get(&r, "sessions").parse::<u32>().unwrap() >= 1, "{r:?}");
    assert_eq!(
        get(&r, "peer"),
        format!("1,1,127.0.0.1:{link1}"),
        "peer 1 listed, state UP"
    );
    host.send("reload");
    host.wait_for("DONE", Duration::from_secs(10));
    host.send("stop");
    let (ok, lines) = host.finish(Duration::from_secs(30));
    let r = results(&lines);
    assert!(ok, "proxy_test failed:\n{}", lines.join("\n"));
    assert_eq!(get(&r, "errors"), "0");
    assert!(
        get(&r, "frames_relayed").parse::<u64>().unwrap() >= u64::from(frames),
        "{r:?}"
    );
    let t: Vec<i32> = get(&r, "threads")
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(t[2], t[0], "stop joined every thread: {t:?}");
    println!(
        "hosted proxy: ready in {} s, threads before/running/after {t:?} ({} of its own; \
         {} in the process during the call)",
        get(&r, "ready_s"),
        t[1] - t[0],
        get(&r, "threads_in_call")
    );
}

#[test]
fn the_proxy_error_paths_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("proxy_test");
    compile_c("tests/c/proxy.c", &exe);
    let child = Command::new(&exe)
        .arg("errors")
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30), "proxy_test errors");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_eq!(get(&results(&lines), "errors"), "0");
}
