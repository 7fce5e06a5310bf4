//! HTTP/1.1 on hyper's client: keep-alive connections for the publishers,
//! and one-off GETs for readiness probes and metrics scrapes.
//!
//! A connection is a `hyper::client::conn::http1` handshake: the
//! `SendRequest` handle and its `Connection` future, kept together in a
//! [`Conn`]. A request polls the connection future itself while it waits
//! for the response and its body, instead of leaving it to a task of its
//! own: the request and the socket I/O then run in one task, with no
//! wake-up of another task per request. Requests go out one at a time per
//! connection (no pipelining); whoever owns a `Conn` bounds the concurrency.
//! The publisher (`publish::drive`) gives each of its request loops its own
//! connections, so no pool or lock sits on the request path either.

use std::{future::Future, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{
    Request, StatusCode, Uri,
    client::conn::http1::{self, Connection, SendRequest},
    header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Io = TokioIo<TcpStream>;

/// One keep-alive connection: the handle requests are sent on, and the
/// future that does the connection's I/O, polled by whoever waits on it.
pub(crate) struct Conn<B: hyper::body::Body + 'static = Full<Bytes>> {
    sender: SendRequest<B>,
    conn: Connection<Io, B>,
    /// Set by a response with `Connection: close` (Sockudo's API sends it
    /// on every answer): the server is closing, open a new connection.
    closing: bool,
    /// Set once `conn` has finished (the server closed the connection,
    /// maybe right after handing over a response): it is never polled
    /// again, and the connection is not reused.
    ended: bool,
}

/// How long a request may still take once its connection has ended: what
/// the connection handed over before it went is there at once, and what
/// still needed it fails at once.
const ENDED_PATIENCE: Duration = Duration::from_secs(1);

impl<B: hyper::body::Body + 'static> std::fmt::Debug for Conn<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl<B> Conn<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async fn open(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        Ok(Self {
            sender,
            conn,
            closing: false,
            ended: false,
        })
    }

    /// Waits for `fut` while driving the connection. `Err` if the
    /// connection failed, or ended without `fut` getting what it waits for
    /// (it must not be used again then).
    async fn drive<F: Future>(
        conn: &mut Connection<Io, B>,
        ended: &mut bool,
        fut: F,
    ) -> Result<F::Output, String> {
        tokio::pin!(fut);
        if !*ended {
            tokio::select! {
                biased;
                out = &mut fut => return Ok(out),
                end = conn => {
                    *ended = true;
                    end.map_err(|e| e.to_string())?;
                }
            }
        }
        tokio::time::timeout(ENDED_PATIENCE, fut)
            .await
            .map_err(|_| "the server closed the connection".to_owned())
    }

    /// Sends `req` and reads the whole response.
    async fn request(&mut self, req: Request<B>) -> Result<(StatusCode, Bytes), String> {
        let Self {
            sender,
            conn,
            closing,
            ended,
        } = self;
        Self::drive(conn, ended, sender.ready())
            .await?
            .map_err(|e| e.to_string())?;
        let res = Self::drive(conn, ended, sender.send_request(req))
            .await?
            .map_err(|e| e.to_string())?;
        *closing = res
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let status = res.status();
        let body = Self::drive(conn, ended, res.into_body().collect())
            .await?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

/// `POST <path>` with a JSON body on one node, with `Authorization: Bearer
/// <key>` when given: the parts of the request that never change.
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    path: Uri,
    host: HeaderValue,
    bearer: Option<HeaderValue>,
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr, path: &str, bearer: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            path: path.parse()?,
            host: HeaderValue::from_str(&addr.to_string())?,
            bearer: bearer
                .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
                .transpose()?,
        })
    }

    /// Sends one JSON body on `conn` (opened first if `None`); the
    /// response's status and body. On an error, or when the server said it
    /// closes the connection, the connection is dropped, so the next
    /// request opens a new one.
    pub(crate) async fn post(
        &self,
        conn: &mut Option<Conn>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        self.post_to(conn, self.path.clone(), body).await
    }

    /// [`Self::post`] to another path and query on the same node (a
    /// signed Pusher API request differs every time).
    pub(crate) async fn post_to(
        &self,
        conn: &mut Option<Conn>,
        path: Uri,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = path;
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(b) = &self.bearer {
            headers.insert(AUTHORIZATION, b.clone());
        }
        let c = match conn {
            Some(c) => c,
            None => conn.insert(Conn::open(self.addr).await?),
        };
        let res = c.request(req).await;
        if res.is_err() || c.closing || c.ended {
            *conn = None;
        }
        res.map_err(|e| format!("HTTP request to {}: {e}", self.addr))
    }
}

/// `GET <path>` on a fresh connection; the status code, or `None` on any
/// error or after `timeout`.
pub(crate) async fn get_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let probe = async {
        let mut conn = Conn::<Empty<Bytes>>::open(addr).await.ok()?;
        let req = Request::get(path)
            .header(HOST, addr.to_string())
            .body(Empty::new())
            .ok()?;
        conn.request(req)
            .await
            .ok()
            .map(|(status, _)| status.as_u16())
    };
    tokio::time::timeout(timeout, probe).await.ok().flatten()
}

/// `GET <path>` on a fresh connection: the body of a 200 answer, or
/// `None` on any other answer, any error or after `timeout`.
pub(crate) async fn get_body(addr: SocketAddr, path: &str, timeout: Duration) -> Option<Bytes> {
    let get = async {
        let mut conn = Conn::<Empty<Bytes>>::open(addr).await.ok()?;
        let req = Request::get(path)
            .header(HOST, addr.to_string())
            .body(Empty::new())
            .ok()?;
        let (status, body) = conn.request(req).await.ok()?;
        (status == StatusCode::OK).then_some(body)
    };
    tokio::time::timeout(timeout, get).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// A server that answers every request on a connection with a chunked
    /// response, counting connections: sequential requests reuse one
    /// keep-alive connection, and chunked bodies are decoded.
    #[tokio::test]
    async fn requests_reuse_a_keep_alive_connection_and_read_chunked_bodies() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        // One request per read is enough here: the body
                        // is small and the client waits for the answer.
                        let text = String::from_utf8_lossy(&seen).to_string();
                        if !text.contains("\r\n\r\n{}") {
                            continue;
                        }
                        assert!(text.contains("authorization: Bearer k"), "{text}");
                        seen.clear();
                        let res = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                                   3\r\n{\"o\r\n5\r\nk\":1}\r\n0\r\n\r\n";
                        s.write_all(res.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        let endpoint = Endpoint::new(addr, "/api/publish", Some("k")).unwrap();
        let mut conn = None;
        for _ in 0..3 {
            let body = Bytes::from_static(b"{}");
            let (status, body) = endpoint.post(&mut conn, body).await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], br#"{"ok":1}"#);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            get_status(addr, "/", Duration::from_millis(200)).await,
            None,
            "the test server never answers a GET"
        );
    }

    /// A server that answers `Connection: close` and hangs up (as
    /// Sockudo's API does): the next request opens a new connection
    /// instead of failing on the closed one.
    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !String::from_utf8_lossy(&seen).contains("\r\n\r\n{}") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let res = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
                s.write_all(res.as_bytes()).await.unwrap();
                drop(s);
            }
        });
        let endpoint = Endpoint::new(addr, "/apps/1/events", None).unwrap();
        let mut conn = None;
        for i in 0..3 {
            let path: Uri = format!("/apps/1/events?n={i}").parse().unwrap();
            let body = Bytes::from_static(b"{}");
            let (status, _) = endpoint.post_to(&mut conn, path, body).await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert!(conn.is_none(), "a closing connection was kept");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
