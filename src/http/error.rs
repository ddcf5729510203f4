//! Errors as HTTP answers, in Butler's shape.
//!
//! Every error a caller sees is `{"statusCode":400,"error":"Bad Request","message":"…"}`,
//! the body Butler (Fastify) sends, so existing callers parse it unchanged. This is the
//! one place that maps failures to a status code and that body.

use http::{Response, StatusCode};

use super::response::{self, ResponseBody};
use crate::authz::Denied;
use crate::disk::{DiskError, DiskLow};
use crate::kv::StoreError;

/// A failed request: the status code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A failed key-value operation (`what` says which) as an answer: a full disk is 507
    /// naming the data directory, a database being reopened after an I/O error is 503 (a
    /// retry will do), anything else 500. `db_file` is the database file's path.
    pub fn store(what: &str, error: &StoreError, db_file: &std::path::Path) -> Self {
        match error {
            StoreError::NoSpace { detail } => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "{what}: no space left on the file system of the data directory {} \
                     ({detail}). Nothing in this request was stored; reads still work. Free \
                     disk space there, then retry",
                    db_file.parent().unwrap_or(db_file).display()
                ),
            ),
            StoreError::Unavailable { .. } | StoreError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what}: {error}. Retry in a moment"),
            ),
            other => Self::internal(format!("{what}: {other}")),
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        response::butler_error(self.status, &self.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

/// A permission refusal is a 403 naming the caller and what it may use.
impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, denied.to_string())
    }
}

/// Below the free-disk guard's threshold: 507, with the directory, the space and the remedy.
impl From<DiskLow> for ApiError {
    fn from(low: DiskLow) -> Self {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, low.to_string())
    }
}

impl From<DiskError> for ApiError {
    fn from(error: DiskError) -> Self {
        match error {
            DiskError::Low(low) => low.into(),
            DiskError::Unmeasurable(why) => ApiError::internal(why),
        }
    }
}
