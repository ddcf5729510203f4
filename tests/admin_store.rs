//! `GET /v4/admin/store` and `PUT /v4/admin/store` (README, "Export and restore") against the
//! real binary over HTTPS with client certificates: a round trip between two servers keeps
//! every namespace, key, value, TTL and the listing order; a restore refuses a store that is
//! not empty unless asked to replace it; truncated, corrupt or wrong-version exports are
//! refused and change nothing; only clients with `admin` may call them, and only when the
//! group is on; an export is one point in time while writes go on; a large export streams
//! without the server holding it.

use crate::support;

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::butler::{Butler, assert_butler_error};
use support::pki::{Ca, CertSpec, Issued};
use support::server::{Server, TLS_CONFIG};
use support::tls_client::{Versions, client_config, reqwest_client};

/// Certificates shared by the servers of one test: the server's, an `admin` client and a
/// `writer` client (key-value only).
struct Pki {
    server_ca: Ca,
    callers: Ca,
    server: Issued,
    admin: Issued,
    writer: Issued,
}

impl Pki {
    fn new() -> Pki {
        let server_ca = Ca::new("Server CA");
        let callers = Ca::new("Callers CA");
        Pki {
            server: server_ca.server_cert(&["localhost", "127.0.0.1"]),
            admin: callers.issue(&CertSpec::client("admin")),
            writer: callers.issue(&CertSpec::client("writer")),
            server_ca,
            callers,
        }
    }

    /// A server with client certificates on and the admin group `admin_on`.
    fn server(&self, admin_on: bool) -> Server {
        self.server_with(admin_on, "")
    }

    /// [`Pki::server`] with more `ButlerEdge:` settings (`limits:` indented by two).
    fn server_with(&self, admin_on: bool, more: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        self.server.write(dir.path(), "server");
        self.callers.write_cert(dir.path(), "callers-ca");
        let config = format!(
            "{TLS_CONFIG}ButlerEdge:
  endpointsEnable:
    admin: {admin_on}
  clientAuth:
    enable: true
    ca: [{{dir}}/callers-ca.pem]
    clients:
      - commonName: admin
        endpoints: [admin, kvRead, kvWrite]
      - commonName: writer
        endpoints: [kvRead, kvWrite]
{more}"
        );
        let data = dir.path().join("data");
        Server::start_in(dir, data, &config)
    }

    /// A server with the admin group on, and its admin client.
    fn admin_on_server(&self) -> (Server, Butler) {
        let server = self.server(true);
        let admin = self.as_client(&server, &self.admin);
        (server, admin)
    }

    /// [`Pki::admin_on_server`] holding what [`fill`] writes.
    fn admin_on_filled_server(&self) -> (Server, Butler) {
        let (server, admin) = self.admin_on_server();
        fill(&admin);
        (server, admin)
    }

    fn as_client(&self, server: &Server, who: &Issued) -> Butler {
        let tls = client_config(
            &self.server_ca.cert_pem,
            Some(who),
            &[b"h2"],
            Versions::Both,
        );
        Butler::with_client(server.https_url(""), reqwest_client(tls))
    }
}

/// Every namespace in listing order, each with its keys in listing order and their values.
fn listing(butler: &Butler) -> Vec<(String, Vec<(String, String)>)> {
    let (status, namespaces) = butler.get("/v4/keyvaluesnamespaces");
    assert_eq!(status, 200, "{namespaces}");
    namespaces
        .as_array()
        .unwrap()
        .iter()
        .map(|ns| {
            let ns = ns.as_str().unwrap().to_string();
            let (status, list) = butler.kv_keys(&ns);
            assert_eq!(status, 200, "{list}");
            let keys = list["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let key = k["key"].as_str().unwrap().to_string();
                    let value = butler.kv_value(&ns, &key).unwrap();
                    (key, value)
                })
                .collect();
            (ns, keys)
        })
        .collect()
}

/// The whole export as text, checked to be a 200 of JSON lines.
fn export(butler: &Butler) -> String {
    let response = butler.store_export();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    response.text().unwrap()
}

