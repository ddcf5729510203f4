//! What Sense load scripts send through butler_subs.qvs (/work/shared/butler/butler_subs.qvs in
//! the project's reference; Butler's own subs), replayed byte for byte over a raw socket: the
//! method the sub's data connection uses (`Butler_GET` / `Butler_POST`), its
//! `X-HTTP-Method-Override` and `Content-Type` headers, and the body exactly as the sub's
//! string building leaves it (the REST connector turns the script's `""` into `"`). Each step
//! then checks what the script reads back from the answer, as its `SQL SELECT` does. Also
//! Butler's size envelope: anything that fits in the 1 MB body.

use crate::support;

use serde_json::{Value, json};
use support::fake_qrs::{FakeQrs, FakeTask, butler_qrs_yaml};
use support::pki::{KeyKind, SenseCerts};
use support::raw::{self, RawResponse};
use support::server::{KV_CONFIG, Server};

const SALES: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const FINANCE: &str = "bbbbbbbb-0000-4000-8000-000000000002";

struct Site {
    _certs: SenseCerts,
    qrs: FakeQrs,
    server: Server,
}

fn site() -> Site {
    let certs = SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1);
    let qrs = FakeQrs::start(
        &certs.server,
        &certs.ca,
        vec![
            FakeTask::new(SALES, "Reload Sales")
                .tag("Nightly")
                .cp("Group", "Finance & Ops"),
            FakeTask::new(FINANCE, "Reload Finance").tag("Nightly"),
        ],
    );
    let config = KV_CONFIG.replace(
        "    keyValueStore: true\n",
        "    keyValueStore: true\n    senseStartTask: true\n",
    ) + &butler_qrs_yaml(
        qrs.port(),
        &certs.client.cert,
        &certs.client.key,
        &certs.root,
    );
    let server = Server::start(&config);
    Site {
        _certs: certs,
        qrs,
        server,
    }
}

/// `LIB CONNECT TO 'Butler_GET'` + `SQL SELECT … WITH CONNECTION (Url "…")`.
fn butler_get(server: &Server, path: &str) -> RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n");
    raw::exchange(server.port, request.as_bytes()).expect("answer")
}

