//! Successful answers: the one place response bodies and content types are built.
//!
//! Butler (Fastify) answers JSON with `application/json; charset=utf-8`; callers such as
//! Sense's REST connector look at that header, so every JSON answer goes through [`json`]
//! or [`json_bytes`], and every error through [`butler_error`] (which [`super::error`] calls).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// The body type of every response butler-edge sends: small and complete.
pub type ResponseBody = Full<Bytes>;

const JSON: &str = "application/json; charset=utf-8";

/// A JSON response with Fastify's content type.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => butler_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the response: {e}"),
        ),
    }
}

/// An error in Butler's (Fastify's) shape:
/// `{"statusCode":400,"error":"Bad Request","message":"…"}`.
pub fn butler_error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        status_code: u16,
        error: &'a str,
        message: &'a str,
    }
    let body = Body {
        status_code: status.as_u16(),
        error: status.canonical_reason().unwrap_or("Error"),
        message,
    };
    json_bytes(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// Already encoded JSON (a stored Idempotency-Key answer, an error body).
pub fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A text response (200) with the given content type (`GET /metrics`).
pub fn text(content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An empty response (204).
pub fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
