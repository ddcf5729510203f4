//! Per-client API tokens, against the real binary over real TLS: a token client gets exactly
//! its endpoint groups and namespaces, like a certificate client; butler_subs.qvs's requests
//! work once the Qlik REST connection carries the header; tokens rotate with SIGHUP; a token
//! over plain HTTP is refused; each `clientAuth.mode` lets through what it says and no more;
//! and no token ever shows in the log or in `/metrics`.

use crate::support;

use std::sync::Arc;

use crate::butler_subs::{add_key_value_body, start_task_body};
use serde_json::{Value, json};
use support::fake_qrs::{FakeQrs, FakeTask, butler_qrs_yaml};
use support::pki::{Ca, CertSpec, Issued, KeyKind, SenseCerts};
use support::server::{KV_CONFIG, Server, TLS_START_TASK_CONFIG, run_cli};
use support::tls_client::{Conn, Versions, client_config, reqwest_client, try_get};

const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";

/// A token made by `butler-edge token new NAME`: the token and its digest, read from what
/// the command prints.
struct Token {
    token: String,
    digest: String,
}

fn new_token(name: &str) -> Token {
    let (code, out, err) = run_cli(&["token", "new", name]);
    assert_eq!(code, 0, "token new: {err}");
    let token = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("bet_"))
        .unwrap_or_else(|| panic!("no token line in:\n{out}"))
        .to_string();
    let digest = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("tokenSha256: ["))
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no tokenSha256 line in:\n{out}"))
        .to_string();
    assert_eq!(token.len(), 4 + 64, "256 bits as hex: {token}");
    assert_eq!(digest.len(), 64);
    assert!(!out.contains(&format!("tokenSha256: [{token}")));
    assert!(out.contains(&format!("name: \"{name}\"")), "{out}");
    Token { token, digest }
}

struct Site {
    server: Server,
    server_ca: Ca,
    callers: Ca,
    qrs: FakeQrs,
    _sense: SenseCerts,
    reader: Token,
    erp: Token,
    /// A certificate client (CN=cert-reader) with the same rights as the reader token.
    cert_reader: Issued,
    template: String,
}

/// HTTPS, the key-value store and start-task on, with `mode` and `{erp_tokens}` (the ERP
/// client's tokenSha256 list) to fill in.
fn config(sense: &SenseCerts, qrs_port: u16) -> String {
    format!(
        "{head}{qrs}ButlerEdge:
  endpointsEnable:
    metrics: true
  qrs:
    connectTimeoutMs: 2000
    requestTimeoutMs: 5000
  clientAuth:
    enable: true
    mode: {{mode}}
    ca: [{{dir}}/callers-ca.pem]
    clients:
      - name: reader
        tokenSha256: [{{reader}}]
        endpoints: [ping, kvRead]
      - commonName: cert-reader
        endpoints: [ping, kvRead]
      - name: ERP upstream
        tokenSha256: [{{erp_tokens}}]
        endpoints: [startTask, kvRead, kvWrite, ping, metrics]
        kvNamespaces: [Sales, etl-*]
",
        head = TLS_START_TASK_CONFIG,
        qrs = butler_qrs_yaml(qrs_port, &sense.client.cert, &sense.client.key, &sense.root),
    )
}

fn site(mode: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, callers) = support::pki::server_and_callers_cas(dir.path());
    let cert_reader = callers.issue(&CertSpec::client("cert-reader"));
    let sense = SenseCerts::new(&["localhost"], KeyKind::EcP256Pkcs8);
    let qrs = FakeQrs::start(
        &sense.server,
        &sense.ca,
        vec![FakeTask::new(A, "Reload A").tag("nightly")],
    );
    let (reader, erp) = (new_token("reader"), new_token("ERP upstream"));
    // Every entry must be able to authenticate in the mode (the config check refuses one
    // that cannot), so each mode's entries get what it needs.
    let mut template = config(&sense, qrs.port());
    if mode == "certificate" {
        template = template
            .replace(
                "- name: reader\n",
                "- name: reader\n        commonName: reader\n",
            )
            .replace(
                "- name: ERP upstream\n",
                "- name: ERP upstream\n        commonName: erp\n",
            );
    } else if mode == "token" {
        let unused = new_token("cert-reader").digest;
        template = template.replace(
            "- commonName: cert-reader\n",
            &format!("- commonName: cert-reader\n        tokenSha256: {unused}\n"),
        );
    }
    let template = template
        .replace("{mode}", mode)
        .replace("{reader}", &reader.digest);
    let text = template.replace("{erp_tokens}", &erp.digest);
    let data = dir.path().join("data");
    let server = Server::start_in(dir, data, &text);
    Site {
        server,
        server_ca,
        callers,
        qrs,
        _sense: sense,
        reader,
        erp,
        cert_reader,
        template,
    }
}

