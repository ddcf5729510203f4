//! Which certificate and CRL files a config uses, and how close each is to expiry.
//!
//! `check-config`, `GET /health`, the start-up and daily expiry warnings and the `SIGHUP`
//! reload all ask the same questions of the same files; this is the one list of those files
//! and the one rule for "expiring" ([`EXPIRY_WARNING_DAYS`]), so the four never disagree.

use std::path::PathBuf;

use crate::config::Config;
use crate::pki::{read_cert_summaries, read_crl_summaries};

/// Certificates expiring within this many days are warned about and reported `expiring`.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A certificate file the config names, with what it is for (purpose and config key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFile {
    pub purpose: &'static str,
    pub path: PathBuf,
}

/// How close a certificate is to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Valid,
    /// Within [`EXPIRY_WARNING_DAYS`].
    Expiring,
    Expired,
}

impl Expiry {
    pub fn of(days_left: i64) -> Expiry {
        if days_left < 0 {
            Expiry::Expired
        } else if days_left < EXPIRY_WARNING_DAYS {
            Expiry::Expiring
        } else {
            Expiry::Valid
        }
    }
}

/// Every certificate file the config uses: the HTTPS server's certificate and chain, the
/// caller CAs (with client certificates on), and the QRS client identity and root.
pub fn certificate_files(config: &Config) -> Vec<CertificateFile> {
    let mut files = Vec::new();
    let mut add = |purpose, path: &PathBuf| {
        files.push(CertificateFile {
            purpose,
            path: path.clone(),
        })
    };
    let tls = &config.rest.tls;
    if config.rest.enable && tls.enable {
        add("HTTPS server, Butler.restServerConfig.tls.cert", &tls.cert);
        if let Some(ca) = &tls.ca {
            add("HTTPS chain, Butler.restServerConfig.tls.ca", ca);
        }
        if config.client_auth.enable {
            for ca in &config.client_auth.ca {
                add("caller CA, ButlerEdge.clientAuth.ca", ca);
            }
        }
    }
    let st = &config.start_task;
    if config.features.start_task_ready() && st.qrs.use_ssl {
        add("QRS client, Butler.cert.clientCert", &st.qrs.client_cert);
        if st.qrs.reject_unauthorized {
            add("QRS root CA, Butler.cert.clientCertCA", &st.qrs.root_ca);
        }
    }
    files
}

/// The CRL files in force (only with client certificates on).
pub fn crl_files(config: &Config) -> Vec<PathBuf> {
    if config.client_auth.enable {
        config.client_auth.crl.clone()
    } else {
        Vec::new()
    }
}

/// Logs a warning for each certificate that expires within [`EXPIRY_WARNING_DAYS`], an
/// error for each already expired or unreadable.
pub fn warn_expiring(files: &[CertificateFile]) {
    for CertificateFile { purpose, path } in files {
        let certs = match read_cert_summaries(path) {
            Ok(certs) => certs,
            Err(e) => {
                tracing::warn!(file = %path.display(), "certificate ({purpose}): {e}");
                continue;
            }
        };
        for cert in certs {
            let days = cert.days_left();
            match Expiry::of(days) {
                Expiry::Expired => tracing::error!(
                    file = %path.display(), subject = %cert.subject, not_after = %cert.not_after_text,
                    "certificate ({purpose}) has EXPIRED"
                ),
                Expiry::Expiring => tracing::warn!(
                    file = %path.display(), subject = %cert.subject, not_after = %cert.not_after_text, days_left = days,
                    "certificate ({purpose}) expires within {EXPIRY_WARNING_DAYS} days"
                ),
                Expiry::Valid => {}
            }
        }
    }
}

/// Logs a warning for each CRL whose issuer promised a newer one by now: revocations made
/// since are not known until the file is replaced.
pub fn warn_stale_crls(files: &[PathBuf]) {
    for path in files {
        match read_crl_summaries(path) {
            Ok(crls) => {
                for crl in crls.iter().filter(|c| c.is_stale()) {
                    tracing::warn!(
                        file = %path.display(), issuer = %crl.issuer, next_update = %crl.next_update_text,
                        "CRL (ButlerEdge.clientAuth.crl) is past its next update: issue a new one \
                         and reload, or revocations made since are not enforced"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), "CRL (ButlerEdge.clientAuth.crl): {e}")
            }
        }
    }
}
