//! The fake QRS must enforce what the real QRS enforces, or the start-task tests prove
//! nothing: client certificates, the xrfkey rule, filter syntax and escaping.

use crate::support;

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use support::fake_qrs::{FakeQrs, FakeTask, parse_filter};
use support::pki::{Ca, Issued, KeyKind, SenseCerts};

fn client(certs: &SenseCerts, identity: Option<&Issued>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(certs.ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

fn tasks() -> Vec<FakeTask> {
    vec![
        FakeTask::new("11111111-1111-4111-8111-111111111111", "Reload A")
            .tag("R&D")
            .cp("Group", "it's"),
        FakeTask::new("22222222-2222-4222-8222-222222222222", "Reload B").tag("a+b"),
    ]
}

#[tokio::test]
async fn enforces_client_certificates_and_the_xrfkey_rule_and_parses_filters() {
    for kind in [
        KeyKind::RsaPkcs1,
        KeyKind::RsaPkcs8,
        KeyKind::EcP256Pkcs8,
        KeyKind::EcP256Sec1,
    ] {
        let certs = SenseCerts::new(&["localhost"], kind);
        let qrs = FakeQrs::start(&certs.server, &certs.ca, tasks());
        let id = certs.ca.client_cert("QlikClient", kind);
        let base = format!("https://localhost:{}", qrs.port());
        let c = client(&certs, Some(&id));
        let get = |q: &str| {
            c.get(format!("{base}/qrs/task/full?{q}"))
                .header("X-Qlik-User", "UserDirectory=Internal;UserId=sa_repository")
        };

        // Correct xrfkey in both places: 200.
        let r = get("xrfkey=abcdefghijklmnop&filter=tags.name%20eq%20%27R%26D%27")
            .header("X-Qlik-Xrfkey", "abcdefghijklmnop")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{kind:?}");
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body.as_array().unwrap().len(), 1);
        assert_eq!(body[0]["name"], "Reload A");

        // Mismatch and missing header: 403.
        for (q, h) in [
            ("xrfkey=abcdefghijklmnop", Some("abcdefghijklmnoX")),
            ("xrfkey=abcdefghijklmnop", None),
            ("", Some("abcdefghijklmnop")),
        ] {
            let mut req = get(q);
            if let Some(h) = h {
                req = req.header("X-Qlik-Xrfkey", h);
            }
            assert_eq!(req.send().await.unwrap().status(), 403, "{q} {h:?}");
        }

        // A raw '+' is a space to QRS; %2B is a plus.
        let raw_plus = get("xrfkey=abcdefghijklmnop&filter=tags.name%20eq%20%27a+b%27")
            .header("X-Qlik-Xrfkey", "abcdefghijklmnop")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();

        let raw_plus: serde_json::Value = serde_json::from_slice(&raw_plus).unwrap();
        assert_eq!(raw_plus.as_array().unwrap().len(), 0);
        let encoded_plus = get("xrfkey=abcdefghijklmnop&filter=tags.name%20eq%20%27a%2Bb%27")
            .header("X-Qlik-Xrfkey", "abcdefghijklmnop")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();

        let encoded_plus: serde_json::Value = serde_json::from_slice(&encoded_plus).unwrap();
        assert_eq!(encoded_plus.as_array().unwrap().len(), 1);

        // Without a client certificate the handshake fails.
        let anon = client(&certs, None);
        assert!(anon.get(format!("{base}/qrs/about")).send().await.is_err());
        // A client certificate from another CA is refused too.
        let other = Ca::new("Other CA").client_cert("QlikClient", KeyKind::EcP256Pkcs8);
        assert!(
            client(&certs, Some(&other))
                .get(format!("{base}/qrs/about"))
                .send()
                .await
                .is_err()
        );
        assert_eq!(qrs.calls().len(), 6);
    }
}

/// Literals are read the way a live QRS reads them (ptarmiganlabs/butler-sheet-icons measured
/// it): a backslash escapes the next character; a doubled quote or a double-quoted value is not
/// a literal.
#[test]
fn filter_grammar() {
    use support::fake_qrs::Filter;
    assert!(parse_filter("id eq a or id eq b").is_ok());
    let eq = |f: &str, v: &str| Filter::Eq(f.to_string(), v.to_string());
    assert_eq!(parse_filter(r"name eq 'Q1\'25'"), Ok(eq("name", "Q1'25")));
    assert_eq!(
        parse_filter(r"name eq 'C:\\dir'"),
        Ok(eq("name", r"C:\dir"))
    );
    assert_eq!(parse_filter(r"name eq 'a\\'"), Ok(eq("name", r"a\")));
    assert_eq!(
        parse_filter(
            r"(customProperties.definition.name eq 'x\'y') and (customProperties.value eq 'v')"
        ),
        Ok(Filter::And(
            Box::new(eq("customProperties.definition.name", "x'y")),
            Box::new(eq("customProperties.value", "v"))
        ))
    );
    for wrong in [
        "name eq 'O''Brien'",
        "name eq \"Q1'25\"",
        "name eq \"x\"",
        // The backslash escapes the closing quote: the literal never ends.
        r"name eq 'a\'",
        "tags.name eq 'unterminated",
        "tags.name 'x'",
    ] {
        assert!(parse_filter(wrong).is_err(), "{wrong}");
    }
}

/// Over the wire, a filter QRS cannot parse is a 400 "Cannot parse the expression", and the
/// backslash-escaped form finds the task.
#[tokio::test]
async fn answers_400_cannot_parse_to_the_doubled_quote_and_finds_the_backslash_form() {
    let kind = KeyKind::EcP256Pkcs8;
    let certs = SenseCerts::new(&["localhost"], kind);
    let qrs = FakeQrs::start(&certs.server, &certs.ca, tasks());
    let c = client(&certs, Some(&certs.ca.client_cert("QlikClient", kind)));
    let base = format!("https://localhost:{}", qrs.port());
    let get = |filter: &str| {
        let url = format!(
            "{base}/qrs/task/full?xrfkey=abcdefghijklmnop&filter={}",
            percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC)
        );
        let c = c.clone();
        async move {
            let r = c
                .get(url)
                .header("X-Qlik-Xrfkey", "abcdefghijklmnop")
                .header("X-Qlik-User", "UserDirectory=Internal;UserId=sa_repository")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for wrong in [
        "customProperties.value eq 'it''s'",
        "customProperties.value eq \"it's\"",
    ] {
        let (status, body) = get(wrong).await;
        assert_eq!(status, 400, "{wrong}");
        assert!(body.starts_with("Cannot parse the expression"), "{body}");
    }
    let (status, body) = get(r"customProperties.value eq 'it\'s'").await;
    assert_eq!(status, 200);
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found[0]["name"], "Reload A", "{body}");
}

/// The PKI helpers make what they promise: validity windows, SANs and a CRL listing the
/// revoked certificate, as other tests (and the TLS tests) rely on.
#[test]
fn pki_helpers_make_what_they_promise() {
    use support::pki::{CertSpec, Validity};
    use x509_parser::pem::parse_x509_pem;
    let ca = Ca::new("Test CA");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (validity, valid_now) in [
        (Validity::Current, true),
        (Validity::Expired, false),
        (Validity::NotYetValid, false),
    ] {
        let issued = ca.issue(&CertSpec::server(&["qrs.example", "127.0.0.1"]).validity(validity));
        let (_, pem) = parse_x509_pem(issued.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let v = cert.validity();
        let inside = v.not_before.timestamp() <= now && now <= v.not_after.timestamp();
        assert_eq!(inside, valid_now, "{validity:?}");
        let sans = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(sans.general_names.len(), 2, "a DNS and an IP SAN");
    }
    let revoked = ca.client_cert("revoked", KeyKind::EcP256Pkcs8);
    let kept = ca.client_cert("kept", KeyKind::EcP256Pkcs8);
    let crl_pem = ca.crl_pem(&[&revoked]);
    let (_, pem) = parse_x509_pem(crl_pem.as_bytes()).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).unwrap();
    let serials: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    assert_eq!(serials, vec![revoked.serial.clone()]);
    assert!(!serials.contains(&kept.serial));
    assert!(
        SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1)
            .client
            .key
            .exists()
    );
    let pkcs1 = ca.client_cert("QlikClient", KeyKind::RsaPkcs1).key_pem;
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let sec1 = ca.client_cert("QlikClient", KeyKind::EcP256Sec1).key_pem;
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
}
