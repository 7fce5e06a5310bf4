// Reconnect and resume across a node that goes away and comes back.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { FanoutClient } from "../../dist/fanout.js";
import { fanoutMissing, record, redisMissing, startFanout, startRedis } from "./support.mjs";

const skip = fanoutMissing();
if (skip) test("fanout integration tests", { skip }, () => {});
const skipRedis = skip ?? redisMissing();

describe("restart", { skip: skip ?? false }, () => {
  const cleanups = [];
  after(async () => {
    for (const f of cleanups.reverse()) await f();
  });

  /**
   * A draining node (SIGTERM) sends `bye shutdown` with a retry hint; the
   * client waits, reconnects to the restarted node and resumes from Redis
   * history: the messages published meanwhile arrive once, in order.
   */
  test("resume across a node restart with Redis", { skip: skipRedis ?? false }, async () => {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const drain = ["--drain-window", "1s", "--shutdown-grace", "1s"];
    const a = await startFanout({ redisUrl: redis.url, args: drain });
    cleanups.push(() => a.stop());
    const b = await startFanout({ redisUrl: redis.url, secret: a.secret, apiKey: a.apiKey });
    cleanups.push(() => b.stop());

    const c = new FanoutClient(a.url, {
      transport: "websocket",
      getToken: () => a.token({ sub: "rita", groups: ["r-*"] }),
      groups: ["r-1"],
      minReconnectDelay: 100,
      maxReconnectDelay: 500,
    });
    cleanups.push(() => c.close());
    const log = record(c);
    await c.connect();
    await log.until((l) => l.joined.length === 1, "the join");
    const send = (i) => b.publish({ to: { users: ["rita"], groups: ["r-1"] }, data: i });
    for (let i = 1; i <= 3; i++) await send(i);
    await log.until((l) => l.message.length === 3, "three messages through Redis");

    const gone = log.until(
      (l) => l.state.some((s) => s.state === "disconnected" && s.reason === "shutdown"),
      "the drain's bye",
    );
    await a.stop("SIGTERM");
    await gone;
    const bye = log.state.find((s) => s.reason === "shutdown");
    assert.ok(bye.retryInMs >= 0);
    for (let i = 4; i <= 6; i++) await send(i);
    await a.start();
    await log.until(() => c.state === "connected" && log.welcome.length >= 2, "the reconnect", 30_000);
    await send(7);
    await log.until((l) => l.message.length >= 7, "the missed and the live messages");
    assert.deepEqual(log.data(), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(new Set(log.message.map((m) => m.id)).size, 7);
    const resumed = log.recovery.filter((r) => r.reason === "resume");
    assert.ok(resumed.length >= 3);
    assert.ok(resumed.every((r) => r.recovered), JSON.stringify(log.recovery));
    c.close();
  });

  /**
   * Without Redis the history dies with the process: the client reconnects
   * to the restarted node and says `recovered: false`, so the app reloads.
   */
  test("history lost with the node: recovered false", async () => {
    const node = await startFanout();
    cleanups.push(() => node.stop());
    const c = new FanoutClient(node.url, {
      transport: "websocket",
      getToken: () => node.token({ sub: "sid" }),
      minReconnectDelay: 100,
      maxReconnectDelay: 500,
    });
    cleanups.push(() => c.close());
    const log = record(c);
    await c.connect();
    await node.publish({ to: { users: ["sid"] }, data: 1 });
    await log.until((l) => l.message.length === 1, "a message");
    await node.stop("SIGKILL");
    await log.until(() => c.state !== "connected", "the drop");
    await node.start();
    await log.until(() => c.state === "connected" && log.welcome.length === 2, "the reconnect", 30_000);
    const user = log.recovery.find((r) => r.channel === "user:sid");
    assert.deepEqual(user, { channel: "user:sid", recovered: false, reason: "resume" });
    await node.publish({ to: { users: ["sid"] }, data: 2 });
    await log.until((l) => l.message.length === 2, "a message after the restart");
    assert.equal(log.message[1].offset, 1);
    c.close();
  });
});
