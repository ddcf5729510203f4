//! Start-task planning and execution: body items → allow-list → existence → start → report.
//!
//! Decides exactly as Butler what is started and where each task id, tag and custom property
//! is reported, then — unlike Butler, which reports every task as started before QRS has
//! answered — starts each distinct task once through QRS, waits for QRS's answer, and reports
//! tasks QRS did not start in `failed`. Knows nothing of HTTP requests to our server; the
//! endpoint hands it a parsed [`StartRequest`]. The [`StartService`] around the starter adds
//! what a request promises besides the start: `Idempotency-Key` and the disk checks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::{join_all, try_join_all};
use serde::Serialize;

use crate::qrs::{QrsClient, QrsError, StartOutcome, TaskInfo};
use fair_slots::{FairSlots, Slot};

mod fair_slots;
mod service;
pub use service::{
    Idempotency, ItemsNotStored, KeyValueTarget, StartFailure, StartService, Started,
};

/// Which task ids, tags and custom properties a caller may start
/// (`Butler.startTaskFilter`). Passed in per request so that a per-client policy can be used.
#[derive(Clone, Debug, Default)]
pub struct StartTaskPolicy {
    /// When false, everything is allowed.
    pub enabled: bool,
    pub task_ids: HashSet<String>,
    pub tags: HashSet<String>,
    pub custom_properties: HashSet<(String, String)>,
}

impl StartTaskPolicy {
    /// Everything may be started.
    pub fn unrestricted() -> StartTaskPolicy {
        StartTaskPolicy::default()
    }

    pub fn allows_task_id(&self, id: &str) -> bool {
        !self.enabled || self.task_ids.contains(id)
    }

    pub fn allows_tag(&self, tag: &str) -> bool {
        !self.enabled || self.tags.contains(tag)
    }

    pub fn allows_custom_property(&self, name: &str, value: &str) -> bool {
        !self.enabled
            || self
                .custom_properties
                .contains(&(name.to_string(), value.to_string()))
    }
}

/// A key-value pair to store before any task starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValueItem {
    pub namespace: String,
    pub key: String,
    pub value: String,
    /// Milliseconds until expiry; `None` means no expiry.
    pub ttl_ms: Option<u64>,
}

/// One item of the request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyItem {
    TaskId(String),
    Tag(String),
    CustomProperty { name: String, value: String },
    KeyValue(KeyValueItem),
}

/// A parsed start-task request.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// `{taskId}` from the path; `-` means "only what the body says".
    pub path_task_id: String,
    pub items: Vec<BodyItem>,
    pub all_task_ids_must_exist: bool,
    /// Hold the answer until the started tasks have finished (bounded by the wait timeout).
    pub wait: bool,
    /// Who asks (a client identity, or a caller's address without client certificates): the
    /// QRS call slots are shared fairly between callers.
    pub caller: String,
}

/// Tuning of the starter (`ButlerEdge.qrs`).
#[derive(Clone, Debug)]
pub struct StarterSettings {
    /// QRS calls in flight at once, over all requests, shared fairly between callers.
    pub max_concurrent_calls: usize,
    /// The most items one start request may carry (`ButlerEdge.qrs.maxItemsPerRequest`):
    /// each distinct tag and custom property is one QRS lookup.
    pub max_items_per_request: usize,
    /// All the QRS work of one request (lookups and starts, not `?wait=true`'s wait) must
    /// be done within this, so that a caller gets its answer in bounded time however many
    /// QRS calls the request needs (`ButlerEdge.qrs.requestDeadlineMs`).
    pub request_deadline: Duration,
    /// Upper bound on `?wait=true`.
    pub wait_timeout: Duration,
    /// How often a running execution is polled with `?wait=true`.
    pub wait_poll_interval: Duration,
}

/// Why a start-task request could not be carried out at all.
#[derive(Debug, thiserror::Error)]
pub enum StartError<E> {
    /// QRS could not be asked which tasks exist; nothing was started.
    #[error("{0}; no task was started")]
    Qrs(QrsError),
    /// The request deadline passed before any task could be started; none was.
    #[error(
        "QRS did not answer within the start request's deadline of {} ms \
         (ButlerEdge.qrs.requestDeadlineMs); no task was started",
        .0.as_millis()
    )]
    Deadline(Duration),
    /// The key-value items could not be stored; nothing was started.
    #[error("storing the key-value items failed, no task was started")]
    KeyValue(E),
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TaskIdOnly {
    #[serde(rename = "taskId")]
    pub task_id: String,
}

