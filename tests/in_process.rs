//! The service run in-process through its real entry point (`app::prepare` +
//! `Service::run`), no binary spawned: routing and enablement, limits, the method
//! override, and a body timeout under tokio's paused clock (minutes of timeout in
//! milliseconds of test); key and store quotas, size limits and TTLs through the blocking
//! Butler client against [`InProcess::on_thread`], over the same loopback sockets.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::butler::assert_butler_error;
use support::in_process::{InProcess, WALL_CLOCK_BOUND};
use support::server::{KV_CONFIG, client, json_of};

#[tokio::test]
async fn disabled_and_unknown_endpoints_are_404_and_a_bad_override_is_400() {
    let service = InProcess::start(KV_CONFIG).await;
    let (status, body) = service.get("/health").await;
    assert_butler_error(status, &body, 404, "Route GET:/health not found");
    let (status, body) = service.get("/v4/nothing").await;
    assert_butler_error(status, &body, 404, "Route GET:/v4/nothing not found");
    let (status, body) = service
        .post(
            "/v4/keyvalues/ns",
            "X-HTTP-Method-Override: PATCH\r\n",
            r#"{"key":"a"}"#,
        )
        .await;
    assert_butler_error(
        status,
        &body,
        400,
        "X-HTTP-Method-Override: expected PUT or DELETE, found \"PATCH\"",
    );
    let (status, body) = service.get("/v4/butlerping").await;
    assert_eq!(status, 200, "{body}");
    service.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn limits_refuse_oversized_bodies_and_keys_and_store_nothing() {
    let config =
        format!("{KV_CONFIG}ButlerEdge:\n  limits:\n    maxBodyBytes: 200\n    maxKeyBytes: 4\n");
    let service = InProcess::start(&config).await;
    let big = format!(r#"{{"key":"a","value":"{}"}}"#, "x".repeat(300));
    let (status, body) = service.post("/v4/keyvalues/ns", "", &big).await;
    assert_butler_error(status, &body, 413, "ButlerEdge.limits.maxBodyBytes");
    let (status, body) = service
        .post("/v4/keyvalues/ns", "", r#"{"key":"longer","value":"v"}"#)
        .await;
    assert_butler_error(status, &body, 400, "ButlerEdge.limits.maxKeyBytes");
    let (status, body) = service.get("/v4/keylist/ns").await;
    assert_butler_error(status, &body, 400, "Namespace not found: ns");
    let (status, body) = service
        .post("/v4/keyvalues/ns", "", r#"{"key":"ok","value":"v"}"#)
        .await;
    assert_eq!(status, 201, "{body}");
    service.stop().await.expect("clean shutdown");
}

/// `bodyReadTimeoutMs: 600000` (ten minutes) answered in well under ten seconds of wall
/// time: the paused clock jumps to the deadline once nothing else can happen.
#[tokio::test(start_paused = true)]
async fn a_body_that_never_arrives_is_cut_off_at_the_body_read_timeout() {
    let config = format!("{KV_CONFIG}ButlerEdge:\n  limits:\n    bodyReadTimeoutMs: 600000\n");
    let service = InProcess::start(&config).await;
    let started = Instant::now();
    let clock = tokio::time::Instant::now();
    let (status, body) = service
        .exchange(
            "POST /v4/keyvalues/ns HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"key\"",
        )
        .await;
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_butler_error(
        status,
        &body,
        408,
        "request body not received within 600000 ms (ButlerEdge.limits.bodyReadTimeoutMs)",
    );
    assert!(
        clock.elapsed() >= std::time::Duration::from_secs(600),
        "answered before the timeout: {:?} of paused time",
        clock.elapsed()
    );
    assert!(
        started.elapsed() < WALL_CLOCK_BOUND,
        "{:?}",
        started.elapsed()
    );
}

// Moved from kv_api: limits, enablement, routing and TTLs need no process of their own.
// They use the blocking Butler client against `InProcess::on_thread`.

#[test]
fn ttl_as_number_or_string_and_zero_or_negative_mean_forever() {
    let server = InProcess::on_thread(KV_CONFIG);
    let (status, echo) = server.butler().post_json(
        "/v4/keyvalues/ttl",
        r#"{"key":"short","value":"v","ttl":"400"}"#,
    );
    assert_eq!((status, echo["ttl"].clone()), (201, json!(400)));
    server.butler().post_json(
        "/v4/keyvalues/ttl",
        r#"{"key":"long","value":"v","ttl":60000}"#,
    );
    server
        .butler()
        .post_json("/v4/keyvalues/ttl", r#"{"key":"zero","value":"v","ttl":0}"#);
    let (_, echo) = server
        .butler()
        .post_json("/v4/keyvalues/ttl", r#"{"key":"neg","value":"v","ttl":-5}"#);
    assert_eq!(echo["ttl"], json!(-5));
    assert_eq!(server.butler().get("/v4/keyvalues/ttl?key=short").0, 200);
    std::thread::sleep(Duration::from_millis(700));
    let (status, body) = server.butler().get("/v4/keyvalues/ttl?key=short");
    assert_butler_error(
        status,
        &body,
        400,
        "Key 'short' not found in namespace: ttl",
    );
    assert_eq!(
        server
            .butler()
            .get("/v4/keyvalues/ttl/keyexists?key=short")
            .1,
        json!({"keyExists":false,"keyValue":{}})
    );
    for key in ["long", "zero", "neg"] {
        assert_eq!(
            server
                .butler()
                .get(&format!("/v4/keyvalues/ttl?key={key}"))
                .0,
            200,
            "{key}"
        );
    }
    assert_eq!(
        server.butler().get("/v4/keylist/ttl").1,
        json!({"namespace":"ttl","keys":[{"key":"long"},{"key":"zero"},{"key":"neg"}]})
    );
    // Rewriting a key restarts its TTL from the last update.
    server.butler().post_json(
        "/v4/keyvalues/ttl",
        r#"{"key":"renew","value":"1","ttl":500}"#,
    );
    std::thread::sleep(Duration::from_millis(300));
    server.butler().post_json(
        "/v4/keyvalues/ttl",
        r#"{"key":"renew","value":"2","ttl":500}"#,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.butler().get("/v4/keyvalues/ttl?key=renew").1["value"],
        json!("2")
    );
}

#[test]
fn namespace_key_limit_is_enforced_but_updates_still_succeed() {
    let config = KV_CONFIG.replace("{max_keys}", "3");
    let server = InProcess::on_thread(&config);
    for key in ["a", "b", "c"] {
        let body = format!(r#"{{"key":"{key}","value":"1"}}"#);
        assert_eq!(
            server.butler().post_json("/v4/keyvalues/small", &body).0,
            201
        );
    }
    let (status, body) = server
        .butler()
        .post_json("/v4/keyvalues/small", r#"{"key":"d","value":"1"}"#);
    assert_butler_error(status, &body, 409, "'small'");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("limit of 3 keys"),
        "{body}"
    );
    let (status, _) = server
        .butler()
        .post_json("/v4/keyvalues/small", r#"{"key":"a","value":"2"}"#);
    assert_eq!(status, 201, "updating an existing key is not a new key");
    assert_eq!(
        server.butler().get("/v4/keyvalues/small?key=a").1["value"],
        json!("2")
    );
    assert_eq!(server.butler().get("/v4/keyvalues/small?key=d").0, 400);
    // Other namespaces are not affected, and a deleted key frees its slot.
    assert_eq!(
        server
            .butler()
            .post_json("/v4/keyvalues/other", r#"{"key":"d","value":"1"}"#)
            .0,
        201
    );
    assert_eq!(server.butler().delete("/v4/keyvalues/small/b").0, 204);
    assert_eq!(
        server
            .butler()
            .post_json("/v4/keyvalues/small", r#"{"key":"d","value":"1"}"#)
            .0,
        201
    );
}

#[test]
fn size_limits_name_the_limit() {
    let config = format!(
        "{}ButlerEdge:\n  limits:\n    maxBodyBytes: 4096\n    maxKeyBytes: 16\n    maxValueBytes: 64\n",
        KV_CONFIG
    );
    let server = InProcess::on_thread(&config);
    let long_key = "k".repeat(17);
    let (status, body) = server.butler().post_json(
        "/v4/keyvalues/limits",
        &json!({"key": long_key, "value": "v"}).to_string(),
    );
    assert_butler_error(status, &body, 400, "ButlerEdge.limits.maxKeyBytes");
    let (status, body) = server.butler().post_json(
        "/v4/keyvalues/limits",
        &json!({"key": "k", "value": "v".repeat(65)}).to_string(),
    );
    assert_butler_error(status, &body, 400, "the limit is 64 bytes");
    let (status, body) = server.butler().post_json(
        "/v4/keyvalues/limits",
        &json!({"key": "k", "value": "v".repeat(5000)}).to_string(),
    );
    assert_butler_error(status, &body, 413, "ButlerEdge.limits.maxBodyBytes");
    assert_eq!(server.butler().get("/v4/keyvaluesnamespaces").1, json!([]));
}

#[test]
fn unknown_routes_and_disabled_endpoints_are_404s() {
    let server = InProcess::on_thread(KV_CONFIG);
    let (status, body) = server.butler().get("/v4/nothing/here");
    assert_butler_error(status, &body, 404, "Route GET:/v4/nothing/here not found");
    let (status, body) = json_of(client().put(server.url("/v4/butlerping")).send().unwrap());
    assert_butler_error(status, &body, 404, "not found");

    let disabled = KV_CONFIG
        .replace("    keyValueStore: true", "    keyValueStore: false")
        .replace("butlerping: true", "butlerping: false");
    let server = InProcess::on_thread(&disabled);
    let (status, body) = server.butler().get("/v4/keyvaluesnamespaces");
    assert_butler_error(status, &body, 404, "not found");
    let (status, body) = server.butler().get("/v4/butlerping");
    assert_butler_error(status, &body, 404, "not found");
    let (status, body) = server.butler().get("/v4/configfile/endpointsenabled");
    assert_eq!((status, body), (200, json!(["apiListEnabledEndpoints"])));
}

/// `POST /v4/keyvalues/` (no namespace) is a 400 and creates nothing (it used to create a
/// namespace named "").
#[test]
fn a_post_without_a_namespace_is_refused() {
    let server = InProcess::on_thread(KV_CONFIG);
    let api = support::butler::Butler::on_port(server.port);
    let (status, body) = api.kv_post("", &serde_json::json!({"key": "k", "value": "v"}));
    support::butler::assert_butler_error(status, &body, 400, "the namespace");
    let (status, body) = api.get("/v4/keyvaluesnamespaces");
    assert_eq!((status, body), (200, serde_json::json!([])));
}

/// Store-wide quotas: namespaces and keys over `ButlerEdge.limits.maxNamespaces` /
/// `maxKeys` are a 409 naming the limit (20,000 namespaces used to be created in 4 s, also
/// by a client limited to `erp-*`); updates of existing keys still succeed; deleting makes
/// room again.
#[test]
fn the_store_has_a_namespace_and_a_key_quota() {
    let server = InProcess::on_thread(&format!(
        "{KV_CONFIG}ButlerEdge:\n  limits:\n    maxNamespaces: 3\n    maxKeys: 5\n"
    ));
    let api = support::butler::Butler::on_port(server.port);
    let pair = |key: &str| json!({"key": key, "value": "v"});
    for ns in ["erp-1", "erp-2", "erp-3"] {
        assert_eq!(api.kv_post(ns, &pair("k")).0, 201);
    }
    let (status, body) = api.kv_post("erp-4", &pair("k"));
    support::butler::assert_butler_error(status, &body, 409, "ButlerEdge.limits.maxNamespaces");
    assert!(
        body["message"].as_str().unwrap().contains("3 namespaces"),
        "{body}"
    );
    assert_eq!(api.kv_post("erp-1", &pair("k2")).0, 201);
    assert_eq!(api.kv_post("erp-2", &pair("k2")).0, 201);
    let (status, body) = api.kv_post("erp-3", &pair("k2"));
    support::butler::assert_butler_error(status, &body, 409, "ButlerEdge.limits.maxKeys");
    // An update is not a new key.
    assert_eq!(api.kv_post("erp-3", &pair("k")).0, 201);
    assert_eq!(
        api.get("/v4/keyvaluesnamespaces").1,
        json!(["erp-1", "erp-2", "erp-3"])
    );
    // Room again once keys are gone.
    assert_eq!(api.kv_delete_namespace("erp-3").0, 204);
    assert_eq!(api.kv_post("erp-4", &pair("k")).0, 201);
}
