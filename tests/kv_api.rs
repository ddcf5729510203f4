//! Butler's key-value API against the real binary: every endpoint's success and
//! error paths, the request shapes butler_subs.qvs sends, awkward names, TTLs,
//! limits.

use crate::support;
use support::butler::assert_butler_error;

use std::time::Duration;

use serde_json::{Value, json};
use support::server::{KV_CONFIG, Server, client, json_of};

#[test]
fn ping_and_enabled_endpoints() {
    let server = Server::start(KV_CONFIG);
    let (status, body) = server.butler().get("/v4/butlerping");
    assert_eq!(status, 200);
    assert_eq!(body["response"], "Butler reporting for duty");
    assert_eq!(body["butlerVersion"], env!("CARGO_PKG_VERSION"));
    let (status, body) = server.butler().get("/v4/configfile/endpointsenabled");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!(["apiListEnabledEndpoints", "butlerping", "keyValueStore"])
    );
}

#[test]
fn create_read_list_delete_round_trip() {
    let server = Server::start(KV_CONFIG);
    let (status, body) = server.butler().post_json(
        "/v4/keyvalues/Sales%20ETL",
        r#"{"key":"Last extract","value":"2020-09-29 17:14:56","ttl":60000}"#,
    );
    assert_eq!(status, 201);
    assert_eq!(
        body,
        json!({"namespace":"Sales ETL","key":"Last extract","value":"2020-09-29 17:14:56","ttl":60000})
    );
    let (status, body) = server
        .butler()
        .get("/v4/keyvalues/Sales%20ETL?key=Last%20extract");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"namespace":"Sales ETL","key":"Last extract","value":"2020-09-29 17:14:56"})
    );
    let (status, body) = server
        .butler()
        .get("/v4/keyvalues/Sales%20ETL/keyexists?key=Last%20extract");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"keyExists":true,"keyValue":{"namespace":"Sales ETL","key":"Last extract","value":"2020-09-29 17:14:56"}})
    );
    let (status, body) = server
        .butler()
        .get("/v4/keyvalues/Sales%20ETL/keyexists?key=other");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"keyExists":false,"keyValue":{}}));

    server
        .butler()
        .post_json("/v4/keyvalues/Sales%20ETL", r#"{"key":"b","value":"2"}"#);
    server
        .butler()
        .post_json("/v4/keyvalues/Another", r#"{"key":"x","value":"1"}"#);
    let (status, body) = server.butler().get("/v4/keylist/Sales%20ETL");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"namespace":"Sales ETL","keys":[{"key":"Last extract"},{"key":"b"}]})
    );
    let (status, body) = server.butler().get("/v4/keyvaluesnamespaces");
    assert_eq!(status, 200);
    // Butler's order: creation order, not name order.
    assert_eq!(body, json!(["Sales ETL", "Another"]));

    let (status, body) = server.butler().delete("/v4/keyvalues/Sales%20ETL/b");
    assert_eq!((status, body), (204, Value::Null));
    let (status, body) = server.butler().delete("/v4/keyvalues/Sales%20ETL/b");
    assert_butler_error(
        status,
        &body,
        400,
        "Key 'b' not found in namespace: Sales ETL",
    );

    let (status, _) = server.butler().delete("/v4/keyvalues/Sales%20ETL");
    assert_eq!(status, 204);
    let (status, body) = server.butler().delete("/v4/keyvalues/Sales%20ETL");
    assert_butler_error(status, &body, 400, "Namespace not found: Sales ETL");
    let (_, body) = server.butler().get("/v4/keyvaluesnamespaces");
    assert_eq!(body, json!(["Another"]));
}

