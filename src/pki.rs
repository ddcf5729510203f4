//! Reading PEM certificates and CRLs for reports and expiry warnings.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What an admin needs to know about one certificate in a PEM file.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    pub not_after_text: String,
}

impl CertSummary {
    /// Whole days until expiry (negative once expired).
    pub fn days_left(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        (self.not_after - now).div_euclid(86_400)
    }
}

/// The certificates in a PEM file, first (leaf) first; an error says why the file
/// cannot be used.
pub fn read_cert_summaries(path: &Path) -> Result<Vec<CertSummary>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(&data) {
        let pem = pem.map_err(|e| format!("{} is not a PEM file: {e}", path.display()))?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        let cert = pem
            .parse_x509()
            .map_err(|e| format!("{}: unreadable certificate: {e}", path.display()))?;
        let validity = cert.validity();
        out.push(CertSummary {
            subject: cert.subject().to_string(),
            not_after: validity.not_after.timestamp(),
            not_after_text: validity.not_after.to_string(),
        });
    }
    if out.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(out)
}

/// What an admin needs to know about one CRL: whose it is and when it should be replaced.
#[derive(Debug, Clone)]
pub struct CrlSummary {
    pub issuer: String,
    /// Seconds since the Unix epoch; `None` when the CRL names no next update.
    pub next_update: Option<i64>,
    pub next_update_text: String,
}

impl CrlSummary {
    /// Whether the issuer promised a newer CRL by now.
    pub fn is_stale(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.next_update.is_some_and(|t| t < now)
    }
}

/// The CRLs in a file (PEM `X509 CRL` blocks, or one DER CRL).
pub fn read_crl_summaries(path: &Path) -> Result<Vec<CrlSummary>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut ders = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(&data) {
        let pem = pem.map_err(|e| format!("{} is not a PEM file: {e}", path.display()))?;
        if pem.label == "X509 CRL" {
            ders.push(pem.contents);
        }
    }
    if ders.is_empty() {
        ders.push(data);
    }
    ders.iter()
        .map(|der| {
            let (_, crl) = x509_parser::parse_x509_crl(der)
                .map_err(|e| format!("{}: unreadable CRL: {e}", path.display()))?;
            let next = crl.next_update();
            Ok(CrlSummary {
                issuer: crl.issuer().to_string(),
                next_update: next.map(|t| t.timestamp()),
                next_update_text: next.map_or_else(|| "never".to_string(), |t| t.to_string()),
            })
        })
        .collect()
}
