//! `GET /health` (liveness and readiness in detail) and `GET /metrics` (Prometheus text).
//!
//! Health answers 200 while the service can do its job and 503 when it cannot (the database
//! does not answer a read, or a configured certificate has expired), with every check's
//! detail in the body, so a load balancer can act on the status and an admin on the body.
//! A disk below the free-space threshold is `degraded` (reads work, writes get 507): 200.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::api::state::AppState;
use crate::http::response::{ResponseBody, json};
use crate::pki::read_cert_summaries;
use crate::security::inventory::{CertificateFile, Expiry, certificate_files};

/// How one check came out, for the overall status.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Ok,
    /// Still doing its job, with a part not working (200).
    Degraded,
    /// Cannot do its job (503).
    Failed,
}

pub fn health(state: &AppState) -> Response<ResponseBody> {
    let (code, body) = report(state);
    json(code, &body)
}

/// The health checks as `GET /health` answers them (also written for the appliance console by
/// `app::snapshot`).
pub fn report(state: &AppState) -> (StatusCode, Value) {
    let (database, db) = database_check(state);
    let (disk, dk) = disk_check(state);
    let (qrs, qr) = qrs_check(state);
    let (certificates, certs) = certificate_checks(state);
    let (clock, ck) = clock_check();
    let verdict = [db, dk, qr, certs, ck]
        .into_iter()
        .max()
        .unwrap_or(Verdict::Ok);
    let status = match verdict {
        Verdict::Failed => "fail",
        Verdict::Degraded => "degraded",
        Verdict::Ok => "ok",
    };
    let body: Value = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": state.metrics.uptime_seconds(),
        "checks": {
            "database": database,
            "disk": disk,
            "qrs": qrs,
            "certificates": certificates,
            "clock": clock,
        },
        "appliance": appliance_section(state),
    });
    let code = if verdict == Verdict::Failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, body)
}

/// The appliance's version, slots, last update and any rollback, from the slots report
/// confirm-boot writes. Information, not a check: it never changes the status (a rolled-back
/// update leaves a working appliance, and confirm-boot reads this status to decide).
fn appliance_section(state: &AppState) -> Value {
    use crate::update::ApplianceView;
    match state.config.update.appliance_files().view() {
        ApplianceView::Plain => json!({
            "status": "not an A/B appliance",
            "message": "a plain package install (no RAUC config): update it with the package \
                        manager; PUT /v4/admin/update needs the appliance image",
        }),
        ApplianceView::NoReport { version } => json!({
            "status": "unknown",
            "version": version,
            "message": "no slots report yet (butler-edge-confirm-boot.service writes it at boot)",
        }),
        ApplianceView::Slots { version, report } => {
            let status = if report.trial {
                "trial"
            } else if report.rollback.is_some() {
                "rolled back"
            } else {
                "ok"
            };
            json!({
                "status": status,
                "version": version,
                "slot": report.booted.slot,
                "nextBoot": report.next_boot,
                "slots": report.slots,
                "lastUpdate": report.last_update.map(|u| json!({
                    "version": u.installed.version, "slot": u.installed.slot,
                    "from": u.from, "state": u.state, "at": u.at,
                })),
                "rollback": report.rollback,
            })
        }
    }
}

/// Whether NTP has set the clock TTLs and certificate checks run on: not yet is `degraded`.
fn clock_check() -> (Value, Verdict) {
    let clock = crate::clock::sync::ClockState::current();
    let verdict = if clock.degrades() {
        Verdict::Degraded
    } else {
        Verdict::Ok
    };
    (clock.health(), verdict)
}

/// The database answers a read; writes refused after a full disk are `degraded`.
fn database_check(state: &AppState) -> (Value, Verdict) {
    let Some(store) = &state.store else {
        return (json!({"status": "disabled"}), Verdict::Ok);
    };
    match store.counts() {
        Ok((namespaces, keys)) => {
            let mut check = json!({
                "status": "ok",
                "path": store.path().display().to_string(),
                "namespaces": namespaces,
                "keys": keys,
            });
            // Seen even with the free-space guard off: the disk filled up under us.
            if store.writes_blocked_by_full_disk() {
                check["status"] = json!("writes refused");
                check["message"] = json!(
                    "the last write failed for lack of disk space; writes get 507 until \
                     space is freed, reads work"
                );
                return (check, Verdict::Degraded);
            }
            (check, Verdict::Ok)
        }
        Err(e) => (
            json!({"status": "fail", "path": store.path().display().to_string(), "error": e.to_string()}),
            Verdict::Failed,
        ),
    }
}

