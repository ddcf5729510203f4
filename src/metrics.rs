//! Request counters and latency histograms, rendered with the store's own counters in the
//! Prometheus text format for `GET /metrics`.
//!
//! A handful of label combinations (endpoint × status) is all an appliance ever sees, so a
//! mutex-guarded map is simpler than a metrics crate and costs nothing next to a durable
//! commit. Everything else (keys, commits, disk space, memory) is read when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::http::connections::ConnectionStats;
use crate::state::AppState;

/// Upper bounds (seconds) of the latency histogram buckets: from a cached read (well under
/// a millisecond) to a slow durable commit.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

pub struct Metrics {
    started: Instant,
    started_unix: f64,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Connection slots, evictions and idle closes, kept by the accept loop.
    pub connections: Arc<ConnectionStats>,
    tasks_started: AtomicU64,
    tasks_failed: AtomicU64,
    qrs_unreachable: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(BTreeMap::new()),
            connections: Arc::default(),
            tasks_started: AtomicU64::new(0),
            tasks_failed: AtomicU64::new(0),
            qrs_unreachable: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Seconds since the service started.
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts the outcome of one start-task request: tasks QRS started, tasks it did not.
    pub fn tasks(&self, started: u64, failed: u64) {
        self.tasks_started.fetch_add(started, Ordering::Relaxed);
        self.tasks_failed.fetch_add(failed, Ordering::Relaxed);
    }

