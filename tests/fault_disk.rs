//! Disk trouble, against the real binary.
//!
//! At start-up: a data directory the service may not write, a data directory that
//! cannot be created, and an existing database made read-only. Each is a clear error
//! naming the path, exit status 1 within seconds, and the existing database file is
//! left exactly as it was. Permissions do not stop root, so when the tests run as
//! root the binary is started as `nobody` (uid/gid 65534), as the appliance runs it
//! unprivileged.
//!
//! While serving, on a real nearly full file system: a small tmpfs mounted as the
//! data directory (mounting needs root, which CI has; without it these tests print
//! why they are skipped and pass).
//! - The free-space guard (`ButlerEdge.minFreeDiskBytes`) refuses key-value writes
//!   with 507 once the file system is below its threshold; everything acknowledged
//!   before stays readable, deletes still work, and writes work again as soon as
//!   space is freed, without a restart.
//! - Another process fills the file system to the last byte, faster than any guard
//!   could see: writes get a 507 naming the data directory and "no space left"
//!   (not a 500 with redb's message), reads keep answering, nothing acknowledged is
//!   lost, writes work again once the filler is gone, and after a restart the
//!   database opens cleanly with every acknowledged write in it.
//!
//! (`tests/appliance.rs` keeps the guard's basic 507 on the big root file system.)

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::server::{KV_CONFIG, Launch, Server, client, json_of};

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
    chmod(dir, 0o755);
    let exit = Launch::new(KV_CONFIG, dir)
        .data_dir(data_dir)
        .run_as_uid(NOBODY)
        .expect_exit(Duration::from_secs(10), "on an unusable data directory");
    (exit.code, exit.stderr, exit.elapsed)
}

#[test]
fn a_read_only_data_directory_is_a_clear_error_at_start_up() {
    let _alone = support::alone();
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
    let _alone = support::alone();
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
    let _alone = support::alone();
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

// ---------------------------------------------------------------------------------------
// A nearly full file system while serving: a real tmpfs as the data directory.
// ---------------------------------------------------------------------------------------

/// A tmpfs of a given size mounted on a fresh directory for one test, unmounted on drop,
/// also when the test panics. Declare it before the server so the server (whose open
/// database keeps the mount busy) is dropped first; a lazy unmount covers the rest.
struct Tmpfs {
    mount_point: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after a loud message) when the test cannot mount: only root may, and CI
    /// runs as root, so there the scenario really runs. As root a failing mount is an
    /// error of the machine, not a reason to skip.
    fn mount(size: &str, test: &str) -> Option<Tmpfs> {
        if !is_root() {
            support::skip(
                test,
                &format!(
                    "mounting a tmpfs needs root and this test runs as uid {}; the \
                     nearly-full-disk scenario did NOT run (run the tests as root, as CI does)",
                    nix::unistd::geteuid()
                ),
            );
            return None;
        }
        let parent = tempfile::tempdir().expect("temp dir");
        let mount_point = parent.path().join("fs");
        std::fs::create_dir(&mount_point).expect("create mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&mount_point)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs -o size={size} on {} failed as root: {}",
            mount_point.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Tmpfs {
            mount_point,
            _parent: parent,
        })
    }

    fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}

/// Bytes an unprivileged writer could still use on the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let stats = nix::sys::statvfs::statvfs(path).expect("statvfs");
    stats.blocks_available() as u64 * stats.fragment_size() as u64
}

/// Writes a filler file until the file system has at most `leave_free` bytes free, or
/// (with `leave_free` 0) until it refuses even one more byte: another process eating the
/// disk. Returns the bytes written.
fn fill(filler: &Path, leave_free: u64) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(filler).expect("create filler file");
    let mut written = 0u64;
    let mut chunk = 1usize << 16;
    loop {
        let free = free_bytes(filler);
        if leave_free > 0 && free <= leave_free {
            break;
        }
        let size = if leave_free > 0 {
            chunk.min((free - leave_free) as usize)
        } else {
            chunk
        };
        match file.write(&vec![0xa5; size]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {
                if chunk == 1 {
                    break;
                }
                chunk /= 2;
            }
            Err(e) => panic!("writing the filler {}: {e}", filler.display()),
        }
    }
    file.sync_all().expect("fsync filler");
    written
}

