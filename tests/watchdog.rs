//! The systemd watchdog, black box: the test plays systemd's side of `Type=notify` (a
//! `NOTIFY_SOCKET` datagram socket and `WATCHDOG_USEC`), so it sees what the service tells
//! systemd. It checks `READY=1` once the API answers, `WATCHDOG=1` at half the interval while
//! the service is well, and — the path that matters — no `WATCHDOG=1` while the liveness
//! check fails, so that systemd would kill and restart it.
//!
//! The failure is real, not simulated: the database's writer thread is frozen with ptrace
//! (`PTRACE_SEIZE` + `PTRACE_INTERRUPT` stop that one thread, as a commit stuck in a hung
//! fsync would), while the rest of the process runs on. Thawing it must bring the pings
//! back and complete the write that queued behind it.

use crate::support;

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::ptrace;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use support::server::{KV_CONFIG, Launch, client, json_of};

const WATCHDOG: Duration = Duration::from_millis(1000);

/// What the service sent to the notify socket, with when it arrived.
fn listen(socket: UnixDatagram) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if tx.send((Instant::now(), message)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits up to `within` for a message containing `needle`.
fn wait_for(rx: &mpsc::Receiver<(Instant, String)>, needle: &str, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, message)) if message.lines().any(|l| l == needle) => return at,
            Ok(_) => {}
            Err(_) => panic!("no {needle} within {within:?}"),
        }
    }
}

/// The messages that arrive within `window`.
fn collect(rx: &mpsc::Receiver<(Instant, String)>, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while let Ok((_, message)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        out.push(message);
    }
    out
}

fn thread_named(pid: u32, name: &str) -> Pid {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads") {
        let entry = entry.expect("thread entry");
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let tid: i32 = entry.file_name().to_string_lossy().parse().expect("tid");
            return Pid::from_raw(tid);
        }
    }
    panic!("no thread named {name} in process {pid}");
}

#[test]
fn watchdog_pings_stop_while_the_database_writer_is_stuck_and_resume_after() {
    let _alone = support::alone();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let rx = listen(socket);
    let usec = (WATCHDOG.as_micros() as u64).to_string();
    let socket_text = socket_path.display().to_string();
    let server = Launch::fresh(KV_CONFIG)
        .in_dir(dir)
        .env("NOTIFY_SOCKET", &socket_text)
        .env("WATCHDOG_USEC", &usec)
        .spawn();

    // Ready, and then pinging at about half the interval.
    wait_for(&rx, "READY=1", Duration::from_secs(10));
    let (status, _) = json_of(client().get(server.url("/v4/butlerping")).send().unwrap());
    assert_eq!(status, 200);
    let first = wait_for(&rx, "WATCHDOG=1", Duration::from_secs(5));
    let second = wait_for(&rx, "WATCHDOG=1", Duration::from_secs(5));
    let period = second - first;
    println!("watchdog {WATCHDOG:?}: pings {period:?} apart while well");
    assert!(
        period < WATCHDOG,
        "pings must come faster than the watchdog interval: {period:?}"
    );

    // Freeze the writer thread, as a commit stuck in fsync would.
    let writer = thread_named(server.pid(), "kv-writer");
    ptrace::seize(writer, ptrace::Options::empty()).expect("PTRACE_SEIZE the writer thread");
    ptrace::interrupt(writer).expect("PTRACE_INTERRUPT the writer thread");
    waitpid(writer, Some(WaitPidFlag::__WALL)).expect("wait for the writer thread to stop");
    let frozen = Instant::now();

    // A write queues behind it and is not acknowledged while the writer is stuck.
    let url = server.url("/v4/keyvalues/watchdog");
    let write = std::thread::spawn(move || {
        json_of(
            client()
                .post(url)
                .header("Content-Type", "application/json")
                .body(r#"{"key":"queued","value":"behind a stuck commit"}"#)
                .send()
                .unwrap(),
        )
    });

    server.wait_for_log("the database writer did not take work", 1);
    println!(
        "liveness failure logged {:?} after the writer froze",
        frozen.elapsed()
    );
    // Drain pings sent before the failure was seen, then there must be none for longer than
    // systemd would wait: it would kill and restart the service now.
    let _ = collect(&rx, Duration::from_millis(100));
    let silent = collect(&rx, WATCHDOG * 2);
    assert!(
        !silent.iter().any(|m| m.lines().any(|l| l == "WATCHDOG=1")),
        "pinged the watchdog while the writer was stuck: {silent:?}"
    );
    assert!(
        !write.is_finished(),
        "a write was answered with the writer stuck"
    );
    // Reads do not need the writer and keep working.
    let (status, _) = json_of(
        client()
            .get(server.url("/v4/keyvaluesnamespaces"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);

    // Thaw it: the queued write completes and the pings come back.
    ptrace::detach(writer, None).expect("PTRACE_DETACH the writer thread");
    let thawed = Instant::now();
    let (status, body) = write.join().expect("write thread");
    assert_eq!(status, 201, "{body}");
    wait_for(&rx, "WATCHDOG=1", WATCHDOG * 3);
    println!(
        "pings resumed {:?} after the writer thawed",
        thawed.elapsed()
    );
    server.wait_for_log("liveness check passes again", 1);
    let (status, body) = json_of(
        client()
            .get(server.url("/v4/keyvalues/watchdog?key=queued"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "behind a stuck commit");
}
