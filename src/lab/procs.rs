//! The lab's processes: each proxy's anytund (which runs its own BIRD),
//! the router's BIRD; pids in the run folder, never found by name.

use super::{sh, LabError};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Whether `pid` is stopped (SIGSTOP).
pub fn stopped(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
        .unwrap_or(false)
}

/// The direct children of `pid` (every thread's).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
    }
    out
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: libc::c_int) -> Result<(), LabError> {
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(LabError::Signal {
            pid,
            why: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

/// Reads a pid file.
pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Starts `prog args` in namespace `ns`, detached (own session), output
/// appended to `log`; returns its pid (`ip netns exec` execs the program,
/// so the pid is the program's). A reaper thread collects its exit status,
/// so a killed child never lingers as a zombie of this process.
pub fn spawn_in(ns: &str, prog: &Path, args: &[&str], log: &Path) -> Result<i32, LabError> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::Io {
            path: log.display().to_string(),
            why: e.to_string(),
        })?;
    let err = out.try_clone().map_err(|e| LabError::Io {
        path: log.display().to_string(),
        why: e.to_string(),
    })?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(prog)
        .args(args)
        // ANYTUN_LAB_LOG (e.g. "debug") when tracing a lab run; info else.
        .env(
            "RUST_LOG",
            std::env::var("ANYTUN_LAB_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| LabError::Tool {
        command: format!("ip netns exec {ns} {}", prog.display()),
        why: e.to_string(),
    })?;
    let pid = child.id() as i32;
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

/// Starts the router's BIRD (it daemonizes and writes its pid file).
pub fn start_router_bird(
    ns: &str,
    conf: &Path,
    sock: &Path,
    pidfile: &Path,
) -> Result<i32, LabError> {
    sh::in_ns(
        ns,
        "bird",
        &[
            "-c",
            &conf.display().to_string(),
            "-s",
            &sock.display().to_string(),
            "-P",
            &pidfile.display().to_string(),
        ],
    )?;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Some(pid) = read_pid(pidfile) {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(LabError::Io {
        path: pidfile.display().to_string(),
        why: "the router's bird wrote no pid file within 3 s".into(),
    })
}

/// SIGTERM, then SIGKILL after `grace` if still alive.
pub fn stop(pid: i32, grace: Duration) {
    let _ = signal(pid, libc::SIGCONT);
    let _ = signal(pid, libc::SIGTERM);
    let until = Instant::now() + grace;
    while alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if alive(pid) {
        let _ = signal(pid, libc::SIGKILL);
        let until = Instant::now() + Duration::from_secs(2);
        while alive(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
