//! Client frames: any text a WebSocket client sends, parsed as
//! `Client::on_text` parses it and, as the first frame of a connection
//! without `?token=`, authenticated as `client::authenticate` does.
//!
//! Beyond "no panic": every refused frame has a JSON `error` reply echoing
//! its `id`; an accepted frame carries only valid names, its positions
//! survive the compact form, its `data` nests no deeper than the limit,
//! and the replies it leads to are JSON.

#![no_main]

use fanout::{
    auth::{Credentials, Patterns},
    client::{authenticate, check_start},
    protocol::{
        Channel, ChannelKind, ClientFrame, Publication, ack_frame, format_since_compact,
        is_valid_event, is_valid_name, joined_frame, json_depth, left_frame, message_frame,
        parse_client_frame, parse_since_compact, pong_frame,
    },
};
use fanout_fuzz::{PLAIN, assert_frame};
use libfuzzer_sys::fuzz_target;

/// At most this many groups per connection (`--max-groups` is larger, but
/// a small bound reaches the refusal).
const MAX_GROUPS: usize = 4;
/// `--max-json-depth` (small, for the same reason).
const MAX_DEPTH: usize = 4;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8: tungstenite refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_frame(text, MAX_DEPTH) {
        Ok(frame) => accepted(frame),
        Err(e) => {
            let reply = e.frame();
            assert_frame(&reply, "error");
            let value: serde_json::Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(value.get("id").and_then(|v| v.as_i64()), e.id, "{reply}");
        }
    }
    if let Err(e) = authenticate(&PLAIN, text, MAX_DEPTH) {
        assert_frame(&e.frame(), "error");
    }
});

fn accepted(frame: ClientFrame) {
    match frame {
        ClientFrame::Auth { token: _, since } => {
            assert!(
                since
                    .keys()
                    .all(|c| !matches!(c.kind(), ChannelKind::Node(_)))
            );
            assert_eq!(
                parse_since_compact(&format_since_compact(&since)).as_ref(),
                Ok(&since)
            );
            let creds = Credentials {
                uid: "42".into(),
                exp: u64::MAX,
                groups: Patterns::new(["room-*", "news"]),
                publish: Patterns::new(["room-*"]),
            };
            let asked = ["room-1".to_owned()];
            if let Ok(groups) = check_start(&creds, &asked, &since, MAX_GROUPS) {
                assert!(groups.len() <= MAX_GROUPS);
                assert!(groups.iter().all(|g| creds.groups.allows(g)));
            }
        }
        ClientFrame::Join { id, group, since } => {
            assert!(is_valid_name(&group));
            assert_frame(
                &joined_frame(id, &group, since.as_ref(), Some(true)),
                "joined",
            );
        }
        ClientFrame::Leave { id, group } => {
            assert!(is_valid_name(&group));
            assert_frame(&left_frame(id, &group), "left");
        }
        ClientFrame::Publish {
            id,
            group,
            event,
            data,
        } => {
            assert!(is_valid_name(&group));
            assert!(event.as_deref().is_none_or(is_valid_event));
            let raw = data.get().to_owned();
            assert!(json_depth::depth(raw.as_bytes()) <= MAX_DEPTH, "{raw}");
            let p = Publication {
                id: "m1".into(),
                ts: 1,
                event,
                data,
                from: Some("42".into()),
            };
            let message = message_frame(&Channel::group(&group), &p, None);
            assert_frame(&message, "message");
            assert!(message.contains(&raw), "data is embedded verbatim");
            assert_frame(&ack_frame(id), "ack");
        }
        ClientFrame::Refresh { id: _, token } => {
            let _ = PLAIN.verify(&token);
        }
        ClientFrame::Ping { id } => assert_frame(&pong_frame(id), "pong"),
    }
}
