//! The functional tests: one test binary, so `tests/support` is compiled and linked once.
//! (`tests/fault.rs` holds the fault tests, which run one at a time.)
//!
//! Where a new test goes:
//! - a key-value endpoint's behaviour (statuses, bodies, names) → `kv_api`;
//!   listing order → `listing_order`; what butler_subs.qvs sends, byte for byte → `butler_subs`
//! - starting tasks through QRS, the start-task body and answers → `start_task`
//! - the fake QRS's own faithfulness to QRS → `fake_qrs`; the runnable fake QRS
//!   (`cargo run --example fake-qrs`) → `fake_qrs_program`
//! - what survives restarts, `kill -9` and damage → `durability`; the database's format
//!   version (newer and older releases on one file) → `store_format`
//! - routing, enablement, limits, quotas, TTLs or timeouts that need no process of its own →
//!   `in_process` (runs the service in this process through `app::prepare` + `Service::run`
//!   on a loopback socket: async tests with paused tokio time for timeouts, or blocking ones
//!   with the usual `Butler` client through `InProcess::on_thread`)
//! - HTTPS on the listener → `tls`; client certificates and permissions → `client_auth`;
//!   API tokens (`clientAuth.mode`, rotation, plain-HTTP refusal) → `api_tokens`
//! - `/health` and `/metrics` → `health_metrics`; store export and restore (`/v4/admin/store`)
//!   → `admin_store`
//! - config loading and `check-config` → `config`; `init` → `init`
//! - systemd notify, root refusal, `--user`, the free-disk guard seen by the appliance →
//!   `appliance`; the shipped unit files → `systemd_unit`
//! - `butler-edge provision` (the provisioning medium) → `provision`; the appliance console
//!   and the one-time enrolment → `appliance_console` (the appliance image itself is booted by
//!   `image/test`)
//! - A/B updates: `install-update` against the real RAUC, `PUT /v4/admin/update` → `update`
//!   (confirm-boot's decisions are unit tests in `src/update/trial.rs`; booting the slots is
//!   image/update-test's, in qemu)
//! - input parsers that must never panic → `properties`
//! - the layer table and import cycles → `architecture`
//! - faults (a full disk, hostile clients, crash loops, resource exhaustion) → `tests/fault.rs`
//!
//! Helpers live in `tests/support` (`support::server::Launch` runs the binary — `.spawn()`
//! for a `Server` that serves, `.expect_exit()` for a start-up refusal —
//! `support::in_process::InProcess` runs it here, `support::butler::Butler` speaks the API,
//! `support::pki` issues certificates, `support::fake_qrs` plays QRS); add to them rather
//! than to a test file.

#[path = "support/mod.rs"]
mod support;

#[path = "admin_store.rs"]
mod admin_store;
#[path = "api_tokens.rs"]
mod api_tokens;
#[path = "appliance.rs"]
mod appliance;
#[path = "appliance_console.rs"]
mod appliance_console;
#[path = "architecture.rs"]
mod architecture;
#[path = "butler_subs.rs"]
mod butler_subs;
#[path = "client_auth.rs"]
mod client_auth;
#[path = "config.rs"]
mod config;
#[path = "durability.rs"]
mod durability;
#[path = "fake_qrs.rs"]
mod fake_qrs;
#[path = "fake_qrs_program.rs"]
mod fake_qrs_program;
#[path = "health_metrics.rs"]
mod health_metrics;
#[path = "in_process.rs"]
mod in_process;
#[path = "init.rs"]
mod init;
#[path = "kv_api.rs"]
mod kv_api;
#[path = "listing_order.rs"]
mod listing_order;
#[path = "properties.rs"]
mod properties;
#[path = "provision.rs"]
mod provision;
#[path = "start_task.rs"]
mod start_task;
#[path = "store_format.rs"]
mod store_format;
#[path = "systemd_unit.rs"]
mod systemd_unit;
#[path = "tls.rs"]
mod tls;
#[path = "update.rs"]
mod update;
