// FanoutClient: one logical session with a fanout node, kept alive across
// connections. It owns the reconnect loop (backoff with full jitter, `bye`
// hints), resume (positions per channel, `since` on every reconnect,
// `recovery` events), duplicate dropping, token refresh, the heartbeat
// watch and request correlation (`id` → `joined`/`ack`/`error`).
//
// Invariants:
// - `gen` names the current attempt; every callback of an older attempt,
//   and every await that outlived one, checks it and does nothing.
// - `groups` is where the application wants to be; each new connection is
//   put there (WebSocket: `join` frames with `since`; SSE: `?groups=`).
// - A frame that was sent and not answered is never sent again: a publish
//   whose connection dropped rejects with `disconnected`.
// - After `close()` (or a stop) no timer is left and no handler runs.

import { backoffDelay } from "./backoff.js";
import { RecentIds } from "./dedupe.js";
import { Emitter } from "./emitter.js";
import { FanoutError } from "./errors.js";
import { HeartbeatWatch } from "./heartbeat.js";
import { type Settings, isGroupName, resolveOptions } from "./options.js";
import { closeDecision, sseRefusal } from "./policy.js";
import { PositionTracker, formatSince } from "./positions.js";
import { type PendingPublish, Requests, type Waiter, rejected, settled } from "./requests.js";
import { type Conn, type ConnEnd, openEventSource, openFetchStream, openWebSocket } from "./transport.js";
import type {
  AckFrame,
  ByeFrame,
  ConnectionState,
  ErrorFrame,
  EventName,
  FanoutClientOptions,
  FanoutEvents,
  JoinedFrame,
  LeftFrame,
  MessageFrame,
  Positions,
  RecoveryEvent,
  ServerFrame,
  StateEvent,
  TransportKind,
  WelcomeFrame,
} from "./types.js";
import { withQuery } from "./url.js";

export class FanoutClient {
  private readonly o: Settings;
  private readonly emitter = new Emitter<FanoutEvents>();
  private readonly tracker: PositionTracker;
  private readonly seen: RecentIds;
  /** Groups the application wants to be in. */
  private readonly wanted = new Set<string>();

  private current: ConnectionState = "disconnected";
  /** connect() was called and neither close() nor a stop followed. */
  private running = false;
  /** The current attempt; see the invariants above. */
  private gen = 0;
  private conn: Conn | null = null;
  private attemptTransport: TransportKind | null = null;
  private opened = false;
  private welcomeFrame: WelcomeFrame | null = null;
  private bye: ByeFrame | null = null;
  /** The last `error` frame without an `id` of this attempt (auth failures precede `bye`). */
  private lastError: FanoutError | null = null;
  /** Attempts since the last `welcome`. */
  private failures = 0;
  /** In `auto` mode: the transport to try next (the last one that worked). */
  private autoTransport: TransportKind = "websocket";
  /** The next frame `id` (unique across connections, so a late reply never matches). */
  private nextId = 1;
  /** Order of publish() calls. */
  private nextSeq = 1;
  /** The current token's expiry, Unix seconds (welcome/refreshed). */
  private exp = 0;

  /** Until the next attempt; set by ended(), cleared by attempt() and stop(). */
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  /** Until the attempt must have its `welcome`. */
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  /** Until the token refresh. */
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** SSE: defers the reconnect after join()/leave()/refresh, so calls coalesce. */
  private restartTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly heartbeat = new HeartbeatWatch();

  private readonly connectWaiters: Waiter<void>[] = [];
  private readonly requests = new Requests();
  /** The id of the `refresh` frame awaiting its reply. */
  private refreshId: number | null = null;
  /** SSE: the groups of the current request, and those its `welcome` confirmed. */
  private sseRequested = new Set<string>();
  private sseConfirmed = new Set<string>();

  /**
   * @param url the node's base URL (`https://push.example.com`), or its
   *   WebSocket (`wss://…/ws`) or SSE (`https://…/sse`) URL.
   */
  constructor(url: string, options: FanoutClientOptions = {}) {
    this.o = resolveOptions(url, options);
    this.autoTransport = this.o.WS ? "websocket" : "sse";
    this.seen = new RecentIds(this.o.dedupeSize);
    this.tracker = new PositionTracker(this.o.positions);
    for (const group of this.o.groups) this.wanted.add(group);
  }

