// The WebSocket transport against a real fanout node (in-process broker).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { FanoutClient } from "../../dist/fanout.js";
import { fanoutMissing, record, startFanout } from "./support.mjs";

const skip = fanoutMissing();
if (skip) test("fanout integration tests", { skip }, () => {});

describe("websocket", { skip: skip ?? false }, () => {
  let node;
  const clients = [];
  const client = (options) => {
    const c = new FanoutClient(node.url, { transport: "websocket", ...options });
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

  /** A connected client receives what the backend publishes to its user. */
  test("connect and receive a message", async () => {
    const c = client({ token: node.token({ sub: "alice" }) });
    const log = record(c);
    await c.connect();
    assert.equal(c.state, "connected");
    assert.equal(c.transport, "websocket");
    assert.equal(log.welcome[0].uid, "alice");
    assert.deepEqual(
      log.state.map((s) => s.state),
      ["connecting", "connected"],
    );
    await node.publish({ to: { users: ["alice"] }, event: "hello", data: { n: 1 } });
    await log.until((l) => l.message.length === 1, "the message");
    const m = log.message[0];
    assert.equal(m.channel, "user:alice");
    assert.equal(m.event, "hello");
    assert.deepEqual(m.data, { n: 1 });
    assert.equal(m.offset, 1);
    assert.deepEqual(c.positions()["user:alice"], { offset: 1, epoch: m.epoch });
    c.close();
    assert.equal(c.state, "closed");
  });

  /** join/publish resolve with joined/ack; refusals reject with the server's code. */
  test("join, publish and ack; errors carry the server's code", async () => {
    const c = client({
      getToken: () => node.token({ sub: "bob", groups: ["room-*"], publish: ["room-1"] }),
    });
    const log = record(c);
    await c.connect();
    const joined = await c.join("room-1");
    assert.equal(joined.type, "joined");
    assert.equal(joined.group, "room-1");
    assert.equal(typeof joined.epoch, "string");

    const ack = await c.publish("room-1", "typing", { text: "hi" });
    assert.equal(ack.type, "ack");
    await log.until((l) => l.message.some((m) => m.event === "typing"), "own message");
    const own = log.message.find((m) => m.event === "typing");
    assert.equal(own.channel, "group:room-1");
    assert.equal(own.from, "bob");
    assert.deepEqual(own.data, { text: "hi" });

    await assert.rejects(c.join("news"), (e) => e.code === "forbidden" && e.group === "news");
    await assert.rejects(c.publish("room-2", "x", 1), (e) => e.code === "forbidden");
    await assert.rejects(c.publish("bad name", "x", 1), (e) => e.code === "invalid_group");
    assert.deepEqual(c.groups, ["room-1"]);

    const left = await c.leave("room-1");
    assert.equal(left.type, "left");
    assert.deepEqual(c.groups, []);
    assert.equal(c.state, "connected");
    c.close();
  });

  /** A kicked client (bye reconnect:false) stops; connect() resumes it with no gap and no duplicate. */
  test("bye reconnect:false stops; connect() again resumes every channel", async () => {
    const c = client({ getToken: () => node.token({ sub: "carol", groups: ["g-*"] }), groups: ["g-1"] });
    const log = record(c);
    await c.connect();
    await log.until((l) => l.joined.length === 1, "the join");
    for (let i = 1; i <= 3; i++) await node.publish({ to: { users: ["carol"], groups: ["g-1"] }, data: i });
    await log.until((l) => l.message.length === 3, "three messages");

    const stopped = log.until((l) => l.state.some((s) => s.state === "closed"), "the stop");
    await node.api("/api/users/carol/disconnect", { method: "POST" });
    await stopped;
    const closed = log.state.find((s) => s.state === "closed");
    assert.equal(closed.reason, "kicked");
    assert.equal(c.state, "closed");
    await assert.rejects(c.publish("g-1", "x", 1), (e) => e.code === "closed");

    // Missed while stopped: delivered once each on resume.
    for (let i = 4; i <= 6; i++) await node.publish({ to: { users: ["carol"], groups: ["g-1"] }, data: i });
    const before = log.state.length;
    await c.connect();
    await log.until((l) => l.message.length === 6, "the missed messages");
    await node.publish({ to: { users: ["carol"], groups: ["g-1"] }, data: 7 });
    await log.until((l) => l.message.length === 7, "a live message");
    assert.deepEqual(log.data(), [1, 2, 3, 4, 5, 6, 7]);
    // Each publish reached two channels with one id: the second copy is dropped.
    assert.equal(new Set(log.message.map((m) => m.id)).size, 7);
    assert.deepEqual(
      log.recovery.map((r) => [r.channel, r.recovered]).sort(),
      [
        ["all", true],
        ["group:g-1", true],
        ["user:carol", true],
      ],
    );
    assert.deepEqual(
      log.state.slice(before).map((s) => s.state),
      ["connecting", "connected"],
    );
    const pos = c.positions();
    assert.equal(pos["user:carol"].offset, 7);
    assert.equal(pos["group:g-1"].offset, 7);
    c.close();
  });

  /** The token is refreshed in-band before it expires: same connection throughout. */
  test("token refresh keeps the connection", async () => {
    let calls = 0;
    const c = client({
      getToken: () => {
        calls += 1;
        return node.token({ sub: "dave", exp: Math.floor(Date.now() / 1000) + 3 });
      },
    });
    const log = record(c);
    await c.connect();
    const conn = c.welcome.conn;
    // Each token lives ~3 s: without refresh the server closes with token_expired.
    await log.until(() => calls >= 4, "three refreshes", 20_000);
    assert.equal(c.state, "connected");
    assert.equal(c.welcome.conn, conn);
    assert.deepEqual(
      log.state.map((s) => s.state),
      ["connecting", "connected"],
    );
    assert.deepEqual(log.error, []);
    await node.publish({ to: { users: ["dave"] }, data: "still here" });
    await log.until((l) => l.message.length === 1, "a message after the refreshes");
    c.close();
  });

  /** A silent connection (server frozen) is noticed through heartbeats and replaced. */
  test("a dead connection is noticed and replaced", async () => {
    const c = client({ getToken: () => node.token({ sub: "erin" }), minReconnectDelay: 100, maxReconnectDelay: 500 });
    const log = record(c);
    await c.connect();
    const first = c.welcome.conn;
    node.signal("SIGSTOP");
    try {
      await log.until(
        (l) => l.state.some((s) => s.state === "disconnected" && s.reason === "heartbeat_timeout"),
        "the heartbeat timeout",
      );
    } finally {
      node.signal("SIGCONT");
    }
    await log.until(() => c.state === "connected" && c.welcome.conn !== first, "a new connection", 30_000);
    c.close();
  });

  /** close() leaves nothing behind: pending requests settle, no timer keeps the process alive. */
  test("close() rejects what is pending and stops for good", async () => {
    const c = client({ getToken: () => node.token({ sub: "fay", groups: ["*"] }) });
    const log = record(c);
    const connecting = c.connect();
    const join = c.join("later");
    const pub = c.publish("later", "e", 1);
    c.close();
    await assert.rejects(connecting, (e) => e.code === "closed");
    await assert.rejects(join, (e) => e.code === "closed");
    await assert.rejects(pub, (e) => e.code === "closed");
    assert.equal(log.state.at(-1).state, "closed");
    assert.equal(log.state.at(-1).reason, "closed_by_client");
  });
});
