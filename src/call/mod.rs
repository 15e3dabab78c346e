//! The call layer: names, causes, reliable control delivery and end-to-end
//! encryption between the two clients of a call. Routing of calls between
//! sessions lives in `proxy::calls`; the client's call states in `client`.

pub mod cause;
pub mod e2e;
pub mod name;
pub mod reliable;

pub use cause::Cause;
pub use name::{validate_name, Name, NameError};

/// A call id, where a message may or may not belong to a call.
pub type CallIdOpt = Option<crate::session::CallId>;
