//! The accept loop: connections, limits, timeouts, graceful shutdown.
//!
//! Shaped like mini-redis's `server.rs`: a semaphore bounds open connections
//! (beyond the limit, new ones wait in the kernel's backlog instead of exhausting
//! memory or file descriptors), each connection runs in its own task, and on
//! shutdown the loop stops accepting, asks every connection to finish its
//! in-flight request, and waits for them within a bound.
//!
//! With TLS on there is only the TLS listener. Each connection does its handshake
//! with the TLS settings current when it was accepted (so a `SIGHUP` swap affects
//! only later connections), within the header timeout; a failed handshake is logged
//! and closed before any HTTP is read. The caller's certificate identity is fixed for
//! the connection and resolved against the current client list on every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::{access_log, router};
use crate::authz::{Caller, CertIdentity};
use crate::state::AppState;

/// Resolves when shutdown has been requested.
pub type ShutdownSignal = watch::Receiver<bool>;

/// Descriptors beyond the connections: database, listener, QRS pool, logs.
const SPARE_FILES: u64 = 256;

/// Raises the soft open-file limit so that `maxConnections` can really be open.
/// systemd starts services with a soft limit of 1024 (hard 524288): without this,
/// accept fails with EMFILE at about a thousand connections, far below the
/// configured limit. The hard limit is left alone (raising it needs privilege).
fn raise_open_file_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = (max_connections as u64).saturating_add(SPARE_FILES);
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
             ({max_connections}) plus {SPARE_FILES} spare: raise LimitNOFILE or lower maxConnections"
        );
    }
}

/// Serves `listener` until `shutdown` turns true, then drains connections for at
/// most `ButlerEdge.shutdownTimeoutMs`.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, mut shutdown: ShutdownSignal) {
    let limits = state.config.edge.limits.clone();
    raise_open_file_limit(limits.max_connections);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
            _ = state.accept_probe.asked() => {
                state.accept_probe.answer();
                continue;
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
            _ = state.accept_probe.asked() => {
                state.accept_probe.answer();
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let state = state.clone();
        let builder = builder.clone();
        let tls = state.security.current().tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        let first_byte_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
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
                    if tokio::time::timeout(first_byte_timeout, stream.peek(&mut first))
                        .await
                        .is_err()
                    {
                        tracing::debug!(peer = %peer, "connection sent nothing within the header read timeout; closed");
                        return;
                    }
                    let io = TokioIo::new(stream);
                    serve_connection(io, peer, Caller::Anonymous, state, &builder, watcher).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let caller = match tls_stream.get_ref().1.peer_certificates() {
                                Some([leaf, ..]) => {
                                    Caller::Certificate(Arc::new(CertIdentity::from_der(leaf)))
                                }
                                _ => Caller::Anonymous,
                            };
                            let io = TokioIo::new(tls_stream);
                            serve_connection(io, peer, caller, state, &builder, watcher).await;
                        }
                        // A peer that connects and leaves without a word (a port probe,
                        // a load balancer's check) is not worth an info line.
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            tracing::debug!(peer = %peer, "connection closed before a TLS handshake");
                        }
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer, error = %e, "TLS handshake failed; connection closed");
                        }
                        Err(_) => {
                            tracing::info!(
                                peer = %peer,
                                timeout_ms = handshake_timeout.as_millis() as u64,
                                "TLS handshake not completed in time; connection closed"
                            );
                        }
                    }
                }
            }
            drop(permit);
        });
    }

    drop(listener);
    let timeout = state.config.edge.shutdown_timeout;
    tracing::info!(
        connections = graceful.count(),
        "no longer accepting connections; finishing in-flight requests"
    );
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = timeout.as_millis() as u64,
            "connections still open after the shutdown timeout; closing them"
        );
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one established (possibly TLS) connection.
pub async fn serve_connection<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    caller: Caller,
    state: Arc<AppState>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: http::Request<Incoming>| {
        let state = state.clone();
        // Resolved per request, so a reloaded client list applies to open connections too.
        let access = state.security.current().policy.resolve(&caller);
        async move {
            let started = Instant::now();
            let path = req.uri().path().to_string();
            req.extensions_mut().insert(access.clone());
            let handled = router::handle(req, &state).await;
            access_log::record(
                &state.metrics,
                &access_log::Answered {
                    peer,
                    client: access.name(),
                    method: &handled.method,
                    path: &path,
                    status: handled.response.status().as_u16(),
                    elapsed: started.elapsed(),
                },
            );
            Ok::<_, std::convert::Infallible>(handled.response)
        }
    });
    let connection = builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}
