//! Listing order, as Butler has it: `GET /v4/keyvaluesnamespaces` in namespace creation order,
//! `GET /v4/keylist/{ns}` in key insertion order; an overwrite keeps a key's place, a deleted
//! (or expired) and re-created key or namespace goes to the end. The order is durable: it
//! survives a clean restart and `kill -9`, and a database written before the order was kept
//! (today's main) opens with its entries in name order and new ones after them.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::server::{KV_CONFIG, Server, client, json_of};

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

/// A database written by a version that listed in name order has no order tables: it is
/// written here with exactly that schema (tables `kv`, `namespaces`, `expiry`), opened by the
/// service, and lists its entries in the name order it had; new entries go after them.
#[test]
fn a_database_from_before_listing_order_keeps_name_order_and_new_entries_go_last() {
    use redb::{Database, TableDefinition};
    const KV: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("kv");
    const NAMESPACES: TableDefinition<&str, u64> = TableDefinition::new("namespaces");
    const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("expiry");

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    {
        let db = Database::create(data_dir.join("butler-edge.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut kv = txn.open_table(KV).unwrap();
            let mut ns = txn.open_table(NAMESPACES).unwrap();
            txn.open_table(EXPIRY).unwrap();
            for (namespace, key) in [("b-ns", "y"), ("b-ns", "x"), ("a-ns", "k")] {
                kv.insert((namespace, key), (0u64, "old")).unwrap();
            }
            ns.insert("b-ns", 2).unwrap();
            ns.insert("a-ns", 1).unwrap();
        }
        txn.commit().unwrap();
    }
    let mut server = Server::start_in(dir, data_dir, KV_CONFIG);
    assert_eq!(namespaces(&server), json!(["a-ns", "b-ns"]));
    assert_eq!(keys(&server, "b-ns"), ["x", "y"]);
    assert_eq!(
        post(&server, "b-ns", json!({"key": "a", "value": "new"})),
        201
    );
    assert_eq!(
        post(&server, "b-ns", json!({"key": "x", "value": "new"})),
        201
    );
    assert_eq!(
        post(&server, "0-ns", json!({"key": "k", "value": "new"})),
        201
    );
    assert_eq!(keys(&server, "b-ns"), ["x", "y", "a"]);
    assert_eq!(namespaces(&server), json!(["a-ns", "b-ns", "0-ns"]));
    assert!(
        server.log().contains("from an earlier version"),
        "{}",
        server.log()
    );
    // Migrated once: a restart neither renumbers nor says it again.
    assert!(server.terminate().success());
    server.restart();
    assert_eq!(keys(&server, "b-ns"), ["x", "y", "a"]);
    assert_eq!(namespaces(&server), json!(["a-ns", "b-ns", "0-ns"]));
    assert_eq!(server.log().matches("from an earlier version").count(), 1);
}
