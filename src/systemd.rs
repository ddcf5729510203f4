//! systemd integration: readiness, stopping and the watchdog (`Type=notify`).
//!
//! systemd treats the service as started only when it says `READY=1`, which we send once the
//! listener is bound and the database is open, so units ordered after butler-edge (and an
//! admin's `systemctl start`) wait for a service that really answers. `STOPPING=1` marks the
//! start of a graceful shutdown. With `WatchdogSec=` set, systemd kills and restarts a
//! service that stops sending `WATCHDOG=1`; we send it at half the interval, and only while a
//! liveness check passes: the database answers a read, its writer thread takes work (so
//! writes are not stuck behind a hung commit) and the accept loop answers a probe. A process
//! whose runtime is wedged, whose database is stuck, or whose accept loop has died therefore
//! gets restarted instead of sitting there looking alive.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call here is a no-op.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sd_notify::NotifyState;
use tokio::sync::Notify;

/// One part of the liveness check, handed in by the wiring (the database's is in `app`):
/// given how long it may take, `Ok` or why the service is not alive.
pub type Probe = Box<dyn Fn(Duration) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// True when systemd started us as a service (it sets `INVOCATION_ID` for every unit, and
/// `NOTIFY_SOCKET` for `Type=notify` ones).
pub fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some() || std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1` with a status line for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`: a graceful shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// The accept loop's side of the liveness check: the watchdog asks, the loop answers from
/// inside its `select!`, which proves the loop is still being polled.
#[derive(Default)]
pub struct AcceptProbe {
    asked: Notify,
    answered: AtomicU64,
}

impl AcceptProbe {
    /// Resolves when the watchdog asks; the accept loop then calls [`AcceptProbe::answer`].
    pub async fn asked(&self) {
        self.asked.notified().await
    }

    pub fn answer(&self) {
        self.answered.fetch_add(1, Ordering::AcqRel);
    }

    /// Asks, and waits up to `within` for an answer.
    async fn check(&self, within: Duration) -> bool {
        let before = self.answered.load(Ordering::Acquire);
        self.asked.notify_one();
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.answered.load(Ordering::Acquire) != before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}

/// Starts the watchdog task when systemd asked for one (`WATCHDOG_USEC` for our pid).
/// `accept` is None when no REST listener runs; `probes` are the other parts of the
/// liveness check (the database's), asked in order after the accept loop.
pub fn start_watchdog(accept: Option<Arc<AcceptProbe>>, probes: Vec<Probe>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    // A check must finish well within one period, or the ping it gates comes too late.
    let check_timeout = (period / 2).max(Duration::from_millis(100));
    tracing::info!(
        watchdog_ms = interval.as_millis() as u64,
        "systemd watchdog enabled; pinging at half the interval while the liveness check passes"
    );
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            match liveness(accept.as_deref(), &probes, check_timeout).await {
                Ok(()) => {
                    if failing {
                        tracing::warn!("liveness check passes again; pinging the systemd watchdog");
                        failing = false;
                    }
                    notify(&[NotifyState::Watchdog]);
                }
                Err(why) => {
                    failing = true;
                    tracing::error!(
                        reason = %why,
                        "liveness check failed; not pinging the systemd watchdog"
                    );
                }
            }
        }
    });
}

async fn liveness(
    accept: Option<&AcceptProbe>,
    probes: &[Probe],
    within: Duration,
) -> Result<(), String> {
    if let Some(accept) = accept
        && !accept.check(within).await
    {
        return Err(format!(
            "the accept loop did not answer within {} ms",
            within.as_millis()
        ));
    }
    for probe in probes {
        probe(within).await?;
    }
    Ok(())
}
