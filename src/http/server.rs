//! The accept loop: connections, limits, timeouts, graceful shutdown.
//!
//! Shaped like mini-redis's `server.rs`: each connection runs in its own task, and on
//! shutdown the loop stops accepting, asks every connection to finish its in-flight
//! request, and waits for them within a bound. Connection slots
//! (`ButlerEdge.limits.maxConnections`) are kept by [`super::connections`]: the loop
//! accepts, then asks for a slot; when every slot is taken the newcomer waits in a small
//! reserve ([`RESERVE`]) while the connection idle longest is asked to close, and once
//! the reserve is full too, callers wait in the kernel's backlog instead of exhausting
//! memory or file descriptors.
//!
//! Each connection is closed gracefully (hyper's `graceful_shutdown`: HTTP/1.1 finishes
//! the response in progress, HTTP/2 sends GOAWAY) once it has had no request in flight
//! for `ButlerEdge.limits.idleTimeoutMs`, or when evicted. hyper's HTTP/2 server has no
//! idle timeout of its own and its graceful close waits for the peer to answer a PING,
//! so a connection still open [`CLOSE_GRACE`] after being asked, with no request in
//! flight, is dropped. (HTTP/1.1 keep-alive connections are also bounded by hyper's
//! header read timeout, which hyper 1.x starts as soon as a connection goes idle between
//! requests; the shorter of the two applies.)
//!
//! With TLS on there is only the TLS listener. Each connection does its handshake
//! with the TLS settings current when it was accepted (so a `SIGHUP` swap affects
//! only later connections), within the header timeout; a failed handshake is logged
//! and closed before any HTTP is read. The caller's certificate identity is fixed for
//! the connection and resolved against the current client list on every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

// The runtime's clock (the wall clock in production), so that idle deadlines follow tokio's paused
// clock in tests.
use tokio::time::Instant;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::access_log;
use super::connections::{Admission, Connection, Registry, Tracked};
use super::handler::{Handled, Handler, PeerAddr};
use super::response::{ResponseBody, butler_error};
use crate::authz::{Access, Caller, CertIdentity, Unauthenticated};
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::security::{SecurityHandle, handshake_log};
use crate::systemd::AcceptProbe;

/// Resolves when shutdown has been requested.
pub type ShutdownSignal = watch::Receiver<bool>;

/// Descriptors beyond the connections: database, listener, QRS pool, logs.
const SPARE_FILES: u64 = 256;

/// Accepted connections that may wait for a slot while every slot is taken. Enough for a
/// burst of newcomers to be served by eviction without a round trip through the backlog;
/// small, because each holds a descriptor beyond `maxConnections`.
pub const RESERVE: usize = 64;

/// How long a connection asked to close (idle, evicted) may take before it is dropped,
/// if it has no request in flight: an HTTP/2 peer gets this long to answer the GOAWAY's
/// PING.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Raises the soft open-file limit so that `maxConnections` can really be open.
/// systemd starts services with a soft limit of 1024 (hard 524288): without this,
/// accept fails with EMFILE at about a thousand connections, far below the
/// configured limit. The hard limit is left alone (raising it needs privilege).
fn raise_open_file_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = (max_connections as u64)
        .saturating_add(RESERVE as u64)
        .saturating_add(SPARE_FILES);
    let target = wanted.min(hard);
    if soft < target {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => tracing::debug!(from = soft, to = target, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, soft, "cannot raise the open-file limit"),
        }
    }
    if target < wanted {
        tracing::warn!(
            limit = hard,
            max_connections,
            "the open-file limit ({hard}) is below ButlerEdge.limits.maxConnections \
             ({max_connections}) plus {RESERVE} waiting and {SPARE_FILES} spare: raise \
             LimitNOFILE or lower maxConnections"
        );
    }
}

/// What the accept loop and every connection share.
pub struct Server<H> {
    /// `ButlerEdge.limits`: connection slots, header/body/idle timeouts.
    pub limits: Limits,
    /// `ButlerEdge.shutdownTimeoutMs`: how long in-flight requests may finish at shutdown.
    pub shutdown_timeout: Duration,
    /// The TLS settings and client list in force (swapped on `SIGHUP`).
    pub security: Arc<SecurityHandle>,
    /// Request and connection figures for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Answered from the accept loop, for the systemd watchdog's liveness check.
    pub accept_probe: Arc<AcceptProbe>,
    /// Answers the requests.
    pub handler: Arc<H>,
}

