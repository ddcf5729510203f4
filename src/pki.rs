//! Reading PEM certificates for reports and expiry warnings.

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
