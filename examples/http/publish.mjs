// Publish to a user through fanout's HTTP API, with Node.js 18+ and its
// built-in fetch (docs/protocol.md, POST /api/publish). Every tab and
// device of the user gets it; a user who is offline gets it from history
// when they come back within the history TTL.
//
// Usage: node publish.mjs UID [TEXT]
// FANOUT_URL (http://127.0.0.1:8080), FANOUT_API_KEY (required).

import { randomUUID } from "node:crypto";

const [uid, text = "hello from Node.js"] = process.argv.slice(2);
if (!uid) throw new Error("usage: node publish.mjs UID [TEXT]");
const url = (process.env.FANOUT_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const key = process.env.FANOUT_API_KEY;
if (!key) throw new Error("set FANOUT_API_KEY");

const res = await fetch(`${url}/api/publish`, {
  method: "POST",
  headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
  body: JSON.stringify({
    to: { users: [uid] },
    event: "notice",
    data: { text },
    // A retry with the same key (after a timeout or a 503) delivers once.
    idempotency_key: `node-${randomUUID()}`,
  }),
  signal: AbortSignal.timeout(10_000),
});
const reply = await res.json();
if (!res.ok) {
  console.error(`publish failed (${res.status}): ${JSON.stringify(reply)}`);
  process.exit(1);
}
const online = reply.offline_users.includes(uid) ? "offline" : "online";
console.log(`id ${reply.id} offset ${reply.positions[`user:${uid}`].offset} ${online}`);