impl Site {
    fn tls(&self, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
        client_config(
            &self.server_ca.cert_pem,
            identity,
            &[b"http/1.1"],
            Versions::Both,
        )
    }

    /// One request on a fresh TLS connection with the extra `headers`, byte for byte:
    /// (status, response head, JSON body or Null).
    fn send(
        &self,
        identity: Option<&Issued>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, Value) {
        let mut conn = Conn::open(self.server.port, self.tls(identity))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.server.log()));
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let (status, head, text) = conn
            .exchange(request.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.server.log()));
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, head, value)
    }

    /// A request with `Authorization: Bearer <token>` and a JSON body, no certificate.
    fn bearer(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers = [("Authorization", auth.as_str()), JSON];
        let (status, _, value) = self.send(None, method, path, &headers, &body);
        (status, value)
    }

    fn rewrite(&self, erp_tokens: &str) {
        let dir = self.server.config_dir().display().to_string();
        let text = self
            .template
            .replace("{port}", &self.server.port.to_string())
            .replace("{dir}", &dir)
            .replace("{erp_tokens}", erp_tokens);
        std::fs::write(self.server.config_dir().join("config.yaml"), text).unwrap();
    }

    /// Asserts that no token (`bet_` and 64 hex digits) appears in the log or in `/metrics`
    /// (read with `metrics_token`).
    fn assert_no_token_leaked(&self, metrics_token: &str, others: &[&str]) {
        let (status, metrics) = {
            let auth = format!("Bearer {metrics_token}");
            let mut conn = Conn::open(self.server.port, self.tls(None)).unwrap();
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n"
            );
            let (status, _, body) = conn.exchange(request.as_bytes()).unwrap();
            (status, body)
        };
        assert_eq!(status, 200, "{metrics}");
        let log = self.server.log();
        let tokens = [self.reader.token.as_str(), self.erp.token.as_str()];
        for token in tokens.iter().chain(others) {
            assert!(!log.contains(token), "a token is in the log:\n{log}");
            assert!(
                !metrics.contains(token),
                "a token is in /metrics:\n{metrics}"
            );
            // Nor its random part alone.
            assert!(!log.contains(&token[4..]), "a token is in the log:\n{log}");
        }
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn assert_status_shape(status: u16, body: &Value, expected: u16, parts: &[&str]) {
    assert_eq!(status, expected, "body: {body}");
    assert_eq!(body["statusCode"], json!(expected), "body: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
}

fn metric(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_token_client_gets_its_groups_and_namespaces_exactly_like_a_certificate_client() {
    let s = site("certificateOrToken");
    let pair = |k: &str| Some(json!({"key": k, "value": "v"}));
    // The reader token and the reader certificate: the same rights, the same answers.
    let (status, _) = s.bearer(&s.reader.token, "GET", "/v4/butlerping", None);
    assert_eq!(status, 200);
    let (status, _, _) = s.send(Some(&s.cert_reader), "GET", "/v4/butlerping", &[], "");
    assert_eq!(status, 200);
    let (status, body) = s.bearer(&s.reader.token, "POST", "/v4/keyvalues/Sales", pair("k"));
    assert_status_shape(
        status,
        &body,
        403,
        &[
            "\"reader\"",
            "kvWrite",
            "POST /v4/keyvalues/Sales",
            "may use: kvRead, ping",
        ],
    );
    let (status, _, cert_body) = s.send(
        Some(&s.cert_reader),
        "POST",
        "/v4/keyvalues/Sales",
        &[JSON],
        r#"{"key": "k", "value": "v"}"#,
    );
    assert_status_shape(status, &cert_body, 403, &["\"cert-reader\"", "kvWrite"]);
    let (status, body) = s.bearer(
        &s.reader.token,
        "PUT",
        &format!("/v4/reloadtask/{A}/start"),
        None,
    );
    assert_status_shape(status, &body, 403, &["\"reader\"", "startTask"]);
    let (status, body) = s.bearer(
        &s.reader.token,
        "GET",
        "/v4/configfile/endpointsenabled",
        None,
    );
    assert_status_shape(status, &body, 403, &["\"reader\"", "endpointsEnabled"]);

    // The ERP token: its namespaces, by name and prefix, and no others.
    for ns in ["Sales", "etl-daily"] {
        let (status, body) = s.bearer(
            &s.erp.token,
            "POST",
            &format!("/v4/keyvalues/{ns}"),
            pair("k"),
        );
        assert_eq!(status, 201, "{ns}: {body}");
    }
    let (status, body) = s.bearer(&s.erp.token, "GET", "/v4/keyvalues/Sales?key=k", None);
    assert_eq!((status, body["value"].clone()), (200, json!("v")), "{body}");
    for (method, path) in [("POST", "/v4/keyvalues/HR"), ("GET", "/v4/keylist/HR")] {
        let (status, body) = s.bearer(&s.erp.token, method, path, pair("k"));
        assert_status_shape(status, &body, 403, &["\"ERP upstream\"", "\"HR\""]);
    }
    // Over HTTP/2 too.
    let h2 = reqwest_client(client_config(
        &s.server_ca.cert_pem,
        None,
        &[b"h2"],
        Versions::Both,
    ));
    let response = h2
        .get(s.server.https_url("/v4/keyvalues/Sales?key=k"))
        .bearer_auth(&s.erp.token)
        .send()
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status().as_u16(), 200);
    // X-Api-Key is the same token in another header.
    let (status, _, body) = s.send(
        None,
        "GET",
        "/v4/keyvalues/Sales?key=k",
        &[("X-Api-Key", &s.erp.token)],
        "",
    );
    assert_eq!(status, 200, "{body}");

    // Wrong token, a token-shaped guess, no credentials: 401, Butler's shape, a challenge.
    let guess = format!("bet_{}", "0".repeat(64));
    for (headers, reason) in [
        (vec![("Authorization", "Bearer wrong")], "unknown_token"),
        (vec![("X-Api-Key", guess.as_str())], "unknown_token"),
        (vec![], "no_credentials"),
    ] {
        let (status, head, body) = s.send(None, "GET", "/v4/butlerping", &headers, "");
        assert_status_shape(status, &body, 401, &[]);
        assert_eq!(body["error"], json!("Unauthorized"), "{body}");
        let challenge = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
            .unwrap_or_else(|| panic!("no WWW-Authenticate in:\n{head}"));
        assert!(
            challenge.contains("Bearer realm=\"butler-edge\""),
            "{challenge}"
        );
        assert!(challenge.contains(reason), "{challenge}");
    }
    for _ in 0..2 {
        let (status, _) = s.bearer("wrong", "GET", "/v4/butlerping", None);
        assert_eq!(status, 401);
    }
    let log = s.server.log();
    assert!(log.contains("authentication refused (401)"), "{log}");
    // The fifth refusal from one address within the window is a warning.
    assert!(
        log.contains("WARN") && log.contains("5 refused API authentications from 127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("reason=\"unknown_token\"") || log.contains("reason=unknown_token"),
        "{log}"
    );

    // /metrics counts authentications by method and outcome.
    let mut conn = Conn::open(s.server.port, s.tls(None)).unwrap();
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        s.erp.token
    );
    let (status, _, metrics) = conn.exchange(request.as_bytes()).unwrap();
    assert_eq!(status, 200, "{metrics}");
    let count = |method: &str, outcome: &str| {
        metric(
            &metrics,
            &format!(
                "butler_edge_authentications_total{{method=\"{method}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert!(count("token", "ok") >= 11.0, "{metrics}");
    assert_eq!(count("token", "unknown_token"), 4.0, "{metrics}");
    assert_eq!(count("none", "no_credentials"), 1.0, "{metrics}");
    assert_eq!(count("certificate", "ok"), 2.0, "{metrics}");
    s.assert_no_token_leaked(&s.erp.token, &[&guess]);
}

#[test]
fn butler_subs_requests_work_through_a_token_in_the_connections_header() {
    let s = site("token");
    // What Butler_GET and Butler_POST send once each connection carries the header
    // (Sense's REST connector: "Query headers", name Authorization, value "Bearer <token>").
    let auth = format!("Bearer {}", s.erp.token);
    let auth = ("Authorization", auth.as_str());
    let put = ("X-HTTP-Method-Override", "PUT");
    let delete = ("X-HTTP-Method-Override", "DELETE");
    let (status, _, _) = s.send(None, "GET", "/v4/butlerping", &[auth], "");
    assert_eq!(status, 200);
    // AddKeyValue.
    let (status, _, body) = s.send(
        None,
        "POST",
        "/v4/keyvalues/Sales",
        &[auth, JSON],
        &add_key_value_body("LastReload", "2024-01-01", 60000),
    );
    assert_eq!(status, 201, "{body}");
    // GetKeyValue, KeyExists, GetAllKeys.
    let (status, _, body) = s.send(
        None,
        "GET",
        "/v4/keyvalues/Sales?key=LastReload",
        &[auth],
        "",
    );
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!("2024-01-01")),
        "{body}"
    );
    let (status, _, body) = s.send(
        None,
        "GET",
        "/v4/keyvalues/Sales/keyexists?key=LastReload",
        &[auth],
        "",
    );
    assert_eq!(
        (status, body["keyExists"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (status, _, body) = s.send(None, "GET", "/v4/keylist/Sales", &[auth], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("LastReload"), "{body}");
    // StartTask (PUT through the override), with a key-value pair.
    let start = start_task_body(&[A], &[], &[], &[["etl-run", "by", "sub", ""]]);
    let (status, _, body) = s.send(
        None,
        "POST",
        &format!("/v4/reloadtask/{A}/start"),
        &[auth, put, JSON],
        &start,
    );
    assert!(
        status == 200 || status == 201,
        "{status} {body}; log:\n{}",
        s.server.log()
    );
    assert_eq!(s.qrs.start_calls().len(), 1, "{body}");
    // DeleteKeyValue, DeleteNamespace.
    let (status, _, body) = s.send(
        None,
        "POST",
        "/v4/keyvalues/Sales/LastReload",
        &[auth, delete],
        "",
    );
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = s.send(None, "POST", "/v4/keyvalues/etl-run", &[auth, delete], "");
    assert_eq!(status, 204, "{body}");
    // Without the header the same requests get 401, and nothing changes.
    let (status, _, _) = s.send(
        None,
        "POST",
        "/v4/keyvalues/Sales",
        &[JSON],
        r#"{"key": "x", "value": "y"}"#,
    );
    assert_eq!(status, 401);
    s.assert_no_token_leaked(&s.erp.token, &[]);
}

#[test]
fn a_token_rotates_with_sighup_old_and_new_valid_then_the_old_refused() {
    let s = site("token");
    let next = new_token("ERP upstream");
    let ping = |token: &str| s.bearer(token, "GET", "/v4/butlerping", None).0;
    assert_eq!((ping(&s.erp.token), ping(&next.token)), (200, 401));
    // Step 1: both digests in the entry.
    s.rewrite(&format!("{}, {}", s.erp.digest, next.digest));
    s.server.hangup();
    s.server.wait_for_log("reloaded certificates", 1);
    assert_eq!((ping(&s.erp.token), ping(&next.token)), (200, 200));
    // A third digest is refused with a clear message, and the old settings stay.
    let third = new_token("ERP upstream");
    s.rewrite(&format!(
        "{}, {}, {}",
        s.erp.digest, next.digest, third.digest
    ));
    s.server.hangup();
    s.server.wait_for_log("reload failed", 1);
    assert!(s.server.log().contains("at most 2"), "{}", s.server.log());
    assert_eq!((ping(&s.erp.token), ping(&next.token)), (200, 200));
    // Step 2: the old digest removed; a kept-alive connection is refused too.
    let mut kept = Conn::open(s.server.port, s.tls(None)).unwrap();
    let old_request = format!(
        "GET /v4/butlerping HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        s.erp.token
    );
    assert_eq!(kept.exchange(old_request.as_bytes()).unwrap().0, 200);
    s.rewrite(&next.digest);
    s.server.hangup();
    s.server.wait_for_log("reloaded certificates", 2);
    assert_eq!((ping(&s.erp.token), ping(&next.token)), (401, 200));
    assert_eq!(kept.exchange(old_request.as_bytes()).unwrap().0, 401);
    s.assert_no_token_leaked(&next.token, &[&next.token, &third.token]);
}

#[test]
fn a_token_over_plain_http_is_refused_and_says_why() {
    let server = Server::start(&KV_CONFIG.replace("{max_keys}", "1000"));
    let token = new_token("anyone").token;
    for header in ["Authorization: Bearer", "X-Api-Key:"] {
        let request =
            format!("GET /v4/butlerping HTTP/1.1\r\nHost: 127.0.0.1\r\n{header} {token}\r\n\r\n");
        let answer = support::raw::exchange(server.port, request.as_bytes()).expect("answer");
        let body = answer.json();
        assert_status_shape(answer.status, &body, 401, &["only over HTTPS", "leaked"]);
        assert!(answer.header("www-authenticate").is_some());
    }
    // Without a token, or with another scheme, plain HTTP serves as before.
    let plain = support::raw::exchange(
        server.port,
        b"GET /v4/butlerping HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic eDp5\r\n\r\n",
    )
    .expect("answer");
    assert_eq!(plain.status, 200);
    server.wait_for_log("token_over_plain_http", 1);
    let log = server.log();
    assert!(
        !log.contains(&token[4..]),
        "the token is in the log:\n{log}"
    );
}

#[test]
fn each_handshake_mode_lets_through_what_it_says() {
    // certificate (the default): no certificate, no connection, a token changes nothing.
    let s = site("certificate");
    assert!(try_get(s.server.port, s.tls(None), "/v4/butlerping").is_err());
    let result = Conn::open(s.server.port, s.tls(None)).and_then(|mut c| {
        let request = format!(
            "GET /v4/butlerping HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
            s.erp.token
        );
        c.exchange(request.as_bytes())
    });
    assert!(result.is_err(), "a token alone got through: {result:?}");
    let (status, _, _) = s.send(Some(&s.cert_reader), "GET", "/v4/butlerping", &[], "");
    assert_eq!(status, 200);
    // A certificate with a token: the certificate decides (the token is not accepted).
    let (status, _, body) = s.send(
        Some(&s.cert_reader),
        "POST",
        "/v4/keyvalues/Sales",
        &[JSON, ("X-Api-Key", &s.erp.token)],
        r#"{"key": "k", "value": "v"}"#,
    );
    assert_status_shape(status, &body, 403, &["\"cert-reader\""]);
    drop(s);

    // token: no certificate is asked for; a certificate alone is not enough.
    let s = site("token");
    let (status, _) = s.bearer(&s.reader.token, "GET", "/v4/butlerping", None);
    assert_eq!(status, 200);
    let (status, _, body) = s.send(Some(&s.cert_reader), "GET", "/v4/butlerping", &[], "");
    assert_status_shape(status, &body, 401, &["Authentication required"]);
    let stranger = s.callers.issue(&CertSpec::client("stranger"));
    let (status, _, _) = s.send(Some(&stranger), "GET", "/v4/butlerping", &[], "");
    assert_eq!(status, 401);

    // certificateOrToken is covered by the first test; check-config names token clients
    // and never prints a digest.
    let dir = s.server.config_dir();
    let (code, out, err) = run_cli(&[
        "check-config",
        &dir.join("config.yaml").display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("authentication mode: token"), "{out}");
    assert!(out.contains("\"reader\" (API token)"), "{out}");
    assert!(out.contains("\"ERP upstream\" (API token)"), "{out}");
    assert!(
        !out.contains(&s.erp.digest) && !out.contains(&s.erp.token),
        "{out}"
    );
}
