//! What every HTTP handler and connection shares: the node, the
//! authenticator, the configuration and the shutdown handle. Cloning is a
//! few reference-count bumps.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::{
    auth::Authenticator, config::Config, limits::Limiter, node::Node, origin::OriginPolicy,
    shutdown::Shutdown,
};

#[derive(Debug, Clone)]
pub struct AppState {
    pub node: Node,
    pub auth: Arc<Authenticator>,
    pub cfg: Arc<Config>,
    pub shutdown: Shutdown,
    /// Which pages may open client connections.
    pub origins: Arc<OriginPolicy>,
    /// One request-rate limiter per API key (by its place in
    /// `--api-keys`), or none when `--api-rate` is 0.
    pub api_limits: Option<Arc<[Limiter]>>,
}

/// One TCP connection's place under `--max-connections` (see
/// [`crate::server`]): every request of the connection carries a clone,
/// and a WebSocket or SSE session keeps one for as long as it lives, so the
/// slot frees when the last holder is gone.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(pub Arc<OwnedSemaphorePermit>);
