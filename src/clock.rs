//! The wall clock, in the units the rest of the crate stores and compares.
//!
//! Stored TTL deadlines, QRS reachability times, certificate expiry and the start time in
//! `/metrics` all count from the Unix epoch. One leaf module reads the clock so that none of
//! them has to import another layer (the store, say) just to know the time.

pub mod sync;

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the unit of stored deadlines.
pub fn now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Whole seconds since the Unix epoch, the unit of certificate and CRL times.
pub fn unix_secs() -> i64 {
    since_epoch().as_secs() as i64
}

/// Seconds since the Unix epoch with a fraction, for `butler_edge_start_time_seconds`.
pub fn unix_secs_f64() -> f64 {
    since_epoch().as_secs_f64()
}

/// A clock set before 1970 reads as the epoch itself: nothing then looks expired early.
fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
