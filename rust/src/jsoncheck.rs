//! One pass over a JSON body before it is parsed into Python objects: how deep it
//! nests, and whether a string holds a `\u0000` escape (a NUL that PostgreSQL
//! cannot store). Much cheaper than walking the parsed objects: strings are
//! skipped with `memchr`.

use memchr::memchr2;
use pyo3::prelude::*;

/// `(deepest nesting of arrays and objects, whether any string has a \u0000 escape)`.
/// The input need not be valid JSON; the parser that follows decides that.
pub fn scan(b: &[u8]) -> (usize, bool) {
    let (mut depth, mut deepest, mut nul) = (0usize, 0usize, false);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                // to the closing quote, stepping over escapes
                while let Some(off) = b.get(i..).and_then(|rest| memchr2(b'\\', b'"', rest)) {
                    i += off;
                    if b[i] == b'"' {
                        break;
                    }
                    if b.get(i + 1..i + 6) == Some(b"u0000") {
                        nul = true;
                    }
                    i += 2;
                }
                if i >= b.len() {
                    break;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    (deepest, nul)
}

/// `json_scan(body) -> (depth, has_nul)`: see [`scan`].
#[pyfunction]
pub fn json_scan(body: &[u8]) -> (usize, bool) {
    scan(body)
}

#[cfg(test)]
mod tests {
    use super::scan;

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(scan(b"{}"), (1, false));
        assert_eq!(scan(b"1"), (0, false));
        assert_eq!(scan(br#"{"a":[{"b":[1]}]}"#), (4, false));
        assert_eq!(scan(br#"{"a":"[[[{{{"}"#), (1, false));
        assert_eq!(scan(br#"[{"a":"\"[[["},[]]"#), (2, false));
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert_eq!(scan(deep.as_bytes()), (300, false));
    }

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        assert_eq!(scan(br#"{"a":"x\u0000y"}"#), (1, true));
        assert_eq!(scan(br#"{"a\u0000":1}"#), (1, true));
        assert_eq!(scan(br#"{"a":"\\u0000"}"#), (1, false));
        assert_eq!(scan(br#"{"a":"\u00001"}"#), (1, true));
        assert_eq!(scan(br#"{"a":"\u0001"}"#), (1, false));
    }

    #[test]
    fn truncated_input_does_not_panic() {
        for s in [&b"\""[..], b"\"\\", b"\"\\u00", b"[\"abc", b"{\"a\":\"\\"] {
            let _ = scan(s);
        }
    }
}
