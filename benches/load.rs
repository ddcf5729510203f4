//! The load benchmark: `cargo bench --bench load` (see README, "Performance").
//!
//! Builds the release binary (cargo does, for the bench profile), starts it on
//! loopback with a temporary data directory pinned to CPU 0 (`taskset -c 0`), pins
//! itself (the load generator, and the fake QRS stand-in) to CPU 1, and drives each
//! workload over kept-alive HTTP/1.1 connections written on hyper: a warm-up, then
//! a fixed measured duration, latencies in an `hdrhistogram`. Prints one table row
//! per workload and connection count, with the server's CPU seconds and peak RSS
//! (`VmHWM`, reset before each row), then the footprint figures.
//!
//! Options (after `--`):
//!   --duration S      measured seconds per row (default 5), --warmup S (default 1)
//!   --conns LIST      connection counts (default 1,16,64,256)
//!   --workloads LIST  ping,read,write,mix,bigwrite,bigread,longkey,start,start0,connect
//!                     (default all; the big-value ones run at no more than 16 connections)
//!   --quick           1 s rows, 1,64 connections, footprint without the 1M-key step
//!   --no-footprint, --no-nginx, --no-tls
//!   --url URL         also drive another server at URL (http or https) in the same
//!                     run, after butler-edge's own rows; with --ca FILE (trust),
//!                     --cert FILE --key FILE (client certificate), --pid PID (to
//!                     report its CPU and RSS). Workloads that server does not serve
//!                     show as errors.
//!   --only-url        drive only the --url server (no butler-edge, nginx or footprint)
//!
//! nginx, when installed, is measured the same way as a ceiling (`return 200`, one
//! worker on CPU 0, plain and TLS).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::fake_qrs::{FakeQrs, FakeTask, FaultKind, butler_qrs_yaml};
use support::pki::{Ca, KeyKind};
use tokio::net::TcpStream;

const TASK_ID: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const READ_KEYS: usize = 10_000;
const VALUE_64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Butler's envelope: a value that nearly fills its 1 MB body, a key of 4,000 characters.
const BIG_VALUE_BYTES: usize = 1_000_000;
const LONG_KEY_CHARS: usize = 4_000;
const LONG_KEY_VALUE_BYTES: usize = 200_000;
/// 1 MB values preloaded for the big-read workload.
const BIG_READ_KEYS: usize = 32;
/// The big-value workloads' connection counts are capped: each request carries up to 1 MB,
/// and what they measure (the store with such values) shows at a few connections.
const BIG_MAX_CONNS: usize = 16;

// ---------------------------------------------------------------- options

struct Options {
    duration: Duration,
    warmup: Duration,
    conns: Vec<usize>,
    workloads: Vec<Workload>,
    footprint: bool,
    million: bool,
    nginx: bool,
    tls: bool,
    url: Option<String>,
    only_url: bool,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    pid: Option<u32>,
}

fn options() -> Options {
    let mut o = Options {
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        conns: vec![1, 16, 64, 256],
        workloads: Workload::ALL.to_vec(),
        footprint: true,
        million: true,
        nginx: true,
        tls: true,
        url: None,
        only_url: false,
        ca: None,
        cert: None,
        key: None,
        pid: None,
    };
    let mut args = std::env::args().skip(1);
    let secs =
        |v: Option<String>| Duration::from_secs_f64(v.and_then(|v| v.parse().ok()).unwrap_or(1.0));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--duration" => o.duration = secs(args.next()),
            "--warmup" => o.warmup = secs(args.next()),
            "--conns" => {
                o.conns = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|c| c.trim().parse().ok())
                    .collect()
            }
            "--workloads" => {
                o.workloads = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|w| Workload::ALL.iter().copied().find(|x| x.name() == w.trim()))
                    .collect()
            }
            "--quick" => {
                o.duration = Duration::from_secs(1);
                o.warmup = Duration::from_millis(300);
                o.conns = vec![1, 64];
                o.million = false;
            }
            "--no-footprint" => o.footprint = false,
            "--no-nginx" => o.nginx = false,
            "--no-tls" => o.tls = false,
            "--url" => o.url = args.next(),
            "--only-url" => o.only_url = true,
            "--ca" => o.ca = args.next().map(PathBuf::from),
            "--cert" => o.cert = args.next().map(PathBuf::from),
            "--key" => o.key = args.next().map(PathBuf::from),
            "--pid" => o.pid = args.next().and_then(|p| p.parse().ok()),
            // cargo passes --bench to harness = false targets.
            "--bench" => {}
            other => eprintln!("load: ignoring unknown argument {other:?}"),
        }
    }
    o
}

