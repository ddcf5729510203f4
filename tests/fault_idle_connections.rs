//! 10,000 idle connections: as many connections as the server's connection limit
//! (`ButlerEdge.limits.maxConnections`, default 10,000) open and send nothing.
//! An existing keep-alive caller must stay responsive throughout, the idle
//! connections must be closed by the header read timeout, and a new caller (who
//! finds every connection slot taken) must be served promptly, by the server closing
//! the connection idle longest, not after the header read timeout frees a slot.
//!
//! The server is started with systemd's default soft open-file limit (1024) and
//! must raise it to fit its connection limit. In its own test binary: it needs
//! about 10,000 file descriptors in this process and as many in the server.

use crate::support;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use support::raw::{self, Monitor};
use support::server::{KV_CONFIG, Server};

const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
const WANTED: u64 = 10_000;

fn open_files_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn ten_thousand_idle_connections_are_cut_off_and_a_new_caller_gets_in_promptly() {
    let _alone = support::alone();
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    // The server starts with systemd's default soft limit of 1024 (inherited from
    // this process) and must raise it itself to hold maxConnections.
    setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard).expect("lower RLIMIT_NOFILE");
    let server = Server::start(&format!(
        "{KV_CONFIG}ButlerEdge:\n  endpointsEnable:\n    metrics: true\n  limits:\n    headerReadTimeoutMs: {}\n",
        HEADER_TIMEOUT.as_millis()
    ));
    // This process needs one descriptor per connection too.
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
    let soft = hard;
    // Both ends of every connection live on this machine: half each, minus headroom.
    let count = WANTED.min(soft.saturating_sub(500));
    if count < WANTED {
        // Fewer connections would prove less than this test's name says.
        support::skip(
            "ten_thousand_idle_connections_are_cut_off_and_a_new_caller_gets_in_promptly",
            &format!(
                "the open-file hard limit ({hard}) allows only {count} of the {WANTED} \
                 connections; raise it (ulimit -Hn) to run this test"
            ),
        );
        return;
    }
    let pid = server.pid();
    println!(
        "file descriptor limit: test process {soft}; server (started with a soft limit of 1024): {}",
        open_files_limit(pid)
    );
    let server_soft: u64 = open_files_limit(pid)
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        server_soft >= count.min(hard.saturating_sub(300)),
        "the server kept an open-file limit of {server_soft}, too low for {count} connections"
    );
    let baseline_fds = open_fds(pid);
    let monitor = Monitor::start(server.port, false);

    let opening = Instant::now();
    let mut idle: Vec<(Instant, TcpStream)> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        match TcpStream::connect(("127.0.0.1", server.port)) {
            Ok(stream) => idle.push((Instant::now(), stream)),
            Err(e) => panic!("connection {} refused: {e}", idle.len()),
        }
        // Paced so the listen backlog never overflows: a dropped SYN costs the
        // client a 1 s retransmit, and the flood would outlast the timeout.
        if idle.len() % 200 == 0 {
            let pacing = Instant::now();
            while open_fds(pid) < baseline_fds + idle.len() - 50
                && pacing.elapsed() < Duration::from_secs(2)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    let opened_in = opening.elapsed();
    let peak_fds = open_fds(pid);
    println!(
        "{count} idle connections opened in {opened_in:?}; server holds {peak_fds} fds \
         (baseline {baseline_fds})"
    );
    if opened_in > HEADER_TIMEOUT {
        println!(
            "note: opening took longer than the header timeout (a busy machine), so the \
             first ones were already cut off: fewer than {count} were open at once"
        );
    }

    // A new caller now: every slot is taken (the monitor holds one too), so the server
    // must close the connection idle longest to serve it, instead of letting it wait
    // for the header timeout to free a slot.
    let all_taken = count == WANTED && opened_in < HEADER_TIMEOUT;
    let probing = Instant::now();
    let answered = raw::exchange(
        server.port,
        b"GET /v4/butlerping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .map(|r| r.status);
    let new_caller_wait = probing.elapsed();
    println!(
        "a new caller during the flood (every slot taken: {all_taken}) was answered \
         {answered:?} after {new_caller_wait:?}"
    );
    assert_eq!(answered, Some(200));
    // Far below the 20 s header timeout, with headroom for a loaded 2-core machine.
    assert!(
        new_caller_wait < Duration::from_secs(5),
        "new caller waited {new_caller_wait:?}"
    );
    let evicted = raw::metric(server.port, "butler_edge_http_connections_evicted_total");
    println!("idle connections evicted to make room: {evicted}");
    if all_taken {
        assert!(
            evicted >= 1,
            "no connection was evicted, yet the newcomer got in"
        );
    }

    // Every idle connection is closed by the server (EOF) within the header
    // timeout of being accepted (or earlier, if evicted). Nobody waits for a slot
    // any more, so the accept follows the connect closely; plus slack for scheduling.
    let limit = HEADER_TIMEOUT + Duration::from_secs(5);
    let mut still_open = 0;
    for (opened, stream) in &mut idle {
        let left = limit.saturating_sub(opened.elapsed());
        let closed = if left.is_zero() {
            stream.set_nonblocking(true).expect("nonblocking");
            let mut byte = [0u8; 1];
            !matches!(stream.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
        } else {
            raw::time_until_closed(stream, left).is_some()
        };
        if !closed {
            still_open += 1;
        }
    }
    drop(idle);
    let report = monitor.finish();
    println!("well-behaved keep-alive client during the flood: {report}");
    std::thread::sleep(Duration::from_millis(500));
    let after_fds = open_fds(pid);
    println!(
        "{still_open} of {count} idle connections still open after {:?}; server fds back to {after_fds}",
        opening.elapsed()
    );
    assert_eq!(still_open, 0, "idle connections were not cut off");
    assert_eq!(report.failures, 0, "{report}");
    assert!(report.max_ms < 2000.0, "{report}");
    assert!(
        after_fds <= baseline_fds + 5,
        "server leaks descriptors: {after_fds} open, {baseline_fds} at the start"
    );
}
