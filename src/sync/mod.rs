//! anypsp: the proxy-to-proxy protocol (docs/anypsp-link.md for the link).
//!
//! - [`members`]: who the peers are, their addresses, keys and revocation.
//! - [`link`]: the encrypted, mutually authenticated peer link (Noise KK
//!   over TCP), sans-IO.

pub mod link;
pub mod members;
