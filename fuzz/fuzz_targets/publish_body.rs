//! `POST /api/publish` bodies: read by axum's JSON extractor and checked
//! exactly as the handler does (`api::check_publish_body`), short of
//! publishing.
//!
//! Beyond "no panic": a refused body is a 4xx whose response renders;
//! an accepted one has at least one target, only valid names, no
//! duplicates, and no more than the documented 10,000 targets (and a
//! body whose `data` nests deeper than the limit is refused).

#![no_main]

use std::collections::HashSet;

use axum::response::IntoResponse;
use fanout::{api::check_publish_body, protocol::is_valid_name};
use libfuzzer_sys::fuzz_target;

const MAX_TARGETS: usize = 10_000;
/// `--max-json-depth` (small, so that the refusal is reached).
const MAX_DEPTH: usize = 4;

fuzz_target!(|data: &[u8]| {
    match check_publish_body(data, MAX_DEPTH) {
        Ok(targets) => {
            assert!(targets.all || !targets.users.is_empty() || !targets.groups.is_empty());
            assert!(targets.users.len() + targets.groups.len() <= MAX_TARGETS);
            for names in [&targets.users, &targets.groups] {
                assert!(names.iter().all(|n| is_valid_name(n)));
                let unique: HashSet<&String> = names.iter().collect();
                assert_eq!(unique.len(), names.len(), "duplicates: {names:?}");
            }
        }
        Err(e) => {
            assert!(e.status.is_client_error(), "{} for a body", e.status);
            let _ = e.into_response();
        }
    }
});
