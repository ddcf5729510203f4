//! A fake Qlik Sense Repository Service (QRS) for black-box tests — the one stand-in the project
//! allows, because Sense cannot run here. It follows the QRS documentation where our client
//! depends on it:
//!
//! - HTTPS with a client certificate required (issued by its own test CA, as Sense's exported
//!   client.pem is issued by the Sense root);
//! - the xrfkey rule: `xrfkey` query parameter and `X-Qlik-Xrfkey` header, both present, equal and
//!   16 characters, else 403; `X-Qlik-User` required;
//! - `GET /qrs/task?filter=…` (condensed) and `GET /qrs/task/full?filter=…` with QRS filter syntax
//!   (`eq`, `and`, `or`, parentheses, `'…'` strings with backslash escapes, `\'` and `\\`, as a
//!   live QRS parses them; a doubled quote `''` or a double-quoted value is a 400 "Cannot parse
//!   the expression", as QRS answers), the query percent-decoded
//!   the way .NET does it (`+` is a space); a condition on a collection (tags, custom properties)
//!   matches when any element matches, each condition on its own, as QRS does;
//! - `POST /qrs/task/{id}/start/synchronous` → 201 `{"value":"<session id>"}`, the all-zero id for a
//!   disabled task, 404 for an unknown task;
//! - `GET /qrs/about` → 200 with the build information QRS reports (`buildVersion`, …);
//! - `GET /qrs/executionsession/{id}` → 200 while the task "runs", 404 once finished;
//!   `GET /qrs/executionresult?filter=ExecutionId eq <id>` → the execution result with QRS's
//!   numeric status (2 Started, 7 FinishedSuccess, 8 FinishedFail, …).
//!
//! Every request is recorded. Faults can be switched on per path: delay, 5xx, connection reset
//! after the request was received, hang; plus refusing TLS handshakes by resetting at accept and
//! swapping the server certificate.
//!
//! The server runs on its own runtime in a background thread, so tests can drive it from sync or
//! async code alike.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::pki::{Ca, Issued};

pub const ZERO_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// The `Butler.configQRS` and `Butler.cert` sections (indented to sit under `Butler:`) that
/// point butler-edge at a fake QRS on `port` with Sense-style certificate files, as a Sense
/// admin would write them (certificates, the service account header, verification on).
pub fn butler_qrs_yaml(
    port: u16,
    client_cert: &std::path::Path,
    client_key: &std::path::Path,
    root: &std::path::Path,
) -> String {
    format!(
        "  configQRS:
    authentication: certificates
    host: localhost
    useSSL: true
    port: {port}
    headers:
      static:
        - name: X-Qlik-User
          value: UserDirectory=Internal;UserId=sa_repository
    rejectUnauthorized: true
  cert:
    clientCert: {}
    clientCertKey: {}
    clientCertCA: {}
",
        client_cert.display(),
        client_key.display(),
        root.display()
    )
}

/// QRS execution status codes (ExecutionResult.status).
pub mod status {
    pub const STARTED: i64 = 2;
    pub const FINISHED_SUCCESS: i64 = 7;
    pub const FINISHED_FAIL: i64 = 8;
}

/// A task in the fake repository.
#[derive(Clone, Debug)]
pub struct FakeTask {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub custom_properties: Vec<(String, String)>,
    pub enabled: bool,
    /// How long an execution of this task "runs" before its session disappears.
    pub run_for: Duration,
    /// ExecutionResult.status once finished.
    pub final_status: i64,
}

