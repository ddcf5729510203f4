//! Export and restore of the whole store, in one documented format (README, "Export and
//! restore"): JSON lines, a header, each namespace followed by its keys in listing order,
//! and an end line with the counts, so that a cut-off export is told from a whole one.
//!
//! An export is one read transaction: one point in time, however long the caller takes to
//! read it, while writes go on. It is written line by line to a [`Write`]; nothing is held
//! but one namespace's key names (at most `maxKeysPerNamespace`) and one value.
//!
//! A restore is one write transaction, filled while the export is read line by line and
//! committed only when every line was valid and the end line's counts match: anything
//! less leaves the store as it was. While it runs, the writer thread answers writes with
//! [`StoreError::Restoring`] (see `writer::Handle::hold_writes`); reads see the store as it
//! was until the commit.
//!
//! TTLs are exported as the milliseconds left at the header's `exportedAtMs`; a restore
//! puts the deadline back at `exportedAtMs + ttlMs` on its own clock, so the time between
//! export and restore counts, and a key whose deadline has passed is not restored.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{BufRead, Read, Write};

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::schema::{COUNTERS, EXPIRY, FORMAT_VERSION, KV, NAMESPACES, NEXT_NAMESPACE_SEQ};
use super::{Store, StoreError, db_err, in_seq_order, live_keys, now_ms};

/// The header's `format`.
pub const EXPORT_FORMAT: &str = "butler-edge-store-export";

/// The header's `version`: the version of the export format this release writes and reads.
pub const EXPORT_VERSION: u64 = 1;

/// The longest line a restore reads: a 1 MB value whose every character JSON escapes as
/// `\uXXXX` is 6 MB; anything far longer is not an export.
const MAX_LINE_BYTES: u64 = 64 << 20;

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Line<'a> {
    #[serde(rename_all = "camelCase")]
    Header {
        format: Cow<'a, str>,
        version: u64,
        /// The store format (`schema::FORMAT_VERSION`) of the release that exported.
        store_format: u64,
        /// RFC 3339, for people.
        exported_at: Cow<'a, str>,
        /// Milliseconds since the Unix epoch: what `ttlMs` counts from.
        exported_at_ms: u64,
    },
    Namespace {
        #[serde(borrow)]
        name: Cow<'a, str>,
    },
    #[serde(rename_all = "camelCase")]
    Key {
        #[serde(borrow)]
        key: Cow<'a, str>,
        #[serde(borrow)]
        value: Cow<'a, str>,
        /// Milliseconds left at `exportedAtMs`; absent: the key never expires.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    End {
        namespaces: u64,
        keys: u64,
    },
}

/// What an export held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCounts {
    pub namespaces: u64,
    pub keys: u64,
}

/// Whether a restore may replace what the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// Only into a store without namespaces (a new appliance).
    IntoEmpty,
    /// Everything the store held is replaced by the export.
    Replace,
}

/// What a restore stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub namespaces: u64,
    pub keys: u64,
    /// Keys in the export whose deadline had passed by the time of the restore.
    pub expired_skipped: u64,
    /// The header's `exportedAt`.
    pub exported_at: String,
}

/// The rules every restored namespace and pair must meet: the same the key-value API
/// applies (they live in the API layer, which hands them in). `Err` says what is wrong.
pub trait RestoreRules {
    fn check_namespace(&self, namespace: &str) -> Result<(), String>;
    fn check_pair(&self, namespace: &str, key: &str, value: &str) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "the key-value store is not empty ({namespaces} namespaces, {keys} keys); nothing was \
         restored. Restore into an empty store, or ask to replace everything it holds with \
         ?replace=true"
    )]
    NotEmpty { namespaces: u64, keys: u64 },
    /// The export is not valid: the message names the line and what is wrong with it.
    #[error("{0}. Nothing was restored; the store is as it was")]
    Invalid(String),
    /// The export could not be read to its end (the connection failed, a limit was hit).
    #[error("the export could not be read: {0}. Nothing was restored; the store is as it was")]
    Input(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn rfc3339(unix_ms: u64) -> String {
    let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(unix_ms as i64);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| unix_ms.to_string())
}

fn write_line(out: &mut dyn Write, line: &Line<'_>) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Io {
        detail: format!("writing the export: {e}"),
    };
    serde_json::to_writer(&mut *out, line).map_err(|e| io(e.into()))?;
    out.write_all(b"\n").map_err(io)
}