  // === public API ===

  /** The connection state. */
  get state(): ConnectionState {
    return this.current;
  }

  /** The transport of the current connection, or null. */
  get transport(): TransportKind | null {
    return this.welcomeFrame ? this.attemptTransport : null;
  }

  /** The current connection's `welcome`, or null. */
  get welcome(): WelcomeFrame | null {
    return this.welcomeFrame;
  }

  /** The groups the client is in, or will be put in when it connects. */
  get groups(): string[] {
    return [...this.wanted];
  }

  /** Where the client is on each channel; pass it as `positions` to resume in a new client. */
  positions(): Positions {
    return this.tracker.snapshot();
  }

  /**
   * Starts connecting (and reconnecting until `close()` or a `bye` that
   * forbids it). Resolves at the first `welcome`; rejects with `closed` (or
   * the stop reason) when the client stops before that.
   */
  connect(): Promise<void> {
    if (this.current === "connected") return Promise.resolve();
    const { promise, waiter } = settled<void>();
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
  close(): void {
    if (!this.running && this.current === "closed") return;
    this.stop("closed_by_client", null);
  }

  /** Adds a handler; returns the function that removes it. */
  on<K extends EventName>(name: K, handler: (event: FanoutEvents[K]) => void): () => void {
    return this.emitter.on(name, handler);
  }

  /**
   * Joins a group, now if connected, else with the next connection; the
   * group is rejoined (and resumed) after every reconnect. Resolves with
   * the `joined` frame; rejects with the server's code (`forbidden`,
   * `too_many_groups`…), and then the group is dropped.
   */
  join(group: string): Promise<JoinedFrame> {
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
  leave(group: string): Promise<LeftFrame> {
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
  publish(group: string, event?: string, data?: unknown): Promise<AckFrame> {
    if (this.current === "closed") return rejected(new FanoutError("closed", "the client is closed"));
    if (this.o.mode === "sse" || (this.current === "connected" && this.conn?.kind === "sse")) {
      return rejected(notSupported());
    }
    if (!isGroupName(group)) return rejected(new FanoutError("invalid_group", `not a group name: \`${group}\``));
    const { promise, waiter } = settled<AckFrame>();
    const frame: PendingPublish["frame"] = { type: "publish", group };
    if (event !== undefined) frame.event = event;
    if (data !== undefined) frame.data = data;
    const p: PendingPublish = { ...waiter, frame, sent: false, timer: undefined, seq: this.nextSeq++ };
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

  private pickTransport(): TransportKind {
    if (this.o.mode !== "auto") return this.o.mode;
    return this.autoTransport;
  }

  private attempt(reason: string, token?: string): void {
    const gen = ++this.gen;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const transport = this.pickTransport();
    this.attemptTransport = transport;
    this.opened = false;
    this.bye = null;
    this.lastError = null;
    this.welcomeFrame = null;
    this.setState("connecting", reason, { transport });
    if (gen !== this.gen) return;
    // Covers getToken() too: a token that never comes is a failed attempt.
    this.connectTimer = setTimeout(() => this.drop(gen, "connect_timeout"), this.o.connectTimeout);
    const start = (t: string): void => {
      if (gen !== this.gen) return;
      try {
        if (transport === "websocket") this.openWs(gen, t);
        else this.openSse(gen, t);
      } catch (e) {
        // A constructor that throws (a bad URL, a page policy): a failed attempt.
        this.conn = null;
        this.ended(gen, { opened: false, reason: describe(e) });
      }
    };
    if (token !== undefined) {
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
      (e: unknown) => {
        if (gen !== this.gen) return;
        this.tokenFailed(gen, new FanoutError("token_unavailable", `getToken() failed: ${describe(e)}`, { cause: e }));
      },
    );
  }

  private tokenFailed(gen: number, error: FanoutError): void {
    this.emit("error", error);
    this.ended(gen, { opened: false, noConnection: true, reason: "token_unavailable" });
  }

  private handlers(gen: number) {
    return {
      open: () => {
        if (gen !== this.gen) return;
        this.opened = true;
      },
      frame: (f: ServerFrame) => {
        if (gen === this.gen) this.onFrame(gen, f);
      },
      activity: () => {
        if (gen === this.gen) this.heartbeat.activity();
      },
      end: (end: ConnEnd) => this.ended(gen, end),
    };
  }

  private openWs(gen: number, token: string): void {
    const h = this.handlers(gen);
    this.conn = openWebSocket(this.o.WS!, this.o.endpoints.websocket, {
      ...h,
      open: () => {
        if (gen !== this.gen) return;
        h.open();
        // The token goes in the first frame, never in the URL. Groups are
        // rejoined one by one after `welcome`, so that one the token no
        // longer allows fails alone instead of failing the whole auth.
        const since = this.tracker.snapshot((c) => c === "all" || c.startsWith("user:"));
        const auth: Record<string, unknown> = { type: "auth", token };
        if (Object.keys(since).length > 0) auth.since = since;
        this.conn?.send(JSON.stringify(auth));
      },
    });
  }

  private openSse(gen: number, token: string): void {
    this.sseRequested = new Set(this.wanted);
    const since = formatSince(
      this.tracker.snapshot((c) => c === "all" || c.startsWith("user:") || (c.startsWith("group:") && this.wanted.has(c.slice(6)))),
    );
    const params: Record<string, string | undefined> = {
      groups: [...this.sseRequested].join(",") || undefined,
      since: since || undefined,
    };
    const h = this.handlers(gen);
    if (this.o.ES) {
      // EventSource cannot send headers: the token has to go in the URL.
      this.conn = openEventSource(this.o.ES, withQuery(this.o.endpoints.sse, { ...params, token }), h);
    } else {
      this.conn = openFetchStream(this.o.fetchFn!, withQuery(this.o.endpoints.sse, params), { authorization: `Bearer ${token}` }, h);
    }
  }

  /** Ends the current connection from this side and reconnects. */
  private drop(gen: number, reason: string): void {
    if (gen !== this.gen) return;
    const end: ConnEnd = { opened: this.opened, reason };
    if (this.conn) this.conn.close();
    else end.noConnection = true;
    this.ended(gen, end);
  }

  /** An SSE connection cannot change groups or token: replace it. */
  private restartSse(reason: string, token?: string): void {
    if (this.restartTimer !== undefined) return;
    // Deferred, so that several join()/leave() calls make one reconnect.
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.running || this.conn?.kind !== "sse") return;
      this.conn.close();
      this.conn = null;
      this.stopConnectionTimers();
      this.attempt(reason, token);
    }, 0);
  }

  // === frames ===

  private onFrame(gen: number, f: ServerFrame): void {
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
        // Nothing follows a `bye`; close now rather than wait for the socket.
        this.conn?.close();
        this.ended(gen, { opened: true, reason: f.reason });
        break;
      default:
        break; // pong, and frames newer than this client
    }
  }