impl FakeTask {
    pub fn new(id: &str, name: &str) -> FakeTask {
        FakeTask {
            id: id.to_string(),
            name: name.to_string(),
            tags: Vec::new(),
            custom_properties: Vec::new(),
            enabled: true,
            run_for: Duration::from_millis(0),
            final_status: status::FINISHED_SUCCESS,
        }
    }
    pub fn tag(mut self, tag: &str) -> FakeTask {
        self.tags.push(tag.to_string());
        self
    }
    pub fn cp(mut self, name: &str, value: &str) -> FakeTask {
        self.custom_properties
            .push((name.to_string(), value.to_string()));
        self
    }
    pub fn disabled(mut self) -> FakeTask {
        self.enabled = false;
        self
    }
    pub fn runs(mut self, run_for: Duration, final_status: i64) -> FakeTask {
        self.run_for = run_for;
        self.final_status = final_status;
        self
    }
}

/// One request the fake QRS received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string.
    pub raw_query: String,
    /// Decoded query parameters.
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub status: u16,
    pub at: Instant,
    /// Which TLS connection (in accept order) carried it.
    pub connection: usize,
    /// What the start probe returned, for start calls when a probe is set.
    pub probe: Option<String>,
    /// How long the fake took to answer (its own delay included), for overhead figures.
    pub handled_in: Duration,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn filter(&self) -> Option<&str> {
        self.query.get("filter").map(String::as_str)
    }
}

/// What a fault does.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer normally after this delay.
    Delay(Duration),
    /// Answer with this status and a QRS-style text body instead of handling the request.
    Status(u16),
    /// Read the request, then reset the TCP connection (RST) without answering.
    Reset,
    /// Read the request and never answer.
    Hang,
}

/// A fault applied to requests whose path contains `path_contains` (all requests when empty).
#[derive(Clone, Debug)]
pub struct Fault {
    pub path_contains: String,
    pub kind: FaultKind,
}

/// An async hook run when a start call arrives, before QRS answers; its result is recorded
/// in the call (used to observe what the caller had committed before starting a task).
pub type StartProbe =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

#[derive(Clone)]
struct Execution {
    task_id: String,
    started: Instant,
    run_for: Duration,
    final_status: i64,
}

struct State {
    tasks: Vec<FakeTask>,
    calls: Vec<Call>,
    faults: Vec<Fault>,
    executions: HashMap<String, Execution>,
    server_config: Arc<rustls::ServerConfig>,
    reset_at_accept: bool,
    hang_at_accept: bool,
    start_probe: Option<StartProbe>,
    /// Where each start QRS performed is appended as a JSON line (the runnable fake's
    /// `--record`).
    record: Option<std::fs::File>,
}

