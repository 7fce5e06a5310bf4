//! Client tokens (`Authenticator::verify`), as `?token=`, `auth` and
//! `refresh` carry them, against an HS256 authenticator with a known
//! secret, with and without a required issuer and audience.
//!
//! The first byte picks the input's form, so the fuzzer reaches past the
//! signature check as easily as it reaches the parser in front of it:
//! - bit 0 clear: the rest is the token text itself;
//! - bit 0 set: the rest is the claims (with bit 1 set: header, a 0xFF
//!   byte, then claims), base64url-encoded and signed with the secret.

#![no_main]

use fanout::{http_error::HttpError, protocol::is_valid_name};
use fanout_fuzz::{PLAIN, STRICT, sign};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let token = if form & 1 == 0 {
        // Tokens come from URLs and JSON strings: always UTF-8.
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else if form & 2 == 0 {
        sign(HEADER, rest)
    } else {
        let split = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
        sign(&rest[..split], rest.get(split + 1..).unwrap_or_default())
    };
    for auth in [&*PLAIN, &*STRICT] {
        match auth.verify(&token) {
            Ok(creds) => {
                assert!(is_valid_name(&creds.uid), "uid {:?}", creds.uid);
                let _ = creds.groups.allows("room-1") || creds.publish.allows("");
            }
            Err(e) => {
                let _ = e.code();
                let http = HttpError::from(e);
                assert_eq!(http.status, 401);
            }
        }
    }
});
