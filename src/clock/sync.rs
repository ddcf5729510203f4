//! Is the wall clock right? Key-value TTL deadlines and certificate checks run on it, so
//! `/health` says whether NTP has synchronised it, and a step of the clock is logged.
//!
//! The kernel's own answer (`adjtimex(2)`) is out of reach of the sandboxed service
//! (`ProtectClock=yes` filters every `@clock` call, reading ones included), so the check asks
//! systemd-timesyncd the way systemd documents it: `/run/systemd/timesync/synchronized`
//! exists once it has synchronised the clock, and its runtime directory exists while it runs.
//! A machine without timesyncd (a developer's, or one using chrony) reports "not managed",
//! which does not degrade the service: its clock is someone else's business there.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// systemd-timesyncd's runtime directory (`RuntimeDirectory=systemd/timesync`).
pub const TIMESYNC_DIR: &str = "/run/systemd/timesync";

/// A clock step larger than this is logged (NTP slews smaller errors).
const STEP_THRESHOLD: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockState {
    /// timesyncd has synchronised the clock (since the time given, when known).
    Synchronised { since: Option<SystemTime> },
    /// timesyncd runs but has not reached a server yet.
    NotSynchronised,
    /// No timesyncd here.
    NotManaged,
}

impl ClockState {
    /// What timesyncd says in `dir` (its runtime directory).
    pub fn read(dir: &Path) -> ClockState {
        let marker: PathBuf = dir.join("synchronized");
        match std::fs::metadata(&marker) {
            Ok(meta) => ClockState::Synchronised {
                since: meta.modified().ok(),
            },
            Err(_) if dir.is_dir() => ClockState::NotSynchronised,
            Err(_) => ClockState::NotManaged,
        }
    }

    pub fn current() -> ClockState {
        ClockState::read(Path::new(TIMESYNC_DIR))
    }

    /// True when this should make the service `degraded`.
    pub fn degrades(&self) -> bool {
        *self == ClockState::NotSynchronised
    }

    /// The `/health` check.
    pub fn health(&self) -> Value {
        let now = super::now_ms();
        match self {
            ClockState::Synchronised { since } => {
                let mut check = json!({"status": "synchronised", "source": "systemd-timesyncd"});
                if let Some(ms) = since.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                {
                    check["since"] = json!(ms.as_secs());
                }
                check["now"] = json!(now / 1000);
                check
            }
            ClockState::NotSynchronised => json!({
                "status": "not synchronised",
                "source": "systemd-timesyncd",
                "now": now / 1000,
                "message": "no NTP server has answered yet: TTL deadlines and certificate checks \
                            use a clock that may be wrong (set NTP servers by DHCP or on the \
                            provisioning medium)"
            }),
            ClockState::NotManaged => json!({
                "status": "not managed",
                "now": now / 1000,
                "message": "systemd-timesyncd does not run on this machine; keep its clock right by other means"
            }),
        }
    }
}

/// How far the wall clock moved against the monotonic clock since the last sample: a
/// positive value is a step forward.
pub struct StepDetector {
    wall: SystemTime,
    mono: std::time::Instant,
}

impl Default for StepDetector {
    fn default() -> Self {
        StepDetector {
            wall: SystemTime::now(),
            mono: std::time::Instant::now(),
        }
    }
}

impl StepDetector {
    /// The step since the last call, in milliseconds, when larger than the threshold.
    pub fn sample(&mut self) -> Option<i64> {
        let (wall, mono) = (SystemTime::now(), std::time::Instant::now());
        let step = step_ms(self.wall, self.mono, wall, mono);
        self.wall = wall;
        self.mono = mono;
        step
    }
}

/// How much further the wall clock moved than the monotonic one between two samples, when
/// more than the threshold (positive: a step forward).
fn step_ms(
    wall_before: SystemTime,
    mono_before: std::time::Instant,
    wall: SystemTime,
    mono: std::time::Instant,
) -> Option<i64> {
    let wall_ms = match wall.duration_since(wall_before) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    let mono_ms = mono.duration_since(mono_before).as_millis() as i64;
    let step = wall_ms - mono_ms;
    (step.unsigned_abs() > STEP_THRESHOLD.as_millis() as u64).then_some(step)
}

/// Logs every step of the wall clock while the service runs (a thread: it must see steps
/// even when the async runtime is busy). A step forward makes keys whose TTL deadline falls in
/// the skipped span expire at once; the log says so, with the span.
pub fn watch_steps() {
    let spawned = std::thread::Builder::new()
        .name("clock-steps".into())
        .spawn(|| {
            let mut detector = StepDetector::default();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if let Some(step_ms) = detector.sample() {
                    log_step(step_ms);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the wall clock for steps: {e}");
    }
}

fn log_step(step_ms: i64) {
    let state = ClockState::current();
    let synced = matches!(state, ClockState::Synchronised { .. });
    if step_ms > 0 {
        tracing::warn!(
            CLOCK_STEP_MS = step_ms,
            "the wall clock stepped forward by {:.1} s{}: key-value entries whose TTL deadline fell in the skipped span expire now, and certificate validity is judged on the new time",
            step_ms as f64 / 1000.0,
            if synced { " (NTP synchronised it)" } else { "" }
        );
    } else {
        tracing::warn!(
            CLOCK_STEP_MS = step_ms,
            "the wall clock stepped back by {:.1} s{}: key-value entries live that much longer than their TTL asked",
            -step_ms as f64 / 1000.0,
            if synced { " (NTP synchronised it)" } else { "" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesyncd_states() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ClockState::read(&dir.path().join("absent")),
            ClockState::NotManaged
        );
        assert_eq!(ClockState::read(dir.path()), ClockState::NotSynchronised);
        assert!(ClockState::read(dir.path()).degrades());
        std::fs::write(dir.path().join("synchronized"), "").unwrap();
        let state = ClockState::read(dir.path());
        assert!(matches!(state, ClockState::Synchronised { since: Some(_) }));
        assert!(!state.degrades());
        assert_eq!(state.health()["status"], "synchronised");
    }

    #[test]
    fn steps_forward_and_back_are_measured_against_the_monotonic_clock() {
        let (wall, mono) = (SystemTime::now(), std::time::Instant::now());
        let later = mono + Duration::from_secs(1);
        // One second passed on both clocks: no step.
        assert_eq!(
            step_ms(wall, mono, wall + Duration::from_secs(1), later),
            None
        );
        // NTP moved the wall clock an hour ahead during that second.
        assert_eq!(
            step_ms(wall, mono, wall + Duration::from_secs(3601), later),
            Some(3_600_000)
        );
        // ... or 10 s back.
        assert_eq!(
            step_ms(wall, mono, wall - Duration::from_secs(9), later),
            Some(-10_000)
        );
        // A slew within the threshold is not a step.
        assert_eq!(
            step_ms(wall, mono, wall + Duration::from_millis(2500), later),
            None
        );
    }

    #[test]
    fn no_step_without_a_clock_change() {
        let mut detector = StepDetector::default();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(detector.sample(), None);
    }
}
