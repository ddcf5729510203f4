//! The one reader of PEM/DER files: certificates, private keys and CRLs, for the server's TLS
//! settings, the QRS client identity, `check-config`, `/health` and the expiry warnings.
//!
//! Every caller reads the same way, so a file that `check-config` calls usable is one start-up
//! accepts. Failures are a typed [`PemError`]; each caller adds the config key it was reading,
//! because only it knows why the file was asked for.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Why a certificate, key or CRL file cannot be used. `Display` is the problem in words,
/// without the path or the config key (the caller adds those).
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{}", read_problem(.0))]
    Read(std::io::Error),
    #[error("not valid PEM: {0}")]
    NotPem(String),
    #[error("not a PEM certificate file (no -----BEGIN CERTIFICATE----- block found)")]
    NoCertificate,
    #[error(
        "not a PEM private key (no unencrypted -----BEGIN PRIVATE KEY-----, BEGIN RSA PRIVATE \
         KEY or BEGIN EC PRIVATE KEY block found)"
    )]
    NoKey,
    #[error("not a CRL (no -----BEGIN X509 CRL----- block, and not DER either)")]
    NotCrl,
    #[error("not a readable CRL: {0}")]
    BadCrl(String),
    #[error(
        "the CRL's signature does not verify with the CA certificate named as its issuer \
         ({issuer}); it was not signed by that CA — issue it again with the CA's own key"
    )]
    CrlSignature { issuer: String },
    #[error(
        "the CRL's issuer ({issuer}) is none of the configured CA certificates, so its \
         signature cannot be checked; add the CA that issued it to the CA bundle"
    )]
    CrlIssuerUnknown { issuer: String },
}

fn read_problem(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => {
            format!("cannot be read by this user (permission denied): {e}")
        }
        _ => format!("cannot be read: {e}"),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(PemError::Read)
}

/// The certificates of a PEM file, in order (the leaf first); at least one.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let data = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::NotPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// A private key as OpenSSL, Sense or rcgen write it: PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
/// Sense exports), PKCS#8 or SEC1, unencrypted.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let data = read(path)?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::NoKey,
        other => PemError::NotPem(other.to_string()),
    })
}

/// The CRLs of a file, PEM (`BEGIN X509 CRL`) or one DER CRL, each checked to be a readable
/// CRL (its signature is checked against the CAs by [`check_crl_signature`]).
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PemError> {
    let data = read(path)?;
    let mut crls = CertificateRevocationListDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::NotPem(e.to_string()))?;
    if crls.is_empty() {
        if data.first() != Some(&0x30) {
            return Err(PemError::NotCrl);
        }
        crls.push(CertificateRevocationListDer::from(data));
    }
    for crl in &crls {
        x509_parser::parse_x509_crl(crl.as_ref()).map_err(|e| PemError::BadCrl(e.to_string()))?;
    }
    Ok(crls)
}

/// Checks that `crl` is signed by the CA certificate among `cas` whose subject is the CRL's
/// issuer. The TLS verifier checks a CRL's signature only when a caller's handshake needs
/// it, so an unchecked bad CRL would pass a reload and then refuse every caller.
pub fn check_crl_signature(
    crl: &CertificateRevocationListDer<'_>,
    cas: &[CertificateDer<'_>],
) -> Result<(), PemError> {
    let (_, parsed) =
        x509_parser::parse_x509_crl(crl.as_ref()).map_err(|e| PemError::BadCrl(e.to_string()))?;
    let issuers: Vec<_> = cas
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map(|(_, cert)| cert)
        .filter(|cert| cert.subject().as_raw() == parsed.issuer().as_raw())
        .collect();
    if issuers.is_empty() {
        return Err(PemError::CrlIssuerUnknown {
            issuer: parsed.issuer().to_string(),
        });
    }
    // Two CA certificates may share a subject (a renewed CA): one signature must verify.
    if issuers
        .iter()
        .any(|ca| parsed.verify_signature(ca.public_key()).is_ok())
    {
        Ok(())
    } else {
        Err(PemError::CrlSignature {
            issuer: parsed.issuer().to_string(),
        })
    }
}

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
        (self.not_after - crate::clock::unix_secs()).div_euclid(86_400)
    }
}

/// The certificates in a PEM file, first (leaf) first; an error says why the file
/// cannot be used, naming it.
pub fn read_cert_summaries(path: &Path) -> Result<Vec<CertSummary>, String> {
    let ders = certs(path).map_err(|e| match e {
        PemError::Read(e) => format!("cannot read {}: {e}", path.display()),
        PemError::NoCertificate => format!("{} holds no PEM certificate", path.display()),
        other => format!("{}: {other}", path.display()),
    })?;
    ders.iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|e| format!("{}: unreadable certificate: {e}", path.display()))?;
            let validity = cert.validity();
            Ok(CertSummary {
                subject: cert.subject().to_string(),
                not_after: validity.not_after.timestamp(),
                not_after_text: validity.not_after.to_string(),
            })
        })
        .collect()
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
        let now = crate::clock::unix_secs();
        self.next_update.is_some_and(|t| t < now)
    }
}

/// The CRLs in a file (PEM `X509 CRL` blocks, or one DER CRL).
pub fn read_crl_summaries(path: &Path) -> Result<Vec<CrlSummary>, String> {
    let ders = crls(path).map_err(|e| match e {
        PemError::Read(e) => format!("cannot read {}: {e}", path.display()),
        other => format!("{}: unreadable CRL: {other}", path.display()),
    })?;
    ders.iter()
        .map(|der| {
            let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
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
