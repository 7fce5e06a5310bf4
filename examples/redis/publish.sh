#!/bin/sh
# Publish to a user straight through Redis, kept in history: FCALL
# fanout_publish appends the message to the channel's history and publishes
# it in one step (docs/redis.md). Usage: publish.sh UID [TEXT]
# REDIS_HOST / REDIS_PORT (127.0.0.1:6379), FANOUT_PREFIX (fanout).
set -eu
uid=$1
text=${2:-hello from redis-cli}
prefix=${FANOUT_PREFIX:-fanout}
channel="$prefix:user:$uid"
redis-cli -h "${REDIS_HOST:-127.0.0.1}" -p "${REDIS_PORT:-6379}" \
  FCALL fanout_publish 2 "{$channel}:h" "{$channel}:m" "$channel" \
  "{\"event\":\"notice\",\"data\":{\"text\":\"$text\"}}"
