//! TLS clients for tests of the HTTPS listener: reqwest (HTTP/1.1 or HTTP/2, chosen by ALPN),
//! and a raw rustls connection speaking HTTP/1.1 by hand, so that a test knows every request
//! it sends travels on the same connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::pki::Issued;

/// Which protocol versions the client offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    Both,
    Tls12Only,
    Tls13Only,
}

/// A client configuration trusting `server_ca_pem`, presenting `identity` when given, offering
/// `alpn` (e.g. `[b"h2"]`).
pub fn client_config(
    server_ca_pem: &str,
    identity: Option<&Issued>,
    alpn: &[&[u8]],
    versions: Versions,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_ca_pem.as_bytes()) {
        roots.add(cert.expect("server CA PEM")).expect("server CA");
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match versions {
        Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Tls12Only => &[&rustls::version::TLS12],
        Versions::Tls13Only => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => {
            let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client identity")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A reqwest client over `config` (its ALPN decides HTTP/2 or HTTP/1.1).
pub fn reqwest_client(config: Arc<ClientConfig>) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured((*config).clone())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("https client")
}

/// One TLS connection to the server on 127.0.0.1:`port`, as `localhost`.
pub struct Conn {
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl Conn {
    /// Connects and completes the handshake. With TLS 1.3 the server judges the client
    /// certificate after the client has finished, so a refusal shows on the first read.
    pub fn open(port: u16, config: Arc<ClientConfig>) -> Result<Conn, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(Conn { stream })
    }

    /// The negotiated protocol version and ALPN protocol.
    pub fn negotiated(&self) -> (Option<rustls::ProtocolVersion>, Option<Vec<u8>>) {
        (
            self.stream.conn.protocol_version(),
            self.stream.conn.alpn_protocol().map(<[u8]>::to_vec),
        )
    }

    /// Sends one HTTP/1.1 request on this connection and reads the answer: (status, body).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (status, _, body) = self.exchange(format!("{head}{body}").as_bytes())?;
        Ok((status, body))
    }

    /// Sends `request` as it is (one whole HTTP/1.1 request, byte for byte) and reads the
    /// answer: (status, response head, body).
    pub fn exchange(&mut self, request: &[u8]) -> Result<(u16, String, String), String> {
        self.stream
            .write_all(request)
            .map_err(|e| format!("write: {e}"))?;
        self.stream.flush().map_err(|e| format!("flush: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before a response".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {head}"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < header_end + length {
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read body: {e}"))?;
            if n == 0 {
                return Err("connection closed inside the body".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok((
            status,
            head,
            String::from_utf8_lossy(&buf[header_end..header_end + length]).to_string(),
        ))
    }
}

/// Connects, sends `GET path` and returns the answer, or the error that stopped it.
pub fn try_get(port: u16, config: Arc<ClientConfig>, path: &str) -> Result<(u16, String), String> {
    Conn::open(port, config)?.request("GET", path, None)
}