  private onWelcome(gen: number, w: WelcomeFrame): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    const conn = this.conn;
    if (!conn) return;
    this.welcomeFrame = w;
    this.failures = 0;
    if (this.o.mode === "auto") this.autoTransport = conn.kind;
    this.exp = w.exp;
    const recovered = w.recovered ?? {};
    const recoveries: RecoveryEvent[] = [];
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
      this.sseConfirmed = new Set();
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

  private onMessage(f: MessageFrame): void {
    if (f.channel.startsWith("group:") && !this.wanted.has(f.channel.slice(6))) {
      return; // left already; only in flight
    }
    const seen = this.tracker.observe(f);
    if (seen === "duplicate") return;
    if (seen === "epoch" || seen === "gap") {
      this.emit("recovery", { channel: f.channel, recovered: false, reason: seen });
    }
    if (typeof f.id === "string" && !this.seen.add(f.id)) return;
    this.emit("message", f);
  }

  private onJoined(f: JoinedFrame): void {
    const group = f.group;
    this.requests.answered(f.id);
    if (!this.wanted.has(group)) {
      if (f.id !== undefined) return; // a join overtaken by leave(); its `left` follows
      this.wanted.add(group); // a backend put this connection in the group
    }
    if (this.conn?.kind === "sse") {
      this.sseRequested.add(group);
      this.sseConfirmed.add(group);
    }
    const channel = `group:${group}`;
    const lost = this.tracker.start(channel, { offset: f.offset, epoch: f.epoch }, f.recovered);
    if (f.recovered !== undefined) this.emit("recovery", { channel, recovered: f.recovered, reason: "resume" });
    else if (lost) this.emit("recovery", { channel, recovered: false, reason: "epoch" });
    this.emit("joined", f);
    this.settleJoin(group, f);
  }

