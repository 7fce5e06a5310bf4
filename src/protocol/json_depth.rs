//! How deeply a JSON text nests arrays and objects, found in one pass over
//! its bytes: no recursion, no allocation, O(n).
//!
//! Every entry point (client frames, the publish API, bodies from Redis)
//! refuses a text nesting deeper than `--max-json-depth` + 1 before it is
//! parsed or passed on: serde_json's `RawValue` skips a value without its
//! recursion limit, so a 32,000-deep `data` would otherwise reach every
//! receiver, whose parsers (Python's, .NET's, browsers') give up on it.
//!
//! Depth counts open brackets: `1`, `"x"` and `null` are 0, `[]` and `{}`
//! are 1, `{"a":[1]}` is 2. Brackets inside strings do not count (escapes
//! are followed, so `"\"["` is a string). The text is not validated here:
//! an invalid text is the parser's to refuse, and one whose brackets do not
//! balance is measured as far as it goes.

/// Bytes read at a time while skipping the inside of a string.
const WORD: usize = 8;
const ONES: u64 = u64::from_le_bytes([0x01; WORD]);
const HIGHS: u64 = u64::from_le_bytes([0x80; WORD]);

/// Whether `json` nests deeper than `limit`. Stops at the first bracket
/// past the limit, so a hostile text costs no more than reading up to it.
pub fn exceeds(json: &[u8], limit: usize) -> bool {
    scan(json, limit).is_none()
}

/// The deepest nesting in `json` (see the module documentation).
pub fn depth(json: &[u8]) -> usize {
    scan(json, usize::MAX).unwrap_or(usize::MAX)
}

/// The deepest nesting, or `None` as soon as it passes `limit`.
fn scan(json: &[u8], limit: usize) -> Option<usize> {
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while let Some(&b) = json.get(i) {
        i += 1;
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return None;
                }
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => i = string_end(json, i),
            _ => {}
        }
    }
    Some(deepest)
}

/// Where the string whose contents start at `i` ends: just past its
/// closing quote (or the end of the text). Strings hold most of a typical
/// message's bytes, so they are skipped a word at a time.
fn string_end(json: &[u8], mut i: usize) -> usize {
    loop {
        while let Some(word) = json.get(i..i + WORD) {
            let mut bytes = [0u8; WORD];
            bytes.copy_from_slice(word);
            let w = u64::from_le_bytes(bytes);
            if has_byte(w, b'"') || has_byte(w, b'\\') {
                break;
            }
            i += WORD;
        }
        match json.get(i) {
            None => return i,
            Some(b'"') => return i + 1,
            // An escape: the next byte is taken as it is (`\"`, `\\`).
            Some(b'\\') => i += 2,
            Some(_) => i += 1,
        }
    }
}

/// Whether any byte of `word` is `b` (the classic zero-byte test on
/// `word ^ b…b`; exact: no false positives).
fn has_byte(word: u64, b: u8) -> bool {
    let x = word ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_open_brackets_outside_strings() {
        for (text, want) in [
            ("1", 0),
            ("\"[[[\"", 0),
            ("null", 0),
            ("[]", 1),
            ("{}", 1),
            (r#"{"a":[1]}"#, 2),
            (r#"[[],[[]],{}]"#, 3),
            (r#"{"a":"]]]{{{","b":[{"c":"\"[["}]}"#, 3),
            (r#"["\\",["\\\"]"]]"#, 2),
            (
                r#"{"long string without anything special in it at all":[["x"]]}"#,
                3,
            ),
            // Not valid JSON: measured as far as it goes.
            ("]]]][", 1),
            ("[[\"unterminated [[[[", 2),
            ("", 0),
        ] {
            assert_eq!(depth(text.as_bytes()), want, "{text}");
        }
    }

    #[test]
    fn exceeds_stops_at_the_limit() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!exceeds(deep(64).as_bytes(), 64));
        assert!(exceeds(deep(65).as_bytes(), 64));
        assert!(!exceeds(b"1", 0) && exceeds(b"[]", 0));
        // A million levels: no recursion, so no stack to run out of.
        let huge = deep(1_000_000);
        assert!(exceeds(huge.as_bytes(), 64));
        assert_eq!(depth(huge.as_bytes()), 1_000_000);
        // Brackets in a long string, across word boundaries and escapes.
        let s = format!("[\"{}\\\"{}\"]", "[".repeat(100), "{".repeat(100));
        assert_eq!(depth(s.as_bytes()), 1);
    }

    #[test]
    fn every_byte_of_a_word_is_found() {
        for at in 0..WORD {
            let mut bytes = [b'a'; WORD];
            bytes[at] = b'"';
            assert!(has_byte(u64::from_le_bytes(bytes), b'"'), "{at}");
            assert!(!has_byte(u64::from_le_bytes(bytes), b'\\'), "{at}");
        }
        // No false positives on neighbouring values (0x21, 0x23, 0xa2).
        assert!(!has_byte(u64::from_le_bytes(*b"!#\xa2!#\xa2!#"), b'"'));
    }
}
