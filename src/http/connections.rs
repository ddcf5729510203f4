//! Connection slots: who holds one, which holders are idle, and how to make one give its
//! slot back.
//!
//! Why this exists: a slot (`ButlerEdge.limits.maxConnections` of them) used to be held
//! until the peer left or a header timeout fired, so idle HTTP/2 connections (which hyper
//! never times out) kept theirs forever, and once every slot was held by an idle
//! connection a well-behaved newcomer waited in the backlog for a timeout. The model is
//! nginx: connections with nothing in flight are "reusable"; they are closed after
//! `keepalive_timeout`, and when the server runs out of connections it closes the ones
//! idle longest to make room.
//!
//! How:
//! - Every connection holding a slot has an [`Entry`]: requests in flight, when it last
//!   became idle, a "closing" flag and a [`Notify`] that asks its task to close. A
//!   request counts as in flight from the moment hyper hands its head to the service
//!   until hyper drops the response body (sent); per request that costs two atomic
//!   operations on the connection's own entry, no lock.
//! - The idle timer runs in the connection's task (`server.rs`); it reads
//!   [`Connection::idle_deadline`] and closes only through [`Connection::close_if_idle`],
//!   a compare-and-swap from "no request in flight" to "closing", so a request that
//!   starts at the same moment wins and the connection stays.
//! - Admission: the accept loop accepts first and then asks [`Registry::admit`] for a
//!   slot. Without a free slot, the newcomer queues here (at most the small reserve the
//!   accept loop allows, so descriptors stay bounded by `maxConnections` plus that
//!   reserve; beyond it, callers wait in the kernel's backlog as before) and the registry
//!   asks the connection idle longest to close. Victims are chosen with the same
//!   compare-and-swap, so a connection with a request in flight is never chosen; if every
//!   holder is busy, the newcomer stays queued and the first connection to finish its
//!   request (then the one idle longest, being the only idle one) closes for it. A freed
//!   slot is handed directly to the queue's head, so a newcomer cannot be overtaken.
//! - The registry counts queued newcomers and evictions in progress under one lock, and
//!   evicts only while there are fewer evictions in progress than newcomers: a flood of
//!   newcomers costs idle connections one each, never busy ones, and never more than the
//!   queue (a natural close racing an eviction can free one slot more than needed).
//!
//! Finding the victim scans every entry (tens of microseconds at 10,000), but only when
//! the server is at its limit; the common path (a slot free) takes the lock once per
//! connection to register and once to leave.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

// The runtime's clock (the wall clock in production), so that idle deadlines follow tokio's paused
// clock in tests.
use tokio::time::Instant;

use crate::metrics::ConnectionStats;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{Notify, oneshot};

/// `Entry::state`: set once the connection has been asked to close; the low bits count
/// requests in flight.
const CLOSING: u64 = 1 << 63;

struct Entry {
    /// `CLOSING` | requests in flight.
    state: AtomicU64,
    /// Milliseconds since `Registry::epoch` when the last request ended (or the connection
    /// was accepted).
    idle_since_ms: AtomicU64,
    /// Asks the connection's task to close gracefully.
    close: Notify,
    /// Chosen to make room (counted in `Inner::evicting` until it leaves).
    victim: AtomicBool,
}

struct Inner {
    /// Slots held: registered connections plus grants on their way to a queued newcomer.
    held: usize,
    entries: HashMap<u64, Arc<Entry>>,
    next_id: u64,
    /// Newcomers waiting for a slot, oldest first.
    queue: VecDeque<oneshot::Sender<Grant>>,
    /// Victims asked to close that still hold their slot.
    evicting: usize,
    /// Shutdown: every connection is asked to close, newcomers are turned away.
    closing_all: bool,
}

/// Every connection slot of one listener.
pub struct Registry {
    max: usize,
    idle_timeout: Duration,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// Mirrors `evicting < queue.len()`, so that a request ending checks it without the lock.
    short: AtomicBool,
    /// Signalled when the last connection leaves (for shutdown).
    emptied: Notify,
    stats: Arc<ConnectionStats>,
}

/// What [`Registry::admit`] gives a newcomer.
pub enum Admission {
    Now(Connection),
    /// Every slot is taken; resolves to a [`Grant`] once one is handed over, or to an
    /// error when the server shuts down first.
    Queued(oneshot::Receiver<Grant>),
    /// The server is shutting down.
    Refused,
}

/// A slot handed to a queued newcomer; releases it again if dropped unused.
pub struct Grant {
    registry: Arc<Registry>,
    /// False once the slot has been used or given back.
    armed: bool,
}

