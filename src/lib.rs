//! butler-edge: a Butler-compatible REST appliance for Qlik Sense.
//!
//! Layers, each knowing only the one below it (see README, "Architecture"):
//! `http` (listeners, limits, routing, Butler-style errors) → `api` (one module per
//! endpoint group) → `kv` (durable store). Configuration is parsed once by `config`.

pub mod api;
pub mod appliance;
pub mod authz;
pub mod check;
pub mod config;
pub mod disk;
pub mod http;
pub mod init;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod privileges;
pub mod qrs;
pub mod security;
pub mod service;
pub mod state;
pub mod systemd;
pub mod tasks;
