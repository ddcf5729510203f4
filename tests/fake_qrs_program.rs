//! The runnable fake QRS (`cargo run --example fake-qrs`), as the README's quick start and the
//! appliance boot test use it: the certificate files and the config it writes work with the
//! real butler-edge, a start comes back with the execution session id the fake recorded, and
//! bad arguments are refused with a message.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::server::{Server, client, json_of};

const TASK: &str = "12345678-aaaa-4bbb-8ccc-1234567890ab";

/// The example's binary. `cargo test` builds examples; a run of this file alone
/// (`cargo test --test it fake_qrs_program`) does not, so it is built here then.
fn program() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join("fake-qrs");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        if !path.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--locked", "--example", "fake-qrs"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build --example fake-qrs");
            assert!(status.success(), "cargo build --example fake-qrs failed");
        }
    });
    path
}

struct Running {
    child: Child,
    stdout: Vec<String>,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the program and reads its stdout up to the `listening on` line. (The child is in
/// a [`Running`] from the start, so that it is killed and reaped on every path.)
fn start(args: &[&str]) -> Running {
    let child = Command::new(program())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fake-qrs");
    let mut running = Running {
        child,
        stdout: Vec::new(),
        addr: String::new(),
    };
    let mut lines = BufReader::new(running.child.stdout.take().expect("piped stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        running.stdout.push(line.clone());
        if let Some(addr) = line.strip_prefix("fake-qrs: listening on ") {
            running.addr = addr.to_string();
            return running;
        }
    }
    panic!(
        "fake-qrs did not say it listens; stdout:\n{}",
        running.stdout.join("\n")
    );
}

#[test]
fn starts_a_task_for_the_real_service_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("starts.jsonl");
    let certs = dir.path().join("certs");
    let fake = start(&[
        "--dir",
        certs.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--san",
        "qrs.example",
        "--task",
        &format!("{TASK}=Reload Sales"),
        "--record",
        record.to_str().unwrap(),
    ]);
    let out = fake.stdout.join("\n");
    for file in ["client.pem", "client_key.pem", "root.pem"] {
        let path = certs.canonicalize().unwrap().join(file);
        assert!(path.exists(), "{file}");
        assert!(out.contains(&path.display().to_string()), "{out}");
    }
    assert!(
        std::fs::read_to_string(certs.join("client_key.pem"))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "Sense's PKCS#1 form"
    );
    let port = fake.addr.rsplit(':').next().unwrap();
    assert!(out.contains(&format!("port: {port}")), "{out}");
    assert!(out.contains("host: localhost"), "{out}");
    assert!(out.contains(TASK) && out.contains("Reload Sales"), "{out}");

    // The config it wrote, as a newcomer would run it (on a free port instead of 8080).
    let config = std::fs::read_to_string(certs.join("butler-edge.yaml")).unwrap();
    let server = Server::start(&config.replace("serverPort: 8080", "serverPort: {port}"));
    let (status, r) = json_of(
        client()
            .put(server.url(&format!("/v4/reloadtask/{TASK}/start")))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{r}");
    let started = &r["tasksId"]["started"][0];
    assert_eq!(started["taskName"], "Reload Sales", "{r}");
    let session = started["executionSessionId"].as_str().unwrap().to_string();

    let lines: Vec<Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["taskId"], TASK);
    assert_eq!(lines[0]["executionSessionId"], session.as_str());
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    assert!(lines[0]["unixMs"].as_u64().unwrap() > 1_700_000_000_000);

    // A tag nothing carries starts nothing and records nothing.
    let (status, r) = json_of(
        client()
            .put(server.url("/v4/reloadtask/-/start"))
            .header("Content-Type", "application/json")
            .body(r#"[{"type":"starttasktag","payload":{"tag":"it's \\ nowhere"}}]"#)
            .send()
            .unwrap(),
    );
    assert_eq!((status, r["tasksTag"].clone()), (200, Value::Array(vec![])));
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(recorded.lines().count(), 1, "{recorded}");

    // SIGTERM ends it cleanly.
    let mut fake = fake;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fake.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "fake-qrs ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn default_tasks_are_printed_and_bad_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = start(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = fake.stdout.join("\n");
    assert!(
        out.contains("aaaaaaaa-0000-4000-8000-000000000001"),
        "{out}"
    );
    drop(fake);

    for (args, expected) in [
        (vec!["--task", "not-a-guid"], "--task \"not-a-guid\""),
        (
            vec!["--listen", "192.0.2.1:99999"],
            "--listen 192.0.2.1:99999",
        ),
    ] {
        let mut all = vec!["--dir", dir.path().to_str().unwrap()];
        all.extend(args);
        let output = Command::new(program()).args(&all).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{all:?}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(expected), "{all:?}: {err}");
    }
}
