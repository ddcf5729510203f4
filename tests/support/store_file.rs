//! The database file's format record (`store_format`, see `src/kv/schema.rs` and the README,
//! "Store format version"), read and written directly with redb as another release would.
//! Spelled out here, not imported: a test must fail if the service's names change.

use std::path::Path;

use redb::{ReadableDatabase, TableDefinition};

pub const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("store_format");
pub const FORMAT_VERSION_KEY: &str = "format_version";
pub const OLDEST_READER_KEY: &str = "oldest_reader_version";
/// The format this release writes.
pub const CURRENT: (u64, u64) = (3, 3);

/// (format version, oldest reader version) of the (closed) database in `data_dir`.
pub fn format_record(data_dir: &Path) -> Option<(u64, u64)> {
    let db = redb::Database::open(data_dir.join("butler-edge.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(FORMAT).ok()?;
    let version = table.get(FORMAT_VERSION_KEY).unwrap()?.value();
    let oldest = table.get(OLDEST_READER_KEY).unwrap()?.value();
    Some((version, oldest))
}

/// Writes a format record into the (closed) database in `data_dir`, as a later release would.
pub fn set_format_record(data_dir: &Path, (version, oldest): (u64, u64)) {
    let db = redb::Database::create(data_dir.join("butler-edge.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(FORMAT).unwrap();
        table.insert(FORMAT_VERSION_KEY, version).unwrap();
        table.insert(OLDEST_READER_KEY, oldest).unwrap();
    }
    txn.commit().unwrap();
}
