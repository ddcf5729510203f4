//! Runs the real `butler-edge` binary on an ephemeral loopback port.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_butler-edge");

/// A config with the REST API and key-value store on; `{port}` is filled in.
pub const KV_CONFIG: &str = "\
Butler:
  logLevel: info
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: {port}
  restServerEndpointsEnable:
    apiListEnabledEndpoints: true
    butlerping: true
    keyValueStore: true
  keyValueStore:
    enable: true
    maxKeysPerNamespace: {max_keys}
";

/// HTTPS with the key-value store on; `{port}` and `{dir}` (the server's config directory,
/// where a test writes `server.pem` and `server_key.pem`) are filled in.
pub const TLS_CONFIG: &str = "\
Butler:
  logLevel: debug
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: {port}
    tls:
      enable: true
      cert: {dir}/server.pem
      key: {dir}/server_key.pem
  restServerEndpointsEnable:
    apiListEnabledEndpoints: true
    butlerping: true
    keyValueStore: true
  keyValueStore:
    enable: true
";

/// A port that was free a moment ago.
/// `--user root` when the tests run as root: butler-edge refuses to serve as root outside
/// systemd unless a user is named (tests/appliance.rs covers that refusal).
pub fn root_user_args() -> &'static [&'static str] {
    if nix::unistd::geteuid().is_root() {
        &["--user", "root"]
    } else {
        &[]
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
    /// Extra environment for the process (e.g. systemd's `NOTIFY_SOCKET`).
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts the binary with `config` (`{port}` and `{max_keys}` substituted; the
    /// latter defaults to 1000) and waits until it accepts connections.
    pub fn start(config: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        Server::start_in(dir, data_dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, data_dir: PathBuf, config: &str) -> Server {
        Server::start_in_with_env(dir, data_dir, config, &[])
    }

    /// As [`Server::start_in`], with extra environment variables for the process.
    pub fn start_in_with_env(
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        config: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let port = free_port();
        let config_path = dir.path().join("config.yaml");
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{max_keys}", "1000")
            .replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config_path, text).expect("write config");
        let mut server = Server {
            child: None,
            port,
            dir,
            config_path,
            data_dir,
            log: Arc::new(Mutex::new(String::new())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            // Tests run as root in CI; butler-edge refuses root unless told explicitly.
            .args(root_user_args())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn butler-edge");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "butler-edge exited early with {status}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "butler-edge did not listen within 20 s; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Butler's API on this server (plain HTTP).
    pub fn butler(&self) -> super::butler::Butler {
        super::butler::Butler::on_port(self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The same path on the HTTPS listener, as `localhost` (the test server certificates' name).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.port, path)
    }

    /// Sends SIGHUP (reload certificates and the client list).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -HUP");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Waits until the log holds `needle` at least `count` times; panics with the log after
    /// 20 s.
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches(needle).count() < count {
            if Instant::now() > deadline {
                panic!(
                    "log did not show {needle:?} {count} time(s) within 20 s; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.terminate_wait()
    }

    /// Waits for an exit already requested (e.g. by a signal sent elsewhere).
    pub fn terminate_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("butler-edge did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the binary again on the same config and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.spawn();
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking HTTP client for plain-HTTP tests, shared by the whole test binary
/// (each reqwest blocking client runs its own runtime thread; making one per
/// request would dominate the tests' time).
pub fn client() -> reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client")
        })
        .clone()
}

/// Status and parsed JSON body (Null for an empty body).
pub fn json_of(response: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    let value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

/// Runs `butler-edge` with arguments to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    // Runs that serve (no subcommand) get `--user root` when the tests run as root.
    let serves = !args.iter().any(|a| {
        matches!(
            *a,
            "check-config" | "init" | "token" | "--version" | "-V" | "--help" | "-h"
        )
    });
    let out = Command::new(BIN)
        .args(if serves { root_user_args() } else { &[] })
        .args(args)
        .output()
        .expect("run butler-edge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How a test runs the binary when it expects it to exit (a start-up refusal): the config
/// (`{port}`, `{max_keys}` and `{dir}` filled in), where it is written, the data directory,
/// extra environment and arguments, and which user runs it. [`Server`] is the same for a
/// binary expected to keep serving.
pub struct Launch {
    config: String,
    dir: PathBuf,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    uid: Option<u32>,
}

/// How a launched binary ended.
pub struct Exit {
    pub code: i32,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Launch {
    /// `config` written to `dir/config.yaml`; the data directory defaults to `dir/data`.
    pub fn new(config: &str, dir: &Path) -> Launch {
        Launch {
            config: config.to_string(),
            dir: dir.to_path_buf(),
            data_dir: dir.join("data"),
            env: Vec::new(),
            args: Vec::new(),
            uid: None,
        }
    }

    pub fn data_dir(mut self, path: &Path) -> Launch {
        self.data_dir = path.to_path_buf();
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Launch {
        self.args.push(arg.to_string());
        self
    }

    /// Runs as this uid and gid (when the tests run as root) instead of `--user root`.
    pub fn run_as_uid(mut self, uid: u32) -> Launch {
        self.uid = Some(uid);
        self
    }

    /// Runs it and waits up to `within` for it to exit; panics (naming `why`) if it keeps
    /// running.
    pub fn expect_exit(self, within: Duration, why: &str) -> Exit {
        use std::os::unix::process::CommandExt;
        let config_path = self.dir.join("config.yaml");
        let text = self
            .config
            .replace("{port}", &free_port().to_string())
            .replace("{max_keys}", "1000")
            .replace("{dir}", &self.dir.display().to_string());
        std::fs::write(&config_path, text).expect("write config");
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match self.uid {
            Some(uid) if nix::unistd::geteuid().is_root() => {
                command.uid(uid).gid(uid);
            }
            Some(_) => {}
            None => {
                command.args(root_user_args());
            }
        }
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn butler-edge");
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if started.elapsed() > within {
                let _ = child.kill();
                panic!("butler-edge kept running {why}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        Exit {
            code: status.code().unwrap_or(-1),
            stderr,
            elapsed: started.elapsed(),
        }
    }
}
