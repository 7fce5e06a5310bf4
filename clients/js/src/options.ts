// The client's options, checked and with their defaults filled in once.

import { FanoutError } from "./errors.js";
import type { EventSourceConstructor, FanoutClientOptions, FetchLike, Positions, WebSocketConstructor } from "./types.js";
import { type Endpoints, deriveEndpoints } from "./url.js";

/** Group names (protocol.md §9): checked before anything goes out. */
const NAME = /^[A-Za-z0-9_.:@=+\/-]{1,128}$/;

export function isGroupName(group: unknown): group is string {
  return typeof group === "string" && NAME.test(group);
}

export interface Settings {
  endpoints: Endpoints;
  getToken: () => Promise<string>;
  /** Only getToken() can give a fresh token to refresh with. */
  canRefresh: boolean;
  mode: "websocket" | "sse" | "auto";
  WS: WebSocketConstructor | undefined;
  ES: EventSourceConstructor | undefined;
  fetchFn: FetchLike | undefined;
  minDelay: number;
  maxDelay: number;
  connectTimeout: number;
  requestTimeout: number;
  tolerance: number;
  maxQueued: number;
  dedupeSize: number;
  groups: string[];
  positions: Positions | undefined;
}

export function resolveOptions(url: string, options: FanoutClientOptions): Settings {
  const g = globalThis as {
    WebSocket?: WebSocketConstructor;
    EventSource?: EventSourceConstructor;
    fetch?: FetchLike;
    location?: { href: string };
  };
  const endpoints = deriveEndpoints(url, g.location?.href);
  const { token, getToken } = options;
  let tokenFn: () => Promise<string>;
  if (getToken) tokenFn = async () => getToken();
  else if (typeof token === "string") tokenFn = async () => token;
  else throw new TypeError("fanout: give `token` or `getToken`");

  const mode = options.transport ?? "auto";
  const WS = options.WebSocket ?? g.WebSocket;
  const ES = options.EventSource === null ? undefined : (options.EventSource ?? g.EventSource);
  const fetchFn = options.fetch ?? (g.fetch ? (g.fetch.bind(globalThis) as FetchLike) : undefined);
  const hasSse = ES !== undefined || fetchFn !== undefined;
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
    canRefresh: getToken !== undefined,
    mode,
    WS,
    ES,
    fetchFn,
    minDelay,
    maxDelay: Math.max(minDelay, options.maxReconnectDelay ?? 30_000),
    connectTimeout: options.connectTimeout ?? 15_000,
    requestTimeout: options.requestTimeout ?? 10_000,
    tolerance: Math.max(1.5, options.heartbeatTolerance ?? 2),
    maxQueued: Math.max(0, options.maxQueuedPublishes ?? 100),
    dedupeSize: Math.max(1, options.dedupeSize ?? 1000),
    groups: [...groups],
    positions: options.positions,
  };
}
