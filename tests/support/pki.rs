//! Test PKI: certificate authorities, server and client certificates, and CRLs made with rcgen
//! and written as PEM files, so every test builds the exact trust setup it needs and nothing is
//! checked in.
//!
//! Sense exports its client key as PKCS#1 (`BEGIN RSA PRIVATE KEY`). ring (rcgen's backend) can
//! sign with RSA but cannot generate RSA keys, so RSA keys come from the pure-Rust `rsa` crate;
//! one RSA key pair is generated per test process and shared, because generation takes a while
//! and key reuse does not matter for what the tests check (trust, names, validity, formats).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Which key a certificate gets and how its key file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256, written as PKCS#8 (`BEGIN PRIVATE KEY`).
    EcP256Pkcs8,
    /// ECDSA P-256, written as SEC1 (`BEGIN EC PRIVATE KEY`), as OpenSSL writes EC keys.
    EcP256Sec1,
    /// RSA 2048, written as PKCS#1 (`BEGIN RSA PRIVATE KEY`), as Sense exports client_key.pem.
    RsaPkcs1,
    /// RSA 2048, written as PKCS#8 (`BEGIN PRIVATE KEY`).
    RsaPkcs8,
}

/// When a certificate is valid, relative to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for a year.
    Current,
    /// Ended yesterday.
    Expired,
    /// Starts tomorrow.
    NotYetValid,
    /// From yesterday until this many days from now (for expiry warnings).
    EndsInDays(i64),
    /// From yesterday until this many seconds from now (expires during a test).
    EndsInSeconds(i64),
}

impl Validity {
    fn window(self) -> (OffsetDateTime, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let day = Duration::days(1);
        match self {
            Validity::Current => (now - day, now + Duration::days(365)),
            Validity::Expired => (now - Duration::days(30), now - day),
            Validity::NotYetValid => (now + day, now + Duration::days(365)),
            Validity::EndsInDays(days) => (now - day, now + Duration::days(days)),
            Validity::EndsInSeconds(s) => (now - day, now + Duration::seconds(s)),
        }
    }
}

/// What to put in a certificate issued by a [`Ca`].
#[derive(Clone, Debug)]
pub struct CertSpec {
    pub common_name: String,
    /// DNS names, IP addresses and URIs; each entry that parses as an IP becomes an IP SAN,
    /// each containing `:` (`spiffe://…`, `urn:…`) a URI SAN, the rest DNS SANs.
    pub names: Vec<String>,
    pub key: KeyKind,
    pub validity: Validity,
    pub server_auth: bool,
    pub client_auth: bool,
}

impl CertSpec {
    /// A TLS server certificate for `names` (e.g. `["localhost", "127.0.0.1"]`).
    pub fn server(names: &[&str]) -> CertSpec {
        CertSpec {
            common_name: names.first().copied().unwrap_or("server").to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
            key: KeyKind::EcP256Pkcs8,
            validity: Validity::Current,
            server_auth: true,
            client_auth: false,
        }
    }

    /// A TLS client certificate with common name `cn` (Sense's exported one is CN=QlikClient).
    pub fn client(cn: &str) -> CertSpec {
        CertSpec {
            common_name: cn.to_string(),
            names: Vec::new(),
            key: KeyKind::EcP256Pkcs8,
            validity: Validity::Current,
            server_auth: false,
            client_auth: true,
        }
    }

    pub fn key(mut self, key: KeyKind) -> CertSpec {
        self.key = key;
        self
    }

    /// Sets the subject alternative names (see [`CertSpec::names`]).
    pub fn names(mut self, names: &[&str]) -> CertSpec {
        self.names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    pub fn validity(mut self, validity: Validity) -> CertSpec {
        self.validity = validity;
        self
    }
}

/// A certificate and its private key, as PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: Vec<u8>,
}

impl Issued {
    /// Writes `<stem>.pem` and `<stem>_key.pem` into `dir` (Sense's file naming) and returns
    /// their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> CertFiles {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}_key.pem"));
        write_file(&cert, &self.cert_pem);
        write_file(&key, &self.key_pem);
        CertFiles { cert, key }
    }
}

/// Paths of a written certificate and key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl Ca {
    /// A new self-signed CA whose subject is `CN=<name>`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = Validity::Current.window();
        params.not_before = not_before;
        params.not_after = not_after + Duration::days(3650);
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        let key = KeyPair::generate().expect("test CA: generate key");
        let cert = params.self_signed(&key).expect("test CA: self-sign");
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA `CN=<name>` signed by this one (its `cert_pem` is the intermediate
    /// alone; a server sends it after its own certificate).
    pub fn intermediate(&self, name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = Validity::Current.window();
        params.not_before = not_before;
        params.not_after = not_after + Duration::days(1825);
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("intermediate CA: generate key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("intermediate CA: sign");
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Issues a certificate as described by `spec`.
    pub fn issue(&self, spec: &CertSpec) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&spec.common_name);
        params.subject_alt_names = spec
            .names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if n.contains(':') => {
                    SanType::URI(n.clone().try_into().expect("test cert: URI"))
                }
                Err(_) => SanType::DnsName(n.clone().try_into().expect("test cert: DNS name")),
            })
            .collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let (not_before, not_after) = spec.validity.window();
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;

        let (key, key_pem) = make_key(spec.key);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("test CA: sign certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem,
            serial: serial.to_bytes(),
        }
    }

    pub fn server_cert(&self, names: &[&str]) -> Issued {
        self.issue(&CertSpec::server(names))
    }

    pub fn client_cert(&self, cn: &str, key: KeyKind) -> Issued {
        self.issue(&CertSpec::client(cn).key(key))
    }

    /// A CRL signed by this CA revoking `revoked`, as PEM.
    pub fn crl_pem(&self, revoked: &[&Issued]) -> String {
        self.crl_pem_next_update(revoked, OffsetDateTime::now_utc() + Duration::days(7))
    }

    /// A CRL like [`Ca::crl_pem`] whose issuer promises the next one at `next_update`
    /// (in the past for a stale CRL; this update is then a day before it).
    pub fn crl_pem_next_update(&self, revoked: &[&Issued], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc().min(next_update - Duration::hours(1));
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update,
            crl_number: random_serial(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&c.serial),
                    revocation_time: now - Duration::hours(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .and_then(|crl| crl.pem())
            .expect("test CA: sign CRL")
    }

    /// Writes the CA certificate as `<stem>.pem` into `dir`.
    pub fn write_cert(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.pem"));
        write_file(&path, &self.cert_pem);
        path
    }
}

