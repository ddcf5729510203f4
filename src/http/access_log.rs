//! One record per answered request: the metrics counters and histograms, and a log event.
//!
//! The event's level follows what an admin needs to find later. Requests that change
//! something or start a task (`kvWrite`, `startTask`) are logged at info with `CLIENT`,
//! `STATUS`, `ELAPSED_MS` and `TASK_ID` or `NAMESPACE`, so under journald
//! `journalctl -u butler-edge TASK_ID=…` shows who asked for a task and what they were told
//! beside the start itself. Answers of 500 and above are warnings whatever the endpoint.
//! Reads, pings and scrapes are at debug: they are most of the traffic and tell little.

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;

use super::decode;
use super::router::{EndpointGroup, Route};
use crate::metrics::Metrics;

/// What is known of a request once it has been answered.
pub struct Answered<'a> {
    pub peer: SocketAddr,
    pub client: &'a str,
    /// The effective method (after `X-HTTP-Method-Override`).
    pub method: &'a Method,
    pub path: &'a str,
    pub status: u16,
    pub elapsed: Duration,
}

pub fn record(metrics: &Metrics, answered: &Answered<'_>) {
    let segments = decode::path_segments(answered.path).ok();
    let route = segments
        .as_deref()
        .and_then(|segments| Route::recognise(answered.method, segments));
    let endpoint = route.as_ref().map_or("unknown", Route::name);
    metrics.observe(endpoint, answered.status, answered.elapsed.as_secs_f64());

    // Whole microseconds, so the field reads `0.709`, not `0.7093200000000001`.
    let elapsed_ms = answered.elapsed.as_micros() as f64 / 1000.0;
    let task_id = match &route {
        Some(Route::StartTask { task_id }) => Some(*task_id),
        _ => None,
    };
    let namespace = route.as_ref().and_then(Route::namespace);
    let mutates = matches!(
        route.as_ref().map(Route::group),
        Some(EndpointGroup::KvWrite | EndpointGroup::StartTask)
    );
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                $level,
                peer = %answered.peer,
                client = %answered.client,
                method = %answered.method,
                path = %answered.path,
                endpoint,
                task_id,
                namespace,
                status = answered.status,
                elapsed_ms,
                "request"
            )
        };
    }
    if answered.status >= 500 {
        event!(tracing::Level::WARN);
    } else if mutates {
        event!(tracing::Level::INFO);
    } else {
        event!(tracing::Level::DEBUG);
    }
}
