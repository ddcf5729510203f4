//! Idle connections and the connection limit, against the real binary:
//! `ButlerEdge.limits.idleTimeoutMs` closes HTTP/2 connections that only sent the preface
//! (h2c and HTTP/2 over TLS) and idle HTTP/1.1 keep-alive connections, never one with a
//! request in flight; at `maxConnections` a newcomer is served by closing the connection
//! idle longest, and waits (no eviction) while every connection has a request in flight.
//!
//! Apart from `fault_idle_connections` (10,000 connections, its own binary); these need a
//! few descriptors each. HTTP/2 is spoken by hand (frames, a literal-only HPACK block) so
//! that the test controls every frame, including whether the server's PING is answered.

use crate::support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use support::pki::Ca;
use support::raw;
use support::server::{KV_CONFIG, Server, TLS_CONFIG};
use support::tls_client::{Versions, client_config};

const IDLE: Duration = Duration::from_millis(1500);
/// The server's grace for a connection that does not answer the GOAWAY's PING.
const GRACE: Duration = Duration::from_secs(1);
/// Scheduling slack on a shared 2-core machine running a debug build.
const SLACK: Duration = Duration::from_millis(1500);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;
const END_HEADERS: u8 = 4;

fn limits(extra: &str) -> String {
    format!(
        "{KV_CONFIG}ButlerEdge:\n  endpointsEnable:\n    metrics: true\n  limits:\n    idleTimeoutMs: {}\n{extra}",
        IDLE.as_millis()
    )
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields (no indexing, no Huffman): all HPACK a server must read.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127);
        out.push(0);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

#[derive(Debug)]
enum Event {
    Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    },
    Closed,
    Timeout,
}

/// Reads whole frames across short reads and read timeouts.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    fn next<S: Read>(&mut self, s: &mut S) -> Event {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload = self.buf.drain(..len).collect();
                    return Event::Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload,
                    };
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return Event::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Event::Timeout;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Event::Closed,
            }
        }
    }
}

/// What the server did on an HTTP/2 connection, timed from `started`.
#[derive(Debug, Default)]
struct Observed {
    goaway_after: Option<Duration>,
    closed_after: Option<Duration>,
    /// DATA received on stream 1.
    body: String,
    /// Stream 1 ended (END_STREAM) after this long.
    answered_after: Option<Duration>,
}

/// Reads frames until the server closes the connection or `limit` passes. Acknowledges
/// SETTINGS; answers PINGs only if `answer_pings` (a peer that ignores them shows what
/// the server does when its graceful close cannot complete).
fn watch<S: Read + Write>(
    s: &mut S,
    tcp: impl Fn(&S) -> &TcpStream,
    started: Instant,
    limit: Duration,
    answer_pings: bool,
) -> Observed {
    let mut seen = Observed::default();
    let mut frames = Frames::default();
    while started.elapsed() < limit {
        tcp(s)
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        match frames.next(s) {
            Event::Timeout => continue,
            Event::Closed => {
                seen.closed_after = Some(started.elapsed());
                break;
            }
            Event::Frame {
                kind,
                flags,
                stream,
                payload,
            } => match kind {
                SETTINGS if flags & ACK == 0 => {
                    let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[]));
                }
                PING if flags & ACK == 0 && answer_pings => {
                    let _ = s.write_all(&frame(PING, ACK, 0, &payload));
                }
                GOAWAY => {
                    seen.goaway_after.get_or_insert(started.elapsed());
                }
                DATA | HEADERS if stream == 1 => {
                    if kind == DATA {
                        seen.body.push_str(&String::from_utf8_lossy(&payload));
                    }
                    if flags & END_STREAM != 0 {
                        seen.answered_after = Some(started.elapsed());
                    }
                }
                _ => {}
            },
        }
        let _ = s.flush();
    }
    seen
}

fn plain_h2(port: u16) -> TcpStream {
    let mut tcp = raw::connect(port);
    tcp.write_all(H2_PREFACE).unwrap();
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    tcp
}

