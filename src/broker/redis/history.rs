//! Channel history in Redis: the `fanout` function library (`fanout.lua`),
//! loaded on every master at start-up and again whenever Redis answers that
//! it is missing (a restart without persistence, a new master), and the
//! calls to it: append and publish, position, history read, epoch reset.
//!
//! A channel's keys share its hash slot: `{<prefix>:<channel>}:m` (epoch
//! and top offset), `{<prefix>:<channel>}:h` (the stream of recent
//! messages) and `{<prefix>:<channel>}:i:<key>` (idempotency records). A
//! channel whose name already carries a hash tag (a prefix like `{app}`)
//! keeps it: its keys are `<channel>:m` and so on.

use std::time::Duration;

use fred::{
    bytes::Bytes,
    error::Error as FredError,
    interfaces::{EventInterface, FunctionInterface},
    types::Value,
};
use tokio::sync::broadcast::error::RecvError;

use super::{RedisBroker, publish_error, unavailable};
use crate::{
    broker::history::Stored,
    broker::{BrokerError, Envelope, History, HistoryOptions, IdempotencyKey, Published, wire},
    protocol::{Channel, Epoch, Position},
};

const LIBRARY: &str = include_str!("fanout.lua");

/// Attempts at reloading the library after a reconnect, 100 ms apart and
/// doubling up to 2 s (Redis may still be loading its data).
const RELOAD_ATTEMPTS: u32 = 8;

/// The library's source with this node's history settings and
/// `--max-json-depth` as its defaults (what a backend's `FCALL
/// fanout_publish` without them uses).
pub(super) fn library(history: &HistoryOptions, sharded: bool, max_json_depth: usize) -> String {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string();
    LIBRARY
        .replace("{{USER_SIZE}}", &history.user.size.to_string())
        .replace("{{USER_TTL}}", &ms(history.user.ttl))
        .replace("{{GROUP_SIZE}}", &history.group.size.to_string())
        .replace("{{GROUP_TTL}}", &ms(history.group.ttl))
        .replace("{{ALL_SIZE}}", &history.all.size.to_string())
        .replace("{{ALL_TTL}}", &ms(history.all.ttl))
        .replace("{{META_TTL}}", &ms(history.meta_ttl))
        .replace("{{IDEMPOTENCY_TTL}}", &ms(history.idempotency_ttl))
        .replace("{{SHARDED}}", if sharded { "1" } else { "0" })
        .replace("{{MAX_JSON_DEPTH}}", &max_json_depth.to_string())
}