/// `LIB CONNECT TO 'Butler_POST'` with the sub's `HTTPHEADER`s and `BODY` (none when the sub
/// sends none).
fn butler_post(server: &Server, path: &str, headers: &[(&str, &str)], body: &str) -> RawResponse {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw::exchange(server.port, request.as_bytes()).expect("answer")
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const PUT: (&str, &str) = ("X-HTTP-Method-Override", "PUT");
const DELETE: (&str, &str) = ("X-HTTP-Method-Override", "DELETE");

/// AddKeyValue's body: `ttl` only when > 0, as the sub builds it.
/// (Also replayed through an API token by `api_tokens`.)
pub(crate) fn add_key_value_body(key: &str, value: &str, ttl: u64) -> String {
    if ttl > 0 {
        format!(r#"{{"key": "{key}", "value": "{value}", "ttl": "{ttl}"}}"#)
    } else {
        format!(r#"{{"key": "{key}", "value": "{value}"}}"#)
    }
}

/// StartTask's body from its tables, as its loops concatenate the items.
pub(crate) fn start_task_body(
    ids: &[&str],
    tags: &[&str],
    cps: &[(&str, &str)],
    kvs: &[[&str; 4]],
) -> String {
    let mut body = String::new();
    for id in ids {
        body += &format!(r#"{{"type":"starttaskid", "payload":{{"taskId":"{id}"}}}},"#);
    }
    for tag in tags {
        body += &format!(r#"{{"type":"starttasktag", "payload":{{"tag":"{tag}"}}}},"#);
    }
    for (name, value) in cps {
        body += &format!(
            r#"{{"type":"starttaskcustomproperty", "payload":{{"customPropertyName":"{name}", "customPropertyValue":"{value}"}}}},"#
        );
    }
    for [ns, key, value, ttl] in kvs {
        body += &format!(
            r#"{{"type":"keyvaluestore", "payload":{{"namespace":"{ns}", "key":"{key}", "value":"{value}", "ttl":"{ttl}"}}}},"#
        );
    }
    if body.ends_with(',') {
        body.pop();
    }
    format!("[{body}]")
}

/// StartTask_KeyValue's body.
fn start_task_key_value_body(ns: &str, key: &str, value: &str, ttl: &str) -> String {
    format!(
        r#"[{{"type":"keyvaluestore", "payload":{{"namespace":"{ns}", "key":"{key}", "value":"{value}", "ttl":"{ttl}"}}}}]"#
    )
}

/// GetKeyValue: `Peek('value', 0, …)`.
fn get_key_value(server: &Server, ns_path: &str, key_query: &str) -> Option<String> {
    let r = butler_get(server, &format!("/v4/keyvalues/{ns_path}?key={key_query}"));
    (r.status == 200).then(|| r.json()["value"].as_str().unwrap().to_string())
}

/// GetAllKeysInNamespace: the `key` column of `keys`, in order.
fn get_all_keys(server: &Server, ns_path: &str) -> Vec<String> {
    let r = butler_get(server, &format!("/v4/keylist/{ns_path}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_key_value_sub_works_unchanged() {
    let s = site();
    let server = &s.server;
    // AddKeyValue with and without a TTL; the script reads namespace, key, value, ttl.
    let r = butler_post(
        server,
        "/v4/keyvalues/Sales%20ETL",
        &[JSON],
        &add_key_value_body("Last run", "2026-11-28", 60_000),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json(),
        json!({"namespace": "Sales ETL", "key": "Last run", "value": "2026-11-28", "ttl": 60000})
    );
    let r = butler_post(
        server,
        "/v4/keyvalues/Sales%20ETL",
        &[JSON],
        &add_key_value_body("Rows", "1200", 0),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["value"], "1200");
    let r = butler_post(
        server,
        "/v4/keyvalues/Sales%20ETL",
        &[JSON],
        &add_key_value_body("Anchor", "x", 0),
    );
    assert_eq!(r.status, 201);

    // GetKeyValue.
    assert_eq!(
        get_key_value(server, "Sales%20ETL", "Last%20run").as_deref(),
        Some("2026-11-28")
    );
    // ExistsKeyValue: keyExists from root, the pair from keyValue.
    let r = butler_get(server, "/v4/keyvalues/Sales%20ETL/keyexists?key=Rows");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"keyExists": true, "keyValue": {"namespace": "Sales ETL", "key": "Rows", "value": "1200"}})
    );
    let r = butler_get(server, "/v4/keyvalues/Sales%20ETL/keyexists?key=Nothing");
    assert_eq!(r.json(), json!({"keyExists": false, "keyValue": {}}));
    // GetKeyValueNamespaces and GetAllKeysInNamespace, in Butler's order: "the first key" is
    // the first one written, not the first by name.
    butler_post(
        server,
        "/v4/keyvalues/Archive",
        &[JSON],
        &add_key_value_body("k", "v", 0),
    );
    let r = butler_get(server, "/v4/keyvaluesnamespaces");
    assert_eq!(r.json(), json!(["Sales ETL", "Archive"]));
    assert_eq!(
        get_all_keys(server, "Sales%20ETL"),
        ["Last run", "Rows", "Anchor"]
    );
    // An overwrite keeps its place.
    butler_post(
        server,
        "/v4/keyvalues/Sales%20ETL",
        &[JSON],
        &add_key_value_body("Last run", "2026-11-29", 0),
    );
    assert_eq!(
        get_all_keys(server, "Sales%20ETL"),
        ["Last run", "Rows", "Anchor"]
    );

    // DeleteKeyValue: POST, no body, the override only.
    let r = butler_post(server, "/v4/keyvalues/Sales%20ETL/Rows", &[DELETE], "");
    assert_eq!(r.status, 204);
    assert_eq!(get_key_value(server, "Sales%20ETL", "Rows"), None);
    assert_eq!(get_all_keys(server, "Sales%20ETL"), ["Last run", "Anchor"]);
    // DeleteKeyValueNamespace.
    let r = butler_post(server, "/v4/keyvalues/Sales%20ETL", &[DELETE], "");
    assert_eq!(r.status, 204);
    assert_eq!(
        butler_get(server, "/v4/keyvaluesnamespaces").json(),
        json!(["Archive"])
    );
    // GetEnabledButlerAPIEndpoints.
    let r = butler_get(server, "/v4/configfile/endpointsenabled");
    let enabled = r.json();
    for name in ["keyValueStore", "senseStartTask"] {
        assert!(
            enabled.as_array().unwrap().contains(&json!(name)),
            "{enabled}"
        );
    }
}

#[test]
fn every_start_task_form_works_unchanged_including_empty_ttls() {
    let s = site();
    let server = &s.server;
    let start = |task: &str, body: &str| {
        let r = butler_post(
            server,
            &format!("/v4/reloadtask/{task}/start"),
            &[PUT],
            body,
        );
        assert_eq!(
            r.status,
            200,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    };

    // StartTask(vTaskId) with no tables: the body is "[]".
    let r = start(SALES, &start_task_body(&[], &[], &[], &[]));
    assert_eq!(r["tasksId"]["started"][0]["taskId"], SALES);
    assert_eq!(s.qrs.start_calls(), [SALES]);

    // StartTask_KeyValue without its optional TTL: "ttl":"" is "no expiry", as in Butler.
    s.qrs.clear_calls();
    let r = start(
        FINANCE,
        &start_task_key_value_body("MyNamespace", "An important key", "The value", ""),
    );
    assert_eq!(r["tasksId"]["started"][0]["taskId"], FINANCE);
    assert_eq!(s.qrs.start_calls(), [FINANCE]);
    assert_eq!(
        get_key_value(server, "MyNamespace", "An%20important%20key").as_deref(),
        Some("The value")
    );
    // ... and with a TTL.
    start(
        FINANCE,
        &start_task_key_value_body("MyNamespace", "Short", "lived", "600000"),
    );
    assert_eq!(
        get_key_value(server, "MyNamespace", "Short").as_deref(),
        Some("lived")
    );

    // StartTask("-", ids, tags, custom properties, key values) with an empty TTL cell and
    // one of "0".
    s.qrs.clear_calls();
    let body = start_task_body(
        &[SALES],
        &["Nightly"],
        &[("Group", "Finance & Ops")],
        &[
            ["Run params", "From", "2026-11-01", ""],
            ["Run params", "To", "2026-11-30", "0"],
        ],
    );
    let r = start("-", &body);
    assert_eq!(r["tasksId"]["started"][0]["taskId"], SALES);
    let tagged: Vec<&str> = r["tasksTag"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(tagged, [SALES, FINANCE]);
    assert_eq!(r["tasksCP"][0]["taskId"], SALES);
    let mut started = s.qrs.start_calls();
    started.sort();
    assert_eq!(started, [SALES, FINANCE], "each task once");
    assert_eq!(get_all_keys(server, "Run%20params"), ["From", "To"]);
    assert_eq!(
        get_key_value(server, "Run%20params", "To").as_deref(),
        Some("2026-11-30")
    );
    let r = butler_get(server, "/v4/keyvalues/Run%20params/keyexists?key=From");
    assert_eq!(r.json()["keyExists"], true);
}

/// Butler accepts any value and key that fit in its 1 MB body; so do the defaults.
#[test]
fn a_million_character_value_and_a_4000_character_key_are_stored_and_read_back() {
    let server = Server::start(KV_CONFIG);
    let value = "x".repeat(1_000_000);
    let r = butler_post(
        &server,
        "/v4/keyvalues/big",
        &[JSON],
        &json!({"key": "big", "value": value}).to_string(),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        get_key_value(&server, "big", "big").map(|v| v.len()),
        Some(1_000_000)
    );

    let key = "k".repeat(4_000);
    let value = "v".repeat(200_000);
    let r = butler_post(
        &server,
        "/v4/keyvalues/big",
        &[JSON],
        &json!({"key": key, "value": value}).to_string(),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        get_key_value(&server, "big", &key).as_deref(),
        Some(value.as_str())
    );
    let r = butler_get(&server, &format!("/v4/keyvalues/big/keyexists?key={key}"));
    assert_eq!(r.json()["keyExists"], true);
    assert_eq!(
        get_all_keys(&server, "big"),
        ["big".to_string(), key.clone()]
    );
    let r = butler_post(&server, &format!("/v4/keyvalues/big/{key}"), &[DELETE], "");
    assert_eq!(r.status, 204);
    assert_eq!(get_all_keys(&server, "big"), ["big"]);

    // What does not fit in maxBodyBytes is still refused, and says which limit.
    let r = butler_post(
        &server,
        "/v4/keyvalues/big",
        &[JSON],
        &json!({"key": "huge", "value": "x".repeat(1 << 20)}).to_string(),
    );
    assert_eq!(r.status, 413);
    let message: Value = r.json();
    assert!(
        message["message"]
            .as_str()
            .unwrap()
            .contains("maxBodyBytes"),
        "{message}"
    );
    assert_eq!(get_key_value(&server, "big", "huge"), None);
}
