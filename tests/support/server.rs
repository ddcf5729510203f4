//! Runs the real `butler-edge` binary on an ephemeral loopback port.
//!
//! [`Launch`] is the one builder: config, directories, environment, arguments and user, then
//! `.spawn()` (a [`Server`] that serves) or `.expect_exit()` (an [`Exit`]: a start-up refusal).
//! [`Server::start`] and [`Server::start_in`] are shorthands for the common cases.

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
/// The head of [`TLS_CONFIG`] up to the endpoint switches, shared with
/// [`TLS_START_TASK_CONFIG`] (a macro, so both stay `&'static str` literals).
macro_rules! tls_head {
    () => {
        "\
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
"
    };
}

pub const TLS_CONFIG: &str = concat!(tls_head!(), "  keyValueStore:\n    enable: true\n");

/// [`TLS_CONFIG`] with start-task on too; append Butler's QRS sections
/// (`fake_qrs::butler_qrs_yaml`) and a `ButlerEdge:` section.
pub const TLS_START_TASK_CONFIG: &str = concat!(
    tls_head!(),
    "    senseStartTask: true\n  keyValueStore:\n    enable: true\n"
);

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

/// A running `butler-edge` binary, made by [`Launch::spawn`]; killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    config_dir: PathBuf,
    /// The temporary directory the config lives in, when the server owns it.
    _dir: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    /// The thread copying stderr into `log`; joined once the process has exited, so the
    /// log is complete then.
    reader: Option<std::thread::JoinHandle<()>>,
    /// How the process is run, kept for [`Server::restart`].
    how: How,
}

impl Server {
    /// Starts the binary with `config` (`{port}` and `{max_keys}` substituted; the
    /// latter defaults to 1000) and waits until it accepts connections.
    /// Shorthand for `Launch::fresh(config).spawn()`.
    pub fn start(config: &str) -> Server {
        Launch::fresh(config).spawn()
    }

    /// As [`Server::start`], with the config in `dir` and the database in `data_dir`.
    /// Shorthand for `Launch::fresh(config).in_dir(dir).data_dir(&data_dir).spawn()`.
    pub fn start_in(dir: tempfile::TempDir, data_dir: PathBuf, config: &str) -> Server {
        Launch::fresh(config)
            .in_dir(dir)
            .data_dir(&data_dir)
            .spawn()
    }

