// The application's pending requests: join()/leave() calls by group,
// publishes queued for a connection or sent and awaiting their `ack`, and
// the `id`s that correlate frames of the current connection with replies.
//
// Rules (docs/client.md, "Requests"):
// - join() waits per group: whichever `joined` of that group comes next
//   (the reply, or the rejoin after a reconnect) settles it.
// - A publish is sent at most once. Queued ones wait for a connection;
//   sent ones reject with `disconnected` when the connection drops.
// - Every promise handed out is marked handled, so a call whose result
//   is ignored never raises `unhandledRejection`.

import { FanoutError } from "./errors.js";
import type { AckFrame, ErrorFrame, JoinedFrame, LeftFrame } from "./types.js";

export interface Waiter<T> {
  resolve(value: T): void;
  reject(error: FanoutError): void;
}

export interface PendingPublish extends Waiter<AckFrame> {
  frame: { type: "publish"; group: string; event?: string; data?: unknown };
  /** The frame's id once sent. */
  id?: number;
  sent: boolean;
  /** The requestTimeout timer; cleared when the publish settles. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Order of the publish() calls, kept in the queue. */
  seq: number;
}

/** A promise and its settle functions; its rejection counts as handled. */
export function settled<T>(): { promise: Promise<T>; waiter: Waiter<T> } {
  let waiter!: Waiter<T>;
  const promise = new Promise<T>((resolve, reject) => {
    waiter = { resolve, reject };
  });
  promise.catch(() => {});
  return { promise, waiter };
}

/** An already rejected promise, marked handled. */
export function rejected<T>(error: FanoutError): Promise<T> {
  const p = Promise.reject(error);
  p.catch(() => {});
  return p as Promise<T>;
}

export class Requests {
  private readonly joins = new Map<string, Waiter<JoinedFrame>[]>();
  private readonly leaves = new Map<string, Waiter<LeftFrame>[]>();
  /** `join`/`leave` frames sent on this connection, awaiting a reply: id → group. */
  private readonly sentJoins = new Map<number, string>();
  private readonly sentLeaves = new Map<number, string>();
  /** Publishes waiting for a connection, oldest first. */
  private queue: PendingPublish[] = [];
  /** Publishes sent on this connection, awaiting their `ack`: id → publish. */
  private readonly inflight = new Map<number, PendingPublish>();

  // === join / leave ===

  waitJoin(group: string): Promise<JoinedFrame> {
    const { promise, waiter } = settled<JoinedFrame>();
    push(this.joins, group, waiter);
    return promise;
  }

  waitLeave(group: string): Promise<LeftFrame> {
    const { promise, waiter } = settled<LeftFrame>();
    push(this.leaves, group, waiter);
    return promise;
  }

  sentJoin(id: number, group: string): void {
    this.sentJoins.set(id, group);
  }

  sentLeave(id: number, group: string): void {
    this.sentLeaves.set(id, group);
  }

  /** Groups with a join() waiting. */
  joinsWaiting(): string[] {
    return [...this.joins.keys()];
  }

  resolveJoins(group: string, frame: JoinedFrame): void {
    for (const w of take(this.joins, group)) w.resolve(frame);
  }

  /** Rejects the group's join() calls; returns how many there were. */
  rejectJoins(group: string, error: FanoutError): number {
    const waiters = take(this.joins, group);
    for (const w of waiters) w.reject(error);
    return waiters.length;
  }

  resolveLeaves(group: string, frame: LeftFrame): void {
    for (const w of take(this.leaves, group)) w.resolve(frame);
  }

  /** A reply (`joined`/`left`) arrived: its id is answered. */
  answered(id: number | undefined): void {
    if (id === undefined) return;
    this.sentJoins.delete(id);
    this.sentLeaves.delete(id);
  }

  /**
   * Routes an `error` frame with an id to its request. Returns what it
   * was, so the client can follow up; `null` when no request had that id.
   */
  fail(frame: ErrorFrame): { kind: "join" | "leave"; group: string } | { kind: "publish" } | null {
    const id = frame.id;
    if (id === undefined) return null;
    const joinGroup = this.sentJoins.get(id);
    if (joinGroup !== undefined) {
      this.sentJoins.delete(id);
      return { kind: "join", group: joinGroup };
    }
    const leaveGroup = this.sentLeaves.get(id);
    if (leaveGroup !== undefined) {
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

  get queued(): number {
    return this.queue.length;
  }

  enqueue(p: PendingPublish): void {
    this.queue.push(p);
  }

  /** Takes every queued publish, oldest first. */
  takeQueue(): PendingPublish[] {
    const q = this.queue;
    this.queue = [];
    return q;
  }

  sentPublish(id: number, p: PendingPublish): void {
    p.id = id;
    p.sent = true;
    this.inflight.set(id, p);
  }

  /** The socket refused the frame (it is closing): back to the front of the queue. */
  unsend(p: PendingPublish): void {
    if (p.id !== undefined) this.inflight.delete(p.id);
    delete p.id;
    p.sent = false;
    this.queue.push(p);
    this.queue.sort((a, b) => a.seq - b.seq);
  }

  ack(frame: AckFrame): void {
    const p = frame.id === undefined ? undefined : this.inflight.get(frame.id);
    if (!p || frame.id === undefined) return;
    this.inflight.delete(frame.id);
    clearTimeout(p.timer);
    p.resolve(frame);
  }

  /** The publish's requestTimeout passed: forget it and reject with `timeout`. */
  timedOut(p: PendingPublish): void {
    this.queue = this.queue.filter((q) => q !== p);
    if (p.id !== undefined) this.inflight.delete(p.id);
    const message = p.sent
      ? "no ack in time; the publish may or may not have gone out"
      : "no connection in time; the publish was not sent";
    p.reject(new FanoutError("timeout", message, { sent: p.sent }));
  }

  // === endings ===

  /**
   * The connection ended: sent publishes reject with `disconnected`, ids
   * are forgotten, and leave() calls are done (a new connection starts in
   * no group). join() calls wait for the rejoin.
   */
  connectionLost(): void {
    const lost = [...this.inflight.values()];
    this.inflight.clear();
    for (const p of lost) {
      clearTimeout(p.timer);
      p.reject(
        new FanoutError("disconnected", "the connection dropped before the ack; the publish may or may not have gone out", {
          sent: true,
        }),
      );
    }
    this.sentJoins.clear();
    this.sentLeaves.clear();
    this.resolveAllLeaves();
  }

  /** Rejects every publish still queued (SSE cannot publish). */
  rejectQueue(error: () => FanoutError): void {
    for (const p of this.takeQueue()) {
      clearTimeout(p.timer);
      p.reject(error());
    }
  }

  /** The client stopped: everything settles now. */
  stop(error: (group?: string) => FanoutError): void {
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

  private resolveAllLeaves(): void {
    const leaves = [...this.leaves];
    this.leaves.clear();
    for (const [group, waiters] of leaves) for (const w of waiters) w.resolve({ type: "left", group });
  }

  /** Leaves waiting for groups not in `keep` (SSE: the new stream left them). */
  resolveLeavesExcept(keep: Set<string>): void {
    for (const group of [...this.leaves.keys()]) {
      if (!keep.has(group)) this.resolveLeaves(group, { type: "left", group });
    }
  }
}

function push<T>(map: Map<string, T[]>, key: string, value: T): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

function take<T>(map: Map<string, T[]>, key: string): T[] {
  const list = map.get(key) ?? [];
  map.delete(key);
  return list;
}
