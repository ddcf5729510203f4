//! The server side of TLS: the rustls configuration built from Butler's
//! `restServerConfig.tls` files and our `clientAuth` CAs and CRLs.
//!
//! Everything is checked when the configuration is built (at start-up and on `SIGHUP`), so a
//! missing, unreadable or non-PEM file, or a key that does not belong to the certificate, is
//! an error naming the config key and the file — never a handshake that fails later.
//! Caller certificates are verified inside the handshake by rustls's WebPKI verifier, so a
//! connection without a trusted, current, unrevoked certificate never reaches HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

use crate::authz::{AuthMode, CertIdentity};
use crate::config::{ClientAuthConfig, TlsConfig};
use crate::pki::{self, PemError};

/// A TLS file or setting that cannot be used, named by its config key and path.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{key}: {path}: {problem}")]
    File {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "Butler.restServerConfig.tls.key: the private key in {key_path} does not belong to the \
         certificate in {cert_path} (Butler.restServerConfig.tls.cert); use the key the \
         certificate was issued for"
    )]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    #[error("{0}")]
    Other(String),
}

fn file_error(key: &'static str, path: &Path, problem: impl Into<String>) -> TlsSetupError {
    TlsSetupError::File {
        key,
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// A file the pki reader refused, named by its config key.
fn unusable(key: &'static str, path: &Path) -> impl FnOnce(PemError) -> TlsSetupError {
    move |e| file_error(key, path, e.to_string())
}

/// The certificates of a PEM file, an error naming the config `key` and the file otherwise.
pub fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    pki::certs(path).map_err(unusable(key, path))
}

/// The CRLs of a file, an error naming the config `key` and the file otherwise.
pub fn read_crls(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsSetupError> {
    pki::crls(path).map_err(unusable(key, path))
}

/// Builds the server configuration: HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3, and —
/// with `clientAuth` on — a mandatory client certificate from one of its CAs.
pub fn server_config(
    tls: &TlsConfig,
    client_auth: &ClientAuthConfig,
) -> Result<ServerConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut chain = read_certs("Butler.restServerConfig.tls.cert", &tls.cert)?;
    if let Some(ca) = &tls.ca {
        chain.extend(read_certs("Butler.restServerConfig.tls.ca", ca)?);
    }
    let key = pki::private_key(&tls.key)
        .map_err(unusable("Butler.restServerConfig.tls.key", &tls.key))?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsSetupError::Other(format!("TLS protocol versions: {e}")))?;
    let asks = client_auth.enable && client_auth.policy.mode.asks_for_certificate();
    let builder = if asks {
        builder.with_client_cert_verifier(client_verifier(client_auth, provider)?)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsSetupError::KeyMismatch {
                cert_path: tls.cert.clone(),
                key_path: tls.key.clone(),
            }
        }
        other => TlsSetupError::Other(format!(
            "Butler.restServerConfig.tls: the certificate {} and key {} cannot be used: {other}",
            tls.cert.display(),
            tls.key.display()
        )),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if asks {
        // A resumed session skips the client certificate check: a certificate that expired
        // (or a CA removed on reload) would keep getting in for the session's lifetime. So
        // with client certificates required, no session is stored and no TLS 1.3 ticket is
        // sent, and every new connection verifies the certificate. Sense's REST connector
        // keeps its connections alive, so the full handshake is paid once per connection.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

/// The verifier of caller certificates: the configured CAs and CRLs. In mode
/// `certificateOrToken` a caller may also complete the handshake without a certificate (it
/// must then send a token with each request); in mode `certificate` it may not.
fn client_verifier(
    client_auth: &ClientAuthConfig,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let mut cas = Vec::new();
    for path in &client_auth.ca {
        for cert in read_certs("ButlerEdge.clientAuth.ca", path)? {
            cas.push(cert.clone());
            roots.add(cert).map_err(|e| {
                file_error(
                    "ButlerEdge.clientAuth.ca",
                    path,
                    format!("not a usable CA certificate: {e}"),
                )
            })?;
        }
    }
    let mut crls = Vec::new();
    for path in &client_auth.crl {
        let in_file = pki::crls(path).map_err(unusable("ButlerEdge.clientAuth.crl", path))?;
        for crl in &in_file {
            pki::check_crl_signature(crl, &cas)
                .map_err(unusable("ButlerEdge.clientAuth.crl", path))?;
        }
        crls.extend(in_file);
    }
    // CRLs are checked for the CAs that issued them; certificates of a CA with no CRL
    // configured are accepted when otherwise valid (a missing CRL is not a revocation).
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .with_crls(crls)
        .allow_unknown_revocation_status();
    if client_auth.policy.mode == AuthMode::CertificateOrToken {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(|e| {
        TlsSetupError::Other(format!(
            "ButlerEdge.clientAuth: cannot use the CA bundles {} with the CRLs {}: {e}",
            list(&client_auth.ca),
            list(&client_auth.crl)
        ))
    })?;
    Ok(Arc::new(NamingVerifier { inner: verifier }))
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(none)".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The WebPKI verifier, plus a log line naming the holder of each refused certificate, so an
/// admin sees *who* was refused (an expired Sense certificate, a revoked laptop), not only why.
#[derive(Debug)]
struct NamingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for NamingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                if !super::handshake_log::may_log() {
                    return;
                }
                tracing::info!(
                    client = %CertIdentity::from_der(end_entity).label(),
                    error = %e,
                    "client certificate refused"
                );
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
