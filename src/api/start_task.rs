//! `PUT|POST /v4/reloadtask/{taskId}/start[?allTaskIdsMustExist=…][&wait=…]`.
//!
//! Parses the path, query and body the way Butler (Fastify's schema) accepts them,
//! handles `Idempotency-Key`, stores the body's key-value items through `kv`, and
//! hands the rest to `tasks::Starter`, whose report is the answer.

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;

use crate::api::kv::{check_size, namespace_full, parse_ttl, scalar_text};
use crate::api::state::{AppState, StartTaskState};
use crate::authz::{Access, EndpointGroup};
use crate::config::{Limits, describe};
use crate::http::error::ApiError;
use crate::http::response::{ResponseBody, json_bytes};
use crate::kv::idempotency::Answer;
use crate::kv::{Rejected, Store, WriteOp, WriteOutcome, deadline_for, now_ms};
use crate::tasks::{BodyItem, KeyValueItem, StartError, StartRequest, StartTaskPolicy};

/// The request as the router received it.
pub struct StartCall<'a> {
    /// Effective method (after `X-HTTP-Method-Override`), path and raw query: the
    /// request's identity for `Idempotency-Key`.
    pub method: &'a http::Method,
    pub path: &'a str,
    pub raw_query: &'a str,
    pub task_id: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

pub async fn start(
    state: &AppState,
    st: &StartTaskState,
    policy: &StartTaskPolicy,
    access: &Access,
    call: StartCall<'_>,
) -> Result<Response<ResponseBody>, ApiError> {
    if call.task_id.is_empty() {
        return Err(ApiError::bad_request(
            "Required parameter (task ID) missing. Should be a task ID or \"-\" if task info is passed in body",
        ));
    }
    let request = StartRequest {
        path_task_id: call.task_id.to_string(),
        items: parse_body(call.body, &state.config.edge.limits)?,
        all_task_ids_must_exist: flag(call.query, "allTaskIdsMustExist")?,
        wait: flag(call.query, "wait")?,
    };
    // Key-value items write to the store: the caller needs kvWrite and the namespace.
    for item in &request.items {
        if let BodyItem::KeyValue(kv) = item {
            access.check_group(
                EndpointGroup::KvWrite,
                &format!("{} {}", call.method, call.path),
            )?;
            access.check_namespace(&kv.namespace)?;
        }
    }

    let idempotency_key = idempotency_key(call.headers)?;
    // Each caller has its own keys: another client reusing a key neither replays this
    // caller's answer (which would tell it what this caller started) nor is refused. Keyed
    // by the certificate identity, not the display name.
    let identity = access.identity();
    let stored_key = idempotency_key
        .as_ref()
        .map(|key| format!("{}:{identity}:{key}", identity.len()));
    let _guard = match &stored_key {
        Some(stored_key) => Some(st.idempotency.lock(stored_key).await),
        None => None,
    };
    let fingerprint = fingerprint(&call);
    if let (Some(key), Some(stored_key)) = (&idempotency_key, &stored_key) {
        let stored = st
            .idempotency
            .get(stored_key)
            .map_err(|e| ApiError::internal(format!("cannot read Idempotency-Key answers: {e}")))?;
        if let Some(answer) = stored {
            if answer.fingerprint != fingerprint {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "Idempotency-Key {key:?} was already used for a different request \
                         (method, path, query or body differ); use a new key for a new request"
                    ),
                ));
            }
            tracing::info!(idempotency_key = %key, "start task: replaying the stored answer");
            return Ok(replay(answer));
        }
    }

    let store = if state.config.endpoints.key_value_store {
        state.store.as_ref()
    } else {
        None
    };
    // Key-value items are stored before any task starts: on a nearly full disk, refuse the
    // whole request (507) rather than start tasks whose parameters could not be kept.
    if store.is_some()
        && request
            .items
            .iter()
            .any(|item| matches!(item, crate::tasks::BodyItem::KeyValue(_)))
        && let Some(guard) = &state.disk_guard
    {
        guard.check()?;
    }
    // An Idempotency-Key promises that a retry starts nothing twice, which holds only if the
    // answer can be stored: with the disk (nearly) full, refuse before starting anything.
    if idempotency_key.is_some() {
        let refused = |e: ApiError| {
            ApiError::new(
                e.status,
                format!(
                    "{} No task was started: the answer to this Idempotency-Key could not be kept.",
                    e.message
                ),
            )
        };
        if let Some(guard) = &state.disk_guard {
            guard.check().map_err(|e| refused(e.into()))?;
        }
        if st.idempotency.writes_blocked_by_full_disk() {
            let dir = st.idempotency.data_dir().display().to_string();
            return Err(refused(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "The last write to the database failed for lack of disk space: free space on \
                     the file system of {dir}, then retry."
                ),
            )));
        }
    }
    let report = st
        .starter
        .run(&request, policy, |items| store_key_values(store, items))
        .await
        .map_err(|e| match e {
            StartError::Qrs(qrs) => {
                state.metrics.qrs_unreachable();
                ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "QRS at {} could not be asked which tasks to start, so no task was started: {qrs}",
                    st.starter.qrs_host()
                ),
            )
            }
            StartError::KeyValue(api_error) => api_error,
        })?;
    // A task named by id, tag and custom property is started once: count it once.
    let started: std::collections::BTreeSet<&str> = report
        .tasks_id
        .started
        .iter()
        .chain(&report.tasks_tag)
        .chain(&report.tasks_cp)
        .map(|t| t.task_id.as_str())
        .collect();
    state
        .metrics
        .tasks(started.len() as u64, report.failed.len() as u64);

    let body = serde_json::to_vec(&report)
        .map_err(|e| ApiError::internal(format!("cannot encode the response: {e}")))?;
    if let (Some(key), Some(stored_key)) = (&idempotency_key, &stored_key) {
        let answer = Answer {
            fingerprint,
            status: 200,
            body: body.clone(),
        };
        if let Err(e) = st.idempotency.put(stored_key, answer).await {
            // The tasks have been started: the caller must still get the answer.
            tracing::error!(idempotency_key = %key, error = %e, "cannot store the Idempotency-Key answer");
        }
    }
    Ok(json_bytes(StatusCode::OK, body))
}

