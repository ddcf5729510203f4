//! Wiring of the running service — the only code that knows every layer.
//!
//! [`prepare`] checks the TLS files, opens the store and builds the endpoints' state;
//! [`Service::run`] then takes what a process must own from its caller — the bound listener,
//! the shutdown future, the reload requests — drops privileges, tells systemd it is ready,
//! serves until shutdown (reloading certificates and the client list on each reload request),
//! and shuts down in order: stop accepting, drain requests, close the database. `main` binds
//! the port ([`bind`]) and installs the signal handlers ([`signals`]); a test can hand in a
//! loopback listener and a future of its own and run the whole service in-process.

pub mod signals;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::api::router::Router;
use crate::api::state::AppState;
use crate::config::{Config, RestServerConfig};
use crate::disk::DiskGuard;
use crate::http::body::BodyBudget;
use crate::http::server::{self, Server};
use crate::kv::idempotency::IdempotencyStore;
use crate::kv::{Quotas, Store, StoreError};
use crate::metrics::{Metrics, Sources};
use crate::privileges;
use crate::qrs::{QrsClient, QrsSetupError, probe_when_idle};
use crate::security::inventory::{warn_expiring, warn_stale_crls};
use crate::security::tls::TlsSetupError;
use crate::security::{Security, SecurityHandle, daily_expiry_check};
use crate::systemd::{self, AcceptProbe, Probe};
use crate::tasks::{StartService, Starter};

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

/// Binds the REST listener the config asks for (`None` when the REST server is disabled).
pub async fn bind(rest: &RestServerConfig) -> Result<Option<TcpListener>, StartupError> {
    if !rest.enable {
        return Ok(None);
    }
    let address = format!("{}:{}", rest.host, rest.port);
    TcpListener::bind(&address)
        .await
        .map(Some)
        .map_err(|source| StartupError::Bind { address, source })
}

/// The service with its files read and its database open, ready to serve.
pub struct Service {
    config: Arc<Config>,
    security: Arc<SecurityHandle>,
    state: Arc<AppState>,
    /// The store itself, also when only start-task's idempotency answers use it.
    store: Option<Store>,
}

/// Checks the TLS files and the client list, opens the store (in `data_dir`, see
/// [`Config::data_dir`]) and builds the endpoints' state. Nothing is served yet: the caller
/// binds the listener next ([`bind`]), so a second instance on the same data directory is
/// refused for the database it would share, before it competes for the port.
pub async fn prepare(config: Config, data_dir: &Path) -> Result<Service, StartupError> {
    let config = Arc::new(config);
    tracing::info!(config = %config.origin, version = env!("CARGO_PKG_VERSION"), "butler-edge starting");
    for key in &config.ignored_keys {
        tracing::debug!(key = %key, "config key not used by butler-edge; ignored");
    }
    let security = Arc::new(SecurityHandle::new(security(&config)?));
    let (state, store) = build_state(&config, data_dir).await?;
    Ok(Service {
        config,
        security,
        state,
        store,
    })
}

