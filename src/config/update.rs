//! `ButlerEdge.update`: how `PUT /v4/admin/update` takes a bundle and waits for the
//! installer (README, "Updates and rollback"). The endpoint itself is the `admin` group's.

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{ConfigError, Reader};

#[derive(Debug, Clone)]
pub struct UpdateConfig {
    /// Largest bundle accepted (`maxBundleBytes`, default 1 GiB): it is streamed to disk,
    /// not held in memory, so this bounds disk use, not memory.
    pub max_bundle_bytes: u64,
    /// How long the call waits for the installer's answer (`installTimeoutMs`, 15 min).
    pub install_timeout: Duration,
    /// RAUC's system config (`raucSystemConf`): without it this is no A/B appliance and the
    /// endpoint answers 503.
    pub rauc_system_conf: PathBuf,
    /// The slots report confirm-boot writes (`slotsFile`).
    pub slots_file: PathBuf,
    /// The running root's os-release, for its IMAGE_VERSION (`osRelease`).
    pub os_release: PathBuf,
}

pub fn parse(r: &Reader) -> Result<UpdateConfig, ConfigError> {
    let path = |key: &str, default: &str| -> Result<PathBuf, ConfigError> {
        Ok(r.path(key)?.unwrap_or_else(|| PathBuf::from(default)))
    };
    Ok(UpdateConfig {
        max_bundle_bytes: r.integer_or("ButlerEdge.update.maxBundleBytes", 1, 1 << 36, 1 << 30)?,
        install_timeout: Duration::from_millis(r.integer_or(
            "ButlerEdge.update.installTimeoutMs",
            1,
            86_400_000,
            15 * 60 * 1000,
        )?),
        rauc_system_conf: path(
            "ButlerEdge.update.raucSystemConf",
            crate::update::rauc::SYSTEM_CONF,
        )?,
        slots_file: path(
            "ButlerEdge.update.slotsFile",
            crate::update::record::SLOTS_FILE,
        )?,
        os_release: path("ButlerEdge.update.osRelease", crate::update::OS_RELEASE)?,
    })
}

impl UpdateConfig {
    /// Where the appliance's slots are read from, as configured.
    pub fn appliance_files(&self) -> crate::update::ApplianceFiles {
        crate::update::ApplianceFiles {
            rauc_conf: self.rauc_system_conf.clone(),
            slots_file: self.slots_file.clone(),
            os_release: self.os_release.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn defaults_and_a_bad_value_named() {
        let c = Config::parse("Butler:\n  logLevel: info\n", "t").unwrap();
        assert_eq!(c.update.max_bundle_bytes, 1 << 30);
        assert_eq!(c.update.install_timeout.as_secs(), 15 * 60);
        assert_eq!(
            c.update.rauc_system_conf.to_str(),
            Some("/etc/rauc/system.conf")
        );
        let e = Config::parse(
            "Butler:\n  logLevel: info\nButlerEdge:\n  update:\n    maxBundleBytes: 0\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("ButlerEdge.update.maxBundleBytes: "), "{e}");
    }
}