fn put(port: u16, namespace: &str, key: &str, value: &str) -> (u16, Value) {
    json_of(
        client()
            .post(format!("http://127.0.0.1:{port}/v4/keyvalues/{namespace}"))
            .header("Content-Type", "application/json")
            .body(json!({"key": key, "value": value}).to_string())
            .send()
            .expect("POST answered"),
    )
}

fn get(port: u16, namespace: &str, key: &str) -> (u16, Value) {
    json_of(
        client()
            .get(format!(
                "http://127.0.0.1:{port}/v4/keyvalues/{namespace}?key={key}"
            ))
            .send()
            .expect("GET answered"),
    )
}

fn delete(port: u16, namespace: &str, key: &str) -> u16 {
    client()
        .delete(format!(
            "http://127.0.0.1:{port}/v4/keyvalues/{namespace}/{key}"
        ))
        .send()
        .expect("DELETE answered")
        .status()
        .as_u16()
}

fn health(port: u16) -> (u16, Value) {
    json_of(
        client()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .expect("health answered"),
    )
}

/// Checks every pair reads back with its value; returns how many reads that took.
fn check_all_readable(port: u16, namespace: &str, pairs: &[(String, String)]) -> usize {
    for (key, value) in pairs {
        let (status, body) = get(port, namespace, key);
        assert_eq!(status, 200, "acknowledged key {key} not readable: {body}");
        assert_eq!(body["value"], value.as_str(), "acknowledged key {key}");
    }
    pairs.len()
}

/// A config on the tmpfs: KV store, /health, and the guard at `min_free` bytes.
fn disk_config(min_free: u64) -> String {
    format!(
        "{}ButlerEdge:\n  minFreeDiskBytes: {min_free}\n  endpointsEnable:\n    health: true\n",
        KV_CONFIG.replace("{max_keys}", "1000000")
    )
}

/// What concurrent writers saw: acknowledged pairs and the refusals' bodies.
#[derive(Default)]
struct WriteRun {
    acknowledged: Vec<(String, String)>,
    refused: Vec<Value>,
}

