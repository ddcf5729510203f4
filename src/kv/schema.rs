//! The redb tables behind the key-value store.
//!
//! Butler lists namespaces in creation order and a namespace's keys in insertion order (an
//! overwrite keeps a key's place; a deleted and re-created key or namespace goes to the
//! end), and scripts read "the first key" of a list. The tables are ordered by name, so
//! each row carries a sequence number taken when it was created, and a listing sorts by it
//! (at most `maxKeysPerNamespace` keys). The numbers live in the rows a write touches
//! anyway, so keeping the order costs a write nothing extra: a key's number is in its
//! [`KV`] row, and the next one to hand out is in its namespace's [`NAMESPACES`] row, which
//! a new key rewrites for its count regardless. Only creating a namespace reads and writes
//! the store-wide counter in [`COUNTERS`]. Everything is committed in the write's own
//! transaction, so the order is exactly as durable as the data.
//!
//! # Store format version
//!
//! The file says which layout it is in, so that a rollback to an older release never
//! misreads what a newer one wrote. [`FORMAT`] holds two numbers, in the manner of ext4's
//! feature flags: [`FORMAT_VERSION_KEY`], the format the file was last written in, and
//! [`OLDEST_READER_KEY`], the oldest format a release must read to open (and write) it
//! safely. A release opens a file when the file's oldest-reader version is at most its own
//! [`FORMAT_VERSION`]; so a later release that only adds something older ones may ignore
//! (a table they never open) raises the format version and keeps the oldest-reader
//! version, and a rollback still opens the file. A file that needs a newer reader is
//! refused at start-up, unchanged ([`check_readable`]).
//!
//! The formats so far (1 and 2 never carried the record; they are recognised by their
//! tables and migrated by [`create_tables`]):
//!
//! 1. `kv`, `namespaces`, `expiry`: listed in name order.
//! 2. 1 plus `namespace_order`, `key_order`, `meta`: one store-wide sequence beside the data.
//! 3. `kv_v2`, `namespaces_v2`, `expiry`, `counters` (this module's tables), the
//!    idempotency tables (`kv::idempotency`) and [`FORMAT`]. Files of this layout written
//!    before the record existed get it when they are first opened.

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

/// (namespace, key) → (expires_at ms since epoch, 0 = never; the key's sequence number in
/// its namespace; value).
pub const KV: TableDefinition<(&str, &str), (u64, u64, &str)> = TableDefinition::new("kv_v2");

/// namespace → [`NamespaceRow`]. A namespace stays listed with a count of zero until it is
/// deleted.
pub const NAMESPACES: TableDefinition<&str, NamespaceRow> = TableDefinition::new("namespaces_v2");

/// (number of keys stored, expired ones counting until swept; the namespace's sequence
/// number; the sequence number its next new key gets).
pub type NamespaceRow = (u64, u64, u64);

/// (expires_at, namespace, key) → (): the expiry index, ordered by deadline, so the
/// sweeper finds what is due without scanning the store.
pub const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("expiry");

/// Store-wide counters, by name. Opened only by the writes that need one.
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// In [`COUNTERS`]: the sequence number the next new namespace gets (1 when absent).
pub const NEXT_NAMESPACE_SEQ: &str = "next_namespace_seq";

/// The format record: [`FORMAT_VERSION_KEY`] and [`OLDEST_READER_KEY`] → number.
pub const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("store_format");

/// In [`FORMAT`]: the format the file was written in.
pub const FORMAT_VERSION_KEY: &str = "format_version";

/// In [`FORMAT`]: the oldest format a release must read to open the file.
pub const OLDEST_READER_KEY: &str = "oldest_reader_version";

/// The format this release reads and writes.
pub const FORMAT_VERSION: u64 = 3;

/// The oldest format a release must read to open a file this release wrote.
pub const OLDEST_READER: u64 = 3;

/// What a file's [`FORMAT`] record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatRecord {
    pub format_version: u64,
    pub oldest_reader: u64,
}

/// Why the tables could not be prepared.
#[derive(Debug)]
pub enum SchemaError {
    /// The file needs a newer release to be read; nothing in it was changed.
    TooNew(FormatRecord),
    Other(String),
}

impl From<String> for SchemaError {
    fn from(message: String) -> Self {
        SchemaError::Other(message)
    }
}

/// Refuses a file whose format record asks for a newer reader than this release.
fn refuse_too_new(record: Option<FormatRecord>) -> Result<(), SchemaError> {
    match record {
        Some(record) if record.oldest_reader > FORMAT_VERSION => Err(SchemaError::TooNew(record)),
        _ => Ok(()),
    }
}

/// Reads the format record of an existing file without opening it for writing (which
/// would already change bytes in its header), and refuses one that needs a newer reader.
/// A file redb cannot open read-only (locked by another process, or left unclean by a
/// crash and so needing redb's recovery first) is let through: [`create_tables`] checks
/// the same record again before it writes anything.
pub fn check_readable(path: &std::path::Path) -> Result<(), SchemaError> {
    if !path.exists() {
        return Ok(());
    }
    let Ok(db) = Database::builder().open_read_only(path) else {
        return Ok(());
    };
    let Ok(txn) = db.begin_read() else {
        return Ok(());
    };
    let record = match txn.open_table(FORMAT) {
        Ok(table) => read_record(&table).map_err(to_text)?,
        Err(_) => None,
    };
    refuse_too_new(record)
}

