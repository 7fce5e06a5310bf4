//! Client transports. A transport authenticates a client (or receives its
//! credentials from the HTTP layer), registers a session with the node,
//! drains the session's queue into its socket, and closes with the
//! session's [`CloseReason`](crate::protocol::CloseReason). Transports never
//! talk to the broker.

pub mod ws;
