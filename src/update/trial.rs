//! confirm-boot's decisions, without side effects (the program in `appliance::confirm_boot`
//! runs RAUC and systemd around them): what kind of boot this is, whether the service is
//! healthy enough to keep the slot, and the slots report.

use super::handoff::SlotVersion;
use super::rauc::RaucStatus;
use super::record::{
    LastInstall, NEVER_CONFIRMED, Rollback, SlotEntry, SlotsReport, TrialFailed, TrialState,
};

/// What this boot is, from RAUC's status and the last install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootKind {
    /// The first boot of a newly installed slot: keep it only if butler-edge gets healthy.
    Trial,
    /// The boot loader came back to the slot the last install was made from: the new slot
    /// failed its trial, for this reason.
    RolledBack { reason: String },
    /// Anything else (no install pending, or installed during this same boot).
    Normal,
}

/// Tells a trial boot and a rollback from a normal boot. A pending install seen from a
/// later boot is a trial when the new slot is the booted one, and a rollback when the old
/// one is; the reason is confirm-boot's own record when it gave up on the trial, otherwise
/// the trial never got that far.
pub fn classify(
    status: &RaucStatus,
    last: Option<&LastInstall>,
    trial_failed: Option<&TrialFailed>,
    boot_id: &str,
) -> BootKind {
    let Some(last) = last.filter(|l| l.state == TrialState::Pending && l.boot_id != boot_id) else {
        return BootKind::Normal;
    };
    let booted = status.booted.as_deref();
    if booted == Some(last.installed.slot.as_str()) {
        return BootKind::Trial;
    }
    if booted == Some(last.from.slot.as_str()) {
        let reason = trial_failed
            .filter(|t| t.slot == last.installed.slot && t.at >= last.at)
            .map(|t| t.reason.clone())
            .unwrap_or_else(|| NEVER_CONFIRMED.to_string());
        return BootKind::RolledBack { reason };
    }
    BootKind::Normal
}

/// The service as systemd sees it (`ActiveState` and `Result` of butler-edge.service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub active_state: String,
    pub result: String,
}

/// Where the wait for a healthy service stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Active (so READY was sent: the unit is Type=notify) and its health is not `fail`.
    Good,
    /// Not yet: keep waiting, this is what it is waiting for.
    Waiting(String),
    /// It will not get better: systemd gave up on the service.
    Failed(String),
}

/// Judges one look at the service and its health snapshot's `status`.
pub fn judge(service: &ServiceState, health_status: Option<&str>) -> Health {
    if service.active_state == "failed" {
        return Health::Failed(format!(
            "butler-edge.service failed (systemd result: {}) and will not be restarted",
            service.result
        ));
    }
    if service.active_state != "active" {
        return Health::Waiting(format!(
            "butler-edge.service is {} (not READY yet)",
            service.active_state
        ));
    }
    match health_status {
        None => Health::Waiting("no health snapshot from butler-edge yet".into()),
        Some("fail") => Health::Waiting("butler-edge's health is fail".into()),
        Some(_) => Health::Good,
    }
}

/// The reason recorded when the wait runs out.
pub fn timeout_reason(seconds: u64, last: &Health) -> String {
    let why = match last {
        Health::Waiting(why) | Health::Failed(why) => why.as_str(),
        Health::Good => "healthy",
    };
    format!("butler-edge was not healthy within {seconds} s of boot: {why}")
}