// ---------------------------------------------------------------- workloads

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Ping,
    Read,
    Write,
    Mix,
    /// A new key with a 1,000,000-byte value (Butler's body limit nearly filled).
    BigWrite,
    /// A random one of [`BIG_READ_KEYS`] preloaded 1,000,000-byte values.
    BigRead,
    /// A new 4,000-character key with a 200 kB value.
    LongKey,
    /// Start task with the stand-in's 2 ms delay per QRS call.
    Start,
    /// Start task with no added delay: our throughput through QRS calls.
    StartNoDelay,
    /// A new connection (and TLS handshake) per request.
    Connect,
}

impl Workload {
    const ALL: [Workload; 10] = [
        Workload::Ping,
        Workload::Read,
        Workload::Write,
        Workload::Mix,
        Workload::BigWrite,
        Workload::BigRead,
        Workload::LongKey,
        Workload::Start,
        Workload::StartNoDelay,
        Workload::Connect,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Ping => "ping",
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::Mix => "mix",
            Workload::BigWrite => "bigwrite",
            Workload::BigRead => "bigread",
            Workload::LongKey => "longkey",
            Workload::Start => "start",
            Workload::StartNoDelay => "start0",
            Workload::Connect => "connect",
        }
    }

    /// Whether the workload reads keys that must be stored first.
    fn reads(self) -> bool {
        matches!(self, Workload::Read | Workload::Mix | Workload::BigRead)
    }

    fn is_big(self) -> bool {
        matches!(
            self,
            Workload::BigWrite | Workload::BigRead | Workload::LongKey
        )
    }

    fn label(self) -> &'static str {
        match self {
            Workload::Ping => "ping",
            Workload::Read => "KV read",
            Workload::Write => "KV durable write",
            Workload::Mix => "KV 90/10 read/write",
            Workload::BigWrite => "KV write 1 MB value",
            Workload::BigRead => "KV read 1 MB value",
            Workload::LongKey => "KV write 4000-char key",
            Workload::Start => "start task (QRS 2 ms/call)",
            Workload::StartNoDelay => "start task (QRS no delay)",
            Workload::Connect => "new connection + ping",
        }
    }
}

/// Where requests go and how to connect.
#[derive(Clone)]
struct Target {
    name: String,
    port: u16,
    host: String,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Path for the ping workload (nginx answers `/`).
    ping_path: &'static str,
    pid: Option<u32>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn open(target: &Target) -> Result<Sender, String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let conn = match &target.tls {
        None => Conn::Plain(tcp),
        Some(connector) => {
            let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            Conn::Tls(Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?,
            ))
        }
    };
    macro_rules! handshake {
        ($io:expr) => {{
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new($io))
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender
        }};
    }
    Ok(match conn {
        Conn::Plain(s) => handshake!(s),
        Conn::Tls(s) => handshake!(*s),
    })
}