fn lines(export: &str) -> Vec<Value> {
    export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A store with two namespaces in non-alphabetical order, keys in insertion order (one
/// overwritten, keeping its place), values that need escaping, a TTL and an emptied namespace.
fn fill(butler: &Butler) {
    let posts = [
        ("zeta", json!({"key": "second", "value": "2"})),
        (
            "zeta",
            json!({"key": "first", "value": "line\nbreak \"quoted\" \u{e9}\u{1F600}"}),
        ),
        ("zeta", json!({"key": "second", "value": "overwritten"})),
        (
            "Alpha",
            json!({"key": "ttl", "value": "soon", "ttl": 600_000}),
        ),
        (
            "Alpha",
            json!({"key": "k".repeat(4000), "value": "long key"}),
        ),
        ("empty", json!({"key": "gone", "value": "x"})),
    ];
    for (ns, pair) in posts {
        assert_eq!(butler.kv_post(ns, &pair).0, 201, "{ns} {pair}");
    }
    assert_eq!(butler.kv_delete_key("empty", "gone").0, 204);
}

/// The TTL lines of an export: key → ms left at its header's `exportedAtMs`, as an absolute
/// deadline.
fn deadlines(export: &[Value]) -> Vec<(String, u64)> {
    let at = export[0]["exportedAtMs"].as_u64().unwrap();
    export
        .iter()
        .filter(|l| l["ttlMs"].is_u64())
        .map(|l| {
            let key = l["key"].as_str().unwrap().to_string();
            (key, at + l["ttlMs"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn an_export_restored_into_another_server_has_the_same_store() {
    let pki = Pki::new();
    let (_source, from) = pki.admin_on_filled_server();
    let text = export(&from);
    let exported = lines(&text);
    assert_eq!(exported[0]["type"], "header", "{text}");
    assert_eq!(exported[0]["format"], "butler-edge-store-export");
    assert_eq!(exported[0]["version"], 1);
    assert_eq!(exported[0]["storeFormat"], 3);
    assert_eq!(
        exported.last().unwrap(),
        &json!({"type": "end", "namespaces": 3, "keys": 4})
    );
    let kinds: Vec<&str> = exported
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "header",
            "namespace",
            "key",
            "key",
            "namespace",
            "key",
            "key",
            "namespace",
            "end"
        ]
    );

    let (_target, to) = pki.admin_on_server();
    let (status, body) = to.store_restore("", text.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restored"], json!({"namespaces": 3, "keys": 4}));
    assert_eq!(body["expiredNotRestored"], 0);
    assert_eq!(body["replaced"], false);

    let expected = listing(&from);
    assert_eq!(expected[0].0, "zeta");
    assert_eq!(
        expected[0].1[0],
        ("second".to_string(), "overwritten".to_string())
    );
    assert_eq!(listing(&to), expected);
    // The TTL: the restored key expires when the original does, within a second.
    let again = lines(&export(&to));
    let (before, after) = (deadlines(&exported), deadlines(&again));
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].0, after[0].0);
    assert!(
        before[0].1.abs_diff(after[0].1) < 1000,
        "deadline {} became {}",
        before[0].1,
        after[0].1
    );
    // Namespaces created after a restore go after the restored ones, keys likewise.
    assert_eq!(to.kv_post("new", &json!({"key": "k", "value": "v"})).0, 201);
    assert_eq!(
        to.kv_post("zeta", &json!({"key": "third", "value": "3"})).0,
        201
    );
    let (_, namespaces) = to.get("/v4/keyvaluesnamespaces");
    assert_eq!(namespaces, json!(["zeta", "Alpha", "empty", "new"]));
    let (_, keys) = to.kv_keys("zeta");
    assert_eq!(
        keys["keys"],
        json!([{"key": "second"}, {"key": "first"}, {"key": "third"}])
    );
}

#[test]
fn a_store_that_is_not_empty_is_refused_unless_replaced_and_a_key_expired_since_is_left_out() {
    let pki = Pki::new();
    let (_source, from) = pki.admin_on_filled_server();
    assert_eq!(
        from.kv_post("zeta", &json!({"key": "brief", "value": "b", "ttl": 1500}))
            .0,
        201
    );
    let text = export(&from);

    let (_target, to) = pki.admin_on_server();
    assert_eq!(
        to.kv_post("own", &json!({"key": "mine", "value": "1"})).0,
        201
    );
    let before = listing(&to);
    let (status, body) = to.store_restore("", text.clone());
    assert_butler_error(status, &body, 409, "is not empty (1 namespaces, 1 keys)");
    assert_butler_error(status, &body, 409, "?replace=true");
    assert_eq!(listing(&to), before);

    std::thread::sleep(Duration::from_millis(1600));
    let (status, body) = to.store_restore("?replace=true", text);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replaced"], true);
    assert_eq!(body["expiredNotRestored"], 1, "{body}");
    assert_eq!(body["restored"], json!({"namespaces": 3, "keys": 4}));
    assert_eq!(listing(&to), listing(&from));
    assert!(
        listing(&to).iter().all(|(ns, _)| ns != "own"),
        "the replaced store's namespaces are gone"
    );
}

#[test]
fn a_truncated_corrupt_or_foreign_export_is_refused_and_changes_nothing() {
    let pki = Pki::new();
    let (_server, admin) = pki.admin_on_filled_server();
    let good = export(&admin);
    let good_lines: Vec<&str> = good.lines().collect();
    let without_end = good_lines[..good_lines.len() - 1].join("\n");
    let cut_mid_line = &good[..good.len() - 20];
    let header = good_lines[0];
    let cases: Vec<(String, &str)> = vec![
        (
            without_end,
            "without its end line: it was cut off (truncated)",
        ),
        (
            cut_mid_line.to_string(),
            "line 9: not a line of a butler-edge store export",
        ),
        (
            good.replacen("\"type\":\"key\"", "\"type\":\"kee\"", 1),
            "line 3: not a line of a butler-edge store export",
        ),
        (
            good.replace("\"namespaces\":3,\"keys\":4", "\"namespaces\":3,\"keys\":5"),
            "the end line counts 3 namespaces and 5 keys, but the export holds 3 namespaces \
             and 4 keys",
        ),
        (
            good.replacen("\"version\":1", "\"version\":2", 1),
            "line 1: export format version 2; this release restores version 1",
        ),
        (
            format!("{{\"type\":\"namespace\",\"name\":\"x\"}}\n{good}"),
            "line 1: expected the header line",
        ),
        (
            format!("{header}\n{{\"type\":\"key\",\"key\":\"k\",\"value\":\"v\"}}\n"),
            "line 2: a key line before any namespace line",
        ),
        (
            format!("{good}{{\"type\":\"namespace\",\"name\":\"late\"}}\n"),
            "line 10: text after the end line",
        ),
        (
            good.replacen("\"name\":\"Alpha\"", "\"name\":\"zeta\"", 1),
            "namespace \"zeta\" appears a second time",
        ),
        (String::new(), "the body is empty"),
        (
            "\u{feff}not json at all\n".to_string(),
            "line 1: not a line",
        ),
    ];
    let before = listing(&admin);
    for (body, part) in cases {
        // Replacing: what would be deleted must survive the refusal too.
        let (status, answer) = admin.store_restore("?replace=true", body.clone());
        assert_butler_error(status, &answer, 400, part);
        assert_butler_error(
            status,
            &answer,
            400,
            "Nothing was restored; the store is as it was",
        );
        assert_eq!(listing(&admin), before, "after {part:?}");
    }
    let (status, answer) = admin.store_restore("?replace=maybe", good);
    assert_butler_error(
        status,
        &answer,
        400,
        "querystring/replace must be true or false",
    );
}

#[test]
fn only_clients_with_admin_may_export_or_restore_and_only_when_it_is_on() {
    let pki = Pki::new();
    let server = pki.server(true);
    let writer = pki.as_client(&server, &pki.writer);
    assert_eq!(
        writer.kv_post("w", &json!({"key": "k", "value": "v"})).0,
        201
    );
    let (status, body) = writer.get("/v4/admin/store");
    assert_butler_error(
        status,
        &body,
        403,
        "Client \"writer\" is not permitted to use admin",
    );
    let (status, body) = writer.store_restore("?replace=true", "");
    assert_butler_error(status, &body, 403, "refused: PUT /v4/admin/store");
    assert_eq!(writer.kv_value("w", "k").as_deref(), Some("v"));

    let off = pki.server(false);
    let admin = pki.as_client(&off, &pki.admin);
    let (status, body) = admin.get("/v4/admin/store");
    assert_butler_error(status, &body, 404, "Route GET:/v4/admin/store not found");
    let (status, body) = admin.store_restore("", "");
    assert_butler_error(status, &body, 404, "Route PUT:/v4/admin/store not found");
}

/// While a writer adds `a/kN` then `b/kN` for N = 1, 2, …, an export read slowly holds one
/// moment: as many or one more in `a` than in `b`, consecutive from k1, no more than had been
/// acknowledged when its first bytes arrived, and its end line counts what it holds.
#[test]
fn an_export_is_one_point_in_time_while_writes_go_on() {
    let pki = Pki::new();
    let (server, admin) = pki.admin_on_server();
    // Filler exported first, far larger than the streaming buffers and the sockets' (a few
    // MB on loopback), so that the export is still being produced while the test sleeps.
    let filler = "f".repeat(1_000_000);
    for i in 0..24 {
        let pair = json!({"key": format!("f{i}"), "value": filler});
        assert_eq!(admin.kv_post("fill", &pair).0, 201);
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (done, stop) = (done.clone(), stop.clone());
        let butler = pki.as_client(&server, &pki.writer);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                for ns in ["a", "b"] {
                    let pair = json!({"key": format!("k{n}"), "value": n.to_string()});
                    assert_eq!(butler.kv_post(ns, &pair).0, 201);
                }
                done.store(n, Ordering::SeqCst);
            }
        })
    };
    while done.load(Ordering::SeqCst) < 5 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut reader = BufReader::new(admin.store_export());
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    let acknowledged_at_start = done.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let written_meanwhile = done.load(Ordering::SeqCst) - acknowledged_at_start;
    assert!(
        written_meanwhile >= 10,
        "the writer wrote only {written_meanwhile} pairs"
    );

    let exported = lines(&format!("{header}{rest}"));
    let mut keys: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut namespace = String::new();
    let (mut namespaces, mut key_lines) = (0, 0);
    for line in &exported[1..exported.len() - 1] {
        match line["type"].as_str().unwrap() {
            "namespace" => {
                namespace = line["name"].as_str().unwrap().to_string();
                namespaces += 1;
            }
            "key" => {
                keys.entry(namespace.clone())
                    .or_default()
                    .push(line["key"].as_str().unwrap().to_string());
                key_lines += 1;
            }
            other => panic!("unexpected line type {other}"),
        }
    }
    assert_eq!(
        exported.last().unwrap(),
        &json!({"type": "end", "namespaces": namespaces, "keys": key_lines})
    );
    let (a, b) = (&keys["a"], &keys["b"]);
    let expected: Vec<String> = (1..=a.len()).map(|n| format!("k{n}")).collect();
    assert_eq!(a, &expected, "a holds k1..kN in order");
    assert_eq!(b[..], expected[..b.len()], "b holds k1..kM in order");
    assert!(
        a.len() == b.len() || a.len() == b.len() + 1,
        "a {} b {}",
        a.len(),
        b.len()
    );
    assert!(
        a.len() as u64 <= acknowledged_at_start + 1,
        "the export holds {} pairs, written after it began (only {acknowledged_at_start} \
         were acknowledged when its first line arrived)",
        a.len()
    );
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 80 values of 1 MB: the export (80 MB) arrives while the server's memory stays far below
/// it, and it restores into another server the same way.
#[test]
fn a_large_export_streams_without_the_server_holding_it() {
    const VALUES: usize = 80;
    const VALUE_BYTES: usize = 1_000_000;
    let pki = Pki::new();
    let (source, from) = pki.admin_on_server();
    for i in 0..VALUES {
        let value = char::from(b'a' + (i % 26) as u8)
            .to_string()
            .repeat(VALUE_BYTES);
        assert_eq!(
            from.kv_post("big", &json!({"key": format!("v{i}"), "value": value}))
                .0,
            201
        );
    }
    let before = rss_bytes(source.pid());
    let started = Instant::now();
    let mut response = from.store_export();
    let mut first = vec![0u8; 64 << 10];
    response.read_exact(&mut first).unwrap();
    let first_after = started.elapsed();
    let mut text = first;
    let mut peak = before;
    let mut chunk = vec![0u8; 4 << 20];
    loop {
        let n = response.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        text.extend_from_slice(&chunk[..n]);
        peak = peak.max(rss_bytes(source.pid()));
    }
    let total_after = started.elapsed();
    let size = text.len();
    assert!(size > VALUES * VALUE_BYTES, "export of {size} bytes");
    let growth = peak.saturating_sub(before);
    println!(
        "export of {size} bytes: first 64 KiB after {first_after:?}, all after \
         {total_after:?}; server RSS {before} → peak {peak} (+{growth})"
    );
    assert!(
        growth < (size / 4) as u64,
        "the server grew by {growth} bytes while exporting {size}"
    );

    let (target, to) = pki.admin_on_server();
    let before = rss_bytes(target.pid());
    let (status, body) = to.store_restore("", text);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restored"], json!({"namespaces": 1, "keys": VALUES}));
    let after = rss_bytes(target.pid());
    println!("restore: server RSS {before} → {after}");
    assert_eq!(to.kv_value("big", "v79").unwrap().len(), VALUE_BYTES);
}

/// A request body that sends `first`, waits `pause`, then sends `rest`: a restore under way.
struct Paused {
    parts: Vec<Vec<u8>>,
    pause: Duration,
}

impl Read for Paused {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let Some(part) = self.parts.first_mut() else {
            return Ok(0);
        };
        if part.is_empty() {
            self.parts.remove(0);
            std::thread::sleep(self.pause);
            return self.read(out);
        }
        let n = out.len().min(part.len());
        out[..n].copy_from_slice(&part[..n]);
        part.drain(..n);
        Ok(n)
    }
}

/// While a restore's body is still arriving, the store keeps answering: reads see the store
/// as it was, writes get a 503 saying why at once (the writer thread does not wait inside
/// the restore's transaction), and once the restore is committed both see the export.
#[test]
fn while_a_restore_runs_reads_see_the_old_store_and_writes_get_503() {
    let pki = Pki::new();
    let (server, admin) = pki.admin_on_filled_server();
    let text = export(&admin);
    assert_eq!(admin.kv_delete_namespace("zeta").0, 204);
    let during = listing(&admin);
    let (head, tail) = text.split_at(
        text.find("{\"type\":\"namespace\",\"name\":\"Alpha\"")
            .unwrap(),
    );
    let restore = {
        let tls = client_config(
            &pki.server_ca.cert_pem,
            Some(&pki.admin),
            &[b"h2"],
            Versions::Both,
        );
        let http = reqwest_client(tls);
        let url = server.https_url("/v4/admin/store?replace=true");
        let body = Paused {
            parts: vec![head.as_bytes().to_vec(), tail.as_bytes().to_vec()],
            pause: Duration::from_millis(2000),
        };
        std::thread::spawn(move || {
            let response = http
                .put(url)
                .body(reqwest::blocking::Body::new(body))
                .send()
                .unwrap();
            support::server::json_of(response)
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    let (status, body) = admin.kv_post("late", &json!({"key": "k", "value": "v"}));
    assert_butler_error(
        status,
        &body,
        503,
        "a restore of the whole key-value store is under way",
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(listing(&admin), during, "reads see the store as it was");
    let (status, body) = restore.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(admin.kv_value("zeta", "first").is_some());
    assert_eq!(
        admin.kv_post("late", &json!({"key": "k", "value": "v"})).0,
        201
    );
}

/// A restore larger than `ButlerEdge.limits.maxRestoreBytes` is cut off with a 413 naming
/// the setting, and nothing changes.
#[test]
fn a_restore_larger_than_its_limit_is_refused_and_changes_nothing() {
    let pki = Pki::new();
    let server = pki.server_with(true, "  limits:\n    maxRestoreBytes: 300\n");
    let admin = pki.as_client(&server, &pki.admin);
    fill(&admin);
    let before = listing(&admin);
    let (status, body) = admin.store_restore("?replace=true", export(&admin));
    assert_butler_error(
        status,
        &body,
        413,
        "larger than the limit of 300 bytes (ButlerEdge.limits.maxRestoreBytes)",
    );
    assert_butler_error(status, &body, 413, "Nothing was restored");
    assert_eq!(listing(&admin), before);
}

/// Below `ButlerEdge.minFreeDiskBytes` a restore is a 507 like any other write, and nothing
/// is restored.
#[test]
fn a_restore_below_the_free_disk_threshold_is_a_507() {
    let pki = Pki::new();
    let (_source, from) = pki.admin_on_filled_server();
    let full = pki.server_with(true, "  minFreeDiskBytes: 1152921504606846976\n");
    let to = pki.as_client(&full, &pki.admin);
    let (status, body) = to.store_restore("", export(&from));
    assert_butler_error(status, &body, 507, "ButlerEdge.minFreeDiskBytes");
    assert_eq!(listing(&to), vec![]);
}
