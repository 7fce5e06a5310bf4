//! `POST /api/publish` bodies: read by axum's JSON extractor and checked
//! exactly as the handler does (`api::check_publish_body`), short of
//! publishing.
//!
//! Beyond "no panic": a refused body is a 4xx whose response renders;
//! an accepted one has at least one target, only valid names, no
//! duplicates, and no more than the documented 10,000 targets.

#![no_main]

use std::collections::HashSet;

use axum::response::IntoResponse;
use fanout::{api::check_publish_body, protocol::is_valid_name};
use libfuzzer_sys::fuzz_target;

const MAX_TARGETS: usize = 10_000;

fuzz_target!(|data: &[u8]| {
    match check_publish_body(data) {
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