fn assert_closed_by_idle_timeout(what: &str, seen: &Observed, answer_pings: bool) {
    println!("{what}: {seen:?}");
    let goaway = seen
        .goaway_after
        .unwrap_or_else(|| panic!("{what}: no GOAWAY: {seen:?}"));
    let closed = seen
        .closed_after
        .unwrap_or_else(|| panic!("{what}: still open: {seen:?}"));
    // Measured from after the preface (or handshake): the server's clock started a little
    // earlier, at accept.
    assert!(
        goaway > IDLE - Duration::from_millis(500),
        "{what}: GOAWAY too early: {seen:?}"
    );
    assert!(goaway < IDLE + SLACK, "{what}: GOAWAY too late: {seen:?}");
    if answer_pings {
        assert!(
            closed < goaway + SLACK,
            "{what}: closed long after its GOAWAY: {seen:?}"
        );
    } else {
        assert!(
            closed > goaway + GRACE - Duration::from_millis(300),
            "{what}: dropped before its grace: {seen:?}"
        );
        assert!(
            closed < goaway + GRACE + SLACK,
            "{what}: kept past its grace: {seen:?}"
        );
    }
}

#[test]
fn an_h2c_connection_that_only_sent_its_preface_is_closed_after_the_idle_timeout() {
    let _alone = support::alone();
    let server = Server::start(&limits(""));
    let limit = IDLE + GRACE + SLACK + Duration::from_secs(3);
    let watchers: Vec<_> = [true, false]
        .into_iter()
        .map(|answer_pings| {
            let port = server.port;
            std::thread::spawn(move || {
                let mut tcp = plain_h2(port);
                let started = Instant::now();
                let seen = watch(&mut tcp, |t| t, started, limit, answer_pings);
                (answer_pings, seen)
            })
        })
        .collect();
    for watcher in watchers {
        let (answer_pings, seen) = watcher.join().unwrap();
        let what = if answer_pings {
            "h2c, PING answered"
        } else {
            "h2c, PING ignored"
        };
        assert_closed_by_idle_timeout(what, &seen, answer_pings);
    }
    assert!(
        raw::metric(
            server.port,
            "butler_edge_http_connections_idle_closed_total"
        ) >= 2
    );
}

fn tls_h2(port: u16, ca: &Ca) -> StreamOwned<ClientConnection, TcpStream> {
    let config = client_config(&ca.cert_pem, None, &[b"h2"], Versions::Both);
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(&config), name).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("handshake");
    }
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"h2"[..]));
    stream
}

