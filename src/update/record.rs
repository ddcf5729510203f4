//! What is remembered about installs and boots: the last install and how its trial boot
//! ended (`last-install.json`, on the data partition, so it outlives the slot it describes),
//! why a trial was given up (`trial-failed.json`), the bundles installed before
//! (`installed-sha256.json`), and the report of this boot's slots that confirm-boot writes
//! for the service and the console (`/run/butler-edge-update/slots.json`).

use serde::{Deserialize, Serialize};

use super::handoff::SlotVersion;

/// The slots report, rewritten at every boot (confirm-boot) and after every install.
pub const SLOTS_FILE: &str = "/run/butler-edge-update/slots.json";

/// How many installed bundles' digests are kept (a medium's bundle is compared with them).
const DIGESTS_KEPT: usize = 32;

/// Said when a trial boot ended without confirm-boot's record of why: it never got as far.
pub const NEVER_CONFIRMED: &str =
    "never confirmed: the trial boot hung, crashed or lost power before butler-edge was healthy";

/// How the trial boot of an install ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TrialState {
    /// Installed; the new slot has not been booted and confirmed yet.
    Pending,
    /// The new slot booted, butler-edge became healthy, RAUC marked it good.
    Confirmed,
    /// The appliance came back on the previous slot.
    RolledBack,
}

/// `last-install.json`: written by install-update after RAUC installed a bundle, updated by
/// confirm-boot when the trial boot ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastInstall {
    pub id: String,
    pub sha256: String,
    /// The slot written and the bundle's version.
    pub installed: SlotVersion,
    /// The slot running when it was installed, and its version.
    pub from: SlotVersion,
    /// The boot during which it was installed: a rerun of confirm-boot in that same boot is
    /// no trial and no rollback.
    pub boot_id: String,
    pub at: String,
    pub state: TrialState,
    /// Why it was rolled back.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the trial ended.
    #[serde(default)]
    pub resolved_at: Option<String>,
}

/// `trial-failed.json`: confirm-boot gave up on a trial boot and marked it bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialFailed {
    pub slot: String,
    pub version: Option<String>,
    pub reason: String,
    pub at: String,
}

/// `installed-sha256.json`: digests of bundles RAUC installed, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledDigests {
    pub sha256: Vec<String>,
}

impl InstalledDigests {
    pub fn contains(&self, digest: &str) -> bool {
        self.sha256.iter().any(|d| d == digest)
    }

    pub fn add(&mut self, digest: &str) {
        self.sha256.retain(|d| d != digest);
        self.sha256.push(digest.to_string());
        let excess = self.sha256.len().saturating_sub(DIGESTS_KEPT);
        self.sha256.drain(..excess);
    }
}

/// One slot in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotEntry {
    /// Boot name (`A`, `B`).
    pub slot: String,
    /// RAUC's name (`rootfs.0`).
    pub name: String,
    pub version: Option<String>,
    /// RAUC's state: `booted`, `active`, `inactive`.
    pub state: String,
    /// The boot loader's: `good`, `bad`.
    pub boot_status: Option<String>,
}

/// An update that did not stick: the appliance came back on `to` after `from` failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub from: SlotVersion,
    pub to: SlotVersion,
    pub reason: String,
    pub at: String,
}

/// `slots.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotsReport {
    pub booted: SlotVersion,
    pub next_boot: Option<SlotVersion>,
    /// This boot runs a newly installed slot that is not confirmed yet.
    pub trial: bool,
    pub slots: Vec<SlotEntry>,
    pub last_update: Option<LastInstall>,
    pub rollback: Option<Rollback>,
    /// When this report was written.
    pub at: String,
}

impl SlotsReport {
    pub fn read(path: &std::path::Path) -> Option<SlotsReport> {
        super::handoff::read_json(path).ok().flatten()
    }
}
