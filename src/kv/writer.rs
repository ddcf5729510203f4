//! The single writer thread: group commit.
//!
//! Every write request is queued to this thread. It takes whatever has queued up
//! while the previous commit was being fsynced, applies it all in one redb write
//! transaction with `Durability::Immediate`, commits, and only then answers each
//! request. Under concurrency one fsync carries many requests, so durable
//! throughput is far above one fsync per request; with a single caller nothing
//! waits for a batch to fill.
//!
//! Each operation's outcome (stored, deleted, or rejected for a reason the caller
//! can fix) is decided inside the transaction, so checks like the namespace key
//! limit cannot race with other writers. The puts of one request are applied all or
//! none: if one would overfill its namespace, none of them is (a start request's
//! key-value items must not be left half-stored when the start is refused). A storage error fails every request in
//! the batch and commits none of them: nothing is acknowledged that is not on disk.
//! Each caller gets the error's kind (a full disk stays a full disk, for a 507), and
//! before they get it the database is reopened if redb latched the failure
//! ([`super::slot`]), so neither the next write nor the next read meets a dead handle.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Durability, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use tokio::sync::{Mutex, oneshot};

use super::expiry::Sweeper;
use super::schema::{COUNTERS, EXPIRY, KV, NAMESPACES, NEXT_NAMESPACE_SEQ, NamespaceRow};
use super::slot::DbSlot;
use super::{StoreError, db_err, is_live, now_ms};

/// The most requests one transaction takes; bounds commit latency under a flood.
const MAX_BATCH_REQUESTS: usize = 4096;
/// The most key and value bytes one transaction takes (a request over it still goes alone):
/// with values of up to 1 MB, a batch of 4096 requests could otherwise hold gigabytes of
/// dirty pages in one commit.
const MAX_BATCH_BYTES: u64 = 64 << 20;
/// The most expired entries one transaction removes.
const MAX_PURGE_PER_TXN: usize = 10_000;

#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create or replace a key; `expires_at` is 0 for no expiry.
    Put {
        namespace: String,
        key: String,
        value: String,
        expires_at: u64,
        /// The writing client's namespace quota, when it has one: a new namespace is
        /// refused once the client's patterns match `max` namespaces.
        within: Option<Arc<NamespaceQuota>>,
    },
    DeleteKey {
        namespace: String,
        key: String,
    },
    DeleteNamespace {
        namespace: String,
    },
    /// Remove entries whose deadline is at or before `now` (the sweeper's job).
    PurgeExpired {
        now: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A put created a new key.
    Created,
    /// A put replaced an existing live key.
    Replaced,
    Deleted,
    /// How many expired entries a purge removed.
    Purged(u64),
    /// The operation was refused; nothing changed for it.
    Rejected(Rejected),
    /// Not applied because another put of the same request was refused (all or none).
    NotApplied,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    NamespaceFull {
        limit: u64,
    },
    /// The whole store holds its limit of keys or of namespaces.
    StoreFull(StoreQuota),
    /// The writing client's namespace patterns already match its limit of namespaces.
    ClientNamespacesFull(Arc<NamespaceQuota>),
    NamespaceNotFound,
    KeyNotFound,
}

/// How much the store may hold (`Butler.keyValueStore.maxKeysPerNamespace`,
/// `ButlerEdge.limits.maxNamespaces`, `ButlerEdge.limits.maxKeys`). Without the store-wide
/// two, a caller could create namespaces without end, each within its own key limit.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub keys_per_namespace: u64,
    pub namespaces: u64,
    pub keys: u64,
}

/// How many namespaces a client restricted to namespace patterns may have: those its
/// patterns match (`exact` names and `prefixes`) count, whoever created them.
#[derive(Debug, PartialEq, Eq)]
pub struct NamespaceQuota {
    pub exact: Vec<String>,
    pub prefixes: Vec<String>,
    pub max: u64,
    /// The client and config key, for the message (`clients[1] "ERP"`).
    pub client: String,
    pub config_key: String,
}

/// A store-wide limit that refused a new key or namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreQuota {
    Namespaces(u64),
    Keys(u64),
}

/// Counters for metrics: how well group commit is working.
#[derive(Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub operations: AtomicU64,
    pub largest_batch: AtomicU64,
    pub expired_removed: AtomicU64,
}

