//! The key-value pair rules, shared by `POST /v4/keyvalues/{namespace}`, start-task's
//! `keyvaluestore` items and a store restore ([`RestoreRules`]): what text a JSON scalar stores as, what a TTL may be, the size
//! limits. Each rule is written once; messages name
//! the field where the caller wrote it (`body/value`, `body/2/payload/value`).
//!
//! The two entry points differ only where Butler does: a create names its namespace in the
//! path and needs a key (a missing one is Butler's "Required parameter is missing"); an item
//! names both in its payload, and butler_subs.qvs sends an empty TTL there to mean none.

use serde_json::{Map, Value};

use crate::config::{Limits, describe};
use crate::http::error::ApiError;
use crate::kv::backup::RestoreRules;
use crate::tasks::KeyValueItem;

/// The text of field `name` (under `prefix`, e.g. `body/`): `None` when absent or null,
/// the scalar's text form otherwise; objects and arrays are refused naming the field.
fn text_field(
    fields: &Map<String, Value>,
    prefix: &str,
    name: &str,
) -> Result<Option<String>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => scalar_text(v).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{prefix}{name} must be string, found {}",
                describe(v)
            ))
        }),
    }
}

/// Namespace, key and value within `ButlerEdge.limits`.
fn check_sizes(namespace: &str, key: &str, value: &str, limits: &Limits) -> Result<(), ApiError> {
    check_size(
        "namespace",
        namespace,
        limits.max_namespace_bytes,
        "maxNamespaceBytes",
    )?;
    check_size("key", key, limits.max_key_bytes, "maxKeyBytes")?;
    check_size("value", value, limits.max_value_bytes, "maxValueBytes")
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
    ttl_at("body/ttl", value)
}

/// [`parse_ttl`] for the field at `field` (`body/ttl`, `body/2/payload/ttl`).
fn ttl_at(field: &str, value: Option<&Value>) -> Result<i64, ApiError> {
    let invalid = |v: &Value| {
        ApiError::bad_request(format!(
            "{field} must be number (milliseconds), found {}",
            describe(v)
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
    // `POST /v4/keyvalues/` would create a namespace without a name, which no listing can
    // show usefully and no script means to create.
    if namespace.is_empty() {
        return Err(ApiError::bad_request(
            "Required parameter is missing: the namespace (POST /v4/keyvalues/{namespace})",
        ));
    }
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
            describe(&doc)
        )));
    };
    let key = text_field(&fields, "body/", "key")?.unwrap_or_default();
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "Required parameter is missing: body/key must be a non-empty string",
        ));
    }
    check_size("key", &key, limits.max_key_bytes, "maxKeyBytes")?;
    let value_sent = fields.get("value").is_some();
    let value = text_field(&fields, "body/", "value")?.unwrap_or_default();
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

/// A start-task `keyvaluestore` item's payload (item `i` of the body) as the pair to store.
pub fn start_item(
    i: usize,
    payload: &Map<String, Value>,
    limits: &Limits,
) -> Result<KeyValueItem, ApiError> {
    let prefix = format!("body/{i}/payload/");
    let non_empty = |name: &str| -> Result<String, ApiError> {
        match payload.get(name).and_then(scalar_text) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(ApiError::bad_request(format!(
                "{prefix}{name} must be a non-empty string, found {}",
                payload.get(name).map_or("nothing".to_string(), describe)
            ))),
        }
    };
    let namespace = non_empty("namespace")?;
    let key = non_empty("key")?;
    let value = text_field(payload, &prefix, "value")?.unwrap_or_default();
    check_sizes(&namespace, &key, &value, limits)?;
    // butler_subs.qvs sends `"ttl":"$(vTTL)"` whatever the script passed, so a TTL left out
    // (the argument is optional) or an empty TTL cell arrives as `""`: Butler stores the pair
    // with no expiry, and so does this. (`POST /v4/keyvalues` keeps refusing `""`, as Butler
    // does; `AddKeyValue` sends a TTL there only when it is > 0.)
    let ttl_field = payload
        .get("ttl")
        .filter(|v| !matches!(v, Value::String(s) if s.trim().is_empty()));
    let ttl = ttl_at(&format!("{prefix}ttl"), ttl_field)?;
    Ok(KeyValueItem {
        namespace,
        key,
        value,
        ttl_ms: (ttl > 0).then_some(ttl as u64),
    })
}

/// The same size rules for every namespace and pair a store restore reads (the kv layer
/// checks emptiness and quotas; the sizes are this layer's settings).
pub struct RestoreLimits<'a>(pub &'a Limits);

impl RestoreRules for RestoreLimits<'_> {
    fn check_namespace(&self, namespace: &str) -> Result<(), String> {
        check_size(
            "namespace",
            namespace,
            self.0.max_namespace_bytes,
            "maxNamespaceBytes",
        )
        .map_err(|e| e.message)
    }

    fn check_pair(&self, namespace: &str, key: &str, value: &str) -> Result<(), String> {
        check_sizes(namespace, key, value, self.0).map_err(|e| e.message)
    }
}
