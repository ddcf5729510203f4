//! The contract between the transport and the endpoints: the server hands each request and
//! its caller's permissions to a [`Handler`], which answers with a [`Handled`].
//!
//! The HTTP layer owns connections, TLS handshakes, limits and the access log, and knows no
//! endpoint; the router in `api` implements [`Handler`]. So imports point one way: `api`
//! uses `http`'s responses and error map, `http` never names `api` (the wiring in `app`
//! joins the two).

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::response::ResponseBody;
use crate::authz::Access;

/// The address a request came from, in its extensions (set by the server for every
/// request): without client certificates it is what tells callers apart.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Answers requests. One instance serves every connection.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from a caller with the permissions `access`.
    fn handle(
        &self,
        request: Request<Incoming>,
        access: &Access,
    ) -> impl Future<Output = Handled> + Send;
}

/// One answered request, with what the access log and the metrics need to know about it.
pub struct Handled {
    pub response: Response<ResponseBody>,
    /// The effective method (after `X-HTTP-Method-Override`).
    pub method: Method,
    /// The route the request was recognised as, if any (`None` is logged as `unknown`).
    pub route: Option<RouteInfo>,
}

/// What the route table says about a recognised request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The route's name: the `endpoint` label of the request metrics and log field.
    pub endpoint: &'static str,
    /// Whether it changes something (logged at info level).
    pub mutates: bool,
    /// The start-task path's task id (log field `TASK_ID`).
    pub task_id: Option<String>,
    /// The key-value namespace read or written (log field `NAMESPACE`).
    pub namespace: Option<String>,
}