type Reply = oneshot::Sender<Result<Vec<WriteOutcome>, StoreError>>;

enum Message {
    Write {
        ops: Vec<WriteOp>,
        reply: Reply,
    },
    /// The watchdog's liveness probe: answered as soon as the thread takes it from the
    /// queue, so it goes unanswered exactly when the thread is stuck (e.g. in an fsync).
    Ping {
        reply: oneshot::Sender<()>,
    },
}

pub struct Handle {
    sender: std::sync::Mutex<Option<mpsc::Sender<Message>>>,
    /// Held by a restore for its whole write transaction (see [`Handle::hold_writes`]).
    restore_gate: Arc<std::sync::Mutex<()>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub stats: Arc<WriterStats>,
}

pub fn spawn(db: Arc<DbSlot>, quotas: Quotas, sweeper: Sweeper) -> Result<Handle, StoreError> {
    let (sender, receiver) = mpsc::channel();
    let stats = Arc::new(WriterStats::default());
    let thread_stats = stats.clone();
    let restore_gate = Arc::new(std::sync::Mutex::new(()));
    let gate = restore_gate.clone();
    let thread = std::thread::Builder::new()
        .name("kv-writer".into())
        .spawn(move || run(&db, receiver, quotas, &sweeper, &thread_stats, &gate))
        .map_err(|e| StoreError::Db(format!("cannot start the writer thread: {e}")))?;
    Ok(Handle {
        sender: std::sync::Mutex::new(Some(sender)),
        restore_gate,
        thread: Mutex::new(Some(thread)),
        stats,
    })
}

impl Handle {
    pub async fn submit(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>, StoreError> {
        let (reply, answer) = oneshot::channel();
        {
            let guard = self.sender.lock().map_err(|_| StoreError::Closed)?;
            let sender = guard.as_ref().ok_or(StoreError::Closed)?;
            sender
                .send(Message::Write { ops, reply })
                .map_err(|_| StoreError::Closed)?;
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Whether the thread takes a message from its queue within `within`.
    pub async fn answers_within(&self, within: std::time::Duration) -> bool {
        let (reply, answer) = oneshot::channel();
        let sent = match self.sender.lock() {
            Ok(guard) => guard
                .as_ref()
                .is_some_and(|sender| sender.send(Message::Ping { reply }).is_ok()),
            Err(_) => false,
        };
        sent && matches!(tokio::time::timeout(within, answer).await, Ok(Ok(())))
    }

    /// Keeps the writer thread out of redb until the guard is dropped, waiting for a commit
    /// under way: a restore holds it for its one long write transaction. Meanwhile the
    /// thread answers writes with [`StoreError::Restoring`] rather than waiting inside
    /// `begin_write` for minutes, so it keeps answering the watchdog's pings. Blocking.
    pub fn hold_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.restore_gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets the thread finish what is queued, then waits for it to exit.
    pub async fn close(&self) {
        if let Ok(mut guard) = self.sender.lock() {
            guard.take();
        }
        if let Some(thread) = self.thread.lock().await.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn run(
    db: &Arc<DbSlot>,
    receiver: mpsc::Receiver<Message>,
    quotas: Quotas,
    sweeper: &Sweeper,
    stats: &WriterStats,
    restore_gate: &std::sync::Mutex<()>,
) {
    // A request that would have made the last batch too big starts the next one.
    let mut held: Option<Message> = None;
    // recv() fails once every sender is gone and the queue is empty.
    while let Some(first) = held.take().or_else(|| receiver.recv().ok()) {
        let mut bytes = message_bytes(&first);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
            match receiver.try_recv() {
                Ok(message) if bytes + message_bytes(&message) > MAX_BATCH_BYTES => {
                    held = Some(message);
                    break;
                }
                Ok(message) => {
                    bytes += message_bytes(&message);
                    batch.push(message);
                }
                Err(_) => break,
            }
        }
        let mut requests: Vec<(Vec<WriteOp>, Reply)> = Vec::with_capacity(batch.len());
        for message in batch {
            match message {
                Message::Write { ops, reply } => requests.push((ops, reply)),
                Message::Ping { reply } => {
                    let _ = reply.send(());
                }
            }
        }
        if requests.is_empty() {
            continue;
        }
        let op_count: usize = requests.iter().map(|(ops, _)| ops.len()).sum();
        let earliest_deadline = requests
            .iter()
            .flat_map(|(ops, _)| ops.iter())
            .filter_map(|op| match op {
                WriteOp::Put { expires_at, .. } if *expires_at != 0 => Some(*expires_at),
                _ => None,
            })
            .min();
        let _not_restoring = match restore_gate.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                for (_, reply) in requests {
                    let _ = reply.send(Err(StoreError::Restoring));
                }
                continue;
            }
        };
        match commit_batch(db, &requests, quotas, stats) {
            Ok(outcomes) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .operations
                    .fetch_add(op_count as u64, Ordering::Relaxed);
                stats
                    .largest_batch
                    .fetch_max(requests.len() as u64, Ordering::Relaxed);
                if let Some(deadline) = earliest_deadline {
                    sweeper.note_deadline(deadline);
                }
                for ((_, reply), outcome) in requests.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = requests.len(), "key-value commit failed; nothing in this batch was stored");
                db.after_failure(&e);
                for (_, reply) in requests {
                    let _ = reply.send(Err(e.for_caller()));
                }
            }
        }
    }
}