struct Shared {
    state: Mutex<State>,
    connections: AtomicUsize,
    /// Bumped to close every open connection (as a QRS restart would).
    generation: tokio::sync::watch::Sender<u64>,
    in_flight: AtomicUsize,
    /// The most requests handled at once so far.
    max_in_flight: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake QRS. Stops when dropped.
pub struct FakeQrs {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Builds a rustls server config presenting `server` and requiring a client certificate
/// issued by `client_ca`.
pub fn server_config(server: &Issued, client_ca: &Ca) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca.cert_pem.as_bytes()) {
        roots
            .add(cert.expect("CA PEM"))
            .expect("CA cert into root store");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("server cert PEM");
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("server key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server cert and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

impl FakeQrs {
    /// Starts a fake QRS on 127.0.0.1 (ephemeral port) presenting `server` and requiring client
    /// certificates from `client_ca`, serving `tasks`.
    pub fn start(server: &Issued, client_ca: &Ca, tasks: Vec<FakeTask>) -> FakeQrs {
        FakeQrs::listen("127.0.0.1:0", server, client_ca, tasks)
            .expect("fake QRS: bind 127.0.0.1:0")
    }

    /// As [`FakeQrs::start`], on `addr` (`host:port`; port 0 picks one).
    pub fn listen(
        addr: &str,
        server: &Issued,
        client_ca: &Ca,
        tasks: Vec<FakeTask>,
    ) -> std::io::Result<FakeQrs> {
        let config = server_config(server, client_ca);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tasks,
                calls: Vec::new(),
                faults: Vec::new(),
                executions: HashMap::new(),
                server_config: config,
                reset_at_accept: false,
                hang_at_accept: false,
                start_probe: None,
                record: None,
            }),
            connections: AtomicUsize::new(0),
            generation: tokio::sync::watch::Sender::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let stop = Arc::new(Notify::new());
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fake QRS runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("fake QRS listener");
                    loop {
                        tokio::select! {
                            _ = stop.notified() => break,
                            accepted = listener.accept() => {
                                let Ok((tcp, _)) = accepted else { continue };
                                tokio::spawn(serve_connection(tcp, shared.clone()));
                            }
                        }
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })
        };
        Ok(FakeQrs {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// Task ids of every start call received (whatever the answer, faults included), in order.
    pub fn start_calls(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/start/synchronous"))
            .filter_map(|c| {
                c.path
                    .strip_prefix("/qrs/task/")
                    .and_then(|p| p.strip_suffix("/start/synchronous"))
                    .map(str::to_string)
            })
            .collect()
    }

    /// TLS connections accepted so far (handshakes attempted).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests currently being handled (e.g. hanging).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests handled at once since the last call (which resets it).
    pub fn take_max_in_flight(&self) -> usize {
        self.shared.max_in_flight.swap(0, Ordering::SeqCst)
    }

    pub fn set_tasks(&self, tasks: Vec<FakeTask>) {
        self.shared.lock().tasks = tasks;
    }

    /// Adds a fault; the first fault whose path matches a request applies.
    pub fn add_fault(&self, path_contains: &str, kind: FaultKind) {
        self.shared.lock().faults.push(Fault {
            path_contains: path_contains.to_string(),
            kind,
        });
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Resets every new TCP connection at accept, before any TLS is spoken.
    pub fn reset_at_accept(&self, on: bool) {
        self.shared.lock().reset_at_accept = on;
    }

    /// Accepts new TCP connections but never answers the TLS handshake (a hung QRS host).
    pub fn hang_at_accept(&self, on: bool) {
        self.shared.lock().hang_at_accept = on;
    }

    /// Closes every open connection, as a QRS restart does.
    pub fn drop_connections(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Presents a different certificate from now on and closes open connections (a
    /// certificate change means a QRS restart).
    pub fn swap_server_cert(&self, server: &Issued, client_ca: &Ca) {
        self.shared.lock().server_config = server_config(server, client_ca);
        self.drop_connections();
    }

    /// Appends one JSON object per line to `file` for every start QRS performs (answered 201):
    /// `taskId`, `taskName`, `executionSessionId` (the all-zero id for a disabled task), `time`
    /// (RFC 3339, UTC) and `unixMs`, flushed per line so another process can follow it.
    pub fn record_starts_to(&self, file: std::fs::File) {
        self.shared.lock().record = Some(file);
    }

    pub fn set_start_probe(&self, probe: StartProbe) {
        self.shared.lock().start_probe = Some(probe);
    }
}

impl Drop for FakeQrs {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_connection(tcp: tokio::net::TcpStream, shared: Arc<Shared>) {
    let connection = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let (config, reset, hang) = {
        let s = shared.lock();
        (s.server_config.clone(), s.reset_at_accept, s.hang_at_accept)
    };
    let _ = tcp.set_nodelay(true);
    // Zero linger makes dropping the socket send RST instead of FIN: used for both resets.
    let _ = tcp.set_zero_linger();
    if reset {
        drop(tcp);
        return;
    }
    if hang {
        let mut generation = shared.generation.subscribe();
        let _ = generation.changed().await;
        return;
    }
    let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await else {
        return;
    };
    let reset_now = Arc::new(Notify::new());
    let mut generation = shared.generation.subscribe();
    let service = {
        let shared = shared.clone();
        let reset_now = reset_now.clone();
        hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            let reset_now = reset_now.clone();
            async move {
                let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let resp = handle(req, &shared, connection, &reset_now).await;
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection (and its zero-linger socket) resets it.
        _ = reset_now.notified() => {}
        _ = generation.changed() => {}
    }
}

fn text(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

async fn handle(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    connection: usize,
    reset_now: &Notify,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let query = parse_query(&raw_query);
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut call = Call {
        method: method.clone(),
        path: path.clone(),
        raw_query,
        query: query.clone(),
        headers: headers.clone(),
        status: 0,
        at: Instant::now(),
        connection,
        probe: None,
        handled_in: Duration::ZERO,
    };

    let fault = {
        let s = shared.lock();
        s.faults
            .iter()
            .find(|f| path.contains(&f.path_contains))
            .map(|f| f.kind.clone())
    };
    match fault {
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Status(code)) => {
            call.status = code;
            shared.lock().calls.push(call);
            return text(code, "Internal server error (injected by fake QRS)");
        }
        Some(FaultKind::Reset) => {
            shared.lock().calls.push(call);
            reset_now.notify_one();
            return std::future::pending().await;
        }
        Some(FaultKind::Hang) => {
            shared.lock().calls.push(call);
            return std::future::pending().await;
        }
        None => {}
    }

    // The xrfkey rule (QRS answers 403 when it is missing or the two differ).
    let xrf_query = query.get("xrfkey");
    let xrf_header = headers.get("x-qlik-xrfkey");
    let xrf_ok =
        matches!((xrf_query, xrf_header), (Some(q), Some(h)) if q == h && q.chars().count() == 16);
    let response = if !xrf_ok {
        text(
            403,
            "XSRF prevention check failed. Possible XSRF discovered.",
        )
    } else if !headers.contains_key("x-qlik-user") {
        text(403, "Missing X-Qlik-User header")
    } else {
        route(&method, &path, &query, shared, &mut call).await
    };
    call.status = response.status().as_u16();
    call.handled_in = call.at.elapsed();
    shared.lock().calls.push(call);
    response
}

async fn route(
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    shared: &Arc<Shared>,
    call: &mut Call,
) -> Response<Full<Bytes>> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["qrs", "about"]) => json_response(
            200,
            &json!({"buildVersion": "14.173.4.0", "buildDate": "9/20/2013 10:09:00 AM",
                    "databaseProvider": "Devart.Data.PostgreSql", "nodeType": 1,
                    "sharedPersistence": true, "requiresBootstrap": false,
                    "singleNodeOnly": false, "schemaPath": "About"}),
        ),
        ("GET", ["qrs", "task"]) | ("GET", ["qrs", "task", "full"]) => {
            let full = segments.len() == 3;
            let filter = match query.get("filter").map(|f| parse_filter(f)).transpose() {
                Ok(f) => f,
                Err(e) => return cannot_parse(&e),
            };
            let s = shared.lock();
            let tasks: Vec<Value> = s
                .tasks
                .iter()
                .filter(|t| filter.as_ref().is_none_or(|f| task_matches(f, t)))
                .map(|t| {
                    if full {
                        task_full(t)
                    } else {
                        task_condensed(t)
                    }
                })
                .collect();
            json_response(200, &Value::Array(tasks))
        }
        ("POST", ["qrs", "task", id, "start", "synchronous"]) => {
            let task = shared
                .lock()
                .tasks
                .iter()
                .find(|t| t.id.eq_ignore_ascii_case(id))
                .cloned();
            let Some(task) = task else {
                return text(404, &format!("Cannot find task with id {id}"));
            };
            let probe = shared.lock().start_probe.clone();
            if let Some(probe) = probe {
                call.probe = Some(probe(task.id.clone()).await);
            }
            if !task.enabled {
                record_start(shared, &task, ZERO_GUID);
                return json_response(201, &json!({ "value": ZERO_GUID }));
            }
            let session = random_guid();
            record_start(shared, &task, &session);
            shared.lock().executions.insert(
                session.clone(),
                Execution {
                    task_id: task.id.clone(),
                    started: Instant::now(),
                    run_for: task.run_for,
                    final_status: task.final_status,
                },
            );
            json_response(201, &json!({ "value": session }))
        }
        ("GET", ["qrs", "executionsession", id]) => {
            let s = shared.lock();
            match s.executions.get(*id) {
                Some(e) if e.started.elapsed() < e.run_for => json_response(
                    200,
                    &json!({"id": id, "reloadTask": {"id": e.task_id}, "schemaPath": "ExecutionSession"}),
                ),
                _ => text(404, "Not found"),
            }
        }
        ("GET", ["qrs", "executionresult"]) => {
            let filter = match query.get("filter").map(|f| parse_filter(f)).transpose() {
                Ok(f) => f,
                Err(e) => return cannot_parse(&e),
            };
            let s = shared.lock();
            let results: Vec<Value> = s
                .executions
                .iter()
                .filter(|(session, _)| {
                    filter
                        .as_ref()
                        .is_none_or(|f| execution_matches(f, session))
                })
                .map(|(session, e)| {
                    let finished = e.started.elapsed() >= e.run_for;
                    json!({
                        "id": random_guid(),
                        "executionID": session,
                        "taskID": e.task_id,
                        "status": if finished { e.final_status } else { status::STARTED },
                        "duration": if finished { e.run_for.as_millis() as u64 } else { 0 },
                        "details": [],
                        "schemaPath": "ExecutionResult",
                    })
                })
                .collect();
            json_response(200, &Value::Array(results))
        }
        _ => text(404, &format!("No such QRS endpoint: {method} {path}")),
    }
}

fn record_start(shared: &Shared, task: &FakeTask, session: &str) {
    use std::io::Write;
    let mut state = shared.lock();
    let Some(file) = state.record.as_mut() else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let line = json!({
        "taskId": task.id,
        "taskName": task.name,
        "executionSessionId": session,
        "time": now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "unixMs": (now.unix_timestamp_nanos() / 1_000_000) as u64,
    });
    // One write per line, so a reader never sees half a record; File is unbuffered.
    if let Err(e) = file.write_all(format!("{line}\n").as_bytes()) {
        eprintln!("fake QRS: cannot append to the start record: {e}");
    }
}

fn task_condensed(t: &FakeTask) -> Value {
    json!({ "id": t.id, "name": t.name, "privileges": null })
}

fn task_full(t: &FakeTask) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "taskType": 0,
        "enabled": t.enabled,
        "tags": t.tags.iter().map(|n| json!({"id": random_guid(), "name": n, "privileges": null})).collect::<Vec<_>>(),
        "customProperties": t.custom_properties.iter().map(|(n, v)| json!({
            "id": random_guid(),
            "value": v,
            "definition": {"id": random_guid(), "name": n, "valueType": "Text", "privileges": null},
        })).collect::<Vec<_>>(),
        "schemaPath": "ReloadTask",
    })
}

fn random_guid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Decodes a query string as .NET does: `+` is a space, `%XX` a byte, then UTF-8.
pub fn parse_query(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed QRS filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq(String, String),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Str(String),
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            tokens.push(Token::Open);
            i += 1;
        } else if c == ')' {
            tokens.push(Token::Close);
            i += 1;
        } else if c == '\'' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated string in {s:?}")),
                    // A backslash takes the next character literally (`\'`, `\\`).
                    Some('\\') => match chars.get(i + 1) {
                        Some(c) => {
                            value.push(*c);
                            i += 2;
                        }
                        None => return Err(format!("unterminated string in {s:?}")),
                    },
                    // QRS does not read OData's doubled quote as an escape: `'a''b'` is two
                    // literals in a row, which its parser rejects.
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        return Err(format!(
                            "a literal follows a literal at {}: escape a quote as \\' in {s:?}",
                            i + 1
                        ));
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Str(value));
        } else if c == '"' {
            return Err(format!(
                "double-quoted values are not literals at {i}: quote with ' in {s:?}"
            ));
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"()'\"".contains(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        }
    }
    Ok(tokens)
}

