//! `PUT /v4/admin/update[?reboot=true]` (endpoint group `admin`): an admin hands the
//! appliance a signed RAUC bundle; the answer says what was installed and what boots next.
//!
//! The service is unprivileged and sandboxed, so it does not install anything itself. It
//! streams the body to `update/bundle.raucb` (never whole in memory; its own size limit,
//! `ButlerEdge.update.maxBundleBytes`), writes `update/request.json`, and waits for the
//! root-side installer (`butler-edge install-update`, started by a path unit) to answer in
//! `update/result.json`. The formats are in `update::handoff`.

use std::path::Path;
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::api::state::AppState;
use crate::authz::Access;
use crate::http::error::ApiError;
use crate::http::response::{ResponseBody, json};
use crate::update::handoff::{
    Failure, Outcome, Request, Source, UpdateDir, hex, read_json, remove_if_present, write_json,
};
use crate::update::now_rfc3339;

/// How many bytes of an upload between two looks at the free space.
const SPACE_CHECK_EVERY: u64 = 16 << 20;
/// How often the installer's answer is looked for.
const POLL: Duration = Duration::from_millis(250);

/// The call, from the router (enablement and the `admin` permission already checked).
pub async fn put(
    state: &AppState,
    access: &Access,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let config = &state.config.update;
    if !config.rauc_system_conf.exists() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "updates need the A/B appliance (no {}): this is a plain package install; \
                 update it with the package manager instead",
                config.rauc_system_conf.display()
            ),
        ));
    }
    let reboot = reboot_flag(query)?;
    require_octet_stream(headers)?;
    // One upload at a time in this process; request.json covers the medium's installs.
    let _one = state.update_lock.try_lock().map_err(|_| busy())?;
    let dir = UpdateDir {
        dir: state.update_dir.clone(),
    };
    tokio::fs::create_dir_all(&dir.dir)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", dir.dir.display())))?;
    if dir.request().exists() {
        return Err(busy());
    }
    let length = content_length(headers)?;
    if let Some(length) = length
        && length > config.max_bundle_bytes
    {
        return Err(too_large(config.max_bundle_bytes));
    }
    check_free_space(state, &dir.dir, length.unwrap_or(0))?;
    let sha256 = match receive(state, &dir, body).await {
        Ok(sha256) => sha256,
        Err(e) => {
            let _ = tokio::fs::remove_file(dir.partial()).await;
            return Err(e);
        }
    };
    let request = Request {
        id: request_id(),
        reboot,
        source: Source::Api,
        sha256,
        requested_by: access.name().to_string(),
        at: now_rfc3339(),
    };
    // A stale answer must not be taken for this request's.
    let _ = remove_if_present(&dir.result());
    write_json(&dir.request(), &request)
        .map_err(|e| ApiError::internal(format!("{}: {e}", dir.request().display())))?;
    tracing::info!(
        id = %request.id,
        sha256 = %request.sha256,
        reboot,
        client = access.name(),
        "update bundle received; waiting for the installer"
    );
    let outcome = wait_for_outcome(&dir, &request.id, config.install_timeout).await?;
    answer(outcome)
}

/// `?reboot=true|false` (default false).
fn reboot_flag(query: &[(String, String)]) -> Result<bool, ApiError> {
    match query
        .iter()
        .find(|(k, _)| k == "reboot")
        .map(|(_, v)| v.as_str())
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "reboot: expected true or false, found {other:?}"
        ))),
    }
}

/// The bundle is sent as `application/octet-stream`; anything else is a mistake (a form, a
/// JSON body) and is refused before a byte is stored.
fn require_octet_stream(headers: &HeaderMap) -> Result<(), ApiError> {
    let found = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = found.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/octet-stream") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the update bundle is sent as Content-Type: application/octet-stream, found \
                 {found:?}; e.g. curl -T bundle.raucb -H 'Content-Type: application/octet-stream'"
            ),
        ))
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(http::header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("Content-Length: not a number"))
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "an update is already being received or installed; wait for it to finish (GET /health \
         shows the last update) and try again",
    )
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the update bundle is larger than the limit of {limit} bytes \
             (ButlerEdge.update.maxBundleBytes); nothing was stored"
        ),
    )
}

