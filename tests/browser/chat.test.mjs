// Two pages chat through the demo page's UI: typed into #text, shown in
// the other page's #messages with the sender's uid. Through one node, and
// through two nodes that share a Redis (page A on node 1, page B on node 2).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { cluster, connected, launchBrowser, missingTools, openDemo, startFanout, startRedis } from "./support.mjs";

const skip = missingTools({ redis: true });

describe("chat on the demo page", { skip: skip ?? false }, () => {
  let browser;
  const cleanups = [];
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    for (const f of cleanups.reverse()) await f();
    await browser?.close();
  });

  /** Ann and Bob join `room` on their nodes and say one line each through the form. */
  async function chat(baseA, baseB, room) {
    const a = await openDemo(browser, baseA, { uid: "ann", room });
    const b = await openDemo(browser, baseB, { uid: "bob", room });
    cleanups.push(a.close, b.close);
    await connected(a.page, room);
    await connected(b.page, room);

    await a.page.fill("#text", "hello from ann");
    await a.page.press("#text", "Enter");
    const atBob = b.page.locator("#messages li", { hasText: "hello from ann" });
    await atBob.waitFor({ timeout: 20_000 });
    assert.equal(await atBob.locator(".who").textContent(), "ann");
    assert.equal(await a.page.inputValue("#text"), "", "the form clears the input");

    await b.page.fill("#text", "hi ann, bob here");
    await b.page.click("#send");
    const atAnn = a.page.locator("#messages li", { hasText: "hi ann, bob here" });
    await atAnn.waitFor({ timeout: 20_000 });
    assert.equal(await atAnn.locator(".who").textContent(), "bob");
    // Each sees its own line too, marked as its own.
    await a.page.locator("#messages li.me", { hasText: "hello from ann" }).waitFor({ timeout: 20_000 });

    for (const [p, me] of [
      [a, "ann"],
      [b, "bob"],
    ]) {
      const msgs = await p.page.evaluate(() => window.fanoutDemo.messages);
      assert.deepEqual(
        msgs.map((m) => [m.channel, m.event, m.from, m.data.text]),
        [
          [`group:${room}`, "chat", "ann", "hello from ann"],
          [`group:${room}`, "chat", "bob", "hi ann, bob here"],
        ],
        `${me}'s messages`,
      );
      assert.deepEqual(p.problems, [], `${me}'s page has no console errors`);
    }
    return { a, b };
  }

  test("two pages chat through one node", { timeout: 120_000 }, async () => {
    const node = await startFanout({ nodeId: "n1" });
    cleanups.push(() => node.stop(), () => node.cleanup());
    await chat(node.url, node.url, "lobby");
  });

  test("two pages chat through two nodes on Redis", { timeout: 120_000 }, async () => {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const keys = cluster();
    const n1 = await startFanout({ nodeId: "n1", keys, redisUrl: redis.url });
    const n2 = await startFanout({ nodeId: "n2", keys, redisUrl: redis.url });
    cleanups.push(() => n1.stop(), () => n2.stop(), () => n1.cleanup(), () => n2.cleanup());
    const { a, b } = await chat(n1.url, n2.url, "across");
    assert.equal(await a.page.evaluate(() => window.fanoutDemo.client.welcome.node), "n1");
    assert.equal(await b.page.evaluate(() => window.fanoutDemo.client.welcome.node), "n2");
  });
});
