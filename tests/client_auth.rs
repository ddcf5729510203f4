//! Client certificates and per-client permissions, against the real binary: certificates
//! without trust, out of date or revoked fail in the handshake (no request is processed);
//! known callers get exactly their endpoint groups, namespaces and start-task allow-list,
//! with a 403 naming the caller otherwise; identities in the access log; SIGHUP reloads the
//! client list and CRLs, applying to kept-alive connections, and keeps the old settings when
//! a new file is broken.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_qrs::{FakeQrs, FakeTask, butler_qrs_yaml};
use support::pki::{Ca, CertSpec, Issued, KeyKind, SenseCerts, Validity};
use support::server::{Server, TLS_START_TASK_CONFIG, run_cli};
use support::tls_client::{Conn, Versions, client_config, reqwest_client, try_get};

const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

/// The client list used by every test; `{reader_endpoints}` is swapped in the reload test.
const CLIENTS: &str = "
    clients:
      - commonName: reader
        endpoints: [{reader_endpoints}]
      - name: ERP upstream
        uri: spiffe://corp/erp
        endpoints: [startTask, kvRead, kvWrite, ping]
        startTask:
          taskId: [aaaaaaaa-0000-4000-8000-000000000001]
          tag: [nightly]
        kvNamespaces: [Sales, etl-*]
      - dnsName: ops.corp.example
        endpoints: [ping, endpointsEnabled, kvRead, kvWrite, startTask]
";

struct Setup {
    server: Server,
    server_ca: Ca,
    callers: Ca,
    qrs: FakeQrs,
    _sense: SenseCerts,
    reader: Issued,
    erp: Issued,
    ops: Issued,
    /// CN=reader like the allowed reader, but listed in the CRL.
    revoked: Issued,
    config_template: String,
}

fn config(sense: &SenseCerts, qrs_port: u16, reader_endpoints: &str) -> String {
    format!(
        "{head}{qrs}ButlerEdge:
  qrs:
    connectTimeoutMs: 2000
    requestTimeoutMs: 5000
  clientAuth:
    enable: true
    ca: [{{dir}}/callers-ca.pem]
    crl: {{dir}}/callers-crl.pem
{clients}",
        head = TLS_START_TASK_CONFIG,
        qrs = butler_qrs_yaml(qrs_port, &sense.client.cert, &sense.client.key, &sense.root),
        clients = CLIENTS.replace("{reader_endpoints}", reader_endpoints),
    )
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, callers) = support::pki::server_and_callers_cas(dir.path());
    let reader = callers.issue(&CertSpec::client("reader"));
    let erp = callers.issue(&CertSpec::client("erp-gateway").names(&["spiffe://corp/erp"]));
    let ops = callers.issue(&CertSpec::client("Ops Operator").names(&["ops.corp.example"]));
    let revoked = callers.issue(&CertSpec::client("reader"));
    std::fs::write(
        dir.path().join("callers-crl.pem"),
        callers.crl_pem(&[&revoked]),
    )
    .unwrap();
    let sense = SenseCerts::new(&["localhost"], KeyKind::EcP256Pkcs8);
    let qrs = FakeQrs::start(
        &sense.server,
        &sense.ca,
        vec![
            FakeTask::new(A, "Reload A").tag("nightly"),
            FakeTask::new(B, "Reload B").tag("mixed"),
        ],
    );
    let config_template = config(&sense, qrs.port(), "ping, kvRead");
    let data = dir.path().join("data");
    let server = Server::start_in(dir, data, &config_template);
    Setup {
        server,
        server_ca,
        callers,
        qrs,
        _sense: sense,
        reader,
        erp,
        ops,
        revoked,
        config_template,
    }
}

impl Setup {
    fn tls(&self, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
        client_config(
            &self.server_ca.cert_pem,
            identity,
            &[b"http/1.1"],
            Versions::Both,
        )
    }

