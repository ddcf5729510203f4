//! `butler-edge init`, run as the real binary: the PKI it creates must actually work for
//! mutual TLS (a rustls server with its server certificate accepts the admin bundle and
//! rejects a stranger), name what was asked, keep private keys private, and never be replaced
//! by a second run.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use x509_parser::extensions::GeneralName;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_butler-edge")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("butler-edge-init-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn init(pki: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .arg("init")
        .arg("--pki-dir")
        .arg(pki)
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

/// One TLS handshake + a line exchanged between a rustls server configured like the
/// appliance (server.crt/key, callers' CA = ca.crt) and a client presenting `client` (cert,
/// key) and trusting `trust`. Returns the client's error, if any.
fn handshake(pki: &Path, trust: &Path, client: Option<(&Path, &Path)>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&pki.join("ca.crt")) {
        roots.add(c).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&pki.join("server.crt")), key(&pki.join("server.key")))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 5];
        if tls.read_exact(&mut buf).is_ok() {
            let _ = tls.write_all(b"pong!");
            let _ = tls.flush();
        }
    });

    let mut client_roots = rustls::RootCertStore::empty();
    for c in certs(trust) {
        client_roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(client_roots);
    let client_config = match client {
        Some((cert, k)) => builder.with_client_auth_cert(certs(cert), key(k)).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let result = (|| {
        tls.write_all(b"ping!")?;
        tls.flush()?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf)?;
        if &buf != b"pong!" {
            return Err(std::io::Error::other("wrong answer"));
        }
        Ok(())
    })()
    .map_err(|e| e.to_string());
    drop(tls);
    server.join().unwrap();
    result
}

#[test]
fn creates_a_pki_that_works_for_mutual_tls() {
    let dir = temp_dir("mtls");
    let pki = dir.join("pki");
    let out = init(&pki, &["--hostname", "localhost", "--address", "127.0.0.1"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);

    // The printed fingerprint is the CA certificate's SHA-256, as openssl prints it.
    let ca_der = certs(&pki.join("ca.crt")).remove(0);
    let digest = ring::digest::digest(&ring::digest::SHA256, ca_der.as_ref());
    let expected: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    assert!(
        stdout.contains(&format!("sha256 Fingerprint={}", expected.join(":"))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&pki.join("admin").display().to_string()),
        "{stdout}"
    );

    // Private keys are not readable by others; the CA and admin keys only by their owner.
    assert_eq!(mode(&pki.join("ca.key")), 0o600);
    assert_eq!(mode(&pki.join("server.key")), 0o640);
    assert_eq!(mode(&pki.join("admin/admin.key")), 0o600);
    assert_eq!(mode(&pki.join("admin")), 0o700);
    assert_eq!(mode(&pki), 0o750);

    // The admin bundle is accepted by a server using the server certificate.
    let admin = pki.join("admin");
    handshake(
        &pki,
        &admin.join("ca.crt"),
        Some((&admin.join("admin.crt"), &admin.join("admin.key"))),
    )
    .unwrap();

    // A client certificate from another CA is refused, and so is no certificate at all.
    let other = dir.join("other");
    let out = init(&other, &["--hostname", "localhost"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = handshake(
        &pki,
        &admin.join("ca.crt"),
        Some((
            &other.join("admin/admin.crt"),
            &other.join("admin/admin.key"),
        )),
    );
    assert!(err.is_err(), "a foreign client certificate was accepted");
    assert!(
        handshake(&pki, &admin.join("ca.crt"), None).is_err(),
        "no client certificate was accepted"
    );
    // And a client that trusts only the other CA refuses this server.
    let err = handshake(
        &pki,
        &other.join("ca.crt"),
        Some((&admin.join("admin.crt"), &admin.join("admin.key"))),
    );
    assert!(
        err.is_err(),
        "server certificate accepted by a client trusting another CA"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn server_certificate_names_the_requested_hosts_and_addresses() {
    let dir = temp_dir("names");
    let pki = dir.join("pki");
    let out = init(
        &pki,
        &[
            "--hostname",
            "edge1.example.test",
            "--hostname",
            "edge1",
            "--address",
            "192.0.2.7",
            "--address",
            "2001:db8::7",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let der = certs(&pki.join("server.crt")).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(name) => format!("DNS:{name}"),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                format!("IP:{}", Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()))
            }
            GeneralName::IPAddress(b) => {
                format!("IP:{}", Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()))
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "DNS:edge1.example.test",
            "DNS:edge1",
            "IP:192.0.2.7",
            "IP:2001:db8::7"
        ]
    );
    assert!(
        cert.validity().is_valid(),
        "server certificate is not valid now"
    );
    let out = init(&dir.join("bad"), &["--hostname", "not a hostname!"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not a hostname!"), "{}", text(&out));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn second_run_changes_nothing_and_incomplete_pki_is_an_error() {
    let dir = temp_dir("idempotent");
    let pki = dir.join("pki");
    let out = init(&pki, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let files = [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "admin/admin.crt",
        "admin/admin.key",
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(pki.join(f)).unwrap())
        .collect();

    let again = init(&pki, &["--hostname", "something-else"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing changed"),
        "{}",
        text(&again)
    );
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(pki.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "a second init changed the PKI");

    // A PKI with its CA but without the server key is reported, not silently repaired.
    fs::remove_file(pki.join("server.key")).unwrap();
    let broken = init(&pki, &[]);
    assert!(!broken.status.success(), "{}", text(&broken));
    assert!(text(&broken).contains("server.key"), "{}", text(&broken));
    assert_eq!(fs::read(pki.join("ca.crt")).unwrap(), before[0]);
    fs::remove_dir_all(&dir).unwrap();
}
