//! Butler's key-value store, made durable with redb.
//!
//! Sense load scripts pass parameters between apps through this store, so a value
//! that was acknowledged must survive restarts, crashes and power cuts. Every write
//! goes through one writer thread ([`writer`]) that commits batches of concurrent
//! requests in one fsynced transaction (group commit), and replies only after the
//! commit returned. Reads use redb's MVCC read transactions and never wait for the
//! writer.
//!
//! Expiry is an absolute wall-clock deadline (ms since the Unix epoch) stored with
//! the value, so TTLs keep counting across restarts; a read never returns an
//! expired value, whether or not the sweeper ([`expiry`]) has removed it yet.
//!
//! The whole store is exported and restored in one documented format by [`backup`]; the
//! file's own format version is kept by `schema` (README, "Store format version").
//!
//! This module knows nothing of HTTP.

pub mod backup;
mod expiry;
pub mod idempotency;
mod schema;
mod slot;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};
use slot::DbSlot;

use schema::{EXPIRY, KV, NAMESPACES};
pub use writer::{
    NamespaceQuota, Quotas, Rejected, StoreQuota, WriteOp, WriteOutcome, WriterStats,
};

/// redb's page cache. Its default (1 GiB) lets the process grow with the database
/// (about 200 MiB resident at a million keys); an appliance wants a bound. 32 MiB
/// holds the hot pages of hundreds of thousands of keys, and a page not cached is
/// one read from the OS page cache away.
pub(crate) const CACHE_BYTES: usize = 32 << 20;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "butler-edge.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the key-value database {path}: {source}. The file is kept as it is; \
         move it aside to start with an empty store, or restore it from a backup"
    )]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "cannot write the key-value database {path}: {source}. Make the data directory and the \
         file writable for the user butler-edge runs as, or choose another directory with \
         --data-dir or ButlerEdge.dataDir"
    )]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot prepare the tables in the key-value database {path}: {message}")]
    Schema { path: PathBuf, message: String },
    /// The file's format record asks for a newer reader than this release (a rollback
    /// after a newer release changed the format incompatibly).
    #[error(
        "the key-value database {path} was written by a newer butler-edge in store format \
         {format_version}, which only releases reading format {oldest_reader} or later may \
         open; this release reads format {}. Nothing in the file was changed. Start the newer \
         release again (on the appliance: install the newer update again), or, to stay on this \
         release, export the store with the newer release (GET /v4/admin/store), move the file \
         aside, start this release on an empty store and restore the export into it \
         (PUT /v4/admin/store)",
        schema::FORMAT_VERSION
    )]
    TooNew {
        path: PathBuf,
        format_version: u64,
        oldest_reader: u64,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file system holding the database is full (ENOSPC or a quota): nothing in the
    /// write was stored; the caller should free space where the database lives.
    #[error("no space left on the device holding the key-value database ({detail})")]
    NoSpace { detail: String },
    /// redb latched an I/O failure and the database is being (or could not be) reopened;
    /// a moment later the request may succeed.
    #[error("the key-value database is unavailable: {detail}")]
    Unavailable { detail: String },
    /// An I/O error other than a full disk (e.g. EIO from failing hardware).
    #[error("I/O error on the key-value database: {detail}")]
    Io { detail: String },
    #[error("key-value database error: {0}")]
    Db(String),
    #[error("the key-value store is shutting down")]
    Closed,
    /// A restore of the whole store holds the database for its one write transaction.
    #[error("a restore of the whole key-value store is under way; writes resume when it ends")]
    Restoring,
}

impl StoreError {
    /// A copy for each caller of a failed group commit (the sources of start-up errors are
    /// not `Clone`; those never come from a commit and keep only their text).
    fn for_caller(&self) -> StoreError {
        match self {
            StoreError::NoSpace { detail } => StoreError::NoSpace {
                detail: detail.clone(),
            },
            StoreError::Unavailable { detail } => StoreError::Unavailable {
                detail: detail.clone(),
            },
            StoreError::Io { detail } => StoreError::Io {
                detail: detail.clone(),
            },
            StoreError::Db(message) => StoreError::Db(message.clone()),
            StoreError::Closed => StoreError::Closed,
            StoreError::Restoring => StoreError::Restoring,
            other => StoreError::Db(other.to_string()),
        }
    }
}

