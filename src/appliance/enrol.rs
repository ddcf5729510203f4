//! `butler-edge enrol`: hands the first-boot admin bundle to the admin standing at the
//! hypervisor console, once, without anyone logging in.
//!
//! At boot a one-time code is drawn and shown on the console (through the status file the
//! console reads; it is never logged). A small HTTPS server, with the appliance's server
//! certificate (signed by the appliance CA whose fingerprint the console shows), serves:
//!
//! - `GET /ca.crt` — the appliance CA, so the admin can check its fingerprint against the
//!   console before trusting anything else;
//! - `POST /enrol` with the code as the body — the admin bundle (`admin.key`, `admin.crt`,
//!   `ca.crt` in one PEM file, usable as `curl --cert`).
//!
//! Why it is safe: the code is only on the console (whoever can read it could also attach a
//! medium, i.e. already controls the appliance); it has about 59 bits of randomness, is
//! compared in constant time, expires (`--ttl-seconds`, 30 minutes by default), and the
//! server quits for good after `--attempts` wrong codes (5) or one right one, so it cannot be
//! guessed online; the bundle travels over TLS the admin verifies against the console's
//! fingerprint, so nobody on the network path can read it; once handed out, a marker in the
//! state directory keeps the server from ever starting again. With a callers CA of the
//! site's own on the provisioning medium (the config no longer trusts the appliance CA), the
//! server does not start at all: no private key leaves the appliance.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Letters and digits that cannot be mistaken for one another when read off a screen.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// 12 characters of 32 symbols: 60 bits.
const CODE_LEN: usize = 12;

#[derive(Debug, clap::Args)]
pub struct EnrolArgs {
    /// Directory holding admin.crt, admin.key and ca.crt (systemd's $CREDENTIALS_DIRECTORY).
    #[arg(long, value_name = "DIR")]
    pub bundle_dir: PathBuf,
    /// The HTTPS server certificate and key (the appliance's, signed by its CA).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Where to listen.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8444")]
    pub listen: String,
    /// The Butler config in force: enrolment runs only while its ButlerEdge.clientAuth.ca
    /// names the appliance CA (`--appliance-ca`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/butler-edge/pki/ca.crt"
    )]
    pub appliance_ca: PathBuf,
    /// The status the console shows (holds the code while it is valid: keep it private).
    #[arg(long, value_name = "FILE")]
    pub status_file: PathBuf,
    /// Directory for the "handed out" marker; its presence stops every later start.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// How long the code is valid.
    #[arg(long, default_value_t = 1800)]
    pub ttl_seconds: u64,
    /// Wrong codes accepted before the server quits.
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
}

/// What the console shows about enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `waiting`, `handed out`, `expired`, `locked` or `off`.
    pub state: String,
    /// The code, only while `waiting`.
    pub code: Option<String>,
    pub port: Option<u16>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    pub attempts_left: Option<u32>,
    pub message: String,
}

impl Status {
    pub fn read(path: &Path) -> Option<Status> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

const MARKER: &str = "handed-out";

/// The status while the code is valid.
#[derive(Clone)]
struct Waiting {
    code: String,
    port: u16,
    expires_at: u64,
}

impl Waiting {
    fn status(&self, attempts_left: u32) -> Status {
        Status {
            state: "waiting".into(),
            code: Some(self.code.clone()),
            port: Some(self.port),
            expires_at: Some(self.expires_at),
            attempts_left: Some(attempts_left),
            message: "POST the code to /enrol (see the README, \"Appliance\")".into(),
        }
    }
}

struct Shared {
    code: String,
    bundle: Bytes,
    ca: Bytes,
    gate: Mutex<Gate>,
    /// Woken when `gate.outcome` is set: the server then stops.
    done: Notify,
}

/// What is left of the code's use: the tries, and how it ended.
struct Gate {
    attempts_left: u32,
    outcome: Option<&'static str>,
}

impl Shared {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, gate: &mut Gate, outcome: &'static str) {
        gate.outcome = Some(outcome);
        self.done.notify_one();
    }
}

