//! Tokio shell for anypsp peer links.
