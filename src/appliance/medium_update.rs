//! An `update.raucb` on the provisioning medium: handed to the same installer as
//! `PUT /v4/admin/update` (bundle, then `request.json` with reboot, in the service's update
//! directory), once the medium's other files have passed their checks.
//!
//! A medium stays attached across reboots, so a bundle already installed once (whether its
//! trial was kept or rolled back) is not handed over again: the installer keeps the digests
//! of what it installed (`installed-sha256.json`), and an attached medium cannot loop the
//! appliance through installs and rollbacks. RAUC checks the signature as for any bundle.

use std::path::Path;

use crate::update::handoff::{Request, Source, UpdateDir, read_json, sha256_file, write_json};
use crate::update::now_rfc3339;
use crate::update::record::InstalledDigests;

/// The bundle's name on the medium.
pub const MEDIUM_BUNDLE: &str = "update.raucb";

/// Hands the medium's bundle to the installer, unless it need not or cannot be; says which,
/// for the provisioning record and the console.
pub fn hand_over(root: &Path, medium: &Path) -> String {
    let bundle = medium.join(MEDIUM_BUNDLE);
    match try_hand_over(root, &bundle) {
        Ok(said) | Err(said) => said,
    }
}

fn try_hand_over(root: &Path, bundle: &Path) -> Result<String, String> {
    let rauc_conf = root.join(crate::update::rauc::SYSTEM_CONF.trim_start_matches('/'));
    if !rauc_conf.exists() {
        return Err(format!(
            "{MEDIUM_BUNDLE} ignored: updates need the A/B appliance (no {})",
            crate::update::rauc::SYSTEM_CONF
        ));
    }
    let sha256 =
        sha256_file(bundle).map_err(|e| format!("{MEDIUM_BUNDLE}: cannot be read: {e}"))?;
    let dir = UpdateDir::in_data_dir(&root.join("var/lib/butler-edge"));
    let installed: InstalledDigests = read_json(&dir.installed_digests())
        .ok()
        .flatten()
        .unwrap_or_default();
    let short = &sha256[..12];
    if installed.contains(&sha256) {
        return Ok(format!(
            "{MEDIUM_BUNDLE} (sha256 {short}…) was installed before; not installed again \
             (remove it from the medium, or bring a new bundle)"
        ));
    }
    if dir.request().exists() {
        return Err(format!(
            "{MEDIUM_BUNDLE} not handed over: another update is pending ({})",
            dir.request().display()
        ));
    }
    std::fs::create_dir_all(&dir.dir).map_err(|e| format!("{}: {e}", dir.dir.display()))?;
    copy_synced(bundle, &dir.partial())
        .and_then(|()| std::fs::rename(dir.partial(), dir.bundle()))
        .map_err(|e| {
            let _ = std::fs::remove_file(dir.partial());
            format!(
                "{MEDIUM_BUNDLE}: cannot be copied to {}: {e}",
                dir.dir.display()
            )
        })?;
    let request = Request {
        id: format!("medium-{short}"),
        reboot: true,
        source: Source::Medium,
        sha256: sha256.clone(),
        requested_by: "the provisioning medium".into(),
        at: now_rfc3339(),
    };
    write_json(&dir.request(), &request)
        .map_err(|e| format!("{}: {e}", dir.request().display()))?;
    Ok(format!(
        "{MEDIUM_BUNDLE} (sha256 {short}…) handed to the installer; the appliance reboots into \
         it once RAUC has installed it"
    ))
}

fn copy_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut source = std::fs::File::open(from)?;
    let mut target = std::fs::File::create(to)?;
    std::io::copy(&mut source, &mut target)?;
    target.sync_all()
}
