//! Helpers for the appliance subcommands' tests (provision, console, enrol).

use std::path::Path;
use std::process::Command;

use super::server::BIN;

/// The appliance PKI `butler-edge init` makes on first boot, in `pki`, for localhost.
pub fn init_pki(pki: &Path) {
    let out = Command::new(BIN)
        .args(["init", "--pki-dir"])
        .arg(pki)
        .args(["--hostname", "localhost", "--address", "127.0.0.1"])
        .output()
        .expect("run butler-edge init");
    assert!(out.status.success(), "butler-edge init: {out:?}");
}
