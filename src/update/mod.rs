//! A/B updates, the part shared by the service and the root-side programs: the files they
//! hand each other on disk (`handoff`), what is remembered about past installs and boots
//! (`record`), RAUC's command line (`rauc`), and confirm-boot's decisions (`trial`).
//!
//! Why files and not a socket: the service is unprivileged and sandboxed, and RAUC needs
//! root. The service writes a bundle and a request into its own state directory; a path unit
//! starts the root-side `butler-edge install-update`, which answers with a result file. No
//! HTTP here and nothing above layer 1: the API, the console, `/health` and `/metrics` all
//! read these types.

pub mod handoff;
pub mod rauc;
pub mod record;
pub mod trial;

use std::path::{Path, PathBuf};

use record::SlotsReport;

/// Where the appliance's root file system says what it is (`IMAGE_VERSION`, written by
/// `image/build --image-version`).
pub const OS_RELEASE: &str = "/usr/lib/os-release";

/// Where the service and the console learn what the appliance runs.
#[derive(Debug, Clone)]
pub struct ApplianceFiles {
    /// RAUC's system config: its presence is what makes this an A/B appliance.
    pub rauc_conf: PathBuf,
    /// The slots report confirm-boot and install-update write.
    pub slots_file: PathBuf,
    pub os_release: PathBuf,
}

/// What is known about the appliance's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplianceView {
    /// No RAUC config: a plain package install, not an A/B appliance.
    Plain,
    /// An A/B appliance whose slots report is not written yet (early in boot).
    NoReport { version: Option<String> },
    Slots {
        version: Option<String>,
        report: Box<SlotsReport>,
    },
}

impl ApplianceFiles {
    /// The appliance's own paths.
    pub fn standard() -> ApplianceFiles {
        ApplianceFiles {
            rauc_conf: PathBuf::from(rauc::SYSTEM_CONF),
            slots_file: PathBuf::from(record::SLOTS_FILE),
            os_release: PathBuf::from(OS_RELEASE),
        }
    }

    pub fn view(&self) -> ApplianceView {
        if !self.rauc_conf.exists() {
            return ApplianceView::Plain;
        }
        let version = image_version(&self.os_release);
        match SlotsReport::read(&self.slots_file) {
            Some(report) => ApplianceView::Slots {
                version,
                report: Box::new(report),
            },
            None => ApplianceView::NoReport { version },
        }
    }
}

/// `IMAGE_VERSION` from an os-release file, if the file has one (a plain Debian has none).
pub fn image_version(os_release: &Path) -> Option<String> {
    let text = std::fs::read_to_string(os_release).ok()?;
    os_release_value(&text, "IMAGE_VERSION")
}

/// One `KEY=value` of os-release(5), unquoted (single or double quotes; no escapes in ours).
fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once('=')?;
        if k != key {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        Some(v.to_string()).filter(|v| !v.is_empty())
    })
}

/// The current time as RFC 3339, for the records.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): tells a reboot from a rerun.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::os_release_value;

    #[test]
    fn image_version_is_read_quoted_or_not() {
        let text = "NAME=\"Debian GNU/Linux\"\nIMAGE_ID=butler-edge\nIMAGE_VERSION=\"2.1.0\"\n";
        assert_eq!(
            os_release_value(text, "IMAGE_VERSION").as_deref(),
            Some("2.1.0")
        );
        assert_eq!(
            os_release_value(text, "IMAGE_ID").as_deref(),
            Some("butler-edge")
        );
        assert_eq!(os_release_value("ID=debian\n", "IMAGE_VERSION"), None);
        assert_eq!(
            os_release_value("IMAGE_VERSION=''\n", "IMAGE_VERSION"),
            None
        );
    }
}
