// A page whose tokens live 4 seconds (`?ttl=4`) stays on one connection
// across several expiries: the client library refreshes the token in-band
// (protocol.md §3 `refresh`, §7 token expiry) before each `exp`.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connected, launchBrowser, missingTools, openDemo, sleep, startFanout, waitPage } from "./support.mjs";

const skip = missingTools();
const TTL = 4;

let browser;
const cleanups = [];
before(async () => {
  if (!skip) browser = await launchBrowser();
});
after(async () => {
  for (const f of cleanups.reverse()) await f();
  await browser?.close();
});

test("token refresh before expiry keeps the page on one connection", { skip: skip ?? false, timeout: 120_000 }, async (t) => {
  const node = await startFanout({ nodeId: "n1" });
  cleanups.push(() => node.stop(), () => node.cleanup());
  const p = await openDemo(browser, node.url, { uid: "tess", ttl: String(TTL), transport: "websocket" });
  cleanups.push(p.close);
  await connected(p.page, "lobby");
  const first = await p.page.evaluate(() => ({ ...window.fanoutDemo.client.welcome, now: Date.now() }));
  // The page did ask for short tokens: the connection would end at `exp`.
  assert.ok(first.exp * 1000 - first.now <= TTL * 1000, `welcome.exp ${first.exp} is within ${TTL} s`);

  // Past three expiries of the first token's lifetime, and at least three refreshes.
  await sleep(3 * TTL * 1000 + 1000);
  await waitPage(
    p.page,
    () => window.__fanoutTest.conns[0].refreshed >= 3,
    null,
    "three `refreshed` frames",
  );
  const now = await p.page.evaluate(() => ({
    conn: window.fanoutDemo.client.welcome?.conn,
    state: window.fanoutDemo.client.state,
    states: window.fanoutDemo.states,
    errors: window.fanoutDemo.errors,
    conns: window.__fanoutTest.conns,
  }));
  t.diagnostic(`refresh frames sent ${now.conns[0].refresh}, refreshed received ${now.conns[0].refreshed}`);
  assert.equal(now.state, "connected");
  assert.equal(now.conn, first.conn, "the same connection (welcome.conn)");
  assert.equal(now.conns.length, 1, "the page opened no other connection");
  assert.deepEqual(
    now.states.map((s) => s.state),
    ["connecting", "connected"],
    `no disconnect: ${JSON.stringify(now.states)}`,
  );
  assert.deepEqual(now.errors, [], "no failed refresh");

  // Still receiving, on the same connection.
  await node.publish({ to: { users: ["tess"] }, event: "notice", data: { text: "still here" } });
  await p.page.locator("#inbox li", { hasText: "still here" }).waitFor({ timeout: 20_000 });
  assert.equal(await p.page.evaluate(() => window.fanoutDemo.client.welcome?.conn), first.conn);
  assert.deepEqual(p.problems, []);
});
