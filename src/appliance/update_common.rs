//! What `install-update` and `confirm-boot` share: where the update files are, the `rauc`
//! they run, how they write the slots report and how they reboot.

use std::path::PathBuf;

use crate::update::handoff::{UpdateDir, read_json, write_json};
use crate::update::rauc::{Rauc, RaucStatus, SYSTEM_CONF};
use crate::update::record::{LastInstall, SLOTS_FILE};
use crate::update::{ApplianceFiles, OS_RELEASE, image_version, now_rfc3339, trial};

/// The service's update directory on the appliance.
pub const UPDATE_DIR: &str = "/var/lib/butler-edge/update";

/// Where the update files are: the programs that write them and the console that shows them.
#[derive(Debug, Clone, clap::Args)]
pub struct UpdatePaths {
    /// The service's update directory (request, bundle, results, records).
    #[arg(long, value_name = "DIR", default_value = UPDATE_DIR)]
    pub update_dir: PathBuf,
    /// RAUC's system config (its presence makes this an A/B appliance).
    #[arg(long, value_name = "FILE", default_value = SYSTEM_CONF)]
    pub rauc_conf: PathBuf,
    /// The slots report for the service and the console.
    #[arg(long, value_name = "FILE", default_value = SLOTS_FILE)]
    pub slots_file: PathBuf,
    /// The running root's os-release (its IMAGE_VERSION is the running version).
    #[arg(long, value_name = "FILE", default_value = OS_RELEASE)]
    pub os_release: PathBuf,
}

impl UpdatePaths {
    pub fn dir(&self) -> UpdateDir {
        UpdateDir {
            dir: self.update_dir.clone(),
        }
    }

    pub fn appliance_files(&self) -> ApplianceFiles {
        ApplianceFiles {
            rauc_conf: self.rauc_conf.clone(),
            slots_file: self.slots_file.clone(),
            os_release: self.os_release.clone(),
        }
    }
}

/// What `install-update` and `confirm-boot` take: the paths, and how to reboot.
#[derive(Debug, Clone, clap::Args)]
pub struct UpdateFiles {
    #[command(flatten)]
    pub paths: UpdatePaths,
    /// The command that reboots the machine.
    #[arg(long, value_name = "COMMAND", default_value = "systemctl reboot")]
    pub reboot_command: String,
}

impl UpdateFiles {
    pub fn dir(&self) -> UpdateDir {
        self.paths.dir()
    }

    /// `rauc`, pointed at the system config when it is not the standard one.
    pub fn rauc(&self) -> Rauc {
        Rauc {
            conf: Some(self.paths.rauc_conf.clone()).filter(|c| c.as_os_str() != SYSTEM_CONF),
        }
    }

    pub fn running_version(&self) -> Option<String> {
        image_version(&self.paths.os_release)
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
        if let Some(dir) = self.paths.slots_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write_json(&self.paths.slots_file, &report)
            .map_err(|e| format!("{}: {e}", self.paths.slots_file.display()))
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
