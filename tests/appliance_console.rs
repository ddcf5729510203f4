//! The appliance's console and its one-time enrolment, through the real binary: the service's
//! health snapshot (what the console reads), the console screen, and `butler-edge enrol`
//! handing the admin bundle out over TLS once, for the code only the console shows — and
//! refusing wrong codes, expired codes and any second use.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::server::{BIN, Launch};
use support::tls_client::{Versions, client_config, reqwest_client};

fn init_pki(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    support::appliance::init_pki(&pki);
    pki
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const HEALTH_CONFIG: &str = "Butler:
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: {port}
  restServerEndpointsEnable:
    butlerping: true
    keyValueStore: true
  keyValueStore:
    enable: true
ButlerEdge:
  endpointsEnable:
    health: true
";

#[test]
fn the_console_shows_the_services_health_the_ca_and_the_last_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let pki = init_pki(dir.path());
    let server = Launch::fresh(HEALTH_CONFIG)
        .env("RUNTIME_DIRECTORY", run_dir.to_str().unwrap())
        .spawn();

    // The snapshot is /health's JSON, clock check included.
    let snapshot = run_dir.join("health.json");
    let health: serde_json::Value =
        wait_for("the health snapshot", Duration::from_secs(10), || {
            serde_json::from_str(&std::fs::read_to_string(&snapshot).ok()?).ok()
        });
    assert_eq!(health["checks"]["database"]["status"], "ok", "{health}");
    let clock = health["checks"]["clock"]["status"].as_str().unwrap();
    assert!(
        ["synchronised", "not synchronised", "not managed"].contains(&clock),
        "{health}"
    );
    let (_, live) = support::server::json_of(
        support::server::client()
            .get(server.url("/health"))
            .send()
            .unwrap(),
    );
    assert_eq!(live["checks"]["clock"]["status"], clock);

    // A refused medium, so the console has a provisioning result with its problem to show.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/butler-edge")).unwrap();
    std::fs::write(
        root.path().join("etc/butler-edge/config.yaml"),
        include_str!("../image/config.yaml"),
    )
    .unwrap();
    let medium = tempfile::tempdir().unwrap();
    std::fs::write(
        medium.path().join("appliance.yaml"),
        "network:\n  address: 10.0.2.50\n",
    )
    .unwrap();
    let refused = Command::new(BIN)
        .args(["provision", "--root"])
        .arg(root.path())
        .arg("--medium")
        .arg(medium.path())
        .args(["--medium-name", "/dev/sr0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));

    let screen = Command::new(BIN)
        .args(["console", "--once", "--config"])
        .arg(server.config_dir().join("config.yaml"))
        .arg("--pki-dir")
        .arg(&pki)
        .arg("--health")
        .arg(&snapshot)
        .arg("--root")
        .arg(root.path())
        .arg("--enrol-status")
        .arg(dir.path().join("no-enrolment.json"))
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&screen.stdout).into_owned();
    let fingerprint = String::from_utf8_lossy(
        &Command::new(BIN)
            .args(["init", "--pki-dir"])
            .arg(&pki)
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .find_map(|l| {
        l.trim()
            .strip_prefix("CA fingerprint:")
            .map(|f| f.trim().to_string())
    })
    .unwrap();
    for needle in [
        "==== butler-edge appliance console ====",
        &format!("version:      butler-edge {}", env!("CARGO_PKG_VERSION")),
        "API:          http://",
        &format!("appliance CA: {fingerprint}"),
        "health:       OK",
        "  database:   ok (0 keys)",
        &format!("  clock:      {clock}"),
        "provisioning: REFUSED",
        "medium /dev/sr0",
        "  - appliance.yaml: network.address: expected an IP address with its prefix length",
        "==== end of console ====",
    ] {
        assert!(
            screen.contains(needle),
            "the console lacks {needle:?}:\n{screen}"
        );
    }

    // With the service gone, the snapshot goes stale and the console says so.
    drop(server);
    let filetime = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&snapshot)
        .unwrap()
        .set_modified(filetime)
        .unwrap();
    let screen = Command::new(BIN)
        .args(["console", "--once", "--health"])
        .arg(&snapshot)
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&screen.stdout).contains("SERVICE NOT RUNNING"),
        "{screen:?}"
    );
}

struct Enrol {
    child: Child,
    status: PathBuf,
    state: PathBuf,
    pki: PathBuf,
    _dir: tempfile::TempDir,
}

impl Enrol {
    fn start(extra: &[&str]) -> Enrol {
        let dir = tempfile::tempdir().unwrap();
        let pki = init_pki(dir.path());
        Enrol::start_in(dir, pki, extra)
    }

    fn start_in(dir: tempfile::TempDir, pki: PathBuf, extra: &[&str]) -> Enrol {
        let status = dir.path().join("status.json");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let child = enrol_command(&pki, &status, &state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Enrol {
            child,
            status,
            state,
            pki,
            _dir: dir,
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&self.status).unwrap()).unwrap()
    }

