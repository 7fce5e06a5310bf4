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
//! Layers from the top; a module imports only from layers below it
//! (`tests/layering.rs` checks it, docs/architecture.md explains it).
//! - [`app`]: settings built once from the configuration; builds, runs and
//!   shuts down a gateway. [`dev`]: `serve --dev` secrets and banner.
//!   [`server`]: the client listener's accept loop (header deadline,
//!   connection cap).
//! - [`api`]: the backend HTTP API and the internal `/metrics`, `/healthz`,
//!   `/readyz`; in `--dev` mode `/dev/*` for the demo page. [`transport`]:
//!   client transports (WebSocket, SSE). [`web`]: `/client.js` and the
//!   `--dev` demo page.
//! - [`state`]: what every handler shares.
//! - [`client`]: what a client frame means; the one error → code mapping.
//! - [`node`]: connect, join, leave, publish, commands, subscriptions,
//!   dispatch, cluster queries, drain.
//! - [`broker`]: the `Broker` trait, the in-process and Redis brokers, the
//!   JSON published on Redis.
//! - [`hub`]: the sharded registry of sessions; no I/O.
//! - [`auth`], [`session`], [`origin`], [`limits`], [`stages`]: tokens and
//!   API keys; one connection's queue and groups; the Origin policy; rate
//!   limits; where a broadcast's time goes inside the node.
//! - [`config`], [`metrics`]: flags and validation; every metric.
//! - [`protocol`]: wire frames, error and close codes, names; no I/O.
//! - [`ids`], [`shutdown`], [`http_error`], [`log_limit`]: leaves.

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
pub mod limits;
pub mod log_limit;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod protocol;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stages;
pub mod state;
pub mod transport;
pub mod web;
