//! A TCP proxy in front of Redis that can wedge the pub/sub connections
//! (they stay open but deliver nothing, the failure a probe must catch),
//! and hold back what a client sends from its next (S)SUBSCRIBE on, as a
//! busy Redis or network would, until the test lets it through.

#![allow(dead_code)]

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use parking_lot::Mutex;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

struct Conn {
    /// The client sent (S)SUBSCRIBE on this connection.
    subscriber: AtomicBool,
    /// Server → client bytes are swallowed.
    frozen: AtomicBool,
}

pub struct WedgeProxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    /// While true, a client → server chunk holding "subscribe" (and all
    /// that follows it on that connection) waits.
    hold: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WedgeProxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Arc<Conn>>>> = Arc::default();
        let registry = conns.clone();
        let (hold, held) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let conn = Arc::new(Conn {
                    subscriber: AtomicBool::new(false),
                    frozen: AtomicBool::new(false),
                });
                registry.lock().push(conn.clone());
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = conn.clone();
                let mut held = held.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let chunk = &buf[..n];
                        if chunk
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"subscribe"))
                        {
                            up.subscriber.store(true, Ordering::Relaxed);
                            if held.wait_for(|hold| !*hold).await.is_err() {
                                break;
                            }
                        }
                        if sw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if conn.frozen.load(Ordering::Relaxed) {
                            continue;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            port,
            conns,
            hold,
            task,
        }
    }

    /// From now on, each connection's next (S)SUBSCRIBE, and everything the
    /// client sends after it, waits for [`WedgeProxy::release_subscribes`].
    pub fn hold_subscribes(&self) {
        self.hold.send_replace(true);
    }

    pub fn release_subscribes(&self) {
        self.hold.send_replace(false);
    }

    /// Wedges one pub/sub connection (the first opened); returns whether
    /// there was one.
    pub fn wedge_one_subscriber(&self) -> bool {
        let conns = self.conns.lock();
        match conns.iter().find(|c| c.subscriber.load(Ordering::Relaxed)) {
            Some(c) => {
                c.frozen.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Wedges every pub/sub connection open now; later ones work.
    /// Returns how many were wedged.
    pub fn wedge_subscribers(&self) -> usize {
        let conns = self.conns.lock();
        let mut n = 0;
        for c in conns
            .iter()
            .filter(|c| c.subscriber.load(Ordering::Relaxed))
        {
            c.frozen.store(true, Ordering::Relaxed);
            n += 1;
        }
        n
    }
}

impl Drop for WedgeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
