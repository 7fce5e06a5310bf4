// @fanout/client 0.1.0 (Apache-2.0). Built from clients/js/src; do not edit.

// src/backoff.ts
function backoffDelay(attempt, minMs, maxMs, hintMs = 0, random = Math.random) {
  const exp = Math.min(30, Math.max(0, attempt));
  const ceiling = Math.min(maxMs, minMs * 2 ** exp);
  const jittered = Math.floor(random() * ceiling);
  return Math.max(hintMs, jittered);
}

// src/dedupe.ts
var RecentIds = class {
  constructor(capacity) {
    this.capacity = capacity;
    // A Set iterates in insertion order, so its first entry is the oldest.
    this.ids = /* @__PURE__ */ new Set();
  }
  /** Records `id`; `false` when it was already there (a duplicate). */
  add(id) {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) {
      const oldest = this.ids.values().next().value;
      this.ids.delete(oldest);
    }
    return true;
  }
  has(id) {
    return this.ids.has(id);
  }
  get size() {
    return this.ids.size;
  }
};

// src/emitter.ts
var Emitter = class {
  constructor() {
    this.handlers = /* @__PURE__ */ new Map();
  }
  on(name, handler) {
    let set = this.handlers.get(name);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.handlers.set(name, set);
    }
    const entry = (e) => handler(e);
    set.add(entry);
    return () => {
      set.delete(entry);
    };
  }
  count(name) {
    return this.handlers.get(name)?.size ?? 0;
  }
  /** Calls every handler of `name`; returns the errors they threw. */
  emit(name, event) {
    const set = this.handlers.get(name);
    if (!set || set.size === 0) return [];
    const errors = [];
    for (const h of [...set]) {
      try {
        h(event);
      } catch (e) {
        errors.push(e);
      }
    }
    return errors;
  }
  clear() {
    this.handlers.clear();
  }
};

// src/errors.ts
var FanoutError = class _FanoutError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "FanoutError";
    this.code = code;
    if (extra.frame !== void 0) this.frame = extra.frame;
    if (extra.sent !== void 0) this.sent = extra.sent;
    if (extra.group !== void 0) this.group = extra.group;
    if (extra.cause !== void 0) this.cause = extra.cause;
  }
  /** An error from a server `error` frame. */
  static fromFrame(frame, group) {
    return new _FanoutError(frame.code, frame.message, group === void 0 ? { frame } : { frame, group });
  }
};

// src/heartbeat.ts
var HeartbeatWatch = class {
  constructor() {
    this.lastRx = 0;
    /** A ping went out since the last activity. */
    this.pinged = false;
  }
  /** Something arrived on the connection. */
  activity() {
    this.lastRx = Date.now();
    this.pinged = false;
  }
  /**
   * Watches the connection: `ping` (when given) after one silent
   * `intervalMs`, `dead` after `tolerance` of them. Replaces any earlier watch.
   */
  start(intervalMs, tolerance, ping, dead) {
    this.stop();
    if (!(intervalMs > 0)) return;
    this.activity();
    const deadline = intervalMs * tolerance;
    const check = () => {
      this.timer = void 0;
      const idle = Date.now() - this.lastRx;
      if (idle >= deadline) {
        dead();
        return;
      }
      if (idle >= intervalMs && !this.pinged && ping) {
        this.pinged = true;
        ping();
      }
      const next = idle < intervalMs ? intervalMs - idle : deadline - idle;
      this.timer = setTimeout(check, Math.max(next, 10));
    };
    this.timer = setTimeout(check, intervalMs);
  }
  stop() {
    clearTimeout(this.timer);
    this.timer = void 0;
  }
};

// src/url.ts
function deriveEndpoints(url, base) {
  let u;
  try {
    u = base === void 0 ? new URL(url) : new URL(url, base);
  } catch {
    throw new TypeError(`fanout: not a URL: \`${url}\``);
  }
  let secure;
  switch (u.protocol) {
    case "http:":
    case "ws:":
      secure = false;
      break;
    case "https:":
    case "wss:":
      secure = true;
      break;
    default:
      throw new TypeError(`fanout: unsupported URL scheme \`${u.protocol}\` (use http(s):// or ws(s)://)`);
  }
  let path = u.pathname.replace(/\/+$/, "");
  if (path.endsWith("/ws")) path = path.slice(0, -3);
  else if (path.endsWith("/sse")) path = path.slice(0, -4);
  const rest = `${u.host}${path}`;
  const query = u.search;
  return {
    websocket: `${secure ? "wss" : "ws"}://${rest}/ws${query}`,
    sse: `${secure ? "https" : "http"}://${rest}/sse${query}`
  };
}
function withQuery(url, params) {
  const u = new URL(url);
  for (const [key, value] of Object.entries(params)) {
    if (value !== void 0 && value !== "") u.searchParams.set(key, value);
  }
  return u.toString();
}

