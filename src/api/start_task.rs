//! `PUT|POST /v4/reloadtask/{taskId}/start[?allTaskIdsMustExist=…][&wait=…]`.
//!
//! Parses the path, query, headers and body the way Butler (Fastify's schema) accepts them,
//! checks the caller may write the body's key-value items, and hands the request to
//! `tasks::StartService` (idempotency, disk checks, the start), whose report is the answer;
//! its failures become statuses in `http::error`.

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;

use crate::api::kv_input::start_item;
use crate::api::state::AppState;
use crate::authz::{Access, EndpointGroup};
use crate::config::{Limits, describe};
use crate::http::error::ApiError;
use crate::http::response::{ResponseBody, json_bytes};
use crate::kv::idempotency::Answer;
use crate::tasks::{
    BodyItem, Idempotency, KeyValueTarget, StartRequest, StartService, StartTaskPolicy, Started,
};

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
    /// The caller's address (without client certificates, what tells callers apart).
    pub peer: Option<std::net::SocketAddr>,
}

pub async fn start(
    state: &AppState,
    service: &StartService,
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
        caller: fairness_key(access, call.peer),
    };
    let max_items = service.starter.settings().max_items_per_request;
    if request.items.len() > max_items {
        return Err(ApiError::bad_request(format!(
            "the body has {} items; a start request may carry at most {max_items} \
             (ButlerEdge.qrs.maxItemsPerRequest), because each tag and custom property is a \
             lookup in the Sense repository; split the request or raise the limit",
            request.items.len()
        )));
    }
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
    let idempotency = idempotency_key(call.headers)?.map(|key| Idempotency {
        key,
        // The certificate identity, not the display name (see `Access::identity`).
        caller: access.identity(),
        fingerprint: fingerprint(&call),
    });
    let items = KeyValueTarget {
        // Stored only where the key-value API is served (see `KvMode`).
        store: state
            .store
            .as_ref()
            .filter(|_| state.config.features.kv_served()),
        disk_guard: state.disk_guard.as_deref(),
        within: access.namespace_quota(),
    };
    let started = service
        .start(&request, policy, idempotency.as_ref(), items)
        .await;
    match started {
        Ok(Started::Replayed(answer)) => Ok(replay(answer)),
        Ok(Started::Now { report, body }) => {
            state
                .metrics
                .tasks(report.distinct_started() as u64, report.failed.len() as u64);
            Ok(json_bytes(StatusCode::OK, body))
        }
        Err(failure) => {
            if failure.is_qrs_unreachable() {
                state.metrics.qrs_unreachable();
            }
            Err(failure.into())
        }
    }
}

fn replay(answer: Answer) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = json_bytes(status, answer.body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Whose share of the QRS call slots a request uses: the client certificate identity, or
/// without client certificates the caller's IP address.
fn fairness_key(access: &Access, peer: Option<std::net::SocketAddr>) -> String {
    match (access, peer) {
        (Access::Open, Some(peer)) => format!("address {}", peer.ip()),
        _ => access.identity(),
    }
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
            _ => BodyItem::KeyValue(start_item(i, payload, limits)?),
        });
    }
    Ok(out)
}
