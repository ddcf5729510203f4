//! The start-task service: everything a start request means besides HTTP.
//!
//! In order: the `Idempotency-Key` protocol (one request per key at a time, a replay of the
//! stored answer, a refusal when the key was used for a different request), the disk checks
//! that keep the promises the request relies on (its key-value items stored, its answer
//! kept), the start itself ([`Starter::run`], which stores the items once QRS has confirmed
//! the tasks exist), and keeping the answer. Failures are a typed [`StartFailure`]; the HTTP
//! edge (`http::error`) gives each its status and message.

use std::path::PathBuf;
use std::sync::Arc;

use super::{KeyValueItem, StartError, StartReport, StartRequest, StartTaskPolicy, Starter};
use crate::disk::{DiskError, DiskGuard};
use crate::kv::idempotency::{Answer, IdempotencyStore};
use crate::kv::{
    NamespaceQuota, Rejected, Store, StoreError, StoreQuota, WriteOp, WriteOutcome, deadline_for,
    now_ms,
};
use crate::qrs::QrsError;

/// What the start-task endpoint runs on. Built once at start-up.
pub struct StartService {
    pub starter: Starter,
    /// `Butler.startTaskFilter`, applied to every caller; a client's own allow-list
    /// (`ButlerEdge.clientAuth.clients[].startTask`) narrows it further.
    pub policy: StartTaskPolicy,
    pub idempotency: IdempotencyStore,
}

/// Where a request's key-value items go: the store when the key-value API is served
/// (`None`: they are ignored, as Butler does), and the free-disk guard when it is on.
#[derive(Clone, Default)]
pub struct KeyValueTarget<'a> {
    pub store: Option<&'a Store>,
    pub disk_guard: Option<&'a DiskGuard>,
    /// The caller's namespace quota, if its client entry has one.
    pub within: Option<Arc<NamespaceQuota>>,
}

/// A request's `Idempotency-Key`, scoped to its caller, and what makes it the same request.
pub struct Idempotency {
    /// The key as the caller sent it (for messages and logs).
    pub key: String,
    /// The caller's identity (`authz::Access::identity`): each caller has its own keys.
    pub caller: String,
    /// SHA-256 over the method, path, query and body.
    pub fingerprint: Vec<u8>,
}

impl Idempotency {
    /// Another client reusing a key neither replays this caller's answer (which would tell
    /// it what this caller started) nor is refused.
    fn stored_key(&self) -> String {
        format!("{}:{}:{}", self.caller.len(), self.caller, self.key)
    }
}

/// How a start request ended, when it did not fail.
pub enum Started {
    /// Carried out now: the report and its JSON encoding (the answer).
    Now { report: StartReport, body: Vec<u8> },
    /// The same request with the same `Idempotency-Key` was answered before: that answer.
    Replayed(Answer),
}

/// Why a start request was refused or failed; in every case no task was started.
#[derive(Debug)]
pub enum StartFailure {
    /// The `Idempotency-Key` was used before for a different request.
    KeyReused { key: String },
    /// The stored `Idempotency-Key` answers could not be read.
    IdempotencyUnreadable(StoreError),
    /// The free-disk guard refused; `for_idempotency`: because the answer could not be
    /// kept (otherwise: because the key-value items could not be).
    Disk {
        error: DiskError,
        for_idempotency: bool,
    },
    /// The last database write failed for lack of space, so the answer could not be kept.
    AnswerCannotBeKept { data_dir: PathBuf },
    /// QRS could not be asked which tasks to start.
    Qrs { host: String, error: QrsError },
    /// QRS did not answer within the request deadline.
    Deadline { host: String, error: String },
    /// Storing the key-value items failed (`db_file`: the database, for the message).
    KeyValueStore { error: StoreError, db_file: PathBuf },
    /// A key-value item's namespace holds its limit of keys.
    NamespaceFull {
        namespace: String,
        key: String,
        limit: u64,
    },
    /// The store holds its limit of keys or namespaces.
    StoreFull(StoreQuota),
    /// The caller's namespace patterns already match its limit of namespaces.
    ClientNamespacesFull(Arc<NamespaceQuota>),
}

impl StartFailure {
    /// Whether QRS was the cause (counted as `butler_edge_qrs_unreachable_total`).
    pub fn is_qrs_unreachable(&self) -> bool {
        matches!(
            self,
            StartFailure::Qrs { .. } | StartFailure::Deadline { .. }
        )
    }
}

/// Why the key-value items of a request were not stored.
#[derive(Debug)]
pub enum ItemsNotStored {
    Store {
        error: StoreError,
        db_file: PathBuf,
    },
    NamespaceFull {
        namespace: String,
        key: String,
        limit: u64,
    },
    StoreFull(StoreQuota),
    ClientNamespacesFull(Arc<NamespaceQuota>),
}

impl StartService {
    /// Carries out `request` for a caller allowed `policy`.
    pub async fn start(
        &self,
        request: &StartRequest,
        policy: &StartTaskPolicy,
        idempotency: Option<&Idempotency>,
        items: KeyValueTarget<'_>,
    ) -> Result<Started, StartFailure> {
        let stored_key = idempotency.map(Idempotency::stored_key);
        let _one_at_a_time = match &stored_key {
            Some(stored_key) => Some(self.idempotency.lock(stored_key).await),
            None => None,
        };
        if let (Some(id), Some(stored_key)) = (idempotency, &stored_key)
            && let Some(answer) = self.replay(id, stored_key)?
        {
            return Ok(Started::Replayed(answer));
        }
        self.check_disk(request, idempotency.is_some(), &items)?;
        let report = self
            .starter
            .run(request, policy, |kv| {
                store_items(items.store, items.within, kv)
            })
            .await
            .map_err(|e| self.failure(e))?;
        let body = serde_json::to_vec(&report).unwrap_or_default();
        if let (Some(id), Some(stored_key)) = (idempotency, &stored_key) {
            let answer = Answer {
                fingerprint: id.fingerprint.clone(),
                status: 200,
                body: body.clone(),
            };
            if let Err(e) = self.idempotency.put(stored_key, answer).await {
                // The tasks have been started: the caller must still get the answer.
                tracing::error!(idempotency_key = %id.key, error = %e, "cannot store the Idempotency-Key answer");
            }
        }
        Ok(Started::Now { report, body })
    }