/// Whether an I/O error means the file system is out of space for us.
fn is_no_space(io: &std::io::Error) -> bool {
    matches!(
        io.raw_os_error(),
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
    ) || io.kind() == std::io::ErrorKind::StorageFull
}

/// Classifies a redb error by what it means for the caller: a full disk, a database that
/// must be reopened (a retry will do), another I/O error, or anything else.
fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) if is_no_space(&io) => StoreError::NoSpace {
            detail: io.to_string(),
        },
        redb::Error::Io(io) => StoreError::Io {
            detail: io.to_string(),
        },
        redb::Error::PreviousIo | redb::Error::DatabaseClosed => StoreError::Unavailable {
            detail: "an earlier write failed with an I/O error and the database is being reopened"
                .into(),
        },
        other => StoreError::Db(other.to_string()),
    }
}

pub use crate::clock::now_ms;

/// The absolute deadline for a TTL in milliseconds counted from `now`: `0` (no
/// expiry) for a TTL of zero or less, as Butler treats them.
pub fn deadline_for(ttl_ms: i64, now: u64) -> u64 {
    if ttl_ms <= 0 {
        0
    } else {
        now.saturating_add(ttl_ms as u64)
    }
}

fn is_live(expires_at: u64, now: u64) -> bool {
    expires_at == 0 || expires_at > now
}

