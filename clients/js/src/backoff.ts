// Reconnect delays: exponential backoff with full jitter.

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a
 * connection that worked): a uniformly random value in
 * `[0, min(max, min · 2^attempt))` ("full jitter"), never less than the
 * server's `retry_after_ms` hint.
 */
export function backoffDelay(
  attempt: number,
  minMs: number,
  maxMs: number,
  hintMs = 0,
  random: () => number = Math.random,
): number {
  const exp = Math.min(30, Math.max(0, attempt));
  const ceiling = Math.min(maxMs, minMs * 2 ** exp);
  const jittered = Math.floor(random() * ceiling);
  return Math.max(hintMs, jittered);
}