/// The slots report for this boot.
pub fn report(
    status: &RaucStatus,
    booted_version: Option<String>,
    last: Option<&LastInstall>,
    trial: bool,
    at: String,
) -> SlotsReport {
    let booted_slot = status.booted.clone().unwrap_or_else(|| "?".into());
    let slots: Vec<SlotEntry> = status
        .slots
        .iter()
        .map(|s| SlotEntry {
            slot: s.bootname.clone().unwrap_or_else(|| s.name.clone()),
            name: s.name.clone(),
            version: if s.bootname.as_deref() == Some(booted_slot.as_str()) {
                booted_version.clone().or_else(|| s.version.clone())
            } else {
                s.version.clone()
            },
            state: s.state.clone(),
            boot_status: s.boot_status.clone(),
        })
        .collect();
    let next_boot = status.primary().map(|p| {
        let slot = p.bootname.clone().unwrap_or_else(|| p.name.clone());
        let version = slots
            .iter()
            .find(|e| e.slot == slot)
            .and_then(|e| e.version.clone());
        SlotVersion { slot, version }
    });
    let rollback = last
        .filter(|l| l.state == TrialState::RolledBack)
        .map(|l| Rollback {
            from: l.installed.clone(),
            to: l.from.clone(),
            reason: l.reason.clone().unwrap_or_else(|| NEVER_CONFIRMED.into()),
            at: l.resolved_at.clone().unwrap_or_default(),
        });
    SlotsReport {
        booted: SlotVersion {
            slot: booted_slot,
            version: booted_version,
        },
        next_boot,
        trial,
        slots,
        last_update: last.cloned(),
        rollback,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::rauc::tests::AFTER_INSTALL;

    fn status_booted(bootname: &str) -> RaucStatus {
        let mut status = RaucStatus::parse(AFTER_INSTALL).unwrap();
        status.booted = Some(bootname.into());
        status
    }

    fn pending() -> LastInstall {
        LastInstall {
            id: "u1".into(),
            sha256: "ab".into(),
            installed: SlotVersion {
                slot: "B".into(),
                version: Some("2.0.0".into()),
            },
            from: SlotVersion {
                slot: "A".into(),
                version: Some("1.0.0".into()),
            },
            boot_id: "boot-1".into(),
            at: "2026-12-01T23:07:05Z".into(),
            state: TrialState::Pending,
            reason: None,
            resolved_at: None,
        }
    }

    #[test]
    fn a_pending_install_booted_from_its_slot_is_a_trial() {
        let last = pending();
        assert_eq!(
            classify(&status_booted("B"), Some(&last), None, "boot-2"),
            BootKind::Trial
        );
    }

    #[test]
    fn the_same_boot_as_the_install_is_neither_trial_nor_rollback() {
        let last = pending();
        assert_eq!(
            classify(&status_booted("A"), Some(&last), None, "boot-1"),
            BootKind::Normal
        );
    }

    #[test]
    fn back_on_the_old_slot_without_a_record_is_a_rollback_never_confirmed() {
        let last = pending();
        assert_eq!(
            classify(&status_booted("A"), Some(&last), None, "boot-2"),
            BootKind::RolledBack {
                reason: NEVER_CONFIRMED.into()
            }
        );
    }

    #[test]
    fn back_on_the_old_slot_after_confirm_boot_gave_up_gives_its_reason() {
        let last = pending();
        let failed = TrialFailed {
            slot: "B".into(),
            version: Some("2.0.0".into()),
            reason: "butler-edge was not healthy within 300 s of boot: health is fail".into(),
            at: "2026-12-01T23:20:00Z".into(),
        };
        let stale = TrialFailed {
            at: "2026-11-01T00:00:00Z".into(),
            ..failed.clone()
        };
        assert_eq!(
            classify(&status_booted("A"), Some(&last), Some(&failed), "boot-3"),
            BootKind::RolledBack {
                reason: failed.reason.clone()
            }
        );
        // A record from an older trial does not explain this one.
        assert_eq!(
            classify(&status_booted("A"), Some(&last), Some(&stale), "boot-3"),
            BootKind::RolledBack {
                reason: NEVER_CONFIRMED.into()
            }
        );
    }

    #[test]
    fn confirmed_or_rolled_back_installs_make_normal_boots() {
        for state in [TrialState::Confirmed, TrialState::RolledBack] {
            let last = LastInstall { state, ..pending() };
            for booted in ["A", "B"] {
                assert_eq!(
                    classify(&status_booted(booted), Some(&last), None, "boot-9"),
                    BootKind::Normal
                );
            }
        }
        assert_eq!(
            classify(&status_booted("A"), None, None, "boot-9"),
            BootKind::Normal
        );
    }

    fn service(active: &str, result: &str) -> ServiceState {
        ServiceState {
            active_state: active.into(),
            result: result.into(),
        }
    }

    #[test]
    fn healthy_means_active_and_not_fail() {
        assert_eq!(
            judge(&service("active", "success"), Some("ok")),
            Health::Good
        );
        assert_eq!(
            judge(&service("active", "success"), Some("degraded")),
            Health::Good
        );
        assert!(matches!(
            judge(&service("active", "success"), Some("fail")),
            Health::Waiting(_)
        ));
        assert!(matches!(
            judge(&service("active", "success"), None),
            Health::Waiting(_)
        ));
        assert!(matches!(
            judge(&service("activating", "success"), Some("ok")),
            Health::Waiting(_)
        ));
        let Health::Failed(why) = judge(&service("failed", "start-limit-hit"), None) else {
            panic!("a failed service is a failed trial");
        };
        assert!(why.contains("start-limit-hit"), "{why}");
        let why = timeout_reason(300, &judge(&service("active", "success"), Some("fail")));
        assert_eq!(
            why,
            "butler-edge was not healthy within 300 s of boot: butler-edge's health is fail"
        );
    }

    #[test]
    fn the_report_names_booted_next_and_a_rollback() {
        let rolled = LastInstall {
            state: TrialState::RolledBack,
            reason: Some(NEVER_CONFIRMED.into()),
            resolved_at: Some("2026-12-01T23:30:00Z".into()),
            ..pending()
        };
        let mut status = status_booted("A");
        status.boot_primary = Some("rootfs.0".into());
        let report = report(
            &status,
            Some("1.0.0".into()),
            Some(&rolled),
            false,
            "now".into(),
        );
        assert_eq!(report.booted.slot, "A");
        assert_eq!(report.booted.version.as_deref(), Some("1.0.0"));
        let next = report.next_boot.unwrap();
        assert_eq!(
            (next.slot.as_str(), next.version.as_deref()),
            ("A", Some("1.0.0"))
        );
        let rollback = report.rollback.unwrap();
        assert_eq!(rollback.from.version.as_deref(), Some("2.0.0"));
        assert_eq!(rollback.to.slot, "A");
        assert_eq!(rollback.reason, NEVER_CONFIRMED);
        let b = report.slots.iter().find(|s| s.slot == "B").unwrap();
        assert_eq!(b.version.as_deref(), Some("2.0.0"));
    }
}
