//! The client listener's accept loop: HTTP/1.1 with a deadline for request
//! headers, a cap on open connections, and accept errors that slow the
//! loop down instead of spinning or stopping it.
//!
//! axum's own `serve` sets no timer, so hyper enforced no header timeout: a
//! client that sent nothing, or half its headers a byte at a time
//! (slowloris), or an idle keep-alive connection, held a file descriptor
//! forever, and enough of them locked every new client out. Here:
//! - a connection must finish each request's headers within
//!   `--http-header-timeout`, counted from when it is accepted or from the
//!   end of its previous response (hyper ≥ 1.6 starts the timer on an idle
//!   keep-alive connection too), or it is closed;
//! - at most `--max-connections` connections are open at once; one over it
//!   is closed as soon as it is accepted (and counted), so the node never
//!   runs out of file descriptors for its clients, Redis and its files. A
//!   WebSocket or SSE connection keeps its slot for as long as it lives
//!   ([`ConnectionSlot`] travels with the request into the transport);
//! - an accept error (`EMFILE` when other files used up the limit anyway)
//!   is logged at most once every 10 s and the loop pauses briefly, then
//!   carries on by itself.

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::{
    log_limit::LogLimiter,
    metrics::{self, Rejected},
    state::ConnectionSlot,
};

/// How long the loop pauses after an accept error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

static ACCEPT_ERROR_LOG: LogLimiter = LogLimiter::new(Duration::from_secs(10));
static FULL_LOG: LogLimiter = LogLimiter::new(Duration::from_secs(10));

#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the connections' in-flight requests (upgraded
/// WebSocket connections are the transport's to drain).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // Tells every connection to finish its in-flight request and close;
    // the tracker waits for them.
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if let Some(suppressed) = ACCEPT_ERROR_LOG.allow() {
                        tracing::error!(error = %e, suppressed, "accept error; pausing briefly");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::connection_rejected(Rejected::NodeFull);
            if let Some(suppressed) = FULL_LOG.allow() {
                tracing::warn!(
                    max_connections = options.max_connections,
                    suppressed,
                    "at --max-connections: closing a new connection at once"
                );
            }
            drop(stream);
            continue;
        };
        let slot = ConnectionSlot(Arc::new(permit));
        let service = router.clone().map_request(move |req: Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(slot.clone());
            req
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_timeout);
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let closing = closing.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = closing.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// `--max-connections 0`: the open-files limit minus a reserve for Redis
/// connections, the internal listener and files, at least 64.
pub fn automatic_max_connections() -> usize {
    const RESERVE: u64 = 512;
    let soft = rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(RESERVE).max(64)).unwrap_or(usize::MAX)
}
