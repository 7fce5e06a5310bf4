"""Publish to a user straight through Redis, kept in history, with
redis-py: FCALL fanout_publish appends the message to the channel's
history and publishes it in one step (docs/redis.md).

Usage: python3 publish.py UID [TEXT]
REDIS_HOST / REDIS_PORT (127.0.0.1:6379), FANOUT_PREFIX (fanout).
"""
import json
import os
import sys

import redis

uid = sys.argv[1]
text = sys.argv[2] if len(sys.argv) > 2 else "hello from Python"
prefix = os.environ.get("FANOUT_PREFIX", "fanout")
r = redis.Redis(
    host=os.environ.get("REDIS_HOST", "127.0.0.1"),
    port=int(os.environ.get("REDIS_PORT", "6379")),
)

channel = f"{prefix}:user:{uid}"
keys = [f"{{{channel}}}:h", f"{{{channel}}}:m"]  # the channel's hash slot
body = json.dumps({"event": "notice", "data": {"text": text}})
offset, epoch, receivers, repeated = r.execute_command(
    "FCALL", "fanout_publish", 2, *keys, channel, body
)
print(f"offset {offset} epoch {epoch.decode()} nodes {receivers}")
