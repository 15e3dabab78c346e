//! The harness of the Asterisk tests: a real Asterisk 22 in the Debian sid
//! chroot of `scripts/asterisk-chroot.sh`, instances started by
//! `scripts/asterisk-instance.sh`, res_anytun.so built from
//! `asterisk-module/` against this build's libanytun, and an `anytund` on
//! loopback with the PBXs' keys as subscribers.
//!
//! Needs root and the chroot: without them a test FAILS saying so (the
//! chroot is built here when missing; scripts/test.sh runs as root).

// Shared by several test crates, each using a part.
#![allow(dead_code)]

pub mod calls;
pub mod hosted;
pub mod netlab;
pub mod tones;

use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const ANYTUN: &str = env!("CARGO_BIN_EXE_anytun");
pub const ANYTUND: &str = env!("CARGO_BIN_EXE_anytund");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The Asterisk modules every test PBX loads (autoload = no).
pub const MODULES: &str = "pbx_config.so app_dial.so app_playback.so app_read.so \
    app_senddtmf.so app_mixmonitor.so app_echo.so app_verbose.so app_milliwatt.so \
    func_env.so func_callerid.so func_channel.so func_strings.so func_logic.so format_wav.so format_pcm.so \
    format_sln.so codec_ulaw.so codec_alaw.so codec_g722.so \
    res_timing_timerfd.so bridge_simple.so res_clioriginate.so";

/// What chan_pjsip needs with autoload = no (tests 3 and the CPU figure).
pub const PJSIP_MODULES: &str = "res_pjproject.so res_sorcery_config.so res_sorcery_memory.so \
    res_sorcery_astdb.so res_pjsip.so res_pjsip_session.so chan_pjsip.so res_pjsip_pubsub.so \
    res_pjsip_sdp_rtp.so res_rtp_asterisk.so res_pjsip_endpoint_identifier_ip.so \
    res_pjsip_dtmf_info.so";

/// One Asterisk test at a time in this process: each runs two PBXs and a
/// proxy, and the machine has 2 cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// The chroot and res_anytun.so built for it, once per test process.
pub struct Lab {
    /// The chroot.
    pub root: PathBuf,
    /// res_anytun.so on the host.
    pub module: PathBuf,
    /// Unique per test process: instance names and the library's directory.
    pub tag: String,
    _build: tempfile::TempDir,
}

impl Lab {
    pub fn get() -> &'static Lab {
        static LAB: std::sync::OnceLock<Lab> = std::sync::OnceLock::new();
        LAB.get_or_init(Lab::build)
    }

    fn build() -> Lab {
        let uid = run(Command::new("id").arg("-u"));
        assert_eq!(
            uid.trim(),
            "0",
            "the Asterisk tests need root (chroot, debootstrap): run them as root \
             (scripts/test.sh does)"
        );
        let root = run(&mut Command::new(format!(
            "{REPO}/scripts/asterisk-chroot.sh"
        )));
        let root = PathBuf::from(root.trim());
        let tag = format!("t{}", std::process::id());
        sweep(&root);
        // The cdylib that cargo built with this test's binary (in deps/;
        // target/debug/ holds one only after a `cargo build`, maybe older).
        // ANYTUN_TEST_LIB=target/release/deps/libanytun.so measures an
        // optimised library (the CPU figures).
        let exe = std::env::current_exe().unwrap();
        let lib = std::env::var_os("ANYTUN_TEST_LIB")
            .map(PathBuf::from)
            .unwrap_or_else(|| exe.parent().unwrap().join("libanytun.so"));
        let deps = lib.parent().unwrap().to_owned();
        assert!(
            lib.exists(),
            "{} is missing: the crate's cdylib must be built with the tests",
            lib.display()
        );
        let target = deps.as_path();
        // asterisk.h and asterisk/ only (the chroot's whole /usr/include
        // would mix two glibcs).
        let build = tempfile::tempdir().unwrap();
        let inc = build.path().join("include");
        std::fs::create_dir(&inc).unwrap();
        std::os::unix::fs::symlink(root.join("usr/include/asterisk.h"), inc.join("asterisk.h"))
            .unwrap();
        std::os::unix::fs::symlink(root.join("usr/include/asterisk"), inc.join("asterisk"))
            .unwrap();
        // The library in its own directory in the chroot, found through the
        // module's RUNPATH.
        let libdir_inner = format!("/opt/anytun-test/{tag}/lib");
        let libdir = root.join(libdir_inner.trim_start_matches('/'));
        std::fs::create_dir_all(&libdir).unwrap();
        std::fs::copy(&lib, libdir.join("libanytun.so")).unwrap();
        run(Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(format!("{REPO}/asterisk-module"))
            .arg(format!("ASTERISK_INCLUDE={}", inc.display()))
            .arg(format!("ANYTUN_LIBDIR={}", target.display()))
            .arg(format!("ANYTUN_RPATH={libdir_inner}"))
            .arg(format!("OUT={}", build.path().display())));
        Lab {
            module: build.path().join("res_anytun.so"),
            root,
            tag,
            _build: build,
        }
    }
}