impl Grant {
    /// Registers the newcomer in the slot it was handed.
    pub fn into_connection(mut self) -> Connection {
        self.armed = false;
        let registry = self.registry.clone();
        let mut inner = registry.lock();
        register_locked(&registry, &mut inner)
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.armed {
            let mut inner = self.registry.lock();
            self.registry.release_locked(&mut inner);
        }
    }
}

/// One connection's hold on a slot; dropping it gives the slot back.
pub struct Connection {
    registry: Arc<Registry>,
    id: u64,
    entry: Arc<Entry>,
}

/// Counts one request as in flight until dropped.
pub struct InFlight {
    registry: Arc<Registry>,
    entry: Arc<Entry>,
}

/// A response body that keeps its request in flight until hyper has taken all of it.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl Registry {
    pub fn new(max: usize, idle_timeout: Duration, stats: Arc<ConnectionStats>) -> Arc<Registry> {
        Arc::new(Registry {
            max,
            idle_timeout,
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                held: 0,
                entries: HashMap::new(),
                next_id: 0,
                queue: VecDeque::new(),
                evicting: 0,
                closing_all: false,
            }),
            short: AtomicBool::new(false),
            emptied: Notify::new(),
            stats,
        })
    }

    /// The lock guards plain bookkeeping that no code path leaves half-updated, so a
    /// poisoned lock (a panic elsewhere while holding it) is still consistent.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A slot for a newly accepted connection: now if one is free and nobody is queued,
    /// else a place in the queue, after asking the connection idle longest to close.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut inner = self.lock();
        if inner.closing_all {
            return Admission::Refused;
        }
        if inner.held < self.max && inner.queue.is_empty() {
            inner.held += 1;
            return Admission::Now(register_locked(self, &mut inner));
        }
        // Senders whose newcomer gave up do not count.
        inner.queue.retain(|tx| !tx.is_closed());
        let (tx, rx) = oneshot::channel();
        inner.queue.push_back(tx);
        // Raised before the scan: a request ending concurrently either is seen idle by
        // the scan or sees this flag and closes its connection for us (both SeqCst).
        self.short.store(true, Ordering::SeqCst);
        while inner.evicting < inner.queue.len() {
            match oldest_idle(&inner) {
                Some(entry) => {
                    if self.evict(&mut inner, &entry) {
                        tracing::debug!(
                            "every connection slot taken: closing the connection idle longest"
                        );
                    }
                }
                None => break,
            }
        }
        self.update_short(&inner);
        self.stats
            .queued
            .store(inner.queue.len() as u64, Ordering::Relaxed);
        Admission::Queued(rx)
    }

    /// Marks `entry` as closing if it has no request in flight; true if it was chosen.
    fn evict(&self, inner: &mut Inner, entry: &Entry) -> bool {
        if entry
            .state
            .compare_exchange(0, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        entry.victim.store(true, Ordering::Relaxed);
        inner.evicting += 1;
        entry.close.notify_one();
        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn update_short(&self, inner: &Inner) {
        self.short
            .store(inner.evicting < inner.queue.len(), Ordering::SeqCst);
    }

    /// A request ended and left `entry` idle while a newcomer waits with no victim chosen.
    fn became_idle_while_short(&self, entry: &Entry) {
        let mut inner = self.lock();
        // Senders whose newcomer gave up do not count.
        inner.queue.retain(|tx| !tx.is_closed());
        if inner.evicting < inner.queue.len() && self.evict(&mut inner, entry) {
            tracing::debug!(
                "every connection slot taken: closing a connection as its request ended"
            );
        }
        self.update_short(&inner);
    }

    /// Gives a slot back: to the oldest queued newcomer, else to the pool.
    fn release_locked(self: &Arc<Self>, inner: &mut Inner) {
        while let Some(tx) = inner.queue.pop_front() {
            match tx.send(Grant {
                registry: self.clone(),
                armed: true,
            }) {
                Ok(()) => {
                    self.after_change(inner);
                    return;
                }
                // That newcomer is gone: the slot goes to the next one. Disarmed, so its
                // drop does not re-enter the lock held here.
                Err(mut grant) => grant.armed = false,
            }
        }
        inner.held -= 1;
        self.after_change(inner);
    }

    fn after_change(&self, inner: &Inner) {
        self.update_short(inner);
        self.stats
            .queued
            .store(inner.queue.len() as u64, Ordering::Relaxed);
        self.stats
            .open
            .store(inner.entries.len() as u64, Ordering::Relaxed);
        if inner.held == 0 {
            self.emptied.notify_waiters();
        }
    }

    /// Shutdown: asks every connection to close gracefully (after its in-flight requests)
    /// and turns queued and later newcomers away.
    pub fn close_all(&self) {
        let mut inner = self.lock();
        inner.closing_all = true;
        inner.queue.clear();
        for entry in inner.entries.values() {
            entry.state.fetch_or(CLOSING, Ordering::SeqCst);
            entry.close.notify_one();
        }
        self.update_short(&inner);
    }

    /// Connections holding a slot.
    pub fn count(&self) -> usize {
        self.lock().held
    }

    /// Resolves once no slot is held.
    pub async fn emptied(&self) {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn register_locked(registry: &Arc<Registry>, inner: &mut Inner) -> Connection {
    let id = inner.next_id;
    inner.next_id += 1;
    let entry = Arc::new(Entry {
        state: AtomicU64::new(if inner.closing_all { CLOSING } else { 0 }),
        idle_since_ms: AtomicU64::new(registry.now_ms()),
        close: Notify::new(),
        victim: AtomicBool::new(false),
    });
    if inner.closing_all {
        entry.close.notify_one();
    }
    inner.entries.insert(id, entry.clone());
    registry.after_change(inner);
    Connection {
        registry: registry.clone(),
        id,
        entry,
    }
}

/// The connection idle longest with no request in flight and not already closing.
fn oldest_idle(inner: &Inner) -> Option<Arc<Entry>> {
    inner
        .entries
        .values()
        .filter(|e| e.state.load(Ordering::SeqCst) == 0)
        .min_by_key(|e| e.idle_since_ms.load(Ordering::Relaxed))
        .cloned()
}

impl Connection {
    /// A handle that counts requests on this connection, for the service closure.
    pub fn requests(&self) -> Requests {
        Requests {
            registry: self.registry.clone(),
            entry: self.entry.clone(),
        }
    }

    /// Resolves when this connection has been asked to close (evicted, or shutdown).
    pub async fn close_requested(&self) {
        self.entry.close.notified().await;
    }

    /// When the idle timeout closes this connection, or `None` while a request is in
    /// flight (or it is already closing).
    pub fn idle_deadline(&self) -> Option<Instant> {
        if self.entry.state.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let since = Duration::from_millis(self.entry.idle_since_ms.load(Ordering::SeqCst));
        Some(self.registry.epoch + since + self.registry.idle_timeout)
    }

    /// The idle timer's way to close: true if no request was in flight, and then no
    /// eviction can pick this connection any more.
    pub fn close_if_idle(&self) -> bool {
        let closed = self
            .entry
            .state
            .compare_exchange(0, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if closed {
            self.registry
                .stats
                .idle_closed
                .fetch_add(1, Ordering::Relaxed);
        }
        closed
    }

    /// Whether a request is in flight.
    pub fn is_busy(&self) -> bool {
        self.entry.state.load(Ordering::SeqCst) & !CLOSING != 0
    }

    pub fn idle_timeout(&self) -> Duration {
        self.registry.idle_timeout
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.entries.remove(&self.id);
        if self.entry.victim.load(Ordering::Relaxed) {
            inner.evicting = inner.evicting.saturating_sub(1);
        }
        self.registry.release_locked(&mut inner);
    }
}

/// Starts requests on one connection (cloned into hyper's service).
#[derive(Clone)]
pub struct Requests {
    registry: Arc<Registry>,
    entry: Arc<Entry>,
}

impl Requests {
    /// Counts a request as in flight until the returned guard is dropped.
    pub fn start(&self) -> InFlight {
        self.entry.state.fetch_add(1, Ordering::SeqCst);
        InFlight {
            registry: self.registry.clone(),
            entry: self.entry.clone(),
        }
    }
}

impl InFlight {
    /// Keeps the request in flight until hyper has taken the whole response body.
    pub fn attach<B>(self, response: http::Response<B>) -> http::Response<Tracked<B>> {
        response.map(|inner| Tracked {
            inner,
            _in_flight: self,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The idle time is stored before the count drops, so whoever sees the
        // connection idle sees when it became so.
        self.entry
            .idle_since_ms
            .store(self.registry.now_ms(), Ordering::SeqCst);
        let before = self.entry.state.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.registry.short.load(Ordering::SeqCst) {
            self.registry.became_idle_while_short(&self.entry);
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
