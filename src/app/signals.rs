//! The process's signals as what [`super::run`] takes: `SIGTERM`/`SIGINT` as the shutdown
//! future, `SIGHUP` as reload requests.
//!
//! Kept apart from the service so that an in-process caller (a test) can run the service
//! with a future and a channel of its own, and only the real process listens to signals.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Installs the handlers. The future resolves at the first `SIGTERM` or `SIGINT` (logging
/// which); every `SIGHUP` sends one reload request.
pub fn install() -> std::io::Result<(impl Future<Output = ()>, mpsc::Receiver<()>)> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let (reload, reloads) = mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            // A reload already pending covers this one too.
            let _ = reload.try_send(());
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    };
    Ok((shutdown, reloads))
}