/// The files Sense's QMC "Export certificates" produces (client.pem, client_key.pem, root.pem),
/// plus the QRS server side that goes with them, all in one temporary directory.
pub struct SenseCerts {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    /// client.pem / client_key.pem, signed by the CA.
    pub client: CertFiles,
    /// root.pem: the CA certificate.
    pub root: PathBuf,
    /// The QRS server certificate and key (server.pem / server_key.pem).
    pub server: Issued,
}

impl SenseCerts {
    /// A CA, a QRS server certificate for `server_names`, and a client certificate
    /// (CN=QlikClient) whose key file is written as `client_key`.
    pub fn new(server_names: &[&str], client_key: KeyKind) -> SenseCerts {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let ca = Ca::new("QMI-Test-CA");
        let root = ca.write_cert(dir.path(), "root");
        let client = ca
            .client_cert("QlikClient", client_key)
            .write(dir.path(), "client");
        let server = ca.server_cert(server_names);
        server.write(dir.path(), "server");
        SenseCerts {
            dir,
            ca,
            client,
            root,
            server,
        }
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // keep it positive
    bytes[0] |= 0x01; // and without a leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn write_file(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("writing test file {}: {e}", path.display()));
}

/// Makes a signing key for rcgen and the PEM text its key file should hold.
fn make_key(kind: KeyKind) -> (KeyPair, String) {
    match kind {
        KeyKind::EcP256Pkcs8 => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
            let pem = key.serialize_pem();
            (key, pem)
        }
        KeyKind::EcP256Sec1 => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
            let pem = ec_pkcs8_to_sec1_pem(key.serialized_der());
            (key, pem)
        }
        KeyKind::RsaPkcs1 | KeyKind::RsaPkcs8 => {
            let rsa = shared_rsa_key();
            let key = KeyPair::from_pkcs8_der_and_sign_algo(
                &rustls_pki_types::PrivatePkcs8KeyDer::from(rsa.pkcs8_der.clone()),
                &rcgen::PKCS_RSA_SHA256,
            )
            .expect("RSA key for rcgen");
            let pem = if kind == KeyKind::RsaPkcs1 {
                rsa.pkcs1_pem.clone()
            } else {
                rsa.pkcs8_pem.clone()
            };
            (key, pem)
        }
    }
}

struct RsaKeyMaterial {
    pkcs8_der: Vec<u8>,
    pkcs8_pem: String,
    pkcs1_pem: String,
}

fn shared_rsa_key() -> &'static RsaKeyMaterial {
    static KEY: OnceLock<RsaKeyMaterial> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("RSA keygen");
        RsaKeyMaterial {
            pkcs8_der: key.to_pkcs8_der().expect("RSA PKCS#8").as_bytes().to_vec(),
            pkcs8_pem: key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("RSA PKCS#8 PEM")
                .to_string(),
            pkcs1_pem: key
                .to_pkcs1_pem(LineEnding::LF)
                .expect("RSA PKCS#1 PEM")
                .to_string(),
        }
    })
}

/// Extracts the SEC1 `ECPrivateKey` that a PKCS#8 `PrivateKeyInfo` wraps and writes it as
/// `BEGIN EC PRIVATE KEY`. PKCS#8 is `SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING
/// { ECPrivateKey } }`; ring's P-256 PKCS#8 output uses short-form lengths for all of these
/// except possibly the outer sequence, which this walks with a minimal DER reader.
fn ec_pkcs8_to_sec1_pem(pkcs8: &[u8]) -> String {
    fn read_tlv(data: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = data[0];
        let (len, header) = if data[1] < 0x80 {
            (data[1] as usize, 2)
        } else {
            let n = (data[1] & 0x7f) as usize;
            let mut len = 0usize;
            for b in &data[2..2 + n] {
                len = (len << 8) | *b as usize;
            }
            (len, 2 + n)
        };
        (tag, &data[header..header + len], &data[header + len..])
    }
    let (_, seq, _) = read_tlv(pkcs8);
    let (_, _version, rest) = read_tlv(seq);
    let (_, _alg, rest) = read_tlv(rest);
    let (tag, sec1, _) = read_tlv(rest);
    assert_eq!(tag, 0x04, "PKCS#8 private key is an OCTET STRING");
    pem_encode("EC PRIVATE KEY", sec1)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The two CAs of a client-certificate test, written into `dir` where `server::TLS_CONFIG`
/// and the `clientAuth` sections name them: the server's CA with a certificate for localhost
/// (`server.pem`, `server_key.pem`), and the callers' CA (`callers-ca.pem`).
pub fn server_and_callers_cas(dir: &Path) -> (Ca, Ca) {
    let server_ca = Ca::new("Server CA");
    server_ca
        .server_cert(&["localhost", "127.0.0.1"])
        .write(dir, "server");
    let callers = Ca::new("Callers CA");
    callers.write_cert(dir, "callers-ca");
    (server_ca, callers)
}
