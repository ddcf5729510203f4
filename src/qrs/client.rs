//! The QRS HTTP client: one pooled reqwest client (connections are reused), a fresh xrfkey per
//! request, and typed calls for what start-task needs.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rand::distr::Alphanumeric;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::error::{QrsError, QrsSetupError};
use super::reachability::{Reachability, ReachabilityLog};
use super::{EMPTY_SESSION_ID, QrsSettings, filter, tls};

/// Task ids per lookup request: keeps the URL well under common 8 KiB limits.
const IDS_PER_LOOKUP: usize = 50;

/// A task as QRS describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub name: String,
}

/// QRS's answer to a start call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// The task runs in this execution session.
    Started { session_id: String },
    /// QRS answered with the empty session id: the task is disabled, no scheduler is
    /// available, or its app is missing.
    NotStarted,
}

/// One execution result of a task run (QRS ExecutionResult).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionResult {
    /// QRS's numeric status.
    pub status: i64,
    /// Duration in milliseconds as QRS reports it.
    pub duration_ms: Option<u64>,
}

impl ExecutionResult {
    /// QRS's name for the status code (TaskExecutionStatus).
    pub fn status_name(&self) -> &'static str {
        status_name(self.status)
    }
    /// Whether the run has ended (successfully or not).
    pub fn is_final(&self) -> bool {
        matches!(self.status, 0 | 6 | 7 | 8 | 9 | 11 | 12)
    }
}

/// QRS's TaskExecutionStatus names.
pub fn status_name(status: i64) -> &'static str {
    match status {
        0 => "NeverStarted",
        1 => "Triggered",
        2 => "Started",
        3 => "Queued",
        4 => "AbortInitiated",
        5 => "Aborting",
        6 => "Aborted",
        7 => "FinishedSuccess",
        8 => "FinishedFail",
        9 => "Skipped",
        10 => "Retry",
        11 => "Error",
        12 => "Reset",
        _ => "Unknown",
    }
}

#[derive(Deserialize)]
struct TaskCondensed {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct TaskFull {
    id: String,
    name: String,
    #[serde(default, rename = "customProperties")]
    custom_properties: Vec<CustomPropertyValue>,
}

#[derive(Deserialize)]
struct CustomPropertyValue {
    value: String,
    definition: CustomPropertyDefinition,
}

#[derive(Deserialize)]
struct CustomPropertyDefinition {
    name: String,
}

#[derive(Deserialize)]
struct StringValue {
    value: String,
}

#[derive(Deserialize)]
struct ExecutionResultBody {
    status: i64,
    #[serde(default)]
    duration: Option<u64>,
}

/// A QRS client. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct QrsClient {
    http: reqwest::Client,
    base: String,
    host: String,
    headers: HeaderMap,
    request_timeout: Duration,
    connect_timeout: Duration,
    reachability: Arc<ReachabilityLog>,
}