impl Service {
    /// Serves on `listener` (`None`: no REST API) until `shutdown` resolves, then shuts down
    /// in order. `drop_to`: the user to become before the first connection is accepted (see
    /// [`crate::privileges`]). Each message on `reloads` re-reads the config file's
    /// certificates, CRLs and client list (`SIGHUP`); a closed channel means no reloads.
    pub async fn run(
        self,
        listener: Option<TcpListener>,
        drop_to: Option<&privileges::Target>,
        shutdown: impl Future<Output = ()>,
        mut reloads: mpsc::Receiver<()>,
    ) -> Result<(), StartupError> {
        let Service {
            config,
            security,
            state,
            store,
        } = self;
        let expiry_task = tokio::spawn(daily_expiry_check(security.clone()));
        let (stop, stop_signal) = watch::channel(false);
        let accept_probe = Arc::new(AcceptProbe::default());
        let server_task = match listener {
            Some(listener) => {
                announce(&listener, &config)?;
                // Before the first connection is accepted: no request is ever served as root.
                drop_privileges(drop_to)?;
                let server = Arc::new(Server {
                    limits: config.edge.limits.clone(),
                    shutdown_timeout: config.edge.shutdown_timeout,
                    security: security.clone(),
                    metrics: state.metrics.clone(),
                    accept_probe: accept_probe.clone(),
                    handler: Arc::new(Router {
                        state: state.clone(),
                    }),
                });
                Some(tokio::spawn(server::serve(listener, server, stop_signal)))
            }
            None => {
                tracing::warn!("Butler.restServerConfig.enable is false: no REST API is served");
                drop_privileges(drop_to)?;
                None
            }
        };
        // Listener bound, database open: tell systemd (Type=notify) we are ready, and keep
        // telling its watchdog we are alive while the liveness check passes.
        systemd::ready(&format!(
            "serving on {}:{}",
            config.rest.host, config.rest.port
        ));
        let probes = store.iter().cloned().map(database_probe).collect();
        systemd::start_watchdog(server_task.as_ref().map(|_| accept_probe), probes);
        crate::clock::sync::watch_steps();
        let snapshot_task = snapshot::spawn(state.clone());

        tokio::pin!(shutdown);
        let mut reloading = true;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                request = reloads.recv(), if reloading => match request {
                    Some(()) => reload(&security, config.source.clone()).await,
                    None => reloading = false,
                },
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
}

/// Reads the TLS files and the client list, and warns about what will bite later.
fn security(config: &Config) -> Result<Security, StartupError> {
    let security = Security::build(config)?;
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
    Ok(security)
}

/// Opens the store and builds what the endpoints reach. Returns the store itself too (for
/// the watchdog and the orderly close), which the state holds only when the key-value API
/// is served.
async fn build_state(
    config: &Arc<Config>,
    data_dir: &Path,
) -> Result<(Arc<AppState>, Option<Store>), StartupError> {
    let features = &config.features;
    // The database also keeps start-task's Idempotency-Key answers (see `KvMode`).
    let store = if features.opens_database() {
        let store = Store::open(
            data_dir,
            Quotas {
                keys_per_namespace: config.kv.max_keys_per_namespace,
                namespaces: config.kv.max_namespaces,
                keys: config.kv.max_keys,
            },
        )?;
        tracing::info!(path = %store.path().display(), "key-value store open");
        Some(store)
    } else {
        None
    };
    let start_task = match &store {
        Some(store) if features.start_task_ready() => {
            Some(start_task_state(config, store.clone())?)
        }
        _ => None,
    };
    if let Some(why) = features.start_task_not_set_up() {
        tracing::warn!("{why}; until then start-task requests get 503");
    }
    if let (Some(st), Some(interval)) = (&start_task, config.start_task.probe_interval) {
        tokio::spawn(probe_when_idle(st.starter.qrs().clone(), interval));
    }
    let disk_guard = match store.as_ref().filter(|_| features.kv_store_on()) {
        Some(_) => DiskGuard::open(data_dir, config.edge.min_free_disk_bytes)
            .map_err(|source| StartupError::DataDir {
                path: data_dir.to_path_buf(),
                source,
            })?
            .map(Arc::new),
        None => None,
    };
    let served_store = store.clone().filter(|_| features.kv_store_on());
    let metrics = Arc::new(Metrics::new(Sources {
        store: served_store.clone(),
        disk_guard: disk_guard.clone(),
        start_task: start_task.is_some(),
        appliance: Some(config.update.appliance_files()),
    }));
    let state = Arc::new(AppState {
        config: config.clone(),
        store: served_store,
        start_task,
        disk_guard,
        metrics,
        body_budget: BodyBudget::new(&config.edge.limits),
        update_dir: crate::update::handoff::UpdateDir::in_data_dir(data_dir).dir,
        update_lock: tokio::sync::Mutex::new(()),
    });
    Ok((state, store))
}

/// Becomes the `--user` (the database is open, the port bound), or warns when staying root.
fn drop_privileges(target: Option<&privileges::Target>) -> Result<(), StartupError> {
    match target {
        Some(target) => privileges::drop_to(target)?,
        None => privileges::warn_if_root(),
    }
    Ok(())
}

/// Logs where the REST API listens.
fn announce(listener: &TcpListener, config: &Config) -> Result<(), StartupError> {
    let local = listener.local_addr().map_err(|source| StartupError::Bind {
        address: format!("{}:{}", config.rest.host, config.rest.port),
        source,
    })?;
    let scheme = if config.rest.tls.enable {
        "https"
    } else {
        "http"
    };
    tracing::info!(address = %local, "REST server listening on {scheme}://{local}");
    Ok(())
}

/// The database's part of the watchdog's liveness check: its writer thread takes work (so
/// writes are not stuck behind a hung commit) and it answers a read.
fn database_probe(store: Store) -> Probe {
    Box::new(move |within| {
        let store = store.clone();
        Box::pin(async move {
            if !store.writer_answers_within(within).await {
                return Err(format!(
                    "the database writer did not take work within {} ms (a commit is stuck)",
                    within.as_millis()
                ));
            }
            let read = tokio::task::spawn_blocking(move || store.namespace_exists(""));
            match tokio::time::timeout(within, read).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err(e))) => Err(format!("the database did not answer a read: {e}")),
                Ok(Err(e)) => Err(format!("the database read task failed: {e}")),
                Err(_) => Err(format!(
                    "the database did not answer a read within {} ms",
                    within.as_millis()
                )),
            }
        })
    })
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

fn start_task_state(config: &Config, store: Store) -> Result<StartService, StartupError> {
    let settings = &config.start_task;
    warn_about_qrs_trust(&settings.qrs);
    let qrs = QrsClient::new(&settings.qrs)?;
    tracing::info!(qrs = %qrs.host(), "start-task endpoint enabled");
    Ok(StartService {
        starter: Starter::new(qrs, settings.starter.clone()),
        policy: settings.policy.clone(),
        idempotency: IdempotencyStore::open(store, settings.idempotency_retention)?,
    })
}

/// Warnings about how far QRS's answers can be trusted with these settings.
fn warn_about_qrs_trust(qrs: &crate::qrs::QrsSettings) {
    if qrs.use_ssl && !qrs.reject_unauthorized {
        tracing::warn!(
            host = %qrs.host,
            "Butler.configQRS.rejectUnauthorized is false: QRS's certificate is NOT verified, \
             so anyone able to intercept the connection could pose as QRS. Set it to true and \
             point Butler.cert.clientCertCA at Sense's root.pem"
        );
    }
    if qrs.use_ssl && qrs.reject_unauthorized && qrs.host.parse::<std::net::IpAddr>().is_ok() {
        tracing::warn!(
            host = %qrs.host,
            "Butler.configQRS.host is an IP address, but QRS's certificate normally names the \
             Sense server's host name only; if QRS calls fail with a certificate name error, set \
             Butler.configQRS.host to that host name"
        );
    }
    if !qrs.use_ssl {
        tracing::warn!(host = %qrs.host, "Butler.configQRS.useSSL is false: QRS is called over plain HTTP");
    }
}
