//! The rustls client configuration for QRS: Sense's exported client identity, and QRS's server
//! certificate verified against Sense's root (or, when the operator says so, not verified).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{QrsSettings, QrsSetupError};
use crate::pki::{self, PemError};

/// Builds the client TLS configuration from Sense's exported certificate files.
pub fn client_config(settings: &QrsSettings) -> Result<ClientConfig, QrsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(
        &settings.client_cert,
        "Butler.cert.clientCert",
        "certificate",
    )?;
    let key = read_key(&settings.client_key)?;

    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| QrsSetupError::Client(e.to_string()))?;
    let builder = if settings.reject_unauthorized {
        let mut roots = RootCertStore::empty();
        let ca = read_certs(
            &settings.root_ca,
            "Butler.cert.clientCertCA",
            "CA certificate",
        )?;
        for cert in ca {
            roots.add(cert).map_err(|e| QrsSetupError::File {
                key: "Butler.cert.clientCertCA",
                what: "CA certificate",
                path: settings.root_ca.clone(),
                cause: e.to_string(),
            })?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
    };
    let mut config =
        builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| QrsSetupError::Identity {
                cert_path: settings.client_cert.clone(),
                key_path: settings.client_key.clone(),
                cause: e.to_string(),
            })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(
    path: &Path,
    key: &'static str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, QrsSetupError> {
    pki::certs(path)
        .map_err(|e| setup_error(e, path, key, what, "PEM certificate (BEGIN CERTIFICATE)"))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, QrsSetupError> {
    pki::private_key(path).map_err(|e| {
        setup_error(
            e,
            path,
            "Butler.cert.clientCertKey",
            "private key",
            "unencrypted private key (BEGIN RSA PRIVATE KEY, BEGIN PRIVATE KEY or BEGIN EC PRIVATE KEY)",
        )
    })
}

/// The pki reader's refusal in QRS's words: an empty file says what it lacks (`missing`).
fn setup_error(
    e: PemError,
    path: &Path,
    key: &'static str,
    what: &'static str,
    missing: &'static str,
) -> QrsSetupError {
    let cause = match e {
        PemError::NoCertificate | PemError::NoKey => {
            return QrsSetupError::Empty {
                key,
                what: missing,
                path: path.to_path_buf(),
            };
        }
        PemError::Read(io) => io.to_string(),
        other => other.to_string(),
    };
    QrsSetupError::File {
        key,
        what,
        path: path.to_path_buf(),
        cause,
    }
}

/// `rejectUnauthorized: false`: any server certificate is accepted, as Butler does with that
/// setting. Handshake signatures are still checked, so the peer must hold the key of the
/// certificate it presents; only trust in that certificate is skipped.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// rustls describes presented names as `DnsName("host")` / `IpAddress(…)`; show the name.
fn presented_name(debug: &str) -> String {
    debug
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .map(str::to_string)
        .unwrap_or_else(|| debug.to_string())
}

/// Explains a TLS failure found in an error chain, with what to change for the common cases.
pub fn explain(err: &rustls::Error, host: &str) -> String {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::NotValidForNameContext { expected, presented }) => {
            let by_ip = matches!(expected, ServerName::IpAddress(_));
            let names = presented
                .iter()
                .map(|n| presented_name(n))
                .collect::<Vec<_>>()
                .join(", ");
            if by_ip {
                format!(
                    "QRS's certificate is not valid for the IP address {host}: it names {names}. \
                     Set Butler.configQRS.host to one of those host names (the Sense server's name, \
                     not its IP address)"
                )
            } else {
                format!(
                    "QRS's certificate is not valid for {host}: it names {names}. \
                     Set Butler.configQRS.host to one of those names"
                )
            }
        }
        rustls::Error::InvalidCertificate(C::NotValidForName) => format!(
            "QRS's certificate is not valid for {host}. Set Butler.configQRS.host to a name the \
             certificate lists (the Sense server's host name, not its IP address)"
        ),
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "QRS's certificate is not issued by the CA in Butler.cert.clientCertCA (root.pem). \
             Export root.pem from this Sense site's QMC, or set Butler.configQRS.rejectUnauthorized: false \
             to skip verification"
                .to_string()
        }
        rustls::Error::InvalidCertificate(C::ExpiredContext { .. } | C::Expired) => {
            format!("QRS's certificate has expired: {err}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "QRS refused the handshake ({alert:?}); check that Butler.cert.clientCert is a client \
             certificate exported from this Sense site"
        ),
        other => other.to_string(),
    }
}
