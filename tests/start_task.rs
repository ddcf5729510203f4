//! Starting Sense tasks through QRS, against the real binary and the fake QRS: Butler's
//! request and answer shapes, the allow-list, what QRS really received, key-value items
//! committed before the start, QRS faults and certificates, `?wait=true` and
//! `Idempotency-Key`.

use crate::support;
use support::butler::assert_butler_error;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::butler::Butler;
use support::fake_qrs::{FakeQrs, FakeTask, FaultKind, status};
use support::pki::{Ca, KeyKind, SenseCerts};
use support::server::{Server, client, json_of, run_cli};

const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const C: &str = "cccccccc-0000-4000-8000-000000000003";
const D: &str = "dddddddd-0000-4000-8000-000000000004";
const DISABLED: &str = "eeeeeeee-0000-4000-8000-000000000005";
const UNKNOWN: &str = "ffffffff-0000-4000-8000-00000000dead";

fn fixture() -> Vec<FakeTask> {
    vec![
        FakeTask::new(A, "Reload A")
            .tag("nightly")
            .cp("Group", "finance"),
        FakeTask::new(B, "Reload B").tag("nightly"),
        FakeTask::new(C, "Reload C").cp("Group", "finance"),
        FakeTask::new(D, "Reload D")
            .tag("R&D + it's 50%")
            .cp("Owner's team", "Data & Analytics"),
        FakeTask::new(DISABLED, "Reload disabled")
            .tag("mixed")
            .disabled(),
    ]
}

/// What the config's QRS and filter sections say, beyond the defaults.
struct Options {
    qrs_host: &'static str,
    reject_unauthorized: bool,
    filter: &'static str,
    edge_qrs: &'static str,
    kv_enabled: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            qrs_host: "localhost",
            reject_unauthorized: true,
            filter: "",
            edge_qrs: "",
            kv_enabled: true,
        }
    }
}

struct Setup {
    certs: SenseCerts,
    qrs: FakeQrs,
    server: Server,
}

fn config(certs: &SenseCerts, qrs_port: u16, o: &Options) -> String {
    format!(
        "\
Butler:
  logLevel: info
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: {{port}}
  restServerEndpointsEnable:
    apiListEnabledEndpoints: true
    butlerping: true
    keyValueStore: {kv}
    senseStartTask: true
  keyValueStore:
    enable: {kv}
    maxKeysPerNamespace: 1000
  configQRS:
    authentication: certificates
    host: {host}
    useSSL: true
    port: {qrs_port}
    headers:
      static:
        - name: X-Qlik-User
          value: UserDirectory=Internal;UserId=sa_repository
    rejectUnauthorized: {reject}
  cert:
    clientCert: {cert}
    clientCertKey: {key}
    clientCertCA: {ca}
{filter}
ButlerEdge:
  qrs:
    connectTimeoutMs: 1000
    requestTimeoutMs: 2000
    waitPollIntervalMs: 50
{edge_qrs}
",
        kv = o.kv_enabled,
        host = o.qrs_host,
        reject = o.reject_unauthorized,
        cert = certs.client.cert.display(),
        key = certs.client.key.display(),
        ca = certs.root.display(),
        filter = o.filter,
        edge_qrs = o.edge_qrs,
    )
}

fn setup_with(key: KeyKind, o: Options) -> Setup {
    let certs = SenseCerts::new(&["localhost"], key);
    let qrs = FakeQrs::start(&certs.server, &certs.ca, fixture());
    let server = Server::start(&config(&certs, qrs.port(), &o));
    Setup { certs, qrs, server }
}

fn setup() -> Setup {
    setup_with(KeyKind::RsaPkcs1, Options::default())
}

