//! Configuration of the start-task endpoint: Butler's `configQRS`, `cert` and
//! `startTaskFilter` sections, and our `ButlerEdge.qrs` tuning.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{ConfigError, Reader};
use crate::qrs::QrsSettings;
use crate::tasks::{StartTaskPolicy, StarterSettings};

#[derive(Debug, Clone)]
pub struct StartTaskConfig {
    pub qrs: QrsSettings,
    /// `Butler.startTaskFilter`, as the policy applied to every caller.
    pub policy: StartTaskPolicy,
    pub starter: StarterSettings,
    /// How long an `Idempotency-Key` answer is kept (`ButlerEdge.qrs.idempotencyRetentionMs`).
    pub idempotency_retention: Duration,
    /// How often QRS is probed when no call reached it (`ButlerEdge.qrs.healthCheckIntervalMs`,
    /// `None` when 0): keeps `/health`'s "QRS last seen" current between starts.
    pub probe_interval: Option<Duration>,
}

fn millis(r: &Reader, path: &str, default_ms: u64) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(r.integer_or(
        path,
        1,
        30 * 86_400_000,
        default_ms,
    )?))
}

/// A required text value when the endpoint is enabled; a clear error naming the key
/// otherwise. Butler's template ships `<path/to/…>` placeholders, which are refused too.
fn required(r: &Reader, path: &str, what: &str) -> Result<String, ConfigError> {
    match r.string(path)? {
        Some(s) if !(s.trim().is_empty() || is_placeholder(&s)) => Ok(s),
        Some(s) => Err(ConfigError::invalid(path, what, &Value::String(s))),
        None => Err(ConfigError::Invalid {
            path: path.to_string(),
            expected: what.to_string(),
            found: "nothing (the key is missing)".to_string(),
        }),
    }
}

fn is_placeholder(s: &str) -> bool {
    s.starts_with('<') && s.ends_with('>')
}

/// Parses the start-task settings; `enabled` is `restServerEndpointsEnable.senseStartTask`.
/// Also returns why QRS is not set up yet, when the endpoint is enabled without a QRS host
/// (the service then runs and start-task answers 503 with that text: see
/// [`super::StartTaskMode::NotSetUp`]).
pub fn parse(r: &Reader, enabled: bool) -> Result<(StartTaskConfig, Option<String>), ConfigError> {
    // Read every key even when disabled, so their types are checked and they are not
    // listed as ignored.
    let authentication = r.string("Butler.configQRS.authentication")?;
    let host = r.string("Butler.configQRS.host")?;
    let port = r.port("Butler.configQRS.port", 4242)?;
    let use_ssl = r.bool("Butler.configQRS.useSSL", true)?;
    let reject_unauthorized = r.bool("Butler.configQRS.rejectUnauthorized", true)?;
    let static_headers = name_value_list(r, "Butler.configQRS.headers.static", false)?;
    let cert_paths = (
        r.string("Butler.cert.clientCert")?,
        r.string("Butler.cert.clientCertKey")?,
        r.string("Butler.cert.clientCertCA")?,
    );
    let policy = parse_filter(r)?;
    let tuning = parse_tuning(r)?;

    let mut qrs = QrsSettings {
        host: host.clone().unwrap_or_default(),
        port,
        use_ssl,
        static_headers,
        client_cert: PathBuf::from(cert_paths.0.unwrap_or_default()),
        client_key: PathBuf::from(cert_paths.1.unwrap_or_default()),
        root_ca: PathBuf::from(cert_paths.2.unwrap_or_default()),
        reject_unauthorized,
        connect_timeout: tuning.connect_timeout,
        request_timeout: tuning.request_timeout,
    };
    let not_set_up = not_set_up(host.as_deref(), enabled);
    if enabled && not_set_up.is_none() {
        validate_ready(r, &mut qrs, authentication.as_deref())?;
    }
    let config = StartTaskConfig {
        qrs,
        policy,
        starter: tuning.starter,
        idempotency_retention: tuning.idempotency_retention,
        probe_interval: tuning.probe_interval,
    };
    Ok((config, not_set_up))
}

/// A list of `{name, value}` entries with text values (numbers, and with `allow_bool`
/// booleans, in their text form), each error naming the entry.
fn name_value_list(
    r: &Reader,
    path: &str,
    allow_bool: bool,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, item) in r.list(path)?.iter().enumerate() {
        let field = |name: &str| match item.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) if allow_bool => Ok(b.to_string()),
            other => Err(ConfigError::invalid(
                &format!("{path}[{i}].{name}"),
                "a text value",
                other.unwrap_or(&Value::Null),
            )),
        };
        out.push((field("name")?, field("value")?));
    }
    Ok(out)
}

