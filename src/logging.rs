//! Log set-up: readable lines on stderr at the level `Butler.logLevel` gives.
//! `RUST_LOG`, when set, overrides the config (for debugging a single module).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