/// Enough room for the bundle (`length` more bytes) and the space the free-disk guard keeps
/// for the store: 507 otherwise, like a key-value write.
fn check_free_space(state: &AppState, dir: &Path, length: u64) -> Result<(), ApiError> {
    let keep = state.config.edge.min_free_disk_bytes;
    let free = crate::disk::available_bytes(dir).map_err(ApiError::internal)?;
    if free < length.saturating_add(keep) {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "not enough free disk space for the update bundle: {} has {free} bytes free; \
                 the bundle needs {length} and {keep} are kept free for the store \
                 (ButlerEdge.minFreeDiskBytes); nothing was stored",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Streams the body to `bundle.raucb.partial`, synced, then renames it to `bundle.raucb`;
/// returns its SHA-256. Each chunk is written and dropped, so memory stays flat; a chunk
/// that does not arrive within `bodyReadTimeoutMs` ends the upload (408).
async fn receive(state: &AppState, dir: &UpdateDir, body: Incoming) -> Result<String, ApiError> {
    let limit = state.config.update.max_bundle_bytes;
    let idle = state.config.edge.limits.body_read_timeout;
    let io = |e: std::io::Error| {
        if e.raw_os_error() == Some(nix::libc::ENOSPC) {
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "the disk filled up while receiving the update bundle ({}); nothing was stored",
                    dir.dir.display()
                ),
            )
        } else {
            ApiError::internal(format!("{}: {e}", dir.partial().display()))
        }
    };
    let mut file = tokio::fs::File::create(dir.partial()).await.map_err(io)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut received: u64 = 0;
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the update bundle stopped arriving for {} ms \
                         (ButlerEdge.limits.bodyReadTimeoutMs); nothing was stored",
                        idle.as_millis()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(|e| {
                ApiError::bad_request(format!("cannot read the update bundle: {e}"))
            })?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > limit {
            return Err(too_large(limit));
        }
        digest.update(&data);
        file.write_all(&data).await.map_err(io)?;
        // A body without Content-Length was only checked against the reserve: keep
        // checking, so an upload never eats the space the store's writes need.
        if received / SPACE_CHECK_EVERY != (received - data.len() as u64) / SPACE_CHECK_EVERY {
            check_free_space(state, &dir.dir, 0)?;
        }
    }
    if received == 0 {
        return Err(ApiError::bad_request(
            "the request has no body; send the update bundle (.raucb) as the body",
        ));
    }
    file.sync_all().await.map_err(io)?;
    drop(file);
    tokio::fs::rename(dir.partial(), dir.bundle())
        .await
        .map_err(io)?;
    Ok(hex(digest.finish().as_ref()))
}

/// A random id for the request, echoed in the installer's answer.
fn request_id() -> String {
    let bytes: [u8; 8] = rand::random();
    hex(&bytes)
}

/// Polls for the installer's answer to this request; 504 when it does not come in time
/// (the install may still be running: the request stays).
async fn wait_for_outcome(
    dir: &UpdateDir,
    id: &str,
    timeout: Duration,
) -> Result<Outcome, ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let path = dir.result();
        let found: Option<Outcome> = tokio::task::spawn_blocking(move || read_json(&path))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .unwrap_or(None);
        if let Some(outcome) = found.filter(|o| o.id == id) {
            let _ = remove_if_present(&dir.result());
            return Ok(outcome);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the installer (butler-edge-update.service) has not answered within {} s \
                     (ButlerEdge.update.installTimeoutMs); the install may still be running: \
                     GET /health shows the last update, the journal of \
                     butler-edge-update.service what it is doing",
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The installer's answer as the caller reads it.
fn answer(outcome: Outcome) -> Result<Response<ResponseBody>, ApiError> {
    if outcome.ok {
        return Ok(json(
            StatusCode::OK,
            &json!({
                "installed": outcome.installed,
                "nextBoot": outcome.next_boot,
                "rebooting": outcome.rebooting,
            }),
        ));
    }
    let error = outcome.error.unwrap_or_else(|| "no reason given".into());
    Err(match outcome.failure {
        Some(Failure::Refused) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the update bundle was refused: {error}; nothing was changed"),
        ),
        _ => ApiError::internal(format!(
            "the update was not installed: {error}; the running system is unchanged and still \
             boots"
        )),
    })
}
