import type { AckFrame, ConnectionState, EventName, FanoutClientOptions, FanoutEvents, JoinedFrame, LeftFrame, Positions, TransportKind, WelcomeFrame } from "./types.js";
export declare class FanoutClient {
    private readonly o;
    private readonly emitter;
    private readonly tracker;
    private readonly seen;
    /** Groups the application wants to be in. */
    private readonly wanted;
    private current;
    /** connect() was called and neither close() nor a stop followed. */
    private running;
    /** The current attempt; see the invariants above. */
    private gen;
    private conn;
    private attemptTransport;
    private opened;
    private welcomeFrame;
    private bye;
    /** The last `error` frame without an `id` of this attempt (auth failures precede `bye`). */
    private lastError;
    /** Attempts since the last `welcome`. */
    private failures;
    /** In `auto` mode: the transport to try next (the last one that worked). */
    private autoTransport;
    /** The next frame `id` (unique across connections, so a late reply never matches). */
    private nextId;
    /** Order of publish() calls. */
    private nextSeq;
    /** The current token's expiry, Unix seconds (welcome/refreshed). */
    private exp;
    /** Until the next attempt; set by ended(), cleared by attempt() and stop(). */
    private reconnectTimer;
    /** Until the attempt must have its `welcome`. */
    private connectTimer;
    /** Until the token refresh. */
    private refreshTimer;
    /** SSE: defers the reconnect after join()/leave()/refresh, so calls coalesce. */
    private restartTimer;
    private readonly heartbeat;
    private readonly connectWaiters;
    private readonly requests;
    /** The id of the `refresh` frame awaiting its reply. */
    private refreshId;
    /** SSE: the groups of the current request, and those its `welcome` confirmed. */
    private sseRequested;
    private sseConfirmed;
    /**
     * @param url the node's base URL (`https://push.example.com`), or its
     *   WebSocket (`wss://…/ws`) or SSE (`https://…/sse`) URL.
     */
    constructor(url: string, options?: FanoutClientOptions);
    /** The connection state. */
    get state(): ConnectionState;
    /** The transport of the current connection, or null. */
    get transport(): TransportKind | null;
    /** The current connection's `welcome`, or null. */
    get welcome(): WelcomeFrame | null;
    /** The groups the client is in, or will be put in when it connects. */
    get groups(): string[];
    /** Where the client is on each channel; pass it as `positions` to resume in a new client. */
    positions(): Positions;
    /**
     * Starts connecting (and reconnecting until `close()` or a `bye` that
     * forbids it). Resolves at the first `welcome`; rejects with `closed` (or
     * the stop reason) when the client stops before that.
     */
    connect(): Promise<void>;
    /**
     * Stops for good: closes the connection, clears every timer, rejects
     * pending requests with `closed`. `connect()` may start the client again.
     */
    close(): void;
    /** Adds a handler; returns the function that removes it. */
    on<K extends EventName>(name: K, handler: (event: FanoutEvents[K]) => void): () => void;
    /**
     * Joins a group, now if connected, else with the next connection; the
     * group is rejoined (and resumed) after every reconnect. Resolves with
     * the `joined` frame; rejects with the server's code (`forbidden`,
     * `too_many_groups`…), and then the group is dropped.
     */
    join(group: string): Promise<JoinedFrame>;
    /**
     * Leaves a group and stops rejoining it. Resolves with the `left` frame
     * (made up by the client when it is not connected: a new connection
     * starts in no group). A pending `join()` of the group rejects with
     * `cancelled`.
     */
    leave(group: string): Promise<LeftFrame>;
    /**
     * Publishes to a group (the token's `publish` claim must allow it).
     * Resolves with the `ack`. While disconnected the publish waits for the
     * next WebSocket connection (at most `maxQueuedPublishes` of them, each
     * at most `requestTimeout`). It is sent at most once: when the
     * connection drops before the `ack` it rejects with `disconnected`
     * (`sent: true`, outcome unknown). Over SSE it rejects with `not_supported`.
     */
    publish(group: string, event?: string, data?: unknown): Promise<AckFrame>;
    private pickTransport;
    private attempt;
    private tokenFailed;
    private handlers;
    private openWs;
    private openSse;
    /** Ends the current connection from this side and reconnects. */
    private drop;
    /** An SSE connection cannot change groups or token: replace it. */
    private restartSse;
    private onFrame;
    private onWelcome;
    private onMessage;
    private onJoined;
    private onLeft;
    private onError;
    private sendJoin;
    private sendPublish;
    private synthJoined;
    private settleJoin;
    /** A join failed: the group is dropped; the error goes to the caller, or to `error` handlers. */
    private joinFailed;
    /** Refresh halfway through the token's remaining life, at most 60 s before `exp`. */
    private scheduleRefresh;
    private refresh;
    /**
     * Over WebSocket the server's pings are invisible to the browser API, so
     * after one silent heartbeat interval the client sends a `ping` frame; a
     * connection silent for `heartbeatTolerance` intervals is dead. Over SSE
     * (fetch reader) the server's comment lines count.
     */
    private watchHeartbeats;
    private stopConnectionTimers;
    /** The attempt or connection `gen` is over: stop, or reconnect later. */
    private ended;
    private stop;
    private setState;
    private emit;
}
