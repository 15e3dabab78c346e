//! `anytun lab ...`: the lab's command line.

use super::knobs::Knob;
use super::topo::{Site, P};
use super::{Lab, LabError, DEFAULT_PREFIX};
use std::path::PathBuf;

/// Options every `anytun lab` command takes.
#[derive(clap::Args, Clone, Debug)]
pub struct LabOpts {
    /// Namespace prefix (1-8 letters or digits): several labs can coexist.
    #[arg(long, default_value = DEFAULT_PREFIX, global = true)]
    pub prefix: String,
    /// Run folder (configs, keys, pids, logs); default /run/anytun-lab/PREFIX.
    #[arg(long, global = true)]
    pub run_dir: Option<PathBuf>,
    /// The anytund binary (default: beside this executable).
    #[arg(long, global = true)]
    pub anytund: Option<PathBuf>,
}

/// `anytun lab` subcommands.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum LabCmd {
    /// Build the namespaces and start everything (again: no change).
    Up,
    /// Remove every namespace, process and file of the lab.
    Down,
    /// Processes, announcements and each site's route.
    Status,
    /// SIGKILL the proxy's anytund (its BIRD dies with it).
    Kill {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// SIGSTOP the proxy's anytund and BIRD (only BFD notices).
    Freeze {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// SIGCONT after freeze.
    Thaw {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// Drop everything on the proxy's uplink (silent death).
    Blackhole {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// Undo blackhole.
    Heal {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// Drain: withdraw the route, keep serving what still arrives.
    Withdraw {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// Announce again after withdraw.
    Announce {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// Cut the proxy off from its peers (clients and BGP still pass).
    Partition {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// Undo partition.
    Unpartition {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// Start the proxy's anytund again (stopping it first if running).
    Restart {
        /// p1, p2 or p3.
        proxy: P,
    },
    /// Flush a site's NAT mappings (conntrack -D): new outside ports.
    Rebind {
        /// A or B.
        site: Site,
    },
}

/// Runs one `anytun lab` command; what it prints on success.
pub fn run(cmd: LabCmd, opts: LabOpts) -> Result<String, LabError> {
    let lab = Lab::new(&opts.prefix, opts.run_dir, opts.anytund)?;
    let knob = |k: Knob, p: P| -> Result<String, LabError> {
        lab.knob(k, p)?;
        Ok(format!("{p}: {k:?} done\n"))
    };
    match cmd {
        LabCmd::Up => {
            let r = lab.up()?;
            Ok(format!(
                "lab {} up ({}; started {:?}); both sites routed to their nearest proxy after {} ms\n{}",
                lab.names.prefix,
                if r.built { "built now" } else { "was built" },
                r.started.iter().map(|p| p.name()).collect::<Vec<_>>(),
                r.ready_after.as_millis(),
                lab.status()?
            ))
        }
        LabCmd::Down => {
            lab.down()?;
            Ok(format!("lab {} down\n", lab.names.prefix))
        }
        LabCmd::Status => lab.status(),
        LabCmd::Kill { proxy } => knob(Knob::Kill, proxy),
        LabCmd::Freeze { proxy } => knob(Knob::Freeze, proxy),
        LabCmd::Thaw { proxy } => knob(Knob::Thaw, proxy),
        LabCmd::Blackhole { proxy } => knob(Knob::Blackhole, proxy),
        LabCmd::Heal { proxy } => knob(Knob::Heal, proxy),
        LabCmd::Withdraw { proxy } => knob(Knob::Withdraw, proxy),
        LabCmd::Announce { proxy } => knob(Knob::Announce, proxy),
        LabCmd::Partition { proxy } => knob(Knob::Partition, proxy),
        LabCmd::Unpartition { proxy } => knob(Knob::Unpartition, proxy),
        LabCmd::Restart { proxy } => knob(Knob::Restart, proxy),
        LabCmd::Rebind { site } => {
            lab.rebind(site)?;
            Ok(format!("site {}: NAT mappings flushed\n", site.letter()))
        }
    }
}