struct Tables<'t> {
    txn: &'t WriteTransaction,
    kv: Table<'t, (&'static str, &'static str), (u64, u64, &'static str)>,
    namespaces: Table<'t, &'static str, NamespaceRow>,
    expiry: Table<'t, (u64, &'static str, &'static str), ()>,
    /// Opened by the first new namespace of the transaction (most write none), with the
    /// next namespace sequence number, written back once at the end.
    counters: Option<(Table<'t, &'static str, u64>, u64)>,
}

impl Tables<'_> {
    /// A sequence number for a namespace being created.
    fn take_namespace_seq(&mut self) -> Result<u64, StoreError> {
        let (_, next) = match &mut self.counters {
            Some(counters) => counters,
            None => {
                let table = self.txn.open_table(COUNTERS).map_err(db_err)?;
                let next = table
                    .get(NEXT_NAMESPACE_SEQ)
                    .map_err(db_err)?
                    .map_or(1, |g| g.value());
                self.counters.insert((table, next))
            }
        };
        let seq = *next;
        *next += 1;
        Ok(seq)
    }

    /// Writes back what [`Self::take_namespace_seq`] handed out.
    fn save_counters(&mut self) -> Result<(), StoreError> {
        if let Some((table, next)) = &mut self.counters {
            table.insert(NEXT_NAMESPACE_SEQ, *next).map_err(db_err)?;
        }
        Ok(())
    }

    fn namespace(&self, namespace: &str) -> Result<Option<NamespaceRow>, StoreError> {
        Ok(self
            .namespaces
            .get(namespace)
            .map_err(db_err)?
            .map(|g| g.value()))
    }
}

fn commit_batch(
    slot: &DbSlot,
    requests: &[(Vec<WriteOp>, Reply)],
    quotas: Quotas,
    stats: &WriterStats,
) -> Result<Vec<Vec<WriteOutcome>>, StoreError> {
    let db = slot.for_write(payload_bytes(requests))?;
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate).map_err(db_err)?;
    let mut all = Vec::with_capacity(requests.len());
    let mut purged;
    {
        let mut t = Tables {
            txn: &txn,
            kv: txn.open_table(KV).map_err(db_err)?,
            namespaces: txn.open_table(NAMESPACES).map_err(db_err)?,
            expiry: txn.open_table(EXPIRY).map_err(db_err)?,
            counters: None,
        };
        // Expired keys still count against their namespace's limit until removed;
        // removing what is due first keeps the limit check exact.
        let now = now_ms();
        purged = purge_expired(&mut t, now)?;
        for (ops, _) in requests {
            if let Some(refused) = refused_put(&t, ops, quotas)? {
                all.push(all_refused(ops.len(), refused));
                continue;
            }
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                let outcome = apply(&mut t, op, quotas, now)?;
                if let WriteOutcome::Purged(n) = outcome {
                    purged += n;
                }
                outcomes.push(outcome);
            }
            all.push(outcomes);
        }
        t.save_counters()?;
    }
    txn.commit().map_err(db_err)?;
    // Counted once committed: a failed commit removed nothing, and /metrics must not run
    // ahead of what a read sees.
    stats.expired_removed.fetch_add(purged, Ordering::Relaxed);
    slot.committed();
    Ok(all)
}

