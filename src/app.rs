//! Builds a running gateway from a [`Config`]: authenticator, broker, node,
//! listener, router; and takes it down again in order.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, routing::get};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

use crate::{
    api,
    auth::Authenticator,
    broker::{
        AnyBroker, EVENT_CHANNEL_CAPACITY, HistoryOptions,
        memory::MemoryBus,
        redis::{RedisBroker, RedisOptions},
    },
    config::{Config, ConfigError},
    http_error::HttpError,
    ids::random_id,
    limits::Limits,
    metrics,
    node::{Node, NodeOptions},
    origin::OriginPolicy,
    server::{self, ServeOptions},
    shutdown::{self, Shutdown},
    state::AppState,
    transport, web,
};

/// A gateway's validated configuration and what is derived from it once,
/// at start-up: the node id, the authenticator (a key file is read here,
/// once) and the Redis settings. Building it is where every configuration
/// problem is found, so `main` can report them all and exit 64.
#[derive(Debug, Clone)]
pub struct Settings {
    cfg: Arc<Config>,
    auth: Arc<Authenticator>,
    node_id: String,
    redis: Option<RedisOptions>,
    origins: Arc<OriginPolicy>,
    /// The in-process bus to join when there is no Redis; a fresh one when
    /// `None`. Several nodes on one bus behave like nodes on one Redis.
    bus: Option<MemoryBus>,
}

impl Settings {
    /// Validates `cfg` (with `--dev` secrets already filled in) and builds
    /// what the gateway needs from it, reporting every problem at once.
    pub fn from_config(cfg: Config) -> Result<Self, ConfigError> {
        let mut problems = cfg.problems();
        let node_id = cfg.node_id.clone().unwrap_or_else(|| random_id(8));
        let redis = RedisOptions::from_config(&cfg, &node_id).unwrap_or_else(|p| {
            problems.push(p);
            None
        });
        let origins = OriginPolicy::from_config(&cfg).unwrap_or_else(|p| {
            problems.push(p);
            OriginPolicy::default()
        });
        let auth = match Authenticator::from_config(&cfg) {
            Ok(auth) if problems.is_empty() => auth,
            Ok(_) => return Err(ConfigError { problems }),
            Err(p) => {
                problems.push(p);
                return Err(ConfigError { problems });
            }
        };
        Ok(Self {
            cfg: Arc::new(cfg),
            auth: Arc::new(auth),
            node_id,
            redis,
            origins: Arc::new(origins),
            bus: None,
        })
    }

    /// Joins `bus` instead of a bus of its own (no effect with Redis), so
    /// that several nodes in one process act as one service.
    pub fn on_bus(mut self, bus: MemoryBus) -> Self {
        self.bus = Some(bus);
        self
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }
}

/// A running gateway: its bound address and the handles to stop it.
#[derive(Debug)]
pub struct App {
    addr: SocketAddr,
    internal_addr: SocketAddr,
    state: AppState,
    /// The HTTP server task; ends once shutdown is triggered and in-flight
    /// requests are done.
    server: JoinHandle<std::io::Result<()>>,
}

