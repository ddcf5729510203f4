//! Issue 15's attacks, each against the real binary over real sockets, and proof that it
//! no longer works: nothing half-applied (key-value items of a start request, a CRL with
//! a bad signature on reload), logs that cannot be forged (control characters in
//! certificate names and tags), a browser cannot be used against the API (cross-origin
//! and form posts), and memory stays bounded under an HTTP/2 body flood.

mod support;

use serde_json::{Value, json};
use support::butler::{Butler, assert_butler_error};
use support::fake_qrs::{FakeQrs, FakeTask, butler_qrs_yaml};
use support::pki::{KeyKind, SenseCerts};
use support::server::Server;

const TASK: &str = "aaaaaaaa-0000-4000-8000-000000000001";

/// Plain HTTP, the key-value store limited to `max_keys` per namespace, start-task on
/// against a fake QRS.
fn start_task_config(certs: &SenseCerts, qrs_port: u16, max_keys: u64) -> String {
    format!(
        "\
Butler:
  logLevel: info
  restServerConfig:
    enable: true
    serverHost: 127.0.0.1
    serverPort: {{port}}
  restServerEndpointsEnable:
    keyValueStore: true
    senseStartTask: true
  keyValueStore:
    enable: true
    maxKeysPerNamespace: {max_keys}
{qrs}",
        qrs = butler_qrs_yaml(qrs_port, &certs.client.cert, &certs.client.key, &certs.root),
    )
}

fn fake_qrs() -> (SenseCerts, FakeQrs) {
    let certs = SenseCerts::new(&["localhost"], KeyKind::RsaPkcs1);
    let qrs = FakeQrs::start(
        &certs.server,
        &certs.ca,
        vec![FakeTask::new(TASK, "Reload A").tag("nightly")],
    );
    (certs, qrs)
}

fn key_value_items(namespace: &str, count: usize) -> Value {
    Value::Array(
        (0..count)
            .map(|i| {
                json!({"type": "keyvaluestore",
                       "payload": {"namespace": namespace, "key": format!("k{i}"), "value": "v"}})
            })
            .collect(),
    )
}

/// Eight key-value items into a namespace limited to five keys: the start is refused, and
/// not one of the eight is stored (it used to keep keys 0–4).
#[test]
fn key_value_items_of_a_start_request_are_stored_all_or_none() {
    let (certs, qrs) = fake_qrs();
    let server = Server::start(&start_task_config(&certs, qrs.port(), 5));
    let api = Butler::on_port(server.port);
    let (status, body) = api.start(TASK, "", &key_value_items("Sales", 8).to_string());
    assert_butler_error(status, &body, 409, "No task was started");
    assert!(qrs.start_calls().is_empty(), "no task may start");
    let (status, body) = api.kv_keys("Sales");
    assert_butler_error(status, &body, 400, "Namespace not found");

    // With room for them, all are stored (also when some replace existing keys).
    let (status, body) = api.kv_post("Sales", &json!({"key": "k0", "value": "old"}));
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.start(TASK, "", &key_value_items("Sales", 5).to_string());
    assert_eq!(status, 200, "{body}");
    let (_, keys) = api.kv_keys("Sales");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(5), "{keys}");
    // Six would need one more key than the limit: refused, the five stay as they were.
    let (status, body) = api.start(TASK, "", &key_value_items("Sales", 6).to_string());
    assert_butler_error(status, &body, 409, "No task was started");
    let (_, keys) = api.kv_keys("Sales");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(5), "{keys}");
}
