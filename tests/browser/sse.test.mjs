// The demo page over SSE (`?transport=sse`: the library reads the stream
// with the browser's EventSource). Messages arrive; after a forced
// reconnect (the page's node is killed and restarted on the same port,
// with Redis keeping the history) the page resumes with what it missed,
// once, in order.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  cluster,
  connected,
  launchBrowser,
  missingTools,
  openDemo,
  range,
  seqs,
  sleep,
  startFanout,
  startRedis,
  waitPage,
} from "./support.mjs";

const skip = missingTools({ redis: true });

let browser;
const cleanups = [];
before(async () => {
  if (!skip) browser = await launchBrowser();
});
after(async () => {
  for (const f of cleanups.reverse()) await f();
  await browser?.close();
});

test("SSE in the browser: messages, and resume after a forced reconnect", { skip: skip ?? false, timeout: 120_000 }, async () => {
  const uid = "sam";
  const room = "sseroom";
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  const keys = cluster();
  const n1 = await startFanout({ nodeId: "n1", keys, redisUrl: redis.url });
  const n2 = await startFanout({ nodeId: "n2", keys, redisUrl: redis.url });
  cleanups.push(() => n1.stop(), () => n2.stop(), () => n1.cleanup(), () => n2.cleanup());
  const p = await openDemo(browser, n1.url, { uid, room, transport: "sse" });
  cleanups.push(p.close);
  await connected(p.page, room);
  assert.equal(await p.page.evaluate(() => window.fanoutDemo.client.transport), "sse");

  const send = async (node, seq) => {
    await node.publish({ to: { users: [uid] }, event: "seq", data: { seq, text: `user ${seq}` } });
    await node.publish({ to: { groups: [room] }, event: "seq", data: { seq, text: `group ${seq}` } });
  };
  const arrived = (n) =>
    waitPage(
      p.page,
      ([uid, room, n]) =>
        [`user:${uid}`, `group:${room}`].every(
          (ch) => window.fanoutDemo.messages.filter((m) => m.channel === ch).length >= n,
        ),
      [uid, room, n],
      `${n} messages on each channel`,
      30_000,
    );

  for (let i = 1; i <= 5; i++) await send(n1, i);
  await arrived(5);
  await p.page.locator("#messages li", { hasText: "group 5" }).waitFor();
  await p.page.locator("#inbox li", { hasText: "user 5" }).waitFor();

  // Over SSE the page reads but cannot send: the form says so.
  await p.page.fill("#text", "can I talk?");
  await p.page.press("#text", "Enter");
  await p.page.locator("#messages li.error", { hasText: "not_supported" }).waitFor();

  // The node goes away; what is published meanwhile (through node 2) waits in Redis.
  await n1.stop("SIGKILL");
  await waitPage(p.page, () => window.fanoutDemo.client.state !== "connected", null, "the page to notice");
  for (let i = 6; i <= 10; i++) await send(n2, i);
  await n1.start();
  await waitPage(
    p.page,
    () => window.fanoutDemo.client.state === "connected" && window.__fanoutTest.conns.length >= 2,
    null,
    "the page to reconnect",
    30_000,
  );
  for (let i = 11; i <= 12; i++) await send(n1, i);
  await arrived(12);
  await sleep(200); // a duplicate would have come with the rest

  for (const channel of [`user:${uid}`, `group:${room}`]) {
    assert.deepEqual(await seqs(p.page, channel), range(12), `seqs on ${channel}`);
  }
  const state = await p.page.evaluate(() => ({
    transport: window.fanoutDemo.client.transport,
    recoveries: window.fanoutDemo.recoveries,
    conns: window.__fanoutTest.conns,
  }));
  assert.equal(state.transport, "sse");
  assert.ok(state.conns.every((c) => c.kind === "sse"), JSON.stringify(state.conns));
  // The resumed connection: every channel came back recovered.
  assert.deepEqual(
    state.recoveries.map((r) => `${r.channel} ${r.recovered}`).sort(),
    ["all true", `group:${room} true`, `user:${uid} true`],
  );
  const resumed = state.conns.at(-1);
  assert.match(decodeURIComponent(resumed.url), new RegExp(`since=.*user:${uid}~5~`), "resumed from seq 5");
});
