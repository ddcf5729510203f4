//! The HTTP layer: listeners (`server`), connection slots, idle timeout and
//! eviction (`connections`), request routing
//! and method override (`router`), decoding (`decode`), bodies within limits
//! (`body`), Butler-style errors (`error`) and the per-request record (`access_log`).
//! Knows nothing of redb or QRS. TLS settings are `security`'s; this layer only runs the
//! handshake with them.

pub mod access_log;
pub mod body;
pub mod connections;
pub mod decode;
pub mod error;
pub mod handler;
pub mod response;
pub mod server;