/// The first put of `ops` that would find its namespace full once the request's earlier
/// puts are in, with why; `None` when all fit. Only puts are counted: a delete in the
/// same request could make room, so this may refuse a request that would just have fit,
/// never the other way round.
fn refused_put(
    t: &Tables,
    ops: &[WriteOp],
    quotas: Quotas,
) -> Result<Option<(usize, Rejected)>, StoreError> {
    if ops.len() < 2 {
        return Ok(None);
    }
    let stored_keys = t.kv.len().map_err(db_err)?;
    let stored_namespaces = t.namespaces.len().map_err(db_err)?;
    let (mut added_keys, mut added_namespaces) = (0u64, 0u64);
    let mut new_keys: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        let WriteOp::Put { namespace, key, .. } = op else {
            continue;
        };
        if t.kv
            .get((namespace.as_str(), key.as_str()))
            .map_err(db_err)?
            .is_some()
        {
            continue;
        }
        let pending = new_keys.entry(namespace.as_str()).or_default();
        if !pending.insert(key.as_str()) {
            continue;
        }
        // The namespace's key count, `None` for a namespace not created yet.
        let stored = t.namespace(namespace)?.map(|(count, _, _)| count);
        if stored.is_none() && pending.len() == 1 {
            added_namespaces += 1;
            if let WriteOp::Put {
                within: Some(quota),
                ..
            } = op
                && matching_namespaces(t, quota)? + added_namespaces > quota.max
            {
                return Ok(Some((index, Rejected::ClientNamespacesFull(quota.clone()))));
            }
        }
        added_keys += 1;
        let limit = quotas.keys_per_namespace;
        if stored.unwrap_or(0) + pending.len() as u64 > limit {
            return Ok(Some((index, Rejected::NamespaceFull { limit })));
        }
        if stored_namespaces + added_namespaces > quotas.namespaces {
            let quota = StoreQuota::Namespaces(quotas.namespaces);
            return Ok(Some((index, Rejected::StoreFull(quota))));
        }
        if stored_keys + added_keys > quotas.keys {
            return Ok(Some((
                index,
                Rejected::StoreFull(StoreQuota::Keys(quotas.keys)),
            )));
        }
    }
    Ok(None)
}

/// How many stored namespaces `quota`'s patterns match, counted up to its `max` (a range
/// scan per prefix, stopped there).
fn matching_namespaces(t: &Tables, quota: &NamespaceQuota) -> Result<u64, StoreError> {
    let mut count = 0u64;
    for prefix in &quota.prefixes {
        for entry in t.namespaces.range(prefix.as_str()..).map_err(db_err)? {
            let (name, _) = entry.map_err(db_err)?;
            if !name.value().starts_with(prefix.as_str()) || count >= quota.max {
                break;
            }
            count += 1;
        }
    }
    for name in &quota.exact {
        let under_a_prefix = quota.prefixes.iter().any(|p| name.starts_with(p.as_str()));
        if !under_a_prefix && t.namespaces.get(name.as_str()).map_err(db_err)?.is_some() {
            count += 1;
        }
    }
    Ok(count)
}

/// The store-wide limit a new key (in a new namespace when `new_namespace`) would pass.
fn store_quota_reached(
    t: &Tables,
    new_namespace: bool,
    quotas: Quotas,
) -> Result<Option<StoreQuota>, StoreError> {
    if new_namespace && t.namespaces.len().map_err(db_err)? >= quotas.namespaces {
        return Ok(Some(StoreQuota::Namespaces(quotas.namespaces)));
    }
    if t.kv.len().map_err(db_err)? >= quotas.keys {
        return Ok(Some(StoreQuota::Keys(quotas.keys)));
    }
    Ok(None)
}

/// The outcomes of a request refused as a whole: the refused operation says why, the
/// others that they were not applied.
fn all_refused(len: usize, (index, why): (usize, Rejected)) -> Vec<WriteOutcome> {
    (0..len)
        .map(|i| {
            if i == index {
                WriteOutcome::Rejected(why.clone())
            } else {
                WriteOutcome::NotApplied
            }
        })
        .collect()
}