    /// One request on a fresh HTTP/1.1 connection as `who`: (status, JSON body or Null).
    fn call(&self, who: &Issued, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut conn = Conn::open(self.server.port, self.tls(Some(who))).unwrap();
        let body = body.map(|b| b.to_string());
        let (status, text) = conn
            .request(method, path, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.server.log()));
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, value)
    }

    fn rewrite_config(&self, reader_endpoints: &str) {
        let dir = self.server.config_dir().display().to_string();
        let text = self
            .config_template
            .replace("{port}", &self.server.port.to_string())
            .replace("{dir}", &dir)
            .replace(
                "endpoints: [ping, kvRead]",
                &format!("endpoints: [{reader_endpoints}]"),
            );
        std::fs::write(self.server.config_dir().join("config.yaml"), text).unwrap();
    }
}

fn assert_forbidden(status: u16, body: &Value, parts: &[&str]) {
    assert_eq!(status, 403, "body: {body}");
    assert_eq!(body["statusCode"], json!(403), "body: {body}");
    assert_eq!(body["error"], json!("Forbidden"), "body: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
}

#[test]
fn untrusted_out_of_date_and_revoked_certificates_fail_in_the_handshake() {
    let s = setup();
    let other_ca = Ca::new("Other CA");
    let cases: Vec<(&str, Option<Issued>)> = vec![
        ("no certificate", None),
        (
            "another CA",
            Some(other_ca.issue(&CertSpec::client("reader"))),
        ),
        (
            "expired",
            Some(
                s.callers
                    .issue(&CertSpec::client("reader").validity(Validity::Expired)),
            ),
        ),
        (
            "not yet valid",
            Some(
                s.callers
                    .issue(&CertSpec::client("reader").validity(Validity::NotYetValid)),
            ),
        ),
    ];
    for (what, identity) in &cases {
        let result = try_get(s.server.port, s.tls(identity.as_ref()), "/v4/butlerping");
        assert!(result.is_err(), "{what}: got {result:?}");
    }
    // The revoked one: same CN as the allowed reader, listed in the CRL.
    let crl_text = std::fs::read_to_string(s.server.config_dir().join("callers-crl.pem")).unwrap();
    assert!(crl_text.contains("BEGIN X509 CRL"));
    let result = try_get(s.server.port, s.tls(Some(&s.revoked)), "/v4/butlerping");
    assert!(result.is_err(), "revoked: got {result:?}");

    s.server.wait_for_log("TLS handshake failed", 5);
    let log = s.server.log();
    for reason in [
        "peer sent no certificates",
        "UnknownIssuer",
        "certificate expired",
        "certificate not valid yet",
        "Revoked",
    ] {
        assert!(log.contains(reason), "no {reason} in the log:\n{log}");
    }
    assert!(
        !log.contains("path=/v4/butlerping"),
        "a request was processed for a refused certificate:\n{log}"
    );
    // Who was refused is logged too.
    assert_eq!(
        log.matches("client certificate refused client=CN=reader")
            .count(),
        4,
        "{log}"
    );

    // The same port still serves a good certificate, over HTTP/2 too, with the caller logged.
    let (status, _) = s.call(&s.reader, "GET", "/v4/butlerping", None);
    assert_eq!(status, 200);
    let h2 = reqwest_client(client_config(
        &s.server_ca.cert_pem,
        Some(&s.ops),
        &[b"h2"],
        Versions::Both,
    ));
    let response = h2.get(s.server.https_url("/v4/butlerping")).send().unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status().as_u16(), 200);
    s.server.wait_for_log("client=ops.corp.example", 1);
    assert!(
        s.server.log().contains("client=reader"),
        "{}",
        s.server.log()
    );
}

fn write_crl(dir: &Path, ca: &Ca, revoked: &[&Issued]) {
    std::fs::write(dir.join("callers-crl.pem"), ca.crl_pem(revoked)).unwrap();
}

