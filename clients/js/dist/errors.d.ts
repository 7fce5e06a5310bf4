import type { ErrorFrame } from "./types.js";
/**
 * Codes the client makes up itself (the server's codes, protocol.md §5,
 * pass through unchanged):
 *
 * - `disconnected`: the connection dropped after the request was sent and
 *   before its reply; a publish may or may not have gone out.
 * - `timeout`: no reply within `requestTimeout` (`sent` says whether the
 *   frame had been sent: if it had, a publish's outcome is unknown).
 * - `queue_full`: too many publishes waiting for a connection.
 * - `closed`: the client was closed, or stopped for good (`bye` with
 *   `reconnect: false`).
 * - `cancelled`: a `join()` overtaken by a `leave()` of the same group.
 * - `not_supported`: publishing over SSE (one-way), or no WebSocket or SSE
 *   implementation for the chosen transport.
 * - `connect_refused`: an SSE request was refused and the browser's
 *   `EventSource` does not say why.
 * - `token_unavailable`: `getToken()` threw or returned no string.
 * - `handler_error`: an event handler threw.
 */
export declare class FanoutError extends Error {
    /** A protocol.md error code, or one of the client's own listed above. */
    readonly code: string;
    /** The `error` frame, when the server sent one. */
    readonly frame?: ErrorFrame;
    /** Whether the request's frame reached the socket (for `timeout`, `disconnected`). */
    readonly sent?: boolean;
    /** The group of a failed `join`, when the error concerns one. */
    readonly group?: string;
    constructor(code: string, message: string, extra?: {
        frame?: ErrorFrame;
        sent?: boolean;
        group?: string;
        cause?: unknown;
    });
    /** An error from a server `error` frame. */
    static fromFrame(frame: ErrorFrame, group?: string): FanoutError;
}
