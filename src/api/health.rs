//! `GET /health` (liveness and readiness in detail) and `GET /metrics` (Prometheus text).
//!
//! Health answers 200 while the service can do its job and 503 when it cannot (the database
//! does not answer a read, or a configured certificate has expired), with every check's
//! detail in the body, so a load balancer can act on the status and an admin on the body.
//! A disk below the free-space threshold is `degraded` (reads work, writes get 507): 200.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::http::router::{ResponseBody, json};
use crate::pki::read_cert_summaries;
use crate::state::AppState;

/// Days before expiry at which a certificate is reported as `expiring`.
const EXPIRY_WARNING_DAYS: i64 = 30;

pub fn health(state: &AppState) -> Response<ResponseBody> {
    let (code, body) = report(state);
    json(code, &body)
}

/// The health checks as `GET /health` answers them (also written for the appliance console by
/// `appliance::snapshot`).
pub fn report(state: &AppState) -> (StatusCode, Value) {
    let mut failed = false;
    let mut degraded = false;

    let database = match &state.store {
        None => json!({"status": "disabled"}),
        Some(store) => match store.counts() {
            Ok((namespaces, keys)) => {
                let mut check = json!({
                    "status": "ok",
                    "path": store.path().display().to_string(),
                    "namespaces": namespaces,
                    "keys": keys,
                });
                // Seen even with the free-space guard off: the disk filled up under us.
                if store.writes_blocked_by_full_disk() {
                    degraded = true;
                    check["status"] = json!("writes refused");
                    check["message"] = json!(
                        "the last write failed for lack of disk space; writes get 507 until \
                         space is freed, reads work"
                    );
                }
                check
            }
            Err(e) => {
                failed = true;
                json!({"status": "fail", "path": store.path().display().to_string(), "error": e.to_string()})
            }
        },
    };

    let disk = match &state.disk_guard {
        None => json!({"status": "disabled"}),
        Some(guard) => match guard.free_bytes() {
            Ok(free) if free < guard.min_free_bytes() => {
                degraded = true;
                json!({"status": "low", "freeBytes": free, "minFreeBytes": guard.min_free_bytes(),
                       "message": "key-value writes are refused (507) until space is freed"})
            }
            Ok(free) => {
                json!({"status": "ok", "freeBytes": free, "minFreeBytes": guard.min_free_bytes()})
            }
            Err(e) => {
                degraded = true;
                json!({"status": "unknown", "error": e})
            }
        },
    };

    let qrs = qrs_check(state, &mut degraded);

    let mut certificates = Vec::new();
    for (purpose, path) in crate::check::certificate_files(&state.config) {
        let entry = match read_cert_summaries(&path) {
            Ok(certs) => {
                let leaf = &certs[0];
                let days_left = leaf.days_left();
                let status = if days_left < 0 {
                    failed = true;
                    "expired"
                } else if days_left < EXPIRY_WARNING_DAYS {
                    degraded = true;
                    "expiring"
                } else {
                    "ok"
                };
                json!({"purpose": purpose, "file": path.display().to_string(), "subject": leaf.subject,
                       "notAfter": leaf.not_after_text, "daysLeft": days_left, "status": status})
            }
            Err(e) => {
                failed = true;
                json!({"purpose": purpose, "file": path.display().to_string(), "status": "fail", "error": e})
            }
        };
        certificates.push(entry);
    }

    let clock_state = crate::appliance::clock::ClockState::current();
    degraded |= clock_state.degrades();
    let clock = clock_state.health();

    let status = if failed {
        "fail"
    } else if degraded {
        "degraded"
    } else {
        "ok"
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
    });
    let code = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, body)
}

/// How QRS was lately, from the start-task calls and the idle probe. QRS being away makes the
/// service `degraded`, not failed: the key-value store still works, and starts say why they
/// fail.
fn qrs_check(state: &AppState, degraded: &mut bool) -> Value {
    if let Some(why) = &state.config.start_task.not_set_up {
        *degraded = true;
        return json!({"status": "not set up", "message": why});
    }
    let Some(st) = &state.start_task else {
        return json!({"status": "disabled"});
    };
    let qrs = st.starter.qrs();
    let seen = qrs.reachability();
    let now = crate::kv::now_ms();
    let status = match seen.reachable() {
        Some(true) => "ok",
        Some(false) => {
            *degraded = true;
            "unreachable"
        }
        None => "unknown",
    };
    let mut check = json!({"status": status, "host": qrs.host()});
    if let Some(at) = seen.last_answer_ms {
        check["lastSeen"] = json!(rfc3339(at));
        check["lastSeenSecondsAgo"] = json!(now.saturating_sub(at) / 1000);
    }
    if let Some((at, error)) = &seen.last_failure {
        check["lastFailure"] = json!({"at": rfc3339(*at), "error": error});
    }
    check
}

fn rfc3339(unix_ms: u64) -> String {
    let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(unix_ms as i64);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| unix_ms.to_string())
}

pub fn metrics(state: &AppState) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(state.metrics.render(state)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
