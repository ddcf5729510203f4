//! Listing order, as Butler has it: `GET /v4/keyvaluesnamespaces` in namespace creation order,
//! `GET /v4/keylist/{ns}` in key insertion order; an overwrite keeps a key's place, a deleted
//! (or expired) and re-created key or namespace goes to the end. The order is durable: it
//! survives a clean restart and `kill -9`. Databases in the two earlier layouts (before the
//! order was kept: name order; then order tables beside the data) are written here table by
//! table, as those versions wrote them, and opened by the service: migrated once, data and
//! order as they were listed, new entries after them.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::server::{BIN, KV_CONFIG, Server, client, free_port, json_of, root_user_args};
use support::store_file::{self, format_record};

fn post(server: &Server, ns: &str, body: Value) -> u16 {
    json_of(
        client()
            .post(server.url(&format!("/v4/keyvalues/{ns}")))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap(),
    )
    .0
}

fn delete(server: &Server, path: &str) -> u16 {
    client()
        .delete(server.url(path))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn namespaces(server: &Server) -> Value {
    json_of(
        client()
            .get(server.url("/v4/keyvaluesnamespaces"))
            .send()
            .unwrap(),
    )
    .1
}

/// The keys of `ns` as GetAllKeysInNamespace reads them.
fn keys(server: &Server, ns: &str) -> Vec<String> {
    let (status, body) = json_of(
        client()
            .get(server.url(&format!("/v4/keylist/{ns}")))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect()
}

fn check(server: &Server, when: &str) {
    assert_eq!(
        namespaces(server),
        json!(["zeta", "Alpha", "mid"]),
        "namespaces {when}"
    );
    assert_eq!(
        keys(server, "zeta"),
        ["z3", "a1", "m2", "b0", "ttl", "again"],
        "keys {when}"
    );
    assert_eq!(keys(server, "mid"), ["second", "first"], "keys {when}");
}

#[test]
fn creation_and_insertion_order_survive_restart_and_kill_9() {
    let mut server = Server::start(KV_CONFIG);
    for key in ["z3", "again", "a1", "m2"] {
        assert_eq!(
            post(&server, "zeta", json!({"key": key, "value": "1"})),
            201
        );
    }
    assert_eq!(
        post(&server, "Alpha", json!({"key": "only", "value": "1"})),
        201
    );
    assert_eq!(
        post(&server, "gone", json!({"key": "k", "value": "1"})),
        201
    );
    // A short TTL: expired, then written again, it is a new key and goes last.
    assert_eq!(
        post(
            &server,
            "zeta",
            json!({"key": "ttl", "value": "1", "ttl": 300})
        ),
        201
    );
    // An overwrite keeps the key's place (z3 stays first), also with a new TTL.
    assert_eq!(
        post(
            &server,
            "zeta",
            json!({"key": "z3", "value": "2", "ttl": 600_000})
        ),
        201
    );
    // A deleted and re-created key goes to the end.
    assert_eq!(delete(&server, "/v4/keyvalues/zeta/again"), 204);
    assert_eq!(
        post(&server, "zeta", json!({"key": "b0", "value": "1"})),
        201
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        post(&server, "zeta", json!({"key": "ttl", "value": "2"})),
        201
    );
    assert_eq!(
        post(&server, "zeta", json!({"key": "again", "value": "2"})),
        201
    );
    // A deleted namespace is gone from the list; one created after it goes after the others.
    assert_eq!(delete(&server, "/v4/keyvalues/gone"), 204);
    assert_eq!(
        post(&server, "mid", json!({"key": "second", "value": "1"})),
        201
    );
    assert_eq!(
        post(&server, "mid", json!({"key": "first", "value": "1"})),
        201
    );
    check(&server, "as written");

    assert!(server.terminate().success());
    server.restart();
    check(&server, "after a clean restart");

    // Writes right before kill -9: acknowledged means committed, order included.
    assert_eq!(delete(&server, "/v4/keyvalues/Alpha"), 204);
    assert_eq!(
        post(&server, "Alpha", json!({"key": "only", "value": "2"})),
        201
    );
    server.kill9();
    server.restart();
    assert_eq!(
        namespaces(&server),
        json!(["zeta", "mid", "Alpha"]),
        "a re-created namespace goes to the end, also after kill -9"
    );
    assert_eq!(
        keys(&server, "zeta"),
        ["z3", "a1", "m2", "b0", "ttl", "again"]
    );
    // New keys keep going to the end after the restarts (the sequence is durable too).
    assert_eq!(
        post(&server, "zeta", json!({"key": "0-new", "value": "1"})),
        201
    );
    assert_eq!(keys(&server, "zeta").last().unwrap(), "0-new");
}

/// The tables of the earlier layouts, defined as those versions defined them.
mod earlier {
    use redb::TableDefinition;

    pub const KV: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("kv");
    pub const NAMESPACES: TableDefinition<&str, u64> = TableDefinition::new("namespaces");
    pub const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("expiry");
    pub const NAMESPACE_ORDER: TableDefinition<&str, u64> = TableDefinition::new("namespace_order");
    pub const KEY_ORDER: TableDefinition<(&str, &str), u64> = TableDefinition::new("key_order");
    pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

    pub const TABLES: [&str; 5] = ["kv", "namespaces", "namespace_order", "key_order", "meta"];
}

/// Health on, for its key counts.
fn config() -> String {
    format!("{KV_CONFIG}ButlerEdge:\n  endpointsEnable:\n    health: true\n")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Writes a database file in `data_dir` in one transaction, as an earlier version would.
fn write_database(data_dir: &Path, write: impl FnOnce(&redb::WriteTransaction)) {
    std::fs::create_dir_all(data_dir).unwrap();
    let db = redb::Database::create(data_dir.join("butler-edge.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    write(&txn);
    txn.commit().unwrap();
}

/// The names of the tables in the (closed) database file.
fn tables(data_dir: &Path) -> Vec<String> {
    use redb::{ReadableDatabase, TableHandle};
    let db = redb::Database::open(data_dir.join("butler-edge.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    txn.list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect()
}

fn value(server: &Server, ns: &str, key: &str) -> Value {
    let (status, body) = json_of(
        client()
            .get(server.url(&format!("/v4/keyvalues/{ns}?key={key}")))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{ns}/{key}: {body}");
    body["value"].clone()
}

fn key_exists(server: &Server, ns: &str, key: &str) -> bool {
    let (status, body) = json_of(
        client()
            .get(server.url(&format!("/v4/keyvalues/{ns}/keyexists?key={key}")))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{ns}/{key}: {body}");
    body["keyExists"].as_bool().unwrap()
}

/// The stored key count from /health (expired keys count until the sweeper removes them).
fn stored_keys(server: &Server) -> u64 {
    let (_, body) = json_of(client().get(server.url("/health")).send().unwrap());
    body["checks"]["database"]["keys"].as_u64().unwrap()
}

/// Waits (up to 10 s) for the sweeper to bring the stored key count to `expected`.
fn wait_for_stored_keys(server: &Server, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_keys(server) != expected {
        assert!(
            Instant::now() < deadline,
            "stored keys stayed {} (expected {expected})",
            stored_keys(server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes each (namespace, key) with the value "new", each a 201.
fn post_new(server: &Server, writes: &[(&str, &str)]) {
    for (ns, key) in writes {
        assert_eq!(
            post(server, ns, json!({"key": key, "value": "new"})),
            201,
            "{ns}/{key}"
        );
    }
}

/// After a migration: stops the service, checks that the earlier layout's tables are gone
/// from the file, starts it again and checks that it lists as before (`keys` of one
/// namespace, all `namespaces`) and neither migrated nor said so again.
fn restart_and_check_migrated_once(
    server: &mut Server,
    (ns, expected_keys): (&str, &[&str]),
    expected_namespaces: Value,
) {
    assert!(server.terminate().success());
    let left = tables(&server.data_dir);
    assert!(
        earlier::TABLES
            .iter()
            .all(|old| !left.iter().any(|t| t == old)),
        "old tables left: {left:?}"
    );
    assert_eq!(
        format_record(&server.data_dir),
        Some(store_file::CURRENT),
        "the migration records the format version"
    );
    server.restart();
    assert_eq!(keys(server, ns), expected_keys);
    assert_eq!(namespaces(server), expected_namespaces);
    let log = server.log();
    assert_eq!(log.matches("from an earlier version").count(), 1, "{log}");
    assert_eq!(log.matches("format version recorded").count(), 1, "{log}");
}

/// The oldest layout (tables `kv`, `namespaces`, `expiry`) listed in name order: opened by
/// the service, its entries keep that order, values and deadlines are intact, new entries go
/// after them, the old tables are gone, and a restart neither migrates nor says so again.
#[test]
fn a_database_from_before_listing_order_keeps_name_order_and_new_entries_go_last() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let past = now_ms() - 1000;
    write_database(&data_dir, |txn| {
        let mut kv = txn.open_table(earlier::KV).unwrap();
        let mut ns = txn.open_table(earlier::NAMESPACES).unwrap();
        let mut expiry = txn.open_table(earlier::EXPIRY).unwrap();
        for (namespace, key) in [("b-ns", "y"), ("b-ns", "x"), ("a-ns", "k")] {
            kv.insert((namespace, key), (0u64, "old")).unwrap();
        }
        // Expired before the migration, not yet swept: never listed, then swept.
        kv.insert(("b-ns", "gone"), (past, "stale")).unwrap();
        expiry.insert((past, "b-ns", "gone"), ()).unwrap();
        ns.insert("b-ns", 3).unwrap();
        ns.insert("a-ns", 1).unwrap();
        ns.insert("empty", 0).unwrap();
    });
    let mut server = Server::start_in(dir, data_dir, &config());
    assert_eq!(namespaces(&server), json!(["a-ns", "b-ns", "empty"]));
    assert_eq!(keys(&server, "b-ns"), ["x", "y"]);
    assert_eq!(value(&server, "b-ns", "y"), "old");
    assert_eq!(value(&server, "a-ns", "k"), "old");
    assert!(!key_exists(&server, "b-ns", "gone"));
    wait_for_stored_keys(&server, 3);
    post_new(
        &server,
        &[("b-ns", "a"), ("b-ns", "x"), ("0-ns", "k"), ("empty", "z")],
    );
    assert_eq!(keys(&server, "b-ns"), ["x", "y", "a"]);
    assert_eq!(keys(&server, "empty"), ["z"]);
    assert_eq!(value(&server, "b-ns", "x"), "new");
    assert_eq!(
        namespaces(&server),
        json!(["a-ns", "b-ns", "empty", "0-ns"])
    );
    let log = server.log();
    assert_eq!(log.matches("from an earlier version").count(), 1, "{log}");
    assert!(log.contains("keep their name order"), "{log}");
    assert!(log.contains("namespaces=3 keys=4"), "{log}");
    restart_and_check_migrated_once(
        &mut server,
        ("b-ns", &["x", "y", "a"]),
        json!(["a-ns", "b-ns", "empty", "0-ns"]),
    );
}

/// The layout with order tables beside the data (one store-wide sequence in `meta`): opened
/// by the service, namespaces and keys keep the order those tables gave them (not name
/// order), values and deadlines are intact, new entries go after them, the old tables are
/// gone, and a restart neither migrates nor says so again.
#[test]
fn a_database_with_order_tables_keeps_its_order_and_new_entries_go_last() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let past = now_ms() - 1000;
    let soon = now_ms() + 4000;
    write_database(&data_dir, |txn| {
        let mut kv = txn.open_table(earlier::KV).unwrap();
        let mut ns = txn.open_table(earlier::NAMESPACES).unwrap();
        let mut expiry = txn.open_table(earlier::EXPIRY).unwrap();
        let mut namespace_order = txn.open_table(earlier::NAMESPACE_ORDER).unwrap();
        let mut key_order = txn.open_table(earlier::KEY_ORDER).unwrap();
        let mut meta = txn.open_table(earlier::META).unwrap();
        // Creation order c-ns, b-ns, a-ns; in b-ns, y before gone before x.
        for (name, count, seq) in [("c-ns", 0, 2), ("b-ns", 3, 5), ("a-ns", 1, 9)] {
            ns.insert(name, count).unwrap();
            namespace_order.insert(name, seq).unwrap();
        }
        for (namespace, key, expires_at, value, seq) in [
            ("b-ns", "y", 0, "why", 3),
            ("b-ns", "gone", past, "stale", 4),
            ("b-ns", "x", soon, "ex", 7),
            ("a-ns", "k", 0, "kay", 8),
        ] {
            kv.insert((namespace, key), (expires_at, value)).unwrap();
            key_order.insert((namespace, key), seq).unwrap();
            if expires_at != 0 {
                expiry.insert((expires_at, namespace, key), ()).unwrap();
            }
        }
        meta.insert("next_seq", 10).unwrap();
        meta.insert("order_version", 1).unwrap();
    });
    let mut server = Server::start_in(dir, data_dir, &config());
    assert_eq!(namespaces(&server), json!(["c-ns", "b-ns", "a-ns"]));
    assert_eq!(keys(&server, "b-ns"), ["y", "x"]);
    assert_eq!(value(&server, "b-ns", "y"), "why");
    assert_eq!(value(&server, "b-ns", "x"), "ex");
    assert_eq!(value(&server, "a-ns", "k"), "kay");
    assert!(!key_exists(&server, "b-ns", "gone"));
    wait_for_stored_keys(&server, 3);
    let log = server.log();
    assert_eq!(log.matches("from an earlier version").count(), 1, "{log}");
    assert!(log.contains("keep their listing order"), "{log}");
    assert!(log.contains("namespaces=3 keys=4"), "{log}");

    // New keys and namespaces go after the migrated ones; an overwrite keeps its place.
    post_new(
        &server,
        &[
            ("b-ns", "a"),
            ("b-ns", "y"),
            ("0-ns", "k"),
            ("c-ns", "first"),
        ],
    );
    assert_eq!(keys(&server, "b-ns"), ["y", "x", "a"]);
    assert_eq!(keys(&server, "c-ns"), ["first"]);
    assert_eq!(namespaces(&server), json!(["c-ns", "b-ns", "a-ns", "0-ns"]));
    restart_and_check_migrated_once(
        &mut server,
        ("b-ns", &["y", "x", "a"]),
        json!(["c-ns", "b-ns", "a-ns", "0-ns"]),
    );
    // The migrated deadline still holds: x expires when it was meant to, and is swept.
    let wait = soon.saturating_sub(now_ms()) + 100;
    std::thread::sleep(Duration::from_millis(wait));
    assert_eq!(keys(&server, "b-ns"), ["y", "a"]);
    wait_for_stored_keys(&server, 5);
}

/// An older version that ran on a migrated file wrote its entries into the old tables: both
/// layouts hold entries, and neither may be dropped. The service refuses to start, says why,
/// and leaves the file as it was.
#[test]
fn a_database_with_entries_in_both_layouts_is_refused_and_left_alone() {
    let mut server = Server::start(KV_CONFIG);
    assert_eq!(
        post(&server, "current", json!({"key": "k", "value": "1"})),
        201
    );
    assert!(server.terminate().success());
    {
        let db = redb::Database::open(server.data_dir.join("butler-edge.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut kv = txn.open_table(earlier::KV).unwrap();
            let mut ns = txn.open_table(earlier::NAMESPACES).unwrap();
            kv.insert(("older", "k"), (0u64, "2")).unwrap();
            ns.insert("older", 1).unwrap();
        }
        txn.commit().unwrap();
    }
    let db_path = server.data_dir.join("butler-edge.redb");
    let config_path = server.config_dir().join("refused.yaml");
    std::fs::write(
        &config_path,
        KV_CONFIG
            .replace("{port}", &free_port().to_string())
            .replace("{max_keys}", "1000"),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(root_user_args())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("butler-edge started on a database with entries in both layouts");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&db_path.display().to_string()), "{err}");
    assert!(err.contains("two layouts"), "{err}");
    assert!(err.contains("Nothing was changed"), "{err}");
    // The older version's entries are still there; once they are dealt with (here: dropped,
    // as after reading them out), the service starts with its own entries intact.
    {
        use redb::ReadableTableMetadata;
        let db = redb::Database::open(&db_path).unwrap();
        let txn = db.begin_write().unwrap();
        assert_eq!(txn.open_table(earlier::KV).unwrap().len().unwrap(), 1);
        assert_eq!(
            txn.open_table(earlier::NAMESPACES).unwrap().len().unwrap(),
            1
        );
        txn.delete_table(earlier::KV).unwrap();
        txn.delete_table(earlier::NAMESPACES).unwrap();
        txn.commit().unwrap();
    }
    server.restart();
    assert_eq!(value(&server, "current", "k"), "1");
    assert_eq!(namespaces(&server), json!(["current"]));
}
