//! Running code of this process inside a lab namespace: sockets keep the
//! namespace they were made in, so a client started while the thread is
//! inside a site's namespace talks from that site for its whole life.

use super::LabError;
use std::fs::File;
use std::os::fd::AsRawFd;

/// Runs `f` with this thread inside network namespace `name` (made by
/// `ip netns add`), then returns the thread to where it was. `f` must not
/// await or move to another thread: only sockets it creates stay inside.
pub fn within<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, LabError> {
    let open = |p: &str| {
        File::open(p).map_err(|e| LabError::Io {
            path: p.to_owned(),
            why: e.to_string(),
        })
    };
    let here = open("/proc/thread-self/ns/net")?;
    let there = open(&format!("/run/netns/{name}"))?;
    let enter = |f: &File, what: &str| {
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LabError::Io {
                path: what.to_owned(),
                why: format!("setns: {}", std::io::Error::last_os_error()),
            });
        }
        Ok(())
    };
    enter(&there, name)?;
    let out = f();
    // Back: a thread left in the site would put every later socket there.
    if let Err(e) = enter(&here, "the original namespace") {
        // Nothing sane can continue on this thread.
        panic!("{e}");
    }
    Ok(out)
}
