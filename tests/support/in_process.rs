//! The service run in this test process through its real entry point (`app::prepare`, then
//! `Service::run` on a loopback listener), for behaviour that needs no process of its own:
//! routing, enablement, limits, permissions, and timeouts under tokio's paused clock.
//!
//! What needs a process (signals, systemd, privileges, crashes, a full disk, TLS files
//! reloaded) keeps using [`super::server::Server`], which spawns the binary.

use std::time::Duration;

use butler_edge::app;
use butler_edge::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A running in-process service. Dropping it without [`InProcess::stop`] aborts it.
pub struct InProcess {
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), app::StartupError>>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Parses `config` (`{port}` is replaced by the listener's port, `{max_keys}` by 1000),
    /// prepares the service on a fresh data directory and serves it on a loopback port, on
    /// the current tokio runtime.
    pub async fn start(config: &str) -> InProcess {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{max_keys}", "1000");
        let config = Config::parse(&text, "in-process test config").expect("valid config");
        let dir = tempfile::tempdir().expect("temp dir");
        let service = app::prepare(config, &dir.path().join("data"))
            .await
            .expect("service prepared");
        let (stop, stopped) = oneshot::channel();
        // No reloads: the sender is dropped at once.
        let (_, reloads) = mpsc::channel(1);
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(service.run(Some(listener), None, shutdown, reloads));
        InProcess {
            port,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Shuts down as SIGTERM would (drain, close the store) and returns how `run` ended.
    pub async fn stop(mut self) -> Result<(), app::StartupError> {
        let _ = self.stop.take().expect("running").send(());
        self.task
            .take()
            .expect("running")
            .await
            .expect("service task")
    }

    /// Sends `request` (a whole HTTP/1.1 request; it should say `Connection: close`) and
    /// reads the answer until the server closes: (status, body).
    pub async fn exchange(&self, request: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        parse(&raw)
    }

    /// A GET with `Connection: close`.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self
            .exchange(&format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ))
            .await;
        (status, json(&body))
    }

    /// A POST of `body` as JSON, with extra header lines (each ending in `\r\n`).
    pub async fn post(&self, path: &str, headers: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self
            .exchange(&format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
                body.len()
            ))
            .await;
        (status, json(&text))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An [`InProcess`] service on a runtime of its own thread, for the blocking tests: they
/// speak to its loopback port with the same [`super::butler::Butler`] client and reqwest
/// requests as to a spawned [`super::server::Server`], so a test moves in-process by
/// changing the line that starts it. Dropping it shuts the service down as SIGTERM would
/// and fails the test if that shutdown is not clean.
pub struct Threaded {
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), app::StartupError>>>,
}

impl InProcess {
    /// As [`InProcess::start`], serving from a thread of its own until dropped.
    pub fn on_thread(config: &str) -> Threaded {
        let config = config.to_string();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let service = InProcess::start(&config).await;
                let _ = port_tx.send(service.port);
                let _ = stopped.await;
                service.stop().await
            })
        });
        let port = port_rx
            .recv_timeout(WALL_CLOCK_BOUND)
            .expect("the in-process service did not start");
        Threaded {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Threaded {
    /// Butler's API on this service (plain HTTP).
    pub fn butler(&self) -> super::butler::Butler {
        super::butler::Butler::on_port(self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let ended = thread.join();
            if !std::thread::panicking() {
                ended
                    .expect("the in-process service panicked")
                    .expect("the in-process service did not shut down cleanly");
            }
        }
    }
}

/// Status and body of a complete HTTP/1.1 response (`Content-Length` framed).
fn parse(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, body.to_string())
}

fn json(body: &str) -> serde_json::Value {
    if body.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Long enough for anything a loopback request does, short against the timeouts tests
/// exercise under the paused clock.
pub const WALL_CLOCK_BOUND: Duration = Duration::from_secs(10);
