//! Tokio shells around the sans-IO cores: sockets, timers, tasks.
//!
//! - [`udp`]: batched UDP I/O (recvmmsg/sendmmsg) that reports and sets the
//!   local address of each datagram, so replies leave from the anycast
//!   address the client used.
//! - [`proxy`]: runs a [`crate::proxy::Proxy`] on one or more sockets.
//! - [`client`]: runs a [`crate::client::Client`] against one proxy address.
//! - [`peers`]: runs the anypsp peer links ([`crate::sync::link`]) over TCP.
//! - [`announce`]: runs the routing daemon (BIRD) and announces the anycast
//!   routes only while the proxy is ready.
//! - [`overload`]: when a proxy counts as overloaded (sans-IO meter).
//! - [`supervise`]: the routes follow the proxy's health: the announcer
//!   and the overload meter beside a running node, for every host.
//! - [`node`]: one proxy on a thread pool of its own: UDP, peer links and
//!   replication, started and stopped as a whole.
//! - [`host`]: a proxy booted from a config on a node (keys, store, epoch
//!   lease, metrics): what `anytund` and the C ABI's hosted proxy share.
//! - [`subscribers`]: the subscriber store beside a proxy: reloads, and
//!   replication of its changes.

pub mod announce;
pub mod client;
pub mod host;
pub mod node;
pub mod overload;
pub mod peers;
pub mod proxy;
pub mod subscribers;
pub mod supervise;
pub mod udp;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the shells.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Wall-clock time for handshake timestamps (the cores never read clocks).
pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
