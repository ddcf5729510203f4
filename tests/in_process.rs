//! The service run in-process through its real entry point (`app::prepare` +
//! `Service::run`), no binary spawned: routing and enablement, limits, the method
//! override, and a body timeout under tokio's paused clock (minutes of timeout in
//! milliseconds of test).

use crate::support;

use std::time::Instant;

use support::butler::assert_butler_error;
use support::in_process::{InProcess, WALL_CLOCK_BOUND};
use support::server::KV_CONFIG;

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