impl QrsClient {
    pub fn new(settings: &QrsSettings) -> Result<QrsClient, QrsSetupError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.static_headers {
            let header_name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| QrsSetupError::Header {
                    name: name.clone(),
                    cause: e.to_string(),
                })?;
            let header_value = HeaderValue::from_str(value).map_err(|e| QrsSetupError::Header {
                name: name.clone(),
                cause: format!("value {value:?}: {e}"),
            })?;
            headers.insert(header_name, header_value);
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64);
        if settings.use_ssl {
            builder = builder.tls_backend_preconfigured(tls::client_config(settings)?);
        }
        let http = builder
            .build()
            .map_err(|e| QrsSetupError::Client(error_chain(&e)))?;
        let scheme = if settings.use_ssl { "https" } else { "http" };
        let host = match settings.host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{}]:{}", settings.host, settings.port),
            Err(_) => format!("{}:{}", settings.host, settings.port),
        };
        Ok(QrsClient {
            http,
            base: format!("{scheme}://{host}"),
            host,
            headers,
            request_timeout: settings.request_timeout,
            connect_timeout: settings.connect_timeout,
            reachability: Arc::default(),
        })
    }

    /// `host:port` of QRS, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// When QRS last answered and last could not be reached.
    pub fn reachability(&self) -> Reachability {
        self.reachability.snapshot()
    }

    /// QRS's about page (`GET /qrs/about`): a cheap authenticated call that proves QRS is
    /// there and accepts our certificate and headers.
    pub async fn about(&self) -> Result<(), QrsError> {
        self.call(Method::GET, "/qrs/about", None).await.map(|_| ())
    }

    /// The tasks among `ids` that QRS knows (`GET /qrs/task?filter=id eq a or id eq b …`).
    /// `ids` must be well-formed GUIDs.
    pub async fn tasks_by_ids(&self, ids: &[&str]) -> Result<Vec<TaskInfo>, QrsError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(IDS_PER_LOOKUP) {
            let tasks: Vec<TaskCondensed> = self
                .get_json("/qrs/task", Some(&filter::ids(chunk)))
                .await?;
            found.extend(tasks.into_iter().map(|t| TaskInfo {
                id: t.id,
                name: t.name,
            }));
        }
        Ok(found)
    }

    /// Tasks carrying `tag` (`GET /qrs/task/full?filter=tags.name eq '<tag>'`).
    pub async fn tasks_by_tag(&self, tag: &str) -> Result<Vec<TaskInfo>, QrsError> {
        let tasks: Vec<TaskFull> = self
            .get_json("/qrs/task/full", Some(&filter::tag(tag)))
            .await?;
        Ok(tasks
            .into_iter()
            .map(|t| TaskInfo {
                id: t.id,
                name: t.name,
            })
            .collect())
    }

    /// Tasks whose custom property `name` has the value `value`.
    ///
    /// QRS evaluates each condition of the filter on its own, so a task with `A=x` and `B=y`
    /// also matches a query for `A=y`; the answer is narrowed here to tasks where one custom
    /// property has both the name and the value.
    pub async fn tasks_by_custom_property(
        &self,
        name: &str,
        value: &str,
    ) -> Result<Vec<TaskInfo>, QrsError> {
        let tasks: Vec<TaskFull> = self
            .get_json(
                "/qrs/task/full",
                Some(&filter::custom_property(name, value)),
            )
            .await?;
        Ok(tasks
            .into_iter()
            .filter(|t| {
                t.custom_properties.iter().any(|cp| {
                    cp.definition.name.eq_ignore_ascii_case(name)
                        && cp.value.eq_ignore_ascii_case(value)
                })
            })
            .map(|t| TaskInfo {
                id: t.id,
                name: t.name,
            })
            .collect())
    }

    /// Starts a task and returns QRS's answer (`POST /qrs/task/{id}/start/synchronous`).
    pub async fn start_task(&self, task_id: &str) -> Result<StartOutcome, QrsError> {
        let path = format!("/qrs/task/{task_id}/start/synchronous");
        let (endpoint, body) = self.call(Method::POST, &path, None).await?;
        let answer: StringValue = parse_json(&endpoint, &body)?;
        if answer.value == EMPTY_SESSION_ID {
            Ok(StartOutcome::NotStarted)
        } else {
            Ok(StartOutcome::Started {
                session_id: answer.value,
            })
        }
    }

    /// Whether an execution session still exists, i.e. the task is still running
    /// (`GET /qrs/executionsession/{id}`; QRS answers 404 once it has finished).
    pub async fn execution_running(&self, session_id: &str) -> Result<bool, QrsError> {
        let path = format!("/qrs/executionsession/{session_id}");
        match self.call(Method::GET, &path, None).await {
            Ok(_) => Ok(true),
            Err(QrsError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The execution results of a session, latest retry last
    /// (`GET /qrs/executionresult?filter=ExecutionId eq <id>`).
    pub async fn execution_results(
        &self,
        session_id: &str,
    ) -> Result<Vec<ExecutionResult>, QrsError> {
        let results: Vec<ExecutionResultBody> = self
            .get_json(
                "/qrs/executionresult",
                Some(&filter::execution_id(session_id)),
            )
            .await?;
        Ok(results
            .into_iter()
            .map(|r| ExecutionResult {
                status: r.status,
                duration_ms: r.duration,
            })
            .collect())
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        filter: Option<&str>,
    ) -> Result<T, QrsError> {
        // A GET changes nothing, so one that broke on a connection QRS had just closed
        // (e.g. a reused keep-alive connection across a QRS restart) is sent once more.
        let (endpoint, body) = match self.call(Method::GET, path, filter).await {
            Err(QrsError::Broken { .. }) => self.call(Method::GET, path, filter).await?,
            other => other?,
        };
        parse_json(&endpoint, &body)
    }

    /// Sends one request with a fresh xrfkey and the static headers; returns the endpoint
    /// description (for messages) and the body of a 2xx answer. Every outcome is recorded
    /// for `/health`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        filter: Option<&str>,
    ) -> Result<(String, bytes::Bytes), QrsError> {
        let outcome = self.send(method, path, filter).await;
        self.reachability.record(&outcome, crate::clock::now_ms());
        outcome
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        filter: Option<&str>,
    ) -> Result<(String, bytes::Bytes), QrsError> {
        let endpoint = match filter {
            Some(f) => format!("{method} {path}?filter={f}"),
            None => format!("{method} {path}"),
        };
        let xrfkey = new_xrfkey();
        let mut url = format!("{}{}?xrfkey={}", self.base, path, xrfkey);
        if let Some(f) = filter {
            url.push_str("&filter=");
            url.push_str(&filter::encode(f));
        }
        let mut request = self
            .http
            .request(method.clone(), url)
            .headers(self.headers.clone())
            .header("X-Qlik-Xrfkey", &xrfkey)
            .header(reqwest::header::ACCEPT, "application/json");
        if method == Method::POST {
            request = request.body(Vec::new());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.classify(&endpoint, e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.classify(&endpoint, e))?;
        if !status.is_success() {
            return Err(QrsError::Status {
                endpoint,
                status: status.as_u16(),
                message: qrs_message(status, &body),
            });
        }
        Ok((endpoint, body))
    }

    fn classify(&self, endpoint: &str, e: reqwest::Error) -> QrsError {
        // The endpoint is named already; the URL would add only the xrfkey.
        let e = e.without_url();
        let host = self.host.clone();
        let endpoint = endpoint.to_string();
        if let Some(tls_error) = find_rustls_error(&e) {
            let name = self
                .host
                .rsplit_once(':')
                .map_or(self.host.as_str(), |(h, _)| h);
            return QrsError::Tls {
                host,
                endpoint,
                cause: tls::explain(tls_error, name.trim_matches(['[', ']'])),
            };
        }
        if e.is_connect() {
            let cause = if e.is_timeout() {
                format!(
                    "no connection within the connect timeout of {} ms",
                    self.connect_timeout.as_millis()
                )
            } else {
                error_chain(&e)
            };
            return QrsError::Unreachable {
                host,
                endpoint,
                cause,
            };
        }
        if e.is_timeout() {
            return QrsError::Timeout {
                host,
                endpoint,
                timeout_ms: self.request_timeout.as_millis(),
            };
        }
        QrsError::Broken {
            host,
            endpoint,
            cause: error_chain(&e),
        }
    }
}

/// A random 16-character alphanumeric key, as QRS requires.
fn new_xrfkey() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

fn parse_json<T: for<'de> Deserialize<'de>>(endpoint: &str, body: &[u8]) -> Result<T, QrsError> {
    serde_json::from_slice(body).map_err(|e| QrsError::BadBody {
        endpoint: endpoint.to_string(),
        detail: format!("{e}; body starts {:?}", snippet(body)),
    })
}

/// QRS's error message from an error body (text, or JSON with a message), else the reason.
fn qrs_message(status: StatusCode, body: &[u8]) -> String {
    let text = snippet(body);
    if text.trim().is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string();
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body)
        && let Some(serde_json::Value::String(m)) = map.get("message")
    {
        return m.clone();
    }
    text.trim().to_string()
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

/// The causes in an error chain, joined, without repeating a message already included.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// Finds a rustls error in a chain. io::Error hides its inner error from `source()`, and
/// connectors box errors, so both are unwrapped explicitly.
fn find_rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    let mut depth = 0;
    while let Some(err) = current {
        depth += 1;
        if depth > 32 {
            return None;
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            current = Some(inner);
            continue;
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xrfkeys_are_16_alphanumerics_and_fresh() {
        let a = new_xrfkey();
        let b = new_xrfkey();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
