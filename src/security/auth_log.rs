//! Log lines for refused API tokens, bounded like [`super::handshake_log`].
//!
//! Each refusal is worth an info line naming the address and the reason (never the token:
//! a wrong token is often a right one pasted into the wrong place). An address that fails
//! [`WARN_AFTER`] times within one [`WINDOW`] gets a warn line, once per window, so an admin
//! notices a misconfigured caller or someone guessing. Guessing is pointless (tokens have
//! 256 bits), so the point is only that the log cannot be flooded: at most
//! [`LINES_PER_WINDOW`] info lines per window, at most [`MAX_ADDRESSES`] addresses counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The length of one counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How many refusal lines (info) one window may write.
pub const LINES_PER_WINDOW: u32 = 20;
/// Failures from one address within a window that earn a warn line.
pub const WARN_AFTER: u32 = 5;
/// Addresses counted per window; further addresses are counted only in the info budget.
pub const MAX_ADDRESSES: usize = 1024;

struct Window {
    started: Option<Instant>,
    written: u32,
    left_out: u64,
    per_address: HashMap<IpAddr, u32>,
}

static STATE: Mutex<Option<Window>> = Mutex::new(None);

/// Records one refused authentication from `peer` and writes its line if the budget allows.
pub fn refused(peer: IpAddr, client: &str, reason: &'static str, message: &str) {
    let Ok(mut guard) = STATE.lock() else {
        return;
    };
    let now = Instant::now();
    let w = guard.get_or_insert_with(|| Window {
        started: None,
        written: 0,
        left_out: 0,
        per_address: HashMap::new(),
    });
    if w.started
        .is_none_or(|started| now.duration_since(started) >= WINDOW)
    {
        if w.left_out > 0 {
            tracing::warn!(
                left_out = w.left_out,
                "{} refused API authentications were not logged (at most {LINES_PER_WINDOW} \
                 lines per {} s)",
                w.left_out,
                WINDOW.as_secs()
            );
        }
        w.started = Some(now);
        w.written = 0;
        w.left_out = 0;
        w.per_address.clear();
    }
    if w.per_address.len() < MAX_ADDRESSES || w.per_address.contains_key(&peer) {
        let count = w.per_address.entry(peer).or_insert(0);
        *count += 1;
        if *count == WARN_AFTER {
            tracing::warn!(
                peer = %peer,
                failures = WARN_AFTER,
                reason,
                "{WARN_AFTER} refused API authentications from {peer} within {} s (last: {reason}); \
                 check the caller's token or certificate",
                WINDOW.as_secs()
            );
        }
    }
    if w.written < LINES_PER_WINDOW {
        w.written += 1;
        tracing::info!(peer = %peer, client, reason, "authentication refused (401): {message}");
    } else {
        w.left_out += 1;
    }
}
