//! The swappable security settings: the TLS server configuration (certificate, caller CAs,
//! CRLs) and the client permission list, replaced together on `SIGHUP`.
//!
//! New connections take the snapshot current when they are accepted; each request resolves
//! its caller against the snapshot current when it arrives. Swapping is one pointer write
//! under a lock held for nanoseconds, so established connections keep running on the
//! TLS session they negotiated and no new connection is refused during the swap. A reload
//! that fails (a bad file, a config error) changes nothing and says why.
//!
//! [`tls`] builds the rustls server configuration from the files; [`inventory`] lists the
//! certificate files a config uses and how close they are to expiry; [`handshake_log`]
//! bounds the lines failed handshakes write; [`auth_log`] those of refused API tokens.

pub mod auth_log;
pub mod handshake_log;
pub mod inventory;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use crate::authz::Policy;
use crate::config::Config;
use inventory::{CertificateFile, certificate_files, crl_files, warn_expiring, warn_stale_crls};
use tls::{TlsSetupError, server_config};

/// One consistent set of security settings.
pub struct Security {
    /// `None`: plain HTTP (`Butler.restServerConfig.tls.enable` is false).
    pub tls: Option<TlsAcceptor>,
    pub policy: Arc<Policy>,
    /// Every certificate file the config names, for expiry warnings.
    pub certificate_files: Vec<CertificateFile>,
    /// The CRL files in force, for staleness warnings.
    pub crl_files: Vec<PathBuf>,
}

impl Security {
    /// Reads and checks every file the config names for TLS and client authentication.
    pub fn build(config: &Config) -> Result<Security, TlsSetupError> {
        let tls = if config.rest.tls.enable {
            let server = server_config(&config.rest.tls, &config.client_auth)?;
            Some(TlsAcceptor::from(Arc::new(server)))
        } else {
            None
        };
        Ok(Security {
            tls,
            policy: Arc::new(config.client_auth.policy.clone()),
            certificate_files: certificate_files(config),
            crl_files: crl_files(config),
        })
    }
}

/// The current [`Security`], shared by the accept loop, connections and the reloader.
pub struct SecurityHandle {
    current: RwLock<Arc<Security>>,
}

impl SecurityHandle {
    pub fn new(security: Security) -> SecurityHandle {
        SecurityHandle {
            current: RwLock::new(Arc::new(security)),
        }
    }

    pub fn current(&self) -> Arc<Security> {
        // A poisoned lock still holds a complete snapshot: swapping is a single assignment.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, security: Security) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(security);
    }

    /// Re-reads the config file and swaps in its certificates, CRLs and client list.
    /// On any error the running settings stay and the error says why.
    pub fn reload(&self, source: Option<&Path>) -> Result<ReloadSummary, String> {
        let Some(path) = source else {
            return Err(
                "running on the embedded default config: there is no file to reload".to_string(),
            );
        };
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let was_tls = self.current().tls.is_some();
        if config.rest.tls.enable != was_tls {
            return Err(format!(
                "Butler.restServerConfig.tls.enable changed to {} in {}: switching between HTTP \
                 and HTTPS needs a restart",
                config.rest.tls.enable,
                path.display()
            ));
        }
        let security = Security::build(&config).map_err(|e| e.to_string())?;
        let summary = ReloadSummary {
            client_auth: security.policy.enabled,
            clients: security.policy.clients.len(),
            crls: config.client_auth.crl.len(),
        };
        let (files, crls) = (
            security.certificate_files.clone(),
            security.crl_files.clone(),
        );
        self.replace(security);
        warn_expiring(&files);
        warn_stale_crls(&crls);
        Ok(summary)
    }
}

/// What a successful reload put in place, for the log.
#[derive(Debug)]
pub struct ReloadSummary {
    pub client_auth: bool,
    pub clients: usize,
    pub crls: usize,
}

/// Repeats the expiry check once a day for as long as the service runs.
pub async fn daily_expiry_check(handle: Arc<SecurityHandle>) {
    let mut interval = tokio::time::interval(Duration::from_secs(86_400));
    interval.tick().await; // the first tick is immediate; start-up already checked
    loop {
        interval.tick().await;
        let current = handle.current();
        warn_expiring(&current.certificate_files);
        warn_stale_crls(&current.crl_files);
    }
}
