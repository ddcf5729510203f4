//! When QRS last answered, and the last time it could not be reached, for `GET /health`.
//!
//! Every QRS call records its outcome here: any HTTP answer (even a 4xx) proves QRS is
//! reachable with our certificate; a refused connection, a failed TLS handshake, a timeout or
//! a broken connection does not. An admin looking at `/health` after a failed start can tell
//! "QRS has been gone since 03:12" from "QRS answered a minute ago, the task is the problem".
//! Between starts the record would go stale, so [`probe_when_idle`] asks QRS `GET /qrs/about`
//! whenever nothing else has reached it for a whole interval.

use std::sync::Mutex;
use std::time::Duration;

use super::QrsClient;
use super::error::QrsError;

/// What the last calls to QRS showed. Times are Unix milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reachability {
    /// The last time QRS answered a request (any status).
    pub last_answer_ms: Option<u64>,
    /// The last time a request got no answer, and why.
    pub last_failure: Option<(u64, String)>,
}

impl Reachability {
    /// Whether the most recent outcome was an answer. `None` before any call.
    pub fn reachable(&self) -> Option<bool> {
        match (&self.last_answer_ms, &self.last_failure) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(answer), Some((failure, _))) => Some(answer >= failure),
        }
    }
}

/// Shared by all clones of one [`QrsClient`].
#[derive(Debug, Default)]
pub struct ReachabilityLog {
    state: Mutex<Reachability>,
}

impl ReachabilityLog {
    pub fn snapshot(&self) -> Reachability {
        self.lock().clone()
    }

    /// Records the outcome of one call: an answer unless QRS was never heard from.
    pub(super) fn record<T>(&self, outcome: &Result<T, QrsError>, now_ms: u64) {
        let mut state = self.lock();
        match outcome {
            Ok(_) | Err(QrsError::Status { .. } | QrsError::BadBody { .. }) => {
                state.last_answer_ms = Some(now_ms);
            }
            Err(e) => state.last_failure = Some((now_ms, e.to_string())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reachability> {
        // The record is two plain values: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Calls `GET /qrs/about` every `interval` in which no other call reached QRS or failed to,
/// so `/health` always knows how QRS was lately. Runs until the runtime shuts down.
pub async fn probe_when_idle(qrs: QrsClient, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let seen = qrs.reachability();
        let latest = seen
            .last_answer_ms
            .max(seen.last_failure.as_ref().map(|(at, _)| *at));
        let now = crate::clock::now_ms();
        let idle = latest.is_none_or(|at| now.saturating_sub(at) >= interval.as_millis() as u64);
        if !idle {
            continue;
        }
        match qrs.about().await {
            Ok(()) => tracing::debug!(qrs = %qrs.host(), "QRS health probe answered"),
            Err(e) => tracing::warn!(qrs = %qrs.host(), error = %e, "QRS health probe failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Result<(), QrsError> {
        Err(QrsError::Unreachable {
            host: "sense:4242".into(),
            endpoint: "GET /qrs/about".into(),
            cause: "connection refused".into(),
        })
    }

    #[test]
    fn the_latest_outcome_decides() {
        let log = ReachabilityLog::default();
        assert_eq!(log.snapshot().reachable(), None);
        log.record(&unreachable(), 10);
        assert_eq!(log.snapshot().reachable(), Some(false));
        // A 403 is still an answer: QRS is there.
        let refused: Result<(), QrsError> = Err(QrsError::Status {
            endpoint: "GET /qrs/about".into(),
            status: 403,
            message: "Forbidden".into(),
        });
        log.record(&refused, 20);
        let seen = log.snapshot();
        assert_eq!(seen.reachable(), Some(true));
        assert_eq!(seen.last_answer_ms, Some(20));
        assert_eq!(seen.last_failure.as_ref().map(|f| f.0), Some(10));
        log.record(&unreachable(), 30);
        assert_eq!(log.snapshot().reachable(), Some(false));
    }
}