    /// The code and port, once the server is up (as the console reads them).
    fn waiting(&self) -> (String, u16) {
        wait_for("the enrolment status", Duration::from_secs(10), || {
            let status: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&self.status).ok()?).ok()?;
            Some((
                status["code"].as_str()?.to_string(),
                status["port"].as_u64()? as u16,
            ))
        })
    }

    fn client(&self) -> reqwest::blocking::Client {
        let ca = std::fs::read_to_string(self.pki.join("ca.crt")).unwrap();
        reqwest_client(client_config(&ca, None, &[b"http/1.1"], Versions::Both))
    }

    fn post(&self, port: u16, code: &str) -> (u16, String) {
        let response = self
            .client()
            .post(format!("https://localhost:{port}/enrol"))
            .body(code.to_string())
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }

    fn wait_exit(&mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read as _;
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                return (status.code().unwrap_or(-1), out);
            }
            assert!(Instant::now() < deadline, "enrol did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `butler-edge enrol` on a free loopback port with the PKI's admin bundle and server key.
fn enrol_command(pki: &Path, status: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("enrol")
        .arg("--bundle-dir")
        .arg(pki.join("admin"))
        .arg("--cert")
        .arg(pki.join("server.crt"))
        .arg("--key")
        .arg(pki.join("server.key"))
        .args(["--listen", "127.0.0.1:0", "--status-file"])
        .arg(status)
        .arg("--state-dir")
        .arg(state);
    cmd
}

impl Drop for Enrol {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_bundle_is_handed_out_once_for_the_consoles_code() {
    let mut enrol = Enrol::start(&["--attempts", "3"]);
    let (code, port) = enrol.waiting();
    assert_eq!(code.len(), 14, "XXXX-XXXX-XXXX: {code}");
    let status = enrol.status();
    assert_eq!(status["state"], "waiting");
    assert_eq!(status["attemptsLeft"], 3);

    // The CA, over TLS verified by that same CA (the admin checks its fingerprint).
    let ca = enrol
        .client()
        .get(format!("https://localhost:{port}/ca.crt"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        ca,
        std::fs::read_to_string(enrol.pki.join("ca.crt")).unwrap()
    );

    let (status, body) = enrol.post(port, "AAAA-BBBB-CCCC");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("2 attempt(s) left"), "{body}");
    assert_eq!(enrol.status()["attemptsLeft"], 2);

    // Typed as the console shows it, in lower case: accepted.
    let (status, bundle) = enrol.post(port, &code.to_lowercase());
    assert_eq!(status, 200, "{bundle}");
    for file in ["admin.key", "admin.crt", "ca.crt"] {
        let part = std::fs::read_to_string(enrol.pki.join("admin").join(file)).unwrap();
        assert!(bundle.contains(&part), "the bundle lacks {file}");
    }
    let (exit, out) = enrol.wait_exit();
    assert_eq!(exit, 0, "{out}");
    assert!(
        !out.contains(&code),
        "the code must not reach the journal: {out}"
    );
    let status = enrol.status();
    assert_eq!(status["state"], "handed out");
    assert!(status["code"].is_null(), "{status}");
    assert!(enrol.state.join("handed-out").exists());

    // Never again: a restart (the next boot) closes at once.
    let again = enrol_command(&enrol.pki, &enrol.status, &enrol.state)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("handed out already"));
}

#[test]
fn wrong_codes_lock_enrolment_and_the_right_one_no_longer_works() {
    let mut enrol = Enrol::start(&["--attempts", "2"]);
    let (code, port) = enrol.waiting();
    assert_eq!(enrol.post(port, "WRONG").0, 403);
    let (status, body) = enrol.post(port, "WRONG-AGAIN");
    assert_eq!(status, 403);
    assert!(body.contains("no attempts left"), "{body}");
    let (exit, _) = enrol.wait_exit();
    assert_eq!(exit, 0);
    assert_eq!(enrol.status()["state"], "locked");
    assert!(!enrol.state.join("handed-out").exists());
    // The server is gone: the right code reaches nobody.
    let late = enrol
        .client()
        .post(format!("https://localhost:{port}/enrol"))
        .body(code)
        .send();
    assert!(late.is_err(), "{late:?}");
}

#[test]
fn an_unused_code_expires() {
    let mut enrol = Enrol::start(&["--ttl-seconds", "1"]);
    enrol.waiting();
    let (exit, _) = enrol.wait_exit();
    assert_eq!(exit, 0);
    assert_eq!(enrol.status()["state"], "expired");
}

#[test]
fn no_enrolment_when_the_site_brings_its_own_callers_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = init_pki(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        include_str!("../image/config.yaml").replace(
            "/etc/butler-edge/pki/ca.crt",
            "/etc/butler-edge/site/callers/site-ca.pem",
        ),
    )
    .unwrap();
    let appliance_ca = pki.join("ca.crt");
    let mut enrol = Enrol::start_in(
        dir,
        pki,
        &[
            "--config",
            config.to_str().unwrap(),
            "--appliance-ca",
            appliance_ca.to_str().unwrap(),
        ],
    );
    let (exit, out) = enrol.wait_exit();
    assert_eq!(exit, 0, "{out}");
    let status = enrol.status();
    assert_eq!(status["state"], "off", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("site's own CA")
    );
}
