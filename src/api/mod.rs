//! Endpoint handlers, one module per endpoint group. They validate input, call
//! the layer below (`kv`, later `tasks`) and render Butler's response shapes.

pub mod health;
pub mod kv;
pub mod ping;
pub mod start_task;
