"""Publish to a user through fanout's HTTP API, with Python's standard
library only (docs/protocol.md, POST /api/publish). Every tab and device of
the user gets it; a user who is offline gets it from history when they come
back within the history TTL.

Usage: python3 publish.py UID [TEXT]
FANOUT_URL (http://127.0.0.1:8080), FANOUT_API_KEY (required).
"""
import json
import os
import sys
import urllib.error
import urllib.request
import uuid

uid = sys.argv[1]
text = sys.argv[2] if len(sys.argv) > 2 else "hello from Python"
url = os.environ.get("FANOUT_URL", "http://127.0.0.1:8080").rstrip("/")
key = os.environ["FANOUT_API_KEY"]

body = json.dumps({
    "to": {"users": [uid]},
    "event": "notice",
    "data": {"text": text},
    # A retry with the same key (after a timeout or a 503) delivers once.
    "idempotency_key": f"py-{uuid.uuid4().hex}",
}).encode()
request = urllib.request.Request(
    f"{url}/api/publish",
    data=body,
    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
)
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        reply = json.load(response)
except urllib.error.HTTPError as e:
    sys.exit(f"publish failed ({e.code}): {e.read().decode()}")
online = "offline" if uid in reply["offline_users"] else "online"
print(f"id {reply['id']} offset {reply['positions'][f'user:{uid}']['offset']} {online}")
