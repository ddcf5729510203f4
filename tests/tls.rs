//! HTTPS on the REST listener, against the real binary: HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2
//! and 1.3, no plain HTTP beside it, start-up errors naming the key and the file, certificate
//! swap on SIGHUP while a connection stays open, a broken file on SIGHUP keeping the old
//! settings, and expiry warnings.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use support::pki::{Ca, CertSpec, Validity};
use support::server::{Launch, Server, TLS_CONFIG, run_cli};
use support::tls_client::{Conn, Versions, client_config, reqwest_client, try_get};

/// A server CA and a running HTTPS server whose certificate it issued.
fn start_tls() -> (Ca, Server) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Server CA");
    ca.server_cert(&["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    let data = dir.path().join("data");
    let server = Server::start_in(dir, data, TLS_CONFIG);
    (ca, server)
}

#[test]
fn http2_and_http1_both_work_over_tls12_and_tls13() {
    let (ca, server) = start_tls();
    for (alpn, expected) in [
        (&b"h2"[..], reqwest::Version::HTTP_2),
        (&b"http/1.1"[..], reqwest::Version::HTTP_11),
    ] {
        let client = reqwest_client(client_config(&ca.cert_pem, None, &[alpn], Versions::Both));
        let response = client
            .get(server.https_url("/v4/butlerping"))
            .send()
            .unwrap_or_else(|e| panic!("{e:?}; log:\n{}", server.log()));
        assert_eq!(response.version(), expected);
        assert_eq!(response.status().as_u16(), 200);
        let body: serde_json::Value = serde_json::from_str(&response.text().unwrap()).unwrap();
        assert_eq!(body["response"], "Butler reporting for duty");
        // A write and a read on the same client, to see bodies travel both ways.
        let response = client
            .post(server.https_url("/v4/keyvalues/tls"))
            .header("Content-Type", "application/json")
            .body(r#"{"key":"k","value":"v"}"#)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        assert_eq!(response.version(), expected);
    }
    for (versions, expected) in [
        (Versions::Tls12Only, rustls::ProtocolVersion::TLSv1_2),
        (Versions::Tls13Only, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&ca.cert_pem, None, &[b"http/1.1"], versions);
        let mut conn = Conn::open(server.port, config).unwrap();
        assert_eq!(
            conn.negotiated(),
            (Some(expected), Some(b"http/1.1".to_vec()))
        );
        let (status, body) = conn
            .request("GET", "/v4/keyvalues/tls?key=k", None)
            .unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"namespace":"tls","key":"k","value":"v"}"#)
        );
    }
}

#[test]
fn plain_http_gets_no_http_answer_when_tls_is_on() {
    let (_ca, server) = start_tls();
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /v4/butlerping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // reqwest over http:// fails too, and the server logged a failed handshake, no request.
    let plain = support::server::client()
        .get(server.url("/v4/butlerping"))
        .send();
    assert!(plain.is_err(), "plain HTTP request succeeded: {plain:?}");
    server.wait_for_log("TLS handshake failed", 1);
    assert!(
        !server.log().contains("path=/v4/butlerping"),
        "a request was processed:\n{}",
        server.log()
    );
    assert!(server.log().contains(&format!(
        "REST server listening on https://127.0.0.1:{}",
        server.port
    )));
}

/// Runs the binary on `config` (with `{dir}` filled in) and expects it to exit with an error
/// within 20 s: (exit code, stderr).
fn start_fails(dir: &Path, config: &str) -> (i32, String) {
    let exit = Launch::new(config, dir).expect_exit(
        Duration::from_secs(20),
        "although its TLS files are unusable",
    );
    (exit.code, exit.stderr)
}

