//! Raw HTTP/1.1 over std sockets, for tests that must control every byte (hostile
//! clients) or time requests without a client library's pool in the way, and a
//! well-behaved client that measures its latency while an attack runs.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A parsed response: status, headers (lower-cased names), body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to butler-edge");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let _ = stream.set_nodelay(true);
    stream
}

/// Reads one response (Content-Length or empty body). `None` when the server
/// closed the connection before a complete response.
pub fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    body.truncate(length);
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// Sends raw bytes on a new connection and reads one response.
pub fn exchange(port: u16, request: &[u8]) -> Option<RawResponse> {
    let mut stream = connect(port);
    stream.write_all(request).ok()?;
    read_response(&mut stream)
}

/// Like [`exchange`], but `None` instead of a panic when nothing listens yet.
pub fn exchange_quiet(port: u16, request: &[u8]) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    stream.write_all(request).ok()?;
    read_response(&mut stream)
}

/// A POST with a JSON (or not) body on a new connection.
pub fn post(port: u16, path: &[u8], body: &[u8]) -> Option<RawResponse> {
    let mut request = Vec::new();
    request.extend_from_slice(b"POST ");
    request.extend_from_slice(path);
    request.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body);
    exchange(port, &request)
}

/// Waits until the server closes `stream` (EOF or reset), reading and discarding
/// anything it sends; returns how long that took and whether a response status
/// line came first. `None` if still open after `limit`.
pub fn time_until_closed(
    stream: &mut TcpStream,
    limit: Duration,
) -> Option<(Duration, Option<u16>)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let status = String::from_utf8_lossy(&seen)
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    Some((started.elapsed(), status))
}

/// Latency figures of the well-behaved client, in milliseconds.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    pub requests: usize,
    pub failures: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} failed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.requests, self.failures, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// A well-behaved client pinging every few milliseconds on its own connection
/// while an attack runs; `fresh_connections` opens a new connection per request
/// (what a new caller experiences) instead of keeping one alive.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<f64>, usize)>,
}

impl Monitor {
    pub fn start(port: u16, fresh_connections: bool) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // Connected before the attack starts, as an existing caller would be.
        let mut kept = (!fresh_connections).then(|| connect(port));
        let thread = std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut failures = 0;
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answered = match kept.as_mut() {
                    Some(stream) => stream
                        .write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                        .ok()
                        .and_then(|_| read_response(stream)),
                    None => exchange(
                        port,
                        b"GET /v4/butlerping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                    ),
                };
                match answered {
                    Some(r) if r.status == 200 => {
                        latencies.push(started.elapsed().as_secs_f64() * 1000.0)
                    }
                    _ => {
                        failures += 1;
                        if kept.is_some() {
                            match TcpStream::connect(("127.0.0.1", port)) {
                                Ok(stream) => {
                                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                                    kept = Some(stream)
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (latencies, failures)
        });
        Monitor { stop, thread }
    }

    pub fn finish(self) -> LatencyReport {
        self.stop.store(true, Ordering::Relaxed);
        let (mut latencies, failures) = self.thread.join().expect("monitor thread");
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if latencies.is_empty() {
                f64::NAN
            } else {
                latencies[((latencies.len() - 1) as f64 * q).round() as usize]
            }
        };
        LatencyReport {
            requests: latencies.len() + failures,
            failures,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// One unlabelled sample from `GET /metrics` (the endpoint must be enabled); panics with the
/// whole text when it is missing.
pub fn metric(port: u16, name: &str) -> u64 {
    let response = exchange(
        port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("metrics answered");
    let text = String::from_utf8_lossy(&response.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Resident memory of `pid` in MiB, from `/proc/PID/status`.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// One plain-HTTP/2 connection that opens `streams` POSTs, each sending `per_stream` bytes
/// of body and then never ending it; held open until `hold` has passed.
pub async fn h2_body_flood(port: u16, streams: usize, per_stream: usize, hold: Duration) {
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let io = hyper_util::rt::TokioIo::new(tcp);
    let Ok((sender, conn)) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await
    else {
        return;
    };
    let driver = tokio::spawn(conn);
    let mut requests = Vec::new();
    for i in 0..streams {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = per_stream.div_ceil(chunk.len());
        let body = futures_util::stream::iter(
            std::iter::repeat_n(chunk, chunks).map(|c| Ok::<_, std::io::Error>(Frame::data(c))),
        )
        .chain(futures_util::stream::pending());
        let request =
            hyper::Request::post(format!("http://127.0.0.1:{port}/v4/keyvalues/flood{i}"))
                .header("content-type", "application/json")
                .body(StreamBody::new(body))
                .unwrap();
        let mut sender = sender.clone();
        requests.push(tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let _ = sender.send_request(request).await;
            }
        }));
    }
    tokio::time::sleep(hold).await;
    for r in requests {
        r.abort();
    }
    driver.abort();
}
