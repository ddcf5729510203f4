//! The free-disk guard: refuse key-value writes before the data directory's file system is
//! full, instead of letting a commit fail half-way.
//!
//! redb never leaves a torn commit behind, but an appliance whose disk fills up should say
//! so clearly and keep serving reads. Below `ButlerEdge.minFreeDiskBytes` of space available
//! to the service, writes that add data are refused with [`DiskLow`], which names the
//! directory, the space left and the threshold (callers see it as 507 Insufficient Storage:
//! the HTTP edge, `http::error`, maps it); reads and deletes keep working.
//!
//! Deletes stay allowed on purpose: they are what an admin reaches for, and the headroom the
//! guard keeps is what lets their (copy-on-write) commits through. They do not lift the
//! guard, though: redb reuses the freed pages for later writes but does not give them back
//! to the file system, so only freeing space elsewhere on it does (tests/fault_disk.rs
//! measures this).
//!
//! The guard is a threshold checked before a write, so another process can still fill the
//! disk between the check and the commit. That case is the store's ([`crate::kv`]): the
//! commit fails with ENOSPC (`StoreError::NoSpace`, a 507 too), and nothing acknowledged is lost.
//!
//! The directory is opened once at start-up and measured with `fstatvfs` on that handle, so
//! the check keeps working after privileges are dropped and costs one system call.

use std::fs::File;
use std::path::{Path, PathBuf};

pub struct DiskGuard {
    dir: File,
    path: PathBuf,
    min_free_bytes: u64,
}

impl DiskGuard {
    /// None when the guard is disabled (`minFreeDiskBytes: 0`).
    pub fn open(path: &Path, min_free_bytes: u64) -> std::io::Result<Option<DiskGuard>> {
        if min_free_bytes == 0 {
            return Ok(None);
        }
        Ok(Some(DiskGuard {
            dir: File::open(path)?,
            path: path.to_path_buf(),
            min_free_bytes,
        }))
    }

    /// Bytes available to an unprivileged writer on the data directory's file system.
    pub fn free_bytes(&self) -> Result<u64, String> {
        let stats = nix::sys::statvfs::fstatvfs(&self.dir)
            .map_err(|e| format!("statvfs {}: {e}", self.path.display()))?;
        Ok(usable(&stats))
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Ok while there is room for a write; otherwise why not, for the caller.
    pub fn check(&self) -> Result<(), DiskError> {
        let free = self.free_bytes().map_err(DiskError::Unmeasurable)?;
        if free < self.min_free_bytes {
            tracing::warn!(
                free_bytes = free,
                min_free_bytes = self.min_free_bytes,
                data_dir = %self.path.display(),
                "key-value write refused: disk almost full"
            );
            return Err(DiskError::Low(DiskLow {
                dir: self.path.clone(),
                free_bytes: free,
                min_free_bytes: self.min_free_bytes,
            }));
        }
        Ok(())
    }
}

/// The data directory's file system has less free space than the guard keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Not enough free disk space to store the value: {} has {free_bytes} bytes free, below the \
     {min_free_bytes} bytes kept free (ButlerEdge.minFreeDiskBytes). Reads and deletes still \
     work; free disk space on that file system to store values again (deleted keys make room \
     inside the database file, not on the disk)",
    dir.display()
)]
pub struct DiskLow {
    pub dir: PathBuf,
    pub free_bytes: u64,
    pub min_free_bytes: u64,
}

/// Why the guard refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Low(#[from] DiskLow),
    /// `fstatvfs` failed: the guard cannot tell, so it does not let the write through.
    #[error("{0}")]
    Unmeasurable(String),
}

/// Bytes available to an unprivileged writer on the file system holding `path`, for the
/// store's own check after a write failed for lack of space (it works with the guard off).
pub fn available_bytes(path: &Path) -> Result<u64, String> {
    let stats =
        nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    Ok(usable(&stats))
}

fn usable(stats: &nix::sys::statvfs::Statvfs) -> u64 {
    stats
        .blocks_available()
        .saturating_mul(stats.fragment_size())
}