fn request(
    target: &Target,
    workload: Workload,
    conn: usize,
    seq: u64,
    run: u64,
) -> (http::Request<Full<Bytes>>, u16) {
    let host = format!("{}:{}", target.host, target.port);
    let builder = http::Request::builder().header(http::header::HOST, host);
    // A new key (unique per run, connection and request) with a day's TTL.
    let new_key = |builder: http::request::Builder, namespace: &str, key: &str, value: &str| {
        let body = format!("{{\"key\":\"{key}\",\"value\":\"{value}\",\"ttl\":86400000}}");
        (
            builder
                .method("POST")
                .uri(format!("/v4/keyvalues/{namespace}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("request"),
            201,
        )
    };
    let unique = format!("r{run}-c{conn}-{seq}");
    let write = |builder| new_key(builder, "bench-write", &unique, VALUE_64);
    let read = |builder: http::request::Builder| {
        let key = rand::random_range(0..READ_KEYS);
        (
            builder
                .uri(format!("/v4/keyvalues/bench-read?key=k{key}"))
                .body(Full::new(Bytes::new()))
                .expect("request"),
            200,
        )
    };
    match workload {
        Workload::Ping | Workload::Connect => (
            builder
                .uri(target.ping_path)
                .body(Full::new(Bytes::new()))
                .expect("request"),
            200,
        ),
        Workload::Read => read(builder),
        Workload::Write => write(builder),
        Workload::Mix if rand::random_range(0..10) == 0 => write(builder),
        Workload::Mix => read(builder),
        Workload::BigWrite => new_key(builder, "bench-big-write", &unique, big_value()),
        Workload::BigRead => (
            builder
                .uri(format!(
                    "/v4/keyvalues/bench-big-read?key=k{}",
                    rand::random_range(0..BIG_READ_KEYS)
                ))
                .body(Full::new(Bytes::new()))
                .expect("request"),
            200,
        ),
        Workload::LongKey => {
            let key = format!("{unique}-{}", "k".repeat(LONG_KEY_CHARS - unique.len() - 1));
            let value = &big_value()[..LONG_KEY_VALUE_BYTES];
            new_key(builder, "bench-long-key", &key, value)
        }
        Workload::Start | Workload::StartNoDelay => (
            builder
                .method("PUT")
                .uri(format!("/v4/reloadtask/{TASK_ID}/start"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(b"[]")))
                .expect("request"),
            200,
        ),
    }
}

/// One row of the table.
struct Row {
    target: String,
    workload: Workload,
    conns: usize,
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    cpu_s: Option<f64>,
    peak_rss_mib: Option<f64>,
    first_error: Option<String>,
}

static RUN: AtomicU64 = AtomicU64::new(0);

async fn drive(target: &Target, workload: Workload, conns: usize, o: &Options) -> Row {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let measure_from = started + o.warmup;
    let until = measure_from + o.duration;
    if let Some(pid) = target.pid {
        // Resets VmHWM to the current RSS, so the row shows its own peak.
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
    let mut cpu_before = None;
    let mut tasks = Vec::new();
    for conn in 0..conns {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut ok = 0u64;
            let mut errors = 0u64;
            let mut first_error = None;
            let mut sender: Option<Sender> = None;
            let mut seq = 0u64;
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                let t0 = Instant::now();
                if workload == Workload::Connect {
                    sender = None;
                }
                let outcome: Result<(), String> = async {
                    if sender.is_none() {
                        sender = Some(open(&target).await?);
                    }
                    let s = sender.as_mut().ok_or("no connection")?;
                    seq += 1;
                    let (mut req, expected) = request(&target, workload, conn, seq, run);
                    if workload == Workload::Connect {
                        req.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    s.ready().await.map_err(|e| e.to_string())?;
                    let response = s.send_request(req).await.map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    if status != expected {
                        return Err(format!(
                            "status {status}: {}",
                            String::from_utf8_lossy(&body.to_bytes())
                                .chars()
                                .take(200)
                                .collect::<String>()
                        ));
                    }
                    Ok(())
                }
                .await;
                let done = Instant::now();
                let measured = t0 >= measure_from && done <= until;
                match outcome {
                    Ok(()) if measured => {
                        ok += 1;
                        let _ = hist.record((done - t0).as_micros().max(1) as u64);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        sender = None;
                        if measured {
                            errors += 1;
                        }
                        first_error.get_or_insert(e);
                        // Do not spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (hist, ok, errors, first_error)
        }));
    }
    // CPU is counted from the end of the warm-up.
    tokio::time::sleep_until(measure_from.into()).await;
    if let Some(pid) = target.pid {
        cpu_before = cpu_seconds(pid);
    }
    tokio::time::sleep_until(until.into()).await;
    let cpu_after = target.pid.and_then(cpu_seconds);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut ok = 0;
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        if let Ok((h, o, e, f)) = task.await {
            let _ = hist.add(&h);
            ok += o;
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Row {
        target: target.name.clone(),
        workload,
        conns,
        rps: ok as f64 / o.duration.as_secs_f64(),
        p50: ms(0.5),
        p99: ms(0.99),
        p999: ms(0.999),
        errors,
        cpu_s: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        },
        peak_rss_mib: target
            .pid
            .and_then(|p| proc_status_kib(p, "VmHWM"))
            .map(|k| k as f64 / 1024.0),
        first_error,
    }
}

fn print_header() {
    println!(
        "| {:<22} | {:<24} | {:>5} | {:>9} | {:>8} | {:>8} | {:>8} | {:>6} | {:>7} | {:>8} |",
        "server",
        "workload",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "CPU s",
        "peak RSS"
    );
    println!(
        "|{:-<24}|{:-<26}|{:->7}|{:->11}|{:->10}|{:->10}|{:->10}|{:->8}|{:->9}|{:->10}|",
        "", "", ":", ":", ":", ":", ":", ":", ":", ":"
    );
}

fn print_row(r: &Row) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{unit}"));
    println!(
        "| {:<22} | {:<24} | {:>5} | {:>9.0} | {:>8.2} | {:>8.2} | {:>8.2} | {:>6} | {:>7} | {:>8} |",
        r.target,
        r.workload.label(),
        r.conns,
        r.rps,
        r.p50,
        r.p99,
        r.p999,
        r.errors,
        opt(r.cpu_s, ""),
        opt(r.peak_rss_mib, " MiB"),
    );
    if r.errors > 0 {
        if let Some(e) = &r.first_error {
            println!("|   first error: {e}");
        }
    }
}

// ---------------------------------------------------------------- /proc

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- processes

/// A server process started by the benchmark; killed on drop.
struct Process {
    child: Child,
    port: u16,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    support::server::free_port()
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the benchmark generates once: certificates, the fake QRS.
struct Fixtures {
    dir: tempfile::TempDir,
    server_cert: PathBuf,
    server_key: PathBuf,
    callers_ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    qrs: FakeQrs,
    qrs_client: support::pki::CertFiles,
    qrs_root: PathBuf,
}

fn fixtures() -> Fixtures {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    let server_ca = Ca::new("bench server CA");
    server_ca.write_cert(p, "server-ca");
    let server = server_ca.server_cert(&["localhost", "127.0.0.1"]);
    let files = server.write(p, "server");
    let callers_ca = Ca::new("bench callers CA");
    let callers_ca_file = callers_ca.write_cert(p, "callers-ca");
    let client = callers_ca
        .client_cert("bench", KeyKind::EcP256Pkcs8)
        .write(p, "client");
    // The QRS stand-in: its own CA, a client certificate for us, 2 ms per call.
    let sense_ca = Ca::new("bench Sense CA");
    let qrs_root = sense_ca.write_cert(p, "root");
    let qrs_client = sense_ca
        .client_cert("QlikClient", KeyKind::RsaPkcs1)
        .write(p, "qrs-client");
    let qrs_server = sense_ca.server_cert(&["localhost"]);
    let qrs = FakeQrs::start(
        &qrs_server,
        &sense_ca,
        vec![FakeTask::new(TASK_ID, "Bench reload")],
    );
    Fixtures {
        server_cert: files.cert,
        server_key: files.key,
        callers_ca_file,
        client_cert: client.cert,
        client_key: client.key,
        qrs,
        qrs_client,
        qrs_root,
        dir,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Mtls,
}

fn butler_edge_config(f: &Fixtures, port: u16, scheme: Scheme) -> String {
    let tls = match scheme {
        Scheme::Http => String::new(),
        _ => format!(
            "    tls:\n      enable: true\n      cert: {}\n      key: {}\n",
            f.server_cert.display(),
            f.server_key.display()
        ),
    };
    let client_auth = match scheme {
        Scheme::Mtls => format!(
            "  clientAuth:\n    enable: true\n    ca: [{}]\n    clients:\n      - commonName: bench\n        endpoints: [startTask, kvRead, kvWrite, ping]\n",
            f.callers_ca_file.display()
        ),
        _ => String::new(),
    };
    let edge = if client_auth.is_empty() {
        String::new()
    } else {
        format!("ButlerEdge:\n{client_auth}")
    };
    format!(
        "Butler:
  logLevel: warn
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: {port}
{tls}  restServerEndpointsEnable:
    butlerping: true
    keyValueStore: true
    senseStartTask: true
  keyValueStore:
    enable: true
    maxKeysPerNamespace: 4294967295
{qrs}{edge}",
        qrs = butler_qrs_yaml(
            f.qrs.port(),
            &f.qrs_client.cert,
            &f.qrs_client.key,
            &f.qrs_root
        ),
    )
}

/// Starts butler-edge pinned to CPU 0 with a fresh data directory.
fn start_butler_edge(f: &Fixtures, scheme: Scheme, data_dir: &Path) -> Process {
    let port = free_port();
    let config = f.dir.path().join(format!("config-{port}.yaml"));
    std::fs::write(&config, butler_edge_config(f, port, scheme)).expect("write config");
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(support::server::BIN)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data_dir)
        // As root (CI, this machine) butler-edge must be told whom to run as.
        .args(support::server::root_user_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn taskset butler-edge");
    wait_listening(port, &mut child, "butler-edge");
    Process { child, port }
}

fn start_nginx(f: &Fixtures) -> Option<(Process, u16)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = free_port();
    let tls_port = free_port();
    let root = f.dir.path().join("nginx");
    std::fs::create_dir_all(root.join("logs")).ok()?;
    let conf = root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/logs/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n  fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n  keepalive_requests 1000000;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 'ok'; }} }}\n\
             server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; location / {{ return 200 'ok'; }} }}\n}}\n",
            root = root.display(),
            cert = f.server_cert.display(),
            key = f.server_key.display(),
        ),
    )
    .ok()?;
    let mut child = Command::new("taskset")
        .args(["-c", "0", nginx, "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    wait_listening(port, &mut child, "nginx");
    Some((Process { child, port }, tls_port))
}

// ---------------------------------------------------------------- TLS clients

fn tls_connector(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

// ---------------------------------------------------------------- footprint

/// Writes `count` keys (64-byte values) over 256 connections, in namespaces of
/// 100,000 keys, as fast as the server takes them.
async fn fill(target: &Target, from: usize, count: usize) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(from as u64));
    let end = (from + count) as u64;
    let mut tasks = Vec::new();
    for _ in 0..256 {
        let target = target.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = open(&target).await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return Ok::<(), String>(());
                }
                let body = format!("{{\"key\":\"k{n}\",\"value\":\"{VALUE_64}\"}}");
                let req = http::Request::builder()
                    .method("POST")
                    .uri(format!("/v4/keyvalues/fill-{}", n / 100_000))
                    .header(http::header::HOST, "127.0.0.1")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
                let status = response.status();
                let _ = response.into_body().collect().await;
                if status != 201 {
                    return Err(format!("fill: status {status}"));
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Median time from exec to the first answered ping, over 10 starts.
fn time_to_first_answer(f: &Fixtures) -> Vec<Duration> {
    let mut times = Vec::new();
    for _ in 0..10 {
        let data = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = f.dir.path().join(format!("config-start-{port}.yaml"));
        std::fs::write(&config, butler_edge_config(f, port, Scheme::Http)).expect("config");
        let started = Instant::now();
        let child = Command::new(support::server::BIN)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data.path())
            .args(support::server::root_user_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn butler-edge");
        let answered = loop {
            if let Some(r) = support::raw::exchange_quiet(
                port,
                b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ) {
                break r.status == 200;
            }
            if started.elapsed() > Duration::from_secs(10) {
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let elapsed = started.elapsed();
        drop(Process { child, port });
        if answered {
            times.push(elapsed);
        }
    }
    times.sort();
    times
}

async fn footprint(f: &Fixtures, o: &Options) {
    println!();
    println!("Footprint");
    let bin_size = std::fs::metadata(support::server::BIN)
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "  release binary: {:.2} MiB ({bin_size} bytes)",
        bin_size as f64 / 1048576.0
    );
    let firsts = time_to_first_answer(f);
    if let Some(median) = firsts.get(firsts.len() / 2) {
        println!(
            "  exec to first answered request: median {:.1} ms of {} (min {:.1}, max {:.1})",
            median.as_secs_f64() * 1000.0,
            firsts.len(),
            firsts[0].as_secs_f64() * 1000.0,
            firsts[firsts.len() - 1].as_secs_f64() * 1000.0
        );
    }
    let data = tempfile::tempdir().expect("temp dir");
    let server = start_butler_edge(f, Scheme::Http, data.path());
    let pid = server.pid();
    // Let start-up allocations settle and the sweeper sleep.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss = |pid| proc_status_kib(pid, "VmRSS").map_or(f64::NAN, |k| k as f64 / 1024.0);
    let part = |key| proc_status_kib(pid, key).map_or(f64::NAN, |k| k as f64 / 1024.0);
    // File-backed pages are the binary's and libraries' code and read-only data that
    // start-up touched; anonymous ones are heap, stacks and relocated data.
    println!(
        "  idle RSS: {:.2} MiB (anonymous {:.2} MiB, file-backed {:.2} MiB)",
        rss(pid),
        part("RssAnon"),
        part("RssFile")
    );
    if std::env::var_os("BENCH_SMAPS").is_some() {
        let _ = std::fs::copy(format!("/proc/{pid}/smaps"), "/tmp/butler-edge-idle.smaps");
    }
    let target = Target {
        name: "fill".into(),
        port: server.port,
        host: "127.0.0.1".into(),
        tls: None,
        ping_path: "/v4/butlerping",
        pid: Some(pid),
    };
    let mut stored = 0;
    let steps: &[usize] = if o.million {
        &[100_000, 1_000_000]
    } else {
        &[100_000]
    };
    for &goal in steps {
        let t = Instant::now();
        if let Err(e) = fill(&target, stored, goal - stored).await {
            println!("  filling to {goal} keys failed: {e}");
            return;
        }
        let took = t.elapsed();
        let rate = (goal - stored) as f64 / took.as_secs_f64();
        stored = goal;
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "  {goal} keys stored ({rate:.0} durable writes/s at 256 connections): RSS {:.2} MiB, peak {:.2} MiB, database {:.1} MiB",
            rss(pid),
            proc_status_kib(pid, "VmHWM").map_or(f64::NAN, |k| k as f64 / 1024.0),
            dir_size(data.path()) as f64 / 1048576.0
        );
    }
    // Last, on the filled store (so the figures above are not inflated by it): the attack of
    // issue 15, 3 plain HTTP/2 connections × 200 streams × 1 MB bodies that never end. The
    // body budget (maxBodyBytesInFlight, 64 MiB) bounds the peak.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let hold = Duration::from_secs(5);
    let floods = (0..3).map(|_| support::raw::h2_body_flood(server.port, 200, 1_000_000, hold));
    futures_util::future::join_all(floods).await;
    let peak = proc_status_kib(pid, "VmHWM").map_or(f64::NAN, |k| k as f64 / 1024.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "  HTTP/2 body flood (3 connections × 200 streams × 1 MB, never ending, {} s): peak RSS {peak:.2} MiB, {:.2} MiB 2 s after",
        hold.as_secs(),
        rss(pid)
    );
}

// ---------------------------------------------------------------- main

fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            eprintln!("load: cannot pin the load generator to CPU {cpu}: {e}");
        }
    }
}