/// Removes what earlier test processes left in the chroot (their library
/// copies and instance directories, named t<pid>...), once they are gone.
fn sweep(root: &Path) {
    for dir in ["opt/anytun-test", "var/lib/anytun-instances"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: String = name
                .strip_prefix('t')
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
                // An Asterisk its test left running (killed before its Drop):
                // only that process, recognised by its own config path.
                if let Ok(a) = std::fs::read_to_string(e.path().join("asterisk.pid")) {
                    let cmdline =
                        std::fs::read(format!("/proc/{}/cmdline", a.trim())).unwrap_or_default();
                    let conf = format!("/var/lib/anytun-instances/{name}/etc/asterisk.conf");
                    if String::from_utf8_lossy(&cmdline).contains(&conf) {
                        let _ = Command::new("kill").args(["-KILL", a.trim()]).status();
                    }
                }
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn instance_script() -> String {
    format!("{REPO}/scripts/asterisk-instance.sh")
}

/// A running Asterisk instance, stopped (gracefully) when dropped.
pub struct Pbx {
    pub name: String,
    /// The instance's directory on the host.
    pub dir: PathBuf,
    stopped: bool,
}

impl Pbx {
    /// Starts instance `short` with the configs in `conf` (a directory).
    pub fn start(short: &str, conf: &Path) -> Pbx {
        Pbx::start_with(short, conf, "")
    }

    /// Starts instance `short`, loading `modules` (space-separated) too.
    pub fn start_with(short: &str, conf: &Path, modules: &str) -> Pbx {
        Pbx::start_in("", short, conf, modules)
    }

    /// As `start_with`, in network namespace `netns` ("": this one), e.g.
    /// a site or a proxy of the anycast lab.
    pub fn start_in(netns: &str, short: &str, conf: &Path, modules: &str) -> Pbx {
        Pbx::start_as(netns, short, conf, modules, false)
    }

    /// As `start_in`; `root`: Asterisk keeps running as root (a hosted
    /// proxy that runs BIRD needs it: BGP listens on port 179).
    pub fn start_as(netns: &str, short: &str, conf: &Path, modules: &str, root: bool) -> Pbx {
        let lab = Lab::get();
        let name = format!("{}{short}", lab.tag);
        let out = run(Command::new(instance_script())
            .env("ANYTUN_NETNS", netns)
            .env("ANYTUN_ASTERISK_ROOT", if root { "1" } else { "0" })
            .args(["start", &name])
            .arg(conf)
            .arg(format!("{MODULES} {modules}"))
            .arg(&lab.module));
        let dir = PathBuf::from(out.trim());
        Pbx {
            name,
            dir,
            stopped: false,
        }
    }

    /// The inner path of the instance's directory for `short` (before it runs).
    pub fn inner_dir(short: &str) -> String {
        format!("/var/lib/anytun-instances/{}{short}", Lab::get().tag)
    }

    /// `asterisk -rx cmd`'s output (it always exits 0).
    pub fn rx(&self, cmd: &str) -> String {
        run(Command::new(instance_script()).args(["rx", &self.name, cmd]))
    }

    pub fn running(&self) -> bool {
        let pid = std::fs::read_to_string(self.dir.join("asterisk.pid")).unwrap_or_default();
        !pid.trim().is_empty() && Path::new(&format!("/proc/{}", pid.trim())).exists()
    }

    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("asterisk.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Number of active channels (`core show channels count`).
    pub fn channels(&self) -> usize {
        let out = self.rx("core show channels count");
        out.lines()
            .find_map(|l| {
                l.strip_suffix(" active channels")
                    .or(l.strip_suffix(" active channel"))
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no channel count in {out:?}", self.name))
    }

    /// Up ANYTUN calls in `anytun show calls`.
    pub fn anytun_calls_up(&self) -> usize {
        self.rx("anytun show calls")
            .lines()
            .filter(|l| l.starts_with("ANYTUN/") && l.split_whitespace().nth(3) == Some("up"))
            .count()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/messages.log")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// A file the dialplan wrote (path inside the instance's spool).
    pub fn spool(&self, file: &str) -> PathBuf {
        self.dir.join("spool").join(file)
    }

    /// Stops it (`core stop gracefully`: every module's unload runs);
    /// true if it stopped by itself.
    pub fn stop(&mut self) -> bool {
        self.stopped = true;
        Command::new(instance_script())
            .args(["stop", &self.name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = Command::new(instance_script())
                .args(["stop", &self.name, "now"])
                .status();
        }
    }
}

/// A UDP port free on loopback right now.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An `anytund` on loopback with its own state, and subscribers.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub network: String,
    daemon: Child,
    err: Arc<Mutex<String>>,
}

impl Net {
    /// Starts `anytund`; `users` are (key file, name) pairs added as
    /// subscribers (key files made with `anytun keygen` in its directory).
    pub fn start(users: &[(&str, &str)]) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.path().join("anytund.toml"),
            format!(
                "listen = [\"127.0.0.1:{port}\"]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
                 network_key = \"state/network.key\"\nsubscribers = \"state/subscribers.db\"\n\
                 subscriber_reload_ms = 100\nproxy_id = 7\n\
                 max_calls_per_session = 100\n"
            ),
        )
        .unwrap();
        let mut daemon = Command::new(ANYTUND)
            .args(["--config", "anytund.toml"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let mut stderr = daemon.stderr.take().unwrap();
        let sink = err.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let d = dir.path();
        wait_until("anytund's network key", Duration::from_secs(10), || {
            d.join("state/network.key").exists()
        });
        let anytun = |args: &[&str]| run(Command::new(ANYTUN).args(args).current_dir(d));
        let network = anytun(&["pubkey", "state/network.key"]).trim().to_owned();
        for (key, name) in users {
            if !d.join(key).exists() {
                anytun(&["keygen", "--out", key]);
            }
            let public = anytun(&["pubkey", key]).trim().to_owned();
            anytun(&["user", "add", name, &public, "--db", "state/subscribers.db"]);
        }
        // The daemon reads the store every 100 ms.
        std::thread::sleep(Duration::from_millis(300));
        Net {
            dir,
            port,
            network,
            daemon,
            err,
        }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// Stops `anytund` (the network unreachable); `start_daemon` brings it
    /// back on the same port with the same keys.
    pub fn stop_daemon(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }

    /// See `stop_daemon`.
    pub fn start_daemon(&mut self) {
        self.daemon = Command::new(ANYTUND)
            .args(["--config", "anytund.toml"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// anytun.conf for a PBX with key file `key` registering `names`.
    pub fn anytun_conf(&self, names: &str, extra: &str) -> String {
        format!(
            "[general]\nkey_file = anytun.key\nnetwork_key = {}\nproxy = 127.0.0.1:{}\n\
             register = {names}\ncontext = from-anytun\nmax_calls = 64\n{extra}",
            self.network, self.port
        )
    }

    /// A config directory for a PBX: anytun.conf, the key, extensions.conf
    /// and any extra files.
    pub fn pbx_conf(
        &self,
        key: &str,
        names: &str,
        extra_conf: &str,
        extensions: &str,
        files: &[(&str, Vec<u8>)],
    ) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("anytun.conf"),
            self.anytun_conf(names, extra_conf),
        )
        .unwrap();
        std::fs::copy(self.path(key), d.path().join("anytun.key")).unwrap();
        std::fs::write(d.path().join("extensions.conf"), extensions).unwrap();
        for (f, data) in files {
            std::fs::write(d.path().join(f), data).unwrap();
        }
        d
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A WAV file's bytes (8000 Hz mono 16-bit).
pub fn wav_bytes(samples: &[i16]) -> Vec<u8> {
    let f = tempfile::NamedTempFile::new().unwrap();
    anytun::audio::write_wav(f.path(), samples).unwrap();
    std::fs::read(f.path()).unwrap()
}

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
