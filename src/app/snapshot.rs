//! The service's health, written every few seconds to `$RUNTIME_DIRECTORY/health.json`
//! (`/run/butler-edge/health.json` under systemd) for the appliance console.
//!
//! Why a file: the console runs outside the service's sandbox and must show QRS reachability
//! and the database's state, which only the service knows, without holding a caller
//! certificate of its own or widening what the service accepts. The file is the same JSON as
//! `GET /health`; outside systemd (no `RUNTIME_DIRECTORY`) nothing is written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::state::AppState;

/// How often the snapshot is refreshed (the console redraws at the same pace).
pub const INTERVAL: Duration = Duration::from_secs(5);
/// The snapshot's file name in the runtime directory.
pub const FILE: &str = "health.json";

/// Starts the writer when systemd gave the service a runtime directory.
pub fn spawn(state: Arc<AppState>) -> Option<tokio::task::JoinHandle<()>> {
    let dir = std::env::var_os("RUNTIME_DIRECTORY")?;
    // systemd may pass several colon-separated directories; the first is ours.
    let dir = PathBuf::from(dir.to_string_lossy().split(':').next()?.to_string());
    let path = dir.join(FILE);
    Some(tokio::spawn(async move {
        let mut warned = false;
        loop {
            let (_, body) = crate::api::health::report(&state);
            let mut text = body.to_string();
            text.push('\n');
            let written = tokio::task::spawn_blocking({
                let path = path.clone();
                move || replace_file(&path, text.as_bytes())
            })
            .await;
            match written {
                Ok(Err(e)) if !warned => {
                    tracing::warn!("cannot write the health snapshot for the console: {e}");
                    warned = true;
                }
                Ok(Ok(())) => warned = false,
                _ => {}
            }
            tokio::time::sleep(INTERVAL).await;
        }
    }))
}

/// Writes `path` whole by a rename, so the console never reads half a snapshot; readable by
/// all (the console runs as another user), whatever the umask. No fsync: the file lives in
/// `/run` (memory) and is rewritten every few seconds.
fn replace_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.write_all(contents)?;
    drop(file);
    std::fs::rename(&tmp, path)
}
