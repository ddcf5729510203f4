//! Butler's YAML configuration, parsed once into typed structs.
//!
//! A Butler user's existing config file must load unchanged: we read the `Butler.*`
//! keys we honour, ignore the rest (listed at debug level), and take our own
//! settings from a separate top-level `ButlerEdge:` section. Nothing re-reads YAML
//! keys by string after start-up.

mod client_auth;
mod features;
mod reader;
mod start_task;
mod update;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use client_auth::{ClientAuthConfig, TlsConfig};
pub use features::{Features, KvMode, StartTaskMode};
pub use reader::{ConfigError, Reader, describe};
pub use start_task::StartTaskConfig;
pub use update::UpdateConfig;

/// The configuration used when `--config` is not given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../default-config.yaml");

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from, for log lines and `check-config`.
    pub origin: String,
    /// The file it was read from (`None` for the embedded default); `SIGHUP` re-reads it.
    pub source: Option<PathBuf>,
    pub log_level: LogLevel,
    pub rest: RestServerConfig,
    pub endpoints: EndpointsEnabled,
    pub kv: KvConfig,
    pub edge: EdgeConfig,
    /// The start-task endpoint and its QRS connection.
    pub start_task: StartTaskConfig,
    /// What runs (key-value store and start-task: served, waiting, off), decided once.
    pub features: Features,
    /// Caller certificates and per-client permissions (`ButlerEdge.clientAuth`).
    pub client_auth: ClientAuthConfig,
    /// A/B updates over the API (`ButlerEdge.update`).
    pub update: UpdateConfig,
    /// Keys present in the file that butler-edge does not use.
    pub ignored_keys: Vec<String>,
}

/// Butler's winston levels, mapped onto tracing's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Verbose,
    Debug,
    Silly,
}

impl LogLevel {
    fn parse(text: &str) -> Option<LogLevel> {
        Some(match text {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "verbose" => LogLevel::Verbose,
            "debug" => LogLevel::Debug,
            "silly" => LogLevel::Silly,
            _ => return None,
        })
    }

    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Verbose | LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Silly => tracing::Level::TRACE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RestServerConfig {
    pub enable: bool,
    pub host: String,
    pub port: u16,
    /// `Butler.restServerConfig.tls`: HTTPS instead of HTTP when enabled.
    pub tls: TlsConfig,
}

/// `Butler.restServerEndpointsEnable.*` for the endpoints butler-edge serves.
#[derive(Debug, Clone)]
pub struct EndpointsEnabled {
    pub api_list_enabled_endpoints: bool,
    pub butlerping: bool,
    pub key_value_store: bool,
    pub sense_start_task: bool,
}

impl EndpointsEnabled {
    /// Enabled endpoint key names, as Butler's `/v4/configfile/endpointsenabled`
    /// reports them. Only endpoints butler-edge really serves are listed.
    pub fn names(&self, features: &Features) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.api_list_enabled_endpoints {
            names.push("apiListEnabledEndpoints");
        }
        if self.butlerping {
            names.push("butlerping");
        }
        if features.kv_served() {
            names.push("keyValueStore");
        }
        if features.start_task_served() {
            names.push("senseStartTask");
        }
        names
    }
}

#[derive(Debug, Clone)]
pub struct KvConfig {
    pub enable: bool,
    pub max_keys_per_namespace: u64,
    /// Namespaces in the whole store (`ButlerEdge.limits.maxNamespaces`).
    pub max_namespaces: u64,
    /// Keys in the whole store (`ButlerEdge.limits.maxKeys`).
    pub max_keys: u64,
}