/// Roughly what a batch adds to the database (keys and values), for the free-space
/// check after a full disk.
fn payload_bytes(requests: &[(Vec<WriteOp>, Reply)]) -> u64 {
    requests.iter().map(|(ops, _)| ops_bytes(ops)).sum()
}

/// What a queued message adds to a batch, for [`MAX_BATCH_BYTES`].
fn message_bytes(message: &Message) -> u64 {
    match message {
        Message::Write { ops, .. } => ops_bytes(ops),
        Message::Ping { .. } => 0,
    }
}

fn ops_bytes(ops: &[WriteOp]) -> u64 {
    ops.iter()
        .map(|op| match op {
            WriteOp::Put {
                namespace,
                key,
                value,
                ..
            } => (namespace.len() + key.len() + value.len()) as u64,
            _ => 0,
        })
        .sum()
}

fn apply(
    t: &mut Tables,
    op: &WriteOp,
    quotas: Quotas,
    now: u64,
) -> Result<WriteOutcome, StoreError> {
    match op {
        WriteOp::Put {
            namespace,
            key,
            value,
            expires_at,
            within,
        } => {
            let limits = NewKeyLimits {
                quotas,
                within: within.as_ref(),
            };
            put(t, namespace, key, value, *expires_at, limits, now)
        }
        WriteOp::DeleteKey { namespace, key } => delete_key(t, namespace, key, now),
        WriteOp::DeleteNamespace { namespace } => delete_namespace(t, namespace),
        WriteOp::PurgeExpired { now } => Ok(WriteOutcome::Purged(purge_expired(t, *now)?)),
    }
}

/// What a new key must fit in: the store's quotas and the writing client's, if any.
#[derive(Clone, Copy)]
struct NewKeyLimits<'a> {
    quotas: Quotas,
    within: Option<&'a Arc<NamespaceQuota>>,
}

/// Creates or overwrites a pair: a new key counts against the namespace's limit and goes to
/// the end of the listing, an overwrite keeps its place.
fn put(
    t: &mut Tables,
    namespace: &str,
    key: &str,
    value: &str,
    expires_at: u64,
    limits: NewKeyLimits<'_>,
    now: u64,
) -> Result<WriteOutcome, StoreError> {
    let NewKeyLimits { quotas, within } = limits;
    let existing = t.kv.get((namespace, key)).map_err(db_err)?.map(|guard| {
        let (deadline, seq, _) = guard.value();
        (deadline, seq)
    });
    let row = t.namespace(namespace)?;
    // The key's sequence number (its place in the listing), and the namespace row
    // to write back when it changes.
    let (outcome, seq, new_row) = match (existing, row) {
        (Some((old_deadline, seq)), row) => {
            if old_deadline != 0 {
                t.expiry
                    .remove((old_deadline, namespace, key))
                    .map_err(db_err)?;
            }
            match row {
                // An expired key is gone: writing it again creates it anew, last
                // (it counted as one of the namespace's keys until now, and still does).
                Some((count, ns_seq, next)) if !is_live(old_deadline, now) => {
                    (WriteOutcome::Created, next, Some((count, ns_seq, next + 1)))
                }
                // An overwrite keeps the key's place in the listing.
                Some(_) => (WriteOutcome::Replaced, seq, None),
                // A key without its namespace row is never written; if there were one,
                // it is written in place as it was before the order was kept.
                None if is_live(old_deadline, now) => (WriteOutcome::Replaced, seq, None),
                None => (WriteOutcome::Created, seq, None),
            }
        }
        (None, row) => {
            let new_namespace = row.is_none();
            if let Some(quota) = store_quota_reached(t, new_namespace, quotas)? {
                return Ok(WriteOutcome::Rejected(Rejected::StoreFull(quota)));
            }
            if let Some(quota) = within.filter(|_| new_namespace)
                && matching_namespaces(t, quota)? >= quota.max
            {
                return Ok(WriteOutcome::Rejected(Rejected::ClientNamespacesFull(
                    quota.clone(),
                )));
            }
            let (count, ns_seq, next) = match row {
                Some(row) => row,
                None => (0, t.take_namespace_seq()?, 1),
            };
            if count >= quotas.keys_per_namespace {
                return Ok(WriteOutcome::Rejected(Rejected::NamespaceFull {
                    limit: quotas.keys_per_namespace,
                }));
            }
            (
                WriteOutcome::Created,
                next,
                Some((count + 1, ns_seq, next + 1)),
            )
        }
    };
    if let Some(row) = new_row {
        t.namespaces.insert(namespace, row).map_err(db_err)?;
    }
    t.kv.insert((namespace, key), (expires_at, seq, value))
        .map_err(db_err)?;
    if expires_at != 0 {
        t.expiry
            .insert((expires_at, namespace, key), ())
            .map_err(db_err)?;
    }
    Ok(outcome)
}

