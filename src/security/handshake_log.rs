//! A rate limit for the log lines a failed TLS handshake writes.
//!
//! Anyone who can reach the port can fail a handshake (no certificate, a self-signed one),
//! and each failure is worth a line to an admin looking for an expired Sense certificate.
//! Unbounded, that is a way to flood the log and the disk under it. At most
//! [`LINES_PER_WINDOW`] lines are written per [`WINDOW`]; the first line after a window in
//! which some were left out says how many.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The length of one counting window.
pub const WINDOW: Duration = Duration::from_secs(5);
/// How many handshake-failure lines one window may write.
pub const LINES_PER_WINDOW: u32 = 20;

struct Window {
    started: Option<Instant>,
    written: u32,
    left_out: u64,
}

static WINDOW_STATE: Mutex<Window> = Mutex::new(Window {
    started: None,
    written: 0,
    left_out: 0,
});

/// Whether a handshake-failure line may be written now. When a new window opens after
/// lines were left out, logs how many first.
pub fn may_log() -> bool {
    let Ok(mut w) = WINDOW_STATE.lock() else {
        return true;
    };
    let now = Instant::now();
    if w.started
        .is_none_or(|started| now.duration_since(started) >= WINDOW)
    {
        if w.left_out > 0 {
            tracing::warn!(
                left_out = w.left_out,
                window_s = WINDOW.as_secs(),
                "{} failed TLS handshakes were not logged (at most {LINES_PER_WINDOW} lines per {} s)",
                w.left_out,
                WINDOW.as_secs()
            );
        }
        *w = Window {
            started: Some(now),
            written: 0,
            left_out: 0,
        };
    }
    if w.written < LINES_PER_WINDOW {
        w.written += 1;
        true
    } else {
        w.left_out += 1;
        false
    }
}
