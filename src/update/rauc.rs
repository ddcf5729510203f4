//! RAUC through its command line (Debian bookworm's rauc 1.8): `install`, `status
//! --detailed --output-format=json`, `status mark-good|mark-bad|mark-active`. RAUC does the
//! work (signature and compatible checks, writing the slot, the boot loader's A/B state);
//! this only runs it and reads its answers.
//!
//! The CLI talks to `rauc.service` over D-Bus (the system bus; the session bus when
//! `DBUS_STARTER_BUS_TYPE=session`, which the tests use to run a private RAUC service).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::handoff::Failure;

/// Where RAUC's system config is on an A/B appliance; without it, this is no A/B system.
pub const SYSTEM_CONF: &str = "/etc/rauc/system.conf";

/// The `rauc` command, with the system config it is pointed at.
#[derive(Debug, Clone, Default)]
pub struct Rauc {
    /// `--conf=`: only when not the default (tests).
    pub conf: Option<PathBuf>,
}

/// A failed `rauc install`: what kind of failure and RAUC's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallError {
    pub failure: Failure,
    pub message: String,
}

impl Rauc {
    fn command(&self) -> Command {
        let mut command = Command::new("rauc");
        if let Some(conf) = &self.conf {
            command.arg(format!("--conf={}", conf.display()));
        }
        command
    }

    /// `rauc install BUNDLE`; blocks until RAUC is done.
    pub fn install(&self, bundle: &Path) -> Result<(), InstallError> {
        let output = self
            .command()
            .arg("install")
            .arg(bundle)
            .output()
            .map_err(|e| InstallError {
                failure: Failure::Failed,
                message: format!("cannot run rauc: {e}"),
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(install_error(&stdout, &stderr))
    }

    /// `rauc status --detailed --output-format=json`.
    pub fn status(&self) -> Result<RaucStatus, String> {
        let output = self
            .command()
            .args(["status", "--detailed", "--output-format=json"])
            .output()
            .map_err(|e| format!("cannot run rauc: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "rauc status failed: {}",
                last_line(&String::from_utf8_lossy(&output.stderr))
            ));
        }
        RaucStatus::parse(&String::from_utf8_lossy(&output.stdout))
    }

    /// `rauc status mark-good|mark-bad|mark-active WHICH` (`booted`, `other` or a slot name).
    pub fn mark(&self, how: Mark, which: &str) -> Result<(), String> {
        let verb = match how {
            Mark::Good => "mark-good",
            Mark::Bad => "mark-bad",
            Mark::Active => "mark-active",
        };
        let output = self
            .command()
            .args(["status", verb, which])
            .output()
            .map_err(|e| format!("cannot run rauc: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "rauc status {verb} {which} failed: {}",
                last_line(&String::from_utf8_lossy(&output.stderr))
            ))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Good,
    Bad,
    Active,
}

/// RAUC's reason from `rauc install`'s output, and whether the bundle was refused (RAUC
/// stopped before its "Updating slots" step: signature, format, compatible) or the install
/// failed later (or RAUC could not even determine the slots).
fn install_error(stdout: &str, stderr: &str) -> InstallError {
    let message = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("LastError: "))
        .map(str::to_string)
        .unwrap_or_else(|| last_line(stderr));
    let checked_slots = stdout.contains("Determining slot states done.");
    let wrote = stdout.contains("Updating slots");
    let failure = if checked_slots && !wrote {
        Failure::Refused
    } else {
        Failure::Failed
    };
    InstallError { failure, message }
}

fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("(no output)")
        .to_string()
}

/// What `rauc status --detailed --output-format=json` says, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaucStatus {
    pub compatible: Option<String>,
    /// The booted slot's boot name (`A`, from `rauc.slot=` on the kernel command line).
    pub booted: Option<String>,
    /// The slot the boot loader starts next (a slot name such as `rootfs.1`).
    pub boot_primary: Option<String>,
    pub slots: Vec<Slot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// RAUC's slot name (`rootfs.0`).
    pub name: String,
    pub bootname: Option<String>,
    /// `booted`, `active` or `inactive`.
    pub state: String,
    /// The boot loader's view: `good` or `bad`.
    pub boot_status: Option<String>,
    /// The version of the bundle last installed into it, if RAUC recorded one.
    pub version: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    compatible: Option<String>,
    booted: Option<String>,
    boot_primary: Option<String>,
    #[serde(default)]
    slots: Vec<std::collections::BTreeMap<String, RawSlot>>,
}

