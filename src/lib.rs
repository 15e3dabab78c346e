//! anytun: an anycast VoIP proxy network.
//!
//! The crate is one sans-IO protocol core and the shells around it:
//!
//! - [`wire`]: every packet layout; where bytes from the network are parsed.
//! - [`crypto`], [`handshake`]: keys, the data-path AEAD, the Noise IK
//!   handshake and its denial-of-service defences.
//! - [`session`]: session ids, keys, counters and replay windows.
//! - [`call`]: names, causes, reliable control delivery, end-to-end keys.
//! - [`proxy`]: the proxy state machine; where a session lives and where a
//!   call is routed.
//! - [`client`]: the client state machine.
//! - [`runtime`]: tokio shells that drive the cores over UDP sockets.
//! - [`ffi`]: the C ABI (`include/anytun.h`), the client library for
//!   phones and Asterisk.
//! - [`sync`]: anypsp, between proxies: membership, the peer link and the
//!   table sync engine.
//! - [`lab`]: the anycast lab of network namespaces (`anytun lab`).
//! - [`store`], [`config`], [`audio`], [`demo`]: the subscriber store, the
//!   daemon's configuration, audio files and codecs, the built-in demo.
//!
//! The cores never touch a socket, a thread or a clock: callers pass in
//! datagrams and the time and get back datagrams to send, events and the next
//! time they want to be called.

#![warn(missing_docs)]

pub mod audio;
pub mod call;
pub mod client;
#[cfg(feature = "daemon")]
pub mod config;
pub mod crypto;
#[cfg(feature = "daemon")]
pub mod demo;
pub mod ffi;
pub mod handshake;
#[cfg(feature = "daemon")]
pub mod lab;
#[cfg(feature = "daemon")]
pub mod media;
#[cfg(feature = "daemon")]
pub mod metrics;
pub mod proxy;
#[cfg(feature = "daemon")]
pub mod runtime;
pub mod session;
pub mod sim;
#[cfg(feature = "daemon")]
pub mod store;
#[cfg(feature = "daemon")]
pub mod sync;
#[cfg(feature = "daemon")]
pub mod testbed;
pub mod wire;