#[test]
fn an_http2_over_tls_connection_left_idle_is_closed_after_the_idle_timeout() {
    let _alone = support::alone();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Server CA");
    ca.server_cert(&["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    let data = dir.path().join("data");
    let server = Server::start_in(
        dir,
        data,
        &format!(
            "{TLS_CONFIG}ButlerEdge:\n  limits:\n    idleTimeoutMs: {}\n",
            IDLE.as_millis()
        ),
    );
    let limit = IDLE + GRACE + SLACK + Duration::from_secs(3);
    for answer_pings in [true, false] {
        let mut tls = tls_h2(server.port, &ca);
        tls.write_all(H2_PREFACE).unwrap();
        tls.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        tls.flush().unwrap();
        let started = Instant::now();
        let seen = watch(&mut tls, |s| &s.sock, started, limit, answer_pings);
        let what = if answer_pings {
            "HTTP/2 over TLS, PING answered"
        } else {
            "HTTP/2 over TLS, PING ignored"
        };
        assert_closed_by_idle_timeout(what, &seen, answer_pings);
    }
}

#[test]
fn an_h2_stream_in_flight_longer_than_the_idle_timeout_is_answered_on_an_open_connection() {
    let _alone = support::alone();
    let server = Server::start(&limits(""));
    let body = br#"{"key":"h2","value":"trickled"}"#;
    let mut tcp = plain_h2(server.port);
    let length = body.len().to_string();
    let block = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v4/keyvalues/idle"),
        (":authority", "localhost"),
        ("content-type", "application/json"),
        ("content-length", &length),
    ]);
    tcp.write_all(&frame(HEADERS, END_HEADERS, 1, &block))
        .unwrap();
    // One byte every 200 ms: in flight for about 2 × IDLE, well within the body timeout.
    let started = Instant::now();
    let writer_tcp = tcp.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = writer_tcp;
        let pause = (2 * IDLE) / body.len() as u32;
        for (i, byte) in body.iter().enumerate() {
            std::thread::sleep(pause);
            let flags = if i + 1 == body.len() { END_STREAM } else { 0 };
            w.write_all(&frame(DATA, flags, 1, &[*byte]))
                .expect("the server closed the connection while the stream was in flight");
        }
    });
    let seen = watch(
        &mut tcp,
        |t| t,
        started,
        2 * IDLE + SLACK + Duration::from_secs(5),
        true,
    );
    writer.join().unwrap();
    println!("h2 stream trickled for {:?}: {seen:?}", 2 * IDLE);
    let answered = seen
        .answered_after
        .unwrap_or_else(|| panic!("no answer on stream 1: {seen:?}"));
    assert!(answered > 2 * IDLE - Duration::from_millis(300));
    assert!(
        seen.goaway_after.is_none_or(|g| g > answered),
        "GOAWAY while the stream was in flight: {seen:?}"
    );
    assert!(seen.body.contains("trickled"), "{seen:?}");
    // After the answer the connection is idle: closed about IDLE later.
    if let Some(closed) = seen.closed_after {
        assert!(
            closed > answered + IDLE - Duration::from_millis(300),
            "{seen:?}"
        );
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_but_one_in_flight_is_not() {
    let _alone = support::alone();
    // The header read timeout (which hyper also runs between requests) well above the
    // idle timeout, so that what closes the idle connection is the idle timeout.
    let server = Server::start(&limits("    headerReadTimeoutMs: 20000\n"));
    let port = server.port;
    let idle = std::thread::spawn(move || {
        let mut kept = raw::connect(port);
        kept.write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(raw::read_response(&mut kept).map(|r| r.status), Some(200));
        raw::time_until_closed(&mut kept, IDLE + SLACK + Duration::from_secs(5))
    });
    let busy = std::thread::spawn(move || {
        let body = br#"{"key":"h1","value":"trickled"}"#;
        let mut stream = raw::connect(port);
        stream
            .write_all(
                format!(
                    "POST /v4/keyvalues/idle HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
        let started = Instant::now();
        let pause = (2 * IDLE) / body.len() as u32;
        for byte in body {
            std::thread::sleep(pause);
            stream
                .write_all(&[*byte])
                .expect("the server closed the connection while the request was in flight");
        }
        let first = raw::read_response(&mut stream);
        let in_flight = started.elapsed();
        // Still open, and keep-alive: a second request on the same connection.
        stream
            .write_all(b"GET /v4/keyvalues/idle?key=h1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let second = raw::read_response(&mut stream);
        (in_flight, first, second)
    });
    let closed = idle.join().unwrap();
    println!("idle keep-alive connection: closed by the server after {closed:?}");
    let (after, _) = closed.expect("idle keep-alive connection still open");
    assert!(
        after > IDLE - Duration::from_millis(200),
        "closed too early: {after:?}"
    );
    assert!(after < IDLE + SLACK, "closed only after {after:?}");

    let (in_flight, first, second) = busy.join().unwrap();
    println!(
        "request in flight for {in_flight:?}: answered {:?}, then {:?} on the same connection",
        first.as_ref().map(|r| r.status),
        second.as_ref().map(|r| r.status)
    );
    assert!(in_flight > IDLE + Duration::from_millis(300));
    let first = first.expect("the request in flight was cut off");
    assert_eq!(first.status, 201);
    assert_ne!(first.header("connection"), Some("close"));
    let second = second.expect("the connection was closed after its request");
    assert_eq!(second.status, 200);
    assert!(String::from_utf8_lossy(&second.body).contains("trickled"));
    assert!(raw::metric(port, "butler_edge_http_connections_idle_closed_total") >= 1);
}

/// Sends a POST head with `Expect: 100-continue` and waits for the 100: from then on the
/// server's handler is reading the body, so a request is in flight.
fn start_busy_request(port: u16, body_len: usize) -> TcpStream {
    let mut stream = raw::connect(port);
    stream
        .write_all(
            format!(
                "POST /v4/keyvalues/busy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Expect: 100-continue\r\nContent-Length: {body_len}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("100 Continue"), 1);
        seen.push(byte[0]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    stream
}

#[test]
fn at_the_limit_a_newcomer_waits_while_every_connection_has_a_request_in_flight() {
    let _alone = support::alone();
    let server = Server::start(&limits(
        "    maxConnections: 4\n    bodyReadTimeoutMs: 20000\n",
    ));
    let port = server.port;
    let bodies: Vec<String> = (0..4)
        .map(|i| format!(r#"{{"key":"k{i}","value":"v{i}"}}"#))
        .collect();
    let mut busy: Vec<TcpStream> = bodies
        .iter()
        .map(|b| start_busy_request(port, b.len()))
        .collect();
    // Half of each body: the handlers wait for the rest.
    for (stream, body) in busy.iter_mut().zip(&bodies) {
        stream
            .write_all(&body.as_bytes()[..body.len() / 2])
            .unwrap();
    }
    let mut newcomer = raw::connect(port);
    newcomer
        .write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Serving it would take evicting a busy connection: it must see nothing, neither an
    // answer nor a close. (Eviction answers within milliseconds, so 2 s tells.)
    let waited = raw::time_until_closed(&mut newcomer, Duration::from_secs(2));
    assert_eq!(
        waited, None,
        "the newcomer was answered or closed while all slots were busy"
    );
    let released = Instant::now();
    for (stream, body) in busy.iter_mut().zip(&bodies) {
        stream
            .write_all(&body.as_bytes()[body.len() / 2..])
            .unwrap();
    }
    for (i, stream) in busy.iter_mut().enumerate() {
        let answer = raw::read_response(stream).map(|r| r.status);
        assert_eq!(answer, Some(201), "request {i} in flight was not answered");
    }
    newcomer
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let answer = raw::read_response(&mut newcomer).map(|r| r.status);
    let newcomer_wait = released.elapsed();
    println!("newcomer answered {answer:?} {newcomer_wait:?} after the busy requests could finish");
    assert_eq!(answer, Some(200));
    assert!(newcomer_wait < Duration::from_secs(5), "{newcomer_wait:?}");
}

#[test]
fn at_the_limit_the_connection_idle_longest_makes_room_for_a_newcomer() {
    let _alone = support::alone();
    let server = Server::start(&limits("    maxConnections: 4\n"));
    let port = server.port;
    // Four keep-alive connections, each answered once, oldest first.
    let mut kept: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = raw::connect(port);
            s.write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert_eq!(raw::read_response(&mut s).map(|r| r.status), Some(200));
            std::thread::sleep(Duration::from_millis(20));
            s
        })
        .collect();
    let started = Instant::now();
    let answered = raw::exchange(
        port,
        b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .map(|r| r.status);
    let wait = started.elapsed();
    println!("newcomer at the limit (4 idle keep-alive connections): {answered:?} after {wait:?}");
    assert_eq!(answered, Some(200));
    assert!(wait < Duration::from_secs(2), "{wait:?}");
    let oldest = raw::time_until_closed(&mut kept[0], Duration::from_secs(5));
    assert!(
        oldest.is_some(),
        "the connection idle longest is still open"
    );
    for (i, stream) in kept.iter_mut().enumerate().skip(1) {
        stream
            .write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(
            raw::read_response(stream).map(|r| r.status),
            Some(200),
            "connection {i} (not the oldest) was closed"
        );
    }
    assert!(raw::metric(port, "butler_edge_http_connections_evicted_total") >= 1);
}