/// The 1,000,000-byte value of the big-value workloads, made once.
fn big_value() -> &'static str {
    static VALUE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VALUE.get_or_init(|| VALUE_64.chars().cycle().take(BIG_VALUE_BYTES).collect())
}

/// Stores what the read workloads read: 10,000 small values, and 32 values of 1 MB when
/// `big` (the big-read workload runs).
async fn preload_reads(target: &Target, big: bool) -> Result<(), String> {
    let mut sender = open(target).await?;
    let small = (0..READ_KEYS).map(|k| ("bench-read", k, VALUE_64));
    let large =
        (0..if big { BIG_READ_KEYS } else { 0 }).map(|k| ("bench-big-read", k, big_value()));
    for (namespace, k, value) in small.chain(large) {
        let body = format!("{{\"key\":\"k{k}\",\"value\":\"{value}\"}}");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("/v4/keyvalues/{namespace}"))
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status != 201 {
            return Err(format!("preloading read keys: status {status}"));
        }
    }
    Ok(())
}

async fn run_matrix(target: &Target, workloads: &[Workload], o: &Options, qrs: Option<&FakeQrs>) {
    for &w in workloads {
        if let Some(qrs) = qrs {
            qrs.clear_faults();
            if w == Workload::Start {
                qrs.add_fault("/qrs/", FaultKind::Delay(Duration::from_millis(2)));
            }
        }
        if let Some(qrs) = qrs {
            qrs.clear_calls();
        }
        let connections_before = qrs.map(FakeQrs::connections);
        let mut calls = 0;
        for &c in o
            .conns
            .iter()
            .filter(|&&c| !w.is_big() || c <= BIG_MAX_CONNS)
        {
            if let Some(qrs) = qrs {
                calls += qrs.calls().len();
                qrs.clear_calls();
            }
            let row = drive(target, w, c, o).await;
            print_row(&row);
            if let (Some(qrs), Workload::Start | Workload::StartNoDelay, 1) = (qrs, w, c) {
                // Each start request makes two QRS calls (task lookup, start), one
                // after the other; the stand-in records how long it took for each
                // (its delay, timer granularity and TLS included). Our overhead is
                // the caller's latency minus that.
                let calls = qrs.calls();
                let mut own: Vec<f64> = calls
                    .chunks(2)
                    .map(|pair| {
                        pair.iter()
                            .map(|c| c.handled_in.as_secs_f64() * 1000.0)
                            .sum()
                    })
                    .collect();
                own.sort_by(f64::total_cmp);
                if let Some(median) = own.get(own.len() / 2) {
                    println!(
                        "|   QRS stand-in's own time per request (2 calls): median {median:.2} ms; \
                         butler-edge's overhead above it: p50 {:.2} ms",
                        row.p50 - median
                    );
                }
            }
        }
        if let (Some(qrs), Some(before), Workload::Start | Workload::StartNoDelay) =
            (qrs, connections_before, w)
        {
            calls += qrs.calls().len();
            println!(
                "|   QRS stand-in: {} new TLS connections from butler-edge for {calls} QRS calls",
                qrs.connections() - before
            );
        }
    }
}