    /// Counts a start-task request answered 502 because QRS could not be asked.
    pub fn qrs_unreachable(&self) {
        self.qrs_unreachable.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub fn observe(&self, endpoint: &'static str, status: u16, seconds: f64) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((endpoint, status)).or_insert(0) += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            let h = latency.entry(endpoint).or_default();
            let slot = BUCKETS
                .iter()
                .position(|&le| seconds <= le)
                .unwrap_or(BUCKETS.len());
            h.counts[slot] += 1;
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// The Prometheus text exposition (version 0.0.4) of everything we count.
    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::new();
        let o = &mut out;
        header(
            o,
            "butler_edge_build_info",
            "gauge",
            "Version of the running binary.",
        );
        line(
            o,
            "butler_edge_build_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
            1,
        );
        header(
            o,
            "butler_edge_start_time_seconds",
            "gauge",
            "Start time of the service, seconds since the Unix epoch.",
        );
        let _ = writeln!(o, "butler_edge_start_time_seconds {:.3}", self.started_unix);
        header(
            o,
            "butler_edge_uptime_seconds",
            "gauge",
            "Seconds since the service started.",
        );
        line(o, "butler_edge_uptime_seconds", "", self.uptime_seconds());
        if let Some(rss) = resident_bytes() {
            header(
                o,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
            );
            line(o, "process_resident_memory_bytes", "", rss);
        }

        header(
            o,
            "butler_edge_http_requests_total",
            "counter",
            "HTTP requests answered, by endpoint and status code.",
        );
        let requests = self.requests.lock().map(|r| r.clone()).unwrap_or_default();
        for ((endpoint, status), n) in &requests {
            line(
                o,
                "butler_edge_http_requests_total",
                &format!("endpoint=\"{endpoint}\",status=\"{status}\""),
                *n,
            );
        }
        header(
            o,
            "butler_edge_http_request_duration_seconds",
            "histogram",
            "Time from request head to response, by endpoint.",
        );
        let latency = self.latency.lock().map(|l| l.clone()).unwrap_or_default();
        for (endpoint, h) in &latency {
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                line(
                    o,
                    "butler_edge_http_request_duration_seconds_bucket",
                    &format!("endpoint=\"{endpoint}\",le=\"{le}\""),
                    cumulative,
                );
            }
            cumulative += h.counts[BUCKETS.len()];
            line(
                o,
                "butler_edge_http_request_duration_seconds_bucket",
                &format!("endpoint=\"{endpoint}\",le=\"+Inf\""),
                cumulative,
            );
            let _ = writeln!(
                o,
                "butler_edge_http_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}",
                h.sum
            );
            line(
                o,
                "butler_edge_http_request_duration_seconds_count",
                &format!("endpoint=\"{endpoint}\""),
                h.count,
            );
        }

        let connections = &self.connections;
        for (name, kind, help, value) in [
            (
                "butler_edge_http_connections",
                "gauge",
                "Connections holding a slot (ButlerEdge.limits.maxConnections).",
                &connections.open,
            ),
            (
                "butler_edge_http_connections_waiting",
                "gauge",
                "Accepted connections waiting for a slot.",
                &connections.queued,
            ),
            (
                "butler_edge_http_connections_evicted_total",
                "counter",
                "Idle connections closed to make room for a newcomer.",
                &connections.evicted,
            ),
            (
                "butler_edge_http_connections_idle_closed_total",
                "counter",
                "Connections closed after ButlerEdge.limits.idleTimeoutMs with no request.",
                &connections.idle_closed,
            ),
        ] {
            header(o, name, kind, help);
            line(o, name, "", value.load(Ordering::Relaxed));
        }

        if state.start_task.is_some() {
            header(
                o,
                "butler_edge_tasks_started_total",
                "counter",
                "Reload tasks QRS confirmed started.",
            );
            line(
                o,
                "butler_edge_tasks_started_total",
                "",
                self.tasks_started.load(Ordering::Relaxed),
            );
            header(
                o,
                "butler_edge_tasks_failed_total",
                "counter",
                "Reload tasks QRS did not start (listed in `failed`).",
            );
            line(
                o,
                "butler_edge_tasks_failed_total",
                "",
                self.tasks_failed.load(Ordering::Relaxed),
            );
            header(
                o,
                "butler_edge_qrs_unreachable_total",
                "counter",
                "Start-task requests answered 502 because QRS could not be asked.",
            );
            line(
                o,
                "butler_edge_qrs_unreachable_total",
                "",
                self.qrs_unreachable.load(Ordering::Relaxed),
            );
        }
        if let Some(store) = &state.store {
            if let Ok((namespaces, keys)) = store.counts() {
                header(
                    o,
                    "butler_edge_kv_namespaces",
                    "gauge",
                    "Key-value namespaces.",
                );
                line(o, "butler_edge_kv_namespaces", "", namespaces);
                header(
                    o,
                    "butler_edge_kv_keys",
                    "gauge",
                    "Stored keys, including expired ones not yet removed.",
                );
                line(o, "butler_edge_kv_keys", "", keys);
            }
            if let Ok(meta) = std::fs::metadata(store.path()) {
                header(
                    o,
                    "butler_edge_kv_file_bytes",
                    "gauge",
                    "Size of the key-value database file.",
                );
                line(o, "butler_edge_kv_file_bytes", "", meta.len());
            }
            use Ordering::Relaxed;
            let stats = store.writer_stats();
            header(
                o,
                "butler_edge_kv_commits_total",
                "counter",
                "Durable commits (each one fsync); operations_total / commits_total is the mean group size.",
            );
            line(
                o,
                "butler_edge_kv_commits_total",
                "",
                stats.commits.load(Relaxed),
            );
            header(
                o,
                "butler_edge_kv_operations_total",
                "counter",
                "Write operations committed.",
            );
            line(
                o,
                "butler_edge_kv_operations_total",
                "",
                stats.operations.load(Relaxed),
            );
            header(
                o,
                "butler_edge_kv_largest_commit_group",
                "gauge",
                "Most operations shared by one commit since start.",
            );
            line(
                o,
                "butler_edge_kv_largest_commit_group",
                "",
                stats.largest_batch.load(Relaxed),
            );
            header(
                o,
                "butler_edge_kv_expired_removed_total",
                "counter",
                "Expired keys removed by the sweeper.",
            );
            line(
                o,
                "butler_edge_kv_expired_removed_total",
                "",
                stats.expired_removed.load(Relaxed),
            );
        }
        if let Some(guard) = &state.disk_guard
            && let Ok(free) = guard.free_bytes()
        {
            header(
                o,
                "butler_edge_disk_free_bytes",
                "gauge",
                "Free space on the data directory's file system.",
            );
            line(o, "butler_edge_disk_free_bytes", "", free);
            header(
                o,
                "butler_edge_disk_min_free_bytes",
                "gauge",
                "Below this, key-value writes get 507.",
            );
            line(
                o,
                "butler_edge_disk_min_free_bytes",
                "",
                guard.min_free_bytes(),
            );
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Every connection, request and QRS call is a task: a count that does not fall
            // back after load is a leak.
            header(
                o,
                "butler_edge_runtime_alive_tasks",
                "gauge",
                "Tasks alive in the async runtime (connections, requests, QRS calls, timers).",
            );
            line(
                o,
                "butler_edge_runtime_alive_tasks",
                "",
                runtime.metrics().num_alive_tasks() as u64,
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// VmRSS from /proc/self/status (reported in kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