fn replay(answer: Answer) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = json_bytes(status, answer.body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Commits the key-value items in one durable transaction before any task starts.
/// With the key-value store disabled they are ignored, as Butler does.
async fn store_key_values(store: Option<&Store>, items: Vec<KeyValueItem>) -> Result<(), ApiError> {
    let Some(store) = store else {
        tracing::warn!(
            items = items.len(),
            "start task: key-value items ignored because the key-value store is not enabled"
        );
        return Ok(());
    };
    let now = now_ms();
    let ops: Vec<WriteOp> = items
        .iter()
        .map(|kv| WriteOp::Put {
            namespace: kv.namespace.clone(),
            key: kv.key.clone(),
            value: kv.value.clone(),
            expires_at: kv.ttl_ms.map_or(0, |ttl| deadline_for(ttl as i64, now)),
        })
        .collect();
    let outcomes = store.write(ops).await.map_err(|e| {
        ApiError::store(
            "storing the key-value items failed, so no task was started",
            &e,
            store.path(),
        )
    })?;
    for (kv, outcome) in items.iter().zip(outcomes) {
        if let WriteOutcome::Rejected(Rejected::NamespaceFull { limit }) = outcome {
            let e = namespace_full(&kv.namespace, &kv.key, limit);
            return Err(ApiError::new(
                e.status,
                format!("{} No task was started.", e.message),
            ));
        }
    }
    Ok(())
}

/// A boolean query parameter as Fastify's schema coerces it: `true` or `false`.
fn flag(query: &[(String, String)], name: &str) -> Result<bool, ApiError> {
    match query.iter().rev().find(|(n, _)| n == name) {
        None => Ok(false),
        Some((_, v)) if v == "true" => Ok(true),
        Some((_, v)) if v == "false" => Ok(false),
        Some((_, v)) => Err(ApiError::bad_request(format!(
            "querystring/{name} must be boolean (true or false), found {v:?}"
        ))),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1-255 visible ASCII characters, found {:?}",
            String::from_utf8_lossy(value.as_bytes())
        )));
    }
    Ok(Some(text.to_string()))
}

