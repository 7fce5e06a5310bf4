// Helpers for the integration tests: a real fanout process (and, for the
// restart test, a real redis-server) on free ports, HS256 tokens minted
// with node:crypto, the backend API, and waiting for client events.
//
// FANOUT_BIN points at the server binary (default ../../target/debug/fanout,
// built by `cargo build --bin fanout`). When it is missing the tests skip,
// unless FANOUT_REQUIRE_TOOLS is set: then they fail. The same goes for
// redis-server (REDIS_SERVER_BIN overrides it).

import { spawn, spawnSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const FANOUT_BIN = process.env.FANOUT_BIN
  ? resolve(process.env.FANOUT_BIN)
  : resolve(here, "../../../../target/debug/fanout");
const REQUIRE = Boolean(process.env.FANOUT_REQUIRE_TOOLS);

/** Why the fanout tests cannot run, or null. Throws when tools are required. */
export function fanoutMissing() {
  if (existsSync(FANOUT_BIN)) return null;
  const why = `fanout binary not found at ${FANOUT_BIN} (run \`cargo build --bin fanout\` in the repository root, or set FANOUT_BIN)`;
  if (REQUIRE) throw new Error(`${why}; FANOUT_REQUIRE_TOOLS is set`);
  console.log(`# skipping fanout integration tests: ${why}`);
  return why;
}

export function redisBin() {
  return process.env.REDIS_SERVER_BIN || "redis-server";
}

/** Why the Redis tests cannot run, or null. Throws when tools are required. */
export function redisMissing() {
  const r = spawnSync(redisBin(), ["--version"], { encoding: "utf8" });
  if (r.status === 0) return null;
  const why = `${redisBin()} is not installed (set REDIS_SERVER_BIN)`;
  if (REQUIRE) throw new Error(`${why}; FANOUT_REQUIRE_TOOLS is set`);
  console.log(`# skipping Redis integration tests: ${why}`);
  return why;
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; fails after `timeoutMs`. */
export async function until(fn, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// === tokens ===

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");

export function mintToken(secret, claims) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64(claims);
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// === processes ===

const children = new Set();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * A fanout node on free ports (or the given `port`, for a restart). The
 * handle has `url`, `api(path, init)`, `publish(body)`, `token(claims)`,
 * `signal(sig)`, `stop()`, `restart()`.
 */
export async function startFanout(opts = {}) {
  const secret = opts.secret ?? randomBytes(24).toString("hex");
  const apiKey = opts.apiKey ?? randomBytes(16).toString("hex");
  const port = opts.port ?? (await freePort());
  const node = {
    secret,
    apiKey,
    port,
    url: `http://127.0.0.1:${port}`,
    child: null,
    log: [],
    async start() {
      const internal = await freePort();
      const args = [
        "serve",
        "--listen",
        `127.0.0.1:${port}`,
        "--internal-addr",
        `127.0.0.1:${internal}`,
        "--jwt-secret",
        secret,
        "--api-keys",
        apiKey,
        ...(opts.redisUrl ? ["--redis-url", opts.redisUrl] : []),
        ...(opts.args ?? []),
      ];
      const child = track(spawn(FANOUT_BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FANOUT_LOG: "warn" } }));
      const keep = (chunk) => {
        node.log.push(String(chunk));
        if (node.log.length > 200) node.log.shift();
      };
      child.stdout.on("data", keep);
      child.stderr.on("data", keep);
      node.child = child;
      await until(async () => {
        if (exited(child)) throw new Error(`fanout exited at start:\n${node.log.join("")}`);
        try {
          return (await fetch(`http://127.0.0.1:${internal}/readyz`)).ok;
        } catch {
          return false;
        }
      }, "fanout to be ready");
      return node;
    },
    token(claims = {}) {
      return mintToken(secret, { sub: "u1", exp: Math.floor(Date.now() / 1000) + 600, ...claims });
    },
    async api(path, init = {}) {
      const res = await fetch(`${node.url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json", ...(init.headers ?? {}) },
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${init.method ?? "GET"} ${path}: ${res.status} ${text}`);
      return JSON.parse(text);
    },
    publish(body) {
      return node.api("/api/publish", { method: "POST", body: JSON.stringify(body) });
    },
    signal(sig) {
      node.child?.kill(sig);
    },
    async stop(sig = "SIGKILL") {
      const child = node.child;
      if (!child || exited(child)) return;
      const done = new Promise((r) => child.once("exit", r));
      child.kill(sig);
      await done;
    },
  };
  return node.start();
}

/** A redis-server on a free port, without persistence. */
export async function startRedis() {
  const port = await freePort();
  const child = track(
    spawn(redisBin(), ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  const log = [];
  child.stdout.on("data", (c) => log.push(String(c)));
  child.stderr.on("data", (c) => log.push(String(c)));
  await until(() => {
    if (exited(child)) throw new Error(`redis-server exited:\n${log.join("")}`);
    return log.join("").includes("Ready to accept connections");
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

// === client events ===

/** Records every event of a client, for assertions and waiting. */
export function record(client) {
  const log = { message: [], state: [], recovery: [], error: [], welcome: [], joined: [], left: [] };
  const offs = Object.keys(log).map((name) => client.on(name, (e) => log[name].push(e)));
  log.off = () => offs.forEach((f) => f());
  log.until = (fn, what, timeoutMs) => until(() => fn(log), what, timeoutMs);
  log.data = () => log.message.map((m) => m.data);
  return log;
}
