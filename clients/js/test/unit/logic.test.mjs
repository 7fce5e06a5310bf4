// Unit tests of the client's pure logic: backoff, dedupe, positions, the
// compact `since` form, URL derivation and the SSE parser.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { backoffDelay } from "../../build/unit/backoff.js";
import { RecentIds } from "../../build/unit/dedupe.js";
import { PositionTracker, formatSince, parseSince } from "../../build/unit/positions.js";
import { SseParser } from "../../build/unit/transport.js";
import { deriveEndpoints, withQuery } from "../../build/unit/url.js";

describe("backoffDelay", () => {
  /** Full jitter: anywhere from 0 up to (not including) the capped exponential. */
  test("is uniform in [0, min(max, min·2^n))", () => {
    assert.equal(backoffDelay(0, 500, 30_000, 0, () => 0), 0);
    assert.equal(backoffDelay(0, 500, 30_000, 0, () => 0.999999), 499);
    assert.equal(backoffDelay(1, 500, 30_000, 0, () => 0.999999), 999);
    assert.equal(backoffDelay(3, 500, 30_000, 0, () => 0.5), 2000);
    assert.equal(backoffDelay(10, 500, 30_000, 0, () => 0.999999), 29_999);
    assert.equal(backoffDelay(1000, 500, 30_000, 0, () => 0.5), 15_000);
  });

  /** The server's retry_after_ms is a floor, never shortened by jitter. */
  test("never goes below the server's hint", () => {
    assert.equal(backoffDelay(0, 500, 30_000, 4000, () => 0.5), 4000);
    assert.equal(backoffDelay(5, 500, 30_000, 100, () => 0.5), 8000);
  });

  test("spreads: many draws are not all equal", () => {
    const draws = new Set(Array.from({ length: 50 }, () => backoffDelay(4, 500, 30_000)));
    assert.ok(draws.size > 1);
    for (const d of draws) assert.ok(d >= 0 && d < 8000);
  });
});

describe("RecentIds", () => {
  test("reports duplicates and forgets the oldest past capacity", () => {
    const ids = new RecentIds(3);
    assert.equal(ids.add("a"), true);
    assert.equal(ids.add("a"), false);
    ids.add("b");
    ids.add("c");
    ids.add("d"); // evicts a
    assert.equal(ids.size, 3);
    assert.equal(ids.has("a"), false);
    assert.equal(ids.add("b"), false);
    assert.equal(ids.add("a"), true); // forgotten, so new again; evicts b
    assert.equal(ids.has("b"), false);
  });
});

describe("PositionTracker", () => {
  const m = (channel, offset, epoch = "e1") => ({ channel, offset, epoch });

  test("moves forward, drops what it already had, flags gaps and new epochs", () => {
    const t = new PositionTracker();
    assert.equal(t.observe(m("user:1", 1)), "next");
    assert.equal(t.observe(m("user:1", 2)), "next");
    assert.equal(t.observe(m("user:1", 2)), "duplicate");
    assert.equal(t.observe(m("user:1", 1)), "duplicate");
    assert.deepEqual(t.get("user:1"), { offset: 2, epoch: "e1" });
    assert.equal(t.observe(m("user:1", 5)), "gap");
    assert.equal(t.observe(m("user:1", 1, "e2")), "epoch");
    assert.deepEqual(t.get("user:1"), { offset: 1, epoch: "e2" });
    assert.equal(t.observe({ channel: "user:1" }), "live");
    assert.deepEqual(t.get("user:1"), { offset: 1, epoch: "e2" });
  });

  /** welcome/joined give the channel's top; a resumed channel's replay still has to come. */
  test("keeps its own position on a recovered resume", () => {
    const t = new PositionTracker({ "user:1": { offset: 1, epoch: "e1" } });
    assert.equal(t.start("user:1", { offset: 3, epoch: "e1" }, true), false);
    assert.deepEqual(t.get("user:1"), { offset: 1, epoch: "e1" });
    assert.equal(t.observe(m("user:1", 2)), "next"); // the replay
    assert.equal(t.observe(m("user:1", 3)), "next");
  });

  test("takes the server's position when not recovered or not resumed", () => {
    const t = new PositionTracker({ a: { offset: 1, epoch: "e1" }, b: { offset: 9, epoch: "e1" } });
    t.start("a", { offset: 0, epoch: "e2" }, false);
    assert.deepEqual(t.get("a"), { offset: 0, epoch: "e2" });
    t.start("b", { offset: 4, epoch: "e1" }, false); // ahead of the channel
    assert.deepEqual(t.get("b"), { offset: 4, epoch: "e1" });
    t.start("c", { offset: 7, epoch: "e1" }, undefined);
    assert.deepEqual(t.get("c"), { offset: 7, epoch: "e1" });
    // A position of another epoch without a word on recovery: history lost.
    assert.equal(t.start("c", { offset: 0, epoch: "e9" }, undefined), true);
    // Never moves back in the same epoch.
    t.start("c", { offset: 0, epoch: "e9" }, undefined);
    t.observe(m("c", 1, "e9"));
    assert.equal(t.start("c", { offset: 0, epoch: "e9" }, undefined), false);
    assert.deepEqual(t.get("c"), { offset: 1, epoch: "e9" });
  });

  test("ignores malformed initial positions", () => {
    const t = new PositionTracker({ a: { offset: -1, epoch: "e" }, b: { offset: 1, epoch: "x y" }, c: { offset: 2, epoch: "ok" } });
    assert.deepEqual(t.channels(), ["c"]);
  });

  test("snapshot filters and copies", () => {
    const t = new PositionTracker({ "user:1": { offset: 1, epoch: "e" }, "group:g": { offset: 2, epoch: "f" } });
    const s = t.snapshot((c) => c.startsWith("user:"));
    assert.deepEqual(s, { "user:1": { offset: 1, epoch: "e" } });
    s["user:1"].offset = 99;
    assert.equal(t.get("user:1").offset, 1);
  });
});