/// Runs the enrolment server until the bundle is handed out, the code expires or too many
/// wrong codes were tried.
///
/// The steps: say so and stop when enrolment is closed already ([`closed_already`]), read
/// the bundle and the server's certificate, serve until the gate closes ([`serve`]), then
/// record how it ended ([`ending`]). Each step writes the status file the console reads.
pub fn run(args: &EnrolArgs) -> Result<(), EnrolError> {
    let marker = args.state_dir.join(MARKER);
    if let Some(status) = closed_already(args, &marker)? {
        return report(&args.status_file, &status);
    }
    let read = |name: &str| {
        let path = args.bundle_dir.join(name);
        std::fs::read(&path).map_err(|source| EnrolError::Io { path, source })
    };
    let (key, cert, ca) = (read("admin.key")?, read("admin.crt")?, read("ca.crt")?);
    let shared = Arc::new(Shared {
        code: new_code(),
        bundle: Bytes::from([key, cert, ca.clone()].concat()),
        ca: Bytes::from(ca),
        gate: Mutex::new(Gate {
            attempts_left: args.attempts,
            outcome: None,
        }),
        done: Notify::new(),
    });
    let tls = server_tls(&args.cert, &args.key)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EnrolError::Other(format!("async runtime: {e}")))?;
    let outcome = runtime.block_on(serve(args, shared, tls))?;
    if outcome == "handed out" {
        write_marker(&marker)?;
    }
    report(&args.status_file, &ending(outcome))
}

/// Why there is nothing to serve before the server starts, if so: the bundle was handed out
/// on an earlier boot (the marker exists), or the config's callers are certified by the
/// site's own CA rather than the appliance CA, so the bundle would let nobody in.
fn closed_already(args: &EnrolArgs, marker: &Path) -> Result<Option<Status>, EnrolError> {
    if marker.exists() {
        return Ok(Some(finished(
            "handed out",
            "the admin bundle was handed out already; enrolment is closed for good",
        )));
    }
    if let Some(config) = &args.config {
        let config = crate::config::Config::load(config)
            .map_err(|e| EnrolError::Other(format!("cannot read the config: {e}")))?;
        if !(config.client_auth.enable && config.client_auth.ca.contains(&args.appliance_ca)) {
            return Ok(Some(finished(
                "off",
                "callers are certified by the site's own CA (ButlerEdge.clientAuth.ca does not name the appliance CA): no bundle to hand out",
            )));
        }
    }
    Ok(None)
}

/// Listens, publishes the code's status, and answers callers until the code expires or the
/// gate closes (bundle handed out, or too many wrong codes). Returns how it ended.
async fn serve(
    args: &EnrolArgs,
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
) -> Result<&'static str, EnrolError> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| EnrolError::Other(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| EnrolError::Other(e.to_string()))?;
    let waiting = Waiting {
        code: grouped(&shared.code),
        port: local.port(),
        expires_at: unix_now() + args.ttl_seconds,
    };
    write_status(&args.status_file, &waiting.status(args.attempts))?;
    println!(
        "butler-edge enrol: listening on {local}; the one-time code is on the console, valid {} minutes",
        args.ttl_seconds / 60
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let expiry = tokio::time::sleep(Duration::from_secs(args.ttl_seconds));
    tokio::pin!(expiry);
    let outcome = loop {
        tokio::select! {
            _ = &mut expiry => break "expired",
            _ = shared.done.notified() => {
                break shared.gate().outcome.unwrap_or("locked");
            }
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                tokio::spawn(answer_connection(
                    stream,
                    peer,
                    acceptor.clone(),
                    shared.clone(),
                    args.status_file.clone(),
                    waiting.clone(),
                ));
            }
        }
    };
    // Let the last answer reach its caller before the process goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(outcome)
}

