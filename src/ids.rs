//! Ids, jitter and clocks shared by several modules (a leaf: no imports
//! from the crate).

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// A fresh message id and the current time in Unix milliseconds. Ids are
/// `<random per-process prefix>-<sequence>`: unique across nodes and
/// restarts without coordination.
pub fn message_id() -> (String, u64) {
    static PREFIX: LazyLock<String> = LazyLock::new(|| random_id(10));
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
    (format!("{}-{seq:x}", *PREFIX), unix_ms())
}

/// A uniformly random delay in `[lo, hi)` milliseconds (`lo` when empty).
pub fn jitter_ms(lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        lo
    } else {
        rand::random_range(lo..hi)
    }
}

/// `len` random lowercase letters and digits.
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    unix_ms() / 1000
}
