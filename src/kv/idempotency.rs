//! Durable `Idempotency-Key` answers for start-task: a retried request returns the first
//! answer instead of starting the tasks again, also after a restart.
//!
//! Kept in its own tables of the store's database, written with their own (fsynced)
//! transactions: these writes are rare (only requests carrying the header), so they do
//! not go through the key-value writer's group commit. Entries expire after the
//! configured retention; expired entries are never returned and are removed a few at a
//! time whenever a new one is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError, db_err, now_ms};

/// (expires_at ms, request fingerprint, HTTP status, response body).
type StoredAnswer<'a> = (u64, &'a [u8], u16, &'a [u8]);
/// key → [`StoredAnswer`].
const ANSWERS: TableDefinition<&str, StoredAnswer> = TableDefinition::new("idempotency_answers");
/// (expires_at, key) → (): finds expired answers without a scan.
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("idempotency_expiry");

/// Expired answers removed per stored answer.
const PURGE_PER_WRITE: usize = 64;

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub fingerprint: Vec<u8>,
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct IdempotencyStore {
    store: Store,
    retention: Duration,
    /// One lock per key in use, so concurrent requests with the same key run one
    /// after the other and the later ones see the first one's answer.
    in_use: Arc<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>>,
}

impl IdempotencyStore {
    /// Creates the tables if needed.
    pub fn open(store: Store, retention: Duration) -> Result<IdempotencyStore, StoreError> {
        let txn = store.database()?.begin_write().map_err(db_err)?;
        txn.open_table(ANSWERS).map_err(db_err)?;
        txn.open_table(EXPIRY).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(IdempotencyStore {
            store,
            retention,
            in_use: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Whether the database refuses writes for lack of disk space (see
    /// [`Store::writes_blocked_by_full_disk`]): an answer could not be stored now.
    pub fn writes_blocked_by_full_disk(&self) -> bool {
        self.store.writes_blocked_by_full_disk()
    }

    /// The directory holding the database, for messages.
    pub fn data_dir(&self) -> &std::path::Path {
        let path = self.store.path();
        path.parent().unwrap_or(path)
    }

    /// Serialises requests using the same key; hold the guard until the answer is stored.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, weak| weak.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// The live answer stored under `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Answer>, StoreError> {
        let txn = self.store.database()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(ANSWERS).map_err(db_err)?;
        let Some(guard) = table.get(key).map_err(db_err)? else {
            return Ok(None);
        };
        let (expires_at, fingerprint, status, body) = guard.value();
        if expires_at <= now_ms() {
            return Ok(None);
        }
        Ok(Some(Answer {
            fingerprint: fingerprint.to_vec(),
            status,
            body: body.to_vec(),
        }))
    }

    /// Stores an answer durably (returns after the fsynced commit).
    pub async fn put(&self, key: &str, answer: Answer) -> Result<(), StoreError> {
        let db = self.store.database()?;
        let store = self.store.clone();
        let key = key.to_string();
        let expires_at = now_ms().saturating_add(self.retention.as_millis() as u64);
        tokio::task::spawn_blocking(move || {
            let outcome = store_answer(&db, &key, expires_at, &answer);
            // Released first: a reopen waits for every handle to the old database to go.
            drop(db);
            store.note_own_commit(&outcome);
            outcome
        })
        .await
        .map_err(|e| StoreError::Db(format!("idempotency write task failed: {e}")))?
    }
}

/// One fsynced transaction: the answer, its expiry entry, and a few expired answers removed.
fn store_answer(
    db: &redb::Database,
    key: &str,
    expires_at: u64,
    answer: &Answer,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut answers = txn.open_table(ANSWERS).map_err(db_err)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(db_err)?;
        let now = now_ms();
        let due: Vec<(u64, String)> = expiry
            .range(..(now, ""))
            .map_err(db_err)?
            .take(PURGE_PER_WRITE)
            .filter_map(Result::ok)
            .map(|(k, _)| {
                let (at, key) = k.value();
                (at, key.to_string())
            })
            .collect();
        for (at, old) in due {
            expiry.remove((at, old.as_str())).map_err(db_err)?;
            let still_due = answers
                .get(old.as_str())
                .map_err(db_err)?
                .is_some_and(|g| g.value().0 == at);
            if still_due {
                answers.remove(old.as_str()).map_err(db_err)?;
            }
        }
        let previous = answers.get(key).map_err(db_err)?.map(|g| g.value().0);
        if let Some(at) = previous {
            expiry.remove((at, key)).map_err(db_err)?;
        }
        answers
            .insert(
                key,
                (
                    expires_at,
                    answer.fingerprint.as_slice(),
                    answer.status,
                    answer.body.as_slice(),
                ),
            )
            .map_err(db_err)?;
        expiry.insert((expires_at, key), ()).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok(())
}
