//! What makes butler-edge an appliance an admin never logs in to: provisioning from a medium
//! attached at deploy time, the console screen, the one-time enrolment of the admin, the
//! clock's health, A/B updates (`install-update` runs RAUC for the service, `confirm-boot`
//! keeps or gives up a newly booted slot). Each runs as its own subcommand in its own systemd unit (see `systemd/`),
//! so the privileged steps (provisioning writes under `/etc`) stay out of the sandboxed service.
//!
//! Nothing here is on the request path. The two parts the service itself runs live lower
//! down, so that the layers keep pointing down: the clock's health and step log in
//! `clock::sync`, the health snapshot the console shows in `app::snapshot`.

pub mod confirm_boot;
pub mod console;
pub mod enrol;
pub mod install_update;
pub mod medium_update;
pub mod network;
pub mod provision;
pub mod update_common;
