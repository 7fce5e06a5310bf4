//! Bodies arriving from Redis (`wire::decode`): anything a backend or a
//! stranger with access to Redis may PUBLISH or pass to `fanout_publish`.
//!
//! Beyond "no panic": whatever is accepted encodes back (`wire::encode`)
//! to a body that decodes to the same envelope without filling anything
//! in, its `data` nests no deeper than the limit, and its `message` frame
//! is JSON.

#![no_main]

use fanout::{
    broker::{
        Envelope,
        wire::{decode, encode},
    },
    protocol::{Channel, json_depth, message_frame},
};
use fanout_fuzz::assert_frame;
use libfuzzer_sys::fuzz_target;

/// `--max-json-depth` (small, so that the refusal is reached).
const MAX_DEPTH: usize = 4;

fn fill() -> (String, u64) {
    ("filled".to_owned(), 7)
}

fuzz_target!(|data: &[u8]| {
    let (envelope, position) = match decode(data, MAX_DEPTH, fill) {
        Ok(decoded) => decoded,
        Err(e) => {
            let _ = e.metric();
            return;
        }
    };
    let body = encode(&envelope);
    let again = decode(body.as_bytes(), MAX_DEPTH, || {
        panic!("an encoded body lacks id or ts: {body}")
    });
    let Ok((again, None)) = again else {
        panic!("the encoded body does not decode: {body}: {again:?}");
    };
    match (&envelope, &again) {
        (Envelope::Command(a), Envelope::Command(b)) => assert_eq!(a, b),
        (Envelope::Publication(a), Envelope::Publication(b)) => {
            assert!(json_depth::depth(a.data.get().as_bytes()) <= MAX_DEPTH);
            assert_eq!(
                (&a.id, a.ts, &a.event, a.data.get(), &a.from),
                (&b.id, b.ts, &b.event, b.data.get(), &b.from),
            );
            assert_frame(
                &message_frame(&Channel::all(), a, position.as_ref()),
                "message",
            );
        }
        _ => panic!("encoding changed the kind of envelope: {body}"),
    }
});