/// Serves `listener` until `shutdown` turns true, then drains connections for at
/// most `ButlerEdge.shutdownTimeoutMs`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    state: Arc<Server<H>>,
    mut shutdown: ShutdownSignal,
) {
    let limits = state.limits.clone();
    raise_open_file_limit(limits.max_connections);
    let registry = Registry::new(
        limits.max_connections,
        limits.idle_timeout,
        state.metrics.connections.clone(),
    );
    let reserve = Arc::new(Semaphore::new(RESERVE));
    let builder = Arc::new(http_builder(&limits));
    let probe = state.accept_probe.clone();

    loop {
        // A reserve place first, so that at most RESERVE accepted connections wait for a
        // slot; beyond that, newcomers wait in the kernel's backlog.
        let place =
            match until_shutdown(reserve.clone().acquire_owned(), &mut shutdown, &probe).await {
                Some(Ok(place)) => place,
                Some(Err(_)) | None => break,
            };
        let (stream, peer) = match until_shutdown(listener.accept(), &mut shutdown, &probe).await {
            Some(Ok(accepted)) => accepted,
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            None => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        match registry.admit() {
            Admission::Now(connection) => {
                drop(place);
                tokio::spawn(run_connection(connection, stream, peer, state, builder));
            }
            Admission::Queued(granted) => {
                tracing::debug!(peer = %peer, "every connection slot taken; waiting for one");
                tokio::spawn(async move {
                    // Turned away (dropped with the queue) when the server shuts down first.
                    let Ok(grant) = granted.await else { return };
                    let connection = grant.into_connection();
                    drop(place);
                    run_connection(connection, stream, peer, state, builder).await;
                });
            }
            Admission::Refused => break,
        }
    }
    drop(listener);
    drain(&registry, state.shutdown_timeout).await;
}

/// hyper's HTTP/1.1 and HTTP/2 server with our header read timeout and a memory bound per
/// connection. hyper's HTTP/2 defaults (200 streams, 1 MiB windows) let one connection pin
/// about 200 MiB of unread body data; here a connection may open `maxStreamsPerConnection`
/// streams, each stream may have at most [`STREAM_WINDOW`] (or `maxBodyBytes`, if smaller)
/// unread, and the connection [`CONNECTION_WINDOW`] in all. What is read counts against the
/// process-wide body budget (`super::body`).
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(H1_READ_BUFFER)
        .keep_alive(true);
    let stream_window = (limits.max_body_bytes as u32).clamp(16 * 1024, STREAM_WINDOW);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(CONNECTION_WINDOW.max(stream_window))
        .max_send_buf_size(SEND_BUFFER);
    builder
}

/// Unread body data one HTTP/2 stream may have in flight.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Unread body data one HTTP/2 connection may have in flight, over all its streams.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes hyper buffers per HTTP/2 stream before waiting for the peer to read.
const SEND_BUFFER: usize = 256 * 1024;
/// hyper's HTTP/1.1 read buffer ceiling (its default is about 400 KiB per connection); request
/// heads beyond it get 431. Butler's callers send heads of a few hundred bytes.
const H1_READ_BUFFER: usize = 64 * 1024;

/// Waits for `wanted` while answering the watchdog's probe (which proves this loop is still
/// polled); `None` once shutdown has been requested.
async fn until_shutdown<T>(
    wanted: impl Future<Output = T>,
    shutdown: &mut ShutdownSignal,
    probe: &AcceptProbe,
) -> Option<T> {
    tokio::pin!(wanted);
    loop {
        tokio::select! {
            value = &mut wanted => return Some(value),
            _ = shutdown.changed() => return None,
            _ = probe.asked() => probe.answer(),
        }
    }
}

/// Asks every connection to finish its in-flight request and close, and waits for them
/// within the shutdown timeout.
async fn drain(registry: &Registry, timeout: Duration) {
    tracing::info!(
        connections = registry.count(),
        "no longer accepting connections; finishing in-flight requests"
    );
    registry.close_all();
    if tokio::time::timeout(timeout, registry.emptied())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = timeout.as_millis() as u64,
            "connections still open after the shutdown timeout; closing them"
        );
    }
}