/// SHA-256 over what makes two requests the same request.
fn fingerprint(call: &StartCall<'_>) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        call.method.as_str().as_bytes(),
        call.path.as_bytes(),
        call.raw_query.as_bytes(),
        call.body,
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    ctx.finish().as_ref().to_vec()
}

/// Parses the body: an empty body is an empty list (butler_subs.qvs's `StartTask` sends
/// none); otherwise a JSON array of `{type, payload}` items.
pub fn parse_body(body: &[u8], limits: &Limits) -> Result<Vec<BodyItem>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Array(items) = doc else {
        return Err(ApiError::bad_request(format!(
            "body must be array (of {{type, payload}} items), found {}",
            describe(&doc)
        )));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(fields) = item else {
            return Err(ApiError::bad_request(format!(
                "body/{i} must be object, found {}",
                describe(item)
            )));
        };
        // Butler's schema does not require `type`; an item without one does nothing.
        let Some(kind) = fields.get("type") else {
            continue;
        };
        let kind = match kind {
            Value::String(s)
                if matches!(
                    s.as_str(),
                    "keyvaluestore" | "starttaskid" | "starttasktag" | "starttaskcustomproperty"
                ) =>
            {
                s.as_str()
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "body/{i}/type must be equal to one of the allowed values \
                     (keyvaluestore, starttaskid, starttasktag, starttaskcustomproperty), found {}",
                    describe(other)
                )));
            }
        };
        let payload = match fields.get("payload") {
            Some(Value::Object(p)) => p,
            other => {
                return Err(ApiError::bad_request(format!(
                    "body/{i}/payload must be object, found {}",
                    other.map_or("nothing".to_string(), describe)
                )));
            }
        };
        let text = |name: &str| -> Result<String, ApiError> {
            match payload.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                other => Err(ApiError::bad_request(format!(
                    "body/{i}/payload/{name} must be string, found {}",
                    other.map_or("nothing".to_string(), describe)
                ))),
            }
        };
        out.push(match kind {
            "starttaskid" => BodyItem::TaskId(text("taskId")?),
            "starttasktag" => BodyItem::Tag(text("tag")?),
            "starttaskcustomproperty" => BodyItem::CustomProperty {
                name: text("customPropertyName")?,
                value: text("customPropertyValue")?,
            },
            _ => BodyItem::KeyValue(key_value_item(i, payload, limits)?),
        });
    }
    Ok(out)
}

fn key_value_item(
    i: usize,
    payload: &serde_json::Map<String, Value>,
    limits: &Limits,
) -> Result<KeyValueItem, ApiError> {
    let non_empty = |name: &str| -> Result<String, ApiError> {
        match payload.get(name).and_then(scalar_text) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(ApiError::bad_request(format!(
                "body/{i}/payload/{name} must be a non-empty string, found {}",
                payload.get(name).map_or("nothing".to_string(), describe)
            ))),
        }
    };
    let namespace = non_empty("namespace")?;
    let key = non_empty("key")?;
    let value = match payload.get("value") {
        None | Some(Value::Null) => String::new(),
        Some(v) => scalar_text(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "body/{i}/payload/value must be string, found {}",
                describe(v)
            ))
        })?,
    };
    check_size(
        "namespace",
        &namespace,
        limits.max_namespace_bytes,
        "maxNamespaceBytes",
    )?;
    check_size("key", &key, limits.max_key_bytes, "maxKeyBytes")?;
    check_size("value", &value, limits.max_value_bytes, "maxValueBytes")?;
    let ttl = parse_ttl(payload.get("ttl")).map_err(|e| {
        ApiError::bad_request(format!(
            "body/{i}/payload/{}",
            e.message.trim_start_matches("body/")
        ))
    })?;
    Ok(KeyValueItem {
        namespace,
        key,
        value,
        ttl_ms: (ttl > 0).then_some(ttl as u64),
    })
}
