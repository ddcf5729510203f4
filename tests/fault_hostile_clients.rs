//! Hostile clients: slowloris, bodies trickled forever, idle connections,
//! oversized headers and bodies, invalid UTF-8, deeply nested JSON and a corpus of
//! malformed JSON. Each gets a clear error or is cut off by a timeout, and a
//! well-behaved client on its own connection stays responsive meanwhile (its
//! latency is measured and printed; run with `--nocapture` to see it).
//!
//! The server runs with short limits (1 s header read, 2 s body read) so the
//! cut-offs are observable in a test's time.

use crate::support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::raw::{self, LatencyReport, Monitor, RawResponse};
use support::server::{KV_CONFIG, Server};

const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
const BODY_TIMEOUT: Duration = Duration::from_millis(2000);
/// Scheduling slack on a shared 2-core machine running a debug build.
const SLACK: Duration = Duration::from_millis(1500);

fn hostile_server() -> Server {
    Server::start(&format!(
        "{KV_CONFIG}ButlerEdge:\n  limits:\n    headerReadTimeoutMs: {}\n    bodyReadTimeoutMs: {}\n",
        HEADER_TIMEOUT.as_millis(),
        BODY_TIMEOUT.as_millis()
    ))
}

fn assert_butler_error(response: &RawResponse, status: u16, message_part: &str) {
    support::butler::assert_butler_error(response.status, &response.json(), status, message_part);
}

/// The well-behaved client saw no failure and no stall.
fn assert_responsive(what: &str, report: &LatencyReport) {
    println!("{what}: well-behaved client during the attack: {report}");
    assert!(report.requests > 0, "{what}: the monitor made no request");
    assert_eq!(report.failures, 0, "{what}: {report}");
    assert!(report.max_ms < 2000.0, "{what}: stalled: {report}");
}

#[test]
fn slowloris_headers_are_cut_off_by_the_header_read_timeout() {
    let _alone = support::alone();
    let server = hostile_server();
    let monitor = Monitor::start(server.port, false);
    let attackers: Vec<_> = (0..50)
        .map(|i| {
            let port = server.port;
            std::thread::spawn(move || {
                let mut stream = raw::connect(port);
                let _ = stream.write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\n");
                let started = Instant::now();
                // One more header line every 200 ms, never the blank line.
                let mut n = 0;
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    if stream
                        .write_all(format!("X-Slow-{i}-{n}: a\r\n").as_bytes())
                        .is_err()
                        || started.elapsed() > Duration::from_secs(15)
                    {
                        break;
                    }
                    n += 1;
                }
                // A write fails only after the server closed its end.
                started.elapsed()
            })
        })
        .collect();
    let cut_off: Vec<Duration> = attackers.into_iter().map(|a| a.join().unwrap()).collect();
    let report = monitor.finish();
    let slowest = cut_off.iter().max().copied().unwrap_or_default();
    println!("slowloris: 50 trickling connections cut off after at most {slowest:?}");
    assert!(
        slowest < HEADER_TIMEOUT + SLACK + Duration::from_millis(400),
        "a slowloris connection was kept {slowest:?}"
    );
    assert_responsive("slowloris", &report);
}

#[test]
fn idle_connections_are_closed_whether_new_or_kept_alive() {
    let _alone = support::alone();
    let server = hostile_server();
    // Connected, never sends a byte.
    let silent = raw::connect(server.port);
    // One request answered, then idle on keep-alive.
    let mut kept = raw::connect(server.port);
    kept.write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(raw::read_response(&mut kept).map(|r| r.status), Some(200));
    // Half a request line.
    let mut partial = raw::connect(server.port);
    partial.write_all(b"GET /v4/butl").unwrap();
    let limit = HEADER_TIMEOUT + SLACK;
    // Watched in parallel, each from the moment it went idle.
    let watchers: Vec<_> = [
        ("connection that never sent a byte", silent),
        ("idle keep-alive connection", kept),
        ("half a request line", partial),
    ]
    .into_iter()
    .map(|(what, mut stream)| {
        std::thread::spawn(move || {
            (
                what,
                raw::time_until_closed(&mut stream, limit + Duration::from_secs(3)),
            )
        })
    })
    .collect();
    for watcher in watchers {
        let (what, closed) = watcher.join().unwrap();
        println!("{what}: closed by the server after {closed:?}");
        let (after, _) = closed.unwrap_or_else(|| panic!("{what}: still open after {limit:?}"));
        assert!(after < limit, "{what}: closed only after {after:?}");
        assert!(
            after > HEADER_TIMEOUT - Duration::from_millis(200),
            "{what}: closed too early, after {after:?}"
        );
    }
}

