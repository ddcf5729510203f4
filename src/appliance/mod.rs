//! What makes butler-edge an appliance an admin never logs in to: provisioning from a medium
//! attached at deploy time, the console screen, the one-time enrolment of the admin, the
//! clock's health. Each runs as its own subcommand in its own systemd unit (see `systemd/`),
//! so the privileged steps (provisioning writes under `/etc`) stay out of the sandboxed service.
//!
//! Nothing here is on the request path; the service itself only uses `clock` (a `/health`
//! check and the log line of a clock step) and `snapshot` (the health the console shows).

pub mod clock;
pub mod console;
pub mod enrol;
pub mod network;
pub mod provision;
pub mod snapshot;
