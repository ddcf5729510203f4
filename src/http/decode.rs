//! Percent-decoding of path segments and query strings, as Butler's Node parser
//! reads them.
//!
//! Namespaces and keys from Sense scripts contain spaces, å/ä/ö, `+`, `%` and
//! `/` written as `%2F`. A path is split on `/` *before* decoding, so `%2F` stays
//! inside its segment. In a query value `+` means a space (form encoding); in a
//! path segment it is a literal `+`.

use percent_encoding::percent_decode_str;

/// Why a path or query could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} {raw:?} is not valid UTF-8 after percent-decoding")]
    NotUtf8 { what: &'static str, raw: String },
}

/// Decodes one path segment (`+` stays `+`).
pub fn path_segment(raw: &str) -> Result<String, DecodeError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DecodeError::NotUtf8 {
            what: "path segment",
            raw: raw.to_string(),
        })
}

/// Splits a path (without query) into decoded segments, dropping the empty
/// segment before the leading `/`. A trailing `/` gives a trailing empty segment.
pub fn path_segments(path: &str) -> Result<Vec<String>, DecodeError> {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(path_segment)
        .collect()
}

/// Decodes a query string into (name, value) pairs, in order; `+` means space.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, DecodeError> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            Ok((form_component(name)?, form_component(value)?))
        })
        .collect()
}

fn form_component(raw: &str) -> Result<String, DecodeError> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DecodeError::NotUtf8 {
            what: "query parameter",
            raw: raw.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_stays_inside_segment_and_plus_is_literal_in_paths() {
        assert_eq!(
            path_segments("/v4/keyvalues/a%2Fb+c%20d").unwrap(),
            vec!["v4", "keyvalues", "a/b+c d"]
        );
    }

    #[test]
    fn plus_is_space_in_query_values_and_encoded_plus_is_plus() {
        assert_eq!(
            query_pairs("key=a+b%2Bc&x=%C3%A5").unwrap(),
            vec![("key".into(), "a b+c".into()), ("x".into(), "å".into())]
        );
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_input() {
        let e = path_segment("%FF").unwrap_err().to_string();
        assert!(e.contains("%FF"), "{e}");
    }
}
