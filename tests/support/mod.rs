//! Shared helpers for the black-box tests. Each test file includes this with
//! `mod support;` and uses only part of it.
#![allow(dead_code)]

pub mod appliance;
pub mod fake_qrs;
pub mod pki;
pub mod raw;
pub mod server;
pub mod tls_client;