fn put(server: &Server, path: &str, body: Value) -> (u16, Value) {
    json_of(
        client()
            .put(server.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap(),
    )
}

/// A body naming tasks A, B and C by id.
fn ids_a_b_c() -> Value {
    json!([
        {"type": "starttaskid", "payload": {"taskId": A}},
        {"type": "starttaskid", "payload": {"taskId": B}},
        {"type": "starttaskid", "payload": {"taskId": C}},
    ])
}

fn started_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|e| e["taskId"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn starts_by_id_tag_and_custom_property_once_each_listed_where_butler_lists_them() {
    let s = setup();
    let (status, body) = put(
        &s.server,
        &format!("/v4/reloadtask/{A}/start"),
        json!([
            {"type": "starttaskid", "payload": {"taskId": B}},
            {"type": "starttasktag", "payload": {"tag": "nightly"}},
            {"type": "starttaskcustomproperty", "payload": {"customPropertyName": "Group", "customPropertyValue": "finance"}},
        ]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(started_ids(&body["tasksId"]["started"]), vec![A, B]);
    assert_eq!(body["tasksId"]["invalid"], json!([]));
    assert_eq!(body["tasksId"]["denied"], json!([]));
    assert_eq!(sorted(started_ids(&body["tasksTag"])), vec![A, B]);
    assert_eq!(sorted(started_ids(&body["tasksCP"])), vec![A, C]);
    assert_eq!(body["tasksTagDenied"], json!([]));
    assert_eq!(body["tasksCPDenied"], json!([]));
    assert_eq!(body["failed"], json!([]));
    assert_eq!(body["tasksId"]["started"][0]["taskName"], "Reload A");
    // Each entry carries QRS's execution session id; a task listed twice has one session.
    let session_a = body["tasksId"]["started"][0]["executionSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(session_a.len(), 36);
    let tag_a = body["tasksTag"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["taskId"] == A)
        .unwrap();
    assert_eq!(tag_a["executionSessionId"], json!(session_a));

    // QRS received exactly one start call per distinct task.
    assert_eq!(sorted(s.qrs.start_calls()), vec![A, B, C]);
    // All ids were checked in one lookup; the tag and the custom property each in one.
    let calls = s.qrs.calls();
    let lookups: Vec<&str> = calls
        .iter()
        .filter(|c| c.method == "GET")
        .filter_map(|c| c.filter())
        .collect();
    assert_eq!(lookups.len(), 3, "{lookups:?}");
    assert!(lookups.contains(&format!("id eq {A} or id eq {B}").as_str()));
    assert!(lookups.contains(&"tags.name eq 'nightly'"));
    assert!(lookups.contains(
        &"(customProperties.definition.name eq 'Group') and (customProperties.value eq 'finance')"
    ));
    // Every call: a fresh 16-character xrfkey as query and header, and the static header.
    let mut keys = std::collections::HashSet::new();
    for call in &calls {
        let q = call.query.get("xrfkey").expect("xrfkey query");
        assert_eq!(Some(q.as_str()), call.header("x-qlik-xrfkey"));
        assert_eq!(q.len(), 16);
        assert!(keys.insert(q.clone()), "xrfkey {q} reused");
        assert_eq!(
            call.header("x-qlik-user"),
            Some("UserDirectory=Internal;UserId=sa_repository")
        );
        assert!((200..300).contains(&call.status), "{call:?}");
    }
}

#[test]
fn invalid_unknown_and_all_ids_must_exist() {
    let s = setup();
    let upper = A.to_uppercase();
    let body = json!([
        {"type": "starttaskid", "payload": {"taskId": UNKNOWN}},
        {"type": "starttaskid", "payload": {"taskId": upper}},
        {"type": "starttaskid", "payload": {"taskId": B}},
        {"type": "starttaskid", "payload": {"taskId": "abc"}},
        {"type": "starttasktag", "payload": {"tag": "nightly"}},
    ]);
    // "-" means "only the body"; it is never reported as invalid.
    let (status, r) = put(&s.server, "/v4/reloadtask/-/start", body.clone());
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        started_ids(&r["tasksId"]["invalid"]),
        vec![UNKNOWN, upper.as_str(), "abc"],
        "in request order, as Butler"
    );
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![B]);
    assert_eq!(r["tasksId"]["denied"], json!([]));
    assert_eq!(sorted(s.qrs.start_calls()), vec![A, B]);

    // With allTaskIdsMustExist=true, no id-named task starts; the valid ones are denied.
    // Tags are not affected.
    s.qrs.clear_calls();
    let (status, r) = put(
        &s.server,
        "/v4/reloadtask/-/start?allTaskIdsMustExist=true",
        body,
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["tasksId"]["started"], json!([]));
    assert_eq!(started_ids(&r["tasksId"]["denied"]), vec![B]);
    assert_eq!(started_ids(&r["tasksId"]["invalid"]).len(), 3);
    assert_eq!(sorted(started_ids(&r["tasksTag"])), vec![A, B]);
    assert_eq!(sorted(s.qrs.start_calls()), vec![A, B]);

    // All valid: started as usual.
    s.qrs.clear_calls();
    let (_, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{C}/start?allTaskIdsMustExist=true"),
        json!([]),
    );
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![C]);
    assert_eq!(s.qrs.start_calls(), vec![C]);

    // A malformed flag is a 400 in Butler's shape.
    let (status, r) = put(
        &s.server,
        "/v4/reloadtask/-/start?allTaskIdsMustExist=yes",
        json!([]),
    );
    assert_butler_error(status, &r, 400, "allTaskIdsMustExist");
}

#[test]
fn allow_list_applies_per_request_kind() {
    let s = setup_with(
        KeyKind::EcP256Pkcs8,
        Options {
            filter: "  startTaskFilter:
    enable: true
    allowTask:
      taskId:
        - aaaaaaaa-0000-4000-8000-000000000001
      tag:
        - nightly
      customProperty:
        - name: Group
          value: finance
",
            ..Options::default()
        },
    );
    let (status, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{B}/start"),
        json!([
            {"type": "starttaskid", "payload": {"taskId": A}},
            {"type": "starttasktag", "payload": {"tag": "R&D + it's 50%"}},
            {"type": "starttaskcustomproperty", "payload": {"customPropertyName": "Group", "customPropertyValue": "hr"}},
            {"type": "starttaskcustomproperty", "payload": {"customPropertyName": "Group", "customPropertyValue": "finance"}},
        ]),
    );
    assert_eq!(status, 200, "{r}");
    // B carries the allowed tag "nightly", but named by id it must be on the id list.
    assert_eq!(started_ids(&r["tasksId"]["denied"]), vec![B]);
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![A]);
    assert_eq!(r["tasksTagDenied"], json!([{"tag": "R&D + it's 50%"}]));
    assert_eq!(
        r["tasksCPDenied"],
        json!([{"name": "Group", "value": "hr"}])
    );
    assert_eq!(sorted(started_ids(&r["tasksCP"])), vec![A, C]);
    assert_eq!(sorted(s.qrs.start_calls()), vec![A, C]);
    // A denied id is not even looked up.
    assert!(
        s.qrs
            .calls()
            .iter()
            .filter_map(|c| c.filter())
            .all(|f| !f.contains(B))
    );
}

#[test]
fn tasks_qrs_did_not_start_are_failed_never_started() {
    let s = setup();
    s.qrs
        .add_fault(&format!("/qrs/task/{C}/start"), FaultKind::Status(503));
    let (status, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{DISABLED}/start"),
        json!([
            {"type": "starttaskid", "payload": {"taskId": C}},
            {"type": "starttasktag", "payload": {"tag": "mixed"}},
            {"type": "starttaskid", "payload": {"taskId": A}},
        ]),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![A]);
    assert_eq!(r["tasksTag"], json!([]));
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{r}");
    let reason = |id: &str| {
        failed
            .iter()
            .find(|f| f["taskId"] == id)
            .unwrap_or_else(|| panic!("{id} not in failed: {r}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason(DISABLED).contains("empty session id"), "{r}");
    assert!(reason(C).contains("503"), "{r}");
    assert!(
        reason(C).contains(&format!("/qrs/task/{C}/start/synchronous")),
        "{r}"
    );
    assert_eq!(failed[0]["taskName"], "Reload disabled");
    // QRS was asked to start the disabled task once, although named by id and tag.
    assert_eq!(sorted(s.qrs.start_calls()), vec![A, C, DISABLED]);
}

/// A raw HTTP/1.1 GET on loopback from inside the fake QRS (no client library there).
fn probe_url(port: u16, path: String) -> Pin<Box<dyn Future<Output = String> + Send>> {
    Box::pin(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            return "connect failed".to_string();
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        if tcp.write_all(request.as_bytes()).await.is_err() {
            return "write failed".to_string();
        }
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        text.split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or(text)
    })
}

#[test]
fn key_values_are_committed_before_the_task_starts_butler_subs_shapes() {
    let s = setup();
    let port = s.server.port;
    s.qrs.set_start_probe(Arc::new(move |_task| {
        probe_url(
            port,
            "/v4/keyvalues/MyNamespace?key=An%20important%20key".to_string(),
        )
    }));
    // StartTask_KeyValue in butler_subs.qvs: POST + X-HTTP-Method-Override: PUT, ttl as a
    // string.
    let body = r#"[{"type":"keyvaluestore","payload":{"namespace":"MyNamespace","key":"An important key","value":"The value","ttl":"3000"}}]"#;
    let (status, r) = json_of(
        client()
            .post(s.server.url(&format!("/v4/reloadtask/{A}/start")))
            .header("X-HTTP-Method-Override", "PUT")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![A]);
    let start = s
        .qrs
        .calls()
        .into_iter()
        .find(|c| c.method == "POST")
        .expect("start call");
    let seen: Value = serde_json::from_str(start.probe.as_deref().unwrap_or("")).unwrap();
    assert_eq!(
        seen,
        json!({"namespace": "MyNamespace", "key": "An important key", "value": "The value"}),
        "what the started app's script could read when QRS started it"
    );
    // The TTL counts: gone after 3 s.
    std::thread::sleep(Duration::from_millis(3300));
    let (status, _) = json_of(
        client()
            .get(
                s.server
                    .url("/v4/keyvalues/MyNamespace?key=An%20important%20key"),
            )
            .send()
            .unwrap(),
    );
    assert_eq!(status, 400);

    // StartTask in butler_subs.qvs: POST + override, no body at all.
    s.qrs.clear_calls();
    let (status, r) = json_of(
        client()
            .post(s.server.url(&format!("/v4/reloadtask/{B}/start")))
            .header("X-HTTP-Method-Override", "PUT")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![B]);
    assert_eq!(s.qrs.start_calls(), vec![B]);
}

#[test]
fn tags_and_custom_properties_with_quotes_ampersands_and_plus_signs() {
    let s = setup();
    let (status, r) = put(
        &s.server,
        "/v4/reloadtask/-/start",
        json!([
            {"type": "starttasktag", "payload": {"tag": "R&D + it's 50%"}},
            {"type": "starttaskcustomproperty", "payload": {"customPropertyName": "Owner's team", "customPropertyValue": "Data & Analytics"}},
            // QRS matches each condition on its own: A has Group=finance, D has
            // Owner's team=…; no task has Group="Data & Analytics", so nothing matches.
            {"type": "starttaskcustomproperty", "payload": {"customPropertyName": "Group", "customPropertyValue": "Data & Analytics"}},
        ]),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(started_ids(&r["tasksTag"]), vec![D]);
    assert_eq!(started_ids(&r["tasksCP"]), vec![D]);
    assert_eq!(s.qrs.start_calls(), vec![D]);
    let filters: Vec<String> = s
        .qrs
        .calls()
        .iter()
        .filter_map(|c| c.filter().map(str::to_string))
        .collect();
    assert!(filters.contains(&r"tags.name eq 'R&D + it\'s 50%'".to_string()));
}

/// Every character that has a meaning in a QRS filter or a query string, in tags and in custom
/// property names and values, reaches the fake QRS (which parses literals as a live QRS does:
/// backslash escapes, a doubled quote is a 400) as the same text, and starts the task.
#[test]
fn quotes_backslashes_and_query_characters_in_tags_and_custom_properties_reach_qrs_intact() {
    let s = setup();
    let awkward = [
        "it's", "Q1'25", r"C:\dir\", r"\'", "R&D", "#1", "50%", "a+b", "why?", "dir/sub",
        "'quoted'", r"a\\b",
    ];
    let tasks: Vec<FakeTask> = awkward
        .iter()
        .enumerate()
        .map(|(i, text)| {
            FakeTask::new(
                &format!("{:08x}-0000-4000-8000-{:012x}", i + 1, i),
                &format!("Task {i}"),
            )
            .tag(text)
            .cp(text, text)
        })
        .collect();
    s.qrs.set_tasks(tasks.clone());
    for (i, text) in awkward.iter().enumerate() {
        s.qrs.clear_calls();
        let (status, r) = put(
            &s.server,
            "/v4/reloadtask/-/start",
            json!([
                {"type": "starttasktag", "payload": {"tag": text}},
                {"type": "starttaskcustomproperty", "payload": {"customPropertyName": text, "customPropertyValue": text}},
            ]),
        );
        assert_eq!(status, 200, "{text}: {r}");
        assert_eq!(
            started_ids(&r["tasksTag"]),
            vec![tasks[i].id.clone()],
            "{text}: {r}"
        );
        assert_eq!(
            started_ids(&r["tasksCP"]),
            vec![tasks[i].id.clone()],
            "{text}: {r}"
        );
        assert_eq!(r["failed"], json!([]), "{text}");
        let lookups: Vec<_> = s
            .qrs
            .calls()
            .into_iter()
            .filter(|c| c.method == "GET")
            .collect();
        assert_eq!(lookups.len(), 2, "{text}");
        for call in &lookups {
            assert_eq!(call.status, 200, "{text}: {:?}", call.filter());
            // Sent percent-encoded: no raw character QRS would read differently.
            assert!(
                call.raw_query.split('&').all(|p| p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"%=-._~".contains(&b))),
                "{text}: {}",
                call.raw_query
            );
        }
        assert_eq!(s.qrs.start_calls(), vec![tasks[i].id.clone()], "{text}");
    }
}

/// One deadline for all the QRS work of a start request: with the defaults (each QRS call may
/// take 15 s), a QRS that accepts connections and never answers gets a 504 naming QRS well
/// before the 15 s callers are promised, and nothing is started then or afterwards.
#[test]
fn a_hanging_qrs_gets_a_504_before_15_s_and_nothing_is_started_afterwards() {
    let certs = SenseCerts::new(&["localhost"], KeyKind::EcP256Pkcs8);
    let qrs = FakeQrs::start(&certs.server, &certs.ca, fixture());
    // The defaults: no requestTimeoutMs, no requestDeadlineMs.
    let text =
        config(&certs, qrs.port(), &Options::default()).replace("    requestTimeoutMs: 2000\n", "");
    let server = Server::start(&text);
    qrs.add_fault("/qrs/task", FaultKind::Hang);
    let started = Instant::now();
    let (status, r) = put(
        &server,
        "/v4/reloadtask/-/start",
        json!([
            {"type": "starttaskid", "payload": {"taskId": A}},
            {"type": "starttasktag", "payload": {"tag": "nightly"}},
            {"type": "keyvaluestore", "payload": {"namespace": "ns", "key": "k", "value": "v"}},
        ]),
    );
    let elapsed = started.elapsed();
    assert_butler_error(status, &r, 504, "localhost");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("QRS"), "{message}");
    assert!(
        message.contains("ButlerEdge.qrs.requestDeadlineMs"),
        "{message}"
    );
    assert!(message.contains("no task was started"), "{message}");
    assert!(
        elapsed >= Duration::from_millis(9_900) && elapsed < Duration::from_secs(12),
        "{elapsed:?}"
    );
    // Let anything that might still be under way happen, then read the fake's record.
    qrs.clear_faults();
    std::thread::sleep(Duration::from_secs(2));
    assert!(qrs.start_calls().is_empty(), "{:?}", qrs.start_calls());
    let (status, _) = json_of(
        client()
            .get(server.url("/v4/keyvalues/ns?key=k"))
            .send()
            .unwrap(),
    );
    assert_eq!(
        status, 400,
        "the key-value item is not stored when nothing could start"
    );
}

/// A deadline that passes while starts are queued: the start in flight is reported failed
/// with the doubt said, the queued ones as not started, and those are never sent (the fake
/// QRS's record shows only the start that was in flight at the answer).
#[test]
fn starts_queued_at_the_deadline_are_never_sent() {
    let s = setup_with(
        KeyKind::EcP256Pkcs8,
        Options {
            edge_qrs: "    requestDeadlineMs: 1500\n    maxConcurrentCalls: 1\n",
            ..Options::default()
        },
    );
    s.qrs.add_fault(
        &format!("/qrs/task/{A}/start"),
        FaultKind::Delay(Duration::from_secs(5)),
    );
    let started = Instant::now();
    let (status, r) = put(&s.server, "/v4/reloadtask/-/start", ids_a_b_c());
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{r}");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    let sent_at_answer = s.qrs.start_calls();
    let failed = r["failed"].as_array().unwrap();
    let reason = |id: &str| {
        failed
            .iter()
            .find(|f| f["taskId"] == id)
            .and_then(|f| f["reason"].as_str())
            .unwrap_or_else(|| panic!("{id} not in failed: {r}"))
            .to_string()
    };
    // Which one went first depends on scheduling; exactly one was in flight.
    let in_flight: Vec<&str> = [A, B, C]
        .into_iter()
        .filter(|id| reason(id).contains("may still have started"))
        .collect();
    assert_eq!(in_flight.len(), 1, "{r}");
    for id in [A, B, C] {
        let why = reason(id);
        assert!(why.contains("requestDeadlineMs"), "{why}");
        if !in_flight.contains(&id) {
            assert!(why.starts_with("not started"), "{why}");
        }
    }
    // Wait past the slow start, then check nothing more reached QRS.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(s.qrs.start_calls(), sent_at_answer);
    assert!(sent_at_answer.len() <= 1, "{sent_at_answer:?}");
}

/// The embedded default config (what `cargo run` uses) serves start-task and says what to fill
/// in, instead of a 404 that reads like a wrong URL.
#[test]
fn the_embedded_default_answers_start_task_with_503_naming_what_to_fill_in() {
    let embedded = include_str!("../src/default-config.yaml")
        .replace("serverPort: 8080", "serverPort: {port}");
    assert_ne!(embedded, include_str!("../src/default-config.yaml"));
    let server = Server::start(&embedded);
    let (status, r) = json_of(
        client()
            .post(server.url("/v4/reloadtask/-/start"))
            .header("X-HTTP-Method-Override", "PUT")
            .send()
            .unwrap(),
    );
    assert_butler_error(status, &r, 503, "Butler.configQRS");
    assert!(
        r["message"].as_str().unwrap().contains("Butler.cert"),
        "{r}"
    );
}

#[test]
fn key_formats_sense_exports_and_others_all_work() {
    for key in [KeyKind::RsaPkcs8, KeyKind::EcP256Sec1] {
        let s = setup_with(key, Options::default());
        let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
        assert_eq!(status, 200, "{key:?}: {r}");
        assert_eq!(s.qrs.start_calls(), vec![A], "{key:?}");
        let _ = &s.certs;
    }
}

#[test]
fn unreachable_qrs_is_a_502_naming_host_and_cause_and_nothing_is_stored_or_started() {
    let s = setup();
    let port = s.qrs.port();
    drop(s.qrs); // nothing listens there now
    let started = Instant::now();
    let (status, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{A}/start"),
        json!([{"type": "keyvaluestore", "payload": {"namespace": "ns", "key": "k", "value": "v"}}]),
    );
    assert_butler_error(status, &r, 502, &format!("localhost:{port}"));
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("cannot reach QRS"), "{message}");
    assert!(message.contains("no task was started"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (status, _) = json_of(
        client()
            .get(s.server.url("/v4/keyvalues/ns?key=k"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 400, "the key-value item must not be stored");
}

#[test]
fn hanging_resetting_and_failing_qrs_answers_within_bounds() {
    let s = setup();
    // A lookup that hangs: 502 after the request timeout (2 s), nothing started.
    s.qrs.add_fault("/qrs/task", FaultKind::Hang);
    let started = Instant::now();
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    let elapsed = started.elapsed();
    assert_butler_error(status, &r, 502, "did not answer");
    assert!(r["message"].as_str().unwrap().contains("2000 ms"), "{r}");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert!(s.qrs.start_calls().is_empty());

    // A start that hangs or resets: the task is reported failed, with the doubt said.
    s.qrs.clear_faults();
    s.qrs.clear_calls();
    s.qrs
        .add_fault(&format!("/qrs/task/{A}/start"), FaultKind::Hang);
    s.qrs
        .add_fault(&format!("/qrs/task/{B}/start"), FaultKind::Reset);
    let started = Instant::now();
    let (status, r) = put(&s.server, "/v4/reloadtask/-/start", ids_a_b_c());
    assert_eq!(status, 200, "{r}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![C]);
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{r}");
    for f in failed {
        assert!(
            f["reason"]
                .as_str()
                .unwrap()
                .contains("may still have started"),
            "{f}"
        );
    }

    // A QRS host that accepts connections but never completes the TLS handshake: 502
    // within the connect timeout (1 s).
    s.qrs.clear_faults();
    s.qrs.hang_at_accept(true);
    s.qrs.drop_connections();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    let elapsed = started.elapsed();
    assert_butler_error(status, &r, 502, "cannot reach QRS");
    assert!(r["message"].as_str().unwrap().contains("1000 ms"), "{r}");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    s.qrs.hang_at_accept(false);
    s.qrs.drop_connections();

    // A QRS 500 on a lookup: 502 with QRS's status and message.
    s.qrs.clear_faults();
    s.qrs.add_fault("/qrs/task/full", FaultKind::Status(500));
    let (status, r) = put(
        &s.server,
        "/v4/reloadtask/-/start",
        json!([{"type": "starttasktag", "payload": {"tag": "nightly"}}]),
    );
    assert_butler_error(status, &r, 502, "answered 500");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("injected by fake QRS"),
        "{r}"
    );
}

#[test]
fn an_untrusted_qrs_certificate_is_refused() {
    let s = setup();
    let (status, _) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_eq!(status, 200);
    // QRS now presents a certificate from a CA we do not trust (e.g. an attacker's).
    let rogue = Ca::new("Rogue CA").server_cert(&["localhost"]);
    s.qrs.swap_server_cert(&rogue, &s.certs.ca);
    s.qrs.clear_calls();
    std::thread::sleep(Duration::from_millis(200));
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{B}/start"), json!([]));
    assert_butler_error(status, &r, 502, "TLS handshake with QRS");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("Butler.cert.clientCertCA"), "{message}");
    assert!(!s.qrs.start_calls().contains(&B.to_string()));
}

#[test]
fn connecting_by_ip_to_a_certificate_naming_a_host_says_what_to_change() {
    let s = setup_with(
        KeyKind::RsaPkcs1,
        Options {
            qrs_host: "127.0.0.1",
            ..Options::default()
        },
    );
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_butler_error(status, &r, 502, "not valid for the IP address 127.0.0.1");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("localhost"), "{message}");
    assert!(message.contains("Butler.configQRS.host"), "{message}");
    assert!(s.qrs.calls().is_empty());
}

#[test]
fn reject_unauthorized_false_skips_verification_and_warns() {
    let s = setup_with(
        KeyKind::RsaPkcs1,
        Options {
            qrs_host: "127.0.0.1",
            reject_unauthorized: false,
            ..Options::default()
        },
    );
    let rogue = Ca::new("Self-signed Sense").server_cert(&["sense.example"]);
    s.qrs.swap_server_cert(&rogue, &s.certs.ca);
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_eq!(status, 200, "{r}");
    assert_eq!(s.qrs.start_calls(), vec![A]);
    assert!(
        s.server.log().contains("rejectUnauthorized is false"),
        "{}",
        s.server.log()
    );
}

#[test]
fn connections_to_qrs_are_reused() {
    let s = setup();
    for _ in 0..20 {
        let (status, _) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
        assert_eq!(status, 200);
    }
    assert_eq!(s.qrs.start_calls().len(), 20);
    assert!(
        s.qrs.connections() <= 2,
        "{} TLS connections for 40 sequential QRS calls",
        s.qrs.connections()
    );
}

#[test]
fn wait_true_reports_how_each_run_ended() {
    let s = setup_with(
        KeyKind::EcP256Pkcs8,
        Options {
            edge_qrs: "    waitTimeoutMs: 1500\n",
            ..Options::default()
        },
    );
    s.qrs.set_tasks(vec![
        FakeTask::new(A, "Quick ok").runs(Duration::from_millis(300), status::FINISHED_SUCCESS),
        FakeTask::new(B, "Quick fail").runs(Duration::from_millis(200), status::FINISHED_FAIL),
        FakeTask::new(C, "Slow").runs(Duration::from_secs(30), status::FINISHED_SUCCESS),
    ]);
    let (status, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{A}/start?wait=true"),
        json!([{"type": "starttaskid", "payload": {"taskId": B}}]),
    );
    assert_eq!(status, 200, "{r}");
    let started = r["tasksId"]["started"].as_array().unwrap();
    assert_eq!(started[0]["executionStatus"], "FinishedSuccess", "{r}");
    assert_eq!(started[1]["executionStatus"], "FinishedFail", "{r}");
    assert_eq!(r["wait"], json!({"complete": true, "timeoutMs": 1500}));
    assert!(
        s.qrs
            .calls()
            .iter()
            .any(|c| c.path.starts_with("/qrs/executionsession/") && c.status == 404)
    );

    let t = Instant::now();
    let (status, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{C}/start?wait=true"),
        json!([]),
    );
    assert_eq!(status, 200, "{r}");
    assert!(
        t.elapsed() < Duration::from_millis(3000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        r["tasksId"]["started"][0]["executionStatus"],
        "StillRunning"
    );
    assert_eq!(r["wait"]["complete"], false);

    // Without wait, Butler's shape plus the session id only.
    let (_, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert!(r["tasksId"]["started"][0].get("executionStatus").is_none());
    assert!(r.get("wait").is_none());
}

#[test]
fn idempotency_key_returns_the_first_answer_even_after_a_restart() {
    let mut s = setup();
    let send = |server: &Server, key: &str, body: &str| {
        let response = client()
            .put(server.url(&format!("/v4/reloadtask/{A}/start")))
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .body(body.to_string())
            .send()
            .unwrap();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        let (status, body) = json_of(response);
        (status, body, replayed)
    };
    let (status, first, replayed) = send(&s.server, "order-4711", "[]");
    assert_eq!(status, 200);
    assert!(!replayed);
    let (status, again, replayed) = send(&s.server, "order-4711", "[]");
    assert_eq!(status, 200);
    assert!(replayed);
    assert_eq!(first, again);
    assert_eq!(s.qrs.start_calls(), vec![A]);

    // The same key for a different request is refused.
    let (status, r, _) = send(
        &s.server,
        "order-4711",
        &json!([{"type": "starttaskid", "payload": {"taskId": B}}]).to_string(),
    );
    assert_butler_error(status, &r, 422, "order-4711");

    // Kept durably: after a restart the retry still does not start the task again.
    assert!(s.server.terminate().success());
    s.server.restart();
    let (status, after, replayed) = send(&s.server, "order-4711", "[]");
    assert_eq!(status, 200);
    assert!(replayed);
    assert_eq!(first, after);
    assert_eq!(s.qrs.start_calls(), vec![A]);

    // Concurrent requests with one key start the task once.
    s.qrs.clear_calls();
    s.qrs.add_fault(
        "/start/synchronous",
        FaultKind::Delay(Duration::from_millis(200)),
    );
    let port = s.server.port;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                client()
                    .put(format!("http://127.0.0.1:{port}/v4/reloadtask/{A}/start"))
                    .header("Idempotency-Key", "concurrent-1")
                    .header("Content-Type", "application/json")
                    .body("[]")
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(s.qrs.start_calls(), vec![A]);
}

#[test]
fn malformed_requests_are_400s_in_butlers_shape_and_start_nothing() {
    let s = setup();
    let cases: Vec<(&str, &str)> = vec![
        ("{\"type\":\"starttaskid\"}", "body must be array"),
        ("[1]", "body/0 must be object"),
        ("[{\"type\":\"starttask\",\"payload\":{}}]", "body/0/type"),
        (
            "[{\"type\":\"starttaskid\"}]",
            "body/0/payload must be object",
        ),
        (
            "[{\"type\":\"starttaskid\",\"payload\":{\"taskId\":5}}]",
            "body/0/payload/taskId must be string",
        ),
        (
            "[{\"type\":\"keyvaluestore\",\"payload\":{\"namespace\":\"n\",\"key\":\"k\",\"value\":\"v\",\"ttl\":\"soon\"}}]",
            "ttl",
        ),
        (
            "[{\"type\":\"keyvaluestore\",\"payload\":{\"namespace\":\"n\",\"value\":\"v\"}}]",
            "body/0/payload/key",
        ),
        ("[{", "not valid JSON"),
    ];
    for (body, part) in cases {
        let (status, r) = json_of(
            client()
                .put(s.server.url(&format!("/v4/reloadtask/{A}/start")))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .unwrap(),
        );
        assert_butler_error(status, &r, 400, part);
    }
    assert!(s.qrs.calls().is_empty());
    let (status, r) = put(&s.server, "/v4/reloadtask//start", json!([]));
    assert_butler_error(status, &r, 400, "task ID");
    // The endpoint is listed as enabled.
    let (_, list) = json_of(
        client()
            .get(s.server.url("/v4/configfile/endpointsenabled"))
            .send()
            .unwrap(),
    );
    assert!(list.as_array().unwrap().contains(&json!("senseStartTask")));
}

#[test]
fn disabled_endpoint_is_a_404_and_config_errors_name_the_key() {
    let server = Server::start(support::server::KV_CONFIG);
    let (status, r) = put(&server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_butler_error(status, &r, 404, "reloadtask");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "Butler:\n  restServerEndpointsEnable:\n    senseStartTask: true\n  configQRS:\n    host: sense.example\n  cert:\n    clientCert: <path/to/cert/client.pem>\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Butler.cert.clientCert"), "{err}");
    assert!(err.contains("<path/to/cert/client.pem>"), "{err}");
}

#[test]
fn check_config_lists_qrs_and_certificate_expiry() {
    let certs = SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        config(&certs, 4242, &Options::default()).replace("{port}", "8080"),
    )
    .unwrap();
    let (code, out, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("start task: QRS at https://localhost:4242"),
        "{out}"
    );
    assert!(out.contains("client.pem"), "{out}");
    assert!(out.contains("root.pem"), "{out}");
    assert!(out.contains("QlikClient"), "{out}");
}

#[test]
fn a_missing_client_key_file_stops_start_up_with_the_file_named() {
    let certs = SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1);
    std::fs::remove_file(&certs.client.key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let port = support::server::free_port();
    std::fs::write(
        &path,
        config(&certs, 4242, &Options::default()).replace("{port}", &port.to_string()),
    )
    .unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = run_cli(&[
        "--config",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("Butler.cert.clientCertKey"), "{err}");
    assert!(err.contains("client_key.pem"), "{err}");
}

#[test]
fn key_value_items_are_ignored_when_the_store_is_disabled_as_in_butler() {
    let s = setup_with(
        KeyKind::RsaPkcs1,
        Options {
            kv_enabled: false,
            ..Options::default()
        },
    );
    let (status, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{A}/start"),
        json!([{"type": "keyvaluestore", "payload": {"namespace": "ns", "key": "k", "value": "v"}}]),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![A]);
    // The log line is read from the process's stderr by another thread: wait for it.
    s.server.wait_for_log("key-value items ignored", 1);
    let (status, _) = json_of(
        client()
            .get(s.server.url("/v4/keyvalues/ns?key=k"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 404, "the key-value API is not served");
}

#[test]
fn an_expired_qrs_certificate_is_refused_and_said_so() {
    let s = setup();
    let expired = s.certs.ca.issue(
        &support::pki::CertSpec::server(&["localhost"]).validity(support::pki::Validity::Expired),
    );
    s.qrs.swap_server_cert(&expired, &s.certs.ca);
    std::thread::sleep(Duration::from_millis(100));
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_butler_error(status, &r, 502, "expired");
    assert!(s.qrs.start_calls().is_empty());
}

#[test]
fn start_task_config_errors_name_the_key() {
    let certs = SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let good = config(&certs, 4242, &Options::default()).replace("{port}", "8080");
    for (broken, part) in [
        (
            good.replace("        - name: X-Qlik-User\n", "        - name: X-Other\n"),
            "Butler.configQRS.headers.static",
        ),
        (
            good.replace("authentication: certificates", "authentication: jwt"),
            "Butler.configQRS.authentication",
        ),
        (
            good.replace("port: 4242", "port: 424242"),
            "Butler.configQRS.port",
        ),
        (
            good.replace("    waitPollIntervalMs: 50", "    waitPollIntervalMs: soon"),
            "ButlerEdge.qrs.waitPollIntervalMs",
        ),
    ] {
        std::fs::write(&path, &broken).unwrap();
        let (code, _, err) = run_cli(&["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{part}: {err}");
        assert!(err.contains(part), "{part}: {err}");
    }
}

#[test]
fn starts_run_concurrently_within_the_configured_bound() {
    let s = setup_with(
        KeyKind::EcP256Pkcs8,
        Options {
            edge_qrs: "    maxConcurrentCalls: 2\n    idempotencyRetentionMs: 500\n",
            ..Options::default()
        },
    );
    let tasks: Vec<FakeTask> = (0..6)
        .map(|i| FakeTask::new(&format!("00000000-0000-4000-8000-00000000000{i}"), "t").tag("six"))
        .collect();
    s.qrs.set_tasks(tasks);
    s.qrs.add_fault(
        "/start/synchronous",
        FaultKind::Delay(Duration::from_millis(300)),
    );
    let t = Instant::now();
    let (status, r) = put(
        &s.server,
        "/v4/reloadtask/-/start",
        json!([{"type": "starttasktag", "payload": {"tag": "six"}}]),
    );
    let elapsed = t.elapsed();
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["tasksTag"].as_array().unwrap().len(), 6);
    assert_eq!(
        s.qrs.take_max_in_flight(),
        2,
        "bounded by maxConcurrentCalls"
    );
    // Two at a time (max_in_flight above): at least three rounds of 300 ms.
    assert!(elapsed >= Duration::from_millis(850), "{elapsed:?}");

    // idempotencyRetentionMs: once the answer has expired, the key starts the tasks again.
    s.qrs.clear_faults();
    s.qrs.clear_calls();
    let send = || {
        client()
            .put(s.server.url(&format!(
                "/v4/reloadtask/{}/start",
                "00000000-0000-4000-8000-000000000001"
            )))
            .header("Idempotency-Key", "short-lived")
            .header("Content-Type", "application/json")
            .body("[]")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send(), 200);
    assert_eq!(send(), 200);
    assert_eq!(s.qrs.start_calls().len(), 1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(send(), 200);
    assert_eq!(s.qrs.start_calls().len(), 2);
}

/// `GET /metrics` counts what QRS really did: a task named twice is started (and counted)
/// once, tasks QRS did not start are counted as failed.
#[test]
fn metrics_count_started_and_failed_tasks() {
    let s = setup_with(
        KeyKind::RsaPkcs1,
        Options {
            edge_qrs: "  endpointsEnable:\n    metrics: true\n",
            ..Options::default()
        },
    );
    s.qrs
        .add_fault(&format!("/qrs/task/{C}/start"), FaultKind::Status(503));
    let (status, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{A}/start"),
        json!([
            {"type": "starttasktag", "payload": {"tag": "nightly"}},
            {"type": "starttaskid", "payload": {"taskId": C}},
            {"type": "starttaskid", "payload": {"taskId": DISABLED}},
        ]),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["failed"].as_array().unwrap().len(), 2, "{r}");
    let text = client()
        .get(s.server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |series: &str| {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    // A (by id and by tag) and B (by tag): two distinct tasks started.
    assert_eq!(value("butler_edge_tasks_started_total"), 2, "{r}");
    assert_eq!(value("butler_edge_tasks_failed_total"), 2, "{r}");
    assert_eq!(value("butler_edge_qrs_unreachable_total"), 0);
    assert_eq!(
        value(r#"butler_edge_http_requests_total{endpoint="startTask",status="200"}"#),
        1
    );
}

/// Key-value items in a start request are stored before any task starts; on a disk below
/// `ButlerEdge.minFreeDiskBytes` the request is refused with 507 and QRS is never asked to
/// start anything. Without key-value items, tasks still start.
#[test]
fn low_disk_refuses_key_value_items_before_any_task_starts() {
    let s = setup_with(
        KeyKind::RsaPkcs1,
        Options {
            edge_qrs: "  minFreeDiskBytes: 1152921504606846976\n",
            ..Options::default()
        },
    );
    let (status, r) = put(
        &s.server,
        &format!("/v4/reloadtask/{A}/start"),
        json!([{"type": "keyvaluestore", "payload": {"namespace": "ns", "key": "k", "value": "v"}}]),
    );
    assert_butler_error(status, &r, 507, "ButlerEdge.minFreeDiskBytes");
    assert!(s.qrs.start_calls().is_empty(), "{:?}", s.qrs.start_calls());
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_eq!(status, 200, "{r}");
    assert_eq!(started_ids(&r["tasksId"]["started"]), vec![A]);
}

fn health(server: &Server) -> (u16, Value) {
    json_of(client().get(server.url("/health")).send().unwrap())
}

/// Polls `/health` until `pred` holds for its QRS check, or panics with the last answer.
fn wait_for_qrs_health(server: &Server, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = health(server);
        assert_eq!(status, 200, "{body}");
        if pred(&body["checks"]["qrs"]) {
            return body;
        }
        assert!(Instant::now() < deadline, "waiting for QRS {what}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn health_tells_when_qrs_last_answered_and_since_when_it_is_unreachable() {
    let s = setup_with(
        KeyKind::RsaPkcs1,
        Options {
            edge_qrs: "    healthCheckIntervalMs: 300\n  endpointsEnable:\n    health: true\n",
            ..Options::default()
        },
    );
    // With no start yet, the idle probe (GET /qrs/about, xrfkey and X-Qlik-User included)
    // finds QRS.
    let body = wait_for_qrs_health(&s.server, "seen by the probe", |q| q["status"] == "ok");
    let qrs = &body["checks"]["qrs"];
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(qrs["host"], format!("localhost:{}", s.qrs.port()), "{body}");
    assert!(qrs["lastSeen"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(qrs["lastSeenSecondsAgo"].as_u64().unwrap() < 5, "{body}");
    assert!(qrs.get("lastFailure").is_none(), "{body}");
    let about = s.qrs.calls();
    let about = about
        .iter()
        .find(|c| c.path == "/qrs/about")
        .expect("a probe call");
    assert_eq!(
        about.status, 200,
        "the probe passed QRS's xrfkey and user checks"
    );

    // QRS goes away: the probe notices without any start, and health says since when.
    s.qrs.reset_at_accept(true);
    s.qrs.drop_connections();
    let body = wait_for_qrs_health(&s.server, "unreachable", |q| q["status"] == "unreachable");
    let qrs = &body["checks"]["qrs"];
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(
        qrs["lastSeen"].is_string(),
        "the last answer is kept: {body}"
    );
    let failure = &qrs["lastFailure"];
    assert!(failure["at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("QRS at localhost"),
        "{body}"
    );
    // A start in that state fails, and is recorded as such too.
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_eq!(status, 502, "{r}");

    // Back again: the next answer (probe or start) turns it ok.
    s.qrs.reset_at_accept(false);
    let (status, r) = put(&s.server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_eq!(status, 200, "{r}");
    let body = wait_for_qrs_health(&s.server, "ok again", |q| q["status"] == "ok");
    assert_eq!(body["status"], "ok", "{body}");
    assert!(body["checks"]["qrs"]["lastFailure"].is_object(), "{body}");
}

#[test]
fn enabled_without_a_qrs_host_serves_and_answers_503_until_qrs_is_set_up() {
    // The appliance's first-boot shape: start-task on, QRS still to be filled in.
    let config = format!(
        "{}ButlerEdge:\n  endpointsEnable:\n    health: true\n",
        support::server::KV_CONFIG.replace(
            "    keyValueStore: true\n",
            "    keyValueStore: true\n    senseStartTask: true\n"
        )
    );
    let server = Server::start(&config);
    let (status, r) = put(&server, &format!("/v4/reloadtask/{A}/start"), json!([]));
    assert_butler_error(status, &r, 503, "QRS is not set up yet");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains("Butler.configQRS.host is missing"),
        "{message}"
    );
    assert!(message.contains("Butler.cert"), "{message}");
    // The same through butler_subs.qvs's POST + X-HTTP-Method-Override.
    let (status, r) = json_of(
        client()
            .post(server.url(&format!("/v4/reloadtask/{A}/start")))
            .header("X-HTTP-Method-Override", "PUT")
            .header("Content-Type", "application/json")
            .body("[]")
            .send()
            .unwrap(),
    );
    assert_butler_error(status, &r, 503, "QRS is not set up yet");
    // The key-value store works meanwhile; health says what is missing.
    let (status, _) = json_of(
        client()
            .post(server.url("/v4/keyvalues/ns"))
            .header("Content-Type", "application/json")
            .body(r#"{"key":"k","value":"v"}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201);
    let (status, body) = health(&server);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["qrs"]["status"], "not set up", "{body}");
    assert!(
        server.log().contains("QRS is not set up yet"),
        "{}",
        server.log()
    );

    // check-config accepts the file and says start-task is not ready.
    let (code, out, err) = run_cli(&["check-config", server.config_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("start task: NOT READY"), "{out}");
    // A placeholder host counts as not filled in; anything else QRS-related is checked.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "Butler:\n  restServerEndpointsEnable:\n    senseStartTask: true\n  configQRS:\n    host: <FQDN of Sense>\n",
    )
    .unwrap();
    let (code, out, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"<FQDN of Sense>\""), "{out}");
}

fn key_value_items(namespace: &str, count: usize) -> Value {
    Value::Array(
        (0..count)
            .map(|i| {
                json!({"type": "keyvaluestore",
                       "payload": {"namespace": namespace, "key": format!("k{i}"), "value": "v"}})
            })
            .collect(),
    )
}

/// Eight key-value items into a namespace limited to five keys: the start is refused, and
/// not one of the eight is stored (it used to keep keys 0–4).
#[test]
fn key_value_items_of_a_start_request_are_stored_all_or_none() {
    let certs = SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1);
    let qrs = FakeQrs::start(&certs.server, &certs.ca, fixture());
    let five_keys = config(&certs, qrs.port(), &Options::default())
        .replace("maxKeysPerNamespace: 1000", "maxKeysPerNamespace: 5");
    let server = Server::start(&five_keys);
    let api = Butler::on_port(server.port);
    let (status, body) = api.start(A, "", &key_value_items("Sales", 8).to_string());
    assert_butler_error(status, &body, 409, "No task was started");
    assert!(qrs.start_calls().is_empty(), "no task may start");
    let (status, body) = api.kv_keys("Sales");
    assert_butler_error(status, &body, 400, "Namespace not found");

    // With room for them, all are stored (also when some replace existing keys).
    let (status, body) = api.kv_post("Sales", &json!({"key": "k0", "value": "old"}));
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.start(A, "", &key_value_items("Sales", 5).to_string());
    assert_eq!(status, 200, "{body}");
    let (_, keys) = api.kv_keys("Sales");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(5), "{keys}");
    // Six would need one more key than the limit: refused, the five stay as they were.
    let (status, body) = api.start(A, "", &key_value_items("Sales", 6).to_string());
    assert_butler_error(status, &body, 409, "No task was started");
    let (_, keys) = api.kv_keys("Sales");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(5), "{keys}");
}

/// What a web page on the local network makes a visitor's browser send: an HTML form
/// (`enctype="text/plain"` can carry valid JSON, form-encoded cannot be preflighted either),
/// with the page's `Origin`. None of it writes a key or starts a task; butler_subs.qvs's
/// requests (JSON, no `Origin`) keep working, as does an origin the config allows, and with
/// `allowedHosts` a DNS-rebound name in `Host` is refused.
#[test]
fn a_cross_origin_form_post_cannot_write_keys_or_start_tasks() {
    let certs = SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1);
    let qrs = FakeQrs::start(&certs.server, &certs.ca, fixture());
    let browsers = format!(
        "{}  allowedOrigins: [\"https://Sense.corp.example\"]\n  allowedHosts: [127.0.0.1, butler-edge.corp.example]\n",
        config(&certs, qrs.port(), &Options::default())
    );
    let server = Server::start(&browsers);
    let form =
        |content_type: &str, origin: Option<&str>, host: Option<&str>, path: &str, body: &str| {
            let mut request = client()
                .post(server.url(path))
                .header("Content-Type", content_type)
                .body(body.to_string());
            if path.ends_with("/start") {
                request = request.header("X-HTTP-Method-Override", "PUT");
            }
            if let Some(origin) = origin {
                request = request.header("Origin", origin);
            }
            if let Some(host) = host {
                request = request.header("Host", host);
            }
            json_of(request.send().unwrap())
        };
    // name='{"key":"k","value":"evil","x":"' value='"}' in a text/plain form is this body:
    let kv_body = r#"{"key":"k","value":"evil","x":"="}"#;
    let start_body = r#"[{"type":"starttaskid","payload":{"taskId":"aaaaaaaa-0000-4000-8000-000000000001"},"x":"="}]"#;
    let kv = "/v4/keyvalues/Sales";
    let start = format!("/v4/reloadtask/{A}/start");
    for (origin, expected, part) in [
        (
            Some("http://evil.example"),
            403,
            "Origin http://evil.example is not allowed",
        ),
        (Some("null"), 403, "Origin null is not allowed"),
        (None, 415, "Content-Type: application/json"),
    ] {
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let (status, body) = form(content_type, origin, None, kv, kv_body);
            assert_butler_error(status, &body, expected, part);
            let (status, body) = form(content_type, origin, None, &start, start_body);
            assert_butler_error(status, &body, expected, part);
        }
    }
    // A JSON post from a web page's script is refused for its Origin too.
    let (status, body) = form(
        "application/json",
        Some("http://evil.example"),
        None,
        kv,
        kv_body,
    );
    assert_butler_error(status, &body, 403, "ButlerEdge.allowedOrigins");
    // A script's fetch() with an untyped Blob body sends no Content-Type, but an Origin.
    let (status, body) = json_of(
        client()
            .post(server.url(kv))
            .header("Origin", "http://evil.example")
            .body(kv_body)
            .send()
            .unwrap(),
    );
    assert_butler_error(status, &body, 403, "ButlerEdge.allowedOrigins");
    // DNS rebinding: the browser sends the attacker's name as Host.
    let (status, body) = form(
        "application/json",
        None,
        Some("rebind.evil.example:8080"),
        kv,
        kv_body,
    );
    assert_butler_error(status, &body, 403, "ButlerEdge.allowedHosts");
    assert!(qrs.start_calls().is_empty(), "a task was started");
    let (status, _) = Butler::on_port(server.port).kv_keys("Sales");
    assert_eq!(status, 400, "a key was written");

    // Legitimate callers: butler_subs.qvs (JSON, `charset` too), the allowed origin (any
    // case), a configured Host name, and a start with no body and no Content-Type.
    let (status, body) = form("application/json; charset=utf-8", None, None, kv, kv_body);
    assert_eq!(status, 201, "{body}");
    let (status, body) = form(
        "Application/JSON",
        Some("https://sense.corp.example"),
        Some("butler-edge.corp.example"),
        &start,
        start_body,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = json_of(
        client()
            .post(server.url(&start))
            .header("X-HTTP-Method-Override", "PUT")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
}

/// A start body of `tags`, one `starttasktag` item each.
fn tag_items(tags: impl Iterator<Item = String>) -> String {
    Value::Array(
        tags.map(|tag| json!({"type": "starttasktag", "payload": {"tag": tag}}))
            .collect(),
    )
    .to_string()
}

/// How many tag lookups the fake QRS has received.
fn tag_lookups(qrs: &FakeQrs) -> usize {
    qrs.calls()
        .iter()
        .filter(|c| c.filter().is_some_and(|f| f.contains("tags.name")))
        .count()
}

/// One request cannot flood QRS: the same tag 5,000 times is refused before any QRS call
/// (it made 5,000 lookups and listed the task 5,000 times); the same tag 100 times, in any
/// case, is looked up once and each task listed once; and while one caller keeps every QRS
/// slot busy with lookups, another caller's start is answered in about its own time (it
/// waited 12.9 s behind the burst).
#[test]
fn one_caller_cannot_flood_qrs_or_delay_another_callers_start() {
    let s = setup();
    let port = s.server.port;
    let path = "/v4/reloadtask/-/start";
    let (status, body) = put(
        &s.server,
        path,
        serde_json::from_str(&tag_items((0..5000).map(|_| "nightly".to_string()))).unwrap(),
    );
    assert_butler_error(status, &body, 400, "ButlerEdge.qrs.maxItemsPerRequest");
    assert_eq!(
        tag_lookups(&s.qrs),
        0,
        "QRS was asked for a refused request"
    );

    let repeated = (0..100).map(|i| if i % 2 == 0 { "nightly" } else { "NIGHTLY" }.to_string());
    let (status, body) = put(
        &s.server,
        path,
        serde_json::from_str(&tag_items(repeated)).unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(tag_lookups(&s.qrs), 1, "one lookup for one tag");
    assert_eq!(sorted(started_ids(&body["tasksTag"])), vec![A, B], "{body}");

    // The burst: 8 concurrent requests of 100 distinct tags each, every lookup 200 ms.
    s.qrs.add_fault(
        "/qrs/task/full",
        FaultKind::Delay(Duration::from_millis(200)),
    );
    let burst: Vec<_> = (0..8)
        .map(|r| {
            std::thread::spawn(move || {
                let body = tag_items((0..100).map(|t| format!("burst-{r}-{t}")));
                client()
                    .put(format!("http://127.0.0.1:{port}/v4/reloadtask/-/start"))
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    // Another caller (another address) starts one task by id meanwhile.
    let other = reqwest::blocking::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    let (status, body) = json_of(
        other
            .put(format!("http://127.0.0.1:{port}/v4/reloadtask/{C}/start"))
            .send()
            .unwrap(),
    );
    let waited = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(started_ids(&body["tasksId"]["started"]), vec![C]);
    let burst_lookups_then = tag_lookups(&s.qrs);
    println!(
        "another caller's start during the burst: {waited:?} ({burst_lookups_then} burst lookups done by then)"
    );
    assert!(
        waited < Duration::from_secs(3),
        "another caller's start waited {waited:?} behind one caller's burst"
    );
    // The burst itself is answered too: in full, or 504 at its request deadline.
    for b in burst {
        let status = b.join().unwrap().unwrap();
        assert!(matches!(status, 200 | 504), "burst request: {status}");
    }
}

/// A task id QRS answers with goes into the start call's URL path only when it is a GUID:
/// a repository entry whose id is `../about` (a broken or hostile QRS) is reported as
/// failed, and no request to a path built from it is sent.
#[test]
fn a_task_id_from_qrs_that_is_not_a_guid_is_never_put_in_a_url() {
    let s = setup();
    let mut tasks = fixture();
    tasks.push(FakeTask::new("../about", "Not a GUID").tag("odd"));
    s.qrs.set_tasks(tasks);
    let (status, body) = put(
        &s.server,
        "/v4/reloadtask/-/start",
        json!([{"type": "starttasktag", "payload": {"tag": "odd"}}]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failed"][0]["taskId"], json!("../about"), "{body}");
    let reason = body["failed"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not a GUID"), "{reason}");
    assert!(
        s.qrs.calls().iter().all(|c| c.method != "POST"),
        "a start was sent: {:?}",
        s.qrs.calls().iter().map(|c| &c.path).collect::<Vec<_>>()
    );
}
