//! Keeping web browsers from being used against the API (cross-site request forgery and
//! DNS rebinding).
//!
//! Butler's API has no authentication of its own, so a web page on the local network could
//! make a visitor's browser post to it: an HTML form can send `text/plain`,
//! form-encoded or multipart bodies to any address without asking, and `text/plain` can
//! carry valid JSON. Three checks close that:
//! - a body must be sent as `application/json` (what Butler's Fastify parses, and what
//!   Sense's REST connector sends for butler_subs.qvs); a browser sends that cross-origin
//!   only after a CORS preflight, which this server never grants;
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

/// A non-empty body must be declared as JSON (`application/json`, any parameters, any
/// case). An empty body needs no type: butler_subs.qvs's `StartTask` posts none.
pub fn require_json(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let declared = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = declared
        .as_deref()
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "the request body must be JSON sent with Content-Type: application/json (found {})",
            match &declared {
                Some(t) => format!("{:?}", t),
                None => "no Content-Type".to_string(),
            }
        ),
    ))
}
