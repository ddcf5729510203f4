//! Log set-up at the level `Butler.logLevel` gives. `RUST_LOG`, when set, overrides the
//! config (for debugging a single module).
//!
//! Under systemd, when stderr is connected to the journal (`JOURNAL_STREAM` names it), events
//! go straight to journald with their fields as journal fields: a `task_id` field becomes
//! `TASK_ID=…`, so `journalctl -u butler-edge TASK_ID=…` finds one task's story, and likewise
//! `NAMESPACE`, `CLIENT`, `STATUS`, `ELAPSED_MS`. Elsewhere, readable lines on stderr.
//!
//! Log fields carry outside data (certificate names from any TLS client, tags, namespaces),
//! and the formatter writes `Display` fields as they are. On stderr every event therefore
//! goes through [`EscapingStderr`]: control characters (newlines, terminal escapes) and
//! bidirectional-text controls are written as `\n`, `\u{1b}`, …, so one event is always
//! one line that a caller cannot forge or hide, and a line is cut at [`MAX_LINE_BYTES`].
//! journald keeps fields apart by itself and needs neither.

use std::io::Write;

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
    // No colours: their escape codes would be escaped like an attacker's.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(|| EscapingStderr)
        .with_target(false)
        .with_ansi(false);
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

/// The longest line one event writes to stderr; the rest is cut, with a count. Bounds what
/// a caller can add to the log per event (a 30 KB certificate name, a huge tag).
pub const MAX_LINE_BYTES: usize = 4096;

/// stderr, with each event escaped and bounded as the module docs say. The formatter writes
/// one event per `write_all`, ending in its newline; that newline is the only one kept.
pub struct EscapingStderr;

impl Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, newline) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (text.as_ref(), ""),
        };
        let mut line = escape_line(body);
        line.push_str(newline);
        std::io::stderr().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `body` with control and bidi-control characters escaped, cut at [`MAX_LINE_BYTES`].
fn escape_line(body: &str) -> String {
    let mut out = String::with_capacity(body.len().min(MAX_LINE_BYTES) + 32);
    for (at, c) in body.char_indices() {
        if out.len() >= MAX_LINE_BYTES {
            out.push_str(&format!(" …[{} bytes cut]", body.len() - at));
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder how the rest of a line is displayed (Unicode bidi embeddings,
/// overrides and isolates), so text could look unlike what it is.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_lines_bounded() {
        assert_eq!(
            escape_line("a\nb\x1b[2J\u{202e}c\u{85}"),
            "a\\nb\\u{1b}[2J\\u{202e}c\\u{85}"
        );
        assert_eq!(escape_line("Grüße, ✓"), "Grüße, ✓");
        let long = escape_line(&"é".repeat(5000));
        assert!(long.len() < MAX_LINE_BYTES + 40, "{}", long.len());
        assert!(long.ends_with("bytes cut]"));
    }
}
