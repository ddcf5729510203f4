//! What every request handler can reach: the parsed configuration and the
//! services built from it. Built once at start-up.

use std::sync::Arc;

use crate::config::Config;
use crate::disk::DiskGuard;
use crate::http::body::BodyBudget;
use crate::kv::Store;
use crate::kv::idempotency::IdempotencyStore;
use crate::metrics::Metrics;
use crate::tasks::{StartTaskPolicy, Starter};

pub struct AppState {
    pub config: Arc<Config>,
    /// `None` when the key-value store is disabled in the config.
    pub store: Option<Store>,
    /// `None` when the start-task endpoint is disabled in the config.
    pub start_task: Option<StartTaskState>,
    /// `None` when the key-value store or the free-disk guard is disabled.
    pub disk_guard: Option<Arc<DiskGuard>>,
    /// Request counters and latency histograms for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// The memory all request bodies together may hold.
    pub body_budget: BodyBudget,
}

/// What the start-task endpoint needs.
pub struct StartTaskState {
    pub starter: Starter,
    /// `Butler.startTaskFilter`, applied to every caller; a client's own allow-list
    /// (`ButlerEdge.clientAuth.clients[].startTask`) narrows it further.
    pub policy: StartTaskPolicy,
    pub idempotency: IdempotencyStore,
}
