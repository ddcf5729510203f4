//! The open database behind the store, replaceable after an I/O failure.
//!
//! redb latches an I/O error hit while writing (on an appliance almost always a full
//! disk: ENOSPC): from then on every transaction of that `Database`, reads included,
//! fails with `PreviousIo` until it is closed and opened again. Without a reopen one full
//! moment would leave the service answering 500 to everything until someone restarts it.
//! So the writer thread, after a failed batch, asks the database whether it still takes
//! a write and if not reopens it here; readers fetch the current handle for every read
//! and pick up the new one.
//!
//! The reopen is redb's ordinary crash recovery (the latched handle could not record a
//! clean close), the same as after `kill -9`: committed transactions are all there, the
//! failed one is not. Nothing acknowledged is lost because a request is acknowledged only
//! after its commit returned.
//!
//! After a write failed for lack of space, later writes are refused without touching redb
//! until the file system has [`NO_SPACE_RETRY_BYTES`] free again: each attempt on a full
//! disk would fail, latch the database again and cost a reopen, during which reads get 503.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use super::{CACHE_BYTES, StoreError, open_error};

/// Free space a write waits for after one failed with ENOSPC: far more than the pages a
/// group commit dirties, so the next attempt most likely succeeds.
pub const NO_SPACE_RETRY_BYTES: u64 = 1 << 20;

/// How long a reopen waits for the old handle to be released (a read in flight on another
/// thread holds it for microseconds; an idempotency write for one commit).
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// How long a read waits for a reopen under way before answering 503. A reopen of the
/// appliance's database takes milliseconds (9 ms in tests/fault_disk.rs); reads run on the
/// reactor threads, so the wait is bounded well below what would stall other connections.
const READ_WAIT: Duration = Duration::from_millis(250);

/// How often a failed reopen is retried in the background, so that a store nobody writes
/// to comes back for readers too.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

/// Opens (or creates) the database file with the store's settings, logging redb's
/// recovery when the file was not closed cleanly (after `kill -9`, a power cut, or a handle
/// latched by an I/O error): it walks the whole file, so on a big database it is the part
/// of a start-up or reopen that takes time, and an admin should see why.
pub fn open_database(path: &Path) -> Result<Database, StoreError> {
    let shown = path.display().to_string();
    let logged = AtomicBool::new(false);
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_repair_callback(move |_session| {
            if !logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    path = %shown,
                    "key-value database was not closed cleanly; redb is checking it and rebuilding its allocator state (crash recovery)"
                );
            }
        })
        .create(path)
        .map_err(|source| open_error(path, source))
}

pub struct DbSlot {
    path: PathBuf,
    current: RwLock<Option<Arc<Database>>>,
    /// A write failed for lack of space and none has succeeded since.
    out_of_space: AtomicBool,
    /// Serializes reopen attempts (writer thread, background retry); holds whether one is
    /// under way, which readers wait on through `reopened`.
    reopening: Mutex<bool>,
    reopened: Condvar,
    /// Set when the store closes: the background retry stops.
    closed: AtomicBool,
}

impl DbSlot {
    pub fn new(path: PathBuf, db: Database) -> Arc<DbSlot> {
        Arc::new(DbSlot {
            path,
            current: RwLock::new(Some(Arc::new(db))),
            out_of_space: AtomicBool::new(false),
            reopening: Mutex::new(false),
            reopened: Condvar::new(),
            closed: AtomicBool::new(false),
        })
    }

    /// The current handle, or 503-worthy `Unavailable` when a reopen failed or takes
    /// longer than [`READ_WAIT`].
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.current() {
            return Ok(db);
        }
        // A reopen may be under way: wait for it a moment rather than fail the read.
        let started = Instant::now();
        let mut busy = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        while *busy && started.elapsed() < READ_WAIT {
            busy = self
                .reopened
                .wait_timeout(busy, READ_WAIT.saturating_sub(started.elapsed()))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(busy);
        self.current().ok_or_else(|| StoreError::Unavailable {
            detail: "a write failed with an I/O error and the database is being reopened".into(),
        })
    }

    fn current(&self) -> Option<Arc<Database>> {
        self.current.read().ok().and_then(|guard| guard.clone())
    }

