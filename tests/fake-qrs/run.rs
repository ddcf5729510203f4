//! The project's fake QRS as a program: see butler-edge start tasks on one machine without
//! Qlik Sense, and drive it from outside (the appliance boot test).
//!
//! ```sh
//! cargo run --example fake-qrs -- --dir DIR [--listen 127.0.0.1:PORT] [--san NAME_OR_IP]... \
//!     [--task GUID[=Name]]... [--record FILE]
//! ```
//!
//! It writes into DIR the files a Sense admin exports for a Butler host (`client.pem`,
//! `client_key.pem`, `root.pem`; plus the fake's own `server.pem`/`server_key.pem`, and
//! `butler-edge.yaml`: the embedded default config pointed at this fake), serves
//! QRS over mTLS exactly as the test fake does (tests/support/fake_qrs.rs: xrfkey,
//! X-Qlik-User, filter syntax, 201/204, execution sessions, /qrs/about), prints the Butler
//! config lines to paste and the task ids, then `fake-qrs: listening on ADDR`. With
//! `--record FILE` it appends one JSON line per task start it performs.
//!
//! It lives under tests/ because it is the test fake, reused through `#[path]` as
//! benches/load.rs does (two modules of tests/support, not all of it); Cargo.toml declares it as an example (the file name keeps Cargo
//! from also taking it for an integration test).

// The fake and the PKI helpers from tests/support (not all of it: the server helpers need
// the butler-edge binary, which Cargo names only to tests and benches). At the crate root,
// so the fake's `super::pki` finds the PKI module.
#[allow(dead_code)]
#[path = "../support/fake_qrs.rs"]
mod fake_qrs;
#[allow(dead_code)]
#[path = "../support/pki.rs"]
mod pki;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fake_qrs::{FakeQrs, FakeTask, butler_qrs_yaml};
use pki::{Ca, KeyKind};

/// Tasks served when no --task is given.
const DEFAULT_TASKS: [(&str, &str, &str); 2] = [
    (
        "aaaaaaaa-0000-4000-8000-000000000001",
        "Reload Sales ETL",
        "nightly",
    ),
    (
        "bbbbbbbb-0000-4000-8000-000000000002",
        "Reload Finance",
        "nightly",
    ),
];

#[derive(Parser)]
#[command(
    name = "fake-qrs",
    about = "A stand-in Qlik Sense Repository Service (QRS) for trying butler-edge without Sense"
)]
struct Args {
    /// Directory for the certificates (created if missing): client.pem, client_key.pem,
    /// root.pem, as Sense's QMC exports them, and the fake's server.pem / server_key.pem.
    #[arg(long)]
    dir: PathBuf,
    /// Address to serve QRS on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:4242")]
    listen: String,
    /// Another name or IP address the server certificate is valid for (besides localhost and
    /// 127.0.0.1), e.g. the host name butler-edge will use. Repeatable.
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    sans: Vec<String>,
    /// A task to serve, as GUID or GUID=Name. Repeatable; without any, two example tasks
    /// (tagged "nightly") are served.
    #[arg(long = "task", value_name = "GUID[=Name]")]
    tasks: Vec<String>,
    /// Append one JSON line per task start performed (taskId, taskName, executionSessionId,
    /// time, unixMs), flushed per line.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fake-qrs: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let tasks = tasks(&args.tasks)?;
    let signals = block_stop_signals();
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create --dir {}: {e}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve --dir {}: {e}", args.dir.display()))?;
    let record = match &args.record {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open --record {}: {e}", path.display()))?,
        ),
        None => None,
    };

    let ca = Ca::new("fake-qrs root CA");
    let root = ca.write_cert(&dir, "root");
    // PKCS#1 RSA, the form Sense exports client_key.pem in.
    let client = ca
        .client_cert("QlikClient", KeyKind::RsaPkcs1)
        .write(&dir, "client");
    let mut names = vec!["localhost", "127.0.0.1"];
    names.extend(args.sans.iter().map(String::as_str));
    let server = ca.server_cert(&names);
    server.write(&dir, "server");

    let qrs = FakeQrs::listen(&args.listen, &server, &ca, tasks.clone())
        .map_err(|e| format!("cannot listen on --listen {}: {e}", args.listen))?;
    if let Some(file) = record {
        qrs.record_starts_to(file);
    }

    let qrs_yaml = butler_qrs_yaml(qrs.port(), &client.cert, &client.key, &root).replace(
        "host: localhost",
        &format!("host: {}", host_for(&qrs, &args.sans)),
    );
    let config = dir.join("butler-edge.yaml");
    std::fs::write(&config, with_qrs(EMBEDDED_CONFIG, &qrs_yaml))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    println!("# butler-edge's config lines for this QRS (Butler.configQRS, Butler.cert):");
    println!("Butler:");
    print!("{qrs_yaml}");
    println!(
        "# The embedded default config with these lines: {} (run butler-edge --config {0})",
        config.display()
    );
    println!("# Tasks served (id, name, tags):");
    for task in &tasks {
        println!("#   {}  {}  {:?}", task.id, task.name, task.tags);
    }
    if let Some(path) = &args.record {
        println!("# Task starts are recorded in {}", path.display());
    }
    println!("fake-qrs: listening on {}", qrs.addr);
    wait_for(signals);
    drop(qrs);
    Ok(())
}

/// butler-edge's embedded default config, the base of the ready-to-use config written to DIR.
const EMBEDDED_CONFIG: &str = include_str!("../../src/default-config.yaml");

/// `config` with the QRS sections inserted under its top-level `Butler:` key.
fn with_qrs(config: &str, qrs_yaml: &str) -> String {
    config.replacen("\nButler:\n", &format!("\nButler:\n{qrs_yaml}"), 1)
}

/// The host butler-edge should connect to: the first --san that is a name, else localhost
/// (the certificate names both).
fn host_for(qrs: &FakeQrs, sans: &[String]) -> String {
    if !qrs.addr.ip().is_loopback() {
        if let Some(name) = sans.iter().find(|s| s.parse::<std::net::IpAddr>().is_err()) {
            return name.clone();
        }
        return qrs.addr.ip().to_string();
    }
    "localhost".to_string()
}

fn tasks(specs: &[String]) -> Result<Vec<FakeTask>, String> {
    if specs.is_empty() {
        return Ok(DEFAULT_TASKS
            .iter()
            .map(|(id, name, tag)| FakeTask::new(id, name).tag(tag))
            .collect());
    }
    specs
        .iter()
        .map(|spec| {
            let (id, name) = spec.split_once('=').unwrap_or((spec, ""));
            if !is_guid(id) {
                return Err(format!(
                    "--task {spec:?}: expected a task id in Sense's form \
                     (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, lower-case hex), optionally =Name"
                ));
            }
            let name = if name.is_empty() {
                format!("Task {id}")
            } else {
                name.to_string()
            };
            Ok(FakeTask::new(id, &name))
        })
        .collect()
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// SIGINT and SIGTERM, blocked in this thread before the fake starts its threads (which
/// inherit the mask), so that [`wait_for`] takes them and the fake shuts down cleanly.
fn block_stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if let Err(e) = set.thread_block() {
        eprintln!("fake-qrs: cannot block SIGINT/SIGTERM ({e}); they will end it abruptly");
    }
    set
}

fn wait_for(signals: nix::sys::signal::SigSet) {
    if let Ok(signal) = signals.wait() {
        eprintln!("fake-qrs: {signal:?}, stopping");
    }
}