#[test]
fn each_caller_gets_its_endpoint_groups_and_a_named_403_otherwise() {
    let s = setup();
    // reader: ping and kvRead only.
    let (status, body) = s.call(&s.reader, "GET", "/v4/keyvalues/Sales?key=k", None);
    assert_eq!(
        status, 400,
        "kvRead is allowed (the namespace is just empty): {body}"
    );
    let (status, body) = s.call(
        &s.reader,
        "POST",
        "/v4/keyvalues/Sales",
        Some(json!({"key": "k", "value": "v"})),
    );
    assert_forbidden(
        status,
        &body,
        &[
            "\"reader\"",
            "kvWrite",
            "POST /v4/keyvalues/Sales",
            "may use: kvRead, ping",
        ],
    );
    let (status, body) = s.call(&s.reader, "DELETE", "/v4/keyvalues/Sales/k", None);
    assert_forbidden(status, &body, &["\"reader\"", "kvWrite"]);
    let (status, body) = s.call(&s.reader, "PUT", &format!("/v4/reloadtask/{A}/start"), None);
    assert_forbidden(status, &body, &["\"reader\"", "startTask"]);
    let (status, body) = s.call(&s.reader, "GET", "/v4/configfile/endpointsenabled", None);
    assert_forbidden(status, &body, &["\"reader\"", "endpointsEnabled"]);
    assert!(s.qrs.start_calls().is_empty());

    // A certificate the CA vouches for but no client entry names: nothing.
    let stranger = s.callers.issue(&CertSpec::client("stranger"));
    let (status, body) = s.call(&stranger, "GET", "/v4/butlerping", None);
    assert_forbidden(status, &body, &["CN=stranger", "not listed", "ping"]);
    // A disabled or unknown route is still a 404, before permissions.
    let (status, _) = s.call(&s.reader, "GET", "/v4/nothing-here", None);
    assert_eq!(status, 404);

    let log = s.server.log();
    assert!(log.contains("client=CN=stranger"), "{log}");
    assert!(log.contains("status=403"), "{log}");
}

#[test]
fn a_caller_limited_to_namespaces_by_name_and_prefix() {
    let s = setup();
    let pair = |k: &str| Some(json!({"key": k, "value": "v"}));
    for ns in ["Sales", "etl-daily", "etl-"] {
        let (status, body) = s.call(&s.erp, "POST", &format!("/v4/keyvalues/{ns}"), pair("k"));
        assert_eq!(status, 201, "{ns}: {body}");
    }
    for (method, path) in [
        ("POST", "/v4/keyvalues/HR"),
        ("POST", "/v4/keyvalues/Sales2"),
        ("GET", "/v4/keyvalues/HR?key=k"),
        ("GET", "/v4/keyvalues/HR/keyexists?key=k"),
        ("GET", "/v4/keylist/HR"),
        ("DELETE", "/v4/keyvalues/HR"),
        ("DELETE", "/v4/keyvalues/HR/k"),
    ] {
        let (status, body) = s.call(&s.erp, method, path, pair("k"));
        assert_forbidden(
            status,
            &body,
            &[
                "\"ERP upstream\"",
                "key-value namespace",
                "\"Sales\", \"etl-\"*",
            ],
        );
    }
    // ops may use any namespace; the listing shows erp only its own.
    let (status, _) = s.call(&s.ops, "POST", "/v4/keyvalues/HR", pair("salary"));
    assert_eq!(status, 201);
    let (_, all) = s.call(&s.ops, "GET", "/v4/keyvaluesnamespaces", None);
    // In creation order, as Butler lists them.
    assert_eq!(all, json!(["Sales", "etl-daily", "etl-", "HR"]));
    let (_, mine) = s.call(&s.erp, "GET", "/v4/keyvaluesnamespaces", None);
    assert_eq!(mine, json!(["Sales", "etl-daily", "etl-"]));
    let (status, body) = s.call(&s.erp, "GET", "/v4/keyvalues/Sales?key=k", None);
    assert_eq!((status, &body["value"]), (200, &json!("v")));
}