/// The channel's key prefix: its full name in a hash tag, unless it
/// already carries one.
pub fn key_base(full_name: &str) -> String {
    let tagged = full_name
        .find('{')
        .and_then(|open| full_name[open + 1..].find('}'))
        .is_some_and(|len| len > 0);
    if tagged {
        full_name.to_owned()
    } else {
        format!("{{{full_name}}}")
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Redis's answer when the library is not loaded.
fn missing_library(e: &FredError) -> bool {
    e.details().contains("Function not found")
}

fn bad_reply(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("unexpected reply from {what}"))
}

fn position_of(values: &[Value], what: &str) -> Result<Position, BrokerError> {
    let offset = values
        .first()
        .and_then(Value::as_u64)
        .ok_or_else(|| bad_reply(what))?;
    let epoch = values
        .get(1)
        .and_then(Value::as_string)
        .and_then(|e| Epoch::parse(&e))
        .ok_or_else(|| bad_reply(what))?;
    Ok(Position::new(offset, epoch))
}

// === impl RedisBroker ===

impl RedisBroker {
    /// Loads the function library (on every master of a cluster).
    pub(super) async fn load_library(&self) -> Result<(), BrokerError> {
        let code = library(
            &self.inner.history,
            self.inner.clustered,
            self.inner.max_json_depth,
        );
        let publisher = &self.inner.publisher;
        let r = if self.inner.clustered {
            publisher.function_load_cluster(true, code).await
        } else {
            publisher
                .function_load::<Value, _>(true, code)
                .await
                .map(|_| ())
        };
        r.map_err(|e| unavailable(&e))
    }

    /// Loads the library again after every reconnect of the publishing
    /// connection: a Redis that restarted empty has lost it, and a backend
    /// calling `fanout_publish` itself must not have to wait until a node's
    /// own call notices.
    pub(super) async fn library_keeper(self) {
        let mut reconnects = self.inner.publisher.reconnect_rx();
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                r = reconnects.recv() => if matches!(r, Err(RecvError::Closed)) { return },
            }
            let mut wait = Duration::from_millis(100);
            for attempt in 1..=RELOAD_ATTEMPTS {
                match self.load_library().await {
                    Ok(()) => break,
                    Err(e) if attempt == RELOAD_ATTEMPTS => tracing::warn!(
                        error = %e,
                        "could not load the fanout function library after a reconnect; \
                         the next history call loads it"
                    ),
                    Err(_) => {}
                }
                tokio::select! {
                    () = self.inner.stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }

    /// `FCALL <function>` with the channel's two keys (and `extra` keys),
    /// loading the library once if Redis does not have it.
    async fn fcall(
        &self,
        function: &'static str,
        channel: &Channel,
        extra_key: Option<String>,
        args: Vec<Value>,
    ) -> Result<Vec<Value>, BrokerError> {
        // Like a publish: refused at once while the connection is down,
        // rather than after the command timeout (a connecting client is
        // told to come back; it does not hang).
        let publishes = function == "fanout_publish";
        let base = key_base(&self.full_name(channel));
        let mut keys = vec![format!("{base}:h"), format!("{base}:m")];
        keys.extend(extra_key.map(|k| format!("{base}:i:{k}")));
        let call = || {
            self.inner
                .publisher
                .fcall::<Value, _, _, _>(function, keys.clone(), args.clone())
        };
        let reply = self
            .unless_lost(publishes, async {
                let reply = match call().await {
                    Err(e) if missing_library(&e) => {
                        tracing::info!(
                            "the fanout function library is missing from Redis; loading it"
                        );
                        self.load_library().await?;
                        call().await
                    }
                    other => other,
                };
                reply.map_err(|e| {
                    if publishes {
                        publish_error(&e)
                    } else {
                        unavailable(&e)
                    }
                })
            })
            .await;
        match reply? {
            Value::Array(values) => Ok(values),
            _ => Err(bad_reply(function)),
        }
    }

    /// Appends and publishes a publication on one channel.
    pub(super) async fn publish_kept(
        &self,
        channel: &Channel,
        body: &Bytes,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        let history = &self.inner.history;
        let limits = history.limits(channel).unwrap_or(history.user);
        let mut args = vec![
            Value::from(self.full_name(channel)),
            Value::Bytes(body.clone()),
            Value::from(limits.size as i64),
            Value::from(ms(limits.ttl) as i64),
            Value::from(ms(history.meta_ttl) as i64),
            Value::from(i64::from(self.inner.clustered)),
        ];
        // The key ("" for none), then `checked`: this node checked the
        // body (its depth against its own --max-json-depth), so the
        // library need not decode it again.
        args.push(Value::from(key.map_or("", IdempotencyKey::as_str)));
        args.push(Value::from(ms(history.idempotency_ttl) as i64));
        args.push(Value::from(1));
        let reply = self
            .fcall(
                "fanout_publish",
                channel,
                key.map(|k| k.as_str().to_owned()),
                args,
            )
            .await?;
        let position = position_of(&reply, "fanout_publish")?;
        let receivers = reply
            .get(2)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad_reply("fanout_publish"))?;
        Ok(Published {
            receivers: usize::try_from(receivers).unwrap_or(usize::MAX),
            position: Some(position),
        })
    }

    pub(super) async fn read_position(&self, channel: &Channel) -> Result<Position, BrokerError> {
        let meta_ttl = ms(self.inner.history.meta_ttl) as i64;
        let reply = self
            .fcall(
                "fanout_position",
                channel,
                None,
                vec![Value::from(meta_ttl)],
            )
            .await?;
        position_of(&reply, "fanout_position")
    }

    pub(super) async fn read_history(
        &self,
        channel: &Channel,
        since: &Position,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let history = &self.inner.history;
        let ttl = history.limits(channel).unwrap_or(history.user).ttl;
        let args = vec![
            Value::from(since.offset as i64),
            Value::from(since.epoch.as_str()),
            Value::from(limit as i64),
            Value::from(ms(history.meta_ttl) as i64),
            Value::from(ms(ttl) as i64),
        ];
        let reply = self.fcall("fanout_history", channel, None, args).await?;
        let top = position_of(&reply, "fanout_history")?;
        let complete = reply.get(2).and_then(Value::as_u64) == Some(1);
        if !complete {
            return Ok(History::Incomplete { top });
        }
        // Newest first from Redis; every body carries its offset.
        let mut messages = Vec::with_capacity(reply.len().saturating_sub(3));
        for body in reply.iter().skip(3).rev() {
            let bytes = body.as_bytes().ok_or_else(|| bad_reply("fanout_history"))?;
            match wire::decode(bytes, self.inner.max_json_depth, crate::ids::message_id) {
                Ok((Envelope::Publication(publication), Some(p))) => messages.push(Stored {
                    offset: p.offset,
                    publication,
                }),
                // A body that is not a message cannot be replayed: the
                // client must reload rather than miss it silently.
                _ => return Ok(History::Incomplete { top }),
            }
        }
        Ok(History::Complete { top, messages })
    }

    pub(super) async fn reset(
        &self,
        channel: &Channel,
        expected: &Epoch,
    ) -> Result<Position, BrokerError> {
        let args = vec![
            Value::from(expected.as_str()),
            Value::from(ms(self.inner.history.meta_ttl) as i64),
        ];
        let reply = self.fcall("fanout_reset", channel, None, args).await?;
        position_of(&reply, "fanout_reset")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_slot() {
        assert_eq!(key_base("fanout:user:42"), "{fanout:user:42}");
        assert_eq!(key_base("{app}:user:42"), "{app}:user:42");
        // An empty tag hashes the whole name: wrap it.
        assert_eq!(key_base("{}:all"), "{{}:all}");
        let lib = library(&HistoryOptions::default(), true, 32);
        assert!(!lib.contains("{{"), "every placeholder filled in");
        assert!(lib.starts_with("#!lua name=fanout"));
    }
}
