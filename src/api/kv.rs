//! Butler's key-value endpoints: `/v4/keyvaluesnamespaces`, `/v4/keyvalues/…`,
//! `/v4/keylist/…`.
//!
//! Status codes, body shapes and messages follow Butler 16 (a missing namespace or
//! key is a 400, a create is 201 echoing the pair, deletes are 204), with two
//! additions: a full namespace is a 409, and size limits are a 400 naming the limit.

use http::{Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::config::Limits;
use crate::http::error::ApiError;
use crate::http::response::{ResponseBody, empty, json};
use crate::kv::{Rejected, Store, StoreError, WriteOp, WriteOutcome, deadline_for, now_ms};

#[derive(Serialize)]
struct Pair<'a> {
    namespace: &'a str,
    key: &'a str,
    value: &'a str,
}

fn namespace_not_found(namespace: &str) -> ApiError {
    ApiError::bad_request(format!("Namespace not found: {namespace}"))
}

fn key_not_found(namespace: &str, key: &str) -> ApiError {
    ApiError::bad_request(format!("Key '{key}' not found in namespace: {namespace}"))
}

/// The one mapping of store failures to answers lives in [`ApiError::store`].
fn store_failed(store: &Store, what: &str, e: StoreError) -> ApiError {
    ApiError::store(what, &e, store.path())
}

/// The `key` query parameter, which Butler's schema requires.
fn key_param(query: &[(String, String)]) -> Result<&str, ApiError> {
    query
        .iter()
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.as_str())
        .ok_or_else(|| ApiError::bad_request("querystring must have required property 'key'"))
}

/// The namespaces `visible` lets the caller see (all of them without client permissions).
pub fn namespaces(
    store: &Store,
    visible: impl Fn(&str) -> bool,
) -> Result<Response<ResponseBody>, ApiError> {
    let mut names = store
        .namespaces()
        .map_err(|e| store_failed(store, "Failed getting all namespaces", e))?;
    names.retain(|name| visible(name));
    Ok(json(StatusCode::OK, &names))
}

/// The `key` query parameter and its live value (`None` if absent or expired);
/// a namespace that does not exist is Butler's 400. Shared by `get` and `exists`.
fn lookup<'q>(
    store: &Store,
    namespace: &str,
    query: &'q [(String, String)],
) -> Result<(&'q str, Option<String>), ApiError> {
    let key = key_param(query)?;
    let failed = |e| store_failed(store, "Failed getting key-value data", e);
    let value = store.get(namespace, key).map_err(failed)?;
    if value.is_none() && !store.namespace_exists(namespace).map_err(failed)? {
        return Err(namespace_not_found(namespace));
    }
    Ok((key, value))
}

pub fn get(
    store: &Store,
    namespace: &str,
    query: &[(String, String)],
) -> Result<Response<ResponseBody>, ApiError> {
    let (key, value) = lookup(store, namespace, query)?;
    let value = value.ok_or_else(|| key_not_found(namespace, key))?;
    Ok(json(
        StatusCode::OK,
        &Pair {
            namespace,
            key,
            value: &value,
        },
    ))
}

pub fn exists(
    store: &Store,
    namespace: &str,
    query: &[(String, String)],
) -> Result<Response<ResponseBody>, ApiError> {
    let (key, value) = lookup(store, namespace, query)?;
    let body = match &value {
        Some(value) => serde_json::json!({
            "keyExists": true,
            "keyValue": Pair { namespace, key, value },
        }),
        None => serde_json::json!({ "keyExists": false, "keyValue": {} }),
    };
    Ok(json(StatusCode::OK, &body))
}

pub fn key_list(store: &Store, namespace: &str) -> Result<Response<ResponseBody>, ApiError> {
    #[derive(Serialize)]
    struct KeyItem<'a> {
        key: &'a str,
    }
    #[derive(Serialize)]
    struct KeyList<'a> {
        namespace: &'a str,
        keys: Vec<KeyItem<'a>>,
    }
    let keys = store
        .keys(namespace)
        .map_err(|e| store_failed(store, "Failed getting list of keys in namespace", e))?
        .ok_or_else(|| namespace_not_found(namespace))?;
    let keys = keys.iter().map(|key| KeyItem { key }).collect();
    Ok(json(StatusCode::OK, &KeyList { namespace, keys }))
}

/// A validated `POST /v4/keyvalues/{namespace}` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPair {
    pub key: String,
    /// The stored value: text as sent, numbers and booleans in their text form,
    /// missing or null as `""` (as Butler stores them).
    pub value: String,
    /// Whether the body had a `value` at all (Butler's echo omits it otherwise).
    pub value_sent: bool,
    /// Milliseconds; 0 or less means no expiry.
    pub ttl: i64,
}

/// The text form Butler (JavaScript) gives a JSON scalar: `1.0` is `"1"`.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// Parses a TTL as Butler accepts it: a number or a numeric string (butler_subs.qvs
/// sends `"3000"`), truncated to whole milliseconds; absent or null is 0.
pub fn parse_ttl(value: Option<&Value>) -> Result<i64, ApiError> {
    let invalid = |v: &Value| {
        ApiError::bad_request(format!(
            "body/ttl must be number (milliseconds), found {}",
            crate::config::describe(v)
        ))
    };
    let millis = match value {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(n)) => n.as_f64(),
        Some(v @ Value::String(s)) => {
            let parsed = s.trim().parse::<f64>().ok();
            if s.trim().is_empty() || parsed.is_none_or(|f| !f.is_finite()) {
                return Err(invalid(v));
            }
            parsed
        }
        Some(other) => return Err(invalid(other)),
    };
    // `as` saturates at i64's bounds, which are far beyond any useful TTL.
    Ok(millis.map(|f| f.trunc() as i64).unwrap_or(0))
}

