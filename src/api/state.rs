//! What every request handler can reach: the parsed configuration and the
//! services built from it. Built once at start-up.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::disk::DiskGuard;
use crate::http::body::BodyBudget;
use crate::kv::Store;
use crate::metrics::Metrics;
use crate::tasks::StartService;

pub struct AppState {
    pub config: Arc<Config>,
    /// The key-value store when it is on (`Features::kv_store_on`; served or not).
    pub store: Option<Store>,
    /// `None` unless start-task is ready (`Features::start_task_ready`).
    pub start_task: Option<StartService>,
    /// `None` when the key-value store or the free-disk guard is disabled.
    pub disk_guard: Option<Arc<DiskGuard>>,
    /// Request counters and latency histograms for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// The memory all request bodies together may hold.
    pub body_budget: BodyBudget,
    /// Where update bundles and the installer's handoff files go (`<data dir>/update`).
    pub update_dir: PathBuf,
    /// Held while an update is received and installed: one at a time.
    pub update_lock: tokio::sync::Mutex<()>,
}