#[test]
fn a_caller_limited_to_some_tasks_sees_the_rest_denied_as_butler_reports_them() {
    let s = setup();
    let body = json!([
        {"type": "starttaskid", "payload": {"taskId": B}},
        {"type": "starttasktag", "payload": {"tag": "mixed"}},
        {"type": "starttasktag", "payload": {"tag": "nightly"}},
    ]);
    let (status, answer) = s.call(
        &s.erp,
        "PUT",
        &format!("/v4/reloadtask/{A}/start"),
        Some(body.clone()),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tasksId"]["started"][0]["taskId"], json!(A));
    assert_eq!(
        answer["tasksId"]["started"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(answer["tasksId"]["denied"], json!([{"taskId": B}]));
    assert_eq!(answer["tasksTagDenied"], json!([{"tag": "mixed"}]));
    assert_eq!(answer["tasksTag"][0]["taskId"], json!(A));
    assert_eq!(s.qrs.start_calls(), vec![A.to_string()]);

    // ops has no list of its own (and there is no global filter): B starts.
    s.qrs.clear_calls();
    let (status, answer) = s.call(
        &s.ops,
        "PUT",
        &format!("/v4/reloadtask/{B}/start"),
        Some(json!([])),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tasksId"]["denied"], json!([]));
    assert_eq!(s.qrs.start_calls(), vec![B.to_string()]);

    // Key-value items in a start request need kvWrite and the namespace: refused before
    // anything starts, or stored and started.
    s.qrs.clear_calls();
    let kv = |ns: &str| json!([{"type": "keyvaluestore", "payload": {"namespace": ns, "key": "run", "value": "1", "ttl": "3000"}}]);
    let (status, answer) = s.call(
        &s.erp,
        "PUT",
        &format!("/v4/reloadtask/{A}/start"),
        Some(kv("HR")),
    );
    assert_forbidden(status, &answer, &["\"ERP upstream\"", "\"HR\""]);
    assert!(s.qrs.start_calls().is_empty());
    let (status, answer) = s.call(
        &s.erp,
        "PUT",
        &format!("/v4/reloadtask/{A}/start"),
        Some(kv("etl-runs")),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(s.qrs.start_calls(), vec![A.to_string()]);
    let (_, stored) = s.call(&s.erp, "GET", "/v4/keyvalues/etl-runs?key=run", None);
    assert_eq!(stored["value"], json!("1"));
}

#[test]
fn sighup_reloads_the_client_list_and_crl_for_kept_alive_connections() {
    let s = setup();
    let mut kept = Conn::open(s.server.port, s.tls(Some(&s.reader))).unwrap();
    let post = r#"{"key":"k","value":"v"}"#;
    assert_eq!(
        kept.request("POST", "/v4/keyvalues/Sales", Some(post))
            .unwrap()
            .0,
        403
    );
    let mut ops_kept = Conn::open(s.server.port, s.tls(Some(&s.ops))).unwrap();
    assert_eq!(
        ops_kept.request("GET", "/v4/butlerping", None).unwrap().0,
        200
    );

    // reader gains kvWrite; ops's certificate is revoked.
    s.rewrite_config("ping, kvRead, kvWrite");
    write_crl(s.server.config_dir(), &s.callers, &[&s.revoked, &s.ops]);
    s.server.hangup();
    s.server.wait_for_log("reloaded certificates", 1);
    assert!(s.server.log().contains("clients=3"), "{}", s.server.log());

    // The open connection keeps going and gets the new rights at once.
    assert_eq!(
        kept.request("POST", "/v4/keyvalues/Sales", Some(post))
            .unwrap()
            .0,
        201
    );
    // The revoked certificate cannot open a new connection.
    let refused = try_get(s.server.port, s.tls(Some(&s.ops)), "/v4/butlerping");
    assert!(
        refused.is_err(),
        "revoked certificate accepted: {refused:?}"
    );
    s.server.wait_for_log("Revoked", 1);

    // A broken CRL on the next SIGHUP: the previous settings stay, and the log says why.
    let crl_path = s.server.config_dir().join("callers-crl.pem");
    std::fs::write(
        &crl_path,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    s.rewrite_config("ping");
    s.server.hangup();
    s.server.wait_for_log("reload failed", 1);
    assert!(
        s.server.log().contains(&format!(
            "ButlerEdge.clientAuth.crl: {}",
            crl_path.display()
        )),
        "{}",
        s.server.log()
    );
    assert_eq!(
        kept.request("POST", "/v4/keyvalues/Sales", Some(post))
            .unwrap()
            .0,
        201
    );
    assert!(try_get(s.server.port, s.tls(Some(&s.ops)), "/v4/butlerping").is_err());
    assert_eq!(
        try_get(s.server.port, s.tls(Some(&s.reader)), "/v4/butlerping")
            .unwrap()
            .0,
        200
    );
}

#[test]
fn a_stale_crl_is_warned_about_and_still_enforced() {
    let s = setup();
    let stale = s.callers.crl_pem_next_update(
        &[&s.revoked],
        time::OffsetDateTime::now_utc() - time::Duration::days(2),
    );
    std::fs::write(s.server.config_dir().join("callers-crl.pem"), stale).unwrap();
    s.server.hangup();
    s.server.wait_for_log("reloaded certificates", 1);
    s.server
        .wait_for_log("CRL (ButlerEdge.clientAuth.crl) is past its next update", 1);
    assert!(
        s.server.log().contains("issuer=CN=Callers CA"),
        "{}",
        s.server.log()
    );
    let refused = try_get(s.server.port, s.tls(Some(&s.revoked)), "/v4/butlerping");
    assert!(
        refused.is_err(),
        "revoked certificate accepted: {refused:?}"
    );
    assert_eq!(
        try_get(s.server.port, s.tls(Some(&s.reader)), "/v4/butlerping")
            .unwrap()
            .0,
        200
    );
}

#[test]
fn idempotency_keys_belong_to_the_caller_that_used_them() {
    let s = setup();
    let start = |who: &Issued, key: &str| {
        let response = reqwest_client(s.tls(Some(who)))
            .put(s.server.https_url(&format!("/v4/reloadtask/{A}/start")))
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .body("[]")
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = serde_json::from_str(&response.text().unwrap()).unwrap();
        (status, body)
    };
    let (status, first) = start(&s.erp, "nightly-2026-12-01");
    assert_eq!(status, 200, "{first}");
    assert_eq!(s.qrs.start_calls().len(), 1);
    // The same caller retrying gets the stored answer; nothing starts again.
    let (status, replayed) = start(&s.erp, "nightly-2026-12-01");
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed, first);
    assert_eq!(s.qrs.start_calls().len(), 1);
    // Another caller with the same key is a different request: its own start, its own
    // session, not the first caller's answer.
    let (status, other) = start(&s.ops, "nightly-2026-12-01");
    assert_eq!(status, 200, "{other}");
    assert_eq!(s.qrs.start_calls().len(), 2);
    assert_ne!(
        other["tasksId"]["started"][0]["executionSessionId"],
        first["tasksId"]["started"][0]["executionSessionId"]
    );
}

/// A CRL that names the callers' CA as issuer but is signed by another key (an impostor CA
/// of the same name): the reload is refused and says why, and callers keep getting in with
/// the previous CRL (it used to be accepted, then every handshake failed with BadSignature).
#[test]
fn a_crl_with_a_bad_signature_is_refused_on_reload_and_the_previous_one_stays() {
    let s = setup();
    let impostor = Ca::new("Callers CA");
    let crl_path = s.server.config_dir().join("callers-crl.pem");
    std::fs::write(&crl_path, impostor.crl_pem(&[])).unwrap();
    s.server.hangup();
    s.server.wait_for_log("reload failed", 1);
    let log = s.server.log();
    assert!(
        log.contains(&format!(
            "ButlerEdge.clientAuth.crl: {}: the CRL's signature does not verify",
            crl_path.display()
        )),
        "{log}"
    );
    assert_eq!(
        try_get(s.server.port, s.tls(Some(&s.reader)), "/v4/butlerping")
            .unwrap_or_else(|e| panic!("reader refused after a refused reload: {e}"))
            .0,
        200
    );
    // The previous CRL is still in force.
    assert!(try_get(s.server.port, s.tls(Some(&s.revoked)), "/v4/butlerping").is_err());

    // check-config (the same checks as start-up) says the same.
    let (_, stdout, stderr) = run_cli(&["check-config", s.server.config_path.to_str().unwrap()]);
    assert!(
        stdout.contains("problem: ButlerEdge.clientAuth.crl")
            && stdout.contains("the CRL's signature does not verify"),
        "{stdout}{stderr}"
    );
}

/// What an attacker puts in a certificate name or a tag to forge a log line: a newline, a
/// complete fake access-log line, and a terminal escape that clears the screen.
const FORGED: &str =
    "x\n2026-12-01T21:00:00.000000Z  INFO FORGED-LINE client=admin status=204\x1b[2J";

/// No log line may start with the forged text or carry a raw escape, and none is longer than
/// the bound on one event (a 30 KB certificate name must not add 30 KB per handshake).
fn assert_not_forged(log: &str) {
    assert!(!log.contains('\x1b'), "a raw ESC reached the log:\n{log}");
    for line in log.lines() {
        assert!(
            !line.contains("Z  INFO FORGED-LINE") || line.contains("\\n2026"),
            "a forged line stands on its own:\n{line}"
        );
        assert!(line.len() <= 4096, "a log line of {} bytes", line.len());
    }
}

/// Control characters in a refused certificate's CN, in a trusted but unlisted one's, in a
/// 30 KB name and in a refused tag reach the log escaped and bounded, and a flood of failed
/// handshakes is logged at a bounded rate with a count of what was left out.
#[test]
fn certificate_names_and_tags_cannot_forge_or_flood_log_lines() {
    let s = setup();
    let untrusted = Ca::new("Attacker CA");
    let forged = untrusted.issue(&CertSpec::client(FORGED));
    assert!(try_get(s.server.port, s.tls(Some(&forged)), "/v4/butlerping").is_err());
    let long = untrusted.issue(&CertSpec::client(&"A".repeat(30_000)));
    assert!(try_get(s.server.port, s.tls(Some(&long)), "/v4/butlerping").is_err());
    // Trusted, but no client entry names it: 403, and its CN is in the access log.
    let unlisted = s.callers.issue(&CertSpec::client(FORGED));
    let (status, _) = s.call(&unlisted, "GET", "/v4/butlerping", None);
    assert_eq!(status, 403);
    // A tag the ERP client may not start.
    let body = json!([{"type": "starttasktag", "payload": {"tag": FORGED}}]);
    let (status, answer) = s.call(
        &s.erp,
        "PUT",
        &format!("/v4/reloadtask/{A}/start"),
        Some(body),
    );
    assert_eq!(status, 200, "{answer}");
    s.server.wait_for_log("tag not on the allow list", 1);
    s.server.wait_for_log("status=403", 1);
    let log = s.server.log();
    assert_not_forged(&log);
    assert!(
        log.contains("\\n2026-12-01T21:00:00.000000Z  INFO FORGED-LINE"),
        "{log}"
    );
    assert!(log.contains("\\u{1b}[2J"), "{log}");

    // A flood of failed handshakes: a bounded number of lines, then a count.
    let started = std::time::Instant::now();
    let before = s.server.log().matches("TLS handshake failed").count();
    for _ in 0..300 {
        let _ = try_get(s.server.port, s.tls(Some(&forged)), "/v4/butlerping");
    }
    let windows = started.elapsed().as_secs() / 5 + 2;
    let logged = s.server.log().matches("TLS handshake failed").count() - before;
    assert!(
        logged as u64 <= 20 * windows,
        "{logged} handshake failures logged for 300 in {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(5500));
    let _ = try_get(s.server.port, s.tls(Some(&forged)), "/v4/butlerping");
    s.server
        .wait_for_log("failed TLS handshakes were not logged", 1);
    assert_not_forged(&s.server.log());
}

/// Two client entries with the same `name` (free text; one defaulted from its common name)
/// used to share Idempotency-Key answers, so one replayed the other's start. Such a config
/// is refused, at start-up and by `check-config`, naming both entries.
#[test]
fn two_clients_with_the_same_name_are_refused_in_the_config() {
    let s = setup();
    let twins = s
        .config_template
        .replace("{port}", &s.server.port.to_string())
        .replace("{dir}", &s.server.config_dir().display().to_string())
        .replace(
            "      - dnsName: ops.corp.example\n",
            "      - commonName: Sense\n        endpoints: [startTask]\n      - name: Sense\n        dnsName: qliksense02.corp.example\n        endpoints: [startTask]\n      - dnsName: ops.corp.example\n",
        );
    let path = s.server.config_dir().join("twins.yaml");
    std::fs::write(&path, twins).unwrap();
    let expected =
        "ButlerEdge.clientAuth.clients[3].name: \"Sense\" is already the name of clients[2]";
    let (code, stdout, stderr) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains(expected),
        "{stdout}{stderr}"
    );
    let data = s.server.config_dir().join("twins-data");
    let (code, _, stderr) = run_cli(&[
        "--config",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
}

/// A client certificate that expires after its first handshake is not accepted again
/// through TLS session resumption (1.2 session ids, 1.3 tickets): with client certificates
/// required, sessions are not resumed, so every new connection verifies the certificate.
#[test]
fn a_certificate_that_expired_does_not_come_back_through_session_resumption() {
    let s = setup();
    let brief = s
        .callers
        .issue(&CertSpec::client("reader").validity(Validity::EndsInSeconds(3)));
    let issued = std::time::Instant::now();
    let configs: Vec<_> = [Versions::Tls12Only, Versions::Tls13Only]
        .into_iter()
        .map(|v| client_config(&s.server_ca.cert_pem, Some(&brief), &[b"http/1.1"], v))
        .collect();
    for config in &configs {
        let (status, _) = try_get(s.server.port, config.clone(), "/v4/butlerping").unwrap();
        assert_eq!(status, 200);
        // A second connection while still valid: resumption would be offered here.
        let (status, _) = try_get(s.server.port, config.clone(), "/v4/butlerping").unwrap();
        assert_eq!(status, 200);
    }
    std::thread::sleep(Duration::from_secs(5).saturating_sub(issued.elapsed()));
    for (config, version) in configs.iter().zip(["TLS 1.2", "TLS 1.3"]) {
        let again = try_get(s.server.port, config.clone(), "/v4/butlerping");
        assert!(
            again.is_err(),
            "{version}: the expired certificate got in again: {again:?}"
        );
    }
    s.server.wait_for_log("certificate expired", 2);
}

/// A client limited to namespace patterns has a namespace quota of its own
/// (`clients[].maxNamespaces`): the ERP client (`Sales`, `etl-*`, at most 3 here) cannot
/// fill the store with `etl-1`, `etl-2`, … (20,000 used to be created in 4 s); through
/// key-value posts and start-request items alike, a new namespace beyond is a 409 naming
/// the client and the key; its existing namespaces still take new keys.
#[test]
fn a_client_limited_to_namespace_patterns_has_a_namespace_quota() {
    let s = setup();
    let limited = s
        .config_template
        .replace("{port}", &s.server.port.to_string())
        .replace("{dir}", &s.server.config_dir().display().to_string())
        .replace(
            "        kvNamespaces: [Sales, etl-*]\n",
            "        kvNamespaces: [Sales, etl-*]\n        maxNamespaces: 3\n",
        );
    std::fs::write(s.server.config_dir().join("config.yaml"), limited).unwrap();
    s.server.hangup();
    s.server.wait_for_log("reloaded certificates", 1);
    let pair = json!({"key": "k", "value": "v"});
    for ns in ["Sales", "etl-1", "etl-2"] {
        let (status, body) = s.call(
            &s.erp,
            "POST",
            &format!("/v4/keyvalues/{ns}"),
            Some(pair.clone()),
        );
        assert_eq!(status, 201, "{ns}: {body}");
    }
    let (status, body) = s.call(&s.erp, "POST", "/v4/keyvalues/etl-3", Some(pair.clone()));
    assert_eq!(status, 409, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ERP upstream") && message.contains("clients[1].maxNamespaces"),
        "{message}"
    );
    let item = json!([{"type": "keyvaluestore", "payload": {"namespace": "etl-4", "key": "k", "value": "v"}},
                      {"type": "starttaskid", "payload": {"taskId": A}}]);
    let (status, body) = s.call(&s.erp, "PUT", "/v4/reloadtask/-/start", Some(item));
    assert_eq!(status, 409, "{body}");
    assert!(s.qrs.start_calls().is_empty(), "a task was started");
    // Existing namespaces keep working; another client is not limited by ERP's quota.
    let (status, _) = s.call(
        &s.erp,
        "POST",
        "/v4/keyvalues/etl-1",
        Some(json!({"key": "k2", "value": "v"})),
    );
    assert_eq!(status, 201);
    let (status, _) = s.call(&s.ops, "POST", "/v4/keyvalues/etl-9", Some(pair));
    assert_eq!(status, 201);
}