#[test]
fn missing_things_are_butlers_400s() {
    let server = Server::start(KV_CONFIG);
    let (status, body) = server.butler().get("/v4/keyvalues/nope?key=a");
    assert_butler_error(status, &body, 400, "Namespace not found: nope");
    let (status, body) = server.butler().get("/v4/keyvalues/nope/keyexists?key=a");
    assert_butler_error(status, &body, 400, "Namespace not found: nope");
    let (status, body) = server.butler().get("/v4/keylist/nope");
    assert_butler_error(status, &body, 400, "Namespace not found: nope");
    let (status, body) = server.butler().delete("/v4/keyvalues/nope/a");
    assert_butler_error(status, &body, 400, "Namespace not found: nope");

    server
        .butler()
        .post_json("/v4/keyvalues/ns", r#"{"key":"a","value":"1"}"#);
    let (status, body) = server.butler().get("/v4/keyvalues/ns?key=zz");
    assert_butler_error(status, &body, 400, "Key 'zz' not found in namespace: ns");
    let (status, body) = server.butler().get("/v4/keyvalues/ns");
    assert_butler_error(status, &body, 400, "required property 'key'");
    let (status, body) = server.butler().get("/v4/keyvalues/ns/keyexists");
    assert_butler_error(status, &body, 400, "required property 'key'");
}

#[test]
fn a_namespace_outlives_its_last_key() {
    let server = Server::start(KV_CONFIG);
    server
        .butler()
        .post_json("/v4/keyvalues/kept", r#"{"key":"only","value":"v"}"#);
    assert_eq!(server.butler().delete("/v4/keyvalues/kept/only").0, 204);
    assert_eq!(
        server.butler().get("/v4/keyvaluesnamespaces").1,
        json!(["kept"])
    );
    assert_eq!(
        server.butler().get("/v4/keylist/kept"),
        (200, json!({"namespace":"kept","keys":[]}))
    );
}

#[test]
fn values_take_butlers_string_forms() {
    let server = Server::start(KV_CONFIG);
    let cases = [
        (
            r#"{"key":"n","value":12345.789}"#,
            Some(json!("12345.789")),
            "12345.789",
        ),
        (r#"{"key":"i","value":42}"#, Some(json!("42")), "42"),
        (r#"{"key":"b","value":true}"#, Some(json!("true")), "true"),
        (r#"{"key":"z","value":null}"#, Some(json!("")), ""),
        (r#"{"key":"m"}"#, None, ""),
    ];
    for (body, echoed, stored) in cases {
        let (status, echo) = server.butler().post_json("/v4/keyvalues/forms", body);
        assert_eq!(status, 201, "{body}: {echo}");
        assert_eq!(echo.get("value").cloned(), echoed, "{body}: {echo}");
        assert_eq!(echo["ttl"], json!(0));
        let key = echo["key"].as_str().unwrap().to_string();
        let (_, got) = server
            .butler()
            .get(&format!("/v4/keyvalues/forms?key={key}"));
        assert_eq!(got["value"], json!(stored), "{body}");
    }
    // A key sent as a number is stored under its text form.
    let (status, echo) = server
        .butler()
        .post_json("/v4/keyvalues/forms", r#"{"key":7,"value":"x"}"#);
    assert_eq!((status, echo["key"].clone()), (201, json!("7")));
}

#[test]
fn bad_bodies_are_400s_that_say_what_was_wrong_and_store_nothing() {
    let server = Server::start(KV_CONFIG);
    let cases = [
        (
            r#"{"key":"k","value":{"a":1}}"#,
            "body/value must be string",
        ),
        (r#"{"key":"k","value":[1]}"#, "body/value must be string"),
        (
            r#"{"key":"k","value":"v","ttl":""}"#,
            "body/ttl must be number",
        ),
        (r#"{"key":"k","value":"v","ttl":"soon"}"#, "\"soon\""),
        (
            r#"{"key":"k","value":"v","ttl":{}}"#,
            "body/ttl must be number",
        ),
        (r#"{"value":"v"}"#, "Required parameter is missing"),
        (r#"{"key":"","value":"v"}"#, "Required parameter is missing"),
        (r#"{"key":{"x":1},"value":"v"}"#, "body/key must be string"),
        (r#"{"key":"k","value":"v""#, "not valid JSON"),
        (r#"["k","v"]"#, "body must be object"),
        ("", "Required parameter is missing"),
    ];
    for (body, message) in cases {
        let (status, reply) = server.butler().post_json("/v4/keyvalues/strict", body);
        assert_butler_error(status, &reply, 400, message);
    }
    let (status, body) = server.butler().get("/v4/keyvaluesnamespaces");
    assert_eq!(
        (status, body),
        (200, json!([])),
        "nothing may have been stored"
    );
}

#[test]
fn ttl_as_number_or_string_and_zero_or_negative_mean_forever() {
    let server = Server::start(KV_CONFIG);
    let (status, echo) = server.butler().post_json(
        "/v4/keyvalues/ttl",
        r#"{"key":"short","value":"v","ttl":"400"}"#,
    );
    assert_eq!((status, echo["ttl"].clone()), (201, json!(400)));
    server.butler().post_json(
        "/v4/keyvalues/ttl",
        r#"{"key":"long","value":"v","ttl":60000}"#,
    );
    server
        .butler()
        .post_json("/v4/keyvalues/ttl", r#"{"key":"zero","value":"v","ttl":0}"#);
    let (_, echo) = server
        .butler()
        .post_json("/v4/keyvalues/ttl", r#"{"key":"neg","value":"v","ttl":-5}"#);
    assert_eq!(echo["ttl"], json!(-5));
    assert_eq!(server.butler().get("/v4/keyvalues/ttl?key=short").0, 200);
    std::thread::sleep(Duration::from_millis(700));
    let (status, body) = server.butler().get("/v4/keyvalues/ttl?key=short");
    assert_butler_error(
        status,
        &body,
        400,
        "Key 'short' not found in namespace: ttl",
    );
    assert_eq!(
        server
            .butler()
            .get("/v4/keyvalues/ttl/keyexists?key=short")
            .1,
        json!({"keyExists":false,"keyValue":{}})
    );
    for key in ["long", "zero", "neg"] {
        assert_eq!(
            server
                .butler()
                .get(&format!("/v4/keyvalues/ttl?key={key}"))
                .0,
            200,
            "{key}"
        );
    }
    assert_eq!(
        server.butler().get("/v4/keylist/ttl").1,
        json!({"namespace":"ttl","keys":[{"key":"long"},{"key":"zero"},{"key":"neg"}]})
    );
    // Rewriting a key restarts its TTL from the last update.
    server.butler().post_json(
        "/v4/keyvalues/ttl",
        r#"{"key":"renew","value":"1","ttl":500}"#,
    );
    std::thread::sleep(Duration::from_millis(300));
    server.butler().post_json(
        "/v4/keyvalues/ttl",
        r#"{"key":"renew","value":"2","ttl":500}"#,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.butler().get("/v4/keyvalues/ttl?key=renew").1["value"],
        json!("2")
    );
}

#[test]
fn awkward_names_round_trip() {
    let server = Server::start(KV_CONFIG);
    // (path-encoded namespace, decoded namespace, query-encoded key, decoded key)
    let cases = [
        (
            "Sales%20ETL%20step%202",
            "Sales ETL step 2",
            "Last+extract",
            "Last extract",
        ),
        (
            "R%C3%A4kna%20%C3%A5%C3%A4%C3%B6",
            "Räkna åäö",
            "nyckel%20%C3%B6",
            "nyckel ö",
        ),
        ("a+b", "a+b", "c%2Bd", "c+d"),
        ("dir%2Fsub", "dir/sub", "path%2Fkey", "path/key"),
        ("pct%25done", "pct%done", "100%25", "100%"),
    ];
    for (ns_path, ns, key_query, key) in cases {
        let body = json!({"key": key, "value": format!("value of {key}")}).to_string();
        let (status, echo) = server
            .butler()
            .post_json(&format!("/v4/keyvalues/{ns_path}"), &body);
        assert_eq!(status, 201, "{ns}: {echo}");
        assert_eq!(echo["namespace"], json!(ns));
        let (status, got) = server
            .butler()
            .get(&format!("/v4/keyvalues/{ns_path}?key={key_query}"));
        assert_eq!(status, 200, "{ns}/{key}: {got}");
        assert_eq!(
            got,
            json!({"namespace": ns, "key": key, "value": format!("value of {key}")})
        );
        let (_, list) = server.butler().get(&format!("/v4/keylist/{ns_path}"));
        assert_eq!(list["keys"], json!([{ "key": key }]));
        let key_path = key_query.replace('+', "%20");
        let (status, _) = server
            .butler()
            .delete(&format!("/v4/keyvalues/{ns_path}/{key_path}"));
        assert_eq!(status, 204, "delete {ns}/{key}");
    }
    let (_, names) = server.butler().get("/v4/keyvaluesnamespaces");
    let expected: Vec<&str> = cases.iter().map(|c| c.1).collect();
    assert_eq!(names, json!(expected), "in creation order");
}

/// The exact requests butler_subs.qvs makes through Sense's REST connector, which
/// can only send GET and POST.
#[test]
fn butler_subs_qvs_request_shapes() {
    let server = Server::start(KV_CONFIG);
    let http = client();
    // AddKeyValue with a TTL: string ttl, Content-Type set.
    let response = http
        .post(server.url("/v4/keyvalues/MyNamespace"))
        .header("Content-Type", "application/json")
        .body(r#"{"key": "An important key", "value": "The value", "ttl": "3000"}"#)
        .send()
        .unwrap();
    assert_eq!(
        json_of(response),
        (
            201,
            json!({"namespace":"MyNamespace","key":"An important key","value":"The value","ttl":3000})
        )
    );
    // AddKeyValue without a TTL.
    let response = http
        .post(server.url("/v4/keyvalues/MyNamespace"))
        .header("Content-Type", "application/json")
        .body(r#"{"key": "Other key", "value": "Other value"}"#)
        .send()
        .unwrap();
    assert_eq!(json_of(response).0, 201);
    // GetKeyValue
    let (status, body) = json_of(
        http.get(server.url("/v4/keyvalues/MyNamespace?key=An%20important%20key"))
            .send()
            .unwrap(),
    );
    assert_eq!((status, body["value"].clone()), (200, json!("The value")));
    // ExistsKeyValue
    let (_, body) = json_of(
        http.get(server.url("/v4/keyvalues/MyNamespace/keyexists?key=An%20important%20key"))
            .send()
            .unwrap(),
    );
    assert_eq!(body["keyExists"], json!(true));
    // GetKeyValueNamespaces and GetAllKeysInNamespace
    let (_, body) = json_of(
        http.get(server.url("/v4/keyvaluesnamespaces"))
            .send()
            .unwrap(),
    );
    assert_eq!(body, json!(["MyNamespace"]));
    let (_, body) = json_of(
        http.get(server.url("/v4/keylist/MyNamespace"))
            .send()
            .unwrap(),
    );
    assert_eq!(
        body["keys"],
        json!([{"key":"An important key"},{"key":"Other key"}])
    );
    // DeleteKeyValue: POST, no body, no content type, method override.
    let response = http
        .post(server.url("/v4/keyvalues/MyNamespace/Other%20key"))
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    // DeleteKeyValueNamespace
    let response = http
        .post(server.url("/v4/keyvalues/MyNamespace"))
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let (_, body) = json_of(
        http.get(server.url("/v4/keyvaluesnamespaces"))
            .send()
            .unwrap(),
    );
    assert_eq!(body, json!([]));
    // An override the server cannot honour is refused, not guessed at.
    let (status, body) = json_of(
        http.post(server.url("/v4/keyvalues/MyNamespace"))
            .header("X-HTTP-Method-Override", "PATCH")
            .send()
            .unwrap(),
    );
    assert_butler_error(status, &body, 400, "X-HTTP-Method-Override");
}

#[test]
fn namespace_key_limit_is_enforced_but_updates_still_succeed() {
    let config = KV_CONFIG.replace("{max_keys}", "3");
    let server = Server::start(&config);
    for key in ["a", "b", "c"] {
        let body = format!(r#"{{"key":"{key}","value":"1"}}"#);
        assert_eq!(
            server.butler().post_json("/v4/keyvalues/small", &body).0,
            201
        );
    }
    let (status, body) = server
        .butler()
        .post_json("/v4/keyvalues/small", r#"{"key":"d","value":"1"}"#);
    assert_butler_error(status, &body, 409, "'small'");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("limit of 3 keys"),
        "{body}"
    );
    let (status, _) = server
        .butler()
        .post_json("/v4/keyvalues/small", r#"{"key":"a","value":"2"}"#);
    assert_eq!(status, 201, "updating an existing key is not a new key");
    assert_eq!(
        server.butler().get("/v4/keyvalues/small?key=a").1["value"],
        json!("2")
    );
    assert_eq!(server.butler().get("/v4/keyvalues/small?key=d").0, 400);
    // Other namespaces are not affected, and a deleted key frees its slot.
    assert_eq!(
        server
            .butler()
            .post_json("/v4/keyvalues/other", r#"{"key":"d","value":"1"}"#)
            .0,
        201
    );
    assert_eq!(server.butler().delete("/v4/keyvalues/small/b").0, 204);
    assert_eq!(
        server
            .butler()
            .post_json("/v4/keyvalues/small", r#"{"key":"d","value":"1"}"#)
            .0,
        201
    );
}

#[test]
fn size_limits_name_the_limit() {
    let config = format!(
        "{}ButlerEdge:\n  limits:\n    maxBodyBytes: 4096\n    maxKeyBytes: 16\n    maxValueBytes: 64\n",
        KV_CONFIG
    );
    let server = Server::start(&config);
    let long_key = "k".repeat(17);
    let (status, body) = server.butler().post_json(
        "/v4/keyvalues/limits",
        &json!({"key": long_key, "value": "v"}).to_string(),
    );
    assert_butler_error(status, &body, 400, "ButlerEdge.limits.maxKeyBytes");
    let (status, body) = server.butler().post_json(
        "/v4/keyvalues/limits",
        &json!({"key": "k", "value": "v".repeat(65)}).to_string(),
    );
    assert_butler_error(status, &body, 400, "the limit is 64 bytes");
    let (status, body) = server.butler().post_json(
        "/v4/keyvalues/limits",
        &json!({"key": "k", "value": "v".repeat(5000)}).to_string(),
    );
    assert_butler_error(status, &body, 413, "ButlerEdge.limits.maxBodyBytes");
    assert_eq!(server.butler().get("/v4/keyvaluesnamespaces").1, json!([]));
}

#[test]
fn unknown_routes_and_disabled_endpoints_are_404s() {
    let server = Server::start(KV_CONFIG);
    let (status, body) = server.butler().get("/v4/nothing/here");
    assert_butler_error(status, &body, 404, "Route GET:/v4/nothing/here not found");
    let (status, body) = json_of(client().put(server.url("/v4/butlerping")).send().unwrap());
    assert_butler_error(status, &body, 404, "not found");

    let disabled = KV_CONFIG
        .replace("    keyValueStore: true", "    keyValueStore: false")
        .replace("butlerping: true", "butlerping: false");
    let server = Server::start(&disabled);
    let (status, body) = server.butler().get("/v4/keyvaluesnamespaces");
    assert_butler_error(status, &body, 404, "not found");
    let (status, body) = server.butler().get("/v4/butlerping");
    assert_butler_error(status, &body, 404, "not found");
    let (status, body) = server.butler().get("/v4/configfile/endpointsenabled");
    assert_eq!((status, body), (200, json!(["apiListEnabledEndpoints"])));
}

/// `POST /v4/keyvalues/` (no namespace) is a 400 and creates nothing (it used to create a
/// namespace named "").
#[test]
fn a_post_without_a_namespace_is_refused() {
    let server = Server::start(KV_CONFIG);
    let api = support::butler::Butler::on_port(server.port);
    let (status, body) = api.kv_post("", &serde_json::json!({"key": "k", "value": "v"}));
    support::butler::assert_butler_error(status, &body, 400, "the namespace");
    let (status, body) = api.get("/v4/keyvaluesnamespaces");
    assert_eq!((status, body), (200, serde_json::json!([])));
}

/// Store-wide quotas: namespaces and keys over `ButlerEdge.limits.maxNamespaces` /
/// `maxKeys` are a 409 naming the limit (20,000 namespaces used to be created in 4 s, also
/// by a client limited to `erp-*`); updates of existing keys still succeed; deleting makes
/// room again.
#[test]
fn the_store_has_a_namespace_and_a_key_quota() {
    let server = Server::start(&format!(
        "{KV_CONFIG}ButlerEdge:\n  limits:\n    maxNamespaces: 3\n    maxKeys: 5\n"
    ));
    let api = support::butler::Butler::on_port(server.port);
    let pair = |key: &str| json!({"key": key, "value": "v"});
    for ns in ["erp-1", "erp-2", "erp-3"] {
        assert_eq!(api.kv_post(ns, &pair("k")).0, 201);
    }
    let (status, body) = api.kv_post("erp-4", &pair("k"));
    support::butler::assert_butler_error(status, &body, 409, "ButlerEdge.limits.maxNamespaces");
    assert!(
        body["message"].as_str().unwrap().contains("3 namespaces"),
        "{body}"
    );
    assert_eq!(api.kv_post("erp-1", &pair("k2")).0, 201);
    assert_eq!(api.kv_post("erp-2", &pair("k2")).0, 201);
    let (status, body) = api.kv_post("erp-3", &pair("k2"));
    support::butler::assert_butler_error(status, &body, 409, "ButlerEdge.limits.maxKeys");
    // An update is not a new key.
    assert_eq!(api.kv_post("erp-3", &pair("k")).0, 201);
    assert_eq!(
        api.get("/v4/keyvaluesnamespaces").1,
        json!(["erp-1", "erp-2", "erp-3"])
    );
    // Room again once keys are gone.
    assert_eq!(api.kv_delete_namespace("erp-3").0, 204);
    assert_eq!(api.kv_post("erp-4", &pair("k")).0, 201);
}