/// A task entry as Butler reports it, plus what QRS said (`executionSessionId`) and, with
/// `?wait=true`, how the run ended.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StartedTask {
    #[serde(rename = "taskId")]
    pub task_id: String,
    #[serde(rename = "taskName")]
    pub task_name: String,
    #[serde(rename = "executionSessionId")]
    pub execution_session_id: String,
    #[serde(rename = "executionStatus", skip_serializing_if = "Option::is_none")]
    pub execution_status: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FailedTask {
    #[serde(rename = "taskId")]
    pub task_id: String,
    #[serde(rename = "taskName")]
    pub task_name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TagOnly {
    pub tag: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CustomPropertyOnly {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TasksIdReport {
    pub started: Vec<StartedTask>,
    pub invalid: Vec<TaskIdOnly>,
    pub denied: Vec<TaskIdOnly>,
}

/// With `?wait=true`: whether every started task finished within the wait timeout.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WaitReport {
    pub complete: bool,
    #[serde(rename = "timeoutMs")]
    pub timeout_ms: u64,
}

/// The answer: Butler's shape plus `failed` (and `wait` with `?wait=true`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StartReport {
    #[serde(rename = "tasksId")]
    pub tasks_id: TasksIdReport,
    #[serde(rename = "tasksTag")]
    pub tasks_tag: Vec<StartedTask>,
    #[serde(rename = "tasksTagDenied")]
    pub tasks_tag_denied: Vec<TagOnly>,
    #[serde(rename = "tasksCP")]
    pub tasks_cp: Vec<StartedTask>,
    #[serde(rename = "tasksCPDenied")]
    pub tasks_cp_denied: Vec<CustomPropertyOnly>,
    pub failed: Vec<FailedTask>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitReport>,
}

/// True for a GUID in Sense's form: lower-case hex, 8-4-4-4-12. Butler reports upper-case
/// ids as invalid, and so does this.
pub fn is_task_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// What happened to one distinct task when it was started.
#[derive(Clone, Debug)]
enum Outcome {
    Started {
        session_id: String,
        status: Option<String>,
    },
    Failed(String),
}

/// Steps 1 and 2 of a start: what the request asks for, through the allow list. Pure.
struct Plan<'r> {
    /// Task ids in Butler's order (the path's, then the body's), with whether each is
    /// well formed and allowed; malformed ones are reported invalid once QRS has answered.
    ids: Vec<(&'r String, bool)>,
    /// The well-formed, allowed ids to look up.
    id_candidates: Vec<String>,
    tags: Vec<&'r str>,
    cps: Vec<(&'r str, &'r str)>,
    key_values: Vec<KeyValueItem>,
}

impl<'r> Plan<'r> {
    /// The plan for `request`: its task ids first, then its tags, custom properties and
    /// key-value pairs; what the allow list refuses goes into `report` as denied, in that
    /// order.
    fn of(
        request: &'r StartRequest,
        policy: &StartTaskPolicy,
        report: &mut StartReport,
    ) -> Plan<'r> {
        let ids = Self::task_ids(request, policy, report);
        let id_candidates = ids
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(id, _)| (*id).clone())
            .collect();
        let mut plan = Plan {
            ids,
            id_candidates,
            tags: Vec::new(),
            cps: Vec::new(),
            key_values: Vec::new(),
        };
        plan.add_items(request, policy, report);
        plan
    }

    /// The path's id and the body's ids, each once, with whether it is well formed; the
    /// allow list's refusals are reported denied and left out.
    fn task_ids(
        request: &'r StartRequest,
        policy: &StartTaskPolicy,
        report: &mut StartReport,
    ) -> Vec<(&'r String, bool)> {
        let mut ids: Vec<(&String, bool)> = Vec::new();
        let path_id = (request.path_task_id != "-").then_some(&request.path_task_id);
        let body_ids = request.items.iter().filter_map(|i| match i {
            BodyItem::TaskId(id) => Some(id),
            _ => None,
        });
        // An id named twice is one id: looked up, started and reported once.
        let mut seen_ids: HashSet<&str> = HashSet::new();
        for id in path_id.into_iter().chain(body_ids) {
            if !seen_ids.insert(id.as_str()) {
                continue;
            }
            if !is_task_guid(id) {
                ids.push((id, false));
            } else if !policy.allows_task_id(id) {
                tracing::warn!(task_id = %id, "start task: task id not on the allow list");
                report.tasks_id.denied.push(TaskIdOnly {
                    task_id: id.clone(),
                });
            } else {
                ids.push((id, true));
            }
        }
        ids
    }

    /// The body's tags, custom properties and key-value pairs, in the body's order; the
    /// allow list's refusals are reported denied and left out.
    fn add_items(
        &mut self,
        request: &'r StartRequest,
        policy: &StartTaskPolicy,
        report: &mut StartReport,
    ) {
        // A tag or custom property named twice is one QRS lookup and one report entry. QRS
        // compares tag names without regard to case, so allowed `Nightly` and `NIGHTLY` are
        // one lookup too (reported as first written). The allow-list itself compares exactly
        // (a variant it does not list is refused, never widened), so refused tags are told
        // apart exactly.
        let mut seen_tags: HashSet<(bool, String)> = HashSet::new();
        let mut seen_cps: HashSet<(&str, &str)> = HashSet::new();
        for item in &request.items {
            let repeated = match item {
                BodyItem::Tag(tag) if policy.allows_tag(tag) => {
                    !seen_tags.insert((true, tag.to_lowercase()))
                }
                BodyItem::Tag(tag) => !seen_tags.insert((false, tag.clone())),
                BodyItem::CustomProperty { name, value } => !seen_cps.insert((name, value)),
                _ => false,
            };
            if repeated {
                continue;
            }
            match item {
                BodyItem::Tag(tag) if policy.allows_tag(tag) => self.tags.push(tag),
                BodyItem::Tag(tag) => {
                    tracing::warn!(tag = %tag, "start task: tag not on the allow list");
                    report.tasks_tag_denied.push(TagOnly { tag: tag.clone() });
                }
                BodyItem::CustomProperty { name, value }
                    if policy.allows_custom_property(name, value) =>
                {
                    self.cps.push((name, value))
                }
                BodyItem::CustomProperty { name, value } => {
                    tracing::warn!(name = %name, value = %value, "start task: custom property not on the allow list");
                    report.tasks_cp_denied.push(CustomPropertyOnly {
                        name: name.clone(),
                        value: value.clone(),
                    });
                }
                BodyItem::KeyValue(kv) => self.key_values.push(kv.clone()),
                BodyItem::TaskId(_) => {}
            }
        }
    }

    /// The tasks the ids name, in order; unknown or malformed ids are reported invalid, and
    /// with `allTaskIdsMustExist` one invalid id denies them all.
    fn known_ids(
        &self,
        known: &HashMap<String, TaskInfo>,
        all_must_exist: bool,
        report: &mut StartReport,
    ) -> Vec<TaskInfo> {
        let mut id_tasks: Vec<TaskInfo> = Vec::new();
        for (id, well_formed) in &self.ids {
            match known.get(id.as_str()).filter(|_| *well_formed) {
                Some(task) => id_tasks.push(task.clone()),
                None => report.tasks_id.invalid.push(TaskIdOnly {
                    task_id: (*id).clone(),
                }),
            }
        }
        if all_must_exist && !report.tasks_id.invalid.is_empty() {
            report
                .tasks_id
                .denied
                .extend(id_tasks.drain(..).map(|t| TaskIdOnly { task_id: t.id }));
        }
        id_tasks
    }
}

