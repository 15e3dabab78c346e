//! Reading a lab proxy's `/status` (its metrics listener is on
//! 127.0.0.1:9475 inside its own namespace).

use super::topo::P;
use super::{netns, Lab, LabError};
use crate::metrics::Status;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

impl Lab {
    /// Proxy `p`'s `/status` (blocking, at most 2 s).
    pub fn proxy_status(&self, p: P) -> Result<Status, LabError> {
        let err = |why: String| LabError::Io {
            path: format!("{p} /status"),
            why,
        };
        let mut s = netns::within(&self.names.proxy(p), || {
            TcpStream::connect_timeout(
                &"127.0.0.1:9475".parse().expect("literal"),
                Duration::from_secs(2),
            )
        })?
        .map_err(|e| err(e.to_string()))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| err(e.to_string()))?;
        s.write_all(b"GET /status HTTP/1.0\r\nHost: lab\r\n\r\n")
            .map_err(|e| err(e.to_string()))?;
        let mut body = Vec::new();
        s.take(1 << 20)
            .read_to_end(&mut body)
            .map_err(|e| err(e.to_string()))?;
        let text = String::from_utf8_lossy(&body);
        let json = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| err("no HTTP body".into()))?;
        serde_json::from_str(json).map_err(|e| err(format!("{e}: {json}")))
    }

    /// Waits until `f` holds for every running proxy's `/status`; returns
    /// how long that took.
    pub fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&Status) -> bool,
    ) -> Result<Duration, LabError> {
        let t0 = Instant::now();
        loop {
            let mut all = true;
            for p in P::all().filter(|&p| self.anytund_pid(p).is_some()) {
                if !self.proxy_status(p).is_ok_and(|s| f(&s)) {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                return Err(LabError::Timeout {
                    what: what.to_owned(),
                    ms: limit.as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the lab is settled: every running proxy ready, synced
    /// and linked to every peer, each site routed to its nearest running
    /// proxy, every BFD session at its 60 ms detection time. Returns how
    /// long that took.
    pub fn wait_settled(&self, limit: Duration) -> Result<Duration, LabError> {
        let t0 = Instant::now();
        let running: Vec<P> = P::all()
            .filter(|&p| self.anytund_pid(p).is_some())
            .collect();
        self.wait_status(
            "every proxy ready, synced and linked to its peers",
            limit,
            |s| {
                s.ready
                    && s.sync.as_ref().is_none_or(|y| {
                        (y.synced || y.solo)
                            && y.peers
                                .iter()
                                .filter(|q| running.contains(&P(q.node as u8)))
                                .all(|q| q.state() == "up")
                    })
            },
        )?;
        for site in super::Site::ALL {
            let nearest = site.preference().into_iter().find(|p| running.contains(p));
            self.wait_route(site, nearest, limit.saturating_sub(t0.elapsed()))?;
        }
        for &p in &running {
            self.wait_bfd(p, limit.saturating_sub(t0.elapsed()))?;
        }
        Ok(t0.elapsed())
    }
}
