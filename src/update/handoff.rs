//! The files the service and `butler-edge install-update` hand each other in
//! `/var/lib/butler-edge/update/` (the service's state directory, on the data partition):
//!
//! ```text
//! bundle.raucb.partial   the upload while it streams in (the service)
//! bundle.raucb           the complete bundle, by rename (the service)
//! request.json           "install it": the path unit starts install-update (the service)
//! result.json            how it went (install-update; the service reads and removes it)
//! installing.json        the request RAUC is installing right now (install-update): found
//!                        at the next start, it means the install was cut off (a power cut)
//! last-install.json      the last successful install, for rollback detection (install-update,
//!                        confirm-boot)
//! installed-sha256.json  bundles installed before, so a medium cannot loop (install-update)
//! trial-failed.json      why confirm-boot gave up on a trial boot (confirm-boot)
//! ```
//!
//! The root-side programs write into a directory the unprivileged service can write too, so
//! every write here is a fresh file (`O_CREAT|O_EXCL`, which never follows a symlink) renamed
//! over the old one: a link planted by a compromised service cannot redirect a root write.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The update directory's files, by purpose.
#[derive(Debug, Clone)]
pub struct UpdateDir {
    pub dir: PathBuf,
}

impl UpdateDir {
    /// The update directory inside the service's data directory.
    pub fn in_data_dir(data_dir: &Path) -> UpdateDir {
        UpdateDir {
            dir: data_dir.join("update"),
        }
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle.raucb")
    }
    pub fn partial(&self) -> PathBuf {
        self.dir.join("bundle.raucb.partial")
    }
    pub fn request(&self) -> PathBuf {
        self.dir.join("request.json")
    }
    pub fn result(&self) -> PathBuf {
        self.dir.join("result.json")
    }
    pub fn installing(&self) -> PathBuf {
        self.dir.join("installing.json")
    }
    pub fn last_install(&self) -> PathBuf {
        self.dir.join("last-install.json")
    }
    pub fn installed_digests(&self) -> PathBuf {
        self.dir.join("installed-sha256.json")
    }
    pub fn trial_failed(&self) -> PathBuf {
        self.dir.join("trial-failed.json")
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// `PUT /v4/admin/update` by an admin client.
    Api,
    /// `update.raucb` on the provisioning medium.
    Medium,
}

/// `request.json`: install `bundle.raucb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Echoed in the result, so a caller never takes an older result for its own.
    pub id: String,
    /// Reboot into the new slot once it is installed.
    pub reboot: bool,
    pub source: Source,
    /// The bundle's SHA-256 (hex), as received.
    pub sha256: String,
    /// Who asked (the client's name, or the medium), for the records.
    pub requested_by: String,
    pub at: String,
}

/// A slot and the version in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotVersion {
    /// The slot's boot name (`A` or `B`).
    pub slot: String,
    /// The version RAUC recorded for it, or the running image's; `None` when unknown.
    pub version: Option<String>,
}

/// Why an install did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Failure {
    /// RAUC refused the bundle before writing any slot (signature, damage, compatible): 422.
    Refused,
    /// The install itself failed (or RAUC could not be asked): 500. The running slot still
    /// boots; the other may be half-written and is not selected.
    Failed,
}

/// `result.json`: what `install-update` did with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub id: String,
    pub ok: bool,
    /// Why not, when not ok.
    #[serde(default)]
    pub failure: Option<Failure>,
    /// RAUC's own words (its `LastError`), when not ok.
    #[serde(default)]
    pub error: Option<String>,
    /// The slot written and the bundle's version in it.
    #[serde(default)]
    pub installed: Option<SlotVersion>,
    /// What the boot loader starts next.
    #[serde(default)]
    pub next_boot: Option<SlotVersion>,
    pub rebooting: bool,
    pub at: String,
}

/// Writes `value` as JSON to `path` by a fresh file and a rename, synced (it lives on the
/// data partition and must survive a power cut), readable by all (mode 0644: the service
/// reads what root writes).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// `path`'s new contents by `O_EXCL` temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A JSON file's contents: `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file if it is there.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// SHA-256 of a file, hex, read in chunks (bundles are hundreds of MB).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex(ctx.finish().as_ref()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