/// `writers` threads write `value_bytes`-sized values until each has been refused
/// `refusals_each` times in a row (a refusal must be a 507; anything else but a 201 fails
/// the test), or the deadline passes (which fails the test: the disk never filled).
fn write_until_refused(
    port: u16,
    namespace: &str,
    writers: usize,
    value_bytes: usize,
    refusals_each: usize,
) -> WriteRun {
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = Arc::new(Mutex::new(WriteRun::default()));
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let run = run.clone();
            let namespace = namespace.to_string();
            std::thread::spawn(move || {
                let mut refusals = 0;
                let mut n = 0u64;
                while refusals < refusals_each {
                    assert!(
                        Instant::now() < deadline,
                        "writer {writer}: no 507 within 30 s on a filling disk"
                    );
                    let key = format!("w{writer}-k{n}");
                    let value = format!("{key}:{}", "v".repeat(value_bytes));
                    n += 1;
                    let (status, body) = put(port, &namespace, &key, &value);
                    match status {
                        201 => {
                            refusals = 0;
                            run.lock().unwrap().acknowledged.push((key, value));
                        }
                        507 => {
                            refusals += 1;
                            run.lock().unwrap().refused.push(body);
                        }
                        other => {
                            panic!("writer {writer}: a write got {other}, not 201 or 507: {body}")
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    Arc::try_unwrap(run)
        .ok()
        .expect("writers done")
        .into_inner()
        .unwrap()
}

/// Scenario 1: the guard on a really nearly full file system. A 8 MiB tmpfs with
/// `minFreeDiskBytes` at 1 MiB, filled by another file to 3 MiB free; concurrent writers
/// write until the guard refuses them.
#[test]
fn the_guard_refuses_writes_on_a_nearly_full_tmpfs_and_lifts_when_space_is_freed() {
    let _alone = support::alone();
    const MIN_FREE: u64 = 1 << 20;
    let Some(fs) = Tmpfs::mount("8m", "the_guard_refuses_writes_on_a_nearly_full_tmpfs") else {
        return;
    };
    let data = fs.path().join("data");
    let filler = fs.path().join("filler");
    let started = Instant::now();
    fill(&filler, 3 << 20);
    let mut server = Server::start_in(
        tempfile::tempdir().unwrap(),
        data.clone(),
        &disk_config(MIN_FREE),
    );
    let port = server.port;

    let run = write_until_refused(port, "full", 4, 4000, 1);
    let free_at_refusal = free_bytes(&data);
    println!(
        "guard: {} writes acknowledged, {} refused with 507; {free_at_refusal} bytes free, threshold {MIN_FREE}",
        run.acknowledged.len(),
        run.refused.len()
    );
    assert!(
        !run.acknowledged.is_empty(),
        "3 MiB free and a 1 MiB threshold leave room for some writes"
    );
    for body in &run.refused {
        assert_eq!(body["statusCode"], 507, "{body}");
        assert_eq!(body["error"], "Insufficient Storage", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("bytes free")
                && message.contains(&MIN_FREE.to_string())
                && message.contains("ButlerEdge.minFreeDiskBytes")
                && message.contains(&data.display().to_string()),
            "the 507 names the directory, the free space and the threshold: {message}"
        );
    }
    assert!(free_at_refusal < MIN_FREE, "{free_at_refusal} bytes free");

    // Writes stay refused and store nothing; reads and health keep working.
    let (status, body) = put(port, "full", "refused", "no room");
    assert_eq!(status, 507, "{body}");
    let (status, body) = get(port, "full", "refused");
    assert_eq!(status, 400, "a refused write stored nothing: {body}");
    let mut reads = check_all_readable(port, "full", &run.acknowledged);
    let (status, body) = health(port);
    assert_eq!(status, 200, "a low disk is degraded, not down: {body}");
    assert_eq!(body["checks"]["disk"]["status"], "low", "{body}");

    // Deletes are allowed below the threshold: they are what an admin reaches for, and
    // the headroom the guard keeps is what lets their commits through. They free pages
    // inside the database file for later writes; the file system rarely gets space back.
    let (deleted, kept) = run.acknowledged.split_at(10);
    let before_deletes = free_bytes(&data);
    for (key, _) in deleted {
        assert_eq!(
            delete(port, "full", key),
            204,
            "delete {key} below the threshold"
        );
    }
    for (key, _) in deleted {
        assert_eq!(get(port, "full", key).0, 400, "{key} was deleted");
    }
    println!(
        "guard: {} deletes accepted below the threshold; free bytes {before_deletes} before, {} after",
        deleted.len(),
        free_bytes(&data)
    );

    // Freeing space lifts the refusal at once, without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let (status, body) = put(port, "full", "after-freeing", "fits again");
    assert_eq!(status, 201, "space was freed: {body}");
    reads += check_all_readable(port, "full", kept);

    // After a restart everything acknowledged is there, and the database opened cleanly.
    assert!(server.terminate().success(), "{}", server.log());
    server.restart();
    reads += check_all_readable(port, "full", kept);
    assert_eq!(get(port, "full", "after-freeing").1["value"], "fits again");
    for (key, _) in deleted {
        assert_eq!(get(port, "full", key).0, 400, "{key} stays deleted");
    }
    let log = server.log();
    assert!(
        !log.contains("not closed cleanly"),
        "a clean restart needs no crash recovery:\n{log}"
    );
    println!(
        "guard: {} acknowledged, {} refused (507), {} deleted, {reads} reads checked, {:?}",
        run.acknowledged.len(),
        run.refused.len() + 1,
        deleted.len(),
        started.elapsed()
    );
}

/// Scenario 2: another process fills the file system to the last byte with the guard off
/// (`minFreeDiskBytes: 0`), so the first sign is redb's commit failing with ENOSPC.
#[test]
fn a_disk_filled_to_the_last_byte_refuses_writes_cleanly_and_loses_nothing() {
    let _alone = support::alone();
    let Some(fs) = Tmpfs::mount("8m", "a_disk_filled_to_the_last_byte") else {
        return;
    };
    let data = fs.path().join("data");
    let filler = fs.path().join("filler");
    let started = Instant::now();
    let mut server = Server::start_in(tempfile::tempdir().unwrap(), data.clone(), &disk_config(0));
    let port = server.port;

    let mut acknowledged: Vec<(String, String)> = (0..100)
        .map(|n| {
            (
                format!("base{n}"),
                format!("base value {n} {}", "b".repeat(1000)),
            )
        })
        .collect();
    for (key, value) in &acknowledged {
        assert_eq!(put(port, "full", key, value).0, 201);
    }

    // A reader keeps reading acknowledged keys the whole time the disk is full.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let base = acknowledged.clone();
        std::thread::spawn(move || {
            let mut statuses: Vec<(u16, Value)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = &base[i % base.len()];
                let (status, body) = get(port, "full", key);
                if status != 200 || body["value"] != value.as_str() {
                    statuses.push((status, body));
                }
                i += 1;
            }
            (i, statuses)
        })
    };

    let filled = fill(&filler, 0);
    println!(
        "full disk: filler wrote {filled} bytes; {} bytes free",
        free_bytes(&data)
    );

    // Each writer goes on until refused three times in a row: the first refusal is the
    // commit that hit ENOSPC, the others show the store stays usable and keeps saying so.
    let run = write_until_refused(port, "full", 4, 2000, 3);
    println!(
        "full disk: {} more writes acknowledged before ENOSPC, {} refused with 507",
        run.acknowledged.len(),
        run.refused.len()
    );
    for body in &run.refused {
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&data.display().to_string()) && message.contains("no space left"),
            "the 507 names the data directory and the cause: {body}"
        );
        assert!(
            !message.contains("I/O error") && !message.contains("Previous"),
            "no raw redb message: {body}"
        );
    }
    acknowledged.extend(run.acknowledged);

    // A delete on a disk with not one byte free: its copy-on-write commit needs pages too,
    // so it is refused the same way (507, never a 500) and the key stays.
    let (doomed, _) = acknowledged.remove(0);
    let status = delete(port, "full", &doomed);
    println!("full disk: DELETE at 0 bytes free answered {status}");
    match status {
        204 => assert_eq!(get(port, "full", &doomed).0, 400, "{doomed} was deleted"),
        507 => acknowledged.insert(
            0,
            (doomed.clone(), format!("base value 0 {}", "b".repeat(1000))),
        ),
        other => panic!("a delete on a full disk got {other}"),
    }

    let (status, body) = health(port);
    println!("full disk: /health {status}: {}", body["checks"]);
    // The guard is off here, yet health tells that writes are being refused.
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(
        body["checks"]["database"]["status"], "writes refused",
        "{body}"
    );
    for line in server
        .log()
        .lines()
        .filter(|l| l.contains("reopen") || l.contains("not closed cleanly"))
    {
        println!("full disk: server log: {line}");
    }
    let mut reads = check_all_readable(port, "full", &acknowledged);
    stop.store(true, Ordering::Relaxed);
    let (background_reads, bad_reads) = reader.join().expect("reader thread");
    println!(
        "full disk: background reader made {background_reads} reads, {} not answered with the value",
        bad_reads.len()
    );
    assert!(
        bad_reads.is_empty(),
        "reads must keep working on a full disk: {:?}",
        &bad_reads[..bad_reads.len().min(5)]
    );
    reads += background_reads;

    // Once the filler is gone, writes work again without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let (status, body) = put(port, "full", "after-freeing", "fits again");
    assert_eq!(status, 201, "space was freed: {body}");
    acknowledged.push(("after-freeing".into(), "fits again".into()));
    let (status, body) = health(port);
    assert_eq!(status, 200, "healthy again: {body}");
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");

    // The database was never damaged: after a restart it opens without repair and holds
    // every acknowledged write.
    assert!(server.terminate().success(), "{}", server.log());
    let first_log = server.log();
    server.restart();
    reads += check_all_readable(port, "full", &acknowledged);
    let restart_log = &server.log()[first_log.len()..];
    assert!(
        !restart_log.contains("not closed cleanly"),
        "the restart needed crash recovery:\n{restart_log}"
    );
    println!(
        "full disk: {} acknowledged, {} refused (507), {reads} reads checked, {:?}",
        acknowledged.len(),
        run.refused.len(),
        started.elapsed()
    );
}

const TASK: &str = "aaaaaaaa-0000-4000-8000-000000000001";

/// Starts the task with an Idempotency-Key: (status, body).
fn start_with_key(port: u16, key: &str) -> (u16, Value) {
    json_of(
        client()
            .put(format!(
                "http://127.0.0.1:{port}/v4/reloadtask/{TASK}/start"
            ))
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .body("[]")
            .send()
            .expect("start answered"),
    )
}

#[test]
fn idempotent_starts_on_a_full_disk_start_nothing_they_cannot_answer_for() {
    let _alone = support::alone();
    use support::fake_qrs::{FakeQrs, FakeTask, butler_qrs_yaml};
    use support::pki::{KeyKind, SenseCerts};
    let Some(fs) = Tmpfs::mount("8m", "idempotent_starts_on_a_full_disk") else {
        return;
    };
    let certs = SenseCerts::new(&["localhost"], KeyKind::EcP256Pkcs8);
    let qrs = FakeQrs::start(
        &certs.server,
        &certs.ca,
        vec![FakeTask::new(TASK, "Reload")],
    );
    let config = format!(
        "{}{}ButlerEdge:\n  minFreeDiskBytes: 0\n",
        KV_CONFIG.replace("{max_keys}", "1000").replacen(
            "    keyValueStore: true\n",
            "    keyValueStore: true\n    senseStartTask: true\n",
            1
        ),
        butler_qrs_yaml(
            qrs.port(),
            &certs.client.cert,
            &certs.client.key,
            &certs.root
        ),
    );
    let data = fs.path().join("data");
    let server = Server::start_in(tempfile::tempdir().unwrap(), data, &config);
    let port = server.port;
    assert_eq!(put(port, "p", "kept", "before the disk filled").0, 201);

    let filler = fs.path().join("filler");
    fill(&filler, 0);
    // Nothing has failed yet, so the start goes ahead; storing its answer then fails.
    let (status, first) = start_with_key(port, "first");
    assert_eq!(status, 200, "{first}");
    assert_eq!(qrs.start_calls().len(), 1);
    server.wait_for_log("cannot store the Idempotency-Key answer", 1);
    // That failed commit disabled redb's handle; it was reopened at once, so reads work
    // without waiting for a key-value write to notice.
    let (status, body) = get(port, "p", "kept");
    assert_eq!(
        status, 200,
        "read after the failed idempotency commit: {body}"
    );
    assert_eq!(body["value"], "before the disk filled");
    // Now the disk is known to be full: another idempotent start is refused before QRS
    // is asked, rather than started with no stored answer to protect its retry.
    let (status, refused) = start_with_key(port, "second");
    assert_eq!(status, 507, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains("No task was started"), "{message}");
    assert!(message.contains("Idempotency-Key"), "{message}");
    assert!(message.contains("free space"), "{message}");
    assert_eq!(
        qrs.start_calls().len(),
        1,
        "nothing started for the refused request"
    );

    // Space again: the refused request goes through, and its retry is a replay.
    std::fs::remove_file(&filler).expect("remove filler");
    let (status, second) = start_with_key(port, "second");
    assert_eq!(status, 200, "{second}");
    assert_eq!(qrs.start_calls().len(), 2);
    let (status, replayed) = start_with_key(port, "second");
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed, second);
    assert_eq!(qrs.start_calls().len(), 2, "a replay starts nothing");
    println!(
        "full disk, Idempotency-Key: first start 200 (answer not stored), second 507 before \
         QRS, after freeing space 200 and a replay; QRS saw {} starts",
        qrs.start_calls().len()
    );
}
