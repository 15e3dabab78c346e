//! BIRD and birdc are signalled through a pidfd ([`ChildRef`]).

use super::*;
use std::os::unix::process::ExitStatusExt;

/// Spawns `sleep 60`, reaps it behind std's back (as Asterisk's SIGCHLD
/// handler does: `waitpid`) and makes the next process take its pid
/// (`/proc/sys/kernel/ns_last_pid`, root only): the reference taken at the
/// spawn, and the unrelated process now holding the pid. None when another
/// process of the machine took the pid first (the caller tries again).
fn reaped_and_reused(use_pidfd: bool) -> Option<(ChildRef, std::process::Child)> {
    let mut old = Command::new("sleep").arg("60").spawn().unwrap();
    let mut r = ChildRef::of(&old);
    assert!(
        matches!(r.how, Reach::Pidfd(_)),
        "pidfd_open failed on this kernel"
    );
    if !use_pidfd {
        r.how = Reach::Pid;
    }
    let pid = old.id() as libc::pid_t;
    // SAFETY: our child, not yet waited for; status may be NULL.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        assert_eq!(libc::waitpid(pid, std::ptr::null_mut(), 0), pid);
    }
    // What std sees in such a host: the status is gone.
    let e = old.wait().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECHILD), "{e}");
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
        .expect("this test needs root (it writes /proc/sys/kernel/ns_last_pid)");
    let mut new = Command::new("sleep").arg("60").spawn().unwrap();
    if new.id() == pid as u32 {
        return Some((r, new));
    }
    new.kill().unwrap();
    new.wait().unwrap();
    None
}

/// The signal that ended `new` after `r` signalled SIGKILL and the test
/// SIGTERM: 9 if `r` reached it (delivered before kill returns), else 15.
fn ended_by(r: &ChildRef, mut new: std::process::Child) -> i32 {
    r.signal(Stop::Kill);
    // SAFETY: our child, not yet waited for.
    unsafe { libc::kill(new.id() as libc::pid_t, libc::SIGTERM) };
    new.wait().unwrap().signal().unwrap()
}

/// A child reaped by the host whose pid an unrelated process now holds:
/// the signal meant for the child never reaches that process (through the
/// pidfd), where the bare pid (the fallback without pidfd_open, and what
/// was done before) does kill it.
#[test]
fn a_reaped_child_s_reused_pid_is_never_signalled() {
    for use_pidfd in [true, false] {
        let (r, new) = (0..50)
            .find_map(|_| reaped_and_reused(use_pidfd))
            .expect("the pid was never reused in 50 tries");
        let sig = ended_by(&r, new);
        if use_pidfd {
            assert_eq!(
                sig,
                libc::SIGTERM,
                "the pidfd signalled the pid's new holder"
            );
        } else {
            assert_eq!(sig, libc::SIGKILL, "the bare pid reaches the new holder");
        }
    }
}

/// A child the host reaped before its pidfd was opened (pidfd_open says
/// ESRCH) is never signalled: its pid may name another process already.
#[test]
fn a_child_reaped_before_its_pidfd_is_never_signalled() {
    let mut old = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = old.id() as libc::pid_t;
    // SAFETY: our child, not yet waited for; status may be NULL.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        assert_eq!(libc::waitpid(pid, std::ptr::null_mut(), 0), pid);
    }
    let r = ChildRef::of(&old);
    assert!(
        matches!(r.how, Reach::Gone),
        "a reaped child is reached by its pid"
    );
    assert!(old.wait().is_err());
}
