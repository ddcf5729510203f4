//! The HTTP layer: listeners (`server`), connection slots, idle timeout and
//! eviction (`connections`), request routing
//! and method override (`router`), decoding (`decode`), bodies within limits
//! (`body`) and Butler-style errors (`error`). Knows nothing of redb or QRS.

pub mod body;
pub mod connections;
pub mod decode;
pub mod error;
pub mod router;
pub mod server;
pub mod tls;
