//! `butler-edge console`: the appliance's state on its console, refreshed, without a login
//! (think ESXi's DCUI): version, host name, addresses, the API's URL, the CA fingerprint,
//! the service's health, the last provisioning and, while it is open, the enrolment code.
//!
//! It only reads: the service's health snapshot (`snapshot`), the provisioning record, the
//! enrolment status and the certificates. The same text goes to every console it is started
//! on (tty1 for the admin, the serial port for the boot test), framed by marker lines so a
//! reader of a serial log can find the latest screen.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::enrol;
use super::provision::Record;

/// First and last line of every screen.
pub const BEGIN: &str = "==== butler-edge appliance console ====";
pub const END: &str = "==== end of console ====";

/// Where the service writes its health snapshot (`app::snapshot`) under systemd.
pub const HEALTH_SNAPSHOT: &str = "/run/butler-edge/health.json";

/// A snapshot older than this means the service is not running (it writes every 5 s).
const STALE: Duration = Duration::from_secs(20);

#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// The Butler config in force.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/butler-edge/config.yaml"
    )]
    pub config: PathBuf,
    #[arg(long, value_name = "DIR", default_value = crate::init::DEFAULT_PKI_DIR)]
    pub pki_dir: PathBuf,
    /// The service's health snapshot.
    #[arg(
        long,
        value_name = "FILE",
        default_value = HEALTH_SNAPSHOT
    )]
    pub health: PathBuf,
    /// The enrolment server's status.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/run/butler-edge-enrol/status.json"
    )]
    pub enrol_status: PathBuf,
    /// The root under which the provisioning record is kept.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The update files (slots report, an install answer nobody collected).
    #[command(flatten)]
    pub update: super::update_common::UpdatePaths,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// Print one screen and exit.
    #[arg(long)]
    pub once: bool,
    /// Reprint an unchanged screen only this often, in seconds (serial logs stay short).
    #[arg(long, default_value_t = 60)]
    pub repeat: u64,
}

/// Draws the screen until killed (or once, with `--once`).
pub fn run(args: &ConsoleArgs) {
    use std::io::IsTerminal as _;
    let clear = std::io::stdout().is_terminal();
    let mut last = String::new();
    let mut last_drawn = std::time::Instant::now();
    loop {
        let screen = render(args);
        if args.once || screen != last || last_drawn.elapsed() >= Duration::from_secs(args.repeat) {
            // Clear, home: the screen replaces the previous one on a terminal.
            let prefix = if clear { "\x1b[H\x1b[2J" } else { "" };
            println!("{prefix}{screen}");
            last = screen;
            last_drawn = std::time::Instant::now();
        }
        if args.once {
            return;
        }
        std::thread::sleep(Duration::from_secs(args.interval.max(1)));
    }
}

/// The screen's text, `BEGIN` to `END`. Nothing in it changes by the second, so an
/// unchanged appliance prints an unchanged screen.
///
/// One helper per block of lines, top to bottom as the operator reads them.
pub fn render(args: &ConsoleArgs) -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let addresses: Vec<IpAddr> = crate::init::default_addresses()
        .into_iter()
        .filter(|a| !a.is_loopback())
        .collect();
    let config = crate::config::Config::load(&args.config);

    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    out.push_str(&machine_lines(&hostname, &addresses));
    out.push_str(&system_lines(&args.update.appliance_files()));
    out.push_str(&uncollected_install_lines(&args.update.dir()));
    out.push_str(&api_line(&config, &addresses, &hostname));
    out.push_str(&ca_lines(&config, &args.pki_dir));
    out.push_str(&health_lines(&args.health));
    out.push_str(&provisioning_lines(&args.root));
    out.push_str(&enrolment_lines(&args.enrol_status, &addresses));
    let _ = writeln!(out, "{END}");
    out
}