/// The record in an open [`FORMAT`] table; `None` when it has none.
fn read_record(
    table: &impl ReadableTable<&'static str, u64>,
) -> Result<Option<FormatRecord>, redb::Error> {
    let format_version = table.get(FORMAT_VERSION_KEY)?.map(|g| g.value());
    let oldest_reader = table.get(OLDEST_READER_KEY)?.map(|g| g.value());
    Ok(format_version.map(|format_version| FormatRecord {
        format_version,
        // A record without the second number asks for its own format.
        oldest_reader: oldest_reader.unwrap_or(format_version),
    }))
}

/// The layouts of earlier versions, read once by [`create_tables`] and then deleted.
/// Before listing order was kept only `kv`, `namespaces` and `expiry` existed, and entries
/// were listed in name order; then `namespace_order`, `key_order` and `meta` held one
/// store-wide sequence beside the data, which cost every new key an extra table and B-tree
/// insert. `expiry` is unchanged and stays.
mod earlier {
    use redb::TableDefinition;

    pub const KV: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("kv");
    pub const NAMESPACES: TableDefinition<&str, u64> = TableDefinition::new("namespaces");
    pub const NAMESPACE_ORDER: TableDefinition<&str, u64> = TableDefinition::new("namespace_order");
    pub const KEY_ORDER: TableDefinition<(&str, &str), u64> = TableDefinition::new("key_order");
    pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    /// In `META`: the next sequence number that layout would have handed out.
    pub const NEXT_SEQ: &str = "next_seq";

    pub const TABLES: [&str; 5] = ["kv", "namespaces", "namespace_order", "key_order", "meta"];
}

/// Creates the tables on first open, so read transactions always find them, and moves a
/// database in an earlier layout into this one (see [`earlier`]): namespaces and keys keep
/// the order they were listed in (name order for the oldest layout), everything created
/// later goes after them, and the old tables are deleted. One transaction: a crash during
/// it leaves the database as it was, and the next start migrates again.
///
/// Refuses, changing nothing, a database holding entries in both layouts: an older version
/// wrote to it after this one had migrated it, and neither set of entries may be dropped.
/// Refuses, changing nothing, a file whose format record asks for a newer reader; records
/// this release's format in a file without one (in the same transaction), and keeps the
/// record of a file a newer, compatible release wrote.
pub fn create_tables(db: &Database) -> Result<(), SchemaError> {
    let txn = db.begin_write().map_err(to_text)?;
    let had_record = {
        let mut format = txn.open_table(FORMAT).map_err(to_text)?;
        let record = read_record(&format).map_err(to_text)?;
        // Returning drops the transaction uncommitted: nothing is written.
        refuse_too_new(record)?;
        if record.is_none_or(|r| r.format_version < FORMAT_VERSION) {
            format
                .insert(FORMAT_VERSION_KEY, FORMAT_VERSION)
                .map_err(to_text)?;
            format
                .insert(OLDEST_READER_KEY, OLDEST_READER)
                .map_err(to_text)?;
        }
        record
    };
    let old_tables: Vec<String> = txn
        .list_tables()
        .map_err(to_text)?
        .map(|table| table.name().to_string())
        .filter(|name| earlier::TABLES.contains(&name.as_str()))
        .collect();
    let mut migrated = None;
    {
        let mut kv = txn.open_table(KV).map_err(to_text)?;
        let mut namespaces = txn.open_table(NAMESPACES).map_err(to_text)?;
        txn.open_table(EXPIRY).map_err(to_text)?;
        if !old_tables.is_empty() {
            let old_entries = {
                let old_kv = txn.open_table(earlier::KV).map_err(to_text)?;
                let old_namespaces = txn.open_table(earlier::NAMESPACES).map_err(to_text)?;
                old_kv.len().map_err(to_text)? + old_namespaces.len().map_err(to_text)?
            };
            let new_entries = kv.len().map_err(to_text)? + namespaces.len().map_err(to_text)?;
            if old_entries > 0 && new_entries > 0 {
                return Err(SchemaError::Other(format!(
                    "it holds entries in two layouts: {old_entries} in tables `kv` and \
                     `namespaces`, written by an older butler-edge after this version had \
                     migrated the file, and {new_entries} in the current tables. Nothing was \
                     changed. Run the older version to read out what it wrote, or move the file \
                     aside"
                )));
            }
            // Old tables without entries (an older version opened the file and wrote
            // nothing) are only deleted.
            if old_entries > 0 {
                let had_order = old_tables.iter().any(|t| t == earlier::KEY_ORDER.name());
                let mut counters = txn.open_table(COUNTERS).map_err(to_text)?;
                let (ns, keys) =
                    migrate(&txn, &mut kv, &mut namespaces, &mut counters).map_err(to_text)?;
                migrated = Some((had_order, ns, keys));
            }
        }
    }
    if !old_tables.is_empty() {
        // All of them: the migration created the order tables the oldest layout lacked.
        txn.delete_table(earlier::KV).map_err(to_text)?;
        txn.delete_table(earlier::NAMESPACES).map_err(to_text)?;
        txn.delete_table(earlier::NAMESPACE_ORDER)
            .map_err(to_text)?;
        txn.delete_table(earlier::KEY_ORDER).map_err(to_text)?;
        txn.delete_table(earlier::META).map_err(to_text)?;
    }
    txn.commit().map_err(to_text)?;
    match migrated {
        Some((true, namespaces, keys)) => tracing::info!(
            namespaces,
            keys,
            "key-value database from an earlier version migrated to the current tables; \
             namespaces and keys keep their listing order"
        ),
        Some((false, namespaces, keys)) => tracing::info!(
            namespaces,
            keys,
            "key-value database from an earlier version (listed in name order) migrated to the \
             current tables: existing namespaces and keys keep their name order, new ones are \
             listed after them"
        ),
        None => {}
    }
    match had_record {
        None => tracing::info!(
            format_version = FORMAT_VERSION,
            oldest_reader_version = OLDEST_READER,
            "key-value database format version recorded (the file had none: new, or written \
             before format versions were kept)"
        ),
        Some(r) if r.format_version > FORMAT_VERSION => tracing::info!(
            format_version = r.format_version,
            oldest_reader_version = r.oldest_reader,
            this_release = FORMAT_VERSION,
            "key-value database written by a newer release in a format this release may \
             read; its format record is kept as it is"
        ),
        Some(r) if r.format_version < FORMAT_VERSION => tracing::info!(
            from = r.format_version,
            format_version = FORMAT_VERSION,
            oldest_reader_version = OLDEST_READER,
            "key-value database format version raised"
        ),
        Some(_) => {}
    }
    Ok(())
}