/// One accepted connection holding a slot: its first byte or TLS handshake within the
/// header timeout, then HTTP. Closes early if evicted before HTTP begins.
async fn run_connection<H: Handler>(
    connection: Connection,
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<Server<H>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
) {
    let tls = state.security.current().tls.clone();
    let timeout = state.limits.header_read_timeout;
    match tls {
        None => {
            // hyper's header read timeout starts only once the auto builder has
            // seen enough bytes to choose HTTP/1 or HTTP/2: a connection that
            // sends nothing would hold its connection slot forever (10,000 of
            // them lock everyone out). The first byte must come within the
            // header timeout. (`peek`, not `readable`: readiness may be
            // reported before any byte.) TLS connections are bounded by the
            // handshake timeout instead.
            let mut first = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(timeout, stream.peek(&mut first)) => {
                    if peeked.is_err() {
                        tracing::debug!(peer = %peer, "connection sent nothing within the header read timeout; closed");
                        return;
                    }
                }
                () = connection.close_requested() => {
                    tracing::debug!(peer = %peer, "connection closed before its first byte to make room");
                    return;
                }
            }
            let io = TokioIo::new(stream);
            let caller = (Caller::Anonymous, false);
            serve_connection(io, peer, caller, state, &builder, connection).await;
        }
        Some(acceptor) => {
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(timeout, acceptor.accept(stream)) => handshake,
                () = connection.close_requested() => {
                    tracing::debug!(peer = %peer, "connection closed during its TLS handshake to make room");
                    return;
                }
            };
            match handshake {
                Ok(Ok(tls_stream)) => {
                    let caller = match tls_stream.get_ref().1.peer_certificates() {
                        Some([leaf, ..]) => {
                            Caller::Certificate(Arc::new(CertIdentity::from_der(leaf)))
                        }
                        _ => Caller::Anonymous,
                    };
                    let io = TokioIo::new(tls_stream);
                    let caller = (caller, true);
                    serve_connection(io, peer, caller, state, &builder, connection).await;
                }
                // A peer that connects and leaves without a word (a port probe,
                // a load balancer's check) is not worth an info line.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::debug!(peer = %peer, "connection closed before a TLS handshake");
                }
                Ok(Err(e)) => {
                    if handshake_log::may_log() {
                        tracing::info!(peer = %peer, error = %e, "TLS handshake failed; connection closed");
                    }
                }
                Err(_) => {
                    tracing::info!(
                        peer = %peer,
                        timeout_ms = timeout.as_millis() as u64,
                        "TLS handshake not completed in time; connection closed"
                    );
                }
            }
        }
    }
}

/// The hyper service of one connection: each request is counted in flight, authenticated
/// (the connection's certificate, or the request's API token) against the current client
/// list, answered by the handler with the caller's permissions (or 401), and recorded in the
/// access log. `caller` is the handshake's caller and whether the connection is TLS.
fn request_service<H: Handler>(
    state: Arc<Server<H>>,
    peer: SocketAddr,
    (caller, over_tls): (Caller, bool),
    connection: &Connection,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<Tracked<ResponseBody>>,
    Error = std::convert::Infallible,
    Future = impl Future<
        Output = Result<http::Response<Tracked<ResponseBody>>, std::convert::Infallible>,
    > + Send
             + 'static,
> {
    let requests = connection.requests();
    service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        let state = state.clone();
        // In flight from here until hyper has taken the whole response body.
        let in_flight = requests.start();
        // Resolved per request, so a reloaded client list applies to open connections too.
        let policy = state.security.current().policy.clone();
        let token = api_token(req.headers()).map(str::to_string);
        let token = token.as_deref();
        let authenticated = policy.authenticate(&caller, token, over_tls);
        // A token sent in clear names its owner, so the admin knows whose to revoke.
        let owner = match &authenticated {
            Err(_) => token.and_then(|t| policy.token_owner(t)),
            Ok(_) => None,
        };
        if policy.enabled || token.is_some() {
            let outcome = authenticated.as_ref().map_or_else(|e| e.reason(), |_| "ok");
            state
                .metrics
                .authenticated(crate::authz::method_of(&caller, token), outcome);
        }
        async move {
            let started = Instant::now();
            let path = req.uri().path().to_string();
            let (handled, access) = match authenticated {
                Ok(access) => (state.handler.handle(req, &access).await, access),
                Err(refused) => {
                    let client = owner.as_ref().map_or("-", |c| c.name.as_str());
                    (unauthenticated(&req, peer, client, refused), Access::Open)
                }
            };
            access_log::record(
                &state.metrics,
                &access_log::Answered {
                    peer,
                    client: if handled.response.status() == http::StatusCode::UNAUTHORIZED {
                        "unauthenticated"
                    } else {
                        access.name()
                    },
                    method: &handled.method,
                    path: &path,
                    status: handled.response.status().as_u16(),
                    elapsed: started.elapsed(),
                    route: handled.route.as_ref(),
                },
            );
            Ok::<_, std::convert::Infallible>(in_flight.attach(handled.response))
        }
    })
}

