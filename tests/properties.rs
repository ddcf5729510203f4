//! Property tests: the functions that turn caller input into data never panic on
//! any input, and keep their promises (round trips, TTL arithmetic, quoting).
//!
//! These call the library's pure functions directly: they decide what a request
//! means, and no number of black-box requests covers their input space the way
//! generated inputs do.

use butler_edge::api::kv_input::{parse_new_pair, parse_ttl, scalar_text};
use butler_edge::api::start_task::parse_body;
use butler_edge::config::Limits;
use butler_edge::http::decode::{path_segment, path_segments, query_pairs};
use butler_edge::kv::deadline_for;
use butler_edge::qrs::filter;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The limits a config without a `ButlerEdge.limits` section gets.
fn limits() -> Limits {
    butler_edge::config::Config::embedded()
        .expect("embedded config")
        .edge
        .limits
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
        "-?[0-9]{0,25}(\\.[0-9]{0,5})?(e-?[0-9]{1,3})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    // ---- percent-decoding ----

    #[test]
    fn decoding_never_panics(raw in ".*", bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = path_segment(&raw);
        let _ = path_segments(&raw);
        let _ = query_pairs(&raw);
        // Byte soup through the lossless %XX form.
        let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
        let decoded = path_segment(&encoded);
        prop_assert_eq!(decoded.is_ok(), std::str::from_utf8(&bytes).is_ok());
    }

    #[test]
    fn a_percent_encoded_segment_decodes_to_itself(segments in prop::collection::vec(".*", 1..5)) {
        let path: String = segments
            .iter()
            .map(|s| format!("/{}", utf8_percent_encode(s, NON_ALPHANUMERIC)))
            .collect();
        prop_assert_eq!(path_segments(&path).unwrap(), segments);
    }

    #[test]
    fn a_plus_in_a_path_is_a_plus_and_in_a_query_a_space(a in "[a-z]{0,5}", b in "[a-z]{0,5}") {
        prop_assert_eq!(path_segment(&format!("{a}+{b}")).unwrap(), format!("{a}+{b}"));
        let pairs = query_pairs(&format!("key={a}+{b}")).unwrap();
        prop_assert_eq!(pairs, vec![("key".to_string(), format!("{a} {b}"))]);
    }

    #[test]
    fn a_form_encoded_query_decodes_to_its_pairs(
        pairs in prop::collection::vec((".+", ".*"), 1..5)
    ) {
        let form = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string().replace("%20", "+");
        let query = pairs
            .iter()
            .map(|(n, v)| format!("{}={}", form(n), form(v)))
            .collect::<Vec<_>>()
            .join("&");
        prop_assert_eq!(query_pairs(&query).unwrap(), pairs);
    }

    // ---- request bodies ----

    #[test]
    fn kv_body_parsing_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_new_pair("ns", &body, &limits());
        let _ = parse_body(&body, &limits());
    }

    #[test]
    fn kv_body_parsing_never_panics_on_json(doc in any_json(), namespace in ".{0,40}") {
        let text = doc.to_string();
        let _ = parse_new_pair(&namespace, text.as_bytes(), &limits());
        let _ = parse_body(text.as_bytes(), &limits());
        // Also as the fields of a create body.
        let body = json!({"key": doc.clone(), "value": doc.clone(), "ttl": doc.clone()}).to_string();
        let _ = parse_new_pair(&namespace, body.as_bytes(), &limits());
        let items = json!([{"type": "keyvaluestore", "payload": {"namespace": doc.clone(), "key": doc.clone(), "value": doc.clone(), "ttl": doc.clone()}},
                           {"type": "starttaskid", "payload": {"taskId": doc.clone()}},
                           {"type": "starttasktag", "payload": {"tag": doc.clone()}},
                           {"type": "starttaskcustomproperty", "payload": {"customPropertyName": doc.clone(), "customPropertyValue": doc}}]);
        let _ = parse_body(items.to_string().as_bytes(), &limits());
    }

    #[test]
    fn a_valid_create_body_is_read_as_sent(
        key in ".{1,50}", value in ".{0,100}", ttl in any::<i64>(), as_string in any::<bool>()
    ) {
        let ttl_json = if as_string { json!(ttl.to_string()) } else { json!(ttl) };
        let body = json!({"key": key, "value": value, "ttl": ttl_json}).to_string();
        let pair = parse_new_pair("ns", body.as_bytes(), &limits()).unwrap();
        prop_assert_eq!(pair.key, key);
        prop_assert_eq!(pair.value, value);
        prop_assert!(pair.value_sent);
        // Through f64, as JavaScript reads it: exact up to 2^53.
        if ttl.unsigned_abs() < (1u64 << 53) {
            prop_assert_eq!(pair.ttl, ttl);
        }
    }

    // ---- TTL arithmetic ----

    #[test]
    fn ttl_parsing_never_panics_and_integers_survive(v in any_json(), n in -(1i64 << 53)..(1i64 << 53)) {
        let _ = parse_ttl(Some(&v));
        let _ = scalar_text(&v);
        prop_assert_eq!(parse_ttl(Some(&json!(n))).unwrap(), n);
        prop_assert_eq!(parse_ttl(Some(&json!(n.to_string()))).unwrap(), n);
        prop_assert_eq!(parse_ttl(Some(&json!(format!(" {n} ")))).unwrap(), n);
    }

    #[test]
    fn ttl_strings_without_a_digit_are_refused(s in "[^0-9]*") {
        // Including "inf", "NaN" and "infinity", which Rust's f64 parser reads.
        prop_assert!(parse_ttl(Some(&json!(s))).is_err());
    }

    #[test]
    fn deadlines_are_absent_for_no_ttl_and_later_than_now_otherwise(ttl in any::<i64>(), now in any::<u64>()) {
        let deadline = deadline_for(ttl, now);
        if ttl <= 0 {
            prop_assert_eq!(deadline, 0);
        } else {
            prop_assert!(deadline > now || deadline == u64::MAX);
            prop_assert_ne!(deadline, 0);
            if let Some(exact) = now.checked_add(ttl as u64) {
                prop_assert_eq!(deadline, exact);
            }
        }
    }

    #[test]
    fn scalar_text_of_a_string_is_the_string(s in ".*") {
        prop_assert_eq!(scalar_text(&json!(s)), Some(s));
    }

    // ---- QRS filter quoting ----

    #[test]
    fn quoting_escapes_with_backslashes_and_unquotes_back(v in ".*") {
        let quoted = filter::quote(&v);
        prop_assert!(quoted.starts_with('\'') && quoted.ends_with('\'') && quoted.len() >= 2);
        let inner = &quoted[1..quoted.len() - 1];
        // Read as QRS reads a literal: a backslash takes the next character; an unescaped
        // quote would end the literal early, so there must be none.
        let mut unescaped = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let next = chars.next();
                    prop_assert!(matches!(next, Some('\\') | Some('\'')), "{inner:?}");
                    unescaped.extend(next);
                }
                '\'' => prop_assert!(false, "unescaped quote in {inner:?}"),
                c => unescaped.push(c),
            }
        }
        prop_assert_eq!(unescaped, v);
    }

    #[test]
    fn encoded_filters_are_query_safe_and_decode_back(tag in ".*", name in ".*", value in ".*") {
        for text in [filter::tag(&tag), filter::custom_property(&name, &value)] {
            let encoded = filter::encode(&text);
            prop_assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert_eq!(percent_decode_str(&encoded).decode_utf8().unwrap(), text.as_str());
        }
    }
}
