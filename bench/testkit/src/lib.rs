//! Support shared by fanout's integration tests (`tests/support/`) and the
//! load tool (`bench/fanout-bench`): real `redis-server` processes on free
//! loopback ports, and Redis Cluster topologies built from them.
//!
//! Everything here is fallible (`io::Result`) and never panics: the load
//! tool reports errors, and tests unwrap them where they want a failure.
//! `REDIS_SERVER_BIN` / `REDIS_CLI_BIN` override the binaries found on
//! `PATH`.
//!
//! # Layout
//! - `redis`: [`RedisServer`] (spawn, PING until up, log on failure, kill
//!   and restart on the same port, `redis-cli` helpers), [`RedisCluster`].

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod redis;

use std::{io, net::TcpListener};

pub use redis::{
    RedisBuilder, RedisCluster, RedisServer, available_for_tests, cli, cli_bin, server_bin,
    server_found, slot_owner,
};

/// A loopback port nothing listens on right now (another process may take
/// it before the caller binds it: good enough for tests on one machine).
pub fn free_port() -> io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}