/// Our own settings, from the `ButlerEdge:` section.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub data_dir: Option<PathBuf>,
    pub limits: Limits,
    pub shutdown_timeout: Duration,
    /// Key-value writes get 507 below this much free space on the data directory's file
    /// system (`ButlerEdge.minFreeDiskBytes`, 0 disables the guard).
    pub min_free_disk_bytes: u64,
    /// `GET /health` (`ButlerEdge.endpointsEnable.health`).
    pub health_endpoint: bool,
    /// `GET /metrics` (`ButlerEdge.endpointsEnable.metrics`).
    pub metrics_endpoint: bool,
    /// The `admin` endpoint group (`ButlerEdge.endpointsEnable.admin`): only with client
    /// authentication on, and only for clients whose `endpoints` list `admin`.
    pub admin_endpoint: bool,
    /// Web origins whose pages may call the API (`ButlerEdge.allowedOrigins`), lower-case
    /// and without a trailing `/`; a request with any other `Origin` header is refused.
    pub allowed_origins: Vec<String>,
    /// The names callers reach this server by (`ButlerEdge.allowedHosts`), lower-case;
    /// empty: `Host` is not checked.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// All request bodies together (`ButlerEdge.limits.maxBodyBytesInFlight`); at least
    /// `max_body_bytes`.
    pub max_body_bytes_in_flight: usize,
    /// Concurrent HTTP/2 streams one connection may open
    /// (`ButlerEdge.limits.maxStreamsPerConnection`).
    pub max_streams_per_connection: u32,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed gracefully
    /// (`ButlerEdge.limits.idleTimeoutMs`): HTTP/2 has no other bound on idle connections.
    pub idle_timeout: Duration,
    pub max_namespace_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// The largest store export `PUT /v4/admin/store` reads (`ButlerEdge.limits.maxRestoreBytes`);
    /// streamed, so it is not held in memory, unlike `max_body_bytes`.
    pub max_restore_bytes: u64,
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, "embedded default config")
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let doc: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
                path: origin.to_string(),
                message: e.to_string(),
            })?;
        if !doc.is_object() {
            return Err(ConfigError::invalid(
                "(top level)",
                "a mapping with a `Butler:` section",
                &doc,
            ));
        }
        if doc.get("Butler").is_none_or(|b| !b.is_object()) {
            return Err(ConfigError::Other(format!(
                "{origin}: no `Butler:` section found; a Butler config file starts with `Butler:`"
            )));
        }
        let r = Reader::new(&doc);
        let level_text = r.string_or("Butler.logLevel", "info")?;
        let log_level = LogLevel::parse(&level_text).ok_or_else(|| {
            ConfigError::invalid(
                "Butler.logLevel",
                "one of silly, debug, verbose, info, warn, error",
                &serde_json::Value::String(level_text.clone()),
            )
        })?;
        let rest = RestServerConfig {
            enable: r.bool("Butler.restServerConfig.enable", false)?,
            host: r.string_or("Butler.restServerConfig.serverHost", "127.0.0.1")?,
            port: r.port("Butler.restServerConfig.serverPort", 8080)?,
            tls: client_auth::parse_tls(&r)?,
        };
        // Butler proxies its REST API through an internal port; we need no proxy.
        r.get("Butler.restServerConfig.backgroundServerPort");
        let endpoints = EndpointsEnabled {
            api_list_enabled_endpoints: r.bool(
                "Butler.restServerEndpointsEnable.apiListEnabledEndpoints",
                false,
            )?,
            butlerping: r.bool("Butler.restServerEndpointsEnable.butlerping", false)?,
            key_value_store: r.bool("Butler.restServerEndpointsEnable.keyValueStore", false)?,
            sense_start_task: r.bool("Butler.restServerEndpointsEnable.senseStartTask", false)?,
        };
        let kv = KvConfig {
            enable: r.bool("Butler.keyValueStore.enable", false)?,
            max_keys_per_namespace: r.integer_or(
                "Butler.keyValueStore.maxKeysPerNamespace",
                1,
                u64::from(u32::MAX),
                1000,
            )?,
            max_namespaces: r.integer_or("ButlerEdge.limits.maxNamespaces", 1, 1 << 32, 10_000)?,
            max_keys: r.integer_or("ButlerEdge.limits.maxKeys", 1, 1 << 40, 2_000_000)?,
        };
        let edge = parse_edge(&r)?;
        let (start_task, not_set_up) = start_task::parse(&r, endpoints.sense_start_task)?;
        let features = Features::decide(
            endpoints.key_value_store,
            kv.enable,
            endpoints.sense_start_task,
            not_set_up,
        );
        let client_auth = client_auth::parse_client_auth(&r, &rest.tls)?;
        admin_needs_client_auth(&edge, &client_auth)?;
        let update = update::parse(&r)?;
        let ignored_keys = r.unread_paths();
        Ok(Config {
            origin: origin.to_string(),
            source: None,
            log_level,
            rest,
            endpoints,
            kv,
            edge,
            start_task,
            features,
            client_auth,
            update,
            ignored_keys,
        })
    }

    /// The data directory: `--data-dir`, else `ButlerEdge.dataDir`, else systemd's
    /// `$STATE_DIRECTORY`, else `./butler-edge-data`.
    pub fn data_dir(&self, cli_override: Option<&Path>) -> PathBuf {
        if let Some(dir) = cli_override {
            return dir.to_path_buf();
        }
        if let Some(dir) = &self.edge.data_dir {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several colon-separated directories; the first is ours.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            if !first.is_empty() {
                return PathBuf::from(first);
            }
        }
        PathBuf::from("butler-edge-data")
    }
}