#[test]
fn a_body_trickled_forever_gets_408_after_the_body_read_timeout() {
    let _alone = support::alone();
    let server = hostile_server();
    let monitor = Monitor::start(server.port, false);
    let trickle = |chunked: bool| {
        let port = server.port;
        std::thread::spawn(move || {
            let mut stream = raw::connect(port);
            let framing = if chunked {
                "Transfer-Encoding: chunked"
            } else {
                "Content-Length: 100000"
            };
            stream
                .write_all(
                    format!(
                        "POST /v4/keyvalues/trickle HTTP/1.1\r\nHost: x\r\n\
                         Content-Type: application/json\r\n{framing}\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .unwrap();
            let started = Instant::now();
            let writer = stream.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut writer = writer;
                let piece: &[u8] = if chunked { b"1\r\n \r\n" } else { b" " };
                while writer.write_all(piece).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                    if started.elapsed() > Duration::from_secs(15) {
                        break;
                    }
                }
            });
            let response = raw::read_response(&mut stream);
            (started.elapsed(), response)
        })
    };
    let attackers = [trickle(false), trickle(true)];
    for (attacker, framing) in attackers.into_iter().zip(["content-length", "chunked"]) {
        let (after, response) = attacker.join().unwrap();
        println!(
            "body trickled forever ({framing}): answered after {after:?} with {:?}",
            response.as_ref().map(|r| r.status)
        );
        let response = response.unwrap_or_else(|| panic!("{framing}: no answer, just closed"));
        assert_butler_error(&response, 408, "bodyReadTimeoutMs");
        assert!(after < BODY_TIMEOUT + SLACK, "{framing}: after {after:?}");
    }
    assert_responsive("trickled bodies", &monitor.finish());
}