/// The API token a request carries: `Authorization: Bearer <token>`, or `X-Api-Key: <token>`
/// for tools that can set only a custom header. An `Authorization` of another scheme (Basic)
/// is not a token and is left alone, as before tokens existed.
fn api_token(headers: &http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .map(|v| v.to_str().map(str::trim).unwrap_or("\u{fffd}"))
        })
        .filter(|t| !t.is_empty())
}

/// The 401 for a request whose credentials were refused: Butler's error shape, a
/// `WWW-Authenticate` challenge, and a bounded log line with the reason (never the token).
fn unauthenticated(
    req: &http::Request<Incoming>,
    peer: SocketAddr,
    client: &str,
    refused: Unauthenticated,
) -> Handled {
    let message = refused.to_string();
    crate::security::auth_log::refused(peer.ip(), client, refused.reason(), &message);
    let mut response = butler_error(http::StatusCode::UNAUTHORIZED, &message);
    let challenge = format!(
        "Bearer realm=\"butler-edge\", error=\"invalid_token\", error_description=\"{}\"",
        refused.reason()
    );
    if let Ok(value) = http::HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    Handled {
        response,
        method: req.method().clone(),
        route: None,
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one established (possibly TLS) connection until the
/// peer leaves, or it is closed: idle for `idleTimeoutMs`, evicted, or shutdown.
async fn serve_connection<I, H>(
    io: TokioIo<I>,
    peer: SocketAddr,
    caller: (Caller, bool),
    state: Arc<Server<H>>,
    builder: &auto::Builder<TokioExecutor>,
    connection: Connection,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let service = request_service(state, peer, caller, &connection);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle_timeout = connection.idle_timeout();
    // The idle time began at accept (a TLS handshake counts as idle time).
    let first_check = connection
        .idle_deadline()
        .unwrap_or_else(|| Instant::now() + idle_timeout);
    let timer = tokio::time::sleep_until(first_check);
    tokio::pin!(timer);
    // Set once the connection has been asked to close; it then has CLOSE_GRACE.
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = connection.close_requested(), if !closing => {
                tracing::debug!(peer = %peer, "closing the connection (evicted or shutting down)");
                conn.as_mut().graceful_shutdown();
                closing = true;
                timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            () = &mut timer => {
                let now = Instant::now();
                if closing {
                    if !connection.is_busy() {
                        tracing::debug!(peer = %peer, "connection did not close within its grace; dropped");
                        return;
                    }
                    // A request still in flight finishes first (bounded by its own
                    // timeouts and, at shutdown, by the shutdown timeout).
                    timer.as_mut().reset(now + CLOSE_GRACE);
                    continue;
                }
                match connection.idle_deadline() {
                    Some(deadline) if deadline <= now => {
                        if connection.close_if_idle() {
                            tracing::debug!(
                                peer = %peer,
                                idle_timeout_ms = idle_timeout.as_millis() as u64,
                                "connection idle for the idle timeout; closing"
                            );
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                            timer.as_mut().reset(now + CLOSE_GRACE);
                        } else {
                            // A request began, or an eviction got there first (its
                            // close request is pending).
                            timer.as_mut().reset(now + idle_timeout);
                        }
                    }
                    Some(deadline) => timer.as_mut().reset(deadline),
                    // A request in flight: look again one idle timeout from now, by
                    // which time it has ended (and its idle time begun) or not.
                    None => timer.as_mut().reset(now + idle_timeout),
                }
            }
        }
    }
}