/// One caller's connection: the TLS handshake (bounded, so a silent peer holds nothing for
/// long), then HTTP/1 requests through [`handle`].
async fn answer_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    status_file: PathBuf,
    waiting: Waiting,
) {
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
    else {
        return;
    };
    let service = service_fn(move |req| {
        handle(
            req,
            peer,
            shared.clone(),
            status_file.clone(),
            waiting.clone(),
        )
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// The final status for how the server ended.
fn ending(outcome: &str) -> Status {
    match outcome {
        "handed out" => finished(
            "handed out",
            "the admin bundle was handed out; enrolment is closed for good",
        ),
        "expired" => finished(
            "expired",
            "the code expired unused; restart the appliance for a new one",
        ),
        _ => finished(
            "locked",
            "too many wrong codes; enrolment is closed until the appliance restarts",
        ),
    }
}

/// Writes the final status for the console and says it on stdout, for the journal.
fn report(status_file: &Path, status: &Status) -> Result<(), EnrolError> {
    write_status(status_file, status)?;
    println!("butler-edge enrol: {}", status.message);
    Ok(())
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    status_file: PathBuf,
    waiting: Waiting,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = |code: StatusCode, body: Bytes, kind: &'static str| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = code;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(kind),
        );
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        Ok(response)
    };
    let text = |code, message: String| {
        answer(
            code,
            Bytes::from(message + "\n"),
            "text/plain; charset=utf-8",
        )
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ca.crt") => {
            answer(StatusCode::OK, shared.ca.clone(), "application/x-pem-file")
        }
        (&Method::POST, "/enrol") => {
            let body = match Limited::new(req.into_body(), 256).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the code is 12 characters".into(),
                    );
                }
            };
            let given = normalise(&String::from_utf8_lossy(&body));
            let mut gate = shared.gate();
            if gate.attempts_left == 0 || gate.outcome.is_some() {
                return text(StatusCode::GONE, "enrolment is closed".into());
            }
            if constant_time_eq(given.as_bytes(), shared.code.as_bytes()) {
                shared.close(&mut gate, "handed out");
                println!("butler-edge enrol: admin bundle handed out to {peer}");
                return answer(
                    StatusCode::OK,
                    shared.bundle.clone(),
                    "application/x-pem-file",
                );
            }
            gate.attempts_left -= 1;
            let left = gate.attempts_left;
            println!("butler-edge enrol: wrong code from {peer}; {left} attempt(s) left");
            if left == 0 {
                shared.close(&mut gate, "locked");
                return text(
                    StatusCode::FORBIDDEN,
                    "wrong code; no attempts left: enrolment is closed until the appliance restarts"
                        .into(),
                );
            }
            let _ = write_status(&status_file, &waiting.status(left));
            text(
                StatusCode::FORBIDDEN,
                format!("wrong code; {left} attempt(s) left"),
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "GET /ca.crt, or POST /enrol with the console's code as the body".into(),
        ),
    }
}

fn server_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, EnrolError> {
    let chain = crate::security::tls::read_certs("--cert", cert)
        .map_err(|e| EnrolError::Other(e.to_string()))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| EnrolError::Other(format!("--key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| EnrolError::Other(format!("TLS: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

use rustls_pki_types::pem::PemObject as _;

fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `ABCD-EFGH-JKLM`, as shown on the console.
fn grouped(code: &str) -> String {
    code.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// What the admin typed, without the dashes and spaces, in upper case.
fn normalise(text: &str) -> String {
    let text = text.trim().strip_prefix("code=").unwrap_or(text.trim());
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Hand-written because it is three lines: equal length is public (the code's length is
/// documented), the contents are compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn finished(state: &str, message: &str) -> Status {
    Status {
        state: state.into(),
        code: None,
        port: None,
        expires_at: None,
        attempts_left: None,
        message: message.into(),
    }
}

fn write_status(path: &Path, status: &Status) -> Result<(), EnrolError> {
    let text = serde_json::to_string(status).map_err(|e| EnrolError::Other(e.to_string()))?;
    crate::init::write_file(path, text.as_bytes(), 0o600, None)
        .map_err(|e| EnrolError::Other(e.to_string()))
}

fn write_marker(path: &Path) -> Result<(), EnrolError> {
    let at = unix_now().to_string();
    crate::init::write_file(path, at.as_bytes(), 0o600, None)
        .map_err(|e| EnrolError::Other(e.to_string()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_use_the_alphabet_and_read_back() {
        let code = new_code();
        assert_eq!(code.len(), CODE_LEN);
        assert!(code.bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(normalise(&grouped(&code).to_lowercase()), code);
        assert_eq!(normalise(&format!("code={}\n", grouped(&code))), code);
        assert!(constant_time_eq(code.as_bytes(), code.as_bytes()));
        assert!(!constant_time_eq(code.as_bytes(), b"AAAAAAAAAAAA"));
        assert!(!constant_time_eq(code.as_bytes(), b"short"));
    }
}