/// QRS's answer to a filter it cannot parse.
fn cannot_parse(detail: &str) -> Response<Full<Bytes>> {
    text(400, &format!("Cannot parse the expression ({detail})"))
}

/// Parses a QRS filter: `or` binds looser than `and`; operands are `field eq value`.
pub fn parse_filter(s: &str) -> Result<Filter, String> {
    let tokens = tokenize(s)?;
    let mut pos = 0;
    let f = parse_or(&tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err(format!("unexpected {:?} in {s:?}", tokens[pos]));
    }
    Ok(f)
}

fn parse_or(t: &[Token], pos: &mut usize) -> Result<Filter, String> {
    let mut left = parse_and(t, pos)?;
    while matches!(t.get(*pos), Some(Token::Word(w)) if w.eq_ignore_ascii_case("or")) {
        *pos += 1;
        let right = parse_and(t, pos)?;
        left = Filter::Or(Box::new(left), Box::new(right));
    }
    Ok(left)
}

fn parse_and(t: &[Token], pos: &mut usize) -> Result<Filter, String> {
    let mut left = parse_atom(t, pos)?;
    while matches!(t.get(*pos), Some(Token::Word(w)) if w.eq_ignore_ascii_case("and")) {
        *pos += 1;
        let right = parse_atom(t, pos)?;
        left = Filter::And(Box::new(left), Box::new(right));
    }
    Ok(left)
}

