//! fanout: a real-time push gateway.
//!
//! Backends publish a message to a user (every tab and device), a group, or
//! everyone, through the HTTP API; fanout pushes it to the matching
//! WebSocket connections. A [`node::Node`] owns the [`hub::Hub`] (which
//! sessions are here, by uid and by group) and a [`broker`] (how messages
//! reach the nodes that hold those sessions). The in-process broker serves a
//! single node; the Redis broker spreads the same contract over many.
//!
//! # Layout
//! - [`config`]: flags and `FANOUT_*` variables, validation.
//! - [`app`]: builds and runs a gateway, and shuts it down in order.
//! - [`api`]: HTTP routes, the backend API and its JSON errors.
//! - [`transport`]: the WebSocket connection loop.
//! - [`node`]: publish, join/leave, subscribe on first / unsubscribe on last.
//! - [`hub`]: the sharded registry of sessions; no I/O.
//! - [`session`]: one connection's identity, bounded queue and groups.
//! - [`broker`]: the `Broker` trait, the in-process and Redis brokers, the
//!   JSON published on Redis.
//! - [`protocol`]: wire frames, error and close codes, names; no I/O.
//! - [`auth`]: JWT verification, token minting, API key checks.
//! - [`shutdown`], [`state`], [`dev`], [`ids`], [`metrics`]: plumbing.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(not(test), warn(clippy::print_stdout, clippy::dbg_macro))]

pub mod api;
pub mod app;
pub mod auth;
pub mod broker;
pub mod client;
pub mod config;
pub mod dev;
pub mod http_error;
pub mod hub;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod protocol;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod transport;
