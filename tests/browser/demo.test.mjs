// The demo page loads with no console error and no uncaught exception,
// shows what it should, and leaves a screenshot in target/browser/demo.png
// for a person to look at.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { OUT_DIR, connected, launchBrowser, missingTools, openDemo, startFanout } from "./support.mjs";

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

test("the demo page loads cleanly; screenshot in target/browser/demo.png", { skip: skip ?? false, timeout: 120_000 }, async (t) => {
  const node = await startFanout({ nodeId: "n1" });
  cleanups.push(() => node.stop(), () => node.cleanup());
  const a = await openDemo(browser, node.url, { uid: "ada" });
  const b = await openDemo(browser, node.url, { uid: "ben" });
  cleanups.push(a.close, b.close);
  await connected(a.page, "lobby");
  await connected(b.page, "lobby");

  assert.equal(await a.page.title(), "fanout demo");
  assert.equal(await a.page.inputValue("#uid"), "ada");
  assert.equal(await a.page.inputValue("#room"), "lobby");
  assert.equal(await a.page.getAttribute("#state", "data-state"), "connected");
  assert.match(await a.page.textContent("#state"), /^connected .*websocket/);

  // Something on every panel: a chat line each way and a notification.
  await b.page.fill("#text", "hi Ada!");
  await b.page.press("#text", "Enter");
  await a.page.locator("#messages li", { hasText: "hi Ada!" }).waitFor({ timeout: 20_000 });
  await a.page.fill("#text", "hello Ben");
  await a.page.press("#text", "Enter");
  await a.page.locator("#messages li.me", { hasText: "hello Ben" }).waitFor({ timeout: 20_000 });
  await b.page.fill("#push-to", "ada");
  await b.page.fill("#push-text", "your order shipped");
  await b.page.click("#push");
  await a.page.locator("#inbox li", { hasText: "your order shipped" }).waitFor({ timeout: 20_000 });
  // The online counts come from /dev/stats every 3 s.
  await a.page
    .locator("#counts", { hasText: "online: 2 users · 2 connections · 1 node" })
    .waitFor({ timeout: 20_000 });

  mkdirSync(OUT_DIR, { recursive: true });
  const file = join(OUT_DIR, "demo.png");
  await a.page.screenshot({ path: file, fullPage: true });
  t.diagnostic(`screenshot: ${file}`);

  assert.deepEqual(a.problems, [], "ada's page: no console error, no page error");
  assert.deepEqual(b.problems, [], "ben's page: no console error, no page error");
});