impl Store {
    /// Writes the whole store to `out` in the export format, from one read transaction.
    /// Blocking: run it off the reactor. An error from `out` (the caller went away) stops
    /// it and releases the transaction.
    pub fn export(&self, out: &mut dyn Write) -> Result<ExportCounts, StoreError> {
        let db = self.inner.db.get()?;
        let txn = db.begin_read().map_err(db_err)?;
        let now = now_ms();
        write_line(
            out,
            &Line::Header {
                format: EXPORT_FORMAT.into(),
                version: EXPORT_VERSION,
                store_format: FORMAT_VERSION,
                exported_at: rfc3339(now).into(),
                exported_at_ms: now,
            },
        )?;
        let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
        let kv = txn.open_table(KV).map_err(db_err)?;
        let mut names = Vec::new();
        for entry in namespaces.iter().map_err(db_err)? {
            let (name, row) = entry.map_err(db_err)?;
            names.push((row.value().1, name.value().to_string()));
        }
        let mut counts = ExportCounts {
            namespaces: 0,
            keys: 0,
        };
        for namespace in in_seq_order(names) {
            write_line(
                out,
                &Line::Namespace {
                    name: namespace.as_str().into(),
                },
            )?;
            counts.namespaces += 1;
            for key in live_keys(&kv, &namespace, now)? {
                let Some(guard) = kv.get((namespace.as_str(), key.as_str())).map_err(db_err)?
                else {
                    continue;
                };
                let (expires_at, _, value) = guard.value();
                let ttl_ms = (expires_at != 0).then(|| expires_at - now);
                write_line(
                    out,
                    &Line::Key {
                        key: key.as_str().into(),
                        value: value.into(),
                        ttl_ms,
                    },
                )?;
                counts.keys += 1;
            }
        }
        write_line(
            out,
            &Line::End {
                namespaces: counts.namespaces,
                keys: counts.keys,
            },
        )?;
        out.flush().map_err(|e| StoreError::Io {
            detail: format!("writing the export: {e}"),
        })?;
        Ok(counts)
    }

    /// Whether the store holds no namespace (and so no key).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.counts()? == (0, 0))
    }

    /// Restores an export read from `input` in one write transaction (see the module doc):
    /// committed only if every line is valid under `rules` and the store's quotas and the
    /// end line matches; otherwise nothing changes. Blocking: run it off the reactor.
    pub fn restore(
        &self,
        input: impl Read,
        mode: RestoreMode,
        rules: &dyn RestoreRules,
    ) -> Result<Restored, RestoreError> {
        let _writes_held = self.inner.writer.hold_writes();
        let db = self.inner.db.get()?;
        let mut txn = db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let namespaces = txn.open_table(NAMESPACES).map_err(db_err)?;
            let kv = txn.open_table(KV).map_err(db_err)?;
            let held = (namespaces.len().map_err(db_err)?, kv.len().map_err(db_err)?);
            if mode == RestoreMode::IntoEmpty && held != (0, 0) {
                return Err(RestoreError::NotEmpty {
                    namespaces: held.0,
                    keys: held.1,
                });
            }
        }
        if mode == RestoreMode::Replace {
            // Deleted whole and created again below: no entry-by-entry removal.
            txn.delete_table(KV).map_err(db_err)?;
            txn.delete_table(NAMESPACES).map_err(db_err)?;
            txn.delete_table(EXPIRY).map_err(db_err)?;
            txn.delete_table(COUNTERS).map_err(db_err)?;
        }
        let mut reader = std::io::BufReader::with_capacity(256 << 10, input);
        let (restored, earliest_deadline) = {
            let mut tables = RestoreTables {
                kv: txn.open_table(KV).map_err(db_err)?,
                namespaces: txn.open_table(NAMESPACES).map_err(db_err)?,
                expiry: txn.open_table(EXPIRY).map_err(db_err)?,
            };
            let mut parser = Parser::new(self.inner.quotas, rules, now_ms());
            parser.read_all(&mut reader, &mut tables)?;
            let mut counters = txn.open_table(COUNTERS).map_err(db_err)?;
            counters
                .insert(NEXT_NAMESPACE_SEQ, parser.namespaces + 1)
                .map_err(db_err)?;
            (parser.restored(), parser.earliest_deadline)
        };
        let outcome = txn.commit().map_err(db_err);
        self.note_own_commit(&outcome);
        outcome?;
        if let Some(deadline) = earliest_deadline {
            self.inner.sweeper.note_deadline(deadline);
        }
        tracing::info!(
            namespaces = restored.namespaces,
            keys = restored.keys,
            expired_skipped = restored.expired_skipped,
            exported_at = %restored.exported_at,
            replaced = mode == RestoreMode::Replace,
            "key-value store restored from an export"
        );
        Ok(restored)
    }
}

struct RestoreTables<'t> {
    kv: redb::Table<'t, (&'static str, &'static str), (u64, u64, &'static str)>,
    namespaces: redb::Table<'t, &'static str, super::schema::NamespaceRow>,
    expiry: redb::Table<'t, (u64, &'static str, &'static str), ()>,
}

