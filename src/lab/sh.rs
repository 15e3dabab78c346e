//! Running `ip`, `nft`, `sysctl`, `birdc` as processes, with their errors
//! in words.

use super::LabError;
use std::process::{Command, Stdio};

/// Runs `prog args...`; its stdout on success.
pub fn run(prog: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Tool {
            command: format!("{prog} {}", args.join(" ")),
            why: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{prog} is not installed (scripts/test.sh installs it)")
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        return Err(LabError::Tool {
            command: format!("{prog} {}", args.join(" ")),
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `prog args...` inside namespace `ns`.
pub fn in_ns(ns: &str, prog: &str, args: &[&str]) -> Result<String, LabError> {
    let mut all = vec!["netns", "exec", ns, prog];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// `ip ARGS` inside namespace `ns` (`ip -n NS ...`, no exec of a shell).
pub fn ip(ns: &str, args: &str) -> Result<String, LabError> {
    let mut all = vec!["-n", ns];
    all.extend(args.split_whitespace());
    run("ip", &all)
}

/// Sets sysctls `key=value` inside namespace `ns`.
pub fn sysctl(ns: &str, settings: &[&str]) -> Result<(), LabError> {
    let mut args = vec!["-q", "-w"];
    args.extend_from_slice(settings);
    in_ns(ns, "sysctl", &args).map(drop)
}

/// Loads an nft ruleset (text) inside namespace `ns`.
pub fn nft(ns: &str, ruleset: &str) -> Result<(), LabError> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::Tool {
            command: "nft -f -".into(),
            why: e.to_string(),
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(ruleset.as_bytes())
        .map_err(|e| LabError::Tool {
            command: "nft -f -".into(),
            why: e.to_string(),
        })?;
    let out = child.wait_with_output().map_err(|e| LabError::Tool {
        command: "nft -f -".into(),
        why: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(LabError::Tool {
            command: format!("nft -f - (in {ns})"),
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Whether a tool is installed (on PATH).
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}