  private onLeft(f: LeftFrame): void {
    if (f.id !== undefined) {
      this.requests.answered(f.id);
    } else {
      // A backend took this connection out of the group.
      this.wanted.delete(f.group);
      this.tracker.delete(`group:${f.group}`);
      this.sseRequested.delete(f.group);
      this.sseConfirmed.delete(f.group);
    }
    this.emit("left", f);
    this.requests.resolveLeaves(f.group, f);
  }

  private onError(gen: number, f: ErrorFrame): void {
    const request = this.requests.fail(f);
    if (request?.kind === "join") {
      this.joinFailed(request.group, FanoutError.fromFrame(f, request.group));
    } else if (request) {
      // A leave or publish: its caller has the error.
    } else if (f.id !== undefined && f.id === this.refreshId) {
      this.refreshId = null;
      this.emit("error", FanoutError.fromFrame(f));
      // Try again later; at `exp` the server closes with token_expired and
      // the reconnect fetches a fresh token anyway.
      this.scheduleRefresh(gen, this.exp);
    } else {
      const error = FanoutError.fromFrame(f);
      if (f.id === undefined) this.lastError = error;
      this.emit("error", error);
    }
  }

  // === requests ===

  private sendJoin(group: string): void {
    const id = this.nextId++;
    this.requests.sentJoin(id, group);
    const since = this.tracker.get(`group:${group}`);
    this.conn?.send(JSON.stringify(since ? { type: "join", id, group, since } : { type: "join", id, group }));
  }

  private sendPublish(p: PendingPublish): void {
    const id = this.nextId++;
    this.requests.sentPublish(id, p);
    // A socket that is already closing takes nothing: the publish was not
    // sent, so it may wait for the next connection.
    if (!this.conn?.send(JSON.stringify({ ...p.frame, id }))) this.requests.unsend(p);
  }

  private synthJoined(group: string): JoinedFrame {
    const top = this.welcomeFrame?.positions?.[`group:${group}`];
    const frame: JoinedFrame = { type: "joined", group, offset: top?.offset ?? 0, epoch: top?.epoch ?? "" };
    const recovered = this.welcomeFrame?.recovered?.[`group:${group}`];
    if (recovered !== undefined) frame.recovered = recovered;
    return frame;
  }

  private settleJoin(group: string, f: JoinedFrame): void {
    this.requests.resolveJoins(group, f);
  }

  /** A join failed: the group is dropped; the error goes to the caller, or to `error` handlers. */
  private joinFailed(group: string, error: FanoutError): void {
    this.wanted.delete(group);
    this.tracker.delete(`group:${group}`);
    if (this.requests.rejectJoins(group, error) === 0) this.emit("error", error);
  }

  // === timers ===

