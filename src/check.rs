//! `butler-edge check-config`: what a config file will run, in words an admin
//! can check before restarting the service.
//!
//! One function per section of the report, in the order printed: listener and TLS, client
//! certificates, endpoints, key-value store, start-task, appliance endpoints, disk guard,
//! certificates and CRLs (from the same inventory `/health` and the expiry warnings use).

use std::fmt::Write;

use crate::config::Config;
use crate::pki::{read_cert_summaries, read_crl_summaries};
use crate::security::inventory::{CertificateFile, certificate_files, crl_files};

pub fn report(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {} (valid)", config.origin);
    listener(&mut out, config);
    endpoints(&mut out, config);
    key_value_store(&mut out, config);
    start_task(&mut out, config);
    appliance(&mut out, config);
    certificates(&mut out, config);
    let _ = writeln!(
        out,
        "ignored keys (not used by butler-edge): {}",
        config.ignored_keys.len()
    );
    out
}

/// `a, b, c`, or `none` for an empty list.
fn list_or(items: &[impl AsRef<str>], none: &str) -> String {
    if items.is_empty() {
        none.to_string()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn listener(out: &mut String, config: &Config) {
    if !config.rest.enable {
        let _ = writeln!(
            out,
            "listener: none (Butler.restServerConfig.enable is false)"
        );
        return;
    }
    let scheme = if config.rest.tls.enable {
        "https"
    } else {
        "http"
    };
    let _ = writeln!(
        out,
        "listener: {scheme}://{}:{}",
        config.rest.host, config.rest.port
    );
    if config.rest.tls.enable {
        // The same checks start-up and SIGHUP make: files readable, PEM, key matching.
        match crate::security::tls::server_config(&config.rest.tls, &config.client_auth) {
            Ok(_) => {
                let _ = writeln!(
                    out,
                    "TLS files: usable (certificate, key, caller CAs, CRLs)"
                );
            }
            Err(e) => {
                let _ = writeln!(out, "TLS files: problem: {e}");
            }
        }
    }
    client_certificates(out, config);
}

fn client_certificates(out: &mut String, config: &Config) {
    let auth = &config.client_auth;
    if !auth.enable {
        if config.rest.tls.enable {
            let _ = writeln!(
                out,
                "client certificates: not required (ButlerEdge.clientAuth.enable is false)"
            );
        }
        return;
    }
    let certificates = match auth.policy.mode {
        crate::authz::AuthMode::Certificate => "required",
        crate::authz::AuthMode::CertificateOrToken => "accepted",
        crate::authz::AuthMode::Token => "not asked for",
    };
    let _ = writeln!(
        out,
        "client certificates: {certificates} ({} CA bundle(s), {} CRL file(s)); clients:",
        auth.ca.len(),
        auth.crl.len()
    );
    if auth.policy.mode != crate::authz::AuthMode::Certificate {
        let _ = writeln!(
            out,
            "authentication mode: {} (ButlerEdge.clientAuth.mode; API tokens accepted over HTTPS)",
            auth.policy.mode.name()
        );
    }
    for client in &auth.policy.clients {
        let endpoints: Vec<&str> = client.endpoints.iter().copied().collect();
        let own_list = match &client.start_task {
            Some(p) => format!(
                "; own start-task list ({} task ids, {} tags, {} custom properties)",
                p.task_ids.len(),
                p.tags.len(),
                p.custom_properties.len()
            ),
            None => String::new(),
        };
        let namespaces = match &client.namespaces {
            Some(n) => format!("; {} key-value namespace pattern(s)", n.len()),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:?} ({}): {}{own_list}{namespaces}",
            client.name,
            describe(client),
            list_or(&endpoints, "no endpoints"),
        );
    }
}

/// How check-config names what a client authenticates with: its certificate identity and,
/// for token clients, how many token digests it holds (never the digests).
fn describe(client: &crate::authz::ClientRule) -> String {
    let tokens = match client.tokens.len() {
        0 => None,
        1 => Some("API token".to_string()),
        n => Some(format!("{n} API tokens (rotation)")),
    };
    match (client.matcher.as_ref().map(|m| m.describe()), tokens) {
        (Some(m), Some(t)) => format!("{m} or {t}"),
        (Some(m), None) => m,
        (None, Some(t)) => t,
        (None, None) => "nothing".to_string(),
    }
}

fn endpoints(out: &mut String, config: &Config) {
    let names = config.endpoints.names(&config.features);
    let _ = writeln!(out, "enabled endpoints: {}", list_or(&names, "none"));
    if config.features.kv_endpoints_without_store {
        let _ = writeln!(
            out,
            "warning: Butler.restServerEndpointsEnable.keyValueStore is true but \
             Butler.keyValueStore.enable is false: the key-value endpoints are not served"
        );
    }
}

fn key_value_store(out: &mut String, config: &Config) {
    let store = if config.features.kv_store_on() {
        format!(
            "enabled, at most {} keys per namespace, data dir {}",
            config.kv.max_keys_per_namespace,
            config.data_dir(None).display()
        )
    } else {
        "disabled".to_string()
    };
    let _ = writeln!(out, "key-value store: {store}");
}

fn start_task(out: &mut String, config: &Config) {
    let st = &config.start_task;
    if let Some(why) = config.features.start_task_not_set_up() {
        let _ = writeln!(out, "start task: NOT READY: {why}");
        return;
    }
    if !config.features.start_task_ready() {
        return;
    }
    let trust = if !st.qrs.use_ssl {
        "not used (plain HTTP)"
    } else if st.qrs.reject_unauthorized {
        "verified against Butler.cert.clientCertCA"
    } else {
        "NOT verified (Butler.configQRS.rejectUnauthorized: false)"
    };
    let allow_list = if st.policy.enabled {
        format!(
            "on ({} task ids, {} tags, {} custom properties)",
            st.policy.task_ids.len(),
            st.policy.tags.len(),
            st.policy.custom_properties.len()
        )
    } else {
        "off".to_string()
    };
    let _ = writeln!(
        out,
        "start task: QRS at {}://{}:{}, server certificate {trust}, allow-list {allow_list}",
        if st.qrs.use_ssl { "https" } else { "http" },
        st.qrs.host,
        st.qrs.port,
    );
}

fn appliance(out: &mut String, config: &Config) {
    let mut appliance = Vec::new();
    if config.edge.health_endpoint {
        appliance.push("GET /health");
    }
    if config.edge.metrics_endpoint {
        appliance.push("GET /metrics");
    }
    if config.edge.admin_endpoint {
        appliance.push("admin: PUT /v4/admin/update, GET/PUT /v4/admin/store");
    }
    let _ = writeln!(
        out,
        "appliance endpoints: {}",
        list_or(&appliance, "none (ButlerEdge.endpointsEnable)")
    );
    if config.features.kv_store_on() {
        let _ = writeln!(
            out,
            "free-disk guard: {}",
            match config.edge.min_free_disk_bytes {
                0 => "off (ButlerEdge.minFreeDiskBytes is 0)".to_string(),
                n => format!("key-value writes get 507 below {n} bytes free"),
            }
        );
    }
}

fn certificates(out: &mut String, config: &Config) {
    for CertificateFile { purpose, path } in certificate_files(config) {
        match read_cert_summaries(&path) {
            Ok(certs) => {
                for cert in certs {
                    let _ = writeln!(
                        out,
                        "certificate ({purpose}): {} — {}, expires {} ({} days)",
                        path.display(),
                        cert.subject,
                        cert.not_after_text,
                        cert.days_left()
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "certificate ({purpose}): problem: {e}");
            }
        }
    }
    for path in crl_files(config) {
        match read_crl_summaries(&path) {
            Ok(crls) => {
                for crl in crls {
                    let _ = writeln!(
                        out,
                        "CRL (ButlerEdge.clientAuth.crl): {} — {}, next update {}{}",
                        path.display(),
                        crl.issuer,
                        crl.next_update_text,
                        if crl.is_stale() {
                            " (PAST: issue a new CRL)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "CRL (ButlerEdge.clientAuth.crl): problem: {e}");
            }
        }
    }
}
