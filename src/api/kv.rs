//! Butler's key-value endpoints: `/v4/keyvaluesnamespaces`, `/v4/keyvalues/…`,
//! `/v4/keylist/…`.
//!
//! Status codes, body shapes and messages follow Butler 16 (a missing namespace or
//! key is a 400, a create is 201 echoing the pair, deletes are 204), with two
//! additions: a full namespace is a 409, and size limits are a 400 naming the limit.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::Serialize;

use super::kv_input::parse_new_pair;
pub use super::kv_input::{NewPair, parse_ttl, scalar_text};
use crate::config::Limits;
use crate::http::error::{ApiError, client_namespaces_full, namespace_full, store_full};
use crate::http::response::{ResponseBody, empty, json};
use crate::kv::{
    NamespaceQuota, Rejected, Store, StoreError, WriteOp, WriteOutcome, deadline_for, now_ms,
};

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

pub async fn post(
    store: &Store,
    limits: &Limits,
    namespace: &str,
    body: &[u8],
    within: Option<Arc<NamespaceQuota>>,
) -> Result<Response<ResponseBody>, ApiError> {
    let pair = parse_new_pair(namespace, body, limits)?;
    let op = WriteOp::Put {
        namespace: namespace.to_string(),
        key: pair.key.clone(),
        value: pair.value.clone(),
        expires_at: deadline_for(pair.ttl, now_ms()),
        within,
    };
    let outcome = store
        .write_one(op)
        .await
        .map_err(|e| store_failed(store, "Failed adding key-value to namespace", e))?;
    match outcome {
        WriteOutcome::Rejected(Rejected::NamespaceFull { limit }) => {
            Err(namespace_full(namespace, &pair.key, limit))
        }
        WriteOutcome::Rejected(Rejected::StoreFull(quota)) => Err(store_full(quota)),
        WriteOutcome::Rejected(Rejected::ClientNamespacesFull(quota)) => {
            Err(client_namespaces_full(&quota))
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
    use super::super::kv_input::{parse_ttl, scalar_text};
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