#[test]
fn unusable_tls_files_stop_start_up_with_the_key_and_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("Server CA");
    let server = ca.server_cert(&["localhost"]);
    let other = ca.server_cert(&["localhost"]);
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    let reset = || {
        server.write(d, "server");
    };

    // Missing certificate file.
    reset();
    std::fs::remove_file(d.join("server.pem")).unwrap();
    let (code, err) = start_fails(d, TLS_CONFIG);
    assert_ne!(code, 0);
    let cert_path = d.join("server.pem").display().to_string();
    let key_path = d.join("server_key.pem").display().to_string();
    assert!(
        err.contains(&format!(
            "Butler.restServerConfig.tls.cert: {cert_path}: no such file"
        )),
        "{err}"
    );

    // Not PEM.
    reset();
    write("server.pem", "this is not a certificate\n");
    let (_, err) = start_fails(d, TLS_CONFIG);
    assert!(
        err.contains(&format!(
            "Butler.restServerConfig.tls.cert: {cert_path}: not a PEM certificate file"
        )),
        "{err}"
    );
    reset();
    write("server_key.pem", &server.cert_pem); // a certificate where the key should be
    let (_, err) = start_fails(d, TLS_CONFIG);
    assert!(
        err.contains(&format!(
            "Butler.restServerConfig.tls.key: {key_path}: not a PEM private key"
        )),
        "{err}"
    );

    // Unreadable: a directory where the key file should be.
    reset();
    std::fs::remove_file(d.join("server_key.pem")).unwrap();
    std::fs::create_dir(d.join("server_key.pem")).unwrap();
    let (_, err) = start_fails(d, TLS_CONFIG);
    assert!(
        err.contains(&format!(
            "Butler.restServerConfig.tls.key: {key_path}: cannot be read"
        )),
        "{err}"
    );
    std::fs::remove_dir(d.join("server_key.pem")).unwrap();

    // A key that belongs to another certificate.
    reset();
    write("server_key.pem", &other.key_pem);
    let (_, err) = start_fails(d, TLS_CONFIG);
    assert!(
        err.contains(&format!(
            "the private key in {key_path} does not belong to the certificate in {cert_path}"
        )),
        "{err}"
    );

    // Client auth without a CA file that exists.
    reset();
    let with_client_auth = format!(
        "{TLS_CONFIG}ButlerEdge:\n  clientAuth:\n    enable: true\n    ca: [{{dir}}/callers-ca.pem]\n"
    );
    let (_, err) = start_fails(d, &with_client_auth);
    assert!(
        err.contains(&format!(
            "ButlerEdge.clientAuth.ca: {}: no such file",
            d.join("callers-ca.pem").display()
        )),
        "{err}"
    );
}

#[test]
fn check_config_lists_the_tls_files_and_expiry_is_warned_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Server CA");
    ca.issue(&CertSpec::server(&["localhost"]).validity(Validity::EndsInDays(10)))
        .write(dir.path(), "server");
    let config = TLS_CONFIG.replace("{dir}", &dir.path().display().to_string());
    let config_path = dir.path().join("check.yaml");
    std::fs::write(&config_path, config.replace("{port}", "8443")).unwrap();
    let (code, out, err) = run_cli(&["check-config", config_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listener: https://127.0.0.1:8443"), "{out}");
    assert!(
        out.contains(&format!(
            "certificate (HTTPS server, Butler.restServerConfig.tls.cert): {}",
            dir.path().join("server.pem").display()
        )),
        "{out}"
    );
    assert!(
        out.contains("(9 days)") || out.contains("(10 days)"),
        "{out}"
    );
    assert!(out.contains("TLS files: usable"), "{out}");
    // A key that does not match is reported by check-config too.
    let good_key = std::fs::read_to_string(dir.path().join("server_key.pem")).unwrap();
    std::fs::write(
        dir.path().join("server_key.pem"),
        ca.server_cert(&["localhost"]).key_pem,
    )
    .unwrap();
    let (_, out, _) = run_cli(&["check-config", config_path.to_str().unwrap()]);
    assert!(
        out.contains("TLS files: problem: Butler.restServerConfig.tls.key: the private key in"),
        "{out}"
    );
    std::fs::write(dir.path().join("server_key.pem"), good_key).unwrap();

    let data = dir.path().join("data");
    let server = Server::start_in(dir, data, TLS_CONFIG);
    server.wait_for_log("expires within 30 days", 1);
    assert!(server.log().contains("CN=localhost"), "{}", server.log());
}

#[test]
fn sighup_swaps_the_certificate_while_an_open_connection_keeps_working() {
    let (old_ca, server) = start_tls();
    let old_trust = || client_config(&old_ca.cert_pem, None, &[b"http/1.1"], Versions::Both);
    let mut kept = Conn::open(server.port, old_trust()).unwrap();
    assert_eq!(kept.request("GET", "/v4/butlerping", None).unwrap().0, 200);

    // A new certificate from a different CA, written over the configured files.
    let new_ca = Ca::new("New Server CA");
    new_ca
        .server_cert(&["localhost", "127.0.0.1"])
        .write(server.config_dir(), "server");
    server.hangup();
    server.wait_for_log("reloaded certificates", 1);

    // New connections get the new certificate: trusted by the new CA only.
    let new_trust = client_config(&new_ca.cert_pem, None, &[b"http/1.1"], Versions::Both);
    assert_eq!(
        try_get(server.port, new_trust, "/v4/butlerping").unwrap().0,
        200
    );
    let refused = try_get(server.port, old_trust(), "/v4/butlerping");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("UnknownIssuer") || e.contains("invalid peer certificate")),
        "{refused:?}"
    );
    // The connection opened before the swap still works, on its original session.
    for _ in 0..3 {
        assert_eq!(kept.request("GET", "/v4/butlerping", None).unwrap().0, 200);
    }
}