/// A permission problem is not damage: say what to fix instead of suggesting to
/// move the file aside.
fn open_error(path: &Path, source: redb::DatabaseError) -> StoreError {
    use std::io::ErrorKind;
    match source {
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            StoreError::NotWritable {
                path: path.to_path_buf(),
                source: io,
            }
        }
        source => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn schema_error(path: &Path, error: schema::SchemaError) -> StoreError {
    match error {
        schema::SchemaError::TooNew(record) => StoreError::TooNew {
            path: path.to_path_buf(),
            format_version: record.format_version,
            oldest_reader: record.oldest_reader,
        },
        schema::SchemaError::Other(message) => StoreError::Schema {
            path: path.to_path_buf(),
            message,
        },
    }
}

/// The names in the order of their sequence numbers (see [`schema`]); equal ones (none, in
/// practice) stay in name order, the order they were collected in.
fn in_seq_order(mut entries: Vec<(u64, String)>) -> Vec<String> {
    entries.sort_by_key(|(seq, _)| *seq);
    entries.into_iter().map(|(_, name)| name).collect()
}

/// The keys of `namespace` live at `now`, in listing order.
fn live_keys(
    kv: &impl ReadableTable<(&'static str, &'static str), (u64, u64, &'static str)>,
    namespace: &str,
    now: u64,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    for entry in kv.range((namespace, "")..).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let (ns, key) = k.value();
        if ns != namespace {
            break;
        }
        let (expires_at, seq, _) = v.value();
        if is_live(expires_at, now) {
            keys.push((seq, key.to_string()));
        }
    }
    Ok(in_seq_order(keys))
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DbSlot>,
    path: PathBuf,
    /// What the store may hold; a restore checks the whole export against them.
    quotas: Quotas,
    writer: writer::Handle,
    sweeper: expiry::Sweeper,
}

impl Store {
    /// Opens (or creates) the database in `data_dir`. Must be called inside a tokio
    /// runtime: it starts the expiry sweeper task.
    pub fn open(data_dir: &Path, quotas: Quotas) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let schema_error = |e| schema_error(&path, e);
        schema::check_readable(&path).map_err(schema_error)?;
        let db = slot::open_database(&path)?;
        schema::create_tables(&db).map_err(schema_error)?;
        let db = DbSlot::new(path.clone(), db);
        let sweeper = expiry::Sweeper::new();
        let writer = writer::spawn(db.clone(), quotas, sweeper.clone())?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                path,
                quotas,
                writer,
                sweeper,
            }),
        };
        store.inner.sweeper.start(store.clone());
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The database, for modules that keep their own tables in it ([`idempotency`]).
    /// Fetch it for each transaction: it is replaced after an I/O failure.
    pub(crate) fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.inner.db.get()
    }

    /// For modules that commit their own write transactions ([`idempotency`]): the same
    /// bookkeeping the writer thread does after each commit, so that a full disk met there
    /// is remembered and a handle redb disabled is reopened at once, not at the next
    /// key-value write. Blocking (a reopen runs redb's recovery): call off the reactor.
    pub(crate) fn note_own_commit(&self, outcome: &Result<(), StoreError>) {
        match outcome {
            Ok(()) => self.inner.db.committed(),
            Err(e) => self.inner.db.after_failure(e),
        }
    }

    /// Applies write operations in one durable transaction (possibly shared with
    /// other callers' operations) and returns one outcome per operation, in order.
    /// `Ok` means the transaction was committed and fsynced. The puts in `ops` are all or
    /// none: when one is refused (its namespace full), none is applied and the others
    /// answer [`WriteOutcome::NotApplied`].
    pub async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>, StoreError> {
        self.inner.writer.submit(ops).await
    }

    /// One write operation; see [`Store::write`].
    pub async fn write_one(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let mut outcomes = self.write(vec![op]).await?;
        outcomes.pop().ok_or(StoreError::Closed)
    }

    /// All namespaces, in creation order (as Butler lists them). A namespace exists
    /// from its first key until it is deleted, even when all its keys have expired or
    /// were deleted.
    ///
    /// Reads run on the calling (reactor) thread on purpose: a redb read
    /// transaction over cached pages takes microseconds, less than the hand-off to
    /// a blocking thread would cost.
    pub fn namespaces(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.inner.db.get()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(NAMESPACES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (name, row) = entry.map_err(db_err)?;
            let (_, seq, _) = row.value();
            out.push((seq, name.value().to_string()));
        }
        Ok(in_seq_order(out))
    }

    pub fn namespace_exists(&self, namespace: &str) -> Result<bool, StoreError> {
        let txn = self.inner.db.get()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(NAMESPACES).map_err(db_err)?;
        Ok(table.get(namespace).map_err(db_err)?.is_some())
    }

    /// The live value of a key, or `None` if absent or expired.
    pub fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.inner.db.get()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(KV).map_err(db_err)?;
        let Some(guard) = table.get((namespace, key)).map_err(db_err)? else {
            return Ok(None);
        };
        let (expires_at, _, value) = guard.value();
        Ok(is_live(expires_at, now_ms()).then(|| value.to_string()))
    }

    /// The live keys of a namespace in insertion order (as Butler lists them), or `None`
    /// if the namespace does not exist.
    pub fn keys(&self, namespace: &str) -> Result<Option<Vec<String>>, StoreError> {
        let txn = self.inner.db.get()?.begin_read().map_err(db_err)?;
        let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
        if namespaces.get(namespace).map_err(db_err)?.is_none() {
            return Ok(None);
        }
        let table = txn.open_table(KV).map_err(db_err)?;
        live_keys(&table, namespace, now_ms()).map(Some)
    }

    /// The earliest stored deadline, for the sweeper.
    fn next_deadline(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.inner.db.get()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(EXPIRY).map_err(db_err)?;
        Ok(table.first().map_err(db_err)?.map(|(k, _)| k.value().0))
    }

    /// Counts for health and metrics: (namespaces, stored keys including expired
    /// ones not yet swept).
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.inner.db.get()?.begin_read().map_err(db_err)?;
        let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
        let kv = txn.open_table(KV).map_err(db_err)?;
        use redb::ReadableTableMetadata;
        Ok((namespaces.len().map_err(db_err)?, kv.len().map_err(db_err)?))
    }

    /// Whether the last write failed because the disk was full (none has succeeded since):
    /// writes are refused until there is room again.
    pub fn writes_blocked_by_full_disk(&self) -> bool {
        self.inner.db.out_of_space()
    }

    /// Whether the writer thread takes work within `within` (the watchdog's check that
    /// writes are not stuck behind a hung commit).
    pub async fn writer_answers_within(&self, within: std::time::Duration) -> bool {
        self.inner.writer.answers_within(within).await
    }

    /// Group-commit counters (commits, operations, largest batch, expired removed).
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.writer.stats
    }

    /// Stops the sweeper and the writer after the queued writes are committed,
    /// and waits until the database file is closed.
    pub async fn close(self) {
        self.inner.sweeper.stop();
        self.inner.db.close();
        self.inner.writer.close().await;
    }
}
