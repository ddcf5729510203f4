//! What `install-update` and `confirm-boot` share: where the update files are, the `rauc`
//! they run, how they write the slots report and how they reboot.

use std::path::PathBuf;

use crate::update::handoff::{UpdateDir, read_json, write_json};
use crate::update::rauc::{Rauc, RaucStatus};
use crate::update::record::{LastInstall, SLOTS_FILE};
use crate::update::{OS_RELEASE, image_version, now_rfc3339, trial};

#[derive(Debug, Clone, clap::Args)]
pub struct UpdateFiles {
    /// The service's update directory (request, bundle, results, records).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/butler-edge/update"
    )]
    pub update_dir: PathBuf,
    /// RAUC's system config, when not /etc/rauc/system.conf (tests).
    #[arg(long, value_name = "FILE")]
    pub rauc_conf: Option<PathBuf>,
    /// The slots report for the service and the console.
    #[arg(long, value_name = "FILE", default_value = SLOTS_FILE)]
    pub slots_file: PathBuf,
    /// The running root's os-release (its IMAGE_VERSION is the running version).
    #[arg(long, value_name = "FILE", default_value = OS_RELEASE)]
    pub os_release: PathBuf,
    /// The command that reboots the machine.
    #[arg(long, value_name = "COMMAND", default_value = "systemctl reboot")]
    pub reboot_command: String,
}

impl UpdateFiles {
    pub fn dir(&self) -> UpdateDir {
        UpdateDir {
            dir: self.update_dir.clone(),
        }
    }

    pub fn rauc(&self) -> Rauc {
        Rauc {
            conf: self.rauc_conf.clone(),
        }
    }

    pub fn running_version(&self) -> Option<String> {
        image_version(&self.os_release)
    }

    pub fn last_install(&self) -> Result<Option<LastInstall>, String> {
        let path = self.dir().last_install();
        read_json(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes the slots report for this boot from RAUC's status and the last install.
    pub fn write_report(&self, status: &RaucStatus, trial: bool) -> Result<(), String> {
        let last = self.last_install()?;
        let report = trial::report(
            status,
            self.running_version(),
            last.as_ref(),
            trial,
            now_rfc3339(),
        );
        if let Some(dir) = self.slots_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write_json(&self.slots_file, &report)
            .map_err(|e| format!("{}: {e}", self.slots_file.display()))
    }

    /// Runs the reboot command.
    pub fn reboot(&self) -> Result<(), String> {
        let mut words = self.reboot_command.split_whitespace();
        let program = words.next().ok_or("no reboot command")?;
        let status = std::process::Command::new(program)
            .args(words)
            .status()
            .map_err(|e| format!("{}: {e}", self.reboot_command))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{}: {status}", self.reboot_command))
        }
    }
}