/// The namespace whose keys the lines are giving.
struct Current {
    name: String,
    seq: u64,
    /// Key lines read for it (expired ones included).
    keys_read: u64,
    /// Keys stored: the next one's sequence number is this plus one.
    keys_stored: u64,
    seen: HashSet<String>,
}

/// Reads an export line by line into the restore's tables, checking as it goes.
struct Parser<'r> {
    quotas: super::Quotas,
    rules: &'r dyn RestoreRules,
    now: u64,
    line: u64,
    /// The header's `exportedAtMs` and `exportedAt`, once read.
    header: Option<(u64, String)>,
    current: Option<Current>,
    seen_namespaces: HashSet<String>,
    namespaces: u64,
    /// Key lines read, expired ones included (what the end line counts).
    key_lines: u64,
    keys: u64,
    expired_skipped: u64,
    earliest_deadline: Option<u64>,
    ended: bool,
}

impl<'r> Parser<'r> {
    fn new(quotas: super::Quotas, rules: &'r dyn RestoreRules, now: u64) -> Parser<'r> {
        Parser {
            quotas,
            rules,
            now,
            line: 0,
            header: None,
            current: None,
            seen_namespaces: HashSet::new(),
            namespaces: 0,
            key_lines: 0,
            keys: 0,
            expired_skipped: 0,
            earliest_deadline: None,
            ended: false,
        }
    }

    fn invalid(&self, what: impl std::fmt::Display) -> RestoreError {
        RestoreError::Invalid(format!("line {}: {what}", self.line))
    }

    /// Refuses an export holding more `what` than the store-wide limit `setting` allows.
    fn within(&self, held: u64, limit: u64, what: &str, setting: &str) -> Result<(), RestoreError> {
        if held > limit {
            return Err(self.invalid(format!(
                "the export holds more than {limit} {what}, this store's limit \
                 (ButlerEdge.limits.{setting}); raise the limit here first"
            )));
        }
        Ok(())
    }

    fn restored(&self) -> Restored {
        Restored {
            namespaces: self.namespaces,
            keys: self.keys,
            expired_skipped: self.expired_skipped,
            exported_at: self
                .header
                .as_ref()
                .map(|h| h.1.clone())
                .unwrap_or_default(),
        }
    }

    fn read_all(
        &mut self,
        reader: &mut impl BufRead,
        tables: &mut RestoreTables<'_>,
    ) -> Result<(), RestoreError> {
        let mut text = String::new();
        loop {
            text.clear();
            let read = reader
                .by_ref()
                .take(MAX_LINE_BYTES + 1)
                .read_line(&mut text);
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    self.line += 1;
                    return Err(self.invalid("not UTF-8 text (an export is JSON lines)"));
                }
                Err(e) => return Err(RestoreError::Input(e)),
            };
            if n == 0 {
                break;
            }
            self.line += 1;
            if n as u64 > MAX_LINE_BYTES {
                return Err(self.invalid(format!(
                    "longer than {MAX_LINE_BYTES} bytes; an export's lines are shorter"
                )));
            }
            if text.trim().is_empty() {
                continue;
            }
            if self.ended {
                return Err(
                    self.invalid("text after the end line; an export ends with its end line")
                );
            }
            let line: Line<'_> = serde_json::from_str(&text).map_err(|e| {
                self.invalid(format!(
                    "not a line of a butler-edge store export ({e}); each line is a JSON \
                     object with \"type\" header, namespace, key or end"
                ))
            })?;
            self.take(line, tables)?;
        }
        if self.header.is_none() {
            return Err(RestoreError::Invalid(
                "the body is empty: a butler-edge store export starts with its header line"
                    .to_string(),
            ));
        }
        if !self.ended {
            return Err(RestoreError::Invalid(format!(
                "the export ends after line {} without its end line: it was cut off \
                 (truncated); export again",
                self.line
            )));
        }
        Ok(())
    }

    fn take(&mut self, line: Line<'_>, tables: &mut RestoreTables<'_>) -> Result<(), RestoreError> {
        let Some((exported_at_ms, _)) = self.header else {
            return self.header(line);
        };
        match line {
            Line::Header { .. } => Err(self.invalid("a second header line")),
            Line::Namespace { name } => self.namespace(&name, tables),
            Line::Key { key, value, ttl_ms } => {
                self.key(&key, &value, ttl_ms, exported_at_ms, tables)
            }
            Line::End { namespaces, keys } => self.end(namespaces, keys, tables),
        }
    }

    fn header(&mut self, line: Line<'_>) -> Result<(), RestoreError> {
        let Line::Header {
            format,
            version,
            exported_at,
            exported_at_ms,
            ..
        } = line
        else {
            return Err(self.invalid(format!(
                "expected the header line ({{\"type\":\"header\",\"format\":\
                 \"{EXPORT_FORMAT}\",...}}) first"
            )));
        };
        if format != EXPORT_FORMAT {
            return Err(self.invalid(format!(
                "format {format:?} is not a butler-edge store export ({EXPORT_FORMAT:?})"
            )));
        }
        if version != EXPORT_VERSION {
            return Err(self.invalid(format!(
                "export format version {version}; this release restores version \
                 {EXPORT_VERSION}. Restore it with a release that reads version {version}, or \
                 export again with this release's format"
            )));
        }
        self.header = Some((exported_at_ms, exported_at.into_owned()));
        Ok(())
    }

    /// Ends the current namespace: its row, with its key count and next key number.
    fn close_namespace(&mut self, tables: &mut RestoreTables<'_>) -> Result<(), RestoreError> {
        if let Some(current) = self.current.take() {
            let row = (current.keys_stored, current.seq, current.keys_stored + 1);
            tables
                .namespaces
                .insert(current.name.as_str(), row)
                .map_err(db_err)?;
        }
        Ok(())
    }

    fn namespace(
        &mut self,
        name: &str,
        tables: &mut RestoreTables<'_>,
    ) -> Result<(), RestoreError> {
        self.close_namespace(tables)?;
        if name.is_empty() {
            return Err(self.invalid("a namespace without a name"));
        }
        self.rules
            .check_namespace(name)
            .map_err(|e| self.invalid(format!("namespace {name:?}: {e}")))?;
        if !self.seen_namespaces.insert(name.to_string()) {
            return Err(self.invalid(format!("namespace {name:?} appears a second time")));
        }
        self.namespaces += 1;
        self.within(
            self.namespaces,
            self.quotas.namespaces,
            "namespaces",
            "maxNamespaces",
        )?;
        self.current = Some(Current {
            name: name.to_string(),
            seq: self.namespaces,
            keys_read: 0,
            keys_stored: 0,
            seen: HashSet::new(),
        });
        Ok(())
    }

    fn key(
        &mut self,
        key: &str,
        value: &str,
        ttl_ms: Option<u64>,
        exported_at_ms: u64,
        tables: &mut RestoreTables<'_>,
    ) -> Result<(), RestoreError> {
        let Some(current) = self.current.as_ref() else {
            return Err(self.invalid("a key line before any namespace line"));
        };
        let namespace = current.name.clone();
        if key.is_empty() {
            return Err(self.invalid(format!("a key without a name in namespace {namespace:?}")));
        }
        if let Err(e) = self.rules.check_pair(&namespace, key, value) {
            return Err(self.invalid(format!("key {key:?} in namespace {namespace:?}: {e}")));
        }
        let (limit, now) = (self.quotas.keys_per_namespace, self.now);
        let current = self.current.as_mut().expect("checked above");
        let repeated = !current.seen.insert(key.to_string());
        current.keys_read += 1;
        let keys_read = current.keys_read;
        if repeated {
            return Err(self.invalid(format!(
                "key {key:?} appears a second time in namespace {namespace:?}"
            )));
        }
        if keys_read > limit {
            return Err(self.invalid(format!(
                "namespace {namespace:?} holds more than {limit} keys, this store's limit \
                 (Butler.keyValueStore.maxKeysPerNamespace); raise the limit here first"
            )));
        }
        self.key_lines += 1;
        let deadline = match ttl_ms {
            None => 0,
            Some(ttl) => exported_at_ms.saturating_add(ttl),
        };
        if deadline != 0 && deadline <= now {
            self.expired_skipped += 1;
            return Ok(());
        }
        self.keys += 1;
        self.within(self.keys, self.quotas.keys, "keys", "maxKeys")?;
        let current = self.current.as_mut().expect("checked above");
        current.keys_stored += 1;
        let seq = current.keys_stored;
        tables
            .kv
            .insert((namespace.as_str(), key), (deadline, seq, value))
            .map_err(db_err)?;
        if deadline != 0 {
            tables
                .expiry
                .insert((deadline, namespace.as_str(), key), ())
                .map_err(db_err)?;
            self.earliest_deadline =
                Some(self.earliest_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        Ok(())
    }

    fn end(
        &mut self,
        namespaces: u64,
        keys: u64,
        tables: &mut RestoreTables<'_>,
    ) -> Result<(), RestoreError> {
        self.close_namespace(tables)?;
        if (namespaces, keys) != (self.namespaces, self.key_lines) {
            return Err(self.invalid(format!(
                "the end line counts {namespaces} namespaces and {keys} keys, but the export \
                 holds {} namespaces and {} keys: it is damaged; export again",
                self.namespaces, self.key_lines
            )));
        }
        self.ended = true;
        Ok(())
    }
}
