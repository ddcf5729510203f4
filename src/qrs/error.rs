//! QRS errors. Each names the QRS endpoint it concerns, and for answers, the status and QRS's
//! own message, so a log line or a 502 body says what to look at.

use std::path::PathBuf;

/// The QRS client could not be set up from its settings (files, keys, headers).
#[derive(Debug, thiserror::Error)]
pub enum QrsSetupError {
    #[error("{key}: cannot read {what} file {path:?}: {cause}")]
    File {
        key: &'static str,
        what: &'static str,
        path: PathBuf,
        cause: String,
    },
    #[error("{key}: {path:?} contains no {what}")]
    Empty {
        key: &'static str,
        what: &'static str,
        path: PathBuf,
    },
    #[error(
        "Butler.cert.clientCert / Butler.cert.clientCertKey: the key in {key_path:?} does not fit the certificate in {cert_path:?} or is not usable: {cause}"
    )]
    Identity {
        cert_path: PathBuf,
        key_path: PathBuf,
        cause: String,
    },
    #[error("Butler.configQRS.headers.static: invalid header {name:?}: {cause}")]
    Header { name: String, cause: String },
    #[error("QRS client: {0}")]
    Client(String),
}

/// A QRS request failed.
#[derive(Debug, thiserror::Error)]
pub enum QrsError {
    /// No connection could be made (refused, reset, unreachable, connect timeout).
    #[error("cannot reach QRS at {host} ({endpoint}): {cause}")]
    Unreachable {
        host: String,
        endpoint: String,
        cause: String,
    },
    /// The TLS handshake failed; `cause` says why and what to change.
    #[error("TLS handshake with QRS at {host} failed ({endpoint}): {cause}")]
    Tls {
        host: String,
        endpoint: String,
        cause: String,
    },
    /// Connected, but no complete answer within the request timeout.
    #[error("QRS at {host} did not answer {endpoint} within {timeout_ms} ms")]
    Timeout {
        host: String,
        endpoint: String,
        timeout_ms: u128,
    },
    /// The connection broke after the request was sent: QRS may or may not have acted on it.
    #[error("connection to QRS at {host} broke during {endpoint}: {cause}")]
    Broken {
        host: String,
        endpoint: String,
        cause: String,
    },
    /// QRS answered with a non-2xx status.
    #[error("QRS {endpoint} answered {status}: {message}")]
    Status {
        endpoint: String,
        status: u16,
        message: String,
    },
    /// QRS answered 2xx with a body we cannot read.
    #[error("QRS {endpoint} answered with an unexpected body: {detail}")]
    BadBody { endpoint: String, detail: String },
}

impl QrsError {
    /// True when QRS was not reached at all, so it certainly did nothing.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, QrsError::Unreachable { .. } | QrsError::Tls { .. })
    }
}