// src/options.ts
var NAME = /^[A-Za-z0-9_.:@=+\/-]{1,128}$/;
function isGroupName(group) {
  return typeof group === "string" && NAME.test(group);
}
function resolveOptions(url, options) {
  const g = globalThis;
  const endpoints = deriveEndpoints(url, g.location?.href);
  const { token, getToken } = options;
  let tokenFn;
  if (getToken) tokenFn = async () => getToken();
  else if (typeof token === "string") tokenFn = async () => token;
  else throw new TypeError("fanout: give `token` or `getToken`");
  const mode = options.transport ?? "auto";
  const WS = options.WebSocket ?? g.WebSocket;
  const ES = options.EventSource === null ? void 0 : options.EventSource ?? g.EventSource;
  const fetchFn = options.fetch ?? (g.fetch ? g.fetch.bind(globalThis) : void 0);
  const hasSse = ES !== void 0 || fetchFn !== void 0;
  if (mode === "websocket" && !WS) {
    throw new FanoutError("not_supported", "fanout: no WebSocket implementation (pass the `WebSocket` option)");
  }
  if (mode === "sse" && !hasSse) throw new FanoutError("not_supported", "fanout: no EventSource or fetch for SSE");
  if (mode === "auto" && !WS && !hasSse) {
    throw new FanoutError("not_supported", "fanout: neither WebSocket nor EventSource/fetch is available");
  }
  const groups = options.groups ?? [];
  for (const group of groups) {
    if (!isGroupName(group)) throw new FanoutError("invalid_group", `fanout: not a group name: \`${String(group)}\``);
  }
  const minDelay = Math.max(0, options.minReconnectDelay ?? 500);
  return {
    endpoints,
    getToken: tokenFn,
    canRefresh: getToken !== void 0,
    mode,
    WS,
    ES,
    fetchFn,
    minDelay,
    maxDelay: Math.max(minDelay, options.maxReconnectDelay ?? 3e4),
    connectTimeout: options.connectTimeout ?? 15e3,
    requestTimeout: options.requestTimeout ?? 1e4,
    tolerance: Math.max(1.5, options.heartbeatTolerance ?? 2),
    maxQueued: Math.max(0, options.maxQueuedPublishes ?? 100),
    dedupeSize: Math.max(1, options.dedupeSize ?? 1e3),
    groups: [...groups],
    positions: options.positions
  };
}

// src/policy.ts
function closeDecision(bye, end) {
  if (bye) {
    const hint = Number.isFinite(bye.retry_after_ms) ? Math.max(0, Math.floor(bye.retry_after_ms)) : 0;
    return { stop: bye.reconnect === false, reason: bye.reason, hintMs: hint };
  }
  if (end.code !== void 0 && end.code >= 3500 && end.code <= 3999) {
    return { stop: true, reason: `close ${end.code}`, hintMs: 0 };
  }
  return { stop: false, reason: end.reason ?? "connect_failed", hintMs: 0 };
}
var TOKEN_REFUSALS = /* @__PURE__ */ new Set(["invalid_token", "token_expired", "auth_required"]);
var GROUP_REFUSALS = /* @__PURE__ */ new Set(["forbidden", "invalid_group", "too_many_groups"]);
function sseRefusal(end, unconfirmed) {
  const code = end.error?.code;
  if (code === void 0) {
    return { action: unconfirmed ? "drop_groups" : "retry", reason: "connect_refused" };
  }
  if (TOKEN_REFUSALS.has(code)) return { action: "stop", reason: "unauthorized" };
  if (GROUP_REFUSALS.has(code)) return { action: unconfirmed ? "drop_groups" : "stop", reason: code };
  if (code === "origin_not_allowed") return { action: "stop", reason: code };
  if (code === "invalid_position") return { action: "reset_positions", reason: code };
  return { action: "retry", reason: code };
}

// src/positions.ts
var PositionTracker = class {
  constructor(initial) {
    this.map = /* @__PURE__ */ new Map();
    if (initial) {
      for (const [channel, p] of Object.entries(initial)) {
        if (isPosition(p)) this.map.set(channel, { offset: p.offset, epoch: p.epoch });
      }
    }
  }
  get(channel) {
    const p = this.map.get(channel);
    return p && { offset: p.offset, epoch: p.epoch };
  }
  has(channel) {
    return this.map.has(channel);
  }
  set(channel, p) {
    this.map.set(channel, { offset: p.offset, epoch: p.epoch });
  }
  delete(channel) {
    this.map.delete(channel);
  }
  channels() {
    return [...this.map.keys()];
  }
  /** A copy of every position, by channel. */
  snapshot(filter) {
    const out = {};
    for (const [channel, p] of this.map) {
      if (!filter || filter(channel)) out[channel] = { offset: p.offset, epoch: p.epoch };
    }
    return out;
  }
  /**
   * Moves the channel's position to a message's, unless the message is
   * one the client already had.
   */
  observe(m) {
    if (typeof m.offset !== "number" || typeof m.epoch !== "string") return "live";
    const p = this.map.get(m.channel);
    this.map.set(m.channel, { offset: m.offset, epoch: m.epoch });
    if (!p) return "next";
    if (p.epoch !== m.epoch) return "epoch";
    if (m.offset <= p.offset) {
      this.map.set(m.channel, p);
      return "duplicate";
    }
    return m.offset === p.offset + 1 ? "next" : "gap";
  }
  /**
   * Takes the position a `welcome` or `joined` gives for a channel. Those
   * name the channel's top; when the client resumed the channel and
   * `recovered` is true, the missed messages up to that top are still to
   * come, so the client keeps its own position and lets them move it (a
   * disconnect before they arrive then resumes from before them).
   *
   * Returns true when the channel had a position of another epoch and the
   * server said nothing about recovery: the history was lost.
   */
  start(channel, top, recovered) {
    const p = this.map.get(channel);
    if (recovered !== false && p && p.epoch === top.epoch) {
      if (recovered !== true && p.offset < top.offset) this.set(channel, top);
      return false;
    }
    this.set(channel, top);
    return recovered === void 0 && p !== void 0 && p.epoch !== top.epoch;
  }
};
function isPosition(p) {
  if (typeof p !== "object" || p === null) return false;
  const { offset, epoch } = p;
  return typeof offset === "number" && Number.isSafeInteger(offset) && offset >= 0 && typeof epoch === "string" && /^[A-Za-z0-9_-]{1,64}$/.test(epoch);
}
function formatSince(positions) {
  return Object.keys(positions).sort().map((channel) => {
    const p = positions[channel];
    return `${channel}~${p.offset}~${p.epoch}`;
  }).join(",");
}
function parseSince(text) {
  const out = {};
  if (text.trim() === "") return out;
  for (const part of text.split(",")) {
    const fields = part.trim().split("~");
    if (fields.length !== 3) throw new TypeError(`not a position: \`${part}\``);
    const [channel, offsetText, epoch] = fields;
    const offset = /^\d+$/.test(offsetText) ? Number(offsetText) : NaN;
    const p = { offset, epoch };
    if (channel === "" || !isPosition(p)) throw new TypeError(`not a position: \`${part}\``);
    out[channel] = p;
  }
  return out;
}

