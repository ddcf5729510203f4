//! A QRS fault storm: 16 callers start a task over and over while the fake QRS
//! turns slow, hangs, resets connections, answers 503, and presents a
//! certificate from an untrusted CA, one after the other.
//!
//! Every call must be answered within its bound (two QRS requests of at most
//! `requestTimeoutMs`, plus a connect) with Butler's shapes: 200 with the task in
//! `started` or `failed`, or a 502 naming QRS; never a 500 or a dropped
//! connection. Once every caller has its answer, no further start call reaches
//! QRS (nothing is started after callers were told the outcome), the service
//! recovers at once when QRS does, and its open file descriptors and its async
//! runtime's alive tasks (`butler_edge_runtime_alive_tasks` in `/metrics`) are back
//! to the baseline plus at most the QRS connection pool.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_qrs::{FakeQrs, FakeTask, FaultKind, butler_qrs_yaml};
use support::pki::{Ca, KeyKind, SenseCerts};
use support::raw;
use support::server::{Server, json_of};

const TASK: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const CONNECT_TIMEOUT_MS: u64 = 500;
const REQUEST_TIMEOUT_MS: u64 = 1000;
const MAX_CONCURRENT_CALLS: usize = 16;

fn config(certs: &SenseCerts, qrs_port: u16) -> String {
    format!(
        "\
Butler:
  logLevel: warn
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: {{port}}
  restServerEndpointsEnable:
    senseStartTask: true
{qrs}ButlerEdge:
  qrs:
    connectTimeoutMs: {CONNECT_TIMEOUT_MS}
    requestTimeoutMs: {REQUEST_TIMEOUT_MS}
    maxConcurrentCalls: {MAX_CONCURRENT_CALLS}
  endpointsEnable:
    metrics: true
",
        qrs = butler_qrs_yaml(qrs_port, &certs.client.cert, &certs.client.key, &certs.root),
    )
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Established TCP connections to `port` on loopback (only butler-edge connects
/// to the fake QRS), from the client side.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(2).is_some_and(|r| r.ends_with(&remote)) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// How one call ended.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    started: u64,
    failed: u64,
    bad_gateway: u64,
}

fn start_once(
    http: &reqwest::blocking::Client,
    port: u16,
) -> Result<(Duration, &'static str), String> {
    let t = Instant::now();
    let response = http
        .put(format!(
            "http://127.0.0.1:{port}/v4/reloadtask/{TASK}/start"
        ))
        .header("Content-Type", "application/json")
        .body("[]")
        .send()
        .map_err(|e| format!("no answer: {e}"))?;
    let (status, body): (u16, Value) = json_of(response);
    let took = t.elapsed();
    let kind = match status {
        200 if body["tasksId"]["started"]
            .as_array()
            .is_some_and(|s| s.iter().any(|t| t["taskId"] == TASK)) =>
        {
            "started"
        }
        200 if body["failed"].as_array().is_some_and(|f| {
            f.iter()
                .any(|t| t["taskId"] == TASK && t["reason"].is_string())
        }) =>
        {
            "failed"
        }
        502 if body["statusCode"] == 502
            && body["message"]
                .as_str()
                .is_some_and(|m| m.contains("localhost")) =>
        {
            "bad gateway"
        }
        _ => return Err(format!("unexpected answer {status}: {body}")),
    };
    Ok((took, kind))
}

#[test]
fn every_start_is_answered_in_time_through_a_qrs_fault_storm() {
    let _alone = support::alone();
    let certs = SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1);
    let qrs = FakeQrs::start(
        &certs.server,
        &certs.ca,
        vec![FakeTask::new(TASK, "Reload A")],
    );
    let server = Server::start(&config(&certs, qrs.port()));
    let port = server.port;
    let http = support::server::client();
    // Warm: one good start, the QRS connection pool in use.
    assert_eq!(start_once(&http, port).map(|r| r.1), Ok("started"));
    let baseline_fds = open_fds(server.pid());
    let baseline_qrs = connections_to(qrs.port());
    let baseline_tasks = raw::metric(port, "butler_edge_runtime_alive_tasks") as usize;

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Its own client: its keep-alive connections close when the caller ends.
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("http client");
                let mut tally = Tally::default();
                let mut slowest = Duration::ZERO;
                let mut last_answer = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let (took, kind) = start_once(&http, port).unwrap_or_else(|e| panic!("{e}"));
                    last_answer = Instant::now();
                    slowest = slowest.max(took);
                    match kind {
                        "started" => tally.started += 1,
                        "failed" => tally.failed += 1,
                        _ => tally.bad_gateway += 1,
                    }
                }
                (tally, slowest, last_answer)
            })
        })
        .collect();

    let untrusted = Ca::new("Someone else's CA").server_cert(&["localhost"]);
    let ca = &certs.ca;
    type Phase<'a> = (&'a str, Box<dyn Fn(&FakeQrs) + 'a>);
    let phases: Vec<Phase> = vec![
        (
            "slow (300 ms per call)",
            Box::new(|q: &FakeQrs| {
                q.add_fault("/qrs/", FaultKind::Delay(Duration::from_millis(300)))
            }),
        ),
        (
            "start calls answered 503",
            Box::new(|q: &FakeQrs| q.add_fault("/start", FaultKind::Status(503))),
        ),
        (
            "every call answered 500",
            Box::new(|q: &FakeQrs| q.add_fault("/qrs/", FaultKind::Status(500))),
        ),
        (
            "start calls reset",
            Box::new(|q: &FakeQrs| q.add_fault("/start", FaultKind::Reset)),
        ),
        (
            "every call reset",
            Box::new(|q: &FakeQrs| q.add_fault("/qrs/", FaultKind::Reset)),
        ),
        (
            "start calls hang",
            Box::new(|q: &FakeQrs| q.add_fault("/start", FaultKind::Hang)),
        ),
        (
            "every call hangs",
            Box::new(|q: &FakeQrs| q.add_fault("/qrs/", FaultKind::Hang)),
        ),
        (
            "connections reset at accept",
            Box::new(|q: &FakeQrs| q.reset_at_accept(true)),
        ),
        (
            "TLS handshake hangs",
            Box::new(|q: &FakeQrs| q.hang_at_accept(true)),
        ),
        (
            "certificate from an untrusted CA",
            Box::new(|q: &FakeQrs| q.swap_server_cert(&untrusted, ca)),
        ),
        ("healthy again", Box::new(|_: &FakeQrs| {})),
    ];
    for (name, apply) in &phases {
        qrs.clear_faults();
        qrs.reset_at_accept(false);
        qrs.hang_at_accept(false);
        // Also closes every open connection, as a QRS restart would.
        qrs.swap_server_cert(&certs.server, ca);
        apply(&qrs);
        println!("QRS: {name}");
        std::thread::sleep(Duration::from_millis(1500));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    let mut slowest = Duration::ZERO;
    let mut all_answered = Instant::now() - Duration::from_secs(3600);
    for caller in callers {
        let (tally, slow, last) = caller.join().expect("caller thread");
        total.started += tally.started;
        total.failed += tally.failed;
        total.bad_gateway += tally.bad_gateway;
        slowest = slowest.max(slow);
        all_answered = all_answered.max(last);
    }
    let starts_when_answered = qrs.start_calls().len();
    // Hung QRS calls are abandoned by their timeouts; nothing may follow them.
    std::thread::sleep(Duration::from_millis(2 * REQUEST_TIMEOUT_MS + 500));
    let starts_later = qrs.start_calls().len();
    let late: Vec<_> = qrs
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/start/synchronous") && c.at > all_answered)
        .collect();

    // Healthy QRS: answered at once.
    let (took, kind) = start_once(&http, port).expect("after the storm");
    // The callers' connections close on the server's side too.
    std::thread::sleep(Duration::from_millis(500));
    let after_fds = open_fds(server.pid());
    let after_qrs = connections_to(qrs.port());
    let after_tasks = raw::metric(port, "butler_edge_runtime_alive_tasks") as usize;
    let bound = Duration::from_millis(2 * REQUEST_TIMEOUT_MS + 2 * CONNECT_TIMEOUT_MS)
        + Duration::from_millis(1500);
    println!(
        "QRS storm: {} started, {} reported failed, {} answered 502; slowest answer {slowest:?} \
         (bound {bound:?}); start calls at QRS {starts_when_answered} when all callers had \
         their answer, {starts_later} later; first start after the storm {kind} in {took:?}; \
         server fds {baseline_fds} before ({baseline_qrs} to QRS), {after_fds} after \
         ({after_qrs} to QRS, kept for reuse); runtime tasks {baseline_tasks} before, \
         {after_tasks} after",
        total.started, total.failed, total.bad_gateway
    );
    assert!(slowest < bound, "a caller waited {slowest:?}");
    assert!(
        total.started > 0 && total.failed > 0 && total.bad_gateway > 0,
        "{total:?}"
    );
    assert!(
        late.is_empty(),
        "start calls reached QRS after every caller was answered: {late:?}"
    );
    assert_eq!(starts_later, starts_when_answered);
    assert_eq!(kind, "started");
    assert!(took < Duration::from_secs(1), "recovery took {took:?}");
    // The callers' connections are closed; what may remain beyond the baseline is
    // the QRS connection pool (kept idle for reuse, up to 64). Thousands of reset
    // and hung QRS connections went by: every other descriptor is back.
    assert!(after_qrs <= 64, "{after_qrs} connections to QRS");
    assert!(
        after_fds - after_qrs <= baseline_fds - baseline_qrs + 2,
        "descriptors leak: {after_fds} open after the storm ({after_qrs} to QRS), \
         {baseline_fds} before ({baseline_qrs} to QRS)"
    );
    // Each pooled QRS connection keeps one task; every request, caller connection, QRS
    // call and timer of the storm is gone.
    assert!(
        after_tasks.saturating_sub(after_qrs) <= baseline_tasks.saturating_sub(baseline_qrs) + 2,
        "runtime tasks leak: {after_tasks} alive after the storm ({after_qrs} QRS connections), \
         {baseline_tasks} before ({baseline_qrs} QRS connections)"
    );
}
