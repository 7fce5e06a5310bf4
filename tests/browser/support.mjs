// Helpers for the browser tests: real fanout processes (`serve --dev`, so
// they serve the demo page) and redis-servers on free ports, a small TCP
// proxy standing in for a load balancer, headless Chromium driven by
// playwright-core, and the demo page's state (window.fanoutDemo).
//
// Tools: FANOUT_BIN (default ../../target/debug/fanout), CHROMIUM_BIN
// (default /usr/bin/chromium), REDIS_SERVER_BIN (default redis-server) and
// the npm package playwright-core (`npm ci` here). A missing one skips the
// tests with a message, unless FANOUT_REQUIRE_TOOLS is set: then they fail.
// Every process's output goes to target/browser/logs/.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
export const FANOUT_BIN = resolve(process.env.FANOUT_BIN || join(root, "target/debug/fanout"));
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const REDIS_BIN = process.env.REDIS_SERVER_BIN || "redis-server";
/** Where screenshots and process logs go (target/ is git-ignored). */
export const OUT_DIR = join(root, "target/browser");
const LOG_DIR = join(OUT_DIR, "logs");
const REQUIRE = Boolean(process.env.FANOUT_REQUIRE_TOOLS);

// === tools ===

let playwright = null;
try {
  playwright = await import("playwright-core");
} catch {
  // Reported by missingTools().
}

/**
 * Why these tests cannot run (a string), or null. With FANOUT_REQUIRE_TOOLS
 * set a missing tool throws instead, which fails the test file.
 */
export function missingTools({ redis = false } = {}) {
  const why = [];
  if (!playwright) why.push("the npm package playwright-core is not installed (run `npm ci` in tests/browser)");
  if (!existsSync(CHROMIUM_BIN)) why.push(`no Chromium at ${CHROMIUM_BIN} (apt-get install chromium, or set CHROMIUM_BIN)`);
  if (!existsSync(FANOUT_BIN)) {
    why.push(`no fanout binary at ${FANOUT_BIN} (cargo build --bin fanout, or set FANOUT_BIN)`);
  }
  if (redis && spawnSync(REDIS_BIN, ["--version"]).status !== 0) {
    why.push(`${REDIS_BIN} is not installed (set REDIS_SERVER_BIN)`);
  }
  if (why.length === 0) return null;
  const text = why.join("; ");
  if (REQUIRE) throw new Error(`${text}; FANOUT_REQUIRE_TOOLS is set`);
  console.log(`# skipping browser tests: ${text}`);
  return text;
}

// === waiting ===

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; fails after `timeoutMs`. */
export async function until(fn, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

// === processes ===

const children = new Set();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Spawns a tracked child whose output goes to target/browser/logs/<name>.log. */
function spawnLogged(bin, args, name, env = {}) {
  mkdirSync(LOG_DIR, { recursive: true });
  const file = join(LOG_DIR, `${name}.log`);
  const log = createWriteStream(file, { flags: "a" });
  log.write(`\n=== ${new Date().toISOString()} ${bin} ${args.join(" ")}\n`);
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  const tail = [];
  const keep = (chunk) => {
    log.write(chunk);
    tail.push(String(chunk));
    if (tail.length > 100) tail.shift();
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  child.on("exit", (code, signal) => {
    children.delete(child);
    log.end(`=== exited: code ${code} signal ${signal}\n`);
  });
  children.add(child);
  child.tail = () => tail.join("");
  child.logFile = file;
  return child;
}

/** A name for log files: the test file plus a counter. */
let counter = 0;
function logName(what) {
  counter += 1;
  return `${basename(process.argv[1] ?? "test", ".test.mjs")}-${counter}-${what}`;
}

/** A redis-server on a free port, without persistence. */
export async function startRedis() {
  const port = await freePort();
  const child = spawnLogged(
    REDIS_BIN,
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    logName("redis"),
  );
  await until(() => {
    if (exited(child)) throw new Error(`redis-server exited at start:\n${child.tail()}`);
    return child.tail().includes("Ready to accept connections");
  }, "redis-server to be ready");
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (exited(child)) return;
      const done = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await done;
    },
  };
}

