//! QRS filter expressions and their encoding into a query string.
//!
//! Values inside `'…'` escape `\` and `'` with a backslash (`'Q1\'25'`), the only form a
//! live QRS parses: it answers a doubled quote (`'O''Brien'`) or a double-quoted value with
//! `400 Cannot parse the expression` (measured against a real QSEoW by the Butler maintainer,
//! ptarmiganlabs/butler-sheet-icons, August 2026). The whole filter is then percent-encoded as
//! a query value, so tags like `R&D`, `a+b`, `#1` or `50%` reach QRS intact (Butler sends them
//! raw, and QRS then sees a different filter, or answers 400 / 403 XSRF).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is encoded; `+` in particular, because QRS
/// (.NET) decodes a raw `+` in a query as a space.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `'value'` with `\` escaped first (so that the escapes added for quotes stay escapes),
/// then `'`, each with a backslash.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `id eq a or id eq b …`. The ids must already be checked GUIDs (they are not quoted, as QRS
/// expects for GUID fields).
pub fn ids(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("id eq {id}"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `tags.name eq '<tag>'`.
pub fn tag(tag: &str) -> String {
    format!("tags.name eq {}", quote(tag))
}

/// `(customProperties.definition.name eq '<n>') and (customProperties.value eq '<v>')`.
pub fn custom_property(name: &str, value: &str) -> String {
    format!(
        "(customProperties.definition.name eq {}) and (customProperties.value eq {})",
        quote(name),
        quote(value)
    )
}

/// `ExecutionId eq <session id>`.
pub fn execution_id(session_id: &str) -> String {
    format!("ExecutionId eq {session_id}")
}

/// Percent-encodes a value for use in a query string.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_backslashes_are_escaped_and_everything_reserved_is_encoded() {
        assert_eq!(quote("O'Brien's"), r"'O\'Brien\'s'");
        assert_eq!(quote(r"C:\dir\"), r"'C:\\dir\\'");
        assert_eq!(quote(r"\'"), r"'\\\''");
        assert_eq!(
            encode(&tag("R&D + 50% å")),
            "tags.name%20eq%20%27R%26D%20%2B%2050%25%20%C3%A5%27"
        );
        assert_eq!(
            custom_property("a'b", "c"),
            r"(customProperties.definition.name eq 'a\'b') and (customProperties.value eq 'c')"
        );
        assert_eq!(ids(&["a", "b"]), "id eq a or id eq b");
    }
}
