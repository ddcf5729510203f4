//! What `GET /metrics` reports, kept and rendered with the official Prometheus client
//! (`prometheus-client`), in the Prometheus text format 0.0.4.
//!
//! Two kinds of figures. Counted ones (requests by endpoint and status, their latency, tasks
//! started and failed, QRS unreachable) live in the library's registry and are updated where
//! they happen. Read-at-scrape ones (keys, commits, disk space, connection slots, memory,
//! runtime tasks) are read from their owners when scraped, by one [`Scraped`] collector that
//! is handed the handles it reads at start-up: nothing here reaches into the service's
//! wiring, so this module sits below the HTTP layer that serves it.
//!
//! Metric names and labels are part of the API (dashboards and alerts use them): they are
//! exactly those of the earlier hand-written renderer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::disk::DiskGuard;
use crate::kv::Store;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the latency histogram buckets: from a cached read (well under
/// a millisecond) to a slow durable commit.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Connection slots, evictions and idle closes, kept by the accept loop (`http::connections`)
/// and read at scrape.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections holding a slot now.
    pub open: AtomicU64,
    /// Newcomers waiting for a slot now.
    pub queued: AtomicU64,
    /// Idle connections closed to make room for a newcomer.
    pub evicted: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
}

/// What the read-at-scrape figures are read from; `None` for a part that is not running.
#[derive(Default)]
pub struct Sources {
    /// The key-value store, when the key-value API is served.
    pub store: Option<Store>,
    /// The free-disk guard, when it is on.
    pub disk_guard: Option<Arc<DiskGuard>>,
    /// Whether start-task is served (its counters are reported only then).
    pub start_task: bool,
    /// Where the appliance's version and slot are read (reported on an A/B appliance only).
    pub appliance: Option<crate::update::ApplianceFiles>,
}

/// An HTTP status code as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Status(u16);

impl EncodeLabelValue for Status {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{}", self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: Status,
}

/// How a request authenticated (`certificate`, `token`, `none`) and the outcome (`ok`, or the
/// reason it was refused). Never the token, nor the client.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    started: Instant,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    authentications: Family<AuthLabels, Counter>,
    tasks_started: Counter,
    tasks_failed: Counter,
    qrs_unreachable: Counter,
    /// Connection slots, evictions and idle closes, kept by the accept loop.
    pub connections: Arc<ConnectionStats>,
}

impl Metrics {
    pub fn new(sources: Sources) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // The library adds the `_total` suffix of counters and the final period of help texts.
        registry.register(
            "butler_edge_http_requests",
            "HTTP requests answered, by endpoint and status code",
            requests.clone(),
        );
        let latency: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "butler_edge_http_request_duration_seconds",
            "Time from request head to response, by endpoint",
            latency.clone(),
        );
        let authentications = Family::<AuthLabels, Counter>::default();
        registry.register(
            "butler_edge_authentications",
            "Requests authenticated with client authentication on, by method and outcome",
            authentications.clone(),
        );
        let (tasks_started, tasks_failed, qrs_unreachable) = Default::default();
        if sources.start_task {
            registry.register(
                "butler_edge_tasks_started",
                "Reload tasks QRS confirmed started",
                Counter::clone(&tasks_started),
            );
            registry.register(
                "butler_edge_tasks_failed",
                "Reload tasks QRS did not start (listed in `failed`)",
                Counter::clone(&tasks_failed),
            );
            registry.register(
                "butler_edge_qrs_unreachable",
                "Start-task requests answered 502 because QRS could not be asked",
                Counter::clone(&qrs_unreachable),
            );
        }
        let started = Instant::now();
        let connections = Arc::<ConnectionStats>::default();
        registry.register_collector(Box::new(Scraped {
            started,
            started_unix: crate::clock::unix_secs_f64(),
            connections: connections.clone(),
            store: sources.store,
            disk_guard: sources.disk_guard,
            appliance: sources.appliance,
        }));
        Metrics {
            registry,
            started,
            requests,
            latency,
            authentications,
            tasks_started,
            tasks_failed,
            qrs_unreachable,
            connections,
        }
    }

    /// Seconds since the service started.
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts the outcome of one start-task request: tasks QRS started, tasks it did not.
    pub fn tasks(&self, started: u64, failed: u64) {
        self.tasks_started.inc_by(started);
        self.tasks_failed.inc_by(failed);
    }

    /// Counts a start-task request answered 502 because QRS could not be asked.
    pub fn qrs_unreachable(&self) {
        self.qrs_unreachable.inc();
    }

    /// Counts one authentication: `method` certificate, token or none; `outcome` ok or why
    /// it was refused.
    pub fn authenticated(&self, method: &'static str, outcome: &'static str) {
        self.authentications
            .get_or_create(&AuthLabels { method, outcome })
            .inc();
    }

    /// Counts one answered request.
    pub fn observe(&self, endpoint: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                status: Status(status),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
    }

    /// The Prometheus text exposition (version 0.0.4) of everything we count.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The figures read when scraped, from the handles they belong to.
