//! Durability: what was acknowledged survives restarts and `kill -9`; TTLs keep
//! counting across restarts; a damaged database is reported, never reset.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::raw;
use support::server::{KV_CONFIG, Server, client, json_of, run_cli};

/// `POST /v4/keyvalues/{namespace}`: the status.
fn post_pair(server_port: u16, namespace: &str, body: &Value) -> Result<u16, reqwest::Error> {
    let response = client()
        .post(format!(
            "http://127.0.0.1:{server_port}/v4/keyvalues/{namespace}"
        ))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()?;
    Ok(response.status().as_u16())
}

#[test]
fn values_and_ttls_survive_a_clean_restart() {
    let mut server = Server::start(KV_CONFIG);
    assert_eq!(
        post_pair(server.port, "keep", &json!({"key":"forever","value":"1"})).unwrap(),
        201
    );
    assert_eq!(
        post_pair(
            server.port,
            "keep",
            &json!({"key":"brief","value":"2","ttl":2500})
        )
        .unwrap(),
        201
    );
    let written = Instant::now();
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM must end with exit 0, got {status}"
    );
    assert!(
        server.log().contains("key-value store closed"),
        "{}",
        server.log()
    );
    server.restart();
    assert_eq!(
        server.butler().kv_value("keep", "forever").as_deref(),
        Some("1")
    );
    assert_eq!(
        server.butler().kv_value("keep", "brief").as_deref(),
        Some("2")
    );
    // Closed cleanly: redb had nothing to recover.
    assert!(!server.log().contains("crash recovery"), "{}", server.log());
    // The deadline is absolute: it passes while the service keeps running after
    // the restart, 2.5 s after the write, not 2.5 s after the restart.
    let remaining = Duration::from_millis(2700).saturating_sub(written.elapsed());
    std::thread::sleep(remaining);
    assert_eq!(server.butler().kv_value("keep", "brief"), None);
    assert_eq!(
        server.butler().kv_value("keep", "forever").as_deref(),
        Some("1")
    );
}