/// Without client authentication every caller may use every enabled group, so enabling
/// `admin` would let anyone who reaches the port replace the store.
fn admin_needs_client_auth(
    edge: &EdgeConfig,
    client_auth: &ClientAuthConfig,
) -> Result<(), ConfigError> {
    if edge.admin_endpoint && !client_auth.enable {
        return Err(ConfigError::Other(
            "ButlerEdge.endpointsEnable.admin: true needs client authentication, or any caller \
             could export or replace the store: set ButlerEdge.clientAuth.enable: true (client \
             certificates or API tokens) and list admin in the endpoints of the clients that \
             administer the appliance, or set admin: false"
                .to_string(),
        ));
    }
    Ok(())
}

fn millis(r: &Reader, path: &str, default_ms: u64) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(
        r.integer_or(path, 1, 86_400_000, default_ms)?,
    ))
}

fn bytes(r: &Reader, path: &str, default: u64) -> Result<usize, ConfigError> {
    Ok(r.integer_or(path, 1, 1 << 30, default)? as usize)
}

fn parse_edge(r: &Reader) -> Result<EdgeConfig, ConfigError> {
    let max_body_bytes = bytes(r, "ButlerEdge.limits.maxBodyBytes", 1 << 20)?;
    // Butler takes any namespace, key and value that fit in its 1 MB body, so by default
    // the only bound on each is the body limit; a site can set smaller ones.
    let part = |path: &str| bytes(r, path, max_body_bytes as u64);
    let limits = Limits {
        max_body_bytes,
        max_body_bytes_in_flight: bytes(r, "ButlerEdge.limits.maxBodyBytesInFlight", 64 << 20)?,
        max_streams_per_connection: r.integer_or(
            "ButlerEdge.limits.maxStreamsPerConnection",
            1,
            1000,
            32,
        )? as u32,
        header_read_timeout: millis(r, "ButlerEdge.limits.headerReadTimeoutMs", 10_000)?,
        body_read_timeout: millis(r, "ButlerEdge.limits.bodyReadTimeoutMs", 30_000)?,
        max_connections: r.integer_or("ButlerEdge.limits.maxConnections", 1, 1_000_000, 10_000)?
            as usize,
        idle_timeout: millis(r, "ButlerEdge.limits.idleTimeoutMs", 60_000)?,
        max_namespace_bytes: part("ButlerEdge.limits.maxNamespaceBytes")?,
        max_key_bytes: part("ButlerEdge.limits.maxKeyBytes")?,
        max_value_bytes: part("ButlerEdge.limits.maxValueBytes")?,
        max_restore_bytes: r.integer_or(
            "ButlerEdge.limits.maxRestoreBytes",
            1,
            1 << 50,
            4 << 30,
        )?,
    };
    if limits.max_body_bytes_in_flight < limits.max_body_bytes {
        return Err(ConfigError::Other(format!(
            "ButlerEdge.limits.maxBodyBytesInFlight: {} is less than \
             ButlerEdge.limits.maxBodyBytes ({}), so no body of the largest allowed size could \
             ever be received; raise it or lower maxBodyBytes",
            limits.max_body_bytes_in_flight, limits.max_body_bytes
        )));
    }
    Ok(EdgeConfig {
        data_dir: r.path("ButlerEdge.dataDir")?,
        limits,
        shutdown_timeout: millis(r, "ButlerEdge.shutdownTimeoutMs", 10_000)?,
        min_free_disk_bytes: r.integer_or("ButlerEdge.minFreeDiskBytes", 0, 1 << 60, 64 << 20)?,
        health_endpoint: r.bool("ButlerEdge.endpointsEnable.health", false)?,
        metrics_endpoint: r.bool("ButlerEdge.endpointsEnable.metrics", false)?,
        admin_endpoint: r.bool("ButlerEdge.endpointsEnable.admin", false)?,
        allowed_origins: r
            .string_list("ButlerEdge.allowedOrigins")?
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect(),
        allowed_hosts: r
            .string_list("ButlerEdge.allowedHosts")?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::embedded().unwrap();
        assert!(c.rest.enable);
        assert_eq!(c.rest.port, 8080);
        assert!(c.kv.enable);
        assert_eq!(c.kv.max_keys_per_namespace, 1000);
        assert!(c.ignored_keys.is_empty(), "{:?}", c.ignored_keys);
        // Start-task is served (503 naming what to fill in), not a 404.
        assert!(c.endpoints.sense_start_task && c.features.start_task_served());
        assert!(c.features.start_task_not_set_up().is_some());
        assert_eq!(
            c.start_task.starter.request_deadline,
            Duration::from_secs(10)
        );
        // Anything that fits in the body fits in the store, as in Butler.
        let l = &c.edge.limits;
        assert_eq!(l.max_body_bytes, 1 << 20);
        assert_eq!(
            (l.max_namespace_bytes, l.max_key_bytes, l.max_value_bytes),
            (1 << 20, 1 << 20, 1 << 20)
        );
    }

    #[test]
    fn bad_port_names_path_value_and_expectation() {
        let e = Config::parse("Butler:\n  restServerConfig:\n    serverPort: 80800\n", "t")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "Butler.restServerConfig.serverPort: expected a port 1-65535, found \"80800\""
        );
    }

    #[test]
    fn idle_timeout_has_a_default_and_is_validated_like_the_other_limits() {
        let c = Config::parse("Butler:\n  logLevel: info\n", "t").unwrap();
        assert_eq!(c.edge.limits.idle_timeout, Duration::from_secs(60));
        let c = Config::parse(
            "Butler:\n  logLevel: info\nButlerEdge:\n  limits:\n    idleTimeoutMs: 1500\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.edge.limits.idle_timeout, Duration::from_millis(1500));
        let e = Config::parse(
            "Butler:\n  logLevel: info\nButlerEdge:\n  limits:\n    idleTimeoutMs: 0\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("ButlerEdge.limits.idleTimeoutMs: "), "{e}");
    }

    #[test]
    fn unknown_keys_are_listed_not_rejected() {
        let c = Config::parse(
            "Butler:\n  logLevel: warn\n  mqttConfig:\n    enable: false\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.log_level, LogLevel::Warn);
        assert_eq!(c.ignored_keys, vec!["Butler.mqttConfig.enable".to_string()]);
    }
}
