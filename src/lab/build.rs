//! `lab up`, `lab down`, `lab status`: namespaces, links, addresses, NAT,
//! routing, and the processes.

use super::topo::{Site, ANYCAST4, ANYCAST6, P};
use super::{conf, io_err, procs, sh, Lab, LabError};
use crate::crypto::SecretKey;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `up` did.
#[derive(Debug, Clone)]
pub struct UpReport {
    /// Whether the namespaces were built now (false: they existed).
    pub built: bool,
    /// Proxies whose anytund was started now.
    pub started: Vec<P>,
    /// From the start of `up` until both sites had their nearest proxy's
    /// route, IPv4 and IPv6.
    pub ready_after: Duration,
}

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// sysctls of every namespace: forwarding on, no IPv6 duplicate address
/// detection (a tentative address would delay the v6 BGP session).
const COMMON_SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
];

impl Lab {
    /// Brings the lab up: builds what is missing (all of it, if any
    /// namespace is missing) and starts every process that is not running.
    /// Running it again on a lab that is up changes nothing.
    pub fn up(&self) -> Result<UpReport, LabError> {
        super::preflight()?;
        let t0 = Instant::now();
        let complete =
            self.names.all().iter().all(|n| ns_exists(n)) && self.run.join("network.key").exists();
        if !complete {
            // A half-built lab (a crash mid-way) is rebuilt from nothing.
            self.down()?;
            self.build()?;
        }
        let router_pid = procs::read_pid(&self.run.join("router/bird.pid"));
        if !router_pid.is_some_and(procs::alive) {
            self.start_router()?;
        }
        let mut started = Vec::new();
        for p in P::all() {
            if self.anytund_pid(p).is_none() {
                self.start_proxy(p)?;
                started.push(p);
            }
        }
        self.wait_settled(Duration::from_secs(20))?;
        Ok(UpReport {
            built: !complete,
            started,
            ready_after: t0.elapsed(),
        })
    }