#[test]
fn oversized_headers_and_bodies_are_refused() {
    let _alone = support::alone();
    let server = hostile_server();
    let port = server.port;
    let monitor = Monitor::start(port, false);

    let huge_header = format!(
        "GET /v4/butlerping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let many_headers = format!(
        "GET /v4/butlerping HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_url = format!(
        "GET /v4/keyvalues/{}?key=a HTTP/1.1\r\nHost: x\r\n\r\n",
        "n".repeat(512 * 1024)
    );
    for (what, request) in [
        ("a 1 MiB header", huge_header),
        ("500 headers", many_headers),
        ("a 512 KiB URL", long_url),
    ] {
        let mut stream = raw::connect(port);
        // The server may stop reading (and reset) before all is sent.
        let _ = stream.write_all(request.as_bytes());
        let response = raw::read_response(&mut stream);
        println!("{what}: answered {:?}", response.as_ref().map(|r| r.status));
        let status = response.map(|r| r.status);
        assert!(
            matches!(status, Some(431) | Some(414) | Some(400) | None),
            "{what}: {status:?}"
        );
        // Whatever the answer, the connection is not kept for more.
        assert!(raw::time_until_closed(&mut stream, Duration::from_secs(5)).is_some());
    }

    // A declared body above maxBodyBytes (1 MiB) is refused before it is read.
    let mut stream = raw::connect(port);
    stream
        .write_all(
            b"POST /v4/keyvalues/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 2097152\r\n\r\n{\"key\":\"a\",\"value\":\"",
        )
        .unwrap();
    let response = raw::read_response(&mut stream).expect("answer to a declared 2 MiB body");
    assert_butler_error(&response, 413, "maxBodyBytes");

    // A chunked body that grows past the limit is cut off at the limit.
    let mut stream = raw::connect(port);
    stream
        .write_all(
            b"POST /v4/keyvalues/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
    for _ in 0..32 {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let response = raw::read_response(&mut stream).expect("answer to a 2 MiB chunked body");
    assert_butler_error(&response, 413, "maxBodyBytes");

    // A big value inside an acceptable body is stored, as Butler does (the per-part limits
    // default to maxBodyBytes; tests/kv_api.rs checks them when set).
    let value = "v".repeat(600 * 1024);
    let body = json!({"key": "a", "value": value}).to_string();
    let response = raw::post(port, b"/v4/keyvalues/big", body.as_bytes()).unwrap();
    assert_eq!(response.status, 201);
    assert_responsive("oversized requests", &monitor.finish());
}

#[test]
fn invalid_utf8_anywhere_is_a_400_naming_the_input() {
    let _alone = support::alone();
    let server = hostile_server();
    let port = server.port;

    // Percent-encoded invalid UTF-8 in a path segment and in a query value.
    let response = raw::exchange(
        port,
        b"GET /v4/keyvalues/bad%FFname?key=a HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    assert_butler_error(&response, 400, "bad%FFname");
    let response = raw::exchange(
        port,
        b"GET /v4/keyvalues/ns?key=%C3%28 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    assert_butler_error(&response, 400, "%C3%28");

    // Raw non-ASCII bytes in the request line are not HTTP: refused by the parser.
    let response = raw::exchange(
        port,
        b"GET /v4/keyvalues/\xff\xfe?key=a HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    println!(
        "raw 0xFF in the path: {:?}",
        response.as_ref().map(|r| r.status)
    );
    assert!(matches!(response.map(|r| r.status), Some(400) | None));

    // Invalid UTF-8 inside the JSON body, and in a header value.
    let response = raw::post(
        port,
        b"/v4/keyvalues/ns",
        b"{\"key\":\"a\xff\",\"value\":\"b\"}",
    )
    .unwrap();
    assert_butler_error(&response, 400, "not valid JSON");
    let response = raw::exchange(
        port,
        b"POST /v4/keyvalues/ns HTTP/1.1\r\nHost: x\r\nX-HTTP-Method-Override: P\xffT\r\n\
          Content-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        response.status,
        400,
        "{}",
        String::from_utf8_lossy(&response.body)
    );

    // Nothing was stored by any of it.
    let response = raw::exchange(
        port,
        b"GET /v4/keyvaluesnamespaces HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    assert_eq!(response.json(), json!([]));
}

#[test]
fn deeply_nested_json_is_a_400_not_a_stack_overflow() {
    let _alone = support::alone();
    let server = hostile_server();
    let port = server.port;
    let monitor = Monitor::start(port, false);
    // Up to 150,000 levels: the deepest body that still fits in maxBodyBytes (1 MiB).
    for depth in [129, 10_000, 150_000] {
        for body in [
            "[".repeat(depth),
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            format!("{{\"key\":\"a\",\"value\":{}}}", "{\"a\":".repeat(depth)),
        ] {
            let started = Instant::now();
            let response = raw::post(port, b"/v4/keyvalues/nested", body.as_bytes())
                .unwrap_or_else(|| panic!("depth {depth}: connection closed: server crashed?"));
            assert_butler_error(&response, 400, "");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "depth {depth}: took {:?}",
                started.elapsed()
            );
        }
    }
    assert_responsive("nested JSON", &monitor.finish());
    // Still alive and nothing stored.
    let response = raw::exchange(
        port,
        b"GET /v4/keyvaluesnamespaces HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    assert_eq!(response.json(), json!([]));
}

/// Malformed JSON shapes, and well-formed JSON of the wrong shape: each must be a
/// Butler-style 400 whose message names the problem, and store nothing.
#[test]
fn every_malformed_json_shape_in_the_corpus_is_a_clear_400() {
    let _alone = support::alone();
    let corpus: &[&[u8]] = &[
        b"{",
        b"}",
        b"{\"key\"",
        b"{\"key\":}",
        b"{\"key\":\"a\",}",
        b"{\"key\":\"a\" \"value\":\"b\"}",
        b"{'key':'a'}",
        b"{key:\"a\"}",
        b"{\"key\":\"a\"}}",
        b"{\"key\":\"a\"} {\"key\":\"b\"}",
        b"{\"key\":\"a\"}garbage",
        b"{\"key\":\"unterminated}",
        b"{\"key\":\"a\\x41\"}",
        b"{\"key\":\"a\\u00\"}",
        b"{\"key\":\"\\ud800\"}",
        b"{\"key\":\"tab\there\"}",
        b"{\"key\":\"nul\x00\"}",
        b"{\"key\":\"a\",\"ttl\":NaN}",
        b"{\"key\":\"a\",\"ttl\":Infinity}",
        b"{\"key\":\"a\",\"ttl\":-}",
        b"{\"key\":\"a\",\"ttl\":01}",
        b"{\"key\":\"a\",\"ttl\":1.}",
        b"{\"key\":\"a\",\"ttl\":.5}",
        b"{\"key\":\"a\",\"ttl\":0x10}",
        b"{\"key\":\"a\",\"value\":undefined}",
        b"{\"key\":\"a\",\"value\":True}",
        b"{\"key\":\"a\" /* comment */}",
        b"\xef\xbb\xbf{\"key\":\"a\"}",
        b"\x00",
        b"[",
        b"\"",
        b"nul",
        b"-",
        b"1e",
        // Well-formed JSON of the wrong shape.
        b"[]",
        b"[{\"key\":\"a\"}]",
        b"\"key\"",
        b"42",
        b"true",
        b"null",
        b"{}",
        b"{\"key\":\"\"}",
        b"{\"key\":{}}",
        b"{\"key\":[\"a\"]}",
        b"{\"key\":\"a\",\"value\":{\"b\":1}}",
        b"{\"key\":\"a\",\"value\":[1,2]}",
        b"{\"key\":\"a\",\"ttl\":\"\"}",
        b"{\"key\":\"a\",\"ttl\":\"soon\"}",
        b"{\"key\":\"a\",\"ttl\":\"1e999\"}",
        b"{\"key\":\"a\",\"ttl\":[1]}",
        b"{\"key\":\"a\",\"ttl\":{}}",
        b"{\"key\":\"a\",\"ttl\":true}",
        b"   ",
        b"",
    ];
    let server = hostile_server();
    let port = server.port;
    let monitor = Monitor::start(port, false);
    for body in corpus {
        let shown = String::from_utf8_lossy(body);
        let response = raw::post(port, b"/v4/keyvalues/corpus", body)
            .unwrap_or_else(|| panic!("{shown:?}: connection closed: server crashed?"));
        let parsed: Value = response.json();
        assert_eq!(response.status, 400, "{shown:?} → {parsed}");
        assert_eq!(parsed["statusCode"], 400, "{shown:?} → {parsed}");
        let message = parsed["message"].as_str().unwrap_or_default();
        assert!(message.len() > 10, "{shown:?}: unclear message {message:?}");
    }
    assert_responsive("malformed JSON corpus", &monitor.finish());
    let response = raw::exchange(
        port,
        b"GET /v4/keyvaluesnamespaces HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        response.json(),
        json!([]),
        "something in the corpus was stored"
    );
}

/// Three HTTP/2 connections, each opening 200 streams of ~1 MB bodies that never end (the
/// attack that pinned ~200 MiB per connection): the server's resident memory stays within a
/// bounded amount above idle while it lasts, a ping on another connection is answered, and
/// memory comes back near idle afterwards. Figures are printed (`--nocapture`).
#[test]
fn an_http2_body_flood_cannot_grow_memory_past_the_budget() {
    let _alone = support::alone();
    let server = Server::start(&format!(
        "{KV_CONFIG}ButlerEdge:\n  limits:\n    bodyReadTimeoutMs: 30000\n"
    ));
    let pid = server.pid();
    std::thread::sleep(Duration::from_millis(500));
    let idle = raw::rss_mib(pid);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hold = Duration::from_secs(8);
    let attack = {
        let port = server.port;
        runtime.spawn(async move {
            let floods = (0..3).map(|_| raw::h2_body_flood(port, 200, 1_000_000, hold));
            futures_util::future::join_all(floods).await;
        })
    };
    let started = Instant::now();
    let mut peak = idle;
    let mut ping_answered = false;
    while started.elapsed() < hold {
        peak = peak.max(raw::rss_mib(pid));
        if !ping_answered && started.elapsed() > Duration::from_secs(3) {
            let response = raw::exchange(
                server.port,
                b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            ping_answered = response.is_some_and(|r| r.status == 200);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    runtime.block_on(attack).unwrap();
    drop(runtime);
    std::thread::sleep(Duration::from_secs(2));
    let after = raw::rss_mib(pid);
    println!(
        "HTTP/2 body flood (3 connections × 200 streams × 1 MB): RSS idle {idle:.1} MiB, peak {peak:.1} MiB, after {after:.1} MiB"
    );
    assert!(ping_answered, "no ping answered during the flood");
    assert!(
        peak - idle < 160.0,
        "peak RSS {peak:.1} MiB vs idle {idle:.1} MiB"
    );
    assert!(
        after - idle < 100.0,
        "RSS after the flood {after:.1} MiB vs idle {idle:.1} MiB"
    );
}
