//! Errors as HTTP answers, in Butler's shape.
//!
//! Every error a caller sees is `{"statusCode":400,"error":"Bad Request","message":"…"}`,
//! the body Butler (Fastify) sends, so existing callers parse it unchanged. This is the
//! one place that maps failures to a status code and that body.

use http::{Response, StatusCode};

use super::response::{self, ResponseBody};
use crate::authz::Denied;
use crate::disk::{DiskError, DiskLow};
use crate::kv::{NamespaceQuota, StoreError, StoreQuota};
use crate::tasks::StartFailure;

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
            StoreError::Unavailable { .. } | StoreError::Closed | StoreError::Restoring => {
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{what}: {error}. Retry in a moment"),
                )
            }
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

/// The refusal a caller sees when a namespace already holds its limit of keys (409).
pub fn namespace_full(namespace: &str, key: &str, limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "Namespace '{namespace}' already holds its limit of {limit} keys \
             (Butler.keyValueStore.maxKeysPerNamespace); key '{key}' was not stored. \
             Delete keys from the namespace or raise the limit"
        ),
    )
}

/// A new key or namespace refused by a store-wide quota.
pub fn store_full(quota: StoreQuota) -> ApiError {
    let (limit, what, key) = match quota {
        StoreQuota::Namespaces(n) => (n, "namespaces", "ButlerEdge.limits.maxNamespaces"),
        StoreQuota::Keys(n) => (n, "keys", "ButlerEdge.limits.maxKeys"),
    };
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "The key-value store already holds its limit of {limit} {what} ({key}); nothing \
             was stored. Delete keys or namespaces that are no longer needed, or raise the limit"
        ),
    )
}

/// A new namespace refused by the writing client's own namespace quota.
pub fn client_namespaces_full(quota: &NamespaceQuota) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "Client {} already has its limit of {} namespaces ({}); no new namespace was \
             created. Delete namespaces it no longer needs, or raise the limit",
            quota.client, quota.max, quota.config_key
        ),
    )
}

/// A start request that started nothing: each reason's status, and a message saying so.
impl From<StartFailure> for ApiError {
    fn from(failure: StartFailure) -> Self {
        const NOT_KEPT: &str =
            "No task was started: the answer to this Idempotency-Key could not be kept.";
        let with =
            |e: ApiError, suffix: &str| ApiError::new(e.status, format!("{} {suffix}", e.message));
        match failure {
            StartFailure::KeyReused { key } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "Idempotency-Key {key:?} was already used for a different request \
                     (method, path, query or body differ); use a new key for a new request"
                ),
            ),
            StartFailure::IdempotencyUnreadable(e) => {
                ApiError::internal(format!("cannot read Idempotency-Key answers: {e}"))
            }
            StartFailure::Disk {
                error,
                for_idempotency,
            } => {
                let e = ApiError::from(error);
                if for_idempotency {
                    with(e, NOT_KEPT)
                } else {
                    e
                }
            }
            StartFailure::AnswerCannotBeKept { data_dir } => with(
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!(
                        "The last write to the database failed for lack of disk space: free \
                         space on the file system of {}, then retry.",
                        data_dir.display()
                    ),
                ),
                NOT_KEPT,
            ),
            StartFailure::Qrs { host, error } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "QRS at {host} could not be asked which tasks to start, so no task was \
                     started: {error}"
                ),
            ),
            StartFailure::Deadline { host, error } => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "QRS at {host} is too slow: {error}. Check that QRS answers (GET /qrs/about) \
                     and is not overloaded, or raise ButlerEdge.qrs.requestDeadlineMs (keep it \
                     below 15 s: callers are promised an answer within 15 s)"
                ),
            ),
            StartFailure::KeyValueStore { error, db_file } => ApiError::store(
                "storing the key-value items failed, so no task was started",
                &error,
                &db_file,
            ),
            StartFailure::NamespaceFull {
                namespace,
                key,
                limit,
            } => with(
                namespace_full(&namespace, &key, limit),
                "No task was started.",
            ),
            StartFailure::StoreFull(quota) => with(store_full(quota), "No task was started."),
            StartFailure::ClientNamespacesFull(quota) => {
                with(client_namespaces_full(&quota), "No task was started.")
            }
        }
    }
}