  /** Refresh halfway through the token's remaining life, at most 60 s before `exp`. */
  private scheduleRefresh(gen: number, exp: number): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.exp = exp;
    if (!this.o.canRefresh || !Number.isFinite(exp)) return;
    const left = exp * 1000 - Date.now();
    if (left < 1000) return;
    const delay = Math.max(0, left - Math.min(60_000, left / 2));
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      this.refresh(gen);
    }, delay);
  }

  private refresh(gen: number): void {
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
      },
    ).catch((e: unknown) => {
      if (gen !== this.gen) return;
      this.emit("error", new FanoutError("token_unavailable", `getToken() failed: ${describe(e)}`, { cause: e }));
      this.scheduleRefresh(gen, this.exp);
    });
  }

  /**
   * Over WebSocket the server's pings are invisible to the browser API, so
   * after one silent heartbeat interval the client sends a `ping` frame; a
   * connection silent for `heartbeatTolerance` intervals is dead. Over SSE
   * (fetch reader) the server's comment lines count.
   */
  private watchHeartbeats(gen: number, conn: Conn, heartbeat: number): void {
    if (conn.kind === "sse" && !conn.heartbeats) {
      this.heartbeat.stop(); // EventSource hides the heartbeat comments
      return;
    }
    const ping = conn.kind === "websocket" ? () => conn.send('{"type":"ping"}') : null;
    this.heartbeat.start(heartbeat * 1000, this.o.tolerance, ping, () => this.drop(gen, "heartbeat_timeout"));
  }

  private stopConnectionTimers(): void {
    clearTimeout(this.connectTimer);
    clearTimeout(this.refreshTimer);
    this.connectTimer = this.refreshTimer = undefined;
    this.heartbeat.stop();
  }

  // === endings ===

  /** The attempt or connection `gen` is over: stop, or reconnect later. */
  private ended(gen: number, end: ConnEnd): void {
    if (gen !== this.gen) return;
    this.gen++; // late callbacks of this connection are ignored from here on
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
        end.error?.message ?? "the SSE request was refused (EventSource does not say why)",
      );
      this.emit("error", error);
      const unconfirmed = [...this.wanted].filter((g) => !this.sseConfirmed.has(g));
      const refusal = sseRefusal(end, unconfirmed.length > 0);
      reason = refusal.reason;
      if (refusal.action === "stop") {
        stop = true;
        this.lastError = error;
      } else if (refusal.action === "drop_groups") {
        // Which group was refused the answer does not say: drop every
        // group no welcome confirmed, and reconnect with the others.
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
    if (!this.running) return; // an event handler called close()
    if (stop) {
      this.stop(reason, this.lastError);
      return;
    }

    let delay: number;
    if (
      this.o.mode === "auto" &&
      !wasConnected &&
      transport === "websocket" &&
      !end.opened &&
      !end.noConnection &&
      !bye &&
      (this.o.ES || this.o.fetchFn)
    ) {
      // The WebSocket could not even open (blocked by a proxy, say): try
      // SSE at once; back off only when that fails too.
      this.autoTransport = "sse";
      delay = 0;
    } else {
      if (this.o.mode === "auto" && !wasConnected && transport === "sse" && this.o.WS) {
        this.autoTransport = "websocket";
      }
      // `failures` is 0 after a connection that worked: the first retry
      // waits at most minReconnectDelay, each failure doubles the range.
      const n = this.failures++;
      delay = immediate ? hint : backoffDelay(n, this.o.minDelay, this.o.maxDelay, hint);
    }
    const extra: Partial<StateEvent> = { retryInMs: delay };
    if (transport) extra.transport = transport;
    this.setState("disconnected", reason, extra);
    if (!this.running || this.current !== "disconnected") return; // a handler closed or reconnected
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.running) this.attempt("reconnect");
    }, delay);
  }

  private stop(reason: string, error: FanoutError | null): void {
    this.gen++;
    this.running = false;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.restartTimer);
    this.reconnectTimer = this.restartTimer = undefined;
    this.stopConnectionTimers();
    this.conn?.close();
    this.conn = null;
    this.welcomeFrame = null;
    this.refreshId = null;
    const closed = (group?: string): FanoutError =>
      new FanoutError("closed", `the client stopped: ${reason}`, {
        ...(error ? { cause: error } : {}),
        ...(group === undefined ? {} : { group }),
      });
    this.requests.stop(closed);
    for (const w of this.connectWaiters.splice(0)) w.reject(closed());
    this.setState("closed", reason, error ? { error } : {});
  }

  // === events ===

  private setState(state: ConnectionState, reason: string, extra: Partial<StateEvent> = {}): void {
    this.current = state;
    this.emit("state", { ...extra, state, reason });
  }

  private emit<K extends EventName>(name: K, event: FanoutEvents[K]): void {
    const errors = this.emitter.emit(name, event);
    for (const cause of errors) {
      if (name !== "error" && this.emitter.count("error") > 0) {
        this.emit("error", new FanoutError("handler_error", `a \`${name}\` handler threw: ${describe(cause)}`, { cause }));
      } else {
        console.error(`fanout: a \`${name}\` handler threw`, cause);
      }
    }
  }
}

function notSupported(): FanoutError {
  return new FanoutError("not_supported", "SSE is one-way: publish needs a WebSocket connection");
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
