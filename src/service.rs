//! Wiring of the running service: open the store, bind the listener, serve until
//! SIGTERM/SIGINT, then shut down in order (stop accepting, drain requests, close
//! the database).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::Config;
use crate::disk::DiskGuard;
use crate::http::server;
use crate::kv::idempotency::IdempotencyStore;
use crate::kv::{Store, StoreError};
use crate::metrics::Metrics;
use crate::privileges;
use crate::qrs::{QrsClient, QrsSetupError};
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
        (Some(store), true) => Some(start_task_state(&config, store.clone())?),
        _ => None,
    };
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
        tracing::info!(address = %local, "REST server listening on http://{local}");
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

    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
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
