// A page behind a load balancer (a TCP proxy in front of two nodes on one
// Redis) while a backend publishes steadily, with a sequence number in
// each message, to the page's user and to its group through the other
// node's API. Its node dies (SIGKILL) or drains (SIGTERM); the page lands
// on the other node and resumes: every sequence number exactly once, in
// order, on both channels. A drain's `bye` hint is honoured.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
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
  startProxy,
  startRedis,
  until,
  waitPage,
} from "./support.mjs";

const skip = missingTools({ redis: true });

describe("a page's node goes away", { skip: skip ?? false }, () => {
  let browser;
  const cleanups = [];
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    for (const f of cleanups.reverse()) await f();
    await browser?.close();
  });

  /**
   * Two nodes on a Redis behind a proxy (node 1 first), and a page through
   * the proxy on node 1, in `room`.
   */
  async function setUp(uid, room, n1Args = []) {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const keys = cluster();
    // The publisher sends some 30 messages a second per channel and a
    // drain's hint may keep the page away for up to the drain window:
    // more than the default history of 100 messages could fall out of the
    // window, and the resume would then rightly say `recovered: false`.
    const history = ["--history-user-size", "1000", "--history-group-size", "1000"];
    const n1 = await startFanout({ nodeId: "n1", keys, redisUrl: redis.url, args: [...history, ...n1Args] });
    const n2 = await startFanout({ nodeId: "n2", keys, redisUrl: redis.url, args: history });
    cleanups.push(() => n1.stop(), () => n2.stop(), () => n1.cleanup(), () => n2.cleanup());
    const proxy = await startProxy([n1.port, n2.port]);
    cleanups.push(() => proxy.stop());
    const p = await openDemo(browser, proxy.url, { uid, room, transport: "websocket" });
    cleanups.push(p.close);
    await connected(p.page, room);
    assert.equal(await p.page.evaluate(() => window.fanoutDemo.client.welcome.node), "n1");
    return { n1, n2, proxy, p };
  }

  /**
   * Publishes seq 1, 2, … to `user:<uid>` and to `group:<room>` through
   * `node`, one after the other, until `stop()`; resolves with the last seq.
   */
  function publisher(node, uid, room) {
    let running = true;
    let seq = 0;
    /** When each seq was answered on both channels (ms since the epoch). */
    const at = [];
    let error = null;
    const done = (async () => {
      while (running) {
        const n = seq + 1;
        await node.publish({ to: { users: [uid] }, event: "seq", data: { seq: n, text: `user ${n}` } });
        await node.publish({ to: { groups: [room] }, event: "seq", data: { seq: n, text: `group ${n}` } });
        seq = n;
        at.push(Date.now());
        await sleep(20);
      }
      return seq;
    })();
    done.catch((e) => {
      error = e;
    });
    return {
      get seq() {
        return seq;
      },
      get error() {
        return error;
      },
      /** How many seqs were answered between the two times (ms since the epoch). */
      between(from, to) {
        return at.filter((t) => t > from && t < to).length;
      },
      async stop() {
        running = false;
        return done;
      },
    };
  }

  /** Waits until seq `n` was published; fails when the publisher does. */
  function published(pub, n) {
    return until(() => {
      if (pub.error) throw pub.error;
      return pub.seq >= n;
    }, `seq ${n} to be published`);
  }

  /** Every seq 1..last on both channels, once, in order; every resume recovered. */
  async function checkDelivery(page, uid, room, last) {
    for (const channel of [`user:${uid}`, `group:${room}`]) {
      await waitPage(
        page,
        ([ch, n]) => window.fanoutDemo.messages.filter((m) => m.channel === ch).length >= n,
        [channel, last],
        `${last} messages on ${channel}`,
      );
      // Anything extra (a duplicate) would have arrived with the rest.
      await sleep(200);
      assert.deepEqual(await seqs(page, channel), range(last), `seqs on ${channel}`);
    }
    const recoveries = await page.evaluate(() => window.fanoutDemo.recoveries);
    const channels = recoveries.map((r) => r.channel).sort();
    assert.deepEqual(channels, ["all", `group:${room}`, `user:${uid}`], JSON.stringify(recoveries));
    assert.ok(recoveries.every((r) => r.recovered), JSON.stringify(recoveries));
  }

  test("SIGKILL of the page's node: every message once, in order, after the reconnect", { timeout: 120_000 }, async () => {
    const uid = "kate";
    const room = "killroom";
    const { n1, n2, proxy, p } = await setUp(uid, room);
    const pub = publisher(n2, uid, room);
    try {
      await published(pub, 10);
      // New connections wait until 10 more were published: those reach
      // the page only through the resume.
      proxy.hold();
      const killed = await n1.stop("SIGKILL");
      assert.equal(killed.signal, "SIGKILL");
      const away = pub.seq;
      await waitPage(p.page, () => window.fanoutDemo.client.state !== "connected", null, "the page to see the kill");
      await published(pub, away + 10);
      proxy.release();
      await waitPage(p.page, () => window.fanoutDemo.client.welcome?.node === "n2", null, "the page on node 2");
      await published(pub, pub.seq + 10);
    } finally {
      proxy.release();
      await pub.stop();
    }
    const last = pub.seq;
    await checkDelivery(p.page, uid, room, last);
    const states = await p.page.evaluate(() => window.fanoutDemo.states);
    assert.equal(states.filter((s) => s.state === "connected").length, 2, JSON.stringify(states));
  });

  test("SIGTERM drain of the page's node: every message once, in order, and the bye hint honoured", { timeout: 120_000 }, async (t) => {
    const uid = "dora";
    const room = "drainroom";
    const { n1, n2, proxy, p } = await setUp(uid, room, ["--drain-window", "4s", "--shutdown-grace", "2s"]);
    const pub = publisher(n2, uid, room);
    let exit;
    try {
      await published(pub, 10);
      // A draining node fails /readyz: the load balancer sends new connections elsewhere.
      proxy.disable(n1.port);
      exit = n1.stop("SIGTERM");
      await waitPage(p.page, () => window.fanoutDemo.client.welcome?.node === "n2", null, "the page on node 2");
      const at = pub.seq;
      await published(pub, at + 10);
    } finally {
      await pub.stop();
    }
    const last = pub.seq;
    await checkDelivery(p.page, uid, room, last);
    assert.deepEqual(await exit, { code: 0, signal: null }, "node 1 exits cleanly after its drain");

    // The page's connections, as its WebSocket constructor saw them: the
    // one to node 1 that got the bye, then the next attempt (normally
    // the one to node 2 that stays).
    const conns = await p.page.evaluate(() => window.__fanoutTest.conns);
    const [first, second] = conns;
    assert.equal(first.welcome.node, "n1");
    assert.equal(conns.at(-1).welcome.node, "n2");
    assert.ok(first.bye, "node 1 said bye");
    assert.equal(first.bye.reason, "shutdown");
    assert.equal(first.bye.reconnect, true);
    assert.equal(typeof first.bye.retry_after_ms, "number");
    const waited = second.openedAt - first.bye.at;
    const missed = pub.between(first.bye.at, conns.at(-1).welcome.at);
    t.diagnostic(
      `bye retry_after_ms ${first.bye.retry_after_ms}; next connection opened ${waited.toFixed(1)} ms after it; ` +
        `${conns.length} connections; ${missed} seqs published between the bye and the welcome on node 2`,
    );
    assert.ok(
      waited >= first.bye.retry_after_ms,
      `the next connection opened ${waited} ms after the bye, before its retry_after_ms ${first.bye.retry_after_ms}`,
    );
    const states = await p.page.evaluate(() => window.fanoutDemo.states);
    assert.ok(states.some((s) => s.state === "disconnected" && s.reason === "shutdown"), JSON.stringify(states));
  });
});
