// The SSE transport (Node.js: the fetch reader) against a real fanout node.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { FanoutClient } from "../../dist/fanout.js";
import { fanoutMissing, record, sleep, startFanout } from "./support.mjs";

const skip = fanoutMissing();
if (skip) test("fanout integration tests", { skip }, () => {});

describe("sse", { skip: skip ?? false }, () => {
  let node;
  const clients = [];
  const client = (options) => {
    const c = new FanoutClient(node.url, { transport: "sse", ...options });
    clients.push(c);
    return c;
  };
  before(async () => {
    node = await startFanout({ args: ["--heartbeat", "1s"] });
  });
  after(async () => {
    for (const c of clients) c.close();
    await node?.stop();
  });

  /** Over SSE: receive, join by reconnecting with the new groups, and publish is refused. */
  test("receive, join by reconnect, publish not supported", async () => {
    const c = client({ getToken: () => node.token({ sub: "sam", groups: ["room-*"] }) });
    const log = record(c);
    await c.connect();
    assert.equal(c.transport, "sse");
    await node.publish({ to: { users: ["sam"] }, data: 1 });
    await log.until((l) => l.message.length === 1, "the first message");

    const conn = c.welcome.conn;
    const joined = await c.join("room-1");
    assert.equal(joined.group, "room-1");
    assert.notEqual(c.welcome.conn, conn, "the join opened a new stream");
    assert.ok(log.state.some((s) => s.state === "connecting" && s.reason === "groups_changed"));
    await node.publish({ to: { groups: ["room-1"] }, data: 2 });
    await log.until((l) => l.message.length === 2, "the group message");
    assert.equal(log.message[1].channel, "group:room-1");

    await assert.rejects(c.publish("room-1", "e", 1), (e) => e.code === "not_supported");
    await assert.rejects(c.join("news"), (e) => e.code === "forbidden" && e.group === "news");
    assert.deepEqual(c.groups, ["room-1"]);
    await log.until(() => c.state === "connected", "the connection after the refused join");

    await c.leave("room-1");
    assert.deepEqual(c.groups, []);
    assert.ok(!Object.keys(c.welcome.positions).includes("group:room-1"));
    await node.publish({ to: { users: ["sam"], groups: ["room-1"] }, data: 3 });
    await log.until((l) => l.message.length === 3, "the message after leaving");
    assert.deepEqual(log.data(), [1, 2, 3]);
    assert.equal(log.message[2].channel, "user:sam");
    c.close();
  });

  /** An SSE client resumes every channel with ?since=: nothing missed, nothing twice. */
  test("resume over SSE after being kicked", async () => {
    const c = client({ getToken: () => node.token({ sub: "tia", groups: ["t-*"] }), groups: ["t-1"] });
    const log = record(c);
    await c.connect();
    for (let i = 1; i <= 3; i++) await node.publish({ to: { users: ["tia"], groups: ["t-1"] }, data: i });
    await log.until((l) => l.message.length === 3, "three messages");

    const stopped = log.until((l) => l.state.some((s) => s.state === "closed"), "the stop");
    await node.api("/api/users/tia/disconnect", { method: "POST" });
    await stopped;
    assert.equal(log.state.find((s) => s.state === "closed").reason, "kicked");

    for (let i = 4; i <= 6; i++) await node.publish({ to: { users: ["tia"], groups: ["t-1"] }, data: i });
    await c.connect();
    await node.publish({ to: { users: ["tia"], groups: ["t-1"] }, data: 7 });
    await log.until((l) => l.message.length === 7, "the missed and the live messages");
    assert.deepEqual(log.data(), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(
      log.recovery.map((r) => [r.channel, r.recovered]).sort(),
      [
        ["all", true],
        ["group:t-1", true],
        ["user:tia", true],
      ],
    );
    c.close();
  });

  /** Over SSE the token is refreshed by reconnecting with a fresh one before it expires. */
  test("token refresh over SSE reconnects without losing messages", async () => {
    let calls = 0;
    const c = client({
      getToken: () => {
        calls += 1;
        return node.token({ sub: "uma", exp: Math.floor(Date.now() / 1000) + 3 });
      },
    });
    const log = record(c);
    await c.connect();
    let n = 0;
    while (calls < 3) {
      n += 1;
      await node.publish({ to: { users: ["uma"] }, data: n });
      await log.until((l) => l.message.length === n, `message ${n}`);
      await sleep(20);
    }
    assert.ok(log.state.some((s) => s.reason === "token_refresh"));
    assert.ok(!log.state.some((s) => s.state === "disconnected"), "never disconnected");
    assert.deepEqual(log.data(), Array.from({ length: n }, (_, i) => i + 1));
    c.close();
  });

  /** `auto` falls back to SSE when a WebSocket cannot be opened. */
  test("auto falls back to SSE", async () => {
    class BlockedWebSocket {
      constructor() {
        this.readyState = 0;
        setTimeout(() => this.onclose?.({ code: 1006, reason: "" }), 5);
      }
      send() {}
      close() {}
    }
    const c = new FanoutClient(node.url, {
      transport: "auto",
      WebSocket: BlockedWebSocket,
      getToken: () => node.token({ sub: "vic" }),
    });
    clients.push(c);
    const log = record(c);
    await c.connect();
    assert.equal(c.transport, "sse");
    assert.deepEqual(
      log.state.map((s) => [s.state, s.transport]),
      [
        ["connecting", "websocket"],
        ["disconnected", "websocket"],
        ["connecting", "sse"],
        ["connected", "sse"],
      ],
    );
    c.close();
  });
});
