//! The knobs: what a real network does to a proxy, one call each.

use super::topo::{Site, P};
use super::{procs, sh, Lab, LabError};
use std::time::Duration;

/// A knob of `anytun lab`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    /// SIGKILL of anytund (its BIRD dies with it).
    Kill,
    /// SIGSTOP of anytund and its BIRD: only BFD notices.
    Freeze,
    /// SIGCONT after a freeze.
    Thaw,
    /// Drop everything in and out of the proxy's uplink (a silent death).
    Blackhole,
    /// Undo a black hole.
    Heal,
    /// Graceful drain: anytund withdraws its route and keeps serving.
    Withdraw,
    /// Announce again after a withdraw.
    Announce,
    /// Cut the proxy off from its peers (clients and BGP still pass).
    Partition,
    /// Undo a partition.
    Unpartition,
    /// Start anytund again (stopping it first if it runs).
    Restart,
}

impl std::str::FromStr for Knob {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "kill" => Knob::Kill,
            "freeze" => Knob::Freeze,
            "thaw" => Knob::Thaw,
            "blackhole" => Knob::Blackhole,
            "heal" => Knob::Heal,
            "withdraw" => Knob::Withdraw,
            "announce" => Knob::Announce,
            "partition" => Knob::Partition,
            "unpartition" => Knob::Unpartition,
            "restart" => Knob::Restart,
            _ => return Err(format!("no knob {s:?}")),
        })
    }
}

const BLACKHOLE: &str = "anytunlab_blackhole";
const PARTITION: &str = "anytunlab_partition";

impl Lab {
    fn running(&self, p: P) -> Result<i32, LabError> {
        self.anytund_pid(p)
            .ok_or_else(|| LabError::NotUp(format!("{p}: anytund is not running")))
    }

    /// Turns knob `k` on proxy `p`.
    pub fn knob(&self, k: Knob, p: P) -> Result<(), LabError> {
        let ns = self.names.proxy(p);
        match k {
            Knob::Kill => procs::signal(self.running(p)?, libc::SIGKILL),
            Knob::Freeze | Knob::Thaw => {
                let pid = self.running(p)?;
                let sig = if k == Knob::Freeze {
                    libc::SIGSTOP
                } else {
                    libc::SIGCONT
                };
                // BIRD first on freeze (it is what BFD hears), last on thaw.
                let bird = self.bird_pid(p);
                if k == Knob::Freeze {
                    if let Some(b) = bird {
                        procs::signal(b, sig)?;
                    }
                    procs::signal(pid, sig)
                } else {
                    procs::signal(pid, sig)?;
                    if let Some(b) = bird {
                        procs::signal(b, sig)?;
                    }
                    Ok(())
                }
            }
            Knob::Withdraw => procs::signal(self.running(p)?, libc::SIGUSR1),
            Knob::Announce => procs::signal(self.running(p)?, libc::SIGUSR2),
            Knob::Blackhole => sh::nft(
                &ns,
                &format!(
                    "table inet {BLACKHOLE} {{\n\
                     \tchain in {{ type filter hook prerouting priority -300; iifname \"up0\" drop; }}\n\
                     \tchain out {{ type filter hook output priority -300; oifname \"up0\" drop; }}\n}}\n"
                ),
            ),
            Knob::Heal => delete_table(&ns, BLACKHOLE),
            // The peer links are TCP on SYNC_PORT; their sources may be
            // the uplink addresses, so the port is what tells them apart.
            Knob::Partition => sh::nft(
                &ns,
                &format!(
                    "table inet {PARTITION} {{\n\
                     \tchain in {{ type filter hook input priority 0;\n\
                     \t\tiifname \"up0\" tcp dport {port} drop;\n\
                     \t\tiifname \"up0\" tcp sport {port} drop; }}\n\
                     \tchain out {{ type filter hook output priority 0;\n\
                     \t\toifname \"up0\" tcp dport {port} drop;\n\
                     \t\toifname \"up0\" tcp sport {port} drop; }}\n}}\n",
                    port = super::conf::SYNC_PORT
                ),
            ),
            Knob::Unpartition => delete_table(&ns, PARTITION),
            Knob::Restart => {
                if let Some(pid) = self.anytund_pid(p) {
                    procs::stop(pid, Duration::from_secs(3));
                }
                self.start_proxy(p).map(drop)
            }
        }
    }

    /// Flushes site `s`'s NAT mappings (conntrack -D): the client's next
    /// packet leaves from a new outside port.
    pub fn rebind(&self, s: Site) -> Result<(), LabError> {
        // conntrack exits 1 when there was nothing to delete.
        match sh::in_ns(&self.names.nat(s), "conntrack", &["-D", "-p", "udp"]) {
            Ok(_) => Ok(()),
            Err(LabError::Tool { why, .. }) if why.contains("0 flow entries") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn delete_table(ns: &str, table: &str) -> Result<(), LabError> {
    match sh::in_ns(ns, "nft", &["delete", "table", "inet", table]) {
        Ok(_) => Ok(()),
        // Already gone: healed twice is healed.
        Err(LabError::Tool { why, .. }) if why.contains("No such file") => Ok(()),
        Err(e) => Err(e),
    }
}
