// Unit tests of FanoutClient's state machine against a scripted fake
// WebSocket: what it sends, how it reacts to frames, closes and silence.

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { FanoutClient } from "../../build/unit/client.js";

class FakeWebSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = undefined;
    FakeWebSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code) {
    this.closedWith = code;
    this.readyState = 3;
  }
  // --- driven by the tests ---
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  recv(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  static last() {
    return FakeWebSocket.all.at(-1);
  }
}

const welcome = (extra = {}) => ({
  type: "welcome",
  conn: "n1-1",
  uid: "42",
  node: "n1",
  exp: Math.floor(Date.now() / 1000) + 3600,
  heartbeat: 25,
  positions: { all: { offset: 0, epoch: "ea" }, "user:42": { offset: 0, epoch: "eu" } },
  ...extra,
});

const msg = (channel, offset, id, epoch = channel === "all" ? "ea" : "eu") => ({
  type: "message",
  channel,
  data: id,
  id,
  ts: 1,
  offset,
  epoch,
});

async function until(fn, what = "condition") {
  const deadline = Date.now() + 5000;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const clients = [];
function make(options = {}) {
  const c = new FanoutClient("http://fanout.test:8080", {
    transport: "websocket",
    WebSocket: FakeWebSocket,
    token: "tkn",
    minReconnectDelay: 1,
    maxReconnectDelay: 5,
    ...options,
  });
  clients.push(c);
  const log = { state: [], message: [], recovery: [], error: [], joined: [], left: [] };
  for (const name of Object.keys(log)) c.on(name, (e) => log[name].push(e));
  return { c, log };
}

/** Connects a client through the fake: returns the socket. */
async function connected(c, w = welcome()) {
  const done = c.connect();
  await until(() => FakeWebSocket.all.length > 0 && FakeWebSocket.last().onopen, "the socket");
  const ws = FakeWebSocket.last();
  ws.open();
  ws.recv(w);
  await done;
  return ws;
}

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  FakeWebSocket.all = [];
});

