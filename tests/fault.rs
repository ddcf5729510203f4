//! The fault tests: real failures against the real binary (a nearly full tmpfs, hostile and
//! idle clients by the thousand, `kill -9` in a loop, a QRS fault storm, a frozen writer
//! thread under the watchdog). One test binary; every test takes [`support::alone`] first, so
//! they run one at a time, as each did in a binary of its own: several set process-wide
//! limits (open files), hold thousands of descriptors or measure latency, and must not
//! disturb each other.
//!
//! Where a new test goes: disk trouble → `fault_disk`; misbehaving callers →
//! `fault_hostile_clients`; the connection limit and idle timeout → `fault_idle_timeout`
//! (10,000 connections: `fault_idle_connections`); crashes → `fault_crash_loop`; QRS failing
//! → `fault_qrs_storm`; the systemd watchdog → `watchdog`. Functional tests go in
//! `tests/it.rs`.

#[path = "support/mod.rs"]
mod support;

#[path = "fault_crash_loop.rs"]
mod fault_crash_loop;
#[path = "fault_disk.rs"]
mod fault_disk;
#[path = "fault_hostile_clients.rs"]
mod fault_hostile_clients;
#[path = "fault_idle_connections.rs"]
mod fault_idle_connections;
#[path = "fault_idle_timeout.rs"]
mod fault_idle_timeout;
#[path = "fault_qrs_storm.rs"]
mod fault_qrs_storm;
#[path = "watchdog.rs"]
mod watchdog;
