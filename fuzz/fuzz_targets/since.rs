//! Positions a client sends back to resume: the compact form of `?since=`
//! and `Last-Event-ID` (`user:42~17~k3x9a,all~4~q1w2e`), the JSON map of an
//! `auth` frame's `since`, a `join` frame's one position, and epochs.
//!
//! Beyond "no panic": accepted positions name only resumable channels,
//! at most `MAX_SINCE` of them, and survive the compact form unchanged.

#![no_main]

use fanout::protocol::{
    ChannelKind, Epoch, Position, Positions, client_frame::MAX_SINCE, format_since_compact,
    parse_since_compact, parse_since_map,
};
use libfuzzer_sys::fuzz_target;

fn check(positions: &Positions) {
    assert!(positions.len() <= MAX_SINCE);
    assert!(
        positions
            .keys()
            .all(|c| !matches!(c.kind(), ChannelKind::Node(_)))
    );
    let compact = format_since_compact(positions);
    assert_eq!(
        parse_since_compact(&compact).as_ref(),
        Ok(positions),
        "{compact}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(positions) = parse_since_compact(text) {
        check(&positions);
    }
    if let Ok(positions) = parse_since_map(text) {
        check(&positions);
    }
    if let Ok(position) = serde_json::from_str::<Position>(text) {
        assert!(Epoch::parse(position.epoch.as_str()).is_some());
    }
    if let Some(epoch) = Epoch::parse(text) {
        assert_eq!(epoch.as_str(), text);
    }
});
