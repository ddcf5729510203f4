//! The redb tables behind the key-value store.

use redb::{Database, TableDefinition};

/// (namespace, key) → (expires_at ms since epoch, 0 = never; value).
pub const KV: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("kv");

/// namespace → number of keys stored in it (expired ones count until swept).
/// A namespace stays listed with a count of zero until it is deleted.
pub const NAMESPACES: TableDefinition<&str, u64> = TableDefinition::new("namespaces");

/// (expires_at, namespace, key) → (): the expiry index, ordered by deadline, so the
/// sweeper finds what is due without scanning the store.
pub const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("expiry");

/// Creates the tables on first open, so read transactions always find them.
pub fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(KV)?;
    txn.open_table(NAMESPACES)?;
    txn.open_table(EXPIRY)?;
    txn.commit()?;
    Ok(())
}
