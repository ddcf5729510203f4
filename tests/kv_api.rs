//! Butler's key-value API against the real binary: every endpoint's success and
//! error paths, the request shapes butler_subs.qvs sends, awkward names. Its limits,
//! quotas, TTLs and disabled endpoints run in-process (`tests/in_process.rs`).

use crate::support;
use support::butler::assert_butler_error;

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
