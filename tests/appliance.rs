//! The appliance behaviour of the real binary: the systemd notify protocol (READY only once
//! the API answers, WATCHDOG pings, STOPPING on shutdown) spoken to a notify socket of our
//! own, root refused outside systemd, privileges dropped with `--user`, and the free-disk
//! guard's 507.

use crate::support;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::server::{KV_CONFIG, Launch, Server, client, json_of};

/// Sends SIGTERM without waiting, so a test can watch what the process says while it stops.
fn send_term(server: &Server) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// Receives notify datagrams until one contains `want` (or the deadline passes).
fn wait_for_message(socket: &UnixDatagram, want: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.lines().any(|l| l == want) {
                    return Some(text);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    None
}

#[test]
fn speaks_the_systemd_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    // Not waited for: READY=1 itself must say when the listener accepts.
    let mut server = Launch::fresh(KV_CONFIG)
        .in_dir(dir)
        .no_user()
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        // A 400 ms watchdog: pings every 200 ms while the liveness check passes.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .spawn_unready();
    let port = server.port;

    let ready = wait_for_message(&socket, "READY=1", Duration::from_secs(20));
    let Some(ready) = ready else {
        panic!("no READY=1 within 20 s; log:\n{}", server.log());
    };
    // READY=1 means the API answers: the listener is bound and the database open.
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "READY=1 sent before the listener accepts"
    );
    assert!(ready.contains("STATUS=serving on"), "{ready}");
    let (status, _) = json_of(
        client()
            .get(format!("http://127.0.0.1:{port}/v4/butlerping"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);

    // Watchdog pings keep coming, about every 200 ms.
    let started = Instant::now();
    for _ in 0..3 {
        assert!(
            wait_for_message(&socket, "WATCHDOG=1", Duration::from_secs(2)).is_some(),
            "no WATCHDOG=1 ping within 2 s"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "three watchdog pings took {:?}",
        started.elapsed()
    );

    send_term(&server);
    assert!(
        wait_for_message(&socket, "STOPPING=1", Duration::from_secs(10)).is_some(),
        "no STOPPING=1 after SIGTERM"
    );
    let status = server.terminate_wait();
    let log = server.log();
    assert!(status.success(), "exit status {status}");
    // The line the next test relies on being absent without a watchdog.
    assert!(log.contains("systemd watchdog enabled"), "{log}");
}

#[test]
fn without_a_watchdog_no_pings_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut server = Launch::fresh(KV_CONFIG)
        .in_dir(dir)
        .no_user()
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .env_remove("WATCHDOG_USEC")
        .spawn_unready();
    assert!(wait_for_message(&socket, "READY=1", Duration::from_secs(20)).is_some());
    assert!(wait_for_message(&socket, "WATCHDOG=1", Duration::from_secs(1)).is_none());
    // A ping at any period would come after the watchdog task starts, which it announces;
    // with no watchdog it must not start at all. Every datagram up to the end is checked.
    send_term(&server);
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|m: &String| m.contains("STOPPING=1")) && Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let status = server.terminate_wait();
    let log = server.log();
    assert!(status.success(), "exit status {status}: {log}");
    assert!(!seen.iter().any(|m| m.contains("WATCHDOG=1")), "{seen:?}");
    assert!(seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
    assert!(!log.contains("systemd watchdog enabled"), "{log}");
}

#[test]
fn root_is_refused_outside_systemd_without_user() {
    let dir = tempfile::tempdir().unwrap();
    let outside_systemd = || {
        Launch::new(KV_CONFIG, dir.path())
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
    };
    if nix::unistd::geteuid().is_root() {
        let exit = outside_systemd()
            .no_user()
            .expect_exit(Duration::from_secs(20), "as root without --user");
        let stderr = exit.stderr;
        assert_eq!(exit.code, 1, "{stderr}");
        assert!(stderr.contains("refusing to run as root"), "{stderr}");
        assert!(stderr.contains("--user"), "{stderr}");
        assert!(
            !dir.path().join("data").exists(),
            "the data directory was created before refusing"
        );
    } else {
        // Not root: --user to another account is refused (only root can switch users).
        let exit = outside_systemd()
            .user("root")
            .expect_exit(Duration::from_secs(20), "switching users without root");
        let stderr = exit.stderr;
        assert_eq!(exit.code, 1, "{stderr}");
        assert!(stderr.contains("only root can change"), "{stderr}");
    }
}

#[test]
fn user_flag_drops_root_after_binding() {
    if !nix::unistd::geteuid().is_root() {
        support::skip(
            "user_flag_drops_root_after_binding",
            "needs root to drop privileges",
        );
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let mut server = Launch::fresh(KV_CONFIG)
        .user("nobody")
        .env_remove("INVOCATION_ID")
        .env_remove("NOTIFY_SOCKET")
        .spawn();
    let port = server.port;
    // Every uid and gid of the process (real, effective, saved, fs) is nobody's. The drop
    // follows the bind by a moment, so the listener may answer while the process is still
    // root: wait for the change (within a bound) before judging.
    let ids_in = |status: &str, key: &str| -> Vec<u32> {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let read_status = || std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let mut status = read_status();
    let drop_deadline = Instant::now() + Duration::from_secs(5);
    while ids_in(&status, "Uid:").contains(&0) && Instant::now() < drop_deadline {
        std::thread::sleep(Duration::from_millis(10));
        status = read_status();
    }
    let ids = |key: &str| ids_in(&status, key);
    assert_eq!(ids("Uid:"), vec![nobody.uid.as_raw(); 4], "{status}");
    assert_eq!(ids("Gid:"), vec![nobody.gid.as_raw(); 4], "{status}");
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(
        groups.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec![nobody.gid.as_raw().to_string()]
    );
    // The database, opened before the drop, still takes writes.
    let (code, body) = json_of(
        client()
            .post(format!("http://127.0.0.1:{port}/v4/keyvalues/ns"))
            .header("Content-Type", "application/json")
            .body(r#"{"key":"k","value":"v"}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201, "{body}");
    let status = server.terminate();
    let log = server.log();
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert!(log.contains("dropped root privileges"), "{log}");
}

#[test]
fn low_disk_space_refuses_writes_with_507_and_keeps_reads() {
    // First a normal server stores a key.
    let mut server = Server::start(KV_CONFIG);
    let (code, body) = json_of(
        client()
            .post(server.url("/v4/keyvalues/disk"))
            .header("Content-Type", "application/json")
            .body(r#"{"key":"before","value":"kept"}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201, "{body}");
    server.terminate();

    // Then the same data directory under a guard that no real disk can satisfy (1 EiB free).
    let config = format!("{KV_CONFIG}ButlerEdge:\n  minFreeDiskBytes: 1152921504606846976\n");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = server.data_dir.clone();
    let guarded = Server::start_in(dir, data_dir, &config);
    let (code, body) = json_of(
        client()
            .post(guarded.url("/v4/keyvalues/disk"))
            .header("Content-Type", "application/json")
            .body(r#"{"key":"after","value":"refused"}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 507, "{body}");
    assert_eq!(body["statusCode"], 507);
    assert_eq!(body["error"], "Insufficient Storage");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("ButlerEdge.minFreeDiskBytes"), "{message}");
    assert!(message.contains("1152921504606846976"), "{message}");

    // Reads keep working and nothing was stored.
    let (code, body) = json_of(
        client()
            .get(guarded.url("/v4/keyvalues/disk?key=before"))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["value"], "kept");
    let (code, body): (u16, Value) = json_of(
        client()
            .get(guarded.url("/v4/keyvalues/disk/keyexists?key=after"))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200);
    assert_eq!(body["keyExists"], false);
    // Deletes still work: they are how an admin makes room.
    let response = client()
        .delete(guarded.url("/v4/keyvalues/disk/before"))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
}
