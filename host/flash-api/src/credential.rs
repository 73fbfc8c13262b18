//! How an API key travels in a request, and how a server checks it: one rule for every
//! Flash server (`flash server`'s API, a worker's load-balanced routes, the mothership).
//!
//! Clients send `Authorization: Bearer <key>`. RunPod's worker SDK sends its key raw,
//! without the scheme (reference §3.3), so a raw key is accepted as well, and the scheme
//! is matched without regard to case, as HTTP says. Keys are compared in constant time
//! (`subtle`), so an answer's timing does not tell how much of a guess was right.

use reqwest::header::{AUTHORIZATION, HeaderMap};
use subtle::ConstantTimeEq;

/// The key a request presents: `Bearer <key>` (any case of `Bearer`) or the raw key; `None`
/// when the header is missing, not text, or empty.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!key.is_empty()).then_some(key)
}

/// Whether `given` is `expected`, in time that does not depend on where they differ.
pub fn keys_match(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Whether the request presents `expected` (see [`presented_key`]).
pub fn presents(headers: &HeaderMap, expected: &str) -> bool {
    !expected.is_empty() && presented_key(headers).is_some_and(|key| keys_match(key, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_in_any_case_or_a_raw_key() {
        for value in ["Bearer k1", "bearer k1", "BEARER   k1 ", "k1"] {
            assert!(presents(&with(value), "k1"), "{value}");
        }
        for value in [
            "Bearer k2",
            "Bearer",
            "Bearer ",
            "Basic k1",
            "k1x",
            "Token k1",
        ] {
            assert!(!presents(&with(value), "k1"), "{value}");
        }
        assert!(!presents(&HeaderMap::new(), "k1"));
        // An empty expected key matches nothing, not an empty header.
        assert!(!presents(&with("Bearer "), ""));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(keys_match("fl_abc", "fl_abc"));
        assert!(!keys_match("fl_abc", "fl_abd"));
        assert!(!keys_match("fl_ab", "fl_abc"));
        assert!(!keys_match("", "fl_abc"));
    }
}
