//! The shipped systemd unit, judged by systemd itself: `systemd-analyze security --offline`
//! must rate `systemd/butler-edge.service` at an exposure of 2.0 or less, and the unit must
//! keep the settings the binary relies on (notify readiness, watchdog, reload by SIGHUP).
//!
//! systemd-analyze comes with Debian's `systemd` package, which `image/install-deps` (run by
//! `.ci/run`) installs; outside CI a machine without it skips with a loud message, in CI the
//! test fails.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_EXPOSURE: f64 = 2.0;

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

/// Runs `systemd-analyze security --offline=true UNIT`; None when systemd-analyze cannot run
/// here at all (and that is allowed, i.e. not in CI).
fn analyze(unit: &Path) -> Option<(f64, String)> {
    let output = match Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            support::skip(
                "systemd-analyze",
                &format!("systemd-analyze cannot run here ({e}); install Debian's systemd package"),
            );
            return None;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "systemd-analyze security {} failed ({}):\n{text}",
        unit.display(),
        output.status
    );
    // "→ Overall exposure level for butler-edge.service: 1.2 OK 🙂"
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no 'Overall exposure level' line in:\n{text}"));
    let score = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure score from: {line}"));
    Some((score, text))
}

#[test]
fn service_unit_exposure_is_at_most_two() {
    let unit = unit_path("butler-edge.service");
    let Some((score, report)) = analyze(&unit) else {
        return;
    };
    eprintln!("systemd-analyze security butler-edge.service: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "butler-edge.service exposure {score} is above {MAX_EXPOSURE}; the settings that cost most:\n{}",
        report
            .lines()
            .filter(|l| l.starts_with('✗'))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn first_boot_unit_is_analyzable_and_hardened() {
    // The provisioning unit runs as root (it writes /etc/butler-edge/pki), so it cannot reach
    // the service's score, but it must stay well inside systemd's "OK" band.
    let unit = unit_path("butler-edge-init.service");
    let Some((score, _)) = analyze(&unit) else {
        return;
    };
    eprintln!("systemd-analyze security butler-edge-init.service: exposure {score}");
    assert!(
        score <= 3.0,
        "butler-edge-init.service exposure {score} is above 3.0"
    );
}

/// The settings the binary's systemd integration depends on; losing one breaks readiness,
/// the watchdog or certificate reload silently, so they are checked by name.
#[test]
fn service_unit_keeps_notify_watchdog_and_reload() {
    let unit = unit_path("butler-edge.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", unit.display()));
    let settings: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| {
        settings
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{} has no {key}=", unit.display()))
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("Restart"), "on-failure");
    assert!(
        value("WatchdogSec").ends_with('s'),
        "WatchdogSec= must be set in seconds"
    );
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(value("ConfigurationDirectory"), "butler-edge");
    assert_eq!(value("StateDirectory"), "butler-edge");
    assert_eq!(value("CapabilityBoundingSet"), "");
}

/// The appliance's own units (the image enables them; the .deb ships them disabled): the
/// enrolment server holds the admin bundle, so it is held to the service's own bar; the
/// console and the provisioning unit run as root by design (a terminal; mounting the medium
/// and writing /etc) and stay inside systemd's "OK" band. The update installer and the boot
/// confirmation run as root (RAUC's D-Bus interface and the reboot answer root) but hand the
/// privileged work to rauc.service, so they are held to the service's bar too.
#[test]
fn appliance_units_are_hardened() {
    for (name, max) in [
        ("butler-edge-enrol.service", MAX_EXPOSURE),
        ("butler-edge-console@.service", 3.0),
        ("butler-edge-provision.service", 2.5),
        ("butler-edge-update.service", MAX_EXPOSURE),
        ("butler-edge-confirm-boot.service", MAX_EXPOSURE),
    ] {
        let Some((score, report)) = analyze(&unit_path(name)) else {
            return;
        };
        eprintln!("systemd-analyze security {name}: exposure {score}");
        assert!(
            score <= max,
            "{name} exposure {score} is above {max}; the settings that cost most:\n{}",
            report
                .lines()
                .filter(|l| l.starts_with('✗'))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
