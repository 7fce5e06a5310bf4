//! Builds a running gateway from a [`Config`]: authenticator, broker, node,
//! listener, router; and takes it down again in order.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

use crate::{
    api,
    auth::Authenticator,
    broker::{AnyBroker, EVENT_CHANNEL_CAPACITY, memory::MemoryBus},
    config::Config,
    node::{Node, NodeOptions, random_id},
    shutdown::{self, Shutdown},
    state::AppState,
};

/// A running gateway: its bound address and the handles to stop it.
#[derive(Debug)]
pub struct App {
    addr: SocketAddr,
    state: AppState,
    /// The HTTP server task; ends once shutdown is triggered and in-flight
    /// requests are done.
    server: JoinHandle<std::io::Result<()>>,
}

/// Starts a gateway on `cfg.listen` (port 0 picks a free port). `cfg` must
/// have passed [`Config::validate`].
pub async fn spawn(cfg: Config, shutdown: Shutdown) -> anyhow::Result<App> {
    let key = cfg.jwt_key()?;
    let auth = Authenticator::new(
        cfg.jwt_algorithm,
        &key,
        cfg.jwt_issuer.clone(),
        cfg.jwt_audience.clone(),
        &cfg.api_keys,
    )
    .context("loading the JWT key")?;
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let broker = AnyBroker::Memory(MemoryBus::new().broker(events_tx));
    let node = Node::new(
        NodeOptions {
            id: cfg.node_id.clone().unwrap_or_else(|| random_id(8)),
            max_queue_bytes: cfg.outbound_queue as usize,
            max_groups: cfg.max_groups,
            unsubscribe_linger: std::time::Duration::ZERO,
            query_timeout: std::time::Duration::from_secs(1),
        },
        broker,
    );
    node.start()
        .await
        .context("subscribing the broadcast channel")?;
    shutdown
        .tracker()
        .spawn(node.clone().dispatch(events_rx, shutdown.token().clone()));
    shutdown
        .tracker()
        .spawn(node.clone().dissolve(shutdown.token().clone()));

    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the client listener on {}", cfg.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let state = AppState {
        node,
        auth: Arc::new(auth),
        cfg: Arc::new(cfg),
        shutdown: shutdown.clone(),
    };
    let router = api::router(state.clone());
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.triggered())
            .into_future(),
    );
    tracing::info!(%addr, node = state.node.id(), "fanout listening");
    Ok(App {
        addr,
        state,
        server,
    })
}

impl App {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn node(&self) -> &Node {
        &self.state.node
    }

    pub fn auth(&self) -> &Authenticator {
        &self.state.auth
    }

    /// Stops accepting, closes every connection with `shutdown` (reconnect
    /// hints spread over the grace period), waits for connections and
    /// in-flight requests to finish, at most `shutdown_grace`.
    pub async fn shutdown(self) {
        let shutdown = &self.state.shutdown;
        shutdown.trigger();
        let grace = self.state.cfg.shutdown_grace;
        self.state
            .node
            .shutdown(grace.as_millis().min(u128::from(u64::MAX)) as u64 / 2)
            .await;
        let drained = async {
            if let Ok(Err(e)) = self.server.await {
                tracing::warn!(error = %e, "HTTP server ended with an error");
            }
            shutdown.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                open = self.state.node.counts().connections,
                "shutdown grace period over; exiting with connections still open"
            );
        }
    }
}

/// Runs until SIGTERM/SIGINT, then shuts down; a second signal exits at once.
pub async fn run(app: App) {
    shutdown::signal().await;
    tracing::info!("signal received: shutting down");
    tokio::select! {
        () = app.shutdown() => tracing::info!("shutdown complete"),
        () = shutdown::signal() => tracing::warn!("second signal: exiting now"),
    }
}
