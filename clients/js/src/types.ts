// Wire frames (docs/protocol.md §2-§6), the client's options and its events.
// Frames are typed as the server sends them; unknown fields are kept, never
// relied upon.

import type { FanoutError } from "./errors.js";

/** A place in a channel's history: `offset` counts its messages within `epoch`. */
export interface Position {
  offset: number;
  epoch: string;
}

/** Positions by channel (`user:42`, `group:room-1`, `all`). */
export type Positions = Record<string, Position>;

export interface WelcomeFrame {
  type: "welcome";
  conn: string;
  uid: string;
  node: string;
  /** Unix seconds at which the connection ends unless the token is refreshed. */
  exp: number;
  /** The server's heartbeat interval in seconds. */
  heartbeat: number;
  positions?: Positions;
  recovered?: Record<string, boolean>;
}

/** A published message (protocol.md §4). */
export interface MessageFrame {
  type: "message";
  /** `user:<uid>`, `group:<name>` or `all`. */
  channel: string;
  event?: string;
  data: unknown;
  /** The message id: the same on every channel a publish reached. */
  id: string;
  ts: number;
  from?: string;
  /** Absent for live-only messages (a plain Redis `PUBLISH`). */
  offset?: number;
  epoch?: string;
}

export interface JoinedFrame {
  type: "joined";
  id?: number;
  group: string;
  offset: number;
  epoch: string;
  /** Present when the join resumed the group from a position. */
  recovered?: boolean;
}

export interface LeftFrame {
  type: "left";
  id?: number;
  group: string;
}

export interface AckFrame {
  type: "ack";
  id?: number;
}

export interface RefreshedFrame {
  type: "refreshed";
  id?: number;
  exp: number;
}

export interface PongFrame {
  type: "pong";
  id?: number;
}

export interface ErrorFrame {
  type: "error";
  id?: number;
  code: string;
  message: string;
  /** `rate_limited`: when the same frame would be accepted (protocol.md §5). */
  retry_after_ms?: number;
}

export interface ByeFrame {
  type: "bye";
  reason: string;
  reconnect: boolean;
  retry_after_ms: number;
}

export type ServerFrame =
  | WelcomeFrame
  | MessageFrame
  | JoinedFrame
  | LeftFrame
  | AckFrame
  | RefreshedFrame
  | PongFrame
  | ErrorFrame
  | ByeFrame;

/** The client's connection state. */
export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

export interface StateEvent {
  state: ConnectionState;
  /**
   * Why the state changed. `connecting`: `connect`, `reconnect`,
   * `groups_changed` or `token_refresh` (SSE). `connected`: `welcome`.
   * `disconnected`: a `bye` reason (`shutdown`, `token_expired`…),
   * `close <code>` without one, `heartbeat_timeout`, `connect_timeout`,
   * `token_unavailable`, an SSE refusal's code. `closed`:
   * `closed_by_client`, or why reconnecting stopped (`kicked`,
   * `unauthorized`, `close 3501`…).
   */
  reason: string;
  /** For `disconnected`: milliseconds until the next attempt. */
  retryInMs?: number;
  /** The transport of the attempt or connection this event is about. */
  transport?: TransportKind;
  /** For `closed`: the server's `error` frame that preceded the stop, if any. */
  error?: FanoutError;
}

export interface RecoveryEvent {
  /** The channel (`user:42`, `group:room-1`, `all`). */
  channel: string;
  /**
   * `true`: every message after the client's position followed (or will,
   * before any live one). `false`: messages may be missing: reload what the
   * application shows for this channel from its backend.
   */
  recovered: boolean;
  /**
   * `resume`: the server's answer to a resume (`welcome`/`joined`).
   * `epoch`: a live message came in a new epoch (the channel's history was lost).
   * `gap`: a live message skipped offsets.
   */
  reason: "resume" | "epoch" | "gap";
}

export interface FanoutEvents {
  message: MessageFrame;
  state: StateEvent;
  recovery: RecoveryEvent;
  error: FanoutError;
  welcome: WelcomeFrame;
  /** Every `joined`, replies to `join()` and server-side joins alike. */
  joined: JoinedFrame;
  /** Every `left`, replies to `leave()` and server-side leaves alike. */
  left: LeftFrame;
}

export type EventName = keyof FanoutEvents;

export type TransportKind = "websocket" | "sse";

/** The part of the WebSocket API the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/**
 * A WebSocket constructor: the browser's, Node's (22+, or 20 with
 * `--experimental-websocket`), or a library's with the same API. Typed
 * loosely so that any of them fits; the client uses `WebSocketLike`.
 */
export type WebSocketConstructor = new (url: string) => unknown;

/** The part of the EventSource API the client uses. */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: string; lastEventId?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(): void;
}

/** An EventSource constructor (typed loosely; the client uses `EventSourceLike`). */
export type EventSourceConstructor = new (url: string) => unknown;

/** What the SSE reader passes to `fetch`. */
export interface FetchInit {
  headers: Record<string, string>;
  /** An `AbortSignal` (typed loosely so as not to need the DOM or Node types). */
  signal: any;
  cache: "no-store";
}

/** The part of a fetch `Response` the SSE reader uses. */
export interface FetchResponseLike {
  status: number;
  headers: { get(name: string): string | null };
  body: {
    getReader(): {
      read(): Promise<{ done: boolean; value?: Uint8Array }>;
      cancel(): Promise<void>;
    };
  } | null;
  text(): Promise<string>;
}

/** A fetch function (the global one fits). */
export type FetchLike = (url: string, init: FetchInit) => Promise<unknown>;

export interface FanoutClientOptions {
  /** A fixed token. Without `getToken` the session ends when it expires. */
  token?: string;
  /**
   * Called for every connection attempt and every token refresh; returns a
   * JWT from your backend. Preferred over `token`.
   */
  getToken?: () => string | Promise<string>;
  /** `auto` (default): WebSocket, SSE when a WebSocket cannot be opened. */
  transport?: "websocket" | "sse" | "auto";
  /** Groups to be in from the first connection on. */
  groups?: string[];
  /** Positions to resume from (from `client.positions()` of an earlier client). */
  positions?: Positions;
  /** Backoff base in ms (default 500): attempt n waits random(0, min(max, min·2ⁿ)). */
  minReconnectDelay?: number;
  /** Backoff cap in ms (default 30000). */
  maxReconnectDelay?: number;
  /** Time from opening a connection to `welcome`, in ms (default 15000). */
  connectTimeout?: number;
  /** Time for a `publish` to get its `ack`, in ms (default 10000). */
  requestTimeout?: number;
  /**
   * A connection that receives nothing (no frame, no SSE heartbeat comment)
   * for this many `welcome.heartbeat` intervals is taken as dead and
   * replaced (default 2). Over WebSocket the client sends a `ping` frame
   * after one silent interval.
   */
  heartbeatTolerance?: number;
  /** Most publishes kept while disconnected (default 100); more reject with `queue_full`. */
  maxQueuedPublishes?: number;
  /** Message ids remembered to drop duplicates (default 1000). */
  dedupeSize?: number;
  /** WebSocket implementation (default: `globalThis.WebSocket`). */
  WebSocket?: WebSocketConstructor;
  /**
   * EventSource implementation (default: `globalThis.EventSource`). `null`
   * uses the built-in fetch reader even where `EventSource` exists.
   */
  EventSource?: EventSourceConstructor | null;
  /** fetch implementation for the SSE reader (default: `globalThis.fetch`). */
  fetch?: FetchLike;
}
