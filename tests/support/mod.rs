//! Shared helpers for the black-box tests. Each test file includes this with
//! `mod support;` and uses only part of it.
#![allow(dead_code)]

pub mod butler;
pub mod fake_qrs;
pub mod in_process;
pub mod pki;
pub mod raw;
pub mod server;
pub mod tls_client;

/// Skips a test that cannot run on this machine, loudly; under `CI` (set by `.ci/run`'s
/// runner) it fails instead, so a scenario CI is meant to prove is never silently skipped.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why}; CI must run this test"
    );
    eprintln!("\n!!!!!!!! SKIPPED {test}: {why} !!!!!!!!\n");
}
