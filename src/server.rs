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
//!   carries on by itself;
//! - a request whose target is over [`MAX_URI`] gets the JSON error 414,
//!   one whose headers are over [`MAX_HEADER_BYTES`] or [`MAX_HEADERS`]
//!   the JSON error 431, and the connection carries on. hyper reads a
//!   request's head into a buffer of at most [`HEAD_BUFFER`] (its default
//!   is ~400 KiB per connection) and parses at most [`HYPER_MAX_HEADERS`]
//!   headers; a head past those gets hyper's own bare 431 and the
//!   connection is closed. Our limits sit well inside hyper's, so every
//!   oversized head a real client sends gets the documented JSON body.

use std::{convert::Infallible, future::Future, io, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::{
    http_error::HttpError,
    log_limit::LogLimiter,
    metrics::{self, Rejected},
    state::ConnectionSlot,
};

/// How long the loop pauses after an accept error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Longest request target (path and query): room for a `?token=` JWT of a
/// few KiB and `?since=` positions; more is refused with 414.
pub const MAX_URI: usize = 8 * 1024;
/// Most bytes of request headers (names, values and their separators),
/// and most headers: more is refused with 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 100;
/// hyper's read buffer for a request head: comfortably above the limits
/// above (8 KiB + 16 KiB + the request line), so a head over them still
/// reaches [`oversized_head`]. Only a head over this gets hyper's bare 431.
pub const HEAD_BUFFER: usize = 64 * 1024;
/// Headers hyper parses before its own bare 431.
pub const HYPER_MAX_HEADERS: usize = 2 * MAX_HEADERS;

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
                Ok((stream, _)) => {
                    no_delay(&stream);
                    stream
                }
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
        let router = router.clone();
        let service = tower::service_fn(move |req: Request<Incoming>| {
            let (router, slot) = (router.clone(), slot.clone());
            async move {
                if let Some(refused) = oversized_head(&req) {
                    return Ok::<Response, Infallible>(refused.into_response());
                }
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(slot);
                router.oneshot(req).await
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_timeout)
            .max_buf_size(HEAD_BUFFER)
            .max_headers(HYPER_MAX_HEADERS);
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

/// Turns Nagle's algorithm off: every write here is a whole batch of frames
/// flushed once, and with Nagle on, a frame written while the previous one
/// is unacknowledged waits for its ACK, which a client that sends nothing
/// delays by up to 40 ms (delayed ACK). A failure only costs latency.
fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// The JSON error for a request head over our limits, if it is.
fn oversized_head<B>(req: &Request<B>) -> Option<HttpError> {
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, str::len)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI {
        return Some(HttpError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is over {MAX_URI} bytes"),
        ));
    }
    let headers = req.headers();
    // Each header as sent: name, ": ", value, CRLF.
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Some(HttpError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "request headers are limited to {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes"
            ),
        ));
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted connections write without Nagle's delay.
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(!stream.nodelay().unwrap());
        no_delay(&stream);
        assert!(stream.nodelay().unwrap());
    }
}