    /// The stored answer for this key, if the same request was answered before.
    fn replay(&self, id: &Idempotency, stored_key: &str) -> Result<Option<Answer>, StartFailure> {
        let stored = self
            .idempotency
            .get(stored_key)
            .map_err(StartFailure::IdempotencyUnreadable)?;
        let Some(answer) = stored else {
            return Ok(None);
        };
        if answer.fingerprint != id.fingerprint {
            return Err(StartFailure::KeyReused {
                key: id.key.clone(),
            });
        }
        tracing::info!(idempotency_key = %id.key, "start task: replaying the stored answer");
        Ok(Some(answer))
    }

    /// Refuses before anything starts when a promise could not be kept: key-value items are
    /// stored before any task starts, so on a nearly full disk the whole request is refused
    /// rather than tasks started whose parameters were lost; and an `Idempotency-Key`
    /// promises that a retry starts nothing twice, which holds only if the answer is kept.
    fn check_disk(
        &self,
        request: &StartRequest,
        idempotent: bool,
        items: &KeyValueTarget<'_>,
    ) -> Result<(), StartFailure> {
        let has_items = request
            .items
            .iter()
            .any(|item| matches!(item, super::BodyItem::KeyValue(_)));
        let guard = |for_idempotency| match items.disk_guard {
            Some(guard) => guard.check().map_err(|error| StartFailure::Disk {
                error,
                for_idempotency,
            }),
            None => Ok(()),
        };
        if items.store.is_some() && has_items {
            guard(false)?;
        }
        if idempotent {
            guard(true)?;
            if self.idempotency.writes_blocked_by_full_disk() {
                return Err(StartFailure::AnswerCannotBeKept {
                    data_dir: self.idempotency.data_dir().to_path_buf(),
                });
            }
        }
        Ok(())
    }

    fn failure(&self, e: StartError<ItemsNotStored>) -> StartFailure {
        let host = self.starter.qrs_host().to_string();
        match e {
            StartError::Qrs(error) => StartFailure::Qrs { host, error },
            StartError::Deadline(_) => StartFailure::Deadline {
                host,
                error: e.to_string(),
            },
            StartError::KeyValue(ItemsNotStored::Store { error, db_file }) => {
                StartFailure::KeyValueStore { error, db_file }
            }
            StartError::KeyValue(ItemsNotStored::NamespaceFull {
                namespace,
                key,
                limit,
            }) => StartFailure::NamespaceFull {
                namespace,
                key,
                limit,
            },
            StartError::KeyValue(ItemsNotStored::StoreFull(quota)) => {
                StartFailure::StoreFull(quota)
            }
            StartError::KeyValue(ItemsNotStored::ClientNamespacesFull(quota)) => {
                StartFailure::ClientNamespacesFull(quota)
            }
        }
    }
}

/// Commits the key-value items in one durable transaction before any task starts.
/// With the key-value API not served they are ignored, as Butler does.
async fn store_items(
    store: Option<&Store>,
    within: Option<Arc<NamespaceQuota>>,
    items: Vec<KeyValueItem>,
) -> Result<(), ItemsNotStored> {
    let Some(store) = store else {
        tracing::warn!(
            items = items.len(),
            "start task: key-value items ignored because the key-value store is not enabled"
        );
        return Ok(());
    };
    let now = now_ms();
    let ops: Vec<WriteOp> = items
        .iter()
        .map(|kv| WriteOp::Put {
            namespace: kv.namespace.clone(),
            key: kv.key.clone(),
            value: kv.value.clone(),
            expires_at: kv.ttl_ms.map_or(0, |ttl| deadline_for(ttl as i64, now)),
            within: within.clone(),
        })
        .collect();
    let outcomes = store
        .write(ops)
        .await
        .map_err(|error| ItemsNotStored::Store {
            error,
            db_file: store.path().to_path_buf(),
        })?;
    for (kv, outcome) in items.iter().zip(outcomes) {
        match outcome {
            WriteOutcome::Rejected(Rejected::NamespaceFull { limit }) => {
                return Err(ItemsNotStored::NamespaceFull {
                    namespace: kv.namespace.clone(),
                    key: kv.key.clone(),
                    limit,
                });
            }
            WriteOutcome::Rejected(Rejected::StoreFull(quota)) => {
                return Err(ItemsNotStored::StoreFull(quota));
            }
            WriteOutcome::Rejected(Rejected::ClientNamespacesFull(quota)) => {
                return Err(ItemsNotStored::ClientNamespacesFull(quota));
            }
            _ => {}
        }
    }
    Ok(())
}

impl StartReport {
    /// Distinct tasks QRS started: a task named by id, tag and custom property is started
    /// once and counted once.
    pub fn distinct_started(&self) -> usize {
        self.tasks_id
            .started
            .iter()
            .chain(&self.tasks_tag)
            .chain(&self.tasks_cp)
            .map(|t| t.task_id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }
}
