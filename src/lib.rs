//! butler-edge: a Butler-compatible REST appliance for Qlik Sense.
//!
//! Layers, bottom to top; a module imports only from layers below its own
//! (`tests/architecture.rs` keeps it so; README, "Architecture", explains the shape):
//!
//! 0. `clock` — the wall clock in stored units, and whether NTP has set it (`clock::sync`)
//! 1. `pki` (the one PEM/CRL reader), `disk` (free space, `DiskLow`), `privileges`,
//!    `systemd` (READY/WATCHDOG, liveness probes handed in), `update` (the A/B update handoff
//!    files, RAUC's CLI, confirm-boot's decisions)
//! 2. `kv` (the durable store), `qrs` (the QRS client)
//! 3. `tasks` (the start-task service: idempotency, disk checks, planning and execution)
//! 4. `authz` (endpoint groups, permissions, `Denied`, API token digests and `clientAuth.mode`)
//! 5. `config` (Butler YAML → typed settings and `Features`, the decision of what runs, once)
//! 6. `security` (TLS settings, certificate inventory), `metrics` (Prometheus registry)
//! 7. `http` (connections, limits, the one error map; serves any `http::handler::Handler`)
//! 8. `api` (route table, router, one module per endpoint group)
//! 9. `app` (wiring, in-process entry, the console's health snapshot), `check`
//!    (`check-config`), `init` (first-boot PKI), `logging`
//! 10. `appliance` (the appliance's own subcommands: `provision`, `console`, `enrol`)

pub mod api;
pub mod app;
pub mod appliance;
pub mod authz;
pub mod check;
pub mod clock;
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
pub mod systemd;
pub mod tasks;
pub mod update;
