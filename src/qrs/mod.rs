//! The client for Qlik Sense's Repository Service (QRS): it finds tasks by id, tag and custom
//! property, starts them, and follows their executions. It speaks HTTPS with Sense's exported
//! client certificate and knows nothing of the HTTP requests our own server receives.

mod client;
mod error;
pub mod filter;
mod reachability;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{ExecutionResult, QrsClient, StartOutcome, TaskInfo};
pub use error::{QrsError, QrsSetupError};
pub use reachability::{Reachability, probe_when_idle};

/// QRS's answer to a start call for a task it did not start (disabled, no scheduler, app missing).
pub const EMPTY_SESSION_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Everything the QRS client needs, parsed and checked by the caller (config).
#[derive(Clone, Debug)]
pub struct QrsSettings {
    /// Host name or IP address of the Sense server running QRS (`Butler.configQRS.host`).
    pub host: String,
    /// QRS port, usually 4242 (`Butler.configQRS.port`).
    pub port: u16,
    /// HTTPS (the normal case) or plain HTTP (`Butler.configQRS.useSSL`).
    pub use_ssl: bool,
    /// Headers sent with every request, e.g. `X-Qlik-User` (`Butler.configQRS.headers.static`).
    pub static_headers: Vec<(String, String)>,
    /// Sense's exported client.pem (`Butler.cert.clientCert`).
    pub client_cert: PathBuf,
    /// Sense's exported client_key.pem: PKCS#1, PKCS#8 or SEC1 (`Butler.cert.clientCertKey`).
    pub client_key: PathBuf,
    /// Sense's exported root.pem, used to verify QRS's certificate (`Butler.cert.clientCertCA`).
    pub root_ca: PathBuf,
    /// Verify QRS's certificate against `root_ca` (`Butler.configQRS.rejectUnauthorized`).
    pub reject_unauthorized: bool,
    /// Time allowed to open a TCP connection and finish the TLS handshake.
    pub connect_timeout: Duration,
    /// Time allowed for one QRS request from start to the end of its answer.
    pub request_timeout: Duration,
}
