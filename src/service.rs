//! Wiring of the running service: check the TLS files, open the store, bind the
//! listener, serve until SIGTERM/SIGINT (reloading certificates and the client list
//! on SIGHUP), then shut down in order (stop accepting, drain requests, close the
//! database).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::Config;
use crate::disk::DiskGuard;
use crate::http::server;
use crate::http::tls::TlsSetupError;
use crate::kv::idempotency::IdempotencyStore;
use crate::kv::{Store, StoreError};
use crate::metrics::Metrics;
use crate::privileges;
use crate::qrs::{QrsClient, QrsSetupError, probe_when_idle};
use crate::security::{
    Security, SecurityHandle, daily_expiry_check, warn_expiring, warn_stale_crls,
};
use crate::state::AppState;
use crate::state::StartTaskState;
use crate::systemd::{self, AcceptProbe};
use crate::tasks::Starter;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot set up the QRS connection: {0}")]
    Qrs(#[from] QrsSetupError),
    #[error("cannot set up HTTPS: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot open the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
}

/// Runs the service until SIGTERM/SIGINT. `drop_to`: the user to become once the listener
/// is bound and the database open (see [`crate::privileges`]).
pub async fn run(
    config: Config,
    data_dir: PathBuf,
    drop_to: Option<privileges::Target>,
) -> Result<(), StartupError> {
    let config = Arc::new(config);
    tracing::info!(config = %config.origin, version = env!("CARGO_PKG_VERSION"), "butler-edge starting");
    for key in &config.ignored_keys {
        tracing::debug!(key = %key, "config key not used by butler-edge; ignored");
    }

    let mut terminate = signal(SignalKind::terminate()).map_err(StartupError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartupError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(StartupError::Signals)?;

    let security = Security::build(&config)?;
    if config.client_auth.enable {
        tracing::info!(
            clients = security.policy.clients.len(),
            crls = config.client_auth.crl.len(),
            "client certificates required"
        );
        if security.policy.clients.is_empty() {
            tracing::warn!(
                "ButlerEdge.clientAuth.clients is empty: every caller's certificate will be \
                 refused with 403; list the callers and what they may do"
            );
        }
    }
    warn_expiring(&security.certificate_files);
    warn_stale_crls(&security.crl_files);
    let security = Arc::new(SecurityHandle::new(security));
    let expiry_task = tokio::spawn(daily_expiry_check(security.clone()));

    // The database also keeps start-task's Idempotency-Key answers, so it is opened
    // when either feature is on; the key-value API is served only when the store is.
    let store = if config.kv.enable || config.start_task.enabled {
        let store = Store::open(&data_dir, config.kv.max_keys_per_namespace)?;
        tracing::info!(path = %store.path().display(), "key-value store open");
        Some(store)
    } else {
        None
    };
    let start_task = match (&store, config.start_task.enabled) {
        (Some(store), true) if config.start_task.not_set_up.is_none() => {
            Some(start_task_state(&config, store.clone())?)
        }
        _ => None,
    };
    if let Some(why) = &config.start_task.not_set_up {
        tracing::warn!("{why}; until then start-task requests get 503");
    }
    if let (Some(st), Some(interval)) = (&start_task, config.start_task.probe_interval) {
        tokio::spawn(probe_when_idle(st.starter.qrs().clone(), interval));
    }
    let disk_guard = match store.as_ref().filter(|_| config.kv.enable) {
        Some(_) => {
            DiskGuard::open(&data_dir, config.edge.min_free_disk_bytes).map_err(|source| {
                StartupError::DataDir {
                    path: data_dir.clone(),
                    source,
                }
            })?
        }
        None => None,
    };
    let accept_probe = Arc::new(AcceptProbe::default());
    let state = Arc::new(AppState {
        config: config.clone(),
        store: store.clone().filter(|_| config.kv.enable),
        start_task,
        security: security.clone(),
        disk_guard,
        accept_probe: accept_probe.clone(),
        metrics: Metrics::default(),
    });

    let (stop, stop_signal) = watch::channel(false);
    let server_task = if config.rest.enable {
        let address = format!("{}:{}", config.rest.host, config.rest.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| StartupError::Bind {
                address: address.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let scheme = if config.rest.tls.enable {
            "https"
        } else {
            "http"
        };
        tracing::info!(address = %local, "REST server listening on {scheme}://{local}");
        if let Some(target) = &drop_to {
            privileges::drop_to(target)?;
        }
        Some(tokio::spawn(server::serve(
            listener,
            state.clone(),
            stop_signal,
        )))
    } else {
        tracing::warn!("Butler.restServerConfig.enable is false: no REST API is served");
        None
    };

    if server_task.is_none()
        && let Some(target) = &drop_to
    {
        privileges::drop_to(target)?;
    }
    if drop_to.is_none() {
        privileges::warn_if_root();
    }
    // Listener bound, database open: tell systemd (Type=notify) we are ready, and keep
    // telling its watchdog we are alive while the liveness check passes.
    systemd::ready(&format!(
        "serving on {}:{}",
        config.rest.host, config.rest.port
    ));
    systemd::start_watchdog(server_task.as_ref().map(|_| accept_probe), store.clone());
    crate::appliance::clock::watch_steps();
    let snapshot_task = crate::appliance::snapshot::spawn(state.clone());

    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM received; shutting down");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received; shutting down");
                break;
            }
            _ = hangup.recv() => reload(&security, config.source.clone()).await,
        }
    }
    expiry_task.abort();
    if let Some(task) = snapshot_task {
        task.abort();
    }
    systemd::stopping();
    let _ = stop.send(true);
    if let Some(task) = server_task {
        let _ = task.await;
    }
    drop(state);
    if let Some(store) = store {
        store.close().await;
        tracing::info!("key-value store closed");
    }
    tracing::info!("butler-edge stopped");
    Ok(())
}