#[derive(Deserialize)]
struct RawSlot {
    bootname: Option<String>,
    #[serde(default)]
    state: Option<String>,
    boot_status: Option<String>,
    slot_status: Option<RawSlotStatus>,
}

#[derive(Deserialize)]
struct RawSlotStatus {
    bundle: Option<RawBundle>,
}

#[derive(Deserialize)]
struct RawBundle {
    version: Option<String>,
}

impl RaucStatus {
    pub fn parse(json: &str) -> Result<RaucStatus, String> {
        let raw: RawStatus = serde_json::from_str(json.trim())
            .map_err(|e| format!("rauc status: unexpected output ({e})"))?;
        // One single-key object per slot, as RAUC 1.8 prints them; sorted by name.
        let mut slots: Vec<Slot> = raw
            .slots
            .into_iter()
            .flat_map(|entry| entry.into_iter())
            .map(|(name, s)| Slot {
                name,
                bootname: s.bootname,
                state: s.state.unwrap_or_default(),
                boot_status: s.boot_status,
                version: s
                    .slot_status
                    .and_then(|st| st.bundle)
                    .and_then(|b| b.version),
            })
            .collect();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(RaucStatus {
            compatible: raw.compatible,
            booted: raw.booted,
            boot_primary: raw.boot_primary,
            slots,
        })
    }

    /// The slot with this boot name.
    pub fn by_bootname(&self, bootname: &str) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| s.bootname.as_deref() == Some(bootname))
    }

    /// The slot the boot loader starts next.
    pub fn primary(&self) -> Option<&Slot> {
        let name = self.boot_primary.as_deref()?;
        self.slots.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `rauc status --detailed --output-format=json` from rauc 1.8 (Debian bookworm) after
    /// installing a bundle of version 2.0.0 into B while booted from A (taken from a real run
    /// with the GRUB backend).
    pub(crate) const AFTER_INSTALL: &str = r#"{"compatible":"butler-edge","variant":"","booted":"A","boot_primary":"rootfs.1","slots":[{"rootfs.1":{"class":"rootfs","device":"/dev/disk/by-partlabel/root-b","type":"ext4","bootname":"B","state":"inactive","parent":null,"mountpoint":null,"boot_status":"good","slot_status":{"bundle":{"compatible":"butler-edge","version":"2.0.0"},"checksum":{"sha256":"9cb5dd6689d593425d3c9f67a698769b4542d6718c7997d5a30d684f28c260ae","size":65536},"installed":{"timestamp":"2026-12-01T23:07:05Z","count":1},"activated":{"timestamp":"2026-12-01T23:07:05Z","count":1},"status":"ok"}}},{"rootfs.0":{"class":"rootfs","device":"/dev/disk/by-partlabel/root-a","type":"ext4","bootname":"A","state":"booted","parent":null,"mountpoint":"/","boot_status":"good","slot_status":{"bundle":{"compatible":null}}}}]}"#;

    #[test]
    fn status_json_of_rauc_1_8_is_read() {
        let status = RaucStatus::parse(AFTER_INSTALL).unwrap();
        assert_eq!(status.booted.as_deref(), Some("A"));
        assert_eq!(status.primary().unwrap().bootname.as_deref(), Some("B"));
        assert_eq!(status.primary().unwrap().version.as_deref(), Some("2.0.0"));
        let a = status.by_bootname("A").unwrap();
        assert_eq!((a.name.as_str(), a.state.as_str()), ("rootfs.0", "booted"));
        assert_eq!(a.version, None);
        assert_eq!(status.slots.len(), 2);
    }

    #[test]
    fn a_refusal_is_told_from_a_failed_install() {
        let refused = "installing\n  0% Installing\n 20% Determining slot states done.\n 20% Checking bundle\n 40% Verifying signature failed.\n100% Installing failed.\nLastError: signature verification failed: Verify error: self-signed certificate\n";
        let e = install_error(refused, "Installing `/x` failed\n");
        assert_eq!(e.failure, Failure::Refused);
        assert_eq!(
            e.message,
            "signature verification failed: Verify error: self-signed certificate"
        );
        let failed = " 20% Determining slot states done.\n 80% Updating slots\n100% Installing failed.\nLastError: Failed writing image\n";
        assert_eq!(install_error(failed, "").failure, Failure::Failed);
        let no_service = install_error("", "Error: could not connect to D-Bus\n");
        assert_eq!(no_service.failure, Failure::Failed);
        assert_eq!(no_service.message, "Error: could not connect to D-Bus");
    }
}
