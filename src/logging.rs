//! Log set-up at the level `Butler.logLevel` gives. `RUST_LOG`, when set, overrides the
//! config (for debugging a single module).
//!
//! Under systemd, when stderr is connected to the journal (`JOURNAL_STREAM` names it), events
//! go straight to journald with their fields as journal fields: a `task_id` field becomes
//! `TASK_ID=…`, so `journalctl -u butler-edge TASK_ID=…` finds one task's story, and likewise
//! `NAMESPACE`, `CLIENT`, `STATUS`, `ELAPSED_MS`. Elsewhere, readable lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::LogLevel;

type BoxedFilter = Box<dyn Layer<Registry> + Send + Sync>;

/// `RUST_LOG` when set and valid; else our own crate at the configured level and
/// dependencies at warn. The latter is a plain target list, not an `EnvFilter`: that would
/// compile regular expressions at start-up and evaluate them on every event, for nothing.
fn filter(level: LogLevel) -> BoxedFilter {
    if let Some(env) = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
    {
        return Box::new(env);
    }
    Box::new(
        Targets::new()
            .with_default(tracing::Level::WARN)
            .with_target("butler_edge", level.as_tracing()),
    )
}

pub fn init(level: LogLevel) {
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                let journald = journald
                    .with_field_prefix(None)
                    .with_syslog_identifier("butler-edge".to_string());
                let _ = tracing_subscriber::registry()
                    .with(filter(level))
                    .with(journald)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("butler-edge: cannot reach journald ({e}); logging to stderr"),
        }
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry()
        .with(filter(level))
        .with(stderr)
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
