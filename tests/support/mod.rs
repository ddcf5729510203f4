//! Shared helpers for the tests. The two test binaries (`tests/it.rs`, `tests/fault.rs`)
//! and the benchmarks compile this once each and use only part of it.
#![allow(dead_code)]

pub mod appliance;
pub mod butler;
pub mod fake_qrs;
pub mod in_process;
pub mod pki;
pub mod rauc;
pub mod raw;
pub mod server;
pub mod store_file;
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

/// Held for the whole of a test that must run alone (the fault tests, see `tests/fault.rs`).
/// A test that failed while holding it does not poison it for the next.
pub fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// SHA-256 of `bytes`, lower-case hex (as the update files record bundles).
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
