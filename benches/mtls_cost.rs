//! What client certificates cost, measured side by side against the real binary: new
//! connections per second (TCP connect + full TLS handshake + one request + close) and
//! requests per second on kept-alive connections, for HTTPS without client authentication,
//! with an EC P-256 client certificate, and with an RSA-2048 one (what Sense exports), plus
//! plain HTTP as the floor.
//!
//! Not a test of behaviour but a measurement that prints figures: `cargo bench --bench
//! mtls_cost` (the bench profile is the release build; `MTLS_COST_SECS` sets the seconds per
//! figure, default 5; `MTLS_COST_THREADS` the concurrent clients, default 4). Client and server share the machine, so the rates are for
//! comparison, not capacity; the server's own CPU time per connection and per request (from
//! /proc) is printed beside them, which the client's share does not distort.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::pki::{Ca, Issued, KeyKind};
use support::server::Server;
use support::tls_client::{Conn, Versions, client_config};

const BASE: &str = "\
Butler:
  logLevel: warn
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: {port}
{tls}
  restServerEndpointsEnable:
    butlerping: true
";

const TLS: &str = "    tls:
      enable: true
      cert: {dir}/server.pem
      key: {dir}/server_key.pem";

const CLIENT_AUTH: &str = "ButlerEdge:
  clientAuth:
    enable: true
    ca: {dir}/callers-ca.pem
    clients:
      - commonName: bench
        endpoints: [ping]
";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) the process `pid` has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    (utime + stime) / ticks
}

/// Runs `work` on `threads` threads for `secs` seconds; returns (operations per second,
/// the server's CPU microseconds per operation).
fn rate(
    pid: u32,
    threads: usize,
    secs: u64,
    work: impl Fn() -> Box<dyn FnMut() + Send> + Sync,
) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let mut op = work();
            let stop = stop.clone();
            let count = count.clone();
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    op();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ops = count.load(Ordering::Relaxed) as f64;
    let cpu = cpu_seconds(pid) - cpu_before;
    (ops / elapsed, cpu * 1e6 / ops.max(1.0))
}

/// One GET over a plain TCP connection (HTTP/1.1), for the plain-HTTP floor.
fn plain_get(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 1024];
    let mut seen = Vec::new();
    loop {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed");
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                assert!(head.starts_with("http/1.1 200"), "{head}");
                return;
            }
        }
    }
}

struct Scenario {
    name: &'static str,
    server: Server,
    /// `None`: plain HTTP.
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn scenario(
    name: &'static str,
    tls_on: bool,
    client_auth: bool,
    identity: Option<&Issued>,
    pki: &Pki,
) -> Scenario {
    let dir = tempfile::tempdir().unwrap();
    pki.server.write(dir.path(), "server");
    pki.callers.write_cert(dir.path(), "callers-ca");
    let mut config = BASE.replace("{tls}", if tls_on { TLS } else { "" });
    if client_auth {
        config.push_str(CLIENT_AUTH);
    }
    let data = dir.path().join("data");
    let server = Server::start_in(dir, data, &config);
    let tls = tls_on.then(|| {
        let mut config = (*client_config(
            &pki.server_ca.cert_pem,
            identity,
            &[b"http/1.1"],
            Versions::Both,
        ))
        .clone();
        // Every new connection pays a full handshake: no session resumption.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    });
    Scenario { name, server, tls }
}

struct Pki {
    server_ca: Ca,
    server: Issued,
    callers: Ca,
}

fn main() {
    let secs = env_number("MTLS_COST_SECS", 5);
    let threads = env_number("MTLS_COST_THREADS", 4) as usize;
    let server_ca = Ca::new("Server CA");
    let pki = Pki {
        server: server_ca.server_cert(&["localhost", "127.0.0.1"]),
        server_ca,
        callers: Ca::new("Callers CA"),
    };
    let ec_client = pki.callers.client_cert("bench", KeyKind::EcP256Pkcs8);
    let rsa_client = pki.callers.client_cert("bench", KeyKind::RsaPkcs1);
    let scenarios = [
        scenario("plain HTTP", false, false, None, &pki),
        scenario("HTTPS, no client auth", true, false, None, &pki),
        scenario(
            "HTTPS + client cert EC P-256",
            true,
            true,
            Some(&ec_client),
            &pki,
        ),
        scenario(
            "HTTPS + client cert RSA-2048",
            true,
            true,
            Some(&rsa_client),
            &pki,
        ),
    ];
    println!(
        "\nmTLS cost: {threads} client threads, {secs} s per figure, server cert EC P-256, \
         TLS 1.3, HTTP/1.1, GET /v4/butlerping"
    );
    println!(
        "{:<30} {:>12} {:>16} {:>16} {:>16}",
        "", "new conns/s", "server µs/conn", "keep-alive req/s", "server µs/req"
    );
    for s in &scenarios {
        let port = s.server.port;
        let pid = s.server.pid();
        let (new_conns, conn_cpu) = rate(pid, threads, secs, || {
            let tls = s.tls.clone();
            Box::new(move || match &tls {
                Some(config) => {
                    let mut conn = Conn::open(port, config.clone()).expect("handshake");
                    let (status, _) = conn
                        .request("GET", "/v4/butlerping", None)
                        .expect("request");
                    assert_eq!(status, 200);
                }
                None => {
                    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    plain_get(&mut tcp);
                }
            })
        });
        let (kept, req_cpu) = rate(pid, threads, secs, || {
            let tls = s.tls.clone();
            match tls {
                Some(config) => {
                    let mut conn = Conn::open(port, config).expect("handshake");
                    Box::new(move || {
                        let (status, _) = conn
                            .request("GET", "/v4/butlerping", None)
                            .expect("request");
                        assert_eq!(status, 200);
                    })
                }
                None => {
                    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    tcp.set_nodelay(true).expect("nodelay");
                    Box::new(move || plain_get(&mut tcp))
                }
            }
        });
        println!(
            "{:<30} {:>12.0} {:>16.0} {:>16.0} {:>16.1}",
            s.name, new_conns, conn_cpu, kept, req_cpu
        );
    }
}
