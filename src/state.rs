//! What every HTTP handler and connection shares: the node, the
//! authenticator, the configuration and the shutdown handle. Cloning is a
//! few reference-count bumps.

use std::sync::Arc;

use crate::{
    auth::Authenticator, config::Config, node::Node, origin::OriginPolicy, shutdown::Shutdown,
};

#[derive(Debug, Clone)]
pub struct AppState {
    pub node: Node,
    pub auth: Arc<Authenticator>,
    pub cfg: Arc<Config>,
    pub shutdown: Shutdown,
    /// Which pages may open client connections.
    pub origins: Arc<OriginPolicy>,
}