/// `Butler.startTaskFilter`: the allow list applied to every caller.
fn parse_filter(r: &Reader) -> Result<StartTaskPolicy, ConfigError> {
    let enabled = r.bool("Butler.startTaskFilter.enable", false)?;
    let task_ids = r.string_list("Butler.startTaskFilter.allowTask.taskId")?;
    let tags = r.string_list("Butler.startTaskFilter.allowTask.tag")?;
    let custom_properties =
        name_value_list(r, "Butler.startTaskFilter.allowTask.customProperty", true)?;
    Ok(StartTaskPolicy {
        enabled,
        task_ids: task_ids.into_iter().collect(),
        tags: tags.into_iter().collect(),
        custom_properties: custom_properties.into_iter().collect(),
    })
}

/// `ButlerEdge.qrs`: timeouts, concurrency, waiting, idempotency and the health probe.
struct Tuning {
    connect_timeout: Duration,
    request_timeout: Duration,
    starter: StarterSettings,
    idempotency_retention: Duration,
    probe_interval: Option<Duration>,
}

fn parse_tuning(r: &Reader) -> Result<Tuning, ConfigError> {
    let connect_timeout = millis(r, "ButlerEdge.qrs.connectTimeoutMs", 5_000)?;
    let request_timeout = millis(r, "ButlerEdge.qrs.requestTimeoutMs", 15_000)?;
    // Butler's callers are promised an answer within 15 s; 10 s (Butler's proxy timeout)
    // leaves room for the key-value commit and the answer itself.
    let request_deadline = millis(r, "ButlerEdge.qrs.requestDeadlineMs", 10_000)?;
    let max_concurrent_calls =
        r.integer_or("ButlerEdge.qrs.maxConcurrentCalls", 1, 1024, 16)? as usize;
    let max_items_per_request =
        r.integer_or("ButlerEdge.qrs.maxItemsPerRequest", 1, 100_000, 100)? as usize;
    let wait_timeout = millis(r, "ButlerEdge.qrs.waitTimeoutMs", 300_000)?;
    let wait_poll_interval = millis(r, "ButlerEdge.qrs.waitPollIntervalMs", 1_000)?;
    let idempotency_retention = millis(r, "ButlerEdge.qrs.idempotencyRetentionMs", 86_400_000)?;
    let probe_interval_ms = r.integer_or(
        "ButlerEdge.qrs.healthCheckIntervalMs",
        0,
        86_400_000,
        60_000,
    )?;
    Ok(Tuning {
        connect_timeout,
        request_timeout,
        starter: StarterSettings {
            max_concurrent_calls,
            max_items_per_request,
            request_deadline,
            wait_timeout,
            wait_poll_interval,
        },
        idempotency_retention,
        probe_interval: (probe_interval_ms > 0).then(|| Duration::from_millis(probe_interval_ms)),
    })
}

/// Enabled with no QRS host at all is a half-finished set-up, not a mistake: the appliance
/// ships that way so that an admin only has to fill in QRS. Anything QRS-related that *is*
/// written must be right, though ([`validate_ready`]).
fn not_set_up(host: Option<&str>, enabled: bool) -> Option<String> {
    match host {
        Some(h) if !(h.trim().is_empty() || is_placeholder(h)) => None,
        _ if enabled => Some(format!(
            "the start-task endpoint is enabled but QRS is not set up yet: Butler.configQRS.host \
             is {}. Fill in Butler.configQRS (host, headers) and Butler.cert (Sense's exported \
             client.pem, client_key.pem, root.pem), check with `butler-edge check-config`, \
             and restart butler-edge",
            match host {
                Some(h) => format!("{h:?}"),
                None => "missing".to_string(),
            }
        )),
        _ => None,
    }
}

/// With start-task enabled and QRS named, everything QRS needs must be there and usable.
fn validate_ready(
    r: &Reader,
    qrs: &mut QrsSettings,
    authentication: Option<&str>,
) -> Result<(), ConfigError> {
    if let Some(a) = authentication
        && a != "certificates"
    {
        return Err(ConfigError::invalid(
            "Butler.configQRS.authentication",
            "certificates (the only QRS authentication butler-edge supports)",
            &Value::String(a.to_string()),
        ));
    }
    qrs.host = required(
        r,
        "Butler.configQRS.host",
        "the host name of the Sense server running QRS",
    )?;
    if qrs.use_ssl {
        qrs.client_cert = required(
            r,
            "Butler.cert.clientCert",
            "the path of Sense's exported client.pem",
        )?
        .into();
        qrs.client_key = required(
            r,
            "Butler.cert.clientCertKey",
            "the path of Sense's exported client_key.pem",
        )?
        .into();
        if qrs.reject_unauthorized {
            qrs.root_ca = required(
                r,
                "Butler.cert.clientCertCA",
                "the path of Sense's exported root.pem (or set Butler.configQRS.rejectUnauthorized: false)",
            )?
            .into();
        }
    }
    if !qrs
        .static_headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("X-Qlik-User"))
    {
        return Err(ConfigError::Invalid {
            path: "Butler.configQRS.headers.static".to_string(),
            expected: "an X-Qlik-User header (e.g. name: X-Qlik-User, value: UserDirectory=Internal;UserId=sa_repository)".to_string(),
            found: "no X-Qlik-User entry".to_string(),
        });
    }
    Ok(())
}
