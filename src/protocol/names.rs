//! The name rules: uids, group names and node ids share one alphabet and
//! length; event names are free text of bounded length.

/// Longest uid, group or event name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The name rule as users read it in error messages and docs; the one
/// place it is spelled out.
pub const NAME_RULE: &str = "1-128 characters of A-Za-z0-9_.:@=+/-";

/// Every uid and group name is 1–128 characters of this set.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@=+/-".contains(&b))
}

/// An event name is free text, 1–128 bytes.
pub fn is_valid_event(event: &str) -> bool {
    !event.is_empty() && event.len() <= MAX_NAME_LEN
}

/// At most `max` bytes of `s`, cut at a character boundary (for echoing
/// client input in error messages).
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_alphabet() {
        assert!(is_valid_name("42"));
        assert!(is_valid_name("room-1/a:b@c=d+e_f.g"));
        assert!(is_valid_name(&"a".repeat(128)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"a".repeat(129)));
        assert!(!is_valid_name("room 1"));
        assert!(!is_valid_name("room*"));
        assert!(!is_valid_name("é"));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é");
    }
}