describe("compact since", () => {
  test("formats sorted by channel, as the server writes it", () => {
    assert.equal(
      formatSince({
        "user:42": { offset: 17, epoch: "k3x9a" },
        all: { offset: 4, epoch: "q1w2e" },
        "group:room-1": { offset: 3, epoch: "p0c8a1zk" },
      }),
      "all~4~q1w2e,group:room-1~3~p0c8a1zk,user:42~17~k3x9a",
    );
    assert.equal(formatSince({}), "");
    assert.equal(formatSince({ "group:team/blue": { offset: 0, epoch: "e" } }), "group:team/blue~0~e");
  });

  test("parses what it formats, and refuses the malformed", () => {
    const text = "all~0~t2nxli34,group:room-1~0~qy7rveqb,user:42~1~8zicnysv";
    assert.equal(formatSince(parseSince(text)), text);
    assert.deepEqual(parseSince(""), {});
    for (const bad of ["user:1~x~e", "user:1~1", "~1~e", "user:1~1~e f", "user:1~-1~e", "a~1~e~x"]) {
      assert.throws(() => parseSince(bad), TypeError, bad);
    }
  });
});

describe("deriveEndpoints", () => {
  const cases = [
    ["http://127.0.0.1:8080", "ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080/sse"],
    ["http://127.0.0.1:8080/", "ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080/sse"],
    ["https://push.example.com", "wss://push.example.com/ws", "https://push.example.com/sse"],
    ["wss://push.example.com/ws", "wss://push.example.com/ws", "https://push.example.com/sse"],
    ["ws://h:1/ws/", "ws://h:1/ws", "http://h:1/sse"],
    ["https://h/sse", "wss://h/ws", "https://h/sse"],
    ["https://example.com/push", "wss://example.com/push/ws", "https://example.com/push/sse"],
    ["https://example.com/push/ws", "wss://example.com/push/ws", "https://example.com/push/sse"],
    ["http://h:8080?tenant=a", "ws://h:8080/ws?tenant=a", "http://h:8080/sse?tenant=a"],
  ];
  for (const [url, ws, sse] of cases) {
    test(url, () => assert.deepEqual(deriveEndpoints(url), { websocket: ws, sse }));
  }

  test("relative URLs resolve against the page", () => {
    assert.deepEqual(deriveEndpoints("/", "https://app.example.com/chat/room"), {
      websocket: "wss://app.example.com/ws",
      sse: "https://app.example.com/sse",
    });
  });

  test("refuses other schemes and non-URLs", () => {
    assert.throws(() => deriveEndpoints("ftp://h"), TypeError);
    assert.throws(() => deriveEndpoints("not a url"), TypeError);
  });

  test("withQuery adds parameters and skips empty ones", () => {
    assert.equal(
      withQuery("http://h/sse?x=1", { groups: "a,b", since: "user:1~2~e", token: undefined, empty: "" }),
      "http://h/sse?x=1&groups=a%2Cb&since=user%3A1%7E2%7Ee",
    );
  });
});

describe("SseParser", () => {
  const parse = (chunks) => {
    const events = [];
    const comments = [];
    const p = new SseParser((e) => events.push(e), (c) => comments.push(c));
    for (const c of chunks) p.push(c);
    return { events, comments, retry: p.retry };
  };

  test("events, ids, comments and retry", () => {
    const { events, comments, retry } = parse([
      'id: a~1~e\ndata: {"type":"welcome"}\n\n:\n\nretry: 1500\ndata: {"type":"bye"}\n\n',
    ]);
    assert.deepEqual(events, [
      { data: '{"type":"welcome"}', event: "message", id: "a~1~e" },
      { data: '{"type":"bye"}', event: "message", id: "a~1~e" },
    ]);
    assert.deepEqual(comments, [""]);
    assert.equal(retry, 1500);
  });

  test("any line ending, split anywhere", () => {
    const text = "data: one\r\n\r\ndata: two\r\rdata:three\n\n";
    const whole = parse([text]).events.map((e) => e.data);
    assert.deepEqual(whole, ["one", "two", "three"]);
    for (let i = 1; i < text.length; i++) {
      const split = parse([text.slice(0, i), text.slice(i)]).events.map((e) => e.data);
      assert.deepEqual(split, whole, `split at ${i}`);
    }
  });

  test("multi-line data and events without data", () => {
    const { events } = parse(["event: x\n\ndata: a\ndata: b\n\ndata\n\n"]);
    assert.deepEqual(
      events.map((e) => [e.event, e.data]),
      [
        ["message", "a\nb"],
        ["message", ""],
      ],
    );
  });
});