// src/requests.ts
function settled() {
  let waiter;
  const promise = new Promise((resolve, reject) => {
    waiter = { resolve, reject };
  });
  promise.catch(() => {
  });
  return { promise, waiter };
}
function rejected(error) {
  const p = Promise.reject(error);
  p.catch(() => {
  });
  return p;
}
var Requests = class {
  constructor() {
    this.joins = /* @__PURE__ */ new Map();
    this.leaves = /* @__PURE__ */ new Map();
    /** `join`/`leave` frames sent on this connection, awaiting a reply: id → group. */
    this.sentJoins = /* @__PURE__ */ new Map();
    this.sentLeaves = /* @__PURE__ */ new Map();
    /** Publishes waiting for a connection, oldest first. */
    this.queue = [];
    /** Publishes sent on this connection, awaiting their `ack`: id → publish. */
    this.inflight = /* @__PURE__ */ new Map();
  }
  // === join / leave ===
  waitJoin(group) {
    const { promise, waiter } = settled();
    push(this.joins, group, waiter);
    return promise;
  }
  waitLeave(group) {
    const { promise, waiter } = settled();
    push(this.leaves, group, waiter);
    return promise;
  }
  sentJoin(id, group) {
    this.sentJoins.set(id, group);
  }
  sentLeave(id, group) {
    this.sentLeaves.set(id, group);
  }
  /** Groups with a join() waiting. */
  joinsWaiting() {
    return [...this.joins.keys()];
  }
  resolveJoins(group, frame) {
    for (const w of take(this.joins, group)) w.resolve(frame);
  }
  /** Rejects the group's join() calls; returns how many there were. */
  rejectJoins(group, error) {
    const waiters = take(this.joins, group);
    for (const w of waiters) w.reject(error);
    return waiters.length;
  }
  resolveLeaves(group, frame) {
    for (const w of take(this.leaves, group)) w.resolve(frame);
  }
  /** A reply (`joined`/`left`) arrived: its id is answered. */
  answered(id) {
    if (id === void 0) return;
    this.sentJoins.delete(id);
    this.sentLeaves.delete(id);
  }
  /**
   * Routes an `error` frame with an id to its request. Returns what it
   * was, so the client can follow up; `null` when no request had that id.
   */
  fail(frame) {
    const id = frame.id;
    if (id === void 0) return null;
    const joinGroup = this.sentJoins.get(id);
    if (joinGroup !== void 0) {
      this.sentJoins.delete(id);
      return { kind: "join", group: joinGroup };
    }
    const leaveGroup = this.sentLeaves.get(id);
    if (leaveGroup !== void 0) {
      this.sentLeaves.delete(id);
      for (const w of take(this.leaves, leaveGroup)) w.reject(FanoutError.fromFrame(frame, leaveGroup));
      return { kind: "leave", group: leaveGroup };
    }
    const p = this.inflight.get(id);
    if (p) {
      this.inflight.delete(id);
      clearTimeout(p.timer);
      p.reject(FanoutError.fromFrame(frame));
      return { kind: "publish" };
    }
    return null;
  }
  // === publish ===
  get queued() {
    return this.queue.length;
  }
  enqueue(p) {
    this.queue.push(p);
  }
  /** Takes every queued publish, oldest first. */
  takeQueue() {
    const q = this.queue;
    this.queue = [];
    return q;
  }
  sentPublish(id, p) {
    p.id = id;
    p.sent = true;
    this.inflight.set(id, p);
  }
  /** The socket refused the frame (it is closing): back to the front of the queue. */
  unsend(p) {
    if (p.id !== void 0) this.inflight.delete(p.id);
    delete p.id;
    p.sent = false;
    this.queue.push(p);
    this.queue.sort((a, b) => a.seq - b.seq);
  }
  ack(frame) {
    const p = frame.id === void 0 ? void 0 : this.inflight.get(frame.id);
    if (!p || frame.id === void 0) return;
    this.inflight.delete(frame.id);
    clearTimeout(p.timer);
    p.resolve(frame);
  }
  /** The publish's requestTimeout passed: forget it and reject with `timeout`. */
  timedOut(p) {
    this.queue = this.queue.filter((q) => q !== p);
    if (p.id !== void 0) this.inflight.delete(p.id);
    const message = p.sent ? "no ack in time; the publish may or may not have gone out" : "no connection in time; the publish was not sent";
    p.reject(new FanoutError("timeout", message, { sent: p.sent }));
  }
  // === endings ===
  /**
   * The connection ended: sent publishes reject with `disconnected`, ids
   * are forgotten, and leave() calls are done (a new connection starts in
   * no group). join() calls wait for the rejoin.
   */
  connectionLost() {
    const lost = [...this.inflight.values()];
    this.inflight.clear();
    for (const p of lost) {
      clearTimeout(p.timer);
      p.reject(
        new FanoutError("disconnected", "the connection dropped before the ack; the publish may or may not have gone out", {
          sent: true
        })
      );
    }
    this.sentJoins.clear();
    this.sentLeaves.clear();
    this.resolveAllLeaves();
  }
  /** Rejects every publish still queued (SSE cannot publish). */
  rejectQueue(error) {
    for (const p of this.takeQueue()) {
      clearTimeout(p.timer);
      p.reject(error());
    }
  }
  /** The client stopped: everything settles now. */
  stop(error) {
    this.sentJoins.clear();
    this.sentLeaves.clear();
    const publishes = [...this.inflight.values(), ...this.takeQueue()];
    this.inflight.clear();
    for (const p of publishes) {
      clearTimeout(p.timer);
      p.reject(error());
    }
    const joins = [...this.joins];
    this.joins.clear();
    for (const [group, waiters] of joins) for (const w of waiters) w.reject(error(group));
    this.resolveAllLeaves();
  }
  resolveAllLeaves() {
    const leaves = [...this.leaves];
    this.leaves.clear();
    for (const [group, waiters] of leaves) for (const w of waiters) w.resolve({ type: "left", group });
  }
  /** Leaves waiting for groups not in `keep` (SSE: the new stream left them). */
  resolveLeavesExcept(keep) {
    for (const group of [...this.leaves.keys()]) {
      if (!keep.has(group)) this.resolveLeaves(group, { type: "left", group });
    }
  }
};
function push(map, key, value) {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}
function take(map, key) {
  const list = map.get(key) ?? [];
  map.delete(key);
  return list;
}

