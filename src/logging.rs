//! Log set-up at the level `Butler.logLevel` gives. `RUST_LOG`, when set, overrides the
//! config (for debugging a single module).
//!
//! Under systemd, when stderr is connected to the journal (`JOURNAL_STREAM` names it), events
//! go straight to journald with their fields as journal fields: a `task_id` field becomes
//! `TASK_ID=…`, so `journalctl -u butler-edge TASK_ID=…` finds one task's story, and likewise
//! `NAMESPACE`, `CLIENT`, `STATUS`, `ELAPSED_MS`. Elsewhere, readable lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogLevel;

pub fn init(level: LogLevel) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| {
            // Our own crate at the configured level; dependencies one notch quieter.
            let ours = level.as_tracing();
            EnvFilter::new(format!("warn,butler_edge={ours}"))
        });
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                let journald = journald
                    .with_field_prefix(None)
                    .with_syslog_identifier("butler-edge".to_string());
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(journald)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("butler-edge: cannot reach journald ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// systemd sets `JOURNAL_STREAM=<device>:<inode>` for a service whose output goes to the
/// journal; it is ours only if stderr is still that stream (not inherited by a child whose
/// stderr was redirected).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let value = value.to_string_lossy();
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(stat) => stat.st_dev == dev && stat.st_ino == ino,
        Err(_) => false,
    }
}