/// The version, host name and non-loopback addresses.
fn machine_lines(hostname: &str, addresses: &[IpAddr]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "version:      butler-edge {}",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(out, "host name:    {hostname}");
    let _ = writeln!(
        out,
        "addresses:    {}",
        if addresses.is_empty() {
            "none yet (waiting for DHCP or the static setting)".to_string()
        } else {
            addresses
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    out
}

/// The image version and slot running, what boots next, an update on trial, and a rollback
/// with its reason (it stays on screen until the next update).
fn system_lines(files: &crate::update::ApplianceFiles) -> String {
    use crate::update::ApplianceView;
    let mut out = String::new();
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    match files.view() {
        ApplianceView::Plain => {
            let _ = writeln!(
                out,
                "system:       not an A/B appliance (package install; no {})",
                files.rauc_conf.display()
            );
        }
        ApplianceView::NoReport { version } => {
            let _ = writeln!(
                out,
                "system:       image {} (slot not known yet: boot confirmation pending)",
                text(&version)
            );
        }
        ApplianceView::Slots { version, report } => {
            let next = report
                .next_boot
                .as_ref()
                .map(|n| format!("{} ({})", n.slot, text(&n.version)))
                .unwrap_or_else(|| "unknown".into());
            let _ = writeln!(
                out,
                "system:       image {} on slot {}{}; next boot: slot {next}",
                text(&version),
                report.booted.slot,
                if report.trial {
                    " (TRIAL: kept once butler-edge is healthy)"
                } else {
                    ""
                }
            );
            if let Some(rollback) = &report.rollback {
                let _ = writeln!(
                    out,
                    "  UPDATE ROLLED BACK: {} (slot {}) failed; back on {} (slot {}) since {}",
                    text(&rollback.from.version),
                    rollback.from.slot,
                    text(&rollback.to.version),
                    rollback.to.slot,
                    rollback.at
                );
                let _ = writeln!(out, "  why: {}", rollback.reason);
            }
        }
    }
    out
}

/// An install answer nobody collected (an API call answers its caller and removes it; the
/// medium's installs have no caller): a refusal stays on screen until the next update.
fn uncollected_install_lines(dir: &crate::update::handoff::UpdateDir) -> String {
    let outcome: Option<crate::update::handoff::Outcome> =
        crate::update::handoff::read_json(&dir.result())
            .ok()
            .flatten();
    match outcome {
        Some(o) if !o.ok => format!(
            "  last update NOT INSTALLED ({}): {}\n",
            o.at,
            o.error.unwrap_or_default()
        ),
        _ => String::new(),
    }
}

/// Where the API answers (at the first address, else the host name), that it is off, or
/// why the config cannot be read.
fn api_line(
    config: &Result<crate::config::Config, crate::config::ConfigError>,
    addresses: &[IpAddr],
    hostname: &str,
) -> String {
    match config {
        Ok(config) if config.rest.enable => {
            let scheme = if config.rest.tls.enable {
                "https"
            } else {
                "http"
            };
            let host = addresses
                .first()
                .map(|a| match a {
                    IpAddr::V6(v6) => format!("[{v6}]"),
                    IpAddr::V4(v4) => v4.to_string(),
                })
                .unwrap_or_else(|| hostname.to_string());
            format!("API:          {scheme}://{host}:{}/\n", config.rest.port)
        }
        Ok(_) => "API:          off (Butler.restServerConfig.enable is false)\n".to_string(),
        Err(e) => format!("API:          config problem: {e}\n"),
    }
}

/// The appliance CA's fingerprint (to compare when enrolling), and any site CA the config
/// certifies callers with besides it.
fn ca_lines(
    config: &Result<crate::config::Config, crate::config::ConfigError>,
    pki_dir: &Path,
) -> String {
    let mut out = String::new();
    let appliance_ca = pki_dir.join("ca.crt");
    match crate::init::fingerprint_of_pem_file(&appliance_ca) {
        Ok(fp) => {
            let _ = writeln!(out, "appliance CA: sha256 Fingerprint={fp}");
        }
        Err(_) => {
            let _ = writeln!(
                out,
                "appliance CA: not made yet (butler-edge-init runs once the network is up)"
            );
        }
    }
    if let Ok(config) = config {
        for ca in &config.client_auth.ca {
            if *ca != appliance_ca
                && let Ok(fp) = crate::init::fingerprint_of_pem_file(ca)
            {
                let _ = writeln!(out, "callers CA:   {} sha256 {fp}", ca.display());
            }
        }
    }
    out
}

fn health_lines(path: &Path) -> String {
    let mut out = String::new();
    let fresh = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < STALE);
    let health: Option<Value> = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(health) = health.filter(|_| fresh) else {
        let _ = writeln!(
            out,
            "health:       SERVICE NOT RUNNING (no fresh {}; see the journal after provisioning)",
            path.display()
        );
        return out;
    };
    let checks = &health["checks"];
    let status_of = |v: &Value| v["status"].as_str().unwrap_or("?").to_string();
    let _ = writeln!(out, "health:       {}", status_of(&health).to_uppercase());
    let database = &checks["database"];
    let _ = writeln!(
        out,
        "  database:   {}{}",
        status_of(database),
        database["keys"]
            .as_u64()
            .map(|k| format!(" ({k} keys)"))
            .unwrap_or_default()
    );
    let disk = &checks["disk"];
    let _ = writeln!(
        out,
        "  disk:       {}{}",
        status_of(disk),
        disk["freeBytes"]
            .as_u64()
            .map(|b| format!(" ({} MiB free)", b >> 20))
            .unwrap_or_default()
    );
    let qrs = &checks["qrs"];
    let _ = writeln!(
        out,
        "  QRS:        {}{}",
        status_of(qrs),
        qrs["host"]
            .as_str()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default()
    );
    let certs = checks["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let worst = certs
        .iter()
        .filter(|c| c["status"] != "ok")
        .map(|c| format!("{} {}", c["purpose"].as_str().unwrap_or("?"), status_of(c)))
        .collect::<Vec<_>>();
    let _ = writeln!(
        out,
        "  certificates: {}",
        if worst.is_empty() {
            format!("ok ({} files)", certs.len())
        } else {
            worst.join("; ")
        }
    );
    let _ = writeln!(out, "  clock:      {}", status_of(&checks["clock"]));
    out
}

fn provisioning_lines(root: &Path) -> String {
    let mut out = String::new();
    match Record::read(root) {
        None => {
            let _ = writeln!(out, "provisioning: none yet");
        }
        Some(record) => {
            let _ = writeln!(
                out,
                "provisioning: {} ({}{}){}",
                record.outcome.to_uppercase(),
                record.at,
                record
                    .medium
                    .map(|m| format!(", medium {m}"))
                    .unwrap_or_default(),
                record
                    .generation
                    .map(|g| format!(", generation {g}"))
                    .unwrap_or_default()
            );
            if let Some(update) = &record.update {
                let _ = writeln!(out, "  update: {update}");
            }
            if !record.problems.is_empty() {
                let _ = writeln!(
                    out,
                    "  nothing changed; the previous configuration stays. Problems:"
                );
                for problem in &record.problems {
                    let _ = writeln!(out, "  - {problem}");
                }
            }
        }
    }
    out
}

fn enrolment_lines(path: &Path, addresses: &[IpAddr]) -> String {
    let mut out = String::new();
    let Some(status) = enrol::Status::read(path) else {
        return out;
    };
    match (&status.code, status.port) {
        (Some(code), Some(port)) => {
            let host = addresses
                .first()
                .map(IpAddr::to_string)
                .unwrap_or("<address>".into());
            let minutes = status
                .expires_at
                .map(|at| {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    at.saturating_sub(now).div_ceil(60)
                })
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "enrolment:    code {code} (one use, {minutes} min left, {} tries left)",
                status.attempts_left.unwrap_or(0)
            );
            let _ = writeln!(out, "  1. curl -k -o ca.crt https://{host}:{port}/ca.crt");
            let _ = writeln!(
                out,
                "     openssl x509 -noout -fingerprint -sha256 -in ca.crt   (must match above)"
            );
            let _ = writeln!(
                out,
                "  2. curl --cacert ca.crt -d {code} -o admin.pem https://{host}:{port}/enrol"
            );
        }
        _ => {
            let _ = writeln!(out, "enrolment:    {}: {}", status.state, status.message);
        }
    }
    out
}