/// `SIGHUP`: re-read the config file's certificates, CRLs and client list.
async fn reload(security: &Arc<SecurityHandle>, source: Option<PathBuf>) {
    tracing::info!("SIGHUP received; reloading certificates, CRLs and the client list");
    let handle = security.clone();
    let outcome = tokio::task::spawn_blocking(move || handle.reload(source.as_deref()))
        .await
        .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
    match outcome {
        Ok(summary) => tracing::info!(
            client_auth = summary.client_auth,
            clients = summary.clients,
            crls = summary.crls,
            "reloaded certificates, CRLs and the client list; new connections use them, \
             open connections keep their TLS session (other config changes need a restart)"
        ),
        Err(e) => tracing::error!(
            "reload failed, the previous certificates and client list stay in force: {e}"
        ),
    }
}

fn start_task_state(config: &Config, store: Store) -> Result<StartTaskState, StartupError> {
    let settings = &config.start_task;
    if settings.qrs.use_ssl && !settings.qrs.reject_unauthorized {
        tracing::warn!(
            host = %settings.qrs.host,
            "Butler.configQRS.rejectUnauthorized is false: QRS's certificate is NOT verified, \
             so anyone able to intercept the connection could pose as QRS. Set it to true and \
             point Butler.cert.clientCertCA at Sense's root.pem"
        );
    }
    if settings.qrs.use_ssl
        && settings.qrs.reject_unauthorized
        && settings.qrs.host.parse::<std::net::IpAddr>().is_ok()
    {
        tracing::warn!(
            host = %settings.qrs.host,
            "Butler.configQRS.host is an IP address, but QRS's certificate normally names the \
             Sense server's host name only; if QRS calls fail with a certificate name error, set \
             Butler.configQRS.host to that host name"
        );
    }
    if !settings.qrs.use_ssl {
        tracing::warn!(host = %settings.qrs.host, "Butler.configQRS.useSSL is false: QRS is called over plain HTTP");
    }
    let qrs = QrsClient::new(&settings.qrs)?;
    tracing::info!(qrs = %qrs.host(), "start-task endpoint enabled");
    Ok(StartTaskState {
        starter: Starter::new(qrs, settings.starter.clone()),
        policy: settings.policy.clone(),
        idempotency: IdempotencyStore::open(store, settings.idempotency_retention)?,
    })
}