/// Free space against the guard's threshold.
fn disk_check(state: &AppState) -> (Value, Verdict) {
    let Some(guard) = &state.disk_guard else {
        return (json!({"status": "disabled"}), Verdict::Ok);
    };
    match guard.free_bytes() {
        Ok(free) if free < guard.min_free_bytes() => (
            json!({"status": "low", "freeBytes": free, "minFreeBytes": guard.min_free_bytes(),
                   "message": "key-value writes are refused (507) until space is freed"}),
            Verdict::Degraded,
        ),
        Ok(free) => (
            json!({"status": "ok", "freeBytes": free, "minFreeBytes": guard.min_free_bytes()}),
            Verdict::Ok,
        ),
        Err(e) => (json!({"status": "unknown", "error": e}), Verdict::Degraded),
    }
}

/// Each certificate file the config uses (the inventory `check-config` and the expiry
/// warnings use too): its leaf's expiry.
fn certificate_checks(state: &AppState) -> (Vec<Value>, Verdict) {
    let mut verdict = Verdict::Ok;
    let mut certificates = Vec::new();
    for CertificateFile { purpose, path } in certificate_files(&state.config) {
        let file = path.display().to_string();
        let (entry, seen) = match read_cert_summaries(&path) {
            Ok(certs) => {
                let leaf = &certs[0];
                let days_left = leaf.days_left();
                let (status, seen) = match Expiry::of(days_left) {
                    Expiry::Expired => ("expired", Verdict::Failed),
                    Expiry::Expiring => ("expiring", Verdict::Degraded),
                    Expiry::Valid => ("ok", Verdict::Ok),
                };
                let entry = json!({"purpose": purpose, "file": file, "subject": leaf.subject,
                       "notAfter": leaf.not_after_text, "daysLeft": days_left, "status": status});
                (entry, seen)
            }
            Err(e) => (
                json!({"purpose": purpose, "file": file, "status": "fail", "error": e}),
                Verdict::Failed,
            ),
        };
        verdict = verdict.max(seen);
        certificates.push(entry);
    }
    (certificates, verdict)
}

/// How QRS was lately, from the start-task calls and the idle probe. QRS being away makes the
/// service `degraded`, not failed: the key-value store still works, and starts say why they
/// fail.
fn qrs_check(state: &AppState) -> (Value, Verdict) {
    if let Some(why) = state.config.features.start_task_not_set_up() {
        return (
            json!({"status": "not set up", "message": why}),
            Verdict::Degraded,
        );
    }
    let Some(st) = &state.start_task else {
        return (json!({"status": "disabled"}), Verdict::Ok);
    };
    let qrs = st.starter.qrs();
    let seen = qrs.reachability();
    let now = crate::clock::now_ms();
    let (status, verdict) = match seen.reachable() {
        Some(true) => ("ok", Verdict::Ok),
        Some(false) => ("unreachable", Verdict::Degraded),
        None => ("unknown", Verdict::Ok),
    };
    let mut check = json!({"status": status, "host": qrs.host()});
    if let Some(at) = seen.last_answer_ms {
        check["lastSeen"] = json!(rfc3339(at));
        check["lastSeenSecondsAgo"] = json!(now.saturating_sub(at) / 1000);
    }
    if let Some((at, error)) = &seen.last_failure {
        check["lastFailure"] = json!({"at": rfc3339(*at), "error": error});
    }
    (check, verdict)
}

fn rfc3339(unix_ms: u64) -> String {
    let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(unix_ms as i64);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| unix_ms.to_string())
}

pub fn metrics(state: &AppState) -> Response<ResponseBody> {
    crate::http::response::text(crate::metrics::CONTENT_TYPE, state.metrics.render())
}