/// Deletes one key; an expired one counts as not found (it is removed all the same).
fn delete_key(
    t: &mut Tables,
    namespace: &str,
    key: &str,
    now: u64,
) -> Result<WriteOutcome, StoreError> {
    let Some((count, ns_seq, next)) = t.namespace(namespace)? else {
        return Ok(WriteOutcome::Rejected(Rejected::NamespaceNotFound));
    };
    let removed =
        t.kv.remove((namespace, key))
            .map_err(db_err)?
            .map(|guard| guard.value().0);
    let Some(deadline) = removed else {
        return Ok(WriteOutcome::Rejected(Rejected::KeyNotFound));
    };
    if deadline != 0 {
        t.expiry
            .remove((deadline, namespace, key))
            .map_err(db_err)?;
    }
    t.namespaces
        .insert(namespace, (count.saturating_sub(1), ns_seq, next))
        .map_err(db_err)?;
    Ok(if is_live(deadline, now) {
        WriteOutcome::Deleted
    } else {
        WriteOutcome::Rejected(Rejected::KeyNotFound)
    })
}

/// Deletes a namespace with all its keys and their expiry entries.
fn delete_namespace(t: &mut Tables, namespace: &str) -> Result<WriteOutcome, StoreError> {
    if t.namespaces.remove(namespace).map_err(db_err)?.is_none() {
        return Ok(WriteOutcome::Rejected(Rejected::NamespaceNotFound));
    }
    let mut doomed: Vec<(String, u64)> = Vec::new();
    for entry in t.kv.range((namespace, "")..).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let (ns, key) = k.value();
        if ns != namespace {
            break;
        }
        doomed.push((key.to_string(), v.value().0));
    }
    for (key, deadline) in doomed {
        t.kv.remove((namespace, key.as_str())).map_err(db_err)?;
        if deadline != 0 {
            t.expiry
                .remove((deadline, namespace, key.as_str()))
                .map_err(db_err)?;
        }
    }
    Ok(WriteOutcome::Deleted)
}

/// Removes up to [`MAX_PURGE_PER_TXN`] entries whose deadline is at or before
/// `now`, walking the expiry index from its start: never the whole store.
fn purge_expired(t: &mut Tables, now: u64) -> Result<u64, StoreError> {
    let mut due: Vec<(u64, String, String)> = Vec::new();
    for entry in t
        .expiry
        .range(..(now.saturating_add(1), "", ""))
        .map_err(db_err)?
    {
        let (k, _) = entry.map_err(db_err)?;
        let (deadline, ns, key) = k.value();
        if deadline > now {
            break;
        }
        due.push((deadline, ns.to_string(), key.to_string()));
        if due.len() >= MAX_PURGE_PER_TXN {
            break;
        }
    }
    let mut removed = 0;
    for (deadline, ns, key) in due {
        t.expiry
            .remove((deadline, ns.as_str(), key.as_str()))
            .map_err(db_err)?;
        // The index entry may be stale only if the key was rewritten with another
        // deadline; the index is kept in step on every put, so check anyway.
        let current =
            t.kv.get((ns.as_str(), key.as_str()))
                .map_err(db_err)?
                .map(|g| g.value().0);
        if current == Some(deadline) {
            t.kv.remove((ns.as_str(), key.as_str())).map_err(db_err)?;
            if let Some((count, ns_seq, next)) = t.namespace(&ns)? {
                t.namespaces
                    .insert(ns.as_str(), (count.saturating_sub(1), ns_seq, next))
                    .map_err(db_err)?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}
