export { FanoutClient } from "./client.js";
export { FanoutError } from "./errors.js";
export { formatSince, parseSince } from "./positions.js";
export type { AckFrame, ByeFrame, ConnectionState, ErrorFrame, EventName, EventSourceConstructor, EventSourceLike, FanoutClientOptions, FanoutEvents, FetchInit, FetchLike, FetchResponseLike, JoinedFrame, LeftFrame, MessageFrame, PongFrame, Position, Positions, RecoveryEvent, RefreshedFrame, ServerFrame, StateEvent, TransportKind, WebSocketConstructor, WebSocketLike, WelcomeFrame, } from "./types.js";
