//! `butler-edge check-config`: what a config file will run, in words an admin
//! can check before restarting the service.

use std::fmt::Write;

use crate::config::Config;
use crate::pki::read_cert_summaries;
use crate::security::inventory::{CertificateFile, certificate_files};

pub fn report(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {} (valid)", config.origin);
    if config.rest.enable {
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
        let auth = &config.client_auth;
        if auth.enable {
            let _ = writeln!(
                out,
                "client certificates: required ({} CA bundle(s), {} CRL file(s)); clients:",
                auth.ca.len(),
                auth.crl.len()
            );
            for client in &auth.policy.clients {
                let _ = writeln!(
                    out,
                    "  {:?} ({}): {}{}{}",
                    client.name,
                    client.matcher.describe(),
                    if client.endpoints.is_empty() {
                        "no endpoints".to_string()
                    } else {
                        client
                            .endpoints
                            .iter()
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    match &client.start_task {
                        Some(p) => format!(
                            "; own start-task list ({} task ids, {} tags, {} custom properties)",
                            p.task_ids.len(),
                            p.tags.len(),
                            p.custom_properties.len()
                        ),
                        None => String::new(),
                    },
                    match &client.namespaces {
                        Some(n) => format!("; {} key-value namespace pattern(s)", n.len()),
                        None => String::new(),
                    }
                );
            }
        } else if config.rest.tls.enable {
            let _ = writeln!(
                out,
                "client certificates: not required (ButlerEdge.clientAuth.enable is false)"
            );
        }
    } else {
        let _ = writeln!(
            out,
            "listener: none (Butler.restServerConfig.enable is false)"
        );
    }
    let names = config.endpoints.names(&config.kv);
    let _ = writeln!(
        out,
        "enabled endpoints: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
    if config.endpoints.key_value_store && !config.kv.enable {
        let _ = writeln!(
            out,
            "warning: Butler.restServerEndpointsEnable.keyValueStore is true but \
             Butler.keyValueStore.enable is false: the key-value endpoints are not served"
        );
    }
    let _ = writeln!(
        out,
        "key-value store: {}",
        if config.kv.enable {
            format!(
                "enabled, at most {} keys per namespace, data dir {}",
                config.kv.max_keys_per_namespace,
                config.data_dir(None).display()
            )
        } else {
            "disabled".to_string()
        }
    );
    let st = &config.start_task;
    if let Some(why) = &st.not_set_up {
        let _ = writeln!(out, "start task: NOT READY: {why}");
    } else if st.enabled {
        let _ = writeln!(
            out,
            "start task: QRS at {}://{}:{}, server certificate {}, allow-list {}",
            if st.qrs.use_ssl { "https" } else { "http" },
            st.qrs.host,
            st.qrs.port,
            if !st.qrs.use_ssl {
                "not used (plain HTTP)"
            } else if st.qrs.reject_unauthorized {
                "verified against Butler.cert.clientCertCA"
            } else {
                "NOT verified (Butler.configQRS.rejectUnauthorized: false)"
            },
            if st.policy.enabled {
                format!(
                    "on ({} task ids, {} tags, {} custom properties)",
                    st.policy.task_ids.len(),
                    st.policy.tags.len(),
                    st.policy.custom_properties.len()
                )
            } else {
                "off".to_string()
            }
        );
    }
    let mut appliance = Vec::new();
    if config.edge.health_endpoint {
        appliance.push("GET /health");
    }
    if config.edge.metrics_endpoint {
        appliance.push("GET /metrics");
    }
    let _ = writeln!(
        out,
        "appliance endpoints: {}",
        if appliance.is_empty() {
            "none (ButlerEdge.endpointsEnable)".to_string()
        } else {
            appliance.join(", ")
        }
    );
    if config.kv.enable {
        let _ = writeln!(
            out,
            "free-disk guard: {}",
            match config.edge.min_free_disk_bytes {
                0 => "off (ButlerEdge.minFreeDiskBytes is 0)".to_string(),
                n => format!("key-value writes get 507 below {n} bytes free"),
            }
        );
    }
    for CertificateFile {
        purpose: what,
        path,
    } in certificate_files(config)
    {
        match read_cert_summaries(&path) {
            Ok(certs) => {
                for cert in certs {
                    let _ = writeln!(
                        out,
                        "certificate ({what}): {} — {}, expires {} ({} days)",
                        path.display(),
                        cert.subject,
                        cert.not_after_text,
                        cert.days_left()
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "certificate ({what}): problem: {e}");
            }
        }
    }
    if config.client_auth.enable {
        for path in &config.client_auth.crl {
            match crate::pki::read_crl_summaries(path) {
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
    let _ = writeln!(
        out,
        "ignored keys (not used by butler-edge): {}",
        config.ignored_keys.len()
    );
    out
}
