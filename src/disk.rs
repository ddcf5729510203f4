//! The free-disk guard: refuse key-value writes before the data directory's file system is
//! full, instead of letting a commit fail half-way.
//!
//! redb never leaves a torn commit behind, but an appliance whose disk fills up should say
//! so clearly and keep serving reads. Below `ButlerEdge.minFreeDiskBytes` of space available
//! to the service, writes that add data get 507 Insufficient Storage naming the directory,
//! the space left and the threshold; reads and deletes keep working.
//!
//! The directory is opened once at start-up and measured with `fstatvfs` on that handle, so
//! the check keeps working after privileges are dropped and costs one system call.

use std::fs::File;
use std::path::{Path, PathBuf};

use http::StatusCode;

use crate::http::error::ApiError;

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
        Ok((stats.blocks_available() as u64).saturating_mul(stats.fragment_size() as u64))
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Ok while there is room for a write; otherwise a 507 for the caller.
    pub fn check(&self) -> Result<(), ApiError> {
        let free = self.free_bytes().map_err(ApiError::internal)?;
        if free < self.min_free_bytes {
            tracing::warn!(
                free_bytes = free,
                min_free_bytes = self.min_free_bytes,
                data_dir = %self.path.display(),
                "key-value write refused: disk almost full"
            );
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "Not enough free disk space to store the value: {} has {free} bytes free, \
                     below the {} bytes kept free (ButlerEdge.minFreeDiskBytes). \
                     Reads and deletes still work; free disk space or delete keys",
                    self.path.display(),
                    self.min_free_bytes
                ),
            ));
        }
        Ok(())
    }
}
