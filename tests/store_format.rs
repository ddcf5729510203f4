//! The database's format version (README, "Store format version"), both directions, with the
//! real binary: a new file and one written before versions were kept get the record once; a
//! file a newer release wrote opens when its oldest-reader version allows this release, and is
//! refused, byte for byte unchanged, when it asks for a newer reader. (The migrations from
//! the two older layouts check the record too: `listing_order`.)

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::server::{KV_CONFIG, Launch, Server};
use support::store_file::{CURRENT, format_record, set_format_record};

/// A server's store with one key in it, then stopped: a file in the current format.
fn stopped_server_with_a_key() -> Server {
    let mut server = Server::start(KV_CONFIG);
    let butler = server.butler();
    assert_eq!(
        butler.kv_post("keep", &json!({"key": "k", "value": "v"})).0,
        201
    );
    assert!(server.terminate().success());
    server
}

fn value_of(server: &Server) -> String {
    let (status, body) = server.butler().kv_get("keep", "k");
    assert_eq!(status, 200, "{body}");
    body["value"].as_str().unwrap().to_string()
}

/// A new file gets the current record, logged once; a restart opens it and writes nothing.
#[test]
fn a_new_file_records_the_current_format_once() {
    let mut server = stopped_server_with_a_key();
    assert_eq!(format_record(&server.data_dir), Some(CURRENT));
    server.restart();
    assert_eq!(value_of(&server), "v");
    let log = server.log();
    assert_eq!(log.matches("format version recorded").count(), 1, "{log}");
}

/// A file of the current layout written before the record existed (this release's tables,
/// no `store_format`): opened as it is, and the record written once.
#[test]
fn a_current_layout_file_without_a_record_gets_one() {
    let mut server = stopped_server_with_a_key();
    {
        let db = redb::Database::create(server.data_dir.join("butler-edge.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(support::store_file::FORMAT).unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(format_record(&server.data_dir), None);
    server.restart();
    assert_eq!(value_of(&server), "v");
    assert!(server.terminate().success());
    assert_eq!(format_record(&server.data_dir), Some(CURRENT));
    let log = server.log();
    assert_eq!(log.matches("format version recorded").count(), 2, "{log}");
}

/// A later release wrote format 7 but says format-3 readers may open it: this release opens
/// it, serves its data and leaves the record as the newer release wrote it.
#[test]
fn a_newer_format_that_older_readers_may_open_opens_and_keeps_its_record() {
    let mut server = stopped_server_with_a_key();
    set_format_record(&server.data_dir, (7, CURRENT.0));
    server.restart();
    assert_eq!(value_of(&server), "v");
    assert_eq!(
        server
            .butler()
            .kv_post("keep", &json!({"key": "k2", "value": "w"}))
            .0,
        201
    );
    assert!(server.terminate().success());
    assert_eq!(format_record(&server.data_dir), Some((7, CURRENT.0)));
    let log = server.log();
    assert!(log.contains("written by a newer release"), "{log}");
}

/// A file that needs a newer reader than this release: start-up is refused with a message
/// naming the file, the versions and what to do, and the file is byte for byte as it was.
#[test]
fn a_file_that_needs_a_newer_reader_is_refused_and_left_unchanged() {
    let server = stopped_server_with_a_key();
    set_format_record(&server.data_dir, (5, 4));
    let db_path = server.data_dir.join("butler-edge.redb");
    let before = std::fs::read(&db_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exit = Launch::new(KV_CONFIG, dir.path())
        .data_dir(&server.data_dir)
        .expect_exit(
            Duration::from_secs(20),
            "on a file that needs a newer reader",
        );
    let err = &exit.stderr;
    assert_eq!(exit.code, 1, "{err}");
    for part in [
        db_path.display().to_string().as_str(),
        "written by a newer butler-edge in store format 5",
        "reading format 4 or later",
        "this release reads format 3",
        "Nothing in the file was changed",
        "install the newer update again",
        "restore the export into it",
    ] {
        assert!(err.contains(part), "{part:?} missing in {err}");
    }
    assert!(
        std::fs::read(&db_path).unwrap() == before,
        "the refused file was changed"
    );
    assert_eq!(format_record(&server.data_dir), Some((5, 4)));
}