fn main() {
    let o = options();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The load generator (and the QRS stand-in's threads, started below) on CPU 1;
    // the servers are started with `taskset -c 0`.
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    pin_to_cpu(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async_main(o, cores));
}

async fn async_main(o: Options, cores: usize) {
    println!(
        "butler-edge load benchmark, {} UTC, {cores} CPUs, {} s measured per row after {} s warm-up",
        utc_now(),
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64()
    );
    if let (Some(url), true) = (&o.url, o.only_url) {
        return external(url, &o).await;
    }
    let f = fixtures();
    println!(
        "server on CPU 0 (taskset -c 0); load generator and QRS stand-in (2 ms per call) on CPU 1"
    );
    println!();
    print_header();
    let schemes: &[Scheme] = if o.tls {
        &[Scheme::Http, Scheme::Https, Scheme::Mtls]
    } else {
        &[Scheme::Http]
    };
    for &scheme in schemes {
        let data = tempfile::tempdir().expect("temp dir");
        let server = start_butler_edge(&f, scheme, data.path());
        let (name, tls) = match scheme {
            Scheme::Http => ("butler-edge http", None),
            Scheme::Https => (
                "butler-edge https",
                tls_connector(&f.dir.path().join("server-ca.pem"), None).ok(),
            ),
            Scheme::Mtls => (
                "butler-edge https+mTLS",
                tls_connector(
                    &f.dir.path().join("server-ca.pem"),
                    Some((&f.client_cert, &f.client_key)),
                )
                .ok(),
            ),
        };
        let target = Target {
            name: name.into(),
            port: server.port,
            host: "127.0.0.1".into(),
            tls,
            ping_path: "/v4/butlerping",
            pid: Some(server.pid()),
        };
        if scheme != Scheme::Http {
            if let Err(e) = open(&target).await {
                println!("| {name}: skipped, this build does not serve TLS with that config ({e})");
                continue;
            }
        }
        let workloads: Vec<Workload> = o.workloads.clone();
        if workloads.iter().any(|w| w.reads()) {
            let big = workloads.contains(&Workload::BigRead);
            if let Err(e) = preload_reads(&target, big).await {
                println!("| {name}: {e}");
                continue;
            }
        }
        run_matrix(&target, &workloads, &o, Some(&f.qrs)).await;
        drop(server);
    }
    if let Some(url) = &o.url {
        external(url, &o).await;
    }
    if o.nginx {
        match start_nginx(&f) {
            None => println!("| nginx: not installed; no ceiling measured"),
            Some((nginx, tls_port)) => {
                let plain = Target {
                    name: "nginx http (ceiling)".into(),
                    port: nginx.port,
                    host: "127.0.0.1".into(),
                    tls: None,
                    ping_path: "/",
                    pid: Some(nginx.pid()),
                };
                let tls = Target {
                    name: "nginx https (ceiling)".into(),
                    port: tls_port,
                    tls: tls_connector(&f.dir.path().join("server-ca.pem"), None).ok(),
                    ..plain.clone()
                };
                run_matrix(&plain, &[Workload::Ping, Workload::Connect], &o, None).await;
                run_matrix(&tls, &[Workload::Ping, Workload::Connect], &o, None).await;
            }
        }
    }
    if o.footprint {
        footprint(&f, &o).await;
    }
}

async fn external(url: &str, o: &Options) {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return println!("--url {url:?}: {e}"),
    };
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = if https {
        let Some(ca) = &o.ca else {
            return println!("--url https://… needs --ca FILE to trust the server");
        };
        let client = match (&o.cert, &o.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        match tls_connector(ca, client) {
            Ok(c) => Some(c),
            Err(e) => return println!("TLS setup: {e}"),
        }
    } else {
        None
    };
    let target = Target {
        name: format!("{host}:{port}"),
        port,
        host,
        tls,
        ping_path: "/v4/butlerping",
        pid: o.pid,
    };
    println!();
    print_header();
    if o.workloads.iter().any(|w| w.reads()) {
        let big = o.workloads.contains(&Workload::BigRead);
        if let Err(e) = preload_reads(&target, big).await {
            println!("| preloading the read keys failed: {e}");
        }
    }
    run_matrix(&target, &o.workloads, o, None).await;
}

fn utc_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{} {:02}:{:02}", now.date(), now.hour(), now.minute())
}
