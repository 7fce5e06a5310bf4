// A notification to a user id, sent through the demo page's notifications
// form (POST /dev/publish), reaches every tab of that user and no other
// user's page.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connected, launchBrowser, missingTools, openDemo, startFanout } from "./support.mjs";

const skip = missingTools();

let browser;
const cleanups = [];
before(async () => {
  if (!skip) browser = await launchBrowser();
});
after(async () => {
  for (const f of cleanups.reverse()) await f();
  await browser?.close();
});

/** Sends `text` to `to` through `page`'s notifications form. */
async function push(page, to, text) {
  await page.fill("#push-to", to);
  await page.fill("#push-text", text);
  await page.click("#push");
  await page.locator("#push-result", { hasText: `delivered to ${to}'s tabs` }).waitFor({ timeout: 20_000 });
}

const inbox = (p) => p.page.locator("#inbox li").allTextContents();
const userMessages = (p) =>
  p.page.evaluate(() => window.fanoutDemo.messages.map((m) => `${m.channel} ${m.data.text}`));

test("a push to a user reaches both of its tabs and no one else", { skip: skip ?? false, timeout: 120_000 }, async () => {
  const node = await startFanout({ nodeId: "n1" });
  cleanups.push(() => node.stop(), () => node.cleanup());
  const alice1 = await openDemo(browser, node.url, { uid: "alice" });
  const alice2 = await openDemo(browser, node.url, { uid: "alice" });
  const bob = await openDemo(browser, node.url, { uid: "bob" });
  cleanups.push(alice1.close, alice2.close, bob.close);
  for (const p of [alice1, alice2, bob]) await connected(p.page, "lobby");

  // Bob writes to Alice, then one of Alice's tabs answers Bob.
  await push(bob.page, "alice", "for alice only");
  await push(alice1.page, "bob", "for bob only");
  for (const p of [alice1, alice2]) {
    await p.page.locator("#inbox li", { hasText: "for alice only" }).waitFor({ timeout: 20_000 });
  }
  await bob.page.locator("#inbox li", { hasText: "for bob only" }).waitFor({ timeout: 20_000 });

  // Nothing else arrived anywhere: not Bob's note at Alice's, not Alice's at Bob's.
  for (const p of [alice1, alice2]) {
    assert.deepEqual(await userMessages(p), ["user:alice for alice only"]);
    const shown = await inbox(p);
    assert.equal(shown.length, 1, JSON.stringify(shown));
  }
  assert.deepEqual(await userMessages(bob), ["user:bob for bob only"]);
  assert.equal((await inbox(bob)).length, 1);
  for (const p of [alice1, alice2, bob]) assert.deepEqual(p.problems, []);
});
