// Where the client is on each channel, and the compact `since` form SSE
// uses (`user:42~17~k3x9a,group:room-1~3~p0c8a1zk`, protocol.md §10).

import type { MessageFrame, Position, Positions } from "./types.js";

/** What a message means for its channel's position. */
export type Observation =
  /** Next in line (or the first seen): deliver. */
  | "next"
  /** At or before the position, in the same epoch: already delivered. */
  | "duplicate"
  /** Offsets were skipped: deliver, but messages may be missing. */
  | "gap"
  /** A new epoch: deliver, but the channel's history was lost. */
  | "epoch"
  /** No offset (a live-only message): deliver; the position is unchanged. */
  | "live";

export class PositionTracker {
  private readonly map = new Map<string, Position>();

  constructor(initial?: Positions) {
    if (initial) {
      for (const [channel, p] of Object.entries(initial)) {
        if (isPosition(p)) this.map.set(channel, { offset: p.offset, epoch: p.epoch });
      }
    }
  }

  get(channel: string): Position | undefined {
    const p = this.map.get(channel);
    return p && { offset: p.offset, epoch: p.epoch };
  }

  has(channel: string): boolean {
    return this.map.has(channel);
  }

  set(channel: string, p: Position): void {
    this.map.set(channel, { offset: p.offset, epoch: p.epoch });
  }

  delete(channel: string): void {
    this.map.delete(channel);
  }

  channels(): string[] {
    return [...this.map.keys()];
  }

  /** A copy of every position, by channel. */
  snapshot(filter?: (channel: string) => boolean): Positions {
    const out: Positions = {};
    for (const [channel, p] of this.map) {
      if (!filter || filter(channel)) out[channel] = { offset: p.offset, epoch: p.epoch };
    }
    return out;
  }

  /**
   * Moves the channel's position to a message's, unless the message is
   * one the client already had.
   */
  observe(m: Pick<MessageFrame, "channel" | "offset" | "epoch">): Observation {
    if (typeof m.offset !== "number" || typeof m.epoch !== "string") return "live";
    const p = this.map.get(m.channel);
    this.map.set(m.channel, { offset: m.offset, epoch: m.epoch });
    if (!p) return "next";
    if (p.epoch !== m.epoch) return "epoch";
    if (m.offset <= p.offset) {
      this.map.set(m.channel, p); // never move back
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
  start(channel: string, top: Position, recovered: boolean | undefined): boolean {
    const p = this.map.get(channel);
    if (recovered !== false && p && p.epoch === top.epoch) {
      // Resumed: the replay moves the position. Not resumed: never move back.
      if (recovered !== true && p.offset < top.offset) this.set(channel, top);
      return false;
    }
    this.set(channel, top);
    return recovered === undefined && p !== undefined && p.epoch !== top.epoch;
  }
}

export function isPosition(p: unknown): p is Position {
  if (typeof p !== "object" || p === null) return false;
  const { offset, epoch } = p as Partial<Position>;
  return (
    typeof offset === "number" &&
    Number.isSafeInteger(offset) &&
    offset >= 0 &&
    typeof epoch === "string" &&
    /^[A-Za-z0-9_-]{1,64}$/.test(epoch)
  );
}

/**
 * The compact form of positions: `<channel>~<offset>~<epoch>` joined by
 * `,`, channels in sorted order (as the server writes them).
 */
export function formatSince(positions: Positions): string {
  return Object.keys(positions)
    .sort()
    .map((channel) => {
      const p = positions[channel]!;
      return `${channel}~${p.offset}~${p.epoch}`;
    })
    .join(",");
}

/** Parses the compact form; throws a `TypeError` when it is malformed. */
export function parseSince(text: string): Positions {
  const out: Positions = {};
  if (text.trim() === "") return out;
  for (const part of text.split(",")) {
    const fields = part.trim().split("~");
    if (fields.length !== 3) throw new TypeError(`not a position: \`${part}\``);
    const [channel, offsetText, epoch] = fields as [string, string, string];
    const offset = /^\d+$/.test(offsetText) ? Number(offsetText) : NaN;
    const p = { offset, epoch };
    if (channel === "" || !isPosition(p)) throw new TypeError(`not a position: \`${part}\``);
    out[channel] = p;
  }
  return out;
}
