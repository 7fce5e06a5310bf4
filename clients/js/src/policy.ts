// What to do when a connection or an attempt ends: pure decisions, kept
// apart from the state machine so that they can be read (and tested) as
// the table in docs/client.md.

import type { ConnEnd } from "./transport.js";
import type { ByeFrame } from "./types.js";

export interface CloseDecision {
  /** Reconnecting is not allowed (`bye` with `reconnect: false`, or a 35xx close). */
  stop: boolean;
  /** The `bye` reason, `close <code>`, or what the transport said. */
  reason: string;
  /** The least delay before the next attempt (`bye.retry_after_ms`). */
  hintMs: number;
}

/** protocol.md §6: rely on `bye` when there is one, on the close code otherwise. */
export function closeDecision(bye: ByeFrame | null, end: ConnEnd): CloseDecision {
  if (bye) {
    const hint = Number.isFinite(bye.retry_after_ms) ? Math.max(0, Math.floor(bye.retry_after_ms)) : 0;
    return { stop: bye.reconnect === false, reason: bye.reason, hintMs: hint };
  }
  if (end.code !== undefined && end.code >= 3500 && end.code <= 3999) {
    return { stop: true, reason: `close ${end.code}`, hintMs: 0 };
  }
  return { stop: false, reason: end.reason ?? "connect_failed", hintMs: 0 };
}

export type SseRefusal =
  /** Stop for good, like a WebSocket `bye` without reconnect. */
  | { action: "stop"; reason: string }
  /** Drop the groups no `welcome` confirmed yet and retry at once. */
  | { action: "drop_groups"; reason: string }
  /** Forget every position (they cannot be resumed) and retry at once. */
  | { action: "reset_positions"; reason: string }
  /** Back off and retry (shutting down, broker unavailable, unknown). */
  | { action: "retry"; reason: string };

/** SSE refusals of the token (the WebSocket equivalent: `bye` `unauthorized`). */
const TOKEN_REFUSALS = new Set(["invalid_token", "token_expired", "auth_required"]);
/** SSE refusals that a retry with the same groups cannot fix. */
const GROUP_REFUSALS = new Set(["forbidden", "invalid_group", "too_many_groups"]);

/**
 * A refused SSE request: the fetch reader knows the error code (`end.error`);
 * EventSource only knows that it was refused (`end.refused`).
 * `unconfirmed`: whether some wanted group was not in the last `welcome`
 * (added since, so possibly the one refused).
 */
export function sseRefusal(end: ConnEnd, unconfirmed: boolean): SseRefusal {
  const code = end.error?.code;
  if (code === undefined) {
    return { action: unconfirmed ? "drop_groups" : "retry", reason: "connect_refused" };
  }
  if (TOKEN_REFUSALS.has(code)) return { action: "stop", reason: "unauthorized" };
  if (GROUP_REFUSALS.has(code)) return { action: unconfirmed ? "drop_groups" : "stop", reason: code };
  if (code === "origin_not_allowed") return { action: "stop", reason: code };
  if (code === "invalid_position") return { action: "reset_positions", reason: code };
  return { action: "retry", reason: code };
}