    fn spawn_child(&mut self) {
        let mut child = self
            .how
            .command(&self.config_path, &self.data_dir)
            .spawn()
            .expect("spawn butler-edge");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        self.reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        }));
        self.child = Some(child);
    }

    /// Waits until the listener accepts connections; panics with the log if the process
    /// exits first or 20 s pass.
    pub fn wait_ready(&mut self) {
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

    /// The whole log of a process that has exited (waits for the last lines to be read).
    fn log_after_exit(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log()
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

    /// Waits for an exit already requested (e.g. by a signal sent elsewhere); the log is
    /// complete when it returns.
    pub fn terminate_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // The log is complete once the exit is seen.
                self.log_after_exit();
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("butler-edge did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the binary again on the same config, data directory, environment, arguments
    /// and user, and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.spawn_child();
        self.wait_ready();
    }

    /// Whether the process has exited (without reaping a still-running one).
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
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

/// The one way tests run the binary: the config (`{port}`, `{max_keys}` and `{dir}` filled
/// in), the directory it is written to, the data directory, extra or removed environment,
/// extra arguments and which user runs it; then [`Launch::spawn`] for a server expected to
/// keep serving, or [`Launch::expect_exit`] for one expected to exit (a start-up refusal).
///
/// ```ignore
/// let server = Launch::fresh(KV_CONFIG).env("NOTIFY_SOCKET", path).spawn();
/// let exit = Launch::new(config, dir.path()).user("nobody").expect_exit(within, "why");
/// ```
pub struct Launch {
    config: String,
    dir: PathBuf,
    owned_dir: Option<tempfile::TempDir>,
    data_dir: Option<PathBuf>,
    how: How,
}

/// Who runs the process.
#[derive(Clone)]
enum User {
    /// `--user root` when the tests run as root (butler-edge refuses root outside systemd
    /// otherwise), nothing when they do not.
    RootIfRoot,
    /// No `--user` argument at all: what the refusal and systemd tests look at.
    Unnamed,
    /// `--user NAME`: butler-edge drops to it after binding.
    Named(String),
    /// Started as this uid and gid (when the tests run as root) — a process that never had
    /// root.
    Uid(u32),
}

/// How the process is run, apart from its config and data directory.
#[derive(Clone)]
struct How {
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    args: Vec<String>,
    user: User,
}

impl How {
    fn command(&self, config_path: &Path, data_dir: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(config_path)
            .arg("--data-dir")
            .arg(data_dir)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for name in &self.env_remove {
            command.env_remove(name);
        }
        match &self.user {
            User::RootIfRoot => {
                command.args(root_user_args());
            }
            User::Unnamed => {}
            User::Named(name) => {
                command.args(["--user", name]);
            }
            User::Uid(uid) if nix::unistd::geteuid().is_root() => {
                command.uid(*uid).gid(*uid);
            }
            User::Uid(_) => {}
        }
        command
    }
}

/// How a launched binary ended.
pub struct Exit {
    pub code: i32,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Launch {
    /// `config` written to `dir/config.yaml` (the caller keeps `dir`); the data directory
    /// defaults to `dir/data`.
    pub fn new(config: &str, dir: &Path) -> Launch {
        Launch {
            config: config.to_string(),
            dir: dir.to_path_buf(),
            owned_dir: None,
            data_dir: None,
            how: How {
                env: Vec::new(),
                env_remove: Vec::new(),
                args: Vec::new(),
                user: User::RootIfRoot,
            },
        }
    }

    /// `config` in a new temporary directory the server owns (removed with it).
    pub fn fresh(config: &str) -> Launch {
        Launch::new(config, Path::new("")).in_dir(tempfile::tempdir().expect("temp dir"))
    }

    /// The config in `dir`, which the server owns from now on.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Launch {
        self.dir = dir.path().to_path_buf();
        self.owned_dir = Some(dir);
        self
    }

    pub fn data_dir(mut self, path: &Path) -> Launch {
        self.data_dir = Some(path.to_path_buf());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.how.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Removes `name` from the environment the process inherits.
    pub fn env_remove(mut self, name: &str) -> Launch {
        self.how.env_remove.push(name.to_string());
        self
    }

    pub fn arg(mut self, arg: &str) -> Launch {
        self.how.args.push(arg.to_string());
        self
    }

    /// `--user name`.
    pub fn user(mut self, name: &str) -> Launch {
        self.how.user = User::Named(name.to_string());
        self
    }

    /// No `--user` at all, even when the tests run as root.
    pub fn no_user(mut self) -> Launch {
        self.how.user = User::Unnamed;
        self
    }

    /// Runs as this uid and gid (when the tests run as root) instead of `--user root`.
    pub fn run_as_uid(mut self, uid: u32) -> Launch {
        self.how.user = User::Uid(uid);
        self
    }

    /// Writes the config on a free port and starts the process, without waiting.
    fn start(self) -> Server {
        let port = free_port();
        let config_path = self.dir.join("config.yaml");
        let text = self
            .config
            .replace("{port}", &port.to_string())
            .replace("{max_keys}", "1000")
            .replace("{dir}", &self.dir.display().to_string());
        std::fs::write(&config_path, text).expect("write config");
        let mut server = Server {
            child: None,
            port,
            config_path,
            data_dir: self.data_dir.unwrap_or_else(|| self.dir.join("data")),
            config_dir: self.dir,
            _dir: self.owned_dir,
            log: Arc::new(Mutex::new(String::new())),
            reader: None,
            how: self.how,
        };
        server.spawn_child();
        server
    }

    /// Starts it and waits until it accepts connections.
    pub fn spawn(self) -> Server {
        let mut server = self.start();
        server.wait_ready();
        server
    }

    /// Starts it without waiting for the listener, for a test that watches readiness
    /// itself (systemd's READY=1 must come once the listener accepts, not before).
    pub fn spawn_unready(self) -> Server {
        self.start()
    }

    /// Runs it and waits up to `within` for it to exit; panics (naming `why`) if it keeps
    /// running.
    pub fn expect_exit(self, within: Duration, why: &str) -> Exit {
        let started = Instant::now();
        let mut server = self.start();
        let mut child = server.child.take().expect("running");
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
        Exit {
            code: status.code().unwrap_or(-1),
            stderr: server.log_after_exit(),
            elapsed: started.elapsed(),
        }
    }
}