fn to_text(e: impl Into<redb::Error>) -> String {
    e.into().to_string()
}

/// Copies the earlier layout's namespaces and keys into the (empty) current tables and
/// returns how many of each. Sequence numbers from the order tables are kept as they are
/// (one store-wide sequence is also increasing within each namespace); an entry without one
/// (all of them in the oldest layout, whose order tables this transaction just created
/// empty) is numbered after every number that layout handed out, in name order, the order
/// it was listed in.
fn migrate(
    txn: &redb::WriteTransaction,
    kv: &mut redb::Table<(&'static str, &'static str), (u64, u64, &'static str)>,
    namespaces: &mut redb::Table<&'static str, NamespaceRow>,
    counters: &mut redb::Table<&'static str, u64>,
) -> Result<(u64, u64), redb::Error> {
    let old_kv = txn.open_table(earlier::KV)?;
    let old_namespaces = txn.open_table(earlier::NAMESPACES)?;
    let namespace_order = txn.open_table(earlier::NAMESPACE_ORDER)?;
    let key_order = txn.open_table(earlier::KEY_ORDER)?;
    let meta = txn.open_table(earlier::META)?;
    let mut spare = meta.get(earlier::NEXT_SEQ)?.map_or(1, |g| g.value());
    let mut numbered = |seq: Option<u64>| {
        let seq = seq.unwrap_or(spare);
        spare = spare.max(seq + 1);
        seq
    };
    let mut namespace_count = 0;
    for entry in old_namespaces.iter()? {
        let (name, count) = entry?;
        let seq = numbered(namespace_order.get(name.value())?.map(|g| g.value()));
        // The next key number is set once the namespace's keys are copied.
        namespaces.insert(name.value(), (count.value(), seq, 1))?;
        namespace_count += 1;
    }
    let mut key_count = 0;
    // The namespace whose keys are being copied (they are contiguous in `kv`), and the
    // number after the highest one given to them.
    let mut current: Option<(String, u64)> = None;
    for entry in old_kv.iter()? {
        let (k, v) = entry?;
        let (namespace, key) = k.value();
        let (expires_at, value) = v.value();
        if current.as_ref().is_none_or(|(ns, _)| ns != namespace) {
            if let Some((ns, next)) = current.take() {
                set_next_key_seq(namespaces, &ns, next)?;
            }
            current = Some((namespace.to_string(), 1));
        }
        let seq = numbered(key_order.get((namespace, key))?.map(|g| g.value()));
        if let Some((_, next)) = current.as_mut() {
            *next = (*next).max(seq + 1);
        }
        kv.insert((namespace, key), (expires_at, seq, value))?;
        key_count += 1;
    }
    if let Some((ns, next)) = current {
        set_next_key_seq(namespaces, &ns, next)?;
    }
    counters.insert(NEXT_NAMESPACE_SEQ, spare)?;
    Ok((namespace_count, key_count))
}

fn set_next_key_seq(
    namespaces: &mut redb::Table<&'static str, NamespaceRow>,
    namespace: &str,
    next: u64,
) -> Result<(), redb::Error> {
    let row = namespaces.get(namespace)?.map(|g| g.value());
    if let Some((count, seq, _)) = row {
        namespaces.insert(namespace, (count, seq, next))?;
    }
    Ok(())
}
