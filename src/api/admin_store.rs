//! `GET /v4/admin/store` (export the whole store) and `PUT /v4/admin/store` (restore an
//! export), in the `admin` group. The format, the one read or write transaction and what a
//! failed restore leaves are `kv::backup`'s; this module streams the bodies both ways and
//! says in HTTP what came of it (README, "Export and restore").

use http::{HeaderValue, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use crate::api::kv_input::RestoreLimits;
use crate::api::state::AppState;
use crate::http::body::{StreamLimits, pump_body};
use crate::http::error::ApiError;
use crate::http::response::{ResponseBody, json, streamed};
use crate::kv::Store;
use crate::kv::backup::{RestoreError, RestoreMode};

/// The export's content type: JSON lines.
const EXPORT_TYPE: &str = "application/x-ndjson";

/// Streams the export: the body is written from one read transaction as the caller reads it.
pub fn export(store: &Store) -> Response<ResponseBody> {
    let store = store.clone();
    let mut response = streamed(EXPORT_TYPE, move |out| {
        store.export(out).map(|_| ()).map_err(std::io::Error::other)
    });
    let name = format!(
        "attachment; filename=\"butler-edge-store-{}.jsonl\"",
        crate::clock::now_ms()
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `?replace=true` replaces a store that holds something; without it only an empty store
/// is restored into.
fn mode(query: &[(String, String)]) -> Result<RestoreMode, ApiError> {
    match query
        .iter()
        .find(|(name, _)| name == "replace")
        .map(|(_, v)| v.as_str())
    {
        None | Some("false") => Ok(RestoreMode::IntoEmpty),
        Some("true") => Ok(RestoreMode::Replace),
        Some(other) => Err(ApiError::bad_request(format!(
            "querystring/replace must be true or false, found {other:?}"
        ))),
    }
}

/// Reads the export from the request body into the store, all or nothing.
pub async fn restore(
    state: &AppState,
    store: &Store,
    query: &[(String, String)],
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let mode = mode(query)?;
    if let Some(guard) = &state.disk_guard {
        guard.check()?;
    }
    let failed = |e: RestoreError| restore_failed(store, e);
    // Refused before a byte of the body is read; checked again inside the transaction.
    if mode == RestoreMode::IntoEmpty {
        let (namespaces, keys) = store
            .counts()
            .map_err(|e| ApiError::store("Restore failed", &e, store.path()))?;
        if (namespaces, keys) != (0, 0) {
            return Err(failed(RestoreError::NotEmpty { namespaces, keys }));
        }
    }
    let limits = state.config.edge.limits.clone();
    let (pump, reader) = pump_body(
        body,
        StreamLimits {
            max_bytes: limits.max_restore_bytes,
            setting: "ButlerEdge.limits.maxRestoreBytes",
            idle_timeout: limits.body_read_timeout,
        },
    );
    let restoring = store.clone();
    let mut restore = tokio::task::spawn_blocking(move || {
        restoring.restore(reader, mode, &RestoreLimits(&limits))
    });
    let mut pump = std::pin::pin!(pump);
    // A restore that stops early (a bad line) needs no more of the body; one that ends well
    // has read the body to its end, so the pump is done too.
    let (pumped, restored) = tokio::select! {
        restored = &mut restore => (None, restored),
        pumped = &mut pump => (Some(pumped), restore.await),
    };
    let restored =
        restored.map_err(|e| ApiError::internal(format!("the restore task failed: {e}")))?;
    match (pumped, restored) {
        (_, Ok(done)) => Ok(json(
            StatusCode::OK,
            &json!({
                "restored": {"namespaces": done.namespaces, "keys": done.keys},
                "expiredNotRestored": done.expired_skipped,
                "replaced": mode == RestoreMode::Replace,
                "exportedAt": done.exported_at,
            }),
        )),
        // The body broke off (a limit, a timeout): that is the reason, not what the parser
        // made of the part it got.
        (Some(Err(cut_off)), Err(_)) => Err(ApiError::new(
            cut_off.status,
            format!(
                "{}. Nothing was restored; the store is as it was",
                cut_off.message
            ),
        )),
        (_, Err(e)) => Err(failed(e)),
    }
}

fn restore_failed(store: &Store, error: RestoreError) -> ApiError {
    match error {
        RestoreError::NotEmpty { .. } => ApiError::new(StatusCode::CONFLICT, error.to_string()),
        RestoreError::Invalid(_) | RestoreError::Input(_) => {
            ApiError::bad_request(error.to_string())
        }
        RestoreError::Store(e) => {
            ApiError::store("Restore failed, nothing was restored", &e, store.path())
        }
    }
}