    /// The handle for a write of about `payload_bytes`: reopens a database a failed reopen
    /// left closed, and refuses the write while the disk is still as full as when the last
    /// write failed.
    pub fn for_write(&self, payload_bytes: u64) -> Result<Arc<Database>, StoreError> {
        if self.out_of_space.load(Ordering::Acquire) {
            let dir = self.path.parent().unwrap_or(&self.path);
            let needed = NO_SPACE_RETRY_BYTES.saturating_add(payload_bytes.saturating_mul(2));
            match crate::disk::available_bytes(dir) {
                Ok(free) if free < needed => {
                    return Err(StoreError::NoSpace {
                        detail: format!(
                            "{free} bytes free; after a write failed for lack of space, writes \
                             wait until {needed} bytes are free"
                        ),
                    });
                }
                // Room again, or free space unknown: let redb try.
                _ => {}
            }
        }
        match self.current() {
            Some(db) => Ok(db),
            None => {
                self.reopen()?;
                self.get()
            }
        }
    }

    /// Whether writes are refused for lack of space: the last one failed so (none has
    /// succeeded since) and the file system still has less than [`NO_SPACE_RETRY_BYTES`]
    /// free.
    pub fn out_of_space(&self) -> bool {
        self.out_of_space.load(Ordering::Acquire)
            && crate::disk::available_bytes(self.path.parent().unwrap_or(&self.path))
                .is_ok_and(|free| free < NO_SPACE_RETRY_BYTES)
    }

    /// A commit went through: the disk has room again.
    pub fn committed(&self) {
        if self.out_of_space.swap(false, Ordering::AcqRel) {
            tracing::info!(path = %self.path.display(), "key-value writes succeed again: disk space was freed");
        }
    }

    /// After a failed batch: remembers a full disk, and reopens the database if redb has
    /// latched the failure (it then refuses to begin a write transaction). Called on the
    /// writer thread before the callers get their answer, so the next read finds a usable
    /// handle.
    pub fn after_failure(self: &Arc<Self>, error: &StoreError) {
        if matches!(error, StoreError::NoSpace { .. }) {
            self.out_of_space.store(true, Ordering::Release);
        }
        let latched = match self.current() {
            Some(db) => match db.begin_write() {
                Ok(txn) => {
                    drop(txn);
                    false
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "key-value database refuses writes after the failed commit; reopening it");
                    true
                }
            },
            // Closed by a failed reopen: for_write retries.
            None => false,
        };
        if latched && self.reopen().is_err() {
            self.retry_in_background();
        }
    }

    /// Closes the current handle and opens the file again. Readers arriving meanwhile wait
    /// for it (up to [`READ_WAIT`]).
    fn reopen(&self) -> Result<(), StoreError> {
        let mut busy = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        while *busy {
            busy = self.reopened.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        if self
            .current()
            .is_some_and(|db| db.begin_write().map(drop).is_ok())
        {
            // Another attempt got there first.
            return Ok(());
        }
        *busy = true;
        drop(busy);
        let result = self.open_again();
        *self.reopening.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.reopened.notify_all();
        result
    }

    fn open_again(&self) -> Result<(), StoreError> {
        // Dropping the last Arc closes the file and releases its locks; a reader still
        // holding one delays that by a moment, which the retry below absorbs.
        let old = self.current.write().ok().and_then(|mut g| g.take());
        drop(old);
        let started = Instant::now();
        loop {
            match open_database(&self.path) {
                Ok(db) => {
                    if let Ok(mut guard) = self.current.write() {
                        *guard = Some(Arc::new(db));
                    }
                    tracing::info!(
                        path = %self.path.display(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "key-value database reopened after an I/O error"
                    );
                    return Ok(());
                }
                Err(StoreError::Open {
                    source: redb::DatabaseError::DatabaseAlreadyOpen,
                    ..
                }) if started.elapsed() < RELEASE_WAIT => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot reopen the key-value database; reads and writes get 503 until it opens");
                    return Err(e);
                }
            }
        }
    }

    fn retry_in_background(self: &Arc<Self>) {
        let slot = self.clone();
        let spawned = std::thread::Builder::new()
            .name("kv-reopen".into())
            .spawn(move || {
                while !slot.closed.load(Ordering::Acquire) && slot.current().is_none() {
                    std::thread::sleep(REOPEN_RETRY);
                    if slot.closed.load(Ordering::Acquire) {
                        break;
                    }
                    let _ = slot.reopen();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the key-value reopen thread; the next write retries");
        }
    }

    /// Stops background reopen attempts (the store is closing).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}
