//! Keeping web browsers from being used against the API (cross-site request forgery and
//! DNS rebinding).
//!
//! Butler's API has no authentication of its own, so a web page on the local network could
//! make a visitor's browser post to it: an HTML form can send `text/plain`,
//! form-encoded or multipart bodies to any address without asking, and `text/plain` can
//! carry valid JSON. Three checks close that:
//! - a body declared as anything but `application/json` is refused (HTML forms can only
//!   declare `text/plain`, form-encoded or multipart; a browser sends JSON cross-origin only
//!   after a CORS preflight, which this server never grants); an undeclared body is taken
//!   as JSON, as butler_subs.qvs's start subs send it;
//! - a request carrying an `Origin` header (browsers send it on every cross-origin request
//!   and every POST; Sense, curl and upstream systems do not) is refused unless the origin
//!   is in `ButlerEdge.allowedOrigins` (empty by default);
//! - with `ButlerEdge.allowedHosts` set, a request naming another host is refused: a
//!   DNS-rebound page reaches this server under the attacker's name.

use http::request::Parts;
use http::{HeaderMap, StatusCode};

use crate::config::EdgeConfig;
use crate::http::error::ApiError;

/// The `Origin` and `Host` checks, before anything else is looked at.
pub fn check_origin_and_host(edge: &EdgeConfig, parts: &Parts) -> Result<(), ApiError> {
    if let Some(origin) = parts.headers.get(http::header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let normalised = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if !edge.allowed_origins.contains(&normalised) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from web pages are refused: Origin {} is not allowed; if a page \
                     of that origin must call this API, add it to ButlerEdge.allowedOrigins",
                    origin.escape_debug()
                ),
            ));
        }
    }
    if edge.allowed_hosts.is_empty() {
        return Ok(());
    }
    let host = parts
        .uri
        .host()
        .map(str::to_string)
        .or_else(|| {
            let value = parts.headers.get(http::header::HOST)?.to_str().ok()?;
            value
                .parse::<http::uri::Authority>()
                .ok()
                .map(|a| a.host().to_string())
        })
        .unwrap_or_default();
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if edge
        .allowed_hosts
        .iter()
        .any(|h| *h == bare || *h == host.to_ascii_lowercase())
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "this server is not reached as {:?} (ButlerEdge.allowedHosts lists the names it \
             answers to: {}); call it by one of those, or add the name",
            host,
            edge.allowed_hosts.join(", ")
        ),
    ))
}

/// A body declared as anything but JSON (`application/json`, any parameters, any case) is
/// refused. A body without `Content-Type` is taken as JSON: butler_subs.qvs's `StartTask`
/// and `StartTask_KeyValue` subs set no type of their own (only `AddKeyValue` does), and an
/// HTML form always declares one; a page's script sending an untyped body still carries an
/// `Origin`, which [`check_origin_and_host`] refuses.
pub fn require_json(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let Some(declared) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    if body.is_empty() {
        return Ok(());
    }
    let declared = String::from_utf8_lossy(declared.as_bytes());
    let essence = declared.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "the request body must be JSON: send it with Content-Type: application/json \
             (found {declared:?})"
        ),
    ))
}
