// Noticing a dead connection (protocol.md §7). The server pings every
// `welcome.heartbeat` seconds, but WebSocket pings are invisible to the
// browser API: after one silent interval the client sends a `ping` frame
// of its own, and a connection silent for `tolerance` intervals is dead.
// Over SSE the server's comment lines are the heartbeat (when the reader
// can see them).

export class HeartbeatWatch {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private lastRx = 0;
  /** A ping went out since the last activity. */
  private pinged = false;

  /** Something arrived on the connection. */
  activity(): void {
    this.lastRx = Date.now();
    this.pinged = false;
  }

  /**
   * Watches the connection: `ping` (when given) after one silent
   * `intervalMs`, `dead` after `tolerance` of them. Replaces any earlier watch.
   */
  start(intervalMs: number, tolerance: number, ping: (() => void) | null, dead: () => void): void {
    this.stop();
    if (!(intervalMs > 0)) return;
    this.activity();
    const deadline = intervalMs * tolerance;
    const check = (): void => {
      this.timer = undefined;
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

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
