// The SSE transport through a browser-style EventSource (scripted fake):
// URL parameters, join by reconnecting, and refusals EventSource cannot explain.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { FanoutClient } from "../../build/unit/client.js";

class FakeEventSource {
  static all = [];
  constructor(url) {
    this.url = new URL(url);
    this.readyState = 0;
    this.closed = false;
    FakeEventSource.all.push(this);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  recv(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  refuse() {
    this.readyState = 2;
    this.onerror?.({});
  }
  static last() {
    return FakeEventSource.all.at(-1);
  }
}

const welcome = (groups = []) => ({
  type: "welcome",
  conn: `n1-${FakeEventSource.all.length}`,
  uid: "42",
  node: "n1",
  exp: Math.floor(Date.now() / 1000) + 3600,
  heartbeat: 25,
  positions: Object.fromEntries([
    ["user:42", { offset: 2, epoch: "eu" }],
    ...groups.map((g) => [`group:${g}`, { offset: 0, epoch: "eg" }]),
  ]),
});

async function until(fn, what) {
  const deadline = Date.now() + 5000;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

let client;
afterEach(() => {
  client?.close();
  FakeEventSource.all = [];
});

test("EventSource: token and groups in the URL, join by reconnect, refused join", async () => {
  client = new FanoutClient("https://push.example.com", {
    transport: "sse",
    EventSource: FakeEventSource,
    getToken: () => "tkn",
    groups: ["a"],
    minReconnectDelay: 1,
    maxReconnectDelay: 5,
  });
  const errors = [];
  client.on("error", (e) => errors.push(e.code));
  const connected = client.connect();
  await until(() => FakeEventSource.all.length === 1, "the first stream");
  let es = FakeEventSource.last();
  assert.equal(es.url.origin + es.url.pathname, "https://push.example.com/sse");
  assert.equal(es.url.searchParams.get("token"), "tkn");
  assert.equal(es.url.searchParams.get("groups"), "a");
  assert.equal(es.url.searchParams.get("since"), null);
  es.open();
  es.recv(welcome(["a"]));
  await connected;
  assert.equal(client.transport, "sse");

  // A join reconnects with the new groups and every position in ?since=.
  const joined = client.join("b");
  await until(() => FakeEventSource.all.length === 2, "the second stream");
  assert.ok(es.closed);
  es = FakeEventSource.last();
  assert.equal(es.url.searchParams.get("groups"), "a,b");
  assert.equal(es.url.searchParams.get("since"), "group:a~0~eg,user:42~2~eu");
  es.open();
  es.recv(welcome(["a", "b"]));
  assert.deepEqual(await joined, { type: "joined", group: "b", offset: 0, epoch: "eg" });

  // A refused request (HTTP error: CLOSED before open) after adding a group
  // drops that group and reconnects without it.
  const refusedJoin = client.join("c");
  await until(() => FakeEventSource.all.length === 3, "the third stream");
  FakeEventSource.last().refuse();
  await assert.rejects(refusedJoin, (e) => e.code === "connect_refused" && e.group === "c");
  await until(() => FakeEventSource.all.length === 4, "the fourth stream");
  es = FakeEventSource.last();
  assert.equal(es.url.searchParams.get("groups"), "a,b");
  es.open();
  es.recv(welcome(["a", "b"]));
  await until(() => client.state === "connected", "connected again");
  assert.deepEqual(client.groups, ["a", "b"]);
  assert.ok(errors.includes("connect_refused"));

  // leave() reconnects without the group and resolves once the new stream is up.
  const left = client.leave("a");
  await until(() => FakeEventSource.all.length === 5, "the fifth stream");
  es = FakeEventSource.last();
  assert.equal(es.url.searchParams.get("groups"), "b");
  es.open();
  es.recv(welcome(["b"]));
  assert.deepEqual(await left, { type: "left", group: "a" });

  // bye with reconnect:false closes the EventSource for good.
  es.recv({ type: "bye", reason: "kicked", reconnect: false, retry_after_ms: 0 });
  assert.ok(es.closed);
  assert.equal(client.state, "closed");
});
