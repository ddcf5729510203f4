//! Disk trouble at start-up: a data directory the service may not write, a data
//! directory that cannot be created, and an existing database made read-only.
//! Each is a clear error naming the path, exit status 1 within seconds, and the
//! existing database file is left exactly as it was.
//!
//! Permissions do not stop root, so when the tests run as root the binary is
//! started as `nobody` (uid/gid 65534), as the appliance runs it unprivileged.
//!
//! (A nearly full filesystem is refused by the free-space guard of the appliance
//! issue; its test belongs with that guard.)

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::server::{BIN, KV_CONFIG, Server, free_port};

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs the service on `data_dir` (as nobody when we are root) and expects it to
/// exit by itself: (status code, stderr, time to exit).
fn run_expecting_exit(dir: &Path, data_dir: &Path) -> (i32, String, Duration) {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        KV_CONFIG
            .replace("{port}", &free_port().to_string())
            .replace("{max_keys}", "1000"),
    )
    .expect("write config");
    chmod(dir, 0o755);
    chmod(&config, 0o644);
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if is_root() {
        command.uid(NOBODY).gid(NOBODY);
    }
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn butler-edge");
    let deadline = started + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("butler-edge kept running on an unusable data directory");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (status.code().unwrap_or(-1), stderr, started.elapsed())
}

#[test]
fn a_read_only_data_directory_is_a_clear_error_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o555);
    let (code, stderr, took) = run_expecting_exit(dir.path(), &data);
    println!("read-only data directory: exit {code} after {took:?}: {stderr}");
    assert_eq!(code, 1, "{stderr}");
    let db = data.join("butler-edge.redb");
    assert!(
        stderr.contains(&db.display().to_string()) && stderr.contains("ermission denied"),
        "the error should name the database file and the cause: {stderr}"
    );
    assert!(
        stderr.contains("writable for the user butler-edge runs as"),
        "the message says what to fix: {stderr}"
    );
    assert!(!db.exists(), "nothing may be created");
}

#[test]
fn a_data_directory_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("locked");
    std::fs::create_dir(&parent).unwrap();
    chmod(&parent, 0o555);
    let data = parent.join("data");
    let (code, stderr, _) = run_expecting_exit(dir.path(), &data);
    println!("uncreatable data directory: exit {code}: {stderr}");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot create the data directory")
            && stderr.contains(&data.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn a_read_only_database_file_is_refused_and_left_untouched() {
    // A database with a value in it, written and closed cleanly by the service.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_in(tempfile::tempdir().unwrap(), data.clone(), KV_CONFIG);
    let response = support::raw::post(
        server.port,
        b"/v4/keyvalues/disk",
        br#"{"key":"kept","value":"still here"}"#,
    )
    .expect("answer");
    assert_eq!(response.status, 201);
    assert!(server.terminate().success());
    drop(server);

    let db = data.join("butler-edge.redb");
    let before = std::fs::read(&db).expect("read database");
    chmod(&db, 0o444);
    chmod(&data, 0o555);
    let (code, stderr, _) = run_expecting_exit(dir.path(), &data);
    println!("read-only database file: exit {code}: {stderr}");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&db.display().to_string()) && stderr.contains("ermission denied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("writable for the user butler-edge runs as"),
        "the message says what to fix: {stderr}"
    );
    assert!(
        std::fs::read(&db).expect("read database") == before,
        "the database file changed"
    );

    // Writable again: the value is there.
    chmod(&data, 0o755);
    chmod(&db, 0o644);
    let server = Server::start_in(tempfile::tempdir().unwrap(), data.clone(), KV_CONFIG);
    let response = support::raw::exchange(
        server.port,
        b"GET /v4/keyvalues/disk?key=kept HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .expect("answer");
    assert_eq!(response.json()["value"], "still here");
}
