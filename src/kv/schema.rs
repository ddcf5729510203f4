//! The redb tables behind the key-value store.
//!
//! Butler lists namespaces in creation order and a namespace's keys in insertion order (an
//! overwrite keeps a key's place; a deleted and re-created key or namespace goes to the
//! end), and scripts read "the first key" of a list. The data tables are ordered by name,
//! so the order lives beside them: a sequence number per namespace and per key, taken from
//! one counter ([`NEXT_SEQ`]) in the same transaction as the write, so it is as durable as
//! the data. Listing sorts a namespace's keys by it (at most `maxKeysPerNamespace` of
//! them); reads of one key never touch it.

use redb::{Database, ReadableTable, TableDefinition};

/// (namespace, key) → (expires_at ms since epoch, 0 = never; value).
pub const KV: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("kv");

/// namespace → number of keys stored in it (expired ones count until swept).
/// A namespace stays listed with a count of zero until it is deleted.
pub const NAMESPACES: TableDefinition<&str, u64> = TableDefinition::new("namespaces");

/// (expires_at, namespace, key) → (): the expiry index, ordered by deadline, so the
/// sweeper finds what is due without scanning the store.
pub const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("expiry");

/// namespace → sequence number taken when it was created: the listing order.
pub const NAMESPACE_ORDER: TableDefinition<&str, u64> = TableDefinition::new("namespace_order");

/// (namespace, key) → sequence number taken when the key was created: the listing order.
/// Same key order as [`KV`], so a listing walks both side by side.
pub const KEY_ORDER: TableDefinition<(&str, &str), u64> = TableDefinition::new("key_order");

/// Store-wide counters, by name.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// In [`META`]: the next sequence number to hand out.
pub const NEXT_SEQ: &str = "next_seq";

/// In [`META`]: the version of the order tables; absent in a database written before they
/// existed (which is then migrated, see [`create_tables`]).
const ORDER_VERSION: &str = "order_version";

/// Creates the tables on first open, so read transactions always find them, and gives a
/// database written before listing order was kept its order: existing namespaces and keys
/// are numbered in name order, the order they were listed in until then, and everything
/// created later goes after them. One transaction: a crash during it leaves the database
/// as it was, and the next start migrates again.
pub fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let kv = txn.open_table(KV)?;
        let namespaces = txn.open_table(NAMESPACES)?;
        txn.open_table(EXPIRY)?;
        let mut namespace_order = txn.open_table(NAMESPACE_ORDER)?;
        let mut key_order = txn.open_table(KEY_ORDER)?;
        let mut meta = txn.open_table(META)?;
        if meta.get(ORDER_VERSION)?.is_none() {
            let mut seq = 1u64;
            let mut migrated = 0u64;
            for entry in namespaces.iter()? {
                let (name, _) = entry?;
                namespace_order.insert(name.value(), seq)?;
                seq += 1;
            }
            for entry in kv.iter()? {
                let (k, _) = entry?;
                key_order.insert(k.value(), seq)?;
                seq += 1;
                migrated += 1;
            }
            if migrated > 0 {
                tracing::info!(
                    keys = migrated,
                    "key-value database from an earlier version: existing namespaces and keys \
                     keep their name order, new ones are listed after them"
                );
            }
            meta.insert(NEXT_SEQ, seq)?;
            meta.insert(ORDER_VERSION, 1)?;
        }
    }
    txn.commit()?;
    Ok(())
}
