// The two transports behind one small interface: a WebSocket, and an SSE
// stream read either by the browser's EventSource or by the built-in fetch
// reader (Node.js, or wherever EventSource is missing). They move frames;
// what frames mean is the client's business.

import type {
  EventSourceConstructor,
  EventSourceLike,
  FetchLike,
  FetchResponseLike,
  ServerFrame,
  TransportKind,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";

/** How a connection (or an attempt at one) ended. */
export interface ConnEnd {
  /** Whether the WebSocket opened / the SSE response was a stream. */
  opened: boolean;
  /** The WebSocket close code. */
  code?: number;
  /** A close reason, or what went wrong, for humans. */
  reason?: string;
  /** SSE: the HTTP status of a refused request (fetch reader only). */
  status?: number;
  /** SSE: the JSON error of a refused request (fetch reader only). */
  error?: { code: string; message: string };
  /** SSE via EventSource: refused by the server, reason unknown. */
  refused?: boolean;
  /** No connection was tried (getToken() failed). */
  noConnection?: boolean;
}

export interface ConnHandlers {
  /** The WebSocket opened / the SSE stream started. */
  open(): void;
  /** One frame (a parsed JSON object with a string `type`). */
  frame(frame: ServerFrame): void;
  /** Anything arrived, a heartbeat comment included. */
  activity(): void;
  /** Called at most once, never after `close()`. */
  end(end: ConnEnd): void;
}

export interface Conn {
  readonly kind: TransportKind;
  /** Whether `activity()` also sees the server's heartbeats. */
  readonly heartbeats: boolean;
  /** Sends a text frame; false when it cannot (SSE, or not open). */
  send(text: string): boolean;
  /** Ends the connection; no handler is called afterwards. */
  close(): void;
}

const WS_OPEN = 1;

function parseFrame(text: string): ServerFrame | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  return typeof (value as { type?: unknown }).type === "string" ? (value as ServerFrame) : null;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// === WebSocket ===

export function openWebSocket(WS: WebSocketConstructor, url: string, h: ConnHandlers): Conn {
  let done = false;
  let opened = false;
  let ws: WebSocketLike | null = null;
  const finish = (end: ConnEnd): void => {
    if (done) return;
    done = true;
    detach();
    h.end(end);
  };
  const detach = (): void => {
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
  };
  try {
    ws = new WS(url) as WebSocketLike;
  } catch (e) {
    // A bad URL or a blocked port throws at once: report it like a failure.
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
    // `error` is always followed by `close`, which says more.
    socket.onerror = () => {};
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
        ws?.close(1000);
      } catch {
        // Already closing.
      }
    },
  };
}

// === SSE: the event-stream parser ===

export interface SseEvent {
  data: string;
  event: string;
  id: string;
}

/**
 * An incremental `text/event-stream` parser (the HTML standard's rules:
 * `\r\n`, `\r` or `\n` line ends, `field: value`, comments starting with
 * `:`, an event per blank line).
 */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  private lastId = "";
  /** The last `retry:` value, in ms. */
  retry: number | undefined;

  constructor(
    private readonly onEvent: (e: SseEvent) => void,
    private readonly onComment: (text: string) => void = () => {},
  ) {}

  push(chunk: string): void {
    this.buffer += chunk;
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      let end: number;
      if (cr === -1 && lf === -1) break;
      if (cr === -1 || (lf !== -1 && lf < cr)) end = lf;
      else end = cr;
      // A `\r` at the end of the buffer may be the first half of `\r\n`.
      if (end === cr && cr === this.buffer.length - 1) break;
      const line = this.buffer.slice(start, end);
      start = end + (end === cr && this.buffer[cr + 1] === "\n" ? 2 : 1);
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
  }

  private line(line: string): void {
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
}

// === SSE: fetch reader ===

export function openFetchStream(
  fetchFn: FetchLike,
  url: string,
  headers: Record<string, string>,
  h: ConnHandlers,
): Conn {
  const abort = new AbortController();
  let done = false;
  const finish = (end: ConnEnd): void => {
    if (done) return;
    done = true;
    abort.abort();
    h.end(end);
  };
  const run = async (): Promise<void> => {
    let res: FetchResponseLike;
    try {
      res = (await fetchFn(url, {
        headers: { accept: "text/event-stream", ...headers },
        signal: abort.signal,
        cache: "no-store",
      })) as FetchResponseLike;
    } catch (e) {
      finish({ opened: false, reason: describe(e) });
      return;
    }
    if (done) return;
    const type = res.headers.get("content-type") ?? "";
    if (res.status !== 200 || !type.startsWith("text/event-stream") || !res.body) {
      let error: { code: string; message: string } | undefined;
      try {
        const body = JSON.parse(await res.text()) as { error?: { code?: unknown; message?: unknown } };
        if (body.error && typeof body.error.code === "string") {
          error = { code: body.error.code, message: String(body.error.message ?? "") };
        }
      } catch {
        // Not a fanout error body (a proxy's page, say).
      }
      const end: ConnEnd = { opened: false, status: res.status, reason: `HTTP ${res.status}` };
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
      () => {},
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
      reader.cancel().catch(() => {});
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
    },
  };
}

// === SSE: EventSource ===

const ES_CLOSED = 2;

export function openEventSource(ES: EventSourceConstructor, url: string, h: ConnHandlers): Conn {
  let done = false;
  let opened = false;
  const es = new ES(url) as EventSourceLike;
  const stop = (): void => {
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
    // CLOSED before the stream opened: the request was refused (an HTTP
    // error, which EventSource does not show). Otherwise the stream broke
    // and EventSource would reconnect by itself with the old URL and
    // token; the client reconnects instead, with fresh ones.
    const refused = !opened && es.readyState === ES_CLOSED;
    done = true;
    stop();
    const end: ConnEnd = { opened, reason: refused ? "refused" : "stream ended" };
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
    },
  };
}
