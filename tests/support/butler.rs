//! One client for Butler's API as callers use it, and the one check of Butler's error shape.
//!
//! Every test that speaks the API goes through [`Butler`], so a request is written once
//! (`kv_post`, `kv_get`, `start`, …) and each call answers `(status, JSON body)`.

use serde_json::{Value, json};

use super::server::{client, json_of};

/// Asserts a Butler (Fastify) error: the status, `statusCode` equal to it, an `error` text,
/// and a `message` containing `part`.
pub fn assert_butler_error(status: u16, body: &Value, expected: u16, part: &str) {
    assert_eq!(status, expected, "body: {body}");
    assert_eq!(body["statusCode"], json!(expected), "body: {body}");
    assert!(body["error"].is_string(), "body: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(part),
        "message {message:?} should contain {part:?}"
    );
}

/// Butler's API at one base URL (`http://127.0.0.1:PORT`), over the shared blocking client.
pub struct Butler {
    base: String,
    http: reqwest::blocking::Client,
}

impl Butler {
    /// Plain HTTP on a loopback port.
    pub fn on_port(port: u16) -> Butler {
        Butler::with_client(format!("http://127.0.0.1:{port}"), client())
    }

    /// Any base URL and client (HTTPS with a test CA, a client certificate).
    pub fn with_client(base: String, http: reqwest::blocking::Client) -> Butler {
        Butler { base, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        json_of(self.http.get(self.url(path)).send().unwrap())
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        json_of(self.http.delete(self.url(path)).send().unwrap())
    }

    /// POST with a JSON body (sent as written, so tests can send malformed JSON too).
    pub fn post_json(&self, path: &str, body: &str) -> (u16, Value) {
        json_of(
            self.http
                .post(self.url(path))
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    }

    /// `POST /v4/keyvalues/{namespace}` with `pair` (`{"key":…,"value":…,"ttl":…}`).
    pub fn kv_post(&self, namespace: &str, pair: &Value) -> (u16, Value) {
        self.post_json(&format!("/v4/keyvalues/{namespace}"), &pair.to_string())
    }

    /// `GET /v4/keyvalues/{namespace}?key=…` (`key` already URL-encoded if it needs to be).
    pub fn kv_get(&self, namespace: &str, key: &str) -> (u16, Value) {
        self.get(&format!("/v4/keyvalues/{namespace}?key={key}"))
    }

    /// The stored value, or `None` when the read is not a 200.
    pub fn kv_value(&self, namespace: &str, key: &str) -> Option<String> {
        let (status, body) = self.kv_get(namespace, key);
        (status == 200).then(|| body["value"].as_str().unwrap().to_string())
    }

    /// `GET /v4/keylist/{namespace}`.
    pub fn kv_keys(&self, namespace: &str) -> (u16, Value) {
        self.get(&format!("/v4/keylist/{namespace}"))
    }

    /// `DELETE /v4/keyvalues/{namespace}/{key}`.
    pub fn kv_delete_key(&self, namespace: &str, key: &str) -> (u16, Value) {
        self.delete(&format!("/v4/keyvalues/{namespace}/{key}"))
    }

    /// `DELETE /v4/keyvalues/{namespace}`.
    pub fn kv_delete_namespace(&self, namespace: &str) -> (u16, Value) {
        self.delete(&format!("/v4/keyvalues/{namespace}"))
    }

    /// `GET /v4/admin/store`: the response as it arrives, for a test that reads the
    /// streamed export itself.
    pub fn store_export(&self) -> reqwest::blocking::Response {
        self.http.get(self.url("/v4/admin/store")).send().unwrap()
    }

    /// `PUT /v4/admin/store{query}` with an export (`query` is `""` or `"?replace=true"`).
    pub fn store_restore(&self, query: &str, export: impl Into<Vec<u8>>) -> (u16, Value) {
        json_of(
            self.http
                .put(self.url(&format!("/v4/admin/store{query}")))
                .header("Content-Type", "application/x-ndjson")
                .body(export.into())
                .send()
                .unwrap(),
        )
    }

    /// `PUT /v4/reloadtask/{task}/start{query}` with `body` (empty for none).
    pub fn start(&self, task: &str, query: &str, body: &str) -> (u16, Value) {
        json_of(
            self.http
                .put(self.url(&format!("/v4/reloadtask/{task}/start{query}")))
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    }
}