/// Starts a gateway on `settings.config().listen` (port 0 picks a free
/// port).
pub async fn spawn(settings: Settings, shutdown: Shutdown) -> anyhow::Result<App> {
    let Settings {
        cfg,
        auth,
        node_id,
        redis,
        origins,
        bus,
    } = settings;
    let metrics = metrics::install();
    // Broker and dispatch tasks run until the connections are drained,
    // which the shutdown token alone would cut short.
    let background = shutdown.background();
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let (broker, linger) = match redis {
        None => {
            // An in-process broker is always connected.
            metrics::broker_connected(true);
            (
                AnyBroker::Memory(
                    bus.unwrap_or_else(|| MemoryBus::new(HistoryOptions::from_config(&cfg)))
                        .broker(events_tx),
                ),
                // Subscribing in-process costs nothing: no linger needed.
                Duration::ZERO,
            )
        }
        Some(opts) => {
            let broker = RedisBroker::connect(opts, events_tx, background)
                .await
                .context("connecting to Redis")?;
            (AnyBroker::Redis(broker), cfg.unsubscribe_linger)
        }
    };
    let node = Node::new(
        NodeOptions {
            id: node_id,
            max_queue_bytes: cfg.outbound_queue as usize,
            max_groups: cfg.max_groups,
            unsubscribe_linger: linger,
            query_timeout: cfg.query_timeout,
            max_recovery: cfg.max_recovery,
            max_json_depth: cfg.max_json_depth,
            limits: Limits::from_config(&cfg),
        },
        broker,
    );
    node.start()
        .await
        .context("subscribing the node's own channels")?;
    let stop = shutdown.background_token();
    background.spawn(node.clone().dispatch(events_rx, stop.clone()));
    background.spawn(node.clone().dissolve(stop.clone()));

    let listener = bind(cfg.listen)
        .with_context(|| format!("binding the client listener on {}", cfg.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let api_limits = Limits::from_config(&cfg)
        .api_limiters(auth.api_keys())
        .map(Arc::from);
    let state = AppState {
        node,
        auth,
        cfg,
        shutdown: shutdown.clone(),
        origins,
        api_limits,
    };
    let router = router(&state);
    let options = ServeOptions {
        header_timeout: state.cfg.http_header_timeout,
        max_connections: match state.cfg.max_connections {
            0 => server::automatic_max_connections(),
            n => n,
        },
    };
    let server = tokio::spawn(server::serve(
        listener,
        router,
        options,
        shutdown.triggered(),
    ));
    let internal_listener = TcpListener::bind(state.cfg.internal_addr)
        .await
        .with_context(|| {
            format!(
                "binding the internal listener on {}",
                state.cfg.internal_addr
            )
        })?;
    let internal_addr = internal_listener
        .local_addr()
        .context("reading the internal address")?;
    let internal = api::internal::router(state.clone(), metrics);
    // The internal listener outlives the drain (readiness must be seen
    // failing); it stops with the process.
    tokio::spawn(axum::serve(internal_listener, internal).into_future());
    tracing::info!(
        addr = %addr,
        internal = %internal_addr,
        node = state.node.id(),
        "fanout listening"
    );
    Ok(App {
        addr,
        internal_addr,
        state,
        server,
    })
}

/// The public router: the client transports and the backend API. Every
/// error, unknown paths and methods included, is a JSON body.
fn router(state: &AppState) -> Router {
    let router = Router::new()
        .route("/ws", get(transport::ws::handler))
        .route("/sse", get(transport::sse::handler))
        .nest("/api", api::router(state))
        .merge(web::router(state.cfg.dev));
    // The demo page's token minting and key-less publishing exist only in
    // development mode.
    let router = if state.cfg.dev {
        router.nest("/dev", api::dev::router(state))
    } else {
        router
    };
    router
        .fallback(|| async { HttpError::not_found() })
        .method_not_allowed_fallback(|| async { HttpError::method_not_allowed() })
        .with_state(state.clone())
}

/// Pending connections the client listener queues (the kernel caps it at
/// `net.core.somaxconn`); tokio's `bind` would use 128, too few for a
/// reconnect storm.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl App {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where /metrics, /healthz and /readyz are served.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
    }

    pub fn node(&self) -> &Node {
        &self.state.node
    }

    pub fn auth(&self) -> &Authenticator {
        &self.state.auth
    }

    /// The paced drain: readiness fails and new connections are refused at
    /// once; clients are closed over the drain window while messages keep
    /// flowing to the rest; in-flight API requests finish; then the broker
    /// closes. Returns within drain window + shutdown grace.
    pub async fn shutdown(self) {
        let cfg = self.state.cfg.clone();
        let shutdown = &self.state.shutdown;
        shutdown.trigger();
        metrics::draining(true);
        let deadline = tokio::time::Instant::now() + cfg.drain_window + cfg.shutdown_grace;
        self.state
            .node
            .drain(cfg.drain_window, cfg.drain_rate)
            .await;
        let drained = async {
            if let Ok(Err(e)) = self.server.await {
                tracing::warn!(error = %e, "HTTP server ended with an error");
            }
            shutdown.wait().await;
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!(
                open = self.state.node.counts().connections,
                "shutdown grace period over; exiting with connections still open"
            );
        }
        shutdown.stop_background();
        // QUIT to Redis; a dead Redis must not hold the exit up.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.state.node.close()).await;
        let _ = tokio::time::timeout_at(
            deadline.max(tokio::time::Instant::now()) + Duration::from_secs(1),
            shutdown.background_stopped(),
        )
        .await;
        metrics::draining(false);
    }
}

/// Runs until SIGTERM/SIGINT, then drains; a second signal exits at once.
/// Returns false when the second signal cut the drain short.
pub async fn run(app: App) -> bool {
    shutdown::signal().await;
    tracing::info!("signal received: draining");
    tokio::select! {
        () = app.shutdown() => {
            tracing::info!("shutdown complete");
            true
        }
        () = shutdown::signal() => {
            tracing::warn!("second signal: exiting now");
            false
        }
    }
}