// src/transport.ts
var WS_OPEN = 1;
function parseFrame(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  return typeof value.type === "string" ? value : null;
}
function describe(e) {
  return e instanceof Error ? e.message : String(e);
}
function openWebSocket(WS, url, h) {
  let done = false;
  let opened = false;
  let ws = null;
  const finish = (end) => {
    if (done) return;
    done = true;
    detach();
    h.end(end);
  };
  const detach = () => {
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
  };
  try {
    ws = new WS(url);
  } catch (e) {
    const reason = describe(e);
    Promise.resolve().then(() => finish({ opened: false, reason }));
  }
  if (ws) {
    const socket = ws;
    socket.onopen = () => {
      if (done) return;
      opened = true;
      h.open();
    };
    socket.onmessage = (ev) => {
      if (done) return;
      h.activity();
      if (typeof ev.data !== "string") return;
      const frame = parseFrame(ev.data);
      if (frame) h.frame(frame);
    };
    socket.onerror = () => {
    };
    socket.onclose = (ev) => finish({ opened, code: ev.code, reason: ev.reason || `close ${ev.code}` });
  }
  return {
    kind: "websocket",
    heartbeats: false,
    send(text) {
      if (done || !ws || ws.readyState !== WS_OPEN) return false;
      try {
        ws.send(text);
        return true;
      } catch {
        return false;
      }
    },
    close() {
      if (done) return;
      done = true;
      detach();
      try {
        ws?.close(1e3);
      } catch {
      }
    }
  };
}
var SseParser = class {
  constructor(onEvent, onComment = () => {
  }) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.lastId = "";
  }
  push(chunk) {
    this.buffer += chunk;
    let start = 0;
    for (; ; ) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      let end;
      if (cr === -1 && lf === -1) break;
      if (cr === -1 || lf !== -1 && lf < cr) end = lf;
      else end = cr;
      if (end === cr && cr === this.buffer.length - 1) break;
      const line = this.buffer.slice(start, end);
      start = end + (end === cr && this.buffer[cr + 1] === "\n" ? 2 : 1);
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
  }
  line(line) {
    if (line === "") {
      if (this.data.length > 0) {
        const e = { data: this.data.join("\n"), event: this.event || "message", id: this.lastId };
        this.data = [];
        this.event = "";
        this.onEvent(e);
      } else {
        this.event = "";
      }
      return;
    }
    if (line.startsWith(":")) {
      this.onComment(line.slice(1));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.data.push(value);
        break;
      case "event":
        this.event = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
  }
};
function openFetchStream(fetchFn, url, headers, h) {
  const abort = new AbortController();
  let done = false;
  const finish = (end) => {
    if (done) return;
    done = true;
    abort.abort();
    h.end(end);
  };
  const run = async () => {
    let res;
    try {
      res = await fetchFn(url, {
        headers: { accept: "text/event-stream", ...headers },
        signal: abort.signal,
        cache: "no-store"
      });
    } catch (e) {
      finish({ opened: false, reason: describe(e) });
      return;
    }
    if (done) return;
    const type = res.headers.get("content-type") ?? "";
    if (res.status !== 200 || !type.startsWith("text/event-stream") || !res.body) {
      let error;
      try {
        const body = JSON.parse(await res.text());
        if (body.error && typeof body.error.code === "string") {
          error = { code: body.error.code, message: String(body.error.message ?? "") };
        }
      } catch {
      }
      const end = { opened: false, status: res.status, reason: `HTTP ${res.status}` };
      if (error) end.error = error;
      finish(end);
      return;
    }
    h.open();
    const parser = new SseParser(
      (e) => {
        if (done) return;
        const frame = parseFrame(e.data);
        if (frame) h.frame(frame);
      },
      () => {
      }
    );
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    try {
      while (!done) {
        const { done: eof, value } = await reader.read();
        if (done) break;
        if (eof) {
          finish({ opened: true, reason: "stream ended" });
          break;
        }
        h.activity();
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (e) {
      finish({ opened: true, reason: describe(e) });
    } finally {
      reader.cancel().catch(() => {
      });
    }
  };
  run().catch((e) => finish({ opened: true, reason: describe(e) }));
  return {
    kind: "sse",
    heartbeats: true,
    send: () => false,
    close() {
      if (done) return;
      done = true;
      abort.abort();
    }
  };
}
var ES_CLOSED = 2;
function openEventSource(ES, url, h) {
  let done = false;
  let opened = false;
  const es = new ES(url);
  const stop = () => {
    es.onopen = es.onmessage = es.onerror = null;
    es.close();
  };
  es.onopen = () => {
    if (done) return;
    opened = true;
    h.open();
  };
  es.onmessage = (ev) => {
    if (done) return;
    h.activity();
    const frame = parseFrame(ev.data);
    if (frame) h.frame(frame);
  };
  es.onerror = () => {
    if (done) return;
    const refused = !opened && es.readyState === ES_CLOSED;
    done = true;
    stop();
    const end = { opened, reason: refused ? "refused" : "stream ended" };
    if (refused) end.refused = true;
    h.end(end);
  };
  return {
    kind: "sse",
    // Heartbeats are comment lines, which EventSource does not show.
    heartbeats: false,
    send: () => false,
    close() {
      if (done) return;
      done = true;
      stop();
    }
  };
}

// src/client.ts
var FanoutClient = class {
  /**
   * @param url the node's base URL (`https://push.example.com`), or its
   *   WebSocket (`wss://…/ws`) or SSE (`https://…/sse`) URL.
   */
  constructor(url, options = {}) {
    this.emitter = new Emitter();
    /** Groups the application wants to be in. */
    this.wanted = /* @__PURE__ */ new Set();
    this.current = "disconnected";
    /** connect() was called and neither close() nor a stop followed. */
    this.running = false;
    /** The current attempt; see the invariants above. */
    this.gen = 0;
    this.conn = null;
    this.attemptTransport = null;
    this.opened = false;
    this.welcomeFrame = null;
    this.bye = null;
    /** The last `error` frame without an `id` of this attempt (auth failures precede `bye`). */
    this.lastError = null;
    /** Attempts since the last `welcome`. */
    this.failures = 0;
    /** In `auto` mode: the transport to try next (the last one that worked). */
    this.autoTransport = "websocket";
    /** The next frame `id` (unique across connections, so a late reply never matches). */
    this.nextId = 1;
    /** Order of publish() calls. */
    this.nextSeq = 1;
    /** The current token's expiry, Unix seconds (welcome/refreshed). */
    this.exp = 0;
    this.heartbeat = new HeartbeatWatch();
    this.connectWaiters = [];
    this.requests = new Requests();
    /** The id of the `refresh` frame awaiting its reply. */
    this.refreshId = null;
    /** SSE: the groups of the current request, and those its `welcome` confirmed. */
    this.sseRequested = /* @__PURE__ */ new Set();
    this.sseConfirmed = /* @__PURE__ */ new Set();
    this.o = resolveOptions(url, options);
    this.autoTransport = this.o.WS ? "websocket" : "sse";
    this.seen = new RecentIds(this.o.dedupeSize);
    this.tracker = new PositionTracker(this.o.positions);
    for (const group of this.o.groups) this.wanted.add(group);
  }
  // === public API ===
  /** The connection state. */
  get state() {
    return this.current;
  }
  /** The transport of the current connection, or null. */
  get transport() {
    return this.welcomeFrame ? this.attemptTransport : null;
  }
  /** The current connection's `welcome`, or null. */
  get welcome() {
    return this.welcomeFrame;
  }
  /** The groups the client is in, or will be put in when it connects. */
  get groups() {
    return [...this.wanted];
  }
  /** Where the client is on each channel; pass it as `positions` to resume in a new client. */
  positions() {
    return this.tracker.snapshot();
  }
  /**
   * Starts connecting (and reconnecting until `close()` or a `bye` that
   * forbids it). Resolves at the first `welcome`; rejects with `closed` (or
   * the stop reason) when the client stops before that.
   */
  connect() {
    if (this.current === "connected") return Promise.resolve();
    const { promise, waiter } = settled();
    this.connectWaiters.push(waiter);
    if (!this.running) {
      this.running = true;
      this.failures = 0;
      this.attempt("connect");
    }
    return promise;
  }
  /**
   * Stops for good: closes the connection, clears every timer, rejects
   * pending requests with `closed`. `connect()` may start the client again.
   */
  close() {
    if (!this.running && this.current === "closed") return;
    this.stop("closed_by_client", null);
  }
  /** Adds a handler; returns the function that removes it. */
  on(name, handler) {
    return this.emitter.on(name, handler);
  }
  /**
   * Joins a group, now if connected, else with the next connection; the
   * group is rejoined (and resumed) after every reconnect. Resolves with
   * the `joined` frame; rejects with the server's code (`forbidden`,
   * `too_many_groups`…), and then the group is dropped.
   */
  join(group) {
    if (this.current === "closed") return rejected(new FanoutError("closed", "the client is closed", { group }));
    if (!isGroupName(group)) {
      return rejected(new FanoutError("invalid_group", `not a group name: \`${group}\``, { group }));
    }
    const promise = this.requests.waitJoin(group);
    const was = this.wanted.has(group);
    this.wanted.add(group);
    if (this.current === "connected" && this.conn) {
      if (this.conn.kind === "websocket") {
        this.sendJoin(group);
      } else if (was && this.sseConfirmed.has(group)) {
        this.settleJoin(group, this.synthJoined(group));
      } else {
        this.restartSse("groups_changed");
      }
    } else if (this.attemptTransport === "sse" && this.conn) {
      this.restartSse("groups_changed");
    }
    return promise;
  }
  /**
   * Leaves a group and stops rejoining it. Resolves with the `left` frame
   * (made up by the client when it is not connected: a new connection
   * starts in no group). A pending `join()` of the group rejects with
   * `cancelled`.
   */
  leave(group) {
    if (this.current === "closed") return rejected(new FanoutError("closed", "the client is closed", { group }));
    if (!isGroupName(group)) {
      return rejected(new FanoutError("invalid_group", `not a group name: \`${group}\``, { group }));
    }
    this.requests.rejectJoins(group, new FanoutError("cancelled", `left \`${group}\` before the join completed`, { group }));
    this.wanted.delete(group);
    this.tracker.delete(`group:${group}`);
    const conn = this.conn;
    if (this.current === "connected" && conn?.kind === "websocket") {
      const promise = this.requests.waitLeave(group);
      const id = this.nextId++;
      this.requests.sentLeave(id, group);
      conn.send(JSON.stringify({ type: "leave", id, group }));
      return promise;
    }
    if (conn?.kind === "sse" && (this.sseRequested.has(group) || this.sseConfirmed.has(group))) {
      const promise = this.requests.waitLeave(group);
      this.restartSse("groups_changed");
      return promise;
    }
    return Promise.resolve({ type: "left", group });
  }
  /**
   * Publishes to a group (the token's `publish` claim must allow it).
   * Resolves with the `ack`. While disconnected the publish waits for the
   * next WebSocket connection (at most `maxQueuedPublishes` of them, each
   * at most `requestTimeout`). It is sent at most once: when the
   * connection drops before the `ack` it rejects with `disconnected`
   * (`sent: true`, outcome unknown). Over SSE it rejects with `not_supported`.
   */
  publish(group, event, data) {
    if (this.current === "closed") return rejected(new FanoutError("closed", "the client is closed"));
    if (this.o.mode === "sse" || this.current === "connected" && this.conn?.kind === "sse") {
      return rejected(notSupported());
    }
    if (!isGroupName(group)) return rejected(new FanoutError("invalid_group", `not a group name: \`${group}\``));
    const { promise, waiter } = settled();
    const frame = { type: "publish", group };
    if (event !== void 0) frame.event = event;
    if (data !== void 0) frame.data = data;
    const p = { ...waiter, frame, sent: false, timer: void 0, seq: this.nextSeq++ };
    if (this.current === "connected" && this.conn) {
      this.sendPublish(p);
    } else if (this.requests.queued >= this.o.maxQueued) {
      return rejected(new FanoutError("queue_full", `more than ${this.o.maxQueued} publishes wait for a connection`));
    } else {
      this.requests.enqueue(p);
    }
    p.timer = setTimeout(() => this.requests.timedOut(p), this.o.requestTimeout);
    return promise;
  }
  // === connecting ===
  pickTransport() {
    if (this.o.mode !== "auto") return this.o.mode;
    return this.autoTransport;
  }
  attempt(reason, token) {
    const gen = ++this.gen;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = void 0;
    const transport = this.pickTransport();
    this.attemptTransport = transport;
    this.opened = false;
    this.bye = null;
    this.lastError = null;
    this.welcomeFrame = null;
    this.setState("connecting", reason, { transport });
    if (gen !== this.gen) return;
    this.connectTimer = setTimeout(() => this.drop(gen, "connect_timeout"), this.o.connectTimeout);
    const start = (t) => {
      if (gen !== this.gen) return;
      try {
        if (transport === "websocket") this.openWs(gen, t);
        else this.openSse(gen, t);
      } catch (e) {
        this.conn = null;
        this.ended(gen, { opened: false, reason: describe2(e) });
      }
    };
    if (token !== void 0) {
      start(token);
      return;
    }
    this.o.getToken().then(
      (t) => {
        if (gen !== this.gen) return;
        if (typeof t !== "string" || t === "") {
          this.tokenFailed(gen, new FanoutError("token_unavailable", "getToken() returned no token"));
        } else {
          start(t);
        }
      },
      (e) => {
        if (gen !== this.gen) return;
        this.tokenFailed(gen, new FanoutError("token_unavailable", `getToken() failed: ${describe2(e)}`, { cause: e }));
      }
    );
  }
  tokenFailed(gen, error) {
    this.emit("error", error);
    this.ended(gen, { opened: false, noConnection: true, reason: "token_unavailable" });
  }
  handlers(gen) {
    return {
      open: () => {
        if (gen !== this.gen) return;
        this.opened = true;
      },
      frame: (f) => {
        if (gen === this.gen) this.onFrame(gen, f);
      },
      activity: () => {
        if (gen === this.gen) this.heartbeat.activity();
      },
      end: (end) => this.ended(gen, end)
    };
  }
  openWs(gen, token) {
    const h = this.handlers(gen);
    this.conn = openWebSocket(this.o.WS, this.o.endpoints.websocket, {
      ...h,
      open: () => {
        if (gen !== this.gen) return;
        h.open();
        const since = this.tracker.snapshot((c) => c === "all" || c.startsWith("user:"));
        const auth = { type: "auth", token };
        if (Object.keys(since).length > 0) auth.since = since;
        this.conn?.send(JSON.stringify(auth));
      }
    });
  }
  openSse(gen, token) {
    this.sseRequested = new Set(this.wanted);
    const since = formatSince(
      this.tracker.snapshot((c) => c === "all" || c.startsWith("user:") || c.startsWith("group:") && this.wanted.has(c.slice(6)))
    );
    const params = {
      groups: [...this.sseRequested].join(",") || void 0,
      since: since || void 0
    };
    const h = this.handlers(gen);
    if (this.o.ES) {
      this.conn = openEventSource(this.o.ES, withQuery(this.o.endpoints.sse, { ...params, token }), h);
    } else {
      this.conn = openFetchStream(this.o.fetchFn, withQuery(this.o.endpoints.sse, params), { authorization: `Bearer ${token}` }, h);
    }
  }
  /** Ends the current connection from this side and reconnects. */
  drop(gen, reason) {
    if (gen !== this.gen) return;
    const end = { opened: this.opened, reason };
    if (this.conn) this.conn.close();
    else end.noConnection = true;
    this.ended(gen, end);
  }
  /** An SSE connection cannot change groups or token: replace it. */
  restartSse(reason, token) {
    if (this.restartTimer !== void 0) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = void 0;
      if (!this.running || this.conn?.kind !== "sse") return;
      this.conn.close();
      this.conn = null;
      this.stopConnectionTimers();
      this.attempt(reason, token);
    }, 0);
  }
  // === frames ===
  onFrame(gen, f) {
    switch (f.type) {
      case "welcome":
        this.onWelcome(gen, f);
        break;
      case "message":
        this.onMessage(f);
        break;
      case "joined":
        this.onJoined(f);
        break;
      case "left":
        this.onLeft(f);
        break;
      case "ack":
        this.requests.ack(f);
        break;
      case "refreshed":
        if (f.id === this.refreshId) this.refreshId = null;
        this.scheduleRefresh(gen, f.exp);
        break;
      case "error":
        this.onError(gen, f);
        break;
      case "bye":
        this.bye = f;
        this.conn?.close();
        this.ended(gen, { opened: true, reason: f.reason });
        break;
      default:
        break;
    }
  }
  onWelcome(gen, w) {
    clearTimeout(this.connectTimer);
    this.connectTimer = void 0;
    const conn = this.conn;
    if (!conn) return;
    this.welcomeFrame = w;
    this.failures = 0;
    if (this.o.mode === "auto") this.autoTransport = conn.kind;
    this.exp = w.exp;
    const recovered = w.recovered ?? {};
    const recoveries = [];
    for (const [channel, top] of Object.entries(w.positions ?? {})) {
      if (this.tracker.start(channel, top, recovered[channel])) {
        recoveries.push({ channel, recovered: false, reason: "epoch" });
      }
    }
    for (const [channel, ok] of Object.entries(recovered)) {
      recoveries.push({ channel, recovered: ok === true, reason: "resume" });
    }
    this.scheduleRefresh(gen, w.exp);
    this.watchHeartbeats(gen, conn, w.heartbeat);
    if (conn.kind === "websocket") {
      for (const group of this.wanted) this.sendJoin(group);
      for (const p of this.requests.takeQueue()) this.sendPublish(p);
    } else {
      this.sseConfirmed = /* @__PURE__ */ new Set();
      for (const channel of Object.keys(w.positions ?? {})) {
        if (channel.startsWith("group:")) this.sseConfirmed.add(channel.slice(6));
      }
      this.requests.rejectQueue(notSupported);
    }
    this.setState("connected", "welcome", { transport: conn.kind });
    if (gen !== this.gen) return;
    for (const w2 of this.connectWaiters.splice(0)) w2.resolve();
    this.emit("welcome", w);
    for (const r of recoveries) {
      if (gen !== this.gen) return;
      this.emit("recovery", r);
    }
    if (gen !== this.gen || conn.kind !== "sse") return;
    for (const group of this.sseConfirmed) {
      if (this.wanted.has(group)) this.settleJoin(group, this.synthJoined(group));
    }
    this.requests.resolveLeavesExcept(this.sseConfirmed);
    if (!sameSet(this.wanted, this.sseRequested)) this.restartSse("groups_changed");
  }
  onMessage(f) {
    if (f.channel.startsWith("group:") && !this.wanted.has(f.channel.slice(6))) {
      return;
    }
    const seen = this.tracker.observe(f);
    if (seen === "duplicate") return;
    if (seen === "epoch" || seen === "gap") {
      this.emit("recovery", { channel: f.channel, recovered: false, reason: seen });
    }
    if (typeof f.id === "string" && !this.seen.add(f.id)) return;
    this.emit("message", f);
  }
  onJoined(f) {
    const group = f.group;
    this.requests.answered(f.id);
    if (!this.wanted.has(group)) {
      if (f.id !== void 0) return;
      this.wanted.add(group);
    }
    if (this.conn?.kind === "sse") {
      this.sseRequested.add(group);
      this.sseConfirmed.add(group);
    }
    const channel = `group:${group}`;
    const lost = this.tracker.start(channel, { offset: f.offset, epoch: f.epoch }, f.recovered);
    if (f.recovered !== void 0) this.emit("recovery", { channel, recovered: f.recovered, reason: "resume" });
    else if (lost) this.emit("recovery", { channel, recovered: false, reason: "epoch" });
    this.emit("joined", f);
    this.settleJoin(group, f);
  }
  onLeft(f) {
    if (f.id !== void 0) {
      this.requests.answered(f.id);
    } else {
      this.wanted.delete(f.group);
      this.tracker.delete(`group:${f.group}`);
      this.sseRequested.delete(f.group);
      this.sseConfirmed.delete(f.group);
    }
    this.emit("left", f);
    this.requests.resolveLeaves(f.group, f);
  }
  onError(gen, f) {
    const request = this.requests.fail(f);
    if (request?.kind === "join") {
      this.joinFailed(request.group, FanoutError.fromFrame(f, request.group));
    } else if (request) {
    } else if (f.id !== void 0 && f.id === this.refreshId) {
      this.refreshId = null;
      this.emit("error", FanoutError.fromFrame(f));
      this.scheduleRefresh(gen, this.exp);
    } else {
      const error = FanoutError.fromFrame(f);
      if (f.id === void 0) this.lastError = error;
      this.emit("error", error);
    }
  }
  // === requests ===
  sendJoin(group) {
    const id = this.nextId++;
    this.requests.sentJoin(id, group);
    const since = this.tracker.get(`group:${group}`);
    this.conn?.send(JSON.stringify(since ? { type: "join", id, group, since } : { type: "join", id, group }));
  }
  sendPublish(p) {
    const id = this.nextId++;
    this.requests.sentPublish(id, p);
    if (!this.conn?.send(JSON.stringify({ ...p.frame, id }))) this.requests.unsend(p);
  }
  synthJoined(group) {
    const top = this.welcomeFrame?.positions?.[`group:${group}`];
    const frame = { type: "joined", group, offset: top?.offset ?? 0, epoch: top?.epoch ?? "" };
    const recovered = this.welcomeFrame?.recovered?.[`group:${group}`];
    if (recovered !== void 0) frame.recovered = recovered;
    return frame;
  }
  settleJoin(group, f) {
    this.requests.resolveJoins(group, f);
  }
  /** A join failed: the group is dropped; the error goes to the caller, or to `error` handlers. */
  joinFailed(group, error) {
    this.wanted.delete(group);
    this.tracker.delete(`group:${group}`);
    if (this.requests.rejectJoins(group, error) === 0) this.emit("error", error);
  }
  // === timers ===
  /** Refresh halfway through the token's remaining life, at most 60 s before `exp`. */
  scheduleRefresh(gen, exp) {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = void 0;
    this.exp = exp;
    if (!this.o.canRefresh || !Number.isFinite(exp)) return;
    const left = exp * 1e3 - Date.now();
    if (left < 1e3) return;
    const delay = Math.max(0, left - Math.min(6e4, left / 2));
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = void 0;
      this.refresh(gen);
    }, delay);
  }
  refresh(gen) {
    this.o.getToken().then(
      (token) => {
        if (gen !== this.gen || !this.conn) return;
        if (typeof token !== "string" || token === "") throw new Error("getToken() returned no token");
        if (this.conn.kind === "sse") {
          this.restartSse("token_refresh", token);
          return;
        }
        this.refreshId = this.nextId++;
        this.conn.send(JSON.stringify({ type: "refresh", id: this.refreshId, token }));
      }
    ).catch((e) => {
      if (gen !== this.gen) return;
      this.emit("error", new FanoutError("token_unavailable", `getToken() failed: ${describe2(e)}`, { cause: e }));
      this.scheduleRefresh(gen, this.exp);
    });
  }
  /**
   * Over WebSocket the server's pings are invisible to the browser API, so
   * after one silent heartbeat interval the client sends a `ping` frame; a
   * connection silent for `heartbeatTolerance` intervals is dead. Over SSE
   * (fetch reader) the server's comment lines count.
   */
  watchHeartbeats(gen, conn, heartbeat) {
    if (conn.kind === "sse" && !conn.heartbeats) {
      this.heartbeat.stop();
      return;
    }
    const ping = conn.kind === "websocket" ? () => conn.send('{"type":"ping"}') : null;
    this.heartbeat.start(heartbeat * 1e3, this.o.tolerance, ping, () => this.drop(gen, "heartbeat_timeout"));
  }
  stopConnectionTimers() {
    clearTimeout(this.connectTimer);
    clearTimeout(this.refreshTimer);
    this.connectTimer = this.refreshTimer = void 0;
    this.heartbeat.stop();
  }
  // === endings ===
  /** The attempt or connection `gen` is over: stop, or reconnect later. */
  ended(gen, end) {
    if (gen !== this.gen) return;
    this.gen++;
    const transport = this.attemptTransport;
    const wasConnected = this.welcomeFrame !== null;
    this.conn = null;
    this.welcomeFrame = null;
    this.stopConnectionTimers();
    this.requests.connectionLost();
    this.refreshId = null;
    const bye = this.bye;
    let { stop, reason, hintMs: hint } = closeDecision(bye, end);
    let immediate = false;
    if (!stop && transport === "sse" && !wasConnected && (end.error || end.refused)) {
      const error = new FanoutError(
        end.error?.code ?? "connect_refused",
        end.error?.message ?? "the SSE request was refused (EventSource does not say why)"
      );
      this.emit("error", error);
      const unconfirmed = [...this.wanted].filter((g) => !this.sseConfirmed.has(g));
      const refusal = sseRefusal(end, unconfirmed.length > 0);
      reason = refusal.reason;
      if (refusal.action === "stop") {
        stop = true;
        this.lastError = error;
      } else if (refusal.action === "drop_groups") {
        for (const g of unconfirmed) {
          this.joinFailed(g, new FanoutError(error.code, error.message, { group: g, cause: error }));
        }
        immediate = true;
      } else if (refusal.action === "reset_positions") {
        for (const channel of this.tracker.channels()) {
          this.tracker.delete(channel);
          this.emit("recovery", { channel, recovered: false, reason: "resume" });
        }
        immediate = true;
      }
    }
    if (!this.running) return;
    if (stop) {
      this.stop(reason, this.lastError);
      return;
    }
    let delay;
    if (this.o.mode === "auto" && !wasConnected && transport === "websocket" && !end.opened && !end.noConnection && !bye && (this.o.ES || this.o.fetchFn)) {
      this.autoTransport = "sse";
      delay = 0;
    } else {
      if (this.o.mode === "auto" && !wasConnected && transport === "sse" && this.o.WS) {
        this.autoTransport = "websocket";
      }
      const n = this.failures++;
      delay = immediate ? hint : backoffDelay(n, this.o.minDelay, this.o.maxDelay, hint);
    }
    const extra = { retryInMs: delay };
    if (transport) extra.transport = transport;
    this.setState("disconnected", reason, extra);
    if (!this.running || this.current !== "disconnected") return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = void 0;
      if (this.running) this.attempt("reconnect");
    }, delay);
  }
  stop(reason, error) {
    this.gen++;
    this.running = false;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.restartTimer);
    this.reconnectTimer = this.restartTimer = void 0;
    this.stopConnectionTimers();
    this.conn?.close();
    this.conn = null;
    this.welcomeFrame = null;
    this.refreshId = null;
    const closed = (group) => new FanoutError("closed", `the client stopped: ${reason}`, {
      ...error ? { cause: error } : {},
      ...group === void 0 ? {} : { group }
    });
    this.requests.stop(closed);
    for (const w of this.connectWaiters.splice(0)) w.reject(closed());
    this.setState("closed", reason, error ? { error } : {});
  }
  // === events ===
  setState(state, reason, extra = {}) {
    this.current = state;
    this.emit("state", { ...extra, state, reason });
  }
  emit(name, event) {
    const errors = this.emitter.emit(name, event);
    for (const cause of errors) {
      if (name !== "error" && this.emitter.count("error") > 0) {
        this.emit("error", new FanoutError("handler_error", `a \`${name}\` handler threw: ${describe2(cause)}`, { cause }));
      } else {
        console.error(`fanout: a \`${name}\` handler threw`, cause);
      }
    }
  }
};
function notSupported() {
  return new FanoutError("not_supported", "SSE is one-way: publish needs a WebSocket connection");
}
function describe2(e) {
  return e instanceof Error ? e.message : String(e);
}
function sameSet(a, b) {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
export {
  FanoutClient,
  FanoutError,
  formatSince,
  parseSince
};