/** The secret and API key that every node of one test shares. */
export function cluster() {
  return { secret: randomBytes(24).toString("hex"), apiKey: randomBytes(16).toString("hex") };
}

/**
 * A `fanout serve --dev` node on free ports (the same client port again
 * after a restart). Returns a handle: `url`, `port`, `api(path, init)`,
 * `publish(body)`, `stop(signal)` (resolves with the exit), `start()`.
 */
export async function startFanout({ nodeId, keys = cluster(), redisUrl, args = [] } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "fanout-browser-"));
  const node = {
    nodeId,
    port,
    url: `http://127.0.0.1:${port}`,
    keys,
    child: null,
    exit: null,
    async start() {
      const internal = await freePort();
      const argv = [
        "serve",
        "--dev",
        "--listen",
        `127.0.0.1:${port}`,
        "--internal-addr",
        `127.0.0.1:${internal}`,
        "--jwt-secret",
        keys.secret,
        "--api-keys",
        keys.apiKey,
        "--dev-file",
        join(dir, "dev.json"),
        "--node-id",
        nodeId,
        ...(redisUrl ? ["--redis-url", redisUrl] : []),
        ...args,
      ];
      const child = spawnLogged(FANOUT_BIN, argv, logName(nodeId), { FANOUT_LOG: process.env.FANOUT_LOG || "info" });
      node.child = child;
      node.exit = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
      await until(async () => {
        if (exited(child)) throw new Error(`fanout ${nodeId} exited at start (log: ${child.logFile}):\n${child.tail()}`);
        try {
          return (await fetch(`http://127.0.0.1:${internal}/readyz`)).ok;
        } catch {
          return false;
        }
      }, `fanout ${nodeId} to be ready`);
      return node;
    },
    async api(path, init = {}) {
      const res = await fetch(`${node.url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${keys.apiKey}`, "content-type": "application/json", ...(init.headers ?? {}) },
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${init.method ?? "GET"} ${node.url}${path}: ${res.status} ${text}`);
      return JSON.parse(text);
    },
    publish(body) {
      return node.api("/api/publish", { method: "POST", body: JSON.stringify(body) });
    },
    /** Sends `signal` and resolves with the exit ({code, signal}). */
    async stop(signal = "SIGKILL") {
      const child = node.child;
      if (!child) return null;
      if (!exited(child)) child.kill(signal);
      return node.exit;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return node.start();
}

// === a load balancer ===

/**
 * A TCP proxy on a free port in front of `ports`: each new connection goes
 * to the first enabled backend that accepts it, and lives and dies with
 * that backend connection. `disable(port)` takes a backend out of rotation
 * for new connections (what a load balancer does with a node whose
 * /readyz fails); `hold()` keeps new connections waiting until
 * `release()`; `routed` counts connections per backend.
 */
export async function startProxy(ports) {
  const backends = ports.map((port) => ({ port, enabled: true }));
  const sockets = new Set();
  const routed = new Map(ports.map((p) => [p, 0]));
  let held = null;
  const track = (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
  };
  const server = createServer((client) => {
    track(client);
    client.pause();
    if (held) held.push(client);
    else route(client);
  });
  const route = (client) => {
    const candidates = backends.filter((b) => b.enabled).map((b) => b.port);
    const tryNext = (i) => {
      if (client.destroyed) return;
      if (i >= candidates.length) {
        client.destroy();
        return;
      }
      const up = connect(candidates[i], "127.0.0.1");
      const failed = () => {
        up.destroy();
        tryNext(i + 1);
      };
      up.once("error", failed);
      up.once("connect", () => {
        up.off("error", failed);
        track(up);
        routed.set(candidates[i], routed.get(candidates[i]) + 1);
        if (client.destroyed) {
          up.destroy();
          return;
        }
        up.on("close", () => client.destroy());
        client.on("close", () => up.destroy());
        client.pipe(up);
        up.pipe(client);
        client.resume();
      });
    };
    tryNext(0);
  };
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    routed,
    disable(p) {
      for (const b of backends) if (b.port === p) b.enabled = false;
    },
    hold() {
      held ??= [];
    },
    release() {
      const waiting = held ?? [];
      held = null;
      for (const c of waiting) route(c);
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

// === the browser ===

export async function launchBrowser() {
  return playwright.chromium.launch({
    executablePath: CHROMIUM_BIN,
    // Root in a container: no user namespaces for Chromium's sandbox.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

/**
 * Runs in every page before its scripts: wraps WebSocket and EventSource so
 * that each connection the page opens is recorded in
 * `window.__fanoutTest.conns` with the time it was opened and, from its
 * frames, the time and content of its `welcome` and `bye` and the number
 * of `refresh` frames sent and `refreshed` frames received. Listeners are
 * added in the constructor, so they run before the library's handlers.
 */
function pageHooks() {
  const rec = { conns: [] };
  window.__fanoutTest = rec;
  const now = () => performance.timeOrigin + performance.now();
  const watch = (target, c) => {
    target.addEventListener("message", (e) => {
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      if (f && f.type === "welcome") c.welcome = { ...f, at: now() };
      if (f && f.type === "bye") c.bye = { ...f, at: now() };
      if (f && f.type === "refreshed") c.refreshed += 1;
    });
    target.addEventListener("error", () => {
      if (c.endedAt === undefined) c.endedAt = now();
    });
  };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(url, protocols) {
      super(url, protocols);
      const c = { kind: "websocket", url: String(url), openedAt: now(), refresh: 0, refreshed: 0 };
      rec.conns.push(c);
      this.__conn = c;
      watch(this, c);
      this.addEventListener("close", (e) => {
        c.closedAt = now();
        c.code = e.code;
      });
    }

    send(data) {
      if (typeof data === "string" && data.includes('"refresh"')) this.__conn.refresh += 1;
      return super.send(data);
    }
  };
  const ES = window.EventSource;
  if (ES) {
    window.EventSource = class extends ES {
      constructor(url, init) {
        super(url, init);
        const c = { kind: "sse", url: String(url), openedAt: now(), refresh: 0, refreshed: 0 };
        rec.conns.push(c);
        watch(this, c);
      }
    };
  }
}

/**
 * Opens the demo page of `base` (a node or the proxy) in a new browser
 * context (its own sessionStorage), with `params` as URL parameters.
 * `problems` collects console errors and uncaught page errors.
 */
export async function openDemo(browser, base, params = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 820 } });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  await page.addInitScript(pageHooks);
  const url = `${base}/?${new URLSearchParams(params)}`;
  await page.goto(url);
  return { page, context, problems, url, close: () => context.close() };
}

/** Waits until `fn(arg)` is truthy in the page; on timeout says what and shows the page's log. */
export async function waitPage(page, fn, arg, what, timeoutMs = 20_000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 50 });
  } catch (e) {
    let log = "";
    try {
      log = await page.evaluate(() =>
        JSON.stringify({ events: window.fanoutDemo?.events.slice(-30), conns: window.__fanoutTest?.conns }, null, 1),
      );
    } catch {
      // The page is gone.
    }
    throw new Error(`timed out waiting for ${what}: ${e.message.split("\n")[0]}\npage log: ${log}`);
  }
}

/** Waits until the page's client is connected and in `room`. */
export async function connected(page, room) {
  await waitPage(
    page,
    (room) => {
      const c = window.fanoutDemo?.client;
      return c && c.state === "connected" && (!room || c.positions()[`group:${room}`]);
    },
    room,
    `the page to be connected${room ? ` and in ${room}` : ""}`,
  );
}

/** The `data.seq` of the page's messages on `channel`, in arrival order. */
export function seqs(page, channel) {
  return page.evaluate(
    (ch) => window.fanoutDemo.messages.filter((m) => m.channel === ch).map((m) => m.data && m.data.seq),
    channel,
  );
}

/** [1, 2, ..., n] */
export const range = (n) => Array.from({ length: n }, (_, i) => i + 1);