#[test]
fn a_broken_file_on_sighup_keeps_the_running_certificate() {
    let (ca, server) = start_tls();
    let trust = || client_config(&ca.cert_pem, None, &[b"h2", b"http/1.1"], Versions::Both);
    let key_path = server.config_dir().join("server_key.pem");
    let good_key = std::fs::read_to_string(&key_path).unwrap();

    std::fs::write(
        &key_path,
        "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n",
    )
    .unwrap();
    server.hangup();
    server.wait_for_log("reload failed", 1);
    let log = server.log();
    assert!(
        log.contains(&format!(
            "Butler.restServerConfig.tls.key: {}",
            key_path.display()
        )),
        "{log}"
    );
    assert_eq!(
        try_get(server.port, trust(), "/v4/butlerping").unwrap().0,
        200
    );

    // A key from another certificate: refused the same way.
    std::fs::write(&key_path, ca.server_cert(&["localhost"]).key_pem).unwrap();
    server.hangup();
    server.wait_for_log("reload failed", 2);
    assert!(
        server.log().contains("does not belong to the certificate"),
        "{}",
        server.log()
    );
    assert_eq!(
        try_get(server.port, trust(), "/v4/butlerping").unwrap().0,
        200
    );

    // A config file that no longer parses: refused too.
    let config_path = server.config_dir().join("config.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&key_path, good_key).unwrap();
    std::fs::write(&config_path, config.replace("serverPort:", "serverPort: [")).unwrap();
    server.hangup();
    server.wait_for_log("reload failed", 3);
    assert_eq!(
        try_get(server.port, trust(), "/v4/butlerping").unwrap().0,
        200
    );

    // Switching TLS off needs a restart.
    std::fs::write(
        &config_path,
        config.replace("      enable: true", "      enable: false"),
    )
    .unwrap();
    server.hangup();
    server.wait_for_log("switching between HTTP and HTTPS needs a restart", 1);
    assert_eq!(
        try_get(server.port, trust(), "/v4/butlerping").unwrap().0,
        200
    );
}

#[test]
fn new_connections_are_not_refused_while_sighup_swaps_certificates() {
    let (ca, server) = start_tls();
    let port = server.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        let trust = client_config(&ca.cert_pem, None, &[b"http/1.1"], Versions::Both);
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match try_get(port, trust.clone(), "/v4/butlerping") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    for round in 1..=5 {
        ca.server_cert(&["localhost", "127.0.0.1"])
            .write(server.config_dir(), "server");
        server.hangup();
        server.wait_for_log("reloaded certificates", round);
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = hammer.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 5, "only {ok} connections made during the swaps");
}

#[test]
fn the_ca_bundle_completes_the_chain_for_clients_that_trust_only_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::new("Root CA");
    let intermediate = root.intermediate("Issuing CA");
    intermediate
        .server_cert(&["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    intermediate.write_cert(dir.path(), "chain");
    let config = TLS_CONFIG.replace(
        "      key: {dir}/server_key.pem\n",
        "      key: {dir}/server_key.pem\n      ca: {dir}/chain.pem\n",
    );
    assert_ne!(config, TLS_CONFIG);
    let data = dir.path().join("data");
    let server = Server::start_in(dir, data, &config);
    let trust_root = client_config(&root.cert_pem, None, &[b"http/1.1"], Versions::Both);
    assert_eq!(
        try_get(server.port, trust_root, "/v4/butlerping")
            .unwrap()
            .0,
        200
    );

    // Without the bundle the same client cannot build the chain.
    let dir = tempfile::tempdir().unwrap();
    intermediate
        .server_cert(&["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    let data = dir.path().join("data");
    let server = Server::start_in(dir, data, TLS_CONFIG);
    let trust_root = client_config(&root.cert_pem, None, &[b"http/1.1"], Versions::Both);
    let refused = try_get(server.port, trust_root, "/v4/butlerping");
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "{refused:?}"
    );
}
