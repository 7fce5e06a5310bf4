import type { MessageFrame, Position, Positions } from "./types.js";
/** What a message means for its channel's position. */
export type Observation = 
/** Next in line (or the first seen): deliver. */
"next"
/** At or before the position, in the same epoch: already delivered. */
 | "duplicate"
/** Offsets were skipped: deliver, but messages may be missing. */
 | "gap"
/** A new epoch: deliver, but the channel's history was lost. */
 | "epoch"
/** No offset (a live-only message): deliver; the position is unchanged. */
 | "live";
export declare class PositionTracker {
    private readonly map;
    constructor(initial?: Positions);
    get(channel: string): Position | undefined;
    has(channel: string): boolean;
    set(channel: string, p: Position): void;
    delete(channel: string): void;
    channels(): string[];
    /** A copy of every position, by channel. */
    snapshot(filter?: (channel: string) => boolean): Positions;
    /**
     * Moves the channel's position to a message's, unless the message is
     * one the client already had.
     */
    observe(m: Pick<MessageFrame, "channel" | "offset" | "epoch">): Observation;
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
    start(channel: string, top: Position, recovered: boolean | undefined): boolean;
}
export declare function isPosition(p: unknown): p is Position;
/**
 * The compact form of positions: `<channel>~<offset>~<epoch>` joined by
 * `,`, channels in sorted order (as the server writes them).
 */
export declare function formatSince(positions: Positions): string;
/** Parses the compact form; throws a `TypeError` when it is malformed. */
export declare function parseSince(text: string): Positions;