/// A key whose TTL ends while the service is stopped is removed at start (by the sweeper,
/// counted in `/metrics`), not merely hidden by the read path.
#[test]
fn a_ttl_that_ran_out_while_stopped_is_gone_at_start() {
    let config = format!("{KV_CONFIG}ButlerEdge:\n  endpointsEnable:\n    metrics: true\n");
    let mut server = Server::start(&config);
    let ttl_ms = 1000;
    let written = Instant::now();
    assert_eq!(
        post_pair(
            server.port,
            "t",
            &json!({"key":"k","value":"v","ttl":ttl_ms.to_string()})
        )
        .unwrap(),
        201,
        "a TTL sent as a string is accepted"
    );
    assert_eq!(
        post_pair(server.port, "t", &json!({"key":"stay","value":"v"})).unwrap(),
        201
    );
    assert_eq!(
        server.butler().kv_value("t", "k").as_deref(),
        Some("v"),
        "read within its TTL"
    );
    server.kill9();
    // Stopped until well past the deadline.
    std::thread::sleep(Duration::from_millis(ttl_ms + 300).saturating_sub(written.elapsed()));
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while raw::metric(server.port, "butler_edge_kv_expired_removed_total") < 1 {
        assert!(
            Instant::now() < deadline,
            "the expired key was not removed at start:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(raw::metric(server.port, "butler_edge_kv_keys"), 1);
    assert_eq!(server.butler().kv_value("t", "k"), None);
    let (_, body) = json_of(client().get(server.url("/v4/keylist/t")).send().unwrap());
    assert_eq!(body["keys"], json!([{"key":"stay"}]));
}

/// Writers hammer the server; it is killed with SIGKILL mid-load; every write
/// that got a 201 before the kill must be there after the restart.
#[test]
fn acknowledged_writes_survive_kill_9_under_concurrent_load() {
    let mut server = Server::start(&KV_CONFIG.replace("{max_keys}", "1000000"));
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..16 {
        let stop = stop.clone();
        let acknowledged = acknowledged.clone();
        writers.push(std::thread::spawn(move || {
            let mut attempted = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{writer}-k{n}");
                let value = format!("value {n} from writer {writer}");
                n += 1;
                attempted += 1;
                let body = json!({"key": key, "value": value});
                match post_pair(port, "crash", &body) {
                    Ok(201) => acknowledged.lock().unwrap().push((key, value)),
                    Ok(other) => panic!("unexpected status {other}"),
                    // Connection reset by the kill: not acknowledged, may or may not be stored.
                    Err(_) => {}
                }
            }
            attempted
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let attempted: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 100,
        "the load was too light to test anything: {} acknowledged",
        acknowledged.len()
    );
    let restarting = Instant::now();
    server.restart();
    let restart_ms = restarting.elapsed().as_millis();
    let mut lost = Vec::new();
    for (key, value) in &acknowledged {
        if server.butler().kv_value("crash", key).as_deref() != Some(value.as_str()) {
            lost.push(key.clone());
        }
    }
    let (_, listed) = json_of(
        client()
            .get(server.url("/v4/keylist/crash"))
            .send()
            .unwrap(),
    );
    let stored = listed["keys"].as_array().map_or(0, Vec::len);
    println!(
        "kill -9 under load: {attempted} writes attempted, {} acknowledged, {stored} stored after restart, {} lost; restart to listening took {restart_ms} ms",
        acknowledged.len(),
        lost.len(),
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(stored >= acknowledged.len());
    // redb's own recovery ran (and said so) and the database opened: no repair tool, no
    // refusal, no manual step.
    assert!(server.log().contains("crash recovery"), "{}", server.log());
}

#[test]
fn a_damaged_database_is_an_error_naming_the_file_and_is_left_alone() {
    let mut server = Server::start(KV_CONFIG);
    assert_eq!(
        post_pair(server.port, "precious", &json!({"key":"k","value":"v"})).unwrap(),
        201
    );
    server.terminate();
    let db = server.data_dir.join("butler-edge.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    // Overwrite the header (magic number and god byte).
    for b in bytes.iter_mut().take(64) {
        *b = 0xAB;
    }
    std::fs::write(&db, &bytes).unwrap();
    let before = std::fs::read(&db).unwrap();
    let (code, _, err) = run_cli(&[
        "--config",
        &server.config_path.display().to_string(),
        "--data-dir",
        &server.data_dir.display().to_string(),
    ]);
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("cannot open the key-value database"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the damaged file must not be rewritten"
    );
}

#[test]
fn a_second_instance_on_the_same_data_dir_is_refused() {
    let server = Server::start(KV_CONFIG);
    let (code, _, err) = run_cli(&[
        "--config",
        &server.config_path.display().to_string(),
        "--data-dir",
        &server.data_dir.display().to_string(),
    ]);
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains("butler-edge.redb"), "{err}");
}

/// SIGTERM while a request is half-sent: the server stops accepting, lets the
/// request finish and be acknowledged, closes the database and exits 0.
#[test]
fn sigterm_finishes_in_flight_requests_then_exits_cleanly() {
    use std::io::{Read, Write};
    let mut server = Server::start(KV_CONFIG);
    let body = r#"{"key":"in flight","value":"made it"}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /v4/keyvalues/shutdown HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = server.pid();
    let killer = std::thread::spawn(move || {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
    });
    killer.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // New connections are no longer accepted...
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err(),
        "the listener must be closed once shutdown starts"
    );
    // ...but the in-flight request completes.
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let status = server.terminate_wait();
    assert!(status.success(), "exit status {status}");
    server.restart();
    assert_eq!(
        server
            .butler()
            .kv_value("shutdown", "in%20flight")
            .as_deref(),
        Some("made it")
    );
}