fn parse_atom(t: &[Token], pos: &mut usize) -> Result<Filter, String> {
    match t.get(*pos) {
        Some(Token::Open) => {
            *pos += 1;
            let f = parse_or(t, pos)?;
            if t.get(*pos) != Some(&Token::Close) {
                return Err("missing )".to_string());
            }
            *pos += 1;
            Ok(f)
        }
        Some(Token::Word(field)) => {
            let field = field.clone();
            match t.get(*pos + 1) {
                Some(Token::Word(op)) if op.eq_ignore_ascii_case("eq") => {}
                other => return Err(format!("expected eq after {field}, found {other:?}")),
            }
            let value = match t.get(*pos + 2) {
                Some(Token::Str(v)) => v.clone(),
                Some(Token::Word(w)) => w.clone(),
                other => {
                    return Err(format!(
                        "expected a value after {field} eq, found {other:?}"
                    ));
                }
            };
            *pos += 3;
            Ok(Filter::Eq(field, value))
        }
        other => Err(format!("expected a condition, found {other:?}")),
    }
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn task_matches(f: &Filter, t: &FakeTask) -> bool {
    match f {
        Filter::And(a, b) => task_matches(a, t) && task_matches(b, t),
        Filter::Or(a, b) => task_matches(a, t) || task_matches(b, t),
        Filter::Eq(field, value) => match field.as_str() {
            "id" => is_guid(value) && t.id.eq_ignore_ascii_case(value),
            "name" => &t.name == value,
            "tags.name" => t.tags.iter().any(|n| n == value),
            "customProperties.definition.name" => {
                t.custom_properties.iter().any(|(n, _)| n == value)
            }
            "customProperties.value" => t.custom_properties.iter().any(|(_, v)| v == value),
            _ => false,
        },
    }
}

fn execution_matches(f: &Filter, session: &str) -> bool {
    match f {
        Filter::And(a, b) => execution_matches(a, session) && execution_matches(b, session),
        Filter::Or(a, b) => execution_matches(a, session) || execution_matches(b, session),
        Filter::Eq(field, value) => {
            field.eq_ignore_ascii_case("ExecutionId") && session.eq_ignore_ascii_case(value)
        }
    }
}
