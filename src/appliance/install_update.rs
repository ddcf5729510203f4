//! `butler-edge install-update`: the root side of an update (butler-edge-update.service,
//! started by butler-edge-update.path when the service or the provisioning medium has
//! written `request.json`). Runs `rauc install` on the bundle, answers in `result.json`,
//! remembers the install for confirm-boot, and reboots when asked and RAUC succeeded.
//!
//! RAUC does everything that matters (signature against its keyring, compatible, writing
//! the other slot, making it the next boot as a trial); this only hands it the bundle and
//! reports what it said.

use std::time::Duration;

use super::update_common::UpdateFiles;
use crate::update::handoff::{
    Failure, Outcome, Request, SlotVersion, read_json, remove_if_present, write_json,
};
use crate::update::record::{InstalledDigests, LastInstall, TrialState};
use crate::update::{boot_id, now_rfc3339};

/// Time for the service to send the answer before the machine goes down.
const REBOOT_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, clap::Args)]
pub struct InstallUpdateArgs {
    #[command(flatten)]
    pub files: UpdateFiles,
}

/// Handles the pending request, if any. An error here is the updater's own (it could not
/// write its answer); RAUC's refusals are answers, not errors.
pub fn run(args: &InstallUpdateArgs) -> Result<(), String> {
    let files = &args.files;
    let dir = files.dir();
    let request: Request = match read_json(&dir.request()) {
        Ok(Some(request)) => request,
        Ok(None) => {
            println!("butler-edge install-update: no request; nothing to do");
            return Ok(());
        }
        Err(e) => {
            // Unreadable: answer nobody, but never loop on it (the path unit would).
            let _ = remove_if_present(&dir.request());
            let _ = remove_if_present(&dir.bundle());
            return Err(format!("the request is unreadable and was removed: {e}"));
        }
    };
    // Answered already (a crash between the answer and the clean-up): only clean up.
    let answered: Option<Outcome> = read_json(&dir.result()).ok().flatten();
    if answered.is_some_and(|o| o.id == request.id) {
        let _ = remove_if_present(&dir.bundle());
        return remove_if_present(&dir.request()).map_err(|e| e.to_string());
    }
    let outcome = install(files, &request);
    let _ = remove_if_present(&dir.bundle());
    // After the answer is written, the interruption marker goes (see `install`).
    write_json(&dir.result(), &outcome).map_err(|e| format!("{}: {e}", dir.result().display()))?;
    let _ = remove_if_present(&dir.installing());
    remove_if_present(&dir.request()).map_err(|e| format!("{}: {e}", dir.request().display()))?;
    match (&outcome.error, &outcome.installed, &outcome.next_boot) {
        (Some(error), _, _) => println!(
            "butler-edge install-update: the update {} was NOT installed ({}): {error}; the \
             running system is unchanged",
            request.id,
            if outcome.failure == Some(Failure::Refused) {
                "bundle refused"
            } else {
                "install failed"
            }
        ),
        (None, Some(installed), next) => println!(
            "butler-edge install-update: installed {} into slot {}; next boot: {}{}",
            installed.version.as_deref().unwrap_or("(unknown version)"),
            installed.slot,
            next.as_ref().map(|n| n.slot.as_str()).unwrap_or("?"),
            if outcome.rebooting {
                "; rebooting now"
            } else {
                ""
            }
        ),
        _ => {}
    }
    if outcome.rebooting {
        std::thread::sleep(REBOOT_GRACE);
        files.reboot()?;
    }
    Ok(())
}

/// Installs the request's bundle and says how it went.
fn install(files: &UpdateFiles, request: &Request) -> Outcome {
    let mut outcome = Outcome {
        id: request.id.clone(),
        ok: false,
        failure: Some(Failure::Failed),
        error: None,
        installed: None,
        next_boot: None,
        rebooting: false,
        at: now_rfc3339(),
    };
    let dir = files.dir();
    // Marked before RAUC starts and removed once answered: found with this request's id, the
    // last attempt was cut off (a power cut, a crash) and is not run again unasked. RAUC
    // leaves the running slot the one that boots when an install is cut off.
    let started: Option<Request> = read_json(&dir.installing()).ok().flatten();
    if started.is_some_and(|s| s.id == request.id) {
        outcome.error = Some(
            "the install was interrupted (the appliance restarted before it finished); \
             nothing was switched and the running system still boots; apply the bundle again"
                .into(),
        );
        return outcome;
    }
    if let Err(e) = write_json(&dir.installing(), request) {
        outcome.error = Some(format!("{}: {e}", dir.installing().display()));
        return outcome;
    }
    let this_boot = boot_id();
    if !dir.bundle().is_file() {
        outcome.error = Some(format!("no bundle at {}", dir.bundle().display()));
        return outcome;
    }
    let rauc = files.rauc();
    let before = match rauc.status() {
        Ok(status) => status,
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    };
    if let Err(e) = rauc.install(&dir.bundle()) {
        outcome.failure = Some(e.failure);
        outcome.error = Some(e.message);
        return outcome;
    }
    let after = match rauc.status() {
        Ok(status) => status,
        Err(e) => {
            outcome.error = Some(format!("installed, but then {e}"));
            return outcome;
        }
    };
    let slot_version = |s: &crate::update::rauc::Slot| SlotVersion {
        slot: s.bootname.clone().unwrap_or_else(|| s.name.clone()),
        version: s.version.clone(),
    };
    // RAUC makes the slot it wrote the primary one.
    let installed = after.primary().map(slot_version);
    let from = SlotVersion {
        slot: before.booted.clone().unwrap_or_else(|| "?".into()),
        version: files.running_version(),
    };
    outcome.ok = true;
    outcome.failure = None;
    outcome.installed = installed.clone();
    outcome.next_boot = installed.clone();
    outcome.rebooting = request.reboot;
    if let Some(installed) = installed {
        remember(files, request, installed, from, this_boot);
    }
    if let Err(e) = files.write_report(&after, false) {
        println!("butler-edge install-update: cannot write the slots report: {e}");
    }
    outcome
}

/// The install, for confirm-boot (trial or rollback at the next boot) and the medium (not
/// the same bundle twice). A failure to write these is reported but does not undo RAUC's
/// install: the worst case is a rollback reported without its version.
fn remember(
    files: &UpdateFiles,
    request: &Request,
    installed: SlotVersion,
    from: SlotVersion,
    boot_id: String,
) {
    let dir = files.dir();
    let last = LastInstall {
        id: request.id.clone(),
        sha256: request.sha256.clone(),
        installed,
        from,
        boot_id,
        at: now_rfc3339(),
        state: TrialState::Pending,
        reason: None,
        resolved_at: None,
    };
    if let Err(e) = write_json(&dir.last_install(), &last) {
        println!("butler-edge install-update: cannot record the install: {e}");
    }
    let mut digests: InstalledDigests = read_json(&dir.installed_digests())
        .ok()
        .flatten()
        .unwrap_or_default();
    digests.add(&request.sha256);
    if let Err(e) = write_json(&dir.installed_digests(), &digests) {
        println!("butler-edge install-update: cannot record the bundle's digest: {e}");
    }
}
