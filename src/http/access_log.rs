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

use super::handler::RouteInfo;
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
    /// The route the router recognised (`None`: `unknown`).
    pub route: Option<&'a RouteInfo>,
}

pub fn record(metrics: &Metrics, answered: &Answered<'_>) {
    let route = answered.route;
    let endpoint = route.map_or("unknown", |r| r.endpoint);
    metrics.observe(endpoint, answered.status, answered.elapsed.as_secs_f64());

    // Whole microseconds, so the field reads `0.709`, not `0.7093200000000001`.
    let elapsed_ms = answered.elapsed.as_micros() as f64 / 1000.0;
    let task_id = route.and_then(|r| r.task_id.as_deref());
    let namespace = route.and_then(|r| r.namespace.as_deref());
    let mutates = route.is_some_and(|r| r.mutates);
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
