//! `GET /health` and `GET /metrics` against the real binary: off unless enabled under
//! `ButlerEdge.endpointsEnable`, health's checks and status codes, and metrics that count
//! what really happened (requests by endpoint and status, latency histograms, keys,
//! commits, expired keys removed) in the Prometheus text format.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::pki::{Ca, CertSpec, Validity};
use support::server::{KV_CONFIG, Server, TLS_CONFIG, client, json_of};
use support::tls_client::{Versions, client_config, reqwest_client};

const ENABLED: &str = "ButlerEdge:\n  endpointsEnable:\n    health: true\n    metrics: true\n";

fn post(server: &Server, path: &str, body: &str) -> (u16, Value) {
    json_of(
        client()
            .post(server.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap(),
    )
}

fn metrics(server: &Server) -> String {
    let response = client().get(server.url("/metrics")).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().unwrap()
}

/// The value of one sample line (`name{labels} value`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn both_are_404_unless_enabled() {
    let server = Server::start(KV_CONFIG);
    for path in ["/health", "/metrics"] {
        let (status, body) = json_of(client().get(server.url(path)).send().unwrap());
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["statusCode"], 404);
        assert_eq!(body["message"], format!("Route GET:{path} not found"));
    }
}

#[test]
fn health_reports_database_disk_and_certificates() {
    let server = Server::start(&format!("{KV_CONFIG}{ENABLED}"));
    assert_eq!(
        post(&server, "/v4/keyvalues/h", r#"{"key":"a","value":"1"}"#).0,
        201
    );
    let (status, body) = json_of(client().get(server.url("/health")).send().unwrap());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let db = &body["checks"]["database"];
    assert_eq!(db["status"], "ok", "{body}");
    assert_eq!(db["namespaces"], 1, "{body}");
    assert_eq!(db["keys"], 1, "{body}");
    assert!(
        db["path"].as_str().unwrap().ends_with("butler-edge.redb"),
        "{body}"
    );
    let disk = &body["checks"]["disk"];
    assert_eq!(disk["status"], "ok", "{body}");
    assert!(disk["freeBytes"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(disk["minFreeBytes"], 64 << 20);
    // No HTTPS, no QRS: no certificate files to watch.
    assert_eq!(
        body["checks"]["certificates"],
        serde_json::json!([]),
        "{body}"
    );
}

/// An HTTPS server whose certificate and chain file are what the test says, with health on.
fn https_health(server_validity: Validity, chain: Option<Validity>) -> (Ca, Server) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Server CA");
    ca.issue(&CertSpec::server(&["localhost", "127.0.0.1"]).validity(server_validity))
        .write(dir.path(), "server");
    let mut config = TLS_CONFIG.to_string();
    if let Some(validity) = chain {
        let other = Ca::new("Chain CA");
        let cert = other.issue(&CertSpec::server(&["chain"]).validity(validity));
        std::fs::write(dir.path().join("chain.pem"), &cert.cert_pem).unwrap();
        config = config.replace(
            "      key: {dir}/server_key.pem\n",
            "      key: {dir}/server_key.pem\n      ca: {dir}/chain.pem\n",
        );
    }
    config.push_str("ButlerEdge:\n  endpointsEnable:\n    health: true\n");
    let data = dir.path().join("data");
    (ca, Server::start_in(dir, data, &config))
}

fn https_get_json(ca: &Ca, server: &Server, path: &str) -> (u16, Value) {
    let client = reqwest_client(client_config(
        &ca.cert_pem,
        None,
        &[b"http/1.1"],
        Versions::Both,
    ));
    json_of(client.get(server.https_url(path)).send().unwrap())
}

#[test]
fn health_reports_a_certificate_close_to_expiry_as_degraded() {
    let (ca, server) = https_health(Validity::EndsInDays(10), None);
    let (status, body) = https_get_json(&ca, &server, "/health");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let certs = body["checks"]["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{body}");
    let cert = &certs[0];
    assert_eq!(cert["status"], "expiring", "{body}");
    assert_eq!(
        cert["purpose"], "HTTPS server, Butler.restServerConfig.tls.cert",
        "{body}"
    );
    assert!(
        cert["file"].as_str().unwrap().ends_with("server.pem"),
        "{body}"
    );
    let days = cert["daysLeft"].as_i64().unwrap();
    assert!((9..=10).contains(&days), "{body}");
    assert!(
        cert["subject"].as_str().unwrap().contains("localhost"),
        "{body}"
    );
}

#[test]
fn health_fails_with_503_when_a_configured_certificate_has_expired() {
    let (ca, server) = https_health(Validity::Current, Some(Validity::Expired));
    let (status, body) = https_get_json(&ca, &server, "/health");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "fail", "{body}");
    let certs = body["checks"]["certificates"].as_array().unwrap();
    let statuses: Vec<&str> = certs
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ok", "expired"], "{body}");
    assert_eq!(
        certs[1]["purpose"], "HTTPS chain, Butler.restServerConfig.tls.ca",
        "{body}"
    );
    assert!(certs[1]["daysLeft"].as_i64().unwrap() < 0, "{body}");
}

#[test]
fn health_is_degraded_not_failed_when_the_disk_is_low() {
    let config = format!(
        "{KV_CONFIG}ButlerEdge:\n  minFreeDiskBytes: 1152921504606846976\n  endpointsEnable:\n    health: true\n"
    );
    let server = Server::start(&config);
    let (status, body) = json_of(client().get(server.url("/health")).send().unwrap());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["disk"]["status"], "low", "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
}

#[test]
fn metrics_count_requests_latency_keys_commits_and_expiry() {
    let server = Server::start(&format!("{KV_CONFIG}{ENABLED}"));
    assert_eq!(
        post(&server, "/v4/keyvalues/m", r#"{"key":"a","value":"1"}"#).0,
        201
    );
    assert_eq!(
        post(&server, "/v4/keyvalues/m", r#"{"key":"b","value":"2"}"#).0,
        201
    );
    assert_eq!(
        post(
            &server,
            "/v4/keyvalues/m",
            r#"{"key":"short","value":"x","ttl":100}"#
        )
        .0,
        201
    );
    let missing = client()
        .get(server.url("/v4/keyvalues/m?key=nope"))
        .send()
        .unwrap();
    assert_eq!(missing.status().as_u16(), 400);
    let stray = client().get(server.url("/no/such/route")).send().unwrap();
    assert_eq!(stray.status().as_u16(), 404);

    // The sweeper removes the short-lived key; wait for it to show in the counter.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics(&server);
        if sample(&text, "butler_edge_kv_expired_removed_total").unwrap_or(0.0) >= 1.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "expired key never counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        count(r#"butler_edge_http_requests_total{endpoint="kvPost",status="201"}"#),
        3.0
    );
    assert_eq!(
        count(r#"butler_edge_http_requests_total{endpoint="kvGet",status="400"}"#),
        1.0
    );
    assert_eq!(
        count(r#"butler_edge_http_requests_total{endpoint="unknown",status="404"}"#),
        1.0
    );
    // Histogram: cumulative buckets ending in +Inf equal to the count.
    assert_eq!(
        count(r#"butler_edge_http_request_duration_seconds_bucket{endpoint="kvPost",le="+Inf"}"#),
        3.0
    );
    assert_eq!(
        count(r#"butler_edge_http_request_duration_seconds_count{endpoint="kvPost"}"#),
        3.0
    );
    assert!(count(r#"butler_edge_http_request_duration_seconds_sum{endpoint="kvPost"}"#) > 0.0);
    assert!(text.contains("# TYPE butler_edge_http_request_duration_seconds histogram"));
    // Store: two live keys remain; three puts and one purge were committed.
    assert_eq!(count("butler_edge_kv_keys"), 2.0);
    assert_eq!(count("butler_edge_kv_namespaces"), 1.0);
    assert!(count("butler_edge_kv_operations_total") >= 4.0, "{text}");
    let commits = count("butler_edge_kv_commits_total");
    assert!((1.0..=4.0).contains(&commits), "{text}");
    assert!(count("butler_edge_kv_file_bytes") > 0.0);
    assert!(count("butler_edge_disk_free_bytes") > 0.0);
    assert!(count("process_resident_memory_bytes") > 1_000_000.0);
    // Every sample line parses as `name[{labels}] number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
    }
}