/// Fills in where each task was named (by id, tag, custom property) how its start went.
fn report_outcomes(
    report: &mut StartReport,
    [id_tasks, tag_tasks, cp_tasks]: [&[TaskInfo]; 3],
    distinct: &[TaskInfo],
    outcome_by_id: &HashMap<String, Outcome>,
) {
    let entry = |task: &TaskInfo| match outcome_by_id.get(&task.id) {
        Some(Outcome::Started { session_id, status }) => Some(StartedTask {
            task_id: task.id.clone(),
            task_name: task.name.clone(),
            execution_session_id: session_id.clone(),
            execution_status: status.clone(),
        }),
        _ => None,
    };
    report.tasks_id.started = id_tasks.iter().filter_map(entry).collect();
    report.tasks_tag = tag_tasks.iter().filter_map(entry).collect();
    report.tasks_cp = cp_tasks.iter().filter_map(entry).collect();
    report.failed = distinct
        .iter()
        .filter_map(|t| match outcome_by_id.get(&t.id) {
            Some(Outcome::Failed(reason)) => Some(FailedTask {
                task_id: t.id.clone(),
                task_name: t.name.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        })
        .collect();
}

/// Each task once, in the order first named (by id, then tag, then custom property).
fn distinct_tasks(
    id_tasks: &[TaskInfo],
    tag_tasks: &[Vec<TaskInfo>],
    cp_tasks: &[Vec<TaskInfo>],
) -> Vec<TaskInfo> {
    let mut distinct: Vec<TaskInfo> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for task in id_tasks
        .iter()
        .chain(tag_tasks.iter().flatten())
        .chain(cp_tasks.iter().flatten())
    {
        if seen.insert(task.id.as_str()) {
            distinct.push(task.clone());
        }
    }
    distinct
}

/// Starts tasks through QRS. Shared by all requests; bounds the QRS calls in flight.
pub struct Starter {
    qrs: QrsClient,
    settings: StarterSettings,
    slots: FairSlots,
}

impl Starter {
    pub fn new(qrs: QrsClient, settings: StarterSettings) -> Starter {
        let slots = FairSlots::new(settings.max_concurrent_calls);
        Starter {
            qrs,
            settings,
            slots,
        }
    }

    pub fn settings(&self) -> &StarterSettings {
        &self.settings
    }

    pub fn qrs_host(&self) -> &str {
        self.qrs.host()
    }

    /// The QRS client (shared pool), for health probes and reports.
    pub fn qrs(&self) -> &QrsClient {
        &self.qrs
    }

    /// Plans and carries out a start-task request. `store_key_values` is called with the
    /// request's key-value items after QRS has confirmed which tasks exist and before any
    /// task is started; it must return only once they are durably committed.
    pub async fn run<F, Fut, E>(
        &self,
        request: &StartRequest,
        policy: &StartTaskPolicy,
        store_key_values: F,
    ) -> Result<StartReport, StartError<E>>
    where
        F: FnOnce(Vec<KeyValueItem>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut report = StartReport::default();
        let deadline = tokio::time::Instant::now() + self.settings.request_deadline;
        let caller = request.caller.as_str();
        // 1-2. What is asked for and allowed (the allow-list refusals go in the report).
        let plan = Plan::of(request, policy, &mut report);

        // 3. Ask QRS, concurrently: which ids exist, which tasks carry the tags and the
        //    custom properties. Any failure here means nothing is started.
        let lookups = async {
            tokio::try_join!(
                self.lookup_ids(caller, &plan.id_candidates),
                try_join_all(plan.tags.iter().map(|tag| self.lookup_tag(caller, tag))),
                try_join_all(plan.cps.iter().map(|(n, v)| self.lookup_cp(caller, n, v))),
            )
        };
        let (known, tag_tasks, cp_tasks) = tokio::time::timeout_at(deadline, lookups)
            .await
            .map_err(|_| StartError::Deadline(self.settings.request_deadline))?
            .map_err(StartError::Qrs)?;
        let id_tasks = plan.known_ids(&known, request.all_task_ids_must_exist, &mut report);

        // 4. Key-value items are committed before anything starts, so that a started app's
        //    script can read them.
        if !plan.key_values.is_empty() {
            store_key_values(plan.key_values)
                .await
                .map_err(StartError::KeyValue)?;
        }

        // 5. Start each distinct task once, concurrently (bounded), and wait for QRS.
        let distinct = distinct_tasks(&id_tasks, &tag_tasks, &cp_tasks);
        if !distinct.is_empty() && tokio::time::Instant::now() >= deadline {
            return Err(StartError::Deadline(self.settings.request_deadline));
        }
        let started_at = Instant::now();
        let outcomes = join_all(
            distinct
                .iter()
                .map(|t| self.start_before(caller, t, deadline)),
        )
        .await;
        let mut outcome_by_id: HashMap<String, Outcome> = distinct
            .iter()
            .map(|t| t.id.clone())
            .zip(outcomes)
            .collect();

        // 6. With ?wait=true, follow each started run to its end (bounded).
        if request.wait {
            report.wait = Some(self.wait_all(caller, &mut outcome_by_id, started_at).await);
        }

        // 7. Report: started tasks where Butler lists them, failed ones once in `failed`.
        let named = [&id_tasks[..], &tag_tasks.concat(), &cp_tasks.concat()];
        report_outcomes(&mut report, named, &distinct, &outcome_by_id);
        Ok(report)
    }

    /// Follows each started run until it ends or the wait timeout passes; records each
    /// run's final status in its outcome.
    async fn wait_all(
        &self,
        caller: &str,
        outcome_by_id: &mut HashMap<String, Outcome>,
        started_at: Instant,
    ) -> WaitReport {
        let deadline = started_at + self.settings.wait_timeout;
        let waits = outcome_by_id.iter().filter_map(|(id, o)| match o {
            Outcome::Started { session_id, .. } => Some(async move {
                (
                    id.clone(),
                    self.wait_for(caller, session_id, deadline).await,
                )
            }),
            Outcome::Failed(_) => None,
        });
        let finished = join_all(waits).await;
        let mut complete = true;
        for (id, status) in finished {
            if status == STILL_RUNNING {
                complete = false;
            }
            if let Some(Outcome::Started { status: s, .. }) = outcome_by_id.get_mut(&id) {
                *s = Some(status);
            }
        }
        WaitReport {
            complete,
            timeout_ms: self.settings.wait_timeout.as_millis() as u64,
        }
    }

    async fn lookup_ids(
        &self,
        caller: &str,
        ids: &[String],
    ) -> Result<HashMap<String, TaskInfo>, QrsError> {
        let mut unique: Vec<&str> = ids.iter().map(String::as_str).collect();
        unique.sort_unstable();
        unique.dedup();
        if unique.is_empty() {
            return Ok(HashMap::new());
        }
        let _permit = self.permit(caller).await;
        let tasks = self.qrs.tasks_by_ids(&unique).await?;
        // QRS compares GUIDs case-insensitively; key by our (lower-case) form.
        Ok(tasks
            .into_iter()
            .map(|t| (t.id.to_ascii_lowercase(), t))
            .collect())
    }

    async fn lookup_tag(&self, caller: &str, tag: &str) -> Result<Vec<TaskInfo>, QrsError> {
        let _permit = self.permit(caller).await;
        self.qrs.tasks_by_tag(tag).await
    }

    async fn lookup_cp(
        &self,
        caller: &str,
        name: &str,
        value: &str,
    ) -> Result<Vec<TaskInfo>, QrsError> {
        let _permit = self.permit(caller).await;
        self.qrs.tasks_by_custom_property(name, value).await
    }

    /// Starts a task unless `deadline` passes first. A start not yet sent at the deadline
    /// is dropped, never sent: nothing is started after the caller got its answer.
    async fn start_before(
        &self,
        caller: &str,
        task: &TaskInfo,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        let sent = AtomicBool::new(false);
        let ms = self.settings.request_deadline.as_millis();
        let outcome =
            tokio::time::timeout_at(deadline, self.start_one(caller, task, deadline, &sent)).await;
        let not_started = || {
            Outcome::Failed(format!(
                "not started: the start request's deadline of {ms} ms \
                 (ButlerEdge.qrs.requestDeadlineMs) passed before QRS could be asked (QRS is \
                 slow or busy); it is safe to retry"
            ))
        };
        match outcome {
            Ok(Some(outcome)) => outcome,
            Ok(None) => not_started(),
            Err(_) if !sent.load(Ordering::Acquire) => not_started(),
            Err(_) => {
                tracing::warn!(task_id = %task.id, deadline_ms = ms as u64, "start task: QRS did not answer the start before the request deadline");
                Outcome::Failed(format!(
                    "QRS did not answer the start within the start request's deadline of {ms} \
                     ms (ButlerEdge.qrs.requestDeadlineMs); QRS may still have started the \
                     task; check the QMC before retrying"
                ))
            }
        }
    }

    /// `None` when the deadline had passed by the time a QRS call slot was free: the start
    /// was not sent. (A timeout polls its future before its timer, so a slot freed by the
    /// deadline itself is taken here; this check keeps that start from going out.)
    async fn start_one(
        &self,
        caller: &str,
        task: &TaskInfo,
        deadline: tokio::time::Instant,
        sent: &AtomicBool,
    ) -> Option<Outcome> {
        let _permit = self.permit(caller).await;
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        sent.store(true, Ordering::Release);
        Some(self.start_now(task).await)
    }

    async fn start_now(&self, task: &TaskInfo) -> Outcome {
        // Task ids from QRS's answers go into a URL path: only a GUID is used there.
        if !is_task_guid(&task.id.to_ascii_lowercase()) {
            return Outcome::Failed(format!(
                "not started: QRS listed this task under an id that is not a GUID ({:?})",
                task.id
            ));
        }
        match self.qrs.start_task(&task.id).await {
            Ok(StartOutcome::Started { session_id }) => {
                tracing::info!(task_id = %task.id, session_id = %session_id, "task started");
                Outcome::Started {
                    session_id,
                    status: None,
                }
            }
            Ok(StartOutcome::NotStarted) => {
                tracing::warn!(task_id = %task.id, "QRS did not start the task (empty session id)");
                Outcome::Failed(
                    "QRS did not start the task: it answered with the empty session id \
                     (the task is disabled, no scheduler is available, or its app is missing)"
                        .to_string(),
                )
            }
            Err(e) => {
                tracing::warn!(task_id = %task.id, error = %e, "starting task failed");
                let reason = match &e {
                    QrsError::Broken { .. } | QrsError::Timeout { .. } => format!(
                        "{e} (QRS may still have started the task; check the QMC before retrying)"
                    ),
                    _ => e.to_string(),
                };
                Outcome::Failed(reason)
            }
        }
    }

    /// Polls an execution session until QRS deletes it (the run has ended), then reads the
    /// final status. Returns QRS's status name, or [`STILL_RUNNING`] at the deadline.
    async fn wait_for(&self, caller: &str, session_id: &str, deadline: Instant) -> String {
        // The session id goes into a URL path: only a GUID is used there.
        if !is_task_guid(&session_id.to_ascii_lowercase()) {
            return "Unknown (QRS answered with a session id that is not a GUID)".to_string();
        }
        loop {
            let running = {
                let _permit = self.permit(caller).await;
                self.qrs.execution_running(session_id).await
            };
            match running {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(session_id, error = %e, "polling execution session failed");
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return STILL_RUNNING.to_string();
            }
            tokio::time::sleep(self.settings.wait_poll_interval.min(deadline - now)).await;
        }
        let results = {
            let _permit = self.permit(caller).await;
            self.qrs.execution_results(session_id).await
        };
        match results {
            Ok(results) => results
                .last()
                .map(|r| r.status_name().to_string())
                .unwrap_or_else(|| "Unknown".to_string()),
            Err(e) => format!("Unknown ({e})"),
        }
    }

    /// A QRS call slot for the request's caller, in its turn (see [`fair_slots`]).
    async fn permit(&self, caller: &str) -> Slot {
        self.slots.acquire(caller).await
    }
}

/// Reported as the execution status when `?wait=true` timed out before the run ended.
pub const STILL_RUNNING: &str = "StillRunning";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lower_case_guids_are_task_ids() {
        assert!(is_task_guid("e3b27f50-b1c0-4879-88fc-c7cdd9c1cf3e"));
        assert!(!is_task_guid("E3B27F50-B1C0-4879-88FC-C7CDD9C1CF3E"));
        assert!(!is_task_guid("e3b27f50b1c0-4879-88fc-c7cdd9c1cf3e0"));
        assert!(!is_task_guid("-"));
        assert!(!is_task_guid("e3b27f50-b1c0-4879-88fc-c7cdd9c1cf3g"));
    }
}