/// Validates a create/update body and the sizes of its parts.
pub fn parse_new_pair(namespace: &str, body: &[u8], limits: &Limits) -> Result<NewPair, ApiError> {
    check_size(
        "namespace",
        namespace,
        limits.max_namespace_bytes,
        "maxNamespaceBytes",
    )?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "Required parameter is missing: the request body must be a JSON object with a \"key\"",
        ));
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = doc else {
        return Err(ApiError::bad_request(format!(
            "body must be object, found {}",
            crate::config::describe(&doc)
        )));
    };
    let key = match fields.get("key") {
        None | Some(Value::Null) => String::new(),
        Some(v) => scalar_text(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "body/key must be string, found {}",
                crate::config::describe(v)
            ))
        })?,
    };
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "Required parameter is missing: body/key must be a non-empty string",
        ));
    }
    check_size("key", &key, limits.max_key_bytes, "maxKeyBytes")?;
    let value_sent = fields.get("value").is_some();
    let value = match fields.get("value") {
        None | Some(Value::Null) => String::new(),
        Some(v) => scalar_text(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "body/value must be string, found {}",
                crate::config::describe(v)
            ))
        })?,
    };
    check_size("value", &value, limits.max_value_bytes, "maxValueBytes")?;
    let ttl = parse_ttl(fields.get("ttl"))?;
    Ok(NewPair {
        key,
        value,
        value_sent,
        ttl,
    })
}

pub fn check_size(what: &str, text: &str, limit: usize, setting: &str) -> Result<(), ApiError> {
    if text.len() > limit {
        return Err(ApiError::bad_request(format!(
            "{what} is {} bytes; the limit is {limit} bytes (ButlerEdge.limits.{setting})",
            text.len()
        )));
    }
    Ok(())
}

/// The refusal a caller sees when a namespace already holds its limit of keys.
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

pub async fn post(
    store: &Store,
    limits: &Limits,
    namespace: &str,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let pair = parse_new_pair(namespace, body, limits)?;
    let op = WriteOp::Put {
        namespace: namespace.to_string(),
        key: pair.key.clone(),
        value: pair.value.clone(),
        expires_at: deadline_for(pair.ttl, now_ms()),
    };
    let outcome = store
        .write_one(op)
        .await
        .map_err(|e| store_failed(store, "Failed adding key-value to namespace", e))?;
    match outcome {
        WriteOutcome::Rejected(Rejected::NamespaceFull { limit }) => {
            Err(namespace_full(namespace, &pair.key, limit))
        }
        WriteOutcome::Rejected(other) => Err(ApiError::internal(format!(
            "Failed adding key-value to namespace: unexpected refusal {other:?}"
        ))),
        _ => {
            #[derive(Serialize)]
            struct Echo<'a> {
                namespace: &'a str,
                key: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                value: Option<&'a str>,
                ttl: i64,
            }
            let echo = Echo {
                namespace,
                key: &pair.key,
                value: pair.value_sent.then_some(pair.value.as_str()),
                ttl: pair.ttl,
            };
            Ok(json(StatusCode::CREATED, &echo))
        }
    }
}

pub async fn delete_namespace(
    store: &Store,
    namespace: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let outcome = store
        .write_one(WriteOp::DeleteNamespace {
            namespace: namespace.to_string(),
        })
        .await
        .map_err(|e| store_failed(store, "Failed clearing namespace", e))?;
    match outcome {
        WriteOutcome::Rejected(_) => Err(namespace_not_found(namespace)),
        _ => Ok(empty(StatusCode::NO_CONTENT)),
    }
}

pub async fn delete_key(
    store: &Store,
    namespace: &str,
    key: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "Required parameter is missing: the key to delete",
        ));
    }
    let outcome = store
        .write_one(WriteOp::DeleteKey {
            namespace: namespace.to_string(),
            key: key.to_string(),
        })
        .await
        .map_err(|e| store_failed(store, "Failed deleting key-value data", e))?;
    match outcome {
        WriteOutcome::Rejected(Rejected::NamespaceNotFound) => Err(namespace_not_found(namespace)),
        WriteOutcome::Rejected(_) => Err(key_not_found(namespace, key)),
        _ => Ok(empty(StatusCode::NO_CONTENT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl(None).unwrap(), 0);
        assert_eq!(parse_ttl(Some(&json!(3000))).unwrap(), 3000);
        assert_eq!(parse_ttl(Some(&json!("3000"))).unwrap(), 3000);
        assert_eq!(parse_ttl(Some(&json!(-5))).unwrap(), -5);
        assert_eq!(parse_ttl(Some(&json!(12.9))).unwrap(), 12);
        assert!(parse_ttl(Some(&json!(""))).is_err());
        assert!(parse_ttl(Some(&json!("soon"))).is_err());
        assert!(parse_ttl(Some(&json!({"a": 1}))).is_err());
    }

    #[test]
    fn scalars_take_their_javascript_text_form() {
        assert_eq!(scalar_text(&json!(1.0)).unwrap(), "1");
        assert_eq!(scalar_text(&json!(12345.789)).unwrap(), "12345.789");
        assert_eq!(scalar_text(&json!(true)).unwrap(), "true");
        assert_eq!(scalar_text(&json!([1])), None);
    }
}