describe("FanoutClient over a fake WebSocket", () => {
  /** The token travels in the auth frame; `since` names user/all, groups are rejoined one by one. */
  test("auth frame, resume positions and rejoins", async () => {
    const { c } = make({
      groups: ["room-1", "room-2"],
      positions: {
        "user:42": { offset: 3, epoch: "eu" },
        all: { offset: 1, epoch: "ea" },
        "group:room-1": { offset: 7, epoch: "eg" },
      },
    });
    const ws = await connected(c);
    assert.equal(ws.url, "ws://fanout.test:8080/ws");
    assert.deepEqual(ws.sent[0], {
      type: "auth",
      token: "tkn",
      since: { "user:42": { offset: 3, epoch: "eu" }, all: { offset: 1, epoch: "ea" } },
    });
    const joins = ws.sent.filter((f) => f.type === "join");
    assert.deepEqual(
      joins.map((j) => [j.group, j.since]),
      [
        ["room-1", { offset: 7, epoch: "eg" }],
        ["room-2", undefined],
      ],
    );
    assert.ok(joins.every((j) => Number.isInteger(j.id)));
  });

  /** welcome gives the top; the replay after it must neither be dropped nor skipped. */
  test("a recovered resume keeps its position until the replay arrives", async () => {
    const { c, log } = make({ positions: { "user:42": { offset: 1, epoch: "eu" } } });
    const ws = await connected(
      c,
      welcome({ positions: { all: { offset: 0, epoch: "ea" }, "user:42": { offset: 3, epoch: "eu" } }, recovered: { "user:42": true } }),
    );
    assert.deepEqual(log.recovery, [{ channel: "user:42", recovered: true, reason: "resume" }]);
    assert.deepEqual(c.positions()["user:42"], { offset: 1, epoch: "eu" });
    ws.recv(msg("user:42", 2, "m2"));
    ws.recv(msg("user:42", 3, "m3"));
    assert.deepEqual(log.message.map((m) => m.id), ["m2", "m3"]);
    assert.deepEqual(c.positions()["user:42"], { offset: 3, epoch: "eu" });
  });

  /** One publish to two channels arrives twice with one id; offsets already seen are dropped. */
  test("drops duplicates by id and by offset; flags gaps and new epochs", async () => {
    const { c, log } = make({ groups: ["g"] });
    const ws = await connected(c);
    ws.recv({ type: "joined", id: ws.sent[1].id, group: "g", offset: 0, epoch: "eg" });
    ws.recv(msg("user:42", 1, "a"));
    ws.recv(msg("group:g", 1, "a", "eg"));
    ws.recv(msg("user:42", 1, "a-again"));
    ws.recv(msg("user:42", 2, "b"));
    ws.recv(msg("user:42", 4, "d"));
    ws.recv(msg("all", 1, "x", "new-epoch"));
    ws.recv({ type: "message", channel: "all", data: 0, id: "live", ts: 1 });
    ws.recv({ type: "message", channel: "all", data: 0, id: "live", ts: 1 });
    assert.deepEqual(log.message.map((m) => m.id), ["a", "b", "d", "x", "live"]);
    assert.deepEqual(
      log.recovery.map((r) => [r.channel, r.recovered, r.reason]),
      [
        ["user:42", false, "gap"],
        ["all", false, "epoch"],
      ],
    );
    assert.deepEqual(c.positions(), {
      all: { offset: 1, epoch: "new-epoch" },
      "user:42": { offset: 4, epoch: "eu" },
      "group:g": { offset: 1, epoch: "eg" },
    });
  });

  /** retry_after_ms is the least delay before the next attempt. */
  test("bye with reconnect: waits at least retry_after_ms", async () => {
    const { c, log } = make();
    const ws = await connected(c);
    ws.recv({ type: "bye", reason: "shutdown", reconnect: true, retry_after_ms: 4321 });
    const s = log.state.at(-1);
    assert.equal(s.state, "disconnected");
    assert.equal(s.reason, "shutdown");
    assert.equal(s.retryInMs, 4321);
    assert.equal(ws.closedWith, 1000);
  });

  /** bye reconnect:false stops for good, with the reason; so does a 35xx close without bye. */
  test("bye reconnect:false and 35xx closes stop", async () => {
    const { c, log } = make();
    const ws = await connected(c);
    ws.recv({ type: "error", code: "invalid_token", message: "nope" });
    ws.recv({ type: "bye", reason: "unauthorized", reconnect: false, retry_after_ms: 0 });
    assert.equal(c.state, "closed");
    const s = log.state.at(-1);
    assert.equal(s.reason, "unauthorized");
    assert.equal(s.error.code, "invalid_token");
    assert.equal(FakeWebSocket.all.length, 1);

    const b = make();
    const ws2 = await connected(b.c);
    ws2.drop(3503);
    assert.equal(b.c.state, "closed");
    assert.equal(b.log.state.at(-1).reason, "close 3503");
  });

  /** A publish whose ack was lost rejects with `disconnected` and is not sent again. */
  test("in-flight publish rejects on disconnect; queued ones go out after welcome", async () => {
    const { c } = make();
    const ws = await connected(c);
    const lost = c.publish("g", "e", 1);
    assert.equal(ws.sent.at(-1).type, "publish");
    ws.drop(1006);
    await assert.rejects(lost, (e) => e.code === "disconnected" && e.sent === true);
    const queued = c.publish("g", "e", 2);
    await until(() => FakeWebSocket.all.length === 2, "the reconnect");
    const ws2 = FakeWebSocket.last();
    ws2.open();
    ws2.recv(welcome());
    const pubs = ws2.sent.filter((f) => f.type === "publish");
    assert.deepEqual(
      pubs.map((p) => p.data),
      [2],
    );
    ws2.recv({ type: "ack", id: pubs[0].id });
    assert.deepEqual(await queued, { type: "ack", id: pubs[0].id });
  });

  test("publishes wait for a connection in a bounded queue, and time out", async () => {
    const { c } = make({ maxQueuedPublishes: 2, requestTimeout: 30 });
    c.connect();
    const a = c.publish("g", "e", 1);
    const b = c.publish("g", "e", 2);
    await assert.rejects(c.publish("g", "e", 3), (e) => e.code === "queue_full");
    await assert.rejects(a, (e) => e.code === "timeout" && e.sent === false);
    await assert.rejects(b, (e) => e.code === "timeout");
  });

  /** Errors correlate by id: the caller gets the server's code; the group is dropped. */
  test("join errors reject with the code; server-side joins and leaves are followed", async () => {
    const { c, log } = make();
    const ws = await connected(c);
    const p = c.join("news");
    const id = ws.sent.at(-1).id;
    ws.recv({ type: "error", id, code: "forbidden", message: "no" });
    await assert.rejects(p, (e) => e.code === "forbidden" && e.group === "news" && e.frame.id === id);
    assert.deepEqual(c.groups, []);

    ws.recv({ type: "joined", group: "team/blue", offset: 4, epoch: "tb" });
    assert.deepEqual(c.groups, ["team/blue"]);
    assert.deepEqual(c.positions()["group:team/blue"], { offset: 4, epoch: "tb" });
    ws.recv({ type: "left", group: "team/blue" });
    assert.deepEqual(c.groups, []);
    assert.equal(c.positions()["group:team/blue"], undefined);
    assert.deepEqual(
      [log.joined.length, log.left.length],
      [1, 1],
    );

    await assert.rejects(c.join("bad name"), (e) => e.code === "invalid_group");
    const pending = c.join("x");
    const leaving = c.leave("x");
    await assert.rejects(pending, (e) => e.code === "cancelled");
    const leave = ws.sent.at(-1);
    assert.equal(leave.type, "leave");
    ws.recv({ type: "left", id: leave.id, group: "x" });
    assert.deepEqual(await leaving, { type: "left", id: leave.id, group: "x" });
  });

  /** Without data for one heartbeat the client pings; silent for two, it reconnects. */
  test("a silent connection is pinged, then replaced", async () => {
    const { c, log } = make();
    const ws = await connected(c, welcome({ heartbeat: 0.05 }));
    await until(() => ws.sent.some((f) => f.type === "ping"), "a ping");
    await until(() => log.state.some((s) => s.reason === "heartbeat_timeout"), "the timeout");
    assert.equal(ws.closedWith, 1000);
    await until(() => FakeWebSocket.all.length === 2, "a new socket");
  });

  /** Refresh at half the remaining life; a failed refresh is reported and retried later. */
  test("refreshes the token in-band", async () => {
    let n = 0;
    const { c, log } = make({ token: undefined, getToken: () => `t${++n}` });
    const ws = await connected(c, welcome({ exp: Math.floor(Date.now() / 1000) + 2 }));
    await until(() => ws.sent.some((f) => f.type === "refresh"), "a refresh");
    const r = ws.sent.find((f) => f.type === "refresh");
    assert.equal(r.token, "t2");
    ws.recv({ type: "error", id: r.id, code: "invalid_token", message: "bad" });
    assert.equal(log.error.at(-1).code, "invalid_token");
    assert.equal(c.state, "connected");
  });

  /** close() clears every timer: nothing keeps the process alive. */
  test("close() leaves no timer behind", async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const base = timers();
    const { c } = make({ token: undefined, getToken: () => "t", groups: ["g"] });
    await connected(c);
    c.publish("g", "e", 1);
    assert.ok(timers() > base);
    c.close();
    assert.equal(timers(), base);
  });

  /** A throwing handler does not break the client; it is reported as `handler_error`. */
  test("handler errors are reported, not thrown", async () => {
    const { c, log } = make();
    c.on("message", () => {
      throw new Error("boom");
    });
    const ws = await connected(c);
    ws.recv(msg("user:42", 1, "a"));
    assert.equal(log.message.length, 1);
    assert.equal(log.error[0].code, "handler_error");
    assert.equal(log.error[0].cause.message, "boom");
  });

  test("on() returns an unsubscribe function", async () => {
    const { c } = make();
    const seen = [];
    const off = c.on("message", (m) => seen.push(m.id));
    const ws = await connected(c);
    ws.recv(msg("user:42", 1, "a"));
    off();
    ws.recv(msg("user:42", 2, "b"));
    assert.deepEqual(seen, ["a"]);
  });

  test("publish over SSE is refused with not_supported", async () => {
    const c = new FanoutClient("http://h", { transport: "sse", token: "t", fetch: async () => new Promise(() => {}) });
    await assert.rejects(c.publish("g", "e", 1), (e) => e.code === "not_supported");
  });
});
