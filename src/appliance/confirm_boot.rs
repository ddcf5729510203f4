//! `butler-edge confirm-boot` (butler-edge-confirm-boot.service, at every boot): decides
//! whether the slot just booted is kept.
//!
//! A newly installed slot boots as a trial. It is marked good (`rauc status mark-good`)
//! once butler-edge.service is active (Type=notify, so it sent READY) and its health
//! snapshot is not `fail`. If the service fails for good or is not healthy within the
//! timeout, why is recorded in `trial-failed.json`, the slot is marked bad and the machine
//! reboots, so GRUB starts the previous slot. Back there, this program finds the pending
//! install on the slot it came from and reports a rollback with that reason (or "never
//! confirmed" when the trial hung, crashed or lost power before it could record one; the
//! hardware watchdog and GRUB's try counter bring those back). Every boot also gets the
//! slots report (`/run/butler-edge-update/slots.json`) that `/health`, `/metrics` and the
//! console read. The decisions themselves are in `update::trial`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::update_common::UpdateFiles;
use crate::update::handoff::{read_json, write_json};
use crate::update::rauc::{Mark, RaucStatus};
use crate::update::record::{TrialFailed, TrialState};
use crate::update::trial::{self, BootKind, Health, ServiceState};
use crate::update::{boot_id, now_rfc3339};

/// How often the service is looked at while waiting.
const POLL: Duration = Duration::from_secs(2);
/// How long RAUC's service may take to answer at boot.
const RAUC_START: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct ConfirmBootArgs {
    #[command(flatten)]
    pub files: UpdateFiles,
    /// The service's health snapshot (same JSON as GET /health).
    #[arg(long, value_name = "FILE", default_value = super::console::HEALTH_SNAPSHOT)]
    pub health: PathBuf,
    /// The service unit that must become active.
    #[arg(long, value_name = "UNIT", default_value = "butler-edge.service")]
    pub unit: String,
    /// Seconds a trial boot has to become healthy (the unit sets it from
    /// BUTLER_EDGE_CONFIRM_TIMEOUT; tests shorten it with a drop-in).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout_seconds: u64,
}

pub fn run(args: &ConfirmBootArgs) -> Result<(), String> {
    let files = &args.files;
    let rauc = files.rauc();
    let status = wait_for_rauc(&rauc)?;
    let dir = files.dir();
    let mut last = files.last_install()?;
    let trial_failed: Option<TrialFailed> = read_json(&dir.trial_failed()).ok().flatten();
    let kind = trial::classify(&status, last.as_ref(), trial_failed.as_ref(), &boot_id());
    if let (BootKind::RolledBack { reason }, Some(last)) = (&kind, last.as_mut()) {
        println!(
            "butler-edge confirm-boot: the update to {} (slot {}) was ROLLED BACK; running {} \
             (slot {}) again. Why: {reason}",
            last.installed.version.as_deref().unwrap_or("?"),
            last.installed.slot,
            last.from.version.as_deref().unwrap_or("?"),
            last.from.slot
        );
        last.state = TrialState::RolledBack;
        last.reason = Some(reason.clone());
        last.resolved_at = Some(now_rfc3339());
        write_json(&dir.last_install(), &*last).map_err(|e| e.to_string())?;
        // The failed slot is not tried again, and the running one boots next.
        if let Some(failed) = status.by_bootname(&last.installed.slot) {
            report_error(rauc.mark(Mark::Bad, &failed.name));
        }
        report_error(rauc.mark(Mark::Active, "booted"));
    }
    let trial = kind == BootKind::Trial;
    let status = rauc.status().unwrap_or(status);
    report_error(files.write_report(&status, trial));

    let verdict = wait_for_health(args);
    match verdict {
        Ok(()) => {
            rauc.mark(Mark::Good, "booted")?;
            if trial && let Some(last) = last.as_mut() {
                last.state = TrialState::Confirmed;
                last.resolved_at = Some(now_rfc3339());
                write_json(&dir.last_install(), &*last).map_err(|e| e.to_string())?;
                println!(
                    "butler-edge confirm-boot: the update to {} (slot {}) is confirmed: \
                     butler-edge is healthy",
                    last.installed.version.as_deref().unwrap_or("?"),
                    last.installed.slot
                );
            } else {
                println!("butler-edge confirm-boot: butler-edge is healthy; slot marked good");
            }
            let status = rauc.status().unwrap_or(status);
            report_error(files.write_report(&status, false));
            Ok(())
        }
        Err(reason) if trial => {
            let record = TrialFailed {
                slot: status.booted.clone().unwrap_or_default(),
                version: files.running_version(),
                reason: reason.clone(),
                at: now_rfc3339(),
            };
            write_json(&dir.trial_failed(), &record).map_err(|e| e.to_string())?;
            println!(
                "butler-edge confirm-boot: the trial boot FAILED ({reason}); marking this slot \
                 bad and rebooting into the previous one"
            );
            rauc.mark(Mark::Bad, "booted")?;
            files.reboot()
        }
        Err(reason) => Err(format!(
            "{reason}; not a trial boot, so the slot stays as it is"
        )),
    }
}

fn report_error(result: Result<(), String>) {
    if let Err(e) = result {
        println!("butler-edge confirm-boot: {e}");
    }
}

/// RAUC's status, waiting for rauc.service to come up at boot.
fn wait_for_rauc(rauc: &crate::update::rauc::Rauc) -> Result<RaucStatus, String> {
    let deadline = Instant::now() + RAUC_START;
    loop {
        match rauc.status() {
            Ok(status) => return Ok(status),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Waits until the service is healthy; why not, when it will not be or time ran out.
fn wait_for_health(args: &ConfirmBootArgs) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut last = Health::Waiting("not looked at yet".into());
    while Instant::now() < deadline {
        let health = health_status(&args.health);
        last = trial::judge(&service_state(&args.unit), health.as_deref());
        match &last {
            Health::Good => return Ok(()),
            Health::Failed(why) => return Err(why.clone()),
            Health::Waiting(_) => std::thread::sleep(POLL),
        }
    }
    Err(trial::timeout_reason(args.timeout_seconds, &last))
}

/// The snapshot's overall `status`, if there is a readable snapshot.
fn health_status(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["status"].as_str().map(str::to_string)
}

/// `systemctl show UNIT --property=ActiveState,Result`.
fn service_state(unit: &str) -> ServiceState {
    let output = std::process::Command::new("systemctl")
        .args(["show", unit, "--property=ActiveState,Result"])
        .output();
    let text = output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("unknown")
            .to_string()
    };
    ServiceState {
        active_state: value("ActiveState"),
        result: value("Result"),
    }
}
