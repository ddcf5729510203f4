//! The expiry sweeper: removes expired entries in the background.
//!
//! Shaped like mini-redis's purge task: it sleeps until the earliest deadline in
//! the expiry index and is woken early, through a `Notify`, when a write stores an
//! earlier one. Removal goes through the writer like any other write. Reads do not
//! depend on the sweeper: they filter expired values themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Store, WriteOp, now_ms};

/// How long to back off after a failed read or purge before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Sweeper {
    shared: Arc<Shared>,
}

struct Shared {
    wake: Notify,
    /// The deadline the sweeper sleeps until; `u64::MAX` while it is awake or has
    /// nothing to wait for, so that every new deadline leaves it a wake-up permit.
    sleeping_until: AtomicU64,
    stopped: AtomicBool,
}

impl Sweeper {
    pub fn new() -> Sweeper {
        Sweeper {
            shared: Arc::new(Shared {
                wake: Notify::new(),
                sleeping_until: AtomicU64::new(u64::MAX),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// Called by the writer after committing a deadline.
    pub fn note_deadline(&self, deadline: u64) {
        if deadline < self.shared.sleeping_until.load(Ordering::Acquire) {
            self.shared.wake.notify_one();
        }
    }

    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    pub fn start(&self, store: Store) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // The task holds a Store handle; it must not keep the store alive after
            // stop(), so it checks the flag on every turn.
            while !shared.stopped.load(Ordering::Acquire) {
                shared.sleeping_until.store(u64::MAX, Ordering::Release);
                let next = match store.next_deadline() {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(error = %e, "expiry sweeper cannot read the expiry index");
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                };
                let now = now_ms();
                match next {
                    Some(deadline) if deadline <= now => {
                        match store.write_one(WriteOp::PurgeExpired { now }).await {
                            Ok(outcome) => tracing::debug!(?outcome, "expired keys removed"),
                            Err(e) => {
                                tracing::warn!(error = %e, "expiry sweeper could not remove expired keys");
                                tokio::time::sleep(RETRY_AFTER).await;
                            }
                        }
                    }
                    Some(deadline) => {
                        shared.sleeping_until.store(deadline, Ordering::Release);
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
                            _ = shared.wake.notified() => {}
                        }
                    }
                    None => shared.wake.notified().await,
                }
            }
        });
    }
}