struct Scraped {
    started: Instant,
    started_unix: f64,
    connections: Arc<ConnectionStats>,
    store: Option<Store>,
    disk_guard: Option<Arc<DiskGuard>>,
    appliance: Option<crate::update::ApplianceFiles>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraped").finish_non_exhaustive()
    }
}

/// Writes one unlabelled gauge or counter (a counter's name is given without `_total`).
fn sample(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    sample(encoder, name, help, &ConstGauge::new(value))
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    sample(encoder, name, help, &ConstCounter::new(value))
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let mut build = e.encode_descriptor(
            "butler_edge_build_info",
            "Version of the running binary.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(1u64)
            .encode(build.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        gauge(
            e,
            "butler_edge_start_time_seconds",
            "Start time of the service, seconds since the Unix epoch.",
            self.started_unix,
        )?;
        gauge(
            e,
            "butler_edge_uptime_seconds",
            "Seconds since the service started.",
            self.started.elapsed().as_secs(),
        )?;
        if let Some(rss) = resident_bytes() {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss,
            )?;
        }
        self.encode_connections(e)?;
        if let Some(files) = &self.appliance {
            encode_appliance(e, files)?;
        }
        if let Some(store) = &self.store {
            encode_store(e, store)?;
        }
        if let Some(guard) = &self.disk_guard
            && let Ok(free) = guard.free_bytes()
        {
            gauge(
                e,
                "butler_edge_disk_free_bytes",
                "Free space on the data directory's file system.",
                free,
            )?;
            gauge(
                e,
                "butler_edge_disk_min_free_bytes",
                "Below this, key-value writes get 507.",
                guard.min_free_bytes(),
            )?;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Every connection, request and QRS call is a task: a count that does not fall
            // back after load is a leak.
            gauge(
                e,
                "butler_edge_runtime_alive_tasks",
                "Tasks alive in the async runtime (connections, requests, QRS calls, timers).",
                runtime.metrics().num_alive_tasks() as u64,
            )?;
        }
        Ok(())
    }
}

/// `butler_edge_appliance_info{version,slot} 1` and whether the last update was rolled back,
/// from the slots report (nothing on a plain package install).
fn encode_appliance(
    e: &mut DescriptorEncoder,
    files: &crate::update::ApplianceFiles,
) -> Result<(), std::fmt::Error> {
    use crate::update::ApplianceView;
    let (version, slot, rolled_back) = match files.view() {
        ApplianceView::Plain => return Ok(()),
        ApplianceView::NoReport { version } => (version, "unknown".to_string(), false),
        ApplianceView::Slots { version, report } => {
            (version, report.booted.slot, report.rollback.is_some())
        }
    };
    let version = version.unwrap_or_else(|| "unknown".into());
    let mut info = e.encode_descriptor(
        "butler_edge_appliance_info",
        "The appliance image's version (os-release IMAGE_VERSION) and the slot it runs from.",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    ConstGauge::new(1u64)
        .encode(info.encode_family(&[("version", version.as_str()), ("slot", slot.as_str())])?)?;
    gauge(
        e,
        "butler_edge_appliance_update_rolled_back",
        "1 when the last update failed its trial boot and the appliance went back to the previous slot.",
        u64::from(rolled_back),
    )
}

impl Scraped {
    fn encode_connections(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.connections;
        gauge(
            e,
            "butler_edge_http_connections",
            "Connections holding a slot (ButlerEdge.limits.maxConnections).",
            c.open.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "butler_edge_http_connections_waiting",
            "Accepted connections waiting for a slot.",
            c.queued.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "butler_edge_http_connections_evicted",
            "Idle connections closed to make room for a newcomer.",
            c.evicted.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "butler_edge_http_connections_idle_closed",
            "Connections closed after ButlerEdge.limits.idleTimeoutMs with no request.",
            c.idle_closed.load(Ordering::Relaxed),
        )
    }
}

fn encode_store(e: &mut DescriptorEncoder, store: &Store) -> Result<(), std::fmt::Error> {
    if let Ok((namespaces, keys)) = store.counts() {
        gauge(
            e,
            "butler_edge_kv_namespaces",
            "Key-value namespaces.",
            namespaces,
        )?;
        gauge(
            e,
            "butler_edge_kv_keys",
            "Stored keys, including expired ones not yet removed.",
            keys,
        )?;
    }
    if let Ok(meta) = std::fs::metadata(store.path()) {
        gauge(
            e,
            "butler_edge_kv_file_bytes",
            "Size of the key-value database file.",
            meta.len(),
        )?;
    }
    let stats = store.writer_stats();
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
    counter(
        e,
        "butler_edge_kv_commits",
        "Durable commits (each one fsync); operations_total / commits_total is the mean group size.",
        load(&stats.commits),
    )?;
    counter(
        e,
        "butler_edge_kv_operations",
        "Write operations committed.",
        load(&stats.operations),
    )?;
    gauge(
        e,
        "butler_edge_kv_largest_commit_group",
        "Most operations shared by one commit since start.",
        load(&stats.largest_batch),
    )?;
    counter(
        e,
        "butler_edge_kv_expired_removed",
        "Expired keys removed by the sweeper.",
        load(&stats.expired_removed),
    )
}

/// VmRSS from /proc/self/status (reported in kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