    /// Removes everything: every process in the lab's namespaces (found
    /// through the namespaces, so this works after a crash too), the
    /// namespaces and the run folder.
    pub fn down(&self) -> Result<(), LabError> {
        super::preflight()?;
        for ns in self.names.all() {
            if !ns_exists(&ns) {
                continue;
            }
            let pids = sh::run("ip", &["netns", "pids", &ns]).unwrap_or_default();
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = procs::signal(pid, libc::SIGKILL);
            }
        }
        // anytund's BIRD dies with it; the router's is in its namespace.
        for ns in self.names.all() {
            if ns_exists(&ns) {
                sh::run("ip", &["netns", "del", &ns])?;
            }
        }
        if self.run.exists() {
            fs::remove_dir_all(&self.run).map_err(io_err(&self.run))?;
        }
        Ok(())
    }

    /// Builds the namespaces, links, addresses, NAT, routing rules and
    /// config files (no processes).
    fn build(&self) -> Result<(), LabError> {
        fs::create_dir_all(&self.run).map_err(io_err(&self.run))?;
        let n = &self.names;
        for ns in n.all() {
            sh::run("ip", &["netns", "add", &ns])?;
            sh::ip(&ns, "link set lo up")?;
            sh::sysctl(&ns, COMMON_SYSCTLS)?;
        }
        let rt = n.router();
        // Loose reverse-path filtering: a reply from a proxy that is not the
        // site's best route now (in-flight after a failover) must pass.
        sh::sysctl(
            &rt,
            &[
                "net.ipv4.conf.all.rp_filter=2",
                "net.ipv4.conf.default.rp_filter=2",
            ],
        )?;
        for p in P::all() {
            let ns = n.proxy(p);
            // Without this, setting up0 down flushes the IPv6 address and
            // the v6 BGP session never comes back.
            sh::sysctl(
                &ns,
                &[
                    "net.ipv6.conf.all.keep_addr_on_down=1",
                    "net.ipv6.conf.default.keep_addr_on_down=1",
                ],
            )?;
            let rtif = format!("rt-{}", p.name());
            sh::ip(
                &ns,
                &format!("link add up0 type veth peer name {rtif} netns {rt}"),
            )?;
            for a in [
                format!("{ANYCAST4}/32"),
                format!("{ANYCAST6}/128"),
                format!("{}/32", p.unicast4()),
                format!("{}/128", p.unicast6()),
            ] {
                sh::ip(&ns, &format!("addr add {a} dev lo"))?;
            }
            sh::ip(&ns, &format!("addr add {}/24 dev up0", p.up4()))?;
            sh::ip(&ns, &format!("addr add {}/64 dev up0 nodad", p.up6()))?;
            sh::ip(&ns, "link set up0 up")?;
            sh::ip(&ns, &format!("route add default via {}", p.rt4()))?;
            sh::ip(&ns, &format!("-6 route add default via {}", p.rt6()))?;
            sh::ip(&rt, &format!("addr add {}/24 dev {rtif}", p.rt4()))?;
            sh::ip(&rt, &format!("addr add {}/64 dev {rtif} nodad", p.rt6()))?;
            sh::ip(&rt, &format!("link set {rtif} up"))?;
            // Peers reach each other at their unicast addresses.
            sh::ip(
                &rt,
                &format!("route add {}/32 via {}", p.unicast4(), p.up4()),
            )?;
            sh::ip(
                &rt,
                &format!("-6 route add {}/128 via {}", p.unicast6(), p.up6()),
            )?;
        }
        for s in Site::ALL {
            let (nat, site) = (n.nat(s), n.site(s));
            let rtif = format!("rt-n{}", s.letter());
            sh::ip(
                &nat,
                &format!("link add up0 type veth peer name {rtif} netns {rt}"),
            )?;
            sh::ip(
                &nat,
                &format!("link add in0 type veth peer name up0 netns {site}"),
            )?;
            sh::ip(&nat, &format!("addr add {}/24 dev up0", s.nat4()))?;
            sh::ip(&nat, &format!("addr add {}/64 dev up0 nodad", s.nat6()))?;
            sh::ip(&nat, &format!("addr add {}/24 dev in0", s.gw4()))?;
            sh::ip(&nat, &format!("addr add {}/64 dev in0 nodad", s.gw6()))?;
            sh::ip(&nat, "link set up0 up")?;
            sh::ip(&nat, "link set in0 up")?;
            sh::ip(&nat, &format!("route add default via {}", s.rt4()))?;
            sh::ip(&nat, &format!("-6 route add default via {}", s.rt6()))?;
            sh::ip(&rt, &format!("addr add {}/24 dev {rtif}", s.rt4()))?;
            sh::ip(&rt, &format!("addr add {}/64 dev {rtif} nodad", s.rt6()))?;
            sh::ip(&rt, &format!("link set {rtif} up"))?;
            sh::ip(&site, &format!("addr add {}/24 dev up0", s.host4()))?;
            sh::ip(&site, &format!("addr add {}/64 dev up0 nodad", s.host6()))?;
            sh::ip(&site, "link set up0 up")?;
            sh::ip(&site, &format!("route add default via {}", s.gw4()))?;
            sh::ip(&site, &format!("-6 route add default via {}", s.gw6()))?;
            // Every source port rewritten, even when the original is free:
            // the proxies see the NAT's choice, as on the Internet.
            sh::nft(
                &nat,
                "table inet anytunlab_nat {\n\
                 \tchain post {\n\
                 \t\ttype nat hook postrouting priority srcnat;\n\
                 \t\toifname \"up0\" masquerade random,fully-random\n\
                 \t}\n}\n",
            )?;
            // Each site's packets go through its own table (the router's
            // BIRD fills 101 and 102); no route there: main (the replies).
            for fam in ["-4", "-6"] {
                sh::ip(
                    &rt,
                    &format!("{fam} rule add iif {rtif} lookup {} pref 100", s.table()),
                )?;
            }
        }
        self.write_files()
    }

    /// Configs, keys and the subscriber store.
    fn write_files(&self) -> Result<(), LabError> {
        let key_path = self.run.join("network.key");
        let network = SecretKey::generate();
        network
            .write_new_file(&key_path)
            .map_err(|e| LabError::Io {
                path: key_path.display().to_string(),
                why: e.to_string(),
            })?;
        let pub_path = self.run.join("network.pub");
        fs::write(&pub_path, format!("{}\n", network.public())).map_err(io_err(&pub_path))?;
        let rt = self.run.join("router");
        fs::create_dir_all(&rt).map_err(io_err(&rt))?;
        let conf = rt.join("bird.conf");
        fs::write(&conf, conf::router_bird(&rt.join("bird.log"))).map_err(io_err(&conf))?;
        let mut node_public = std::collections::HashMap::new();
        for p in P::all() {
            let dir = self.proxy_dir(p);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            if self.sync {
                let k = SecretKey::generate();
                let path = dir.join("node.key");
                k.write_new_file(&path).map_err(|e| LabError::Io {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
                node_public.insert(p, k.public().to_string());
            }
        }
        for p in P::all() {
            let dir = self.proxy_dir(p);
            // Each proxy keeps its own copy (its send-epoch lease lives
            // beside it).
            let k = dir.join("network.key");
            fs::copy(&key_path, &k).map_err(io_err(&k))?;
            let b = dir.join("bird.conf");
            fs::write(&b, conf::proxy_bird(p, &dir.join("bird.log"))).map_err(io_err(&b))?;
            let more = (self.extra_toml)(p);
            let mut extra = if self.sync {
                conf::sync_toml(p, |q| node_public[&q].clone())
            } else {
                String::new()
            };
            extra.push_str(&more.tables);
            let t = dir.join("anytund.toml");
            fs::write(
                &t,
                conf::anytund_toml(
                    p,
                    if self.sync {
                        "subscribers.db"
                    } else {
                        "../subscribers.db"
                    },
                    &more.top,
                    &extra,
                ),
            )
            .map_err(io_err(&t))?;
        }
        // Create the store now, so the proxies find it.
        self.add_user("lab")?;
        Ok(())
    }

    fn start_router(&self) -> Result<(), LabError> {
        let dir = self.run.join("router");
        let pidfile = dir.join("bird.pid");
        let _ = fs::remove_file(&pidfile);
        procs::start_router_bird(
            &self.names.router(),
            &dir.join("bird.conf"),
            &dir.join("bird.ctl"),
            &pidfile,
        )
        .map(drop)
    }

    /// Starts proxy `p`'s anytund (which starts its BIRD).
    pub fn start_proxy(&self, p: P) -> Result<i32, LabError> {
        let dir = self.proxy_dir(p);
        let conf = dir.join("anytund.toml").display().to_string();
        let pid = procs::spawn_in(
            &self.names.proxy(p),
            &self.anytund,
            &["--config", &conf],
            &dir.join("anytund.log"),
        )?;
        let pidfile = dir.join("anytund.pid");
        fs::write(&pidfile, format!("{pid}\n")).map_err(io_err(&pidfile))?;
        Ok(pid)
    }

    /// A human summary: processes, announcements, each site's route.
    pub fn status(&self) -> Result<String, LabError> {
        super::preflight()?;
        let mut s = String::new();
        let missing: Vec<String> = self
            .names
            .all()
            .into_iter()
            .filter(|n| !ns_exists(n))
            .collect();
        if missing.len() == self.names.all().len() {
            return Ok(format!("lab {} is down\n", self.names.prefix));
        }
        if !missing.is_empty() {
            s.push_str(&format!("missing namespaces: {}\n", missing.join(" ")));
        }
        s.push_str(&format!(
            "lab {} (run folder {})\n",
            self.names.prefix,
            self.run.display()
        ));
        for p in P::all() {
            let state = match self.anytund_pid(p) {
                None => "anytund not running".to_owned(),
                Some(pid) if procs::stopped(pid) => format!("anytund {pid} FROZEN"),
                Some(pid) => format!("anytund {pid}"),
            };
            let bird = self
                .bird_pid(p)
                .map_or("no bird".into(), |b| format!("bird {b}"));
            s.push_str(&format!(
                "  {p} ({}): {state}, {bird}\n",
                self.names.proxy(p)
            ));
        }
        for site in Site::ALL {
            let show = |v6| match self.route(site, v6) {
                Ok(Some(p)) => p.name(),
                Ok(None) => "none".into(),
                Err(e) => format!("? ({e})"),
            };
            s.push_str(&format!(
                "  site {} -> IPv4 {}, IPv6 {} (preference {:?})\n",
                site.letter(),
                show(false),
                show(true),
                site.preference().map(|p| p.name())
            ));
        }
        Ok(s)
    }
}
