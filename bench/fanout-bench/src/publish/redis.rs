//! PUBLISH straight to Redis over one plain TCP connection, with
//! `redis-protocol`'s RESP2 encoder and decoder (the codec fred is built on).
//!
//! The load generator shares the cores with the node under test, so this
//! spends as little as it can per message: each millisecond's PUBLISH
//! commands (back to back: 1,000 at a time) are encoded into one buffer and
//! written with one write; before each write, the same task reads the
//! replies that have arrived with one non-blocking read, so replies never
//! wake a task of their own. fred's pipelines cost 2.5 times as much CPU per
//! message (docs/benchmarks.md, section 8).
//!
//! Every reply is checked: an integer counts the PUBLISH as done, anything
//! else (an error reply, a lost connection) marks its message failed.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use fred::types::config::{Config, ServerConfig};
use redis_protocol::{
    error::RedisProtocolError,
    resp2::{
        decode::decode_range,
        encode::extend_encode_borrowed,
        types::{BorrowedFrame, RangeFrame},
    },
};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, net::TcpStream};

use super::{Dest, Drive, Sent};
use crate::{
    control::{group, uid},
    recorder::{latency_hist, unix_us},
};

/// PUBLISH commands whose replies have not been read yet, at most: bounds
/// what is in flight (and what Redis buffers for this connection).
const MAX_OUTSTANDING: usize = 20_000;

/// Messages per write when publishing back to back.
const BATCH: u64 = 1000;

/// Room made in the read buffer before each read: ~13,000 PUBLISH replies.
const READ_CHUNK: usize = 64 * 1024;

/// Where to PUBLISH: one Redis server, its credentials and database, and the
/// nodes' channel prefix.
#[derive(Debug)]
pub(crate) struct RedisTarget {
    /// `host:port`, resolved at each connect.
    addr: String,
    username: Option<String>,
    password: Option<String>,
    database: Option<u8>,
    prefix: String,
    /// `FCALL fanout_publish` (history kept) instead of `PUBLISH`.
    fcall: bool,
}

impl RedisTarget {
    /// Reads `redis://[[user]:password@]host[:port][/db]` (also `valkey://`)
    /// with fred's `Config::from_url`. TLS, cluster, sentinel and unix
    /// socket URLs are refused: this publisher speaks plain TCP to one server.
    pub(crate) fn parse(url: &str, prefix: &str, fcall: bool) -> anyhow::Result<Self> {
        let scheme = url::Url::parse(url)
            .with_context(|| format!("--redis {url}"))?
            .scheme()
            .to_owned();
        if scheme != "redis" && scheme != "valkey" {
            bail!(
                "--redis {url}: publishing straight to Redis needs a \
                 redis://[[user]:password@]host[:port][/db] URL (one server, no TLS), not {scheme}://"
            );
        }
        let config = Config::from_url(url).with_context(|| format!("--redis {url}"))?;
        let ServerConfig::Centralized { server } = &config.server else {
            bail!("--redis {url}: publishing straight to Redis needs one server");
        };
        Ok(Self {
            addr: format!("{}:{}", server.host, server.port),
            username: config.username,
            password: config.password,
            database: config.database,
            prefix: prefix.to_owned(),
            fcall,
        })
    }

    pub(crate) fn fcall(&self) -> bool {
        self.fcall
    }

    /// Opens a connection: TCP_NODELAY, then AUTH and SELECT when the URL
    /// has them and a PING, all in one write; fails unless each one succeeds.
    pub(crate) async fn connect(&self) -> anyhow::Result<TcpStream> {
        let mut stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to Redis at {}", self.addr))?;
        stream.set_nodelay(true)?;
        let mut buf = BytesMut::new();
        let mut names = Vec::new();
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => {
                    encode_command(&mut buf, &[b"AUTH", user.as_bytes(), password.as_bytes()])?;
                }
                None => encode_command(&mut buf, &[b"AUTH", password.as_bytes()])?,
            }
            names.push("AUTH");
        }
        if let Some(db) = self.database {
            encode_command(&mut buf, &[b"SELECT", db.to_string().as_bytes()])?;
            names.push("SELECT");
        }
        encode_command(&mut buf, &[b"PING"])?;
        names.push("PING");
        stream.write_all(&buf).await?;
        let mut replies = BytesMut::new();
        for name in names {
            match read_reply(&mut stream, &mut replies).await? {
                Reply::Simple(_) => {}
                Reply::Error(e) => bail!("Redis {name}: {e}"),
                other => bail!("Redis {name} answered {other:?}"),
            }
        }
        Ok(stream)
    }

    /// Writes the channel of a destination into `out`; a `Users`
    /// destination has one per user, published separately (see [`drive`]).
    fn channel(&self, dest: Dest, out: &mut String) {
        out.clear();
        out.push_str(&self.prefix);
        match dest {
            Dest::User(i) | Dest::Users { first: i, .. } => {
                out.push_str(":user:");
                out.push_str(&uid(i));
            }
            Dest::Group(g) => {
                out.push_str(":group:");
                out.push_str(&group(g, 1).unwrap_or_default());
            }
            Dest::All => out.push_str(":all"),
        }
    }
}

/// Appends a command to `buf`: a RESP2 array of bulk strings.
fn encode_command(buf: &mut BytesMut, args: &[&[u8]]) -> Result<(), RedisProtocolError> {
    let args: Vec<_> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    extend_encode_borrowed(buf, &BorrowedFrame::Array(&args), false).map(drop)
}

/// Appends `PUBLISH channel message` to `buf` (as [`encode_command`] would,
/// without allocating).
fn encode_publish(
    buf: &mut BytesMut,
    channel: &str,
    message: &str,
) -> Result<(), RedisProtocolError> {
    let args = [
        BorrowedFrame::BulkString(b"PUBLISH"),
        BorrowedFrame::BulkString(channel.as_bytes()),
        BorrowedFrame::BulkString(message.as_bytes()),
    ];
    extend_encode_borrowed(buf, &BorrowedFrame::Array(&args), false).map(drop)
}

/// Appends `FCALL fanout_publish 2 {<channel>}:h {<channel>}:m <channel>
/// <message>` to `buf`: the history function the nodes load
/// (src/broker/redis/fanout.lua), which appends the message to the
/// channel's history and publishes it, as a node does for each publish.
/// `keys` is scratch space for the two key names.
fn encode_fcall(
    buf: &mut BytesMut,
    keys: &mut String,
    channel: &str,
    message: &str,
) -> Result<(), RedisProtocolError> {
    keys.clear();
    let _ = write!(keys, "{{{channel}}}:h{{{channel}}}:m");
    let (stream, meta) = keys.split_at(keys.len() / 2);
    let args = [
        BorrowedFrame::BulkString(b"FCALL"),
        BorrowedFrame::BulkString(b"fanout_publish"),
        BorrowedFrame::BulkString(b"2"),
        BorrowedFrame::BulkString(stream.as_bytes()),
        BorrowedFrame::BulkString(meta.as_bytes()),
        BorrowedFrame::BulkString(channel.as_bytes()),
        BorrowedFrame::BulkString(message.as_bytes()),
    ];
    extend_encode_borrowed(buf, &BorrowedFrame::Array(&args), false).map(drop)
}

/// One reply, as far as this publisher cares.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// `:n`: PUBLISH's answer (the receivers).
    Integer(i64),
    /// `*…`: FCALL fanout_publish's answer (offset, epoch, receivers, repeated).
    Array,
    /// `+…`: OK, PONG.
    Simple(String),
    /// `-…`: the command failed.
    Error(String),
    /// Anything else, as the decoder saw it.
    Other(String),
}

impl Reply {
    fn from_range(buf: &[u8], frame: RangeFrame) -> Self {
        let text = |(start, end): (usize, usize)| {
            String::from_utf8_lossy(buf.get(start..end).unwrap_or_default()).into_owned()
        };
        match frame {
            RangeFrame::Integer(n) => Self::Integer(n),
            RangeFrame::SimpleString(r) => Self::Simple(text(r)),
            RangeFrame::Error(r) => Self::Error(text(r)),
            RangeFrame::Array(_) => Self::Array,
            other => Self::Other(format!("{other:?}")),
        }
    }
}

/// Decodes the reply at the front of `buf` and removes it; `None` while it
/// is incomplete.
fn take_reply(buf: &mut BytesMut) -> io::Result<Option<Reply>> {
    match decode_range(buf) {
        Ok(Some((frame, len))) => {
            let reply = Reply::from_range(buf, frame);
            buf.advance(len);
            Ok(Some(reply))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

/// Reads until one whole reply is buffered, and takes it.
async fn read_reply(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Reply> {
    loop {
        if let Some(reply) = take_reply(buf)? {
            return Ok(reply);
        }
        read_more(stream, buf).await?;
    }
}

/// Waits for more bytes from Redis; a closed connection is an error.
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<()> {
    buf.reserve(READ_CHUNK);
    match stream.read_buf(buf).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// The publishing side of one connection: the commands written and the
/// message each one's reply belongs to.
struct Conn {
    stream: TcpStream,
    /// The PUBLISH commands of one write; emptied after each.
    out: BytesMut,
    /// Replies read and not decoded yet.
    replies: BytesMut,
    /// The message offset of each PUBLISH written and not answered yet,
    /// oldest first (Redis answers in order).
    awaiting: VecDeque<usize>,
}

impl Conn {
    /// Settles every complete reply in the read buffer.
    fn settle_buffered(&mut self, sent: &mut Sent) -> io::Result<()> {
        while let Some(reply) = take_reply(&mut self.replies)? {
            let Some(offset) = self.awaiting.pop_front() else {
                note(
                    sent,
                    format!("Redis sent a reply nobody asked for: {reply:?}"),
                );
                continue;
            };
            match reply {
                Reply::Integer(_) | Reply::Array => {}
                Reply::Error(e) => fail(sent, offset, format!("PUBLISH: {e}")),
                other => fail(sent, offset, format!("PUBLISH answered {other:?}")),
            }
        }
        Ok(())
    }

    /// Reads whatever replies have arrived, without waiting (one read
    /// unless the buffer filled), and settles them.
    fn settle_arrived(&mut self, sent: &mut Sent) -> io::Result<()> {
        loop {
            self.replies.reserve(READ_CHUNK);
            let room = self.replies.capacity() - self.replies.len();
            match self.stream.try_read_buf(&mut self.replies) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.settle_buffered(sent)?;
                    if n < room {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for more replies and settles them.
    async fn settle_next(&mut self, sent: &mut Sent) -> io::Result<()> {
        read_more(&mut self.stream, &mut self.replies).await?;
        self.settle_buffered(sent)
    }

    /// The connection failed: every PUBLISH not answered yet failed. The
    /// error is kept even when none was waiting, since the run ends early.
    fn fail_awaiting(&mut self, sent: &mut Sent, error: &io::Error) {
        let error = format!("reading Redis replies: {error}");
        for offset in std::mem::take(&mut self.awaiting) {
            fail(sent, offset, error.clone());
        }
        note(sent, error);
    }
}

/// Marks message `offset` failed (send time 0), once, and keeps the error
/// if it is one of the first five distinct ones.
fn fail(sent: &mut Sent, offset: usize, error: String) {
    if let Some(t) = sent.send_times.get_mut(offset)
        && *t != 0
    {
        *t = 0;
        sent.failed += 1;
    }
    note(sent, error);
}

fn note(sent: &mut Sent, error: String) {
    if sent.errors.len() < 5 && !sent.errors.contains(&error) {
        sent.errors.push(error);
    }
}

/// Publishes `plan` on a new connection, in a task of its own (see
/// [`publish_all`]). A runtime worker then runs it on the thread that
/// processes the timer and the socket's readiness, instead of waking the
/// thread that awaits the drive (the coordinator's `block_on`) at every
/// write: a fifth to a quarter less CPU per message at 30,000 messages/s.
pub(super) async fn drive(
    target: Arc<RedisTarget>,
    plan: Drive,
    dest_of: impl Fn(u64) -> Dest + Send + 'static,
) -> Sent {
    let task = tokio::spawn(async move { publish_all(&target, plan, dest_of).await });
    task.await.unwrap_or_else(|e| Sent {
        sent: 0,
        failed: 0,
        errors: vec![format!("the Redis publisher failed: {e}")],
        send_times: Vec::new(),
        dests: Vec::new(),
        request_latency: latency_hist(),
        elapsed: Duration::ZERO,
    })
}

/// Publishes `plan` on a new connection: every millisecond (or, at rate 0,
/// 1,000 at a time) the messages due are encoded into one buffer and
/// written at once; replies are read and matched to messages as they come,
/// with at most 20,000 unanswered. A `Users` message is one PUBLISH per user.
async fn publish_all(target: &RedisTarget, plan: Drive, dest_of: impl Fn(u64) -> Dest) -> Sent {
    let start = Instant::now();
    let mut sent = Sent {
        sent: 0,
        failed: 0,
        errors: Vec::new(),
        send_times: vec![0; plan.count as usize],
        dests: Vec::with_capacity(plan.count as usize),
        request_latency: latency_hist(),
        elapsed: Duration::ZERO,
    };
    let stream = match target.connect().await {
        Ok(s) => s,
        Err(e) => {
            sent.errors.push(format!("{e:#}"));
            sent.send_times.clear();
            sent.elapsed = start.elapsed();
            return sent;
        }
    };
    let mut conn = Conn {
        stream,
        out: BytesMut::new(),
        replies: BytesMut::new(),
        awaiting: VecDeque::new(),
    };
    let padding = "x".repeat(plan.pad);
    let (mut channel, mut message, mut keys) = (String::new(), String::new(), String::new());
    let mut i = 0u64;
    while i < plan.count {
        if plan.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let mut settled = conn.settle_arrived(&mut sent);
        while settled.is_ok() && conn.awaiting.len() >= MAX_OUTSTANDING {
            settled = conn.settle_next(&mut sent).await;
        }
        if let Err(e) = settled {
            conn.fail_awaiting(&mut sent, &e);
            break;
        }
        let due = if plan.rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * plan.rate) as u64 + 1;
            if due <= i {
                let next = Duration::from_secs_f64(i as f64 / plan.rate);
                tokio::time::sleep(next.saturating_sub(start.elapsed())).await;
                continue;
            }
            due.min(plan.count)
        } else {
            (i + BATCH).min(plan.count)
        };
        let t = unix_us();
        let first_awaiting = conn.awaiting.len();
        for j in i..due {
            let dest = dest_of(j);
            let seq = plan.base_seq + j;
            message.clear();
            // `id` and `ts` first, as a node's body has them: fanout_publish
            // then skips the JSON parse it does for a backend's body that
            // lacks them, so this costs Redis what a node's publish does.
            let _ = write!(
                message,
                r#"{{"id":"b{seq}-{t}","ts":{ms},"event":"bench","data":{{"s":{seq},"t":{t},"p":"{padding}"}}}}"#,
                ms = t / 1000
            );
            sent.dests.push(dest);
            sent.send_times[j as usize] = t;
            let mut publish = |dest| {
                target.channel(dest, &mut channel);
                let encoded = if target.fcall {
                    encode_fcall(&mut conn.out, &mut keys, &channel, &message)
                } else {
                    encode_publish(&mut conn.out, &channel, &message)
                };
                match encoded {
                    Ok(()) => conn.awaiting.push_back(j as usize),
                    Err(e) => fail(&mut sent, j as usize, format!("encoding PUBLISH: {e}")),
                }
            };
            if let Dest::Users { .. } = dest {
                dest.users().for_each(|u| publish(Dest::User(u)));
            } else {
                publish(dest);
            }
        }
        i = due;
        let written = conn.stream.write_all(&conn.out).await;
        conn.out.clear();
        if let Err(e) = written {
            for offset in conn.awaiting.split_off(first_awaiting) {
                fail(&mut sent, offset, format!("writing to Redis: {e}"));
            }
            break;
        }
    }
    // Every complete reply read so far has been settled: wait for the rest.
    while !conn.awaiting.is_empty() {
        if let Err(e) = conn.settle_next(&mut sent).await {
            conn.fail_awaiting(&mut sent, &e);
        }
    }
    sent.send_times.truncate(i as usize);
    sent.sent = i - sent.failed;
    sent.elapsed = start.elapsed();
    sent
}

#[cfg(test)]
mod tests {
    use fanout_testkit::{RedisServer, available_for_tests};

    use super::*;

    /// A redis-server on a free port, or None (after saying why) when
    /// there is none and `FANOUT_REQUIRE_REDIS=1` does not demand one.
    fn redis_server() -> Option<RedisServer> {
        available_for_tests()
            .unwrap()
            .then(|| RedisServer::start().unwrap())
    }

    fn plan(count: u64, rate: f64) -> Drive {
        Drive {
            base_seq: 100,
            count,
            rate,
            duration: None,
            in_flight: 1,
            pad: 8,
        }
    }

    /// The URL gives one server, the credentials (decoded) and the
    /// database; TLS, cluster, sentinel and foreign URLs are refused.
    #[test]
    fn a_url_names_one_server_its_credentials_and_database() {
        let t = RedisTarget::parse("redis://127.0.0.1:6380", "p", false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:6380");
        assert_eq!((t.username, t.password, t.database), (None, None, None));
        let t = RedisTarget::parse("redis://:pw@localhost/3", "p", false).unwrap();
        assert_eq!(t.addr, "localhost:6379");
        assert_eq!(
            (t.username, t.password.as_deref(), t.database),
            (None, Some("pw"), Some(3))
        );
        let t = RedisTarget::parse("redis://bench:p%40ss@127.0.0.1:7000/0", "p", false).unwrap();
        assert_eq!(t.username.as_deref(), Some("bench"));
        assert_eq!((t.password.as_deref(), t.database), (Some("p@ss"), Some(0)));
        for url in [
            "rediss://127.0.0.1:6379",
            "redis-cluster://127.0.0.1:7000",
            "redis-sentinel://127.0.0.1:26379?sentinelServiceName=m",
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
        ] {
            assert!(
                RedisTarget::parse(url, "p", false).is_err(),
                "{url} accepted"
            );
        }
    }

    /// Channels are the nodes' `<prefix>:user:u<i>`, `:group:g<n>`, `:all`.
    #[test]
    fn channels_follow_the_nodes_naming() {
        let t = RedisTarget::parse("redis://127.0.0.1:6379", "fanout", false).unwrap();
        let mut ch = String::from("left over");
        for (dest, want) in [
            (Dest::User(7), "fanout:user:u7"),
            (
                Dest::Users {
                    first: 2,
                    n: 3,
                    of: 9,
                },
                "fanout:user:u2",
            ),
            (Dest::Group(3), "fanout:group:g3"),
            (Dest::All, "fanout:all"),
        ] {
            t.channel(dest, &mut ch);
            assert_eq!(ch, want);
        }
    }

    /// Commands of a batch are appended to one buffer as RESP2 arrays of
    /// bulk strings (lengths in bytes, not characters).
    #[test]
    fn a_batch_is_encoded_into_one_buffer() {
        let mut buf = BytesMut::new();
        encode_publish(&mut buf, "p:user:u1", "{}").unwrap();
        encode_publish(&mut buf, "p:all", "hé").unwrap();
        encode_command(&mut buf, &[b"AUTH", b"pw"]).unwrap();
        assert_eq!(
            &buf[..],
            "*3\r\n$7\r\nPUBLISH\r\n$9\r\np:user:u1\r\n$2\r\n{}\r\n\
             *3\r\n$7\r\nPUBLISH\r\n$5\r\np:all\r\n$3\r\nhé\r\n\
             *2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"
                .as_bytes()
        );
    }

    /// FCALL names the channel's two keys in its hash slot, then the
    /// channel and the body, as docs/redis.md tells a backend to.
    #[test]
    fn fcall_names_the_history_keys_of_the_channel() {
        let (mut buf, mut keys) = (BytesMut::new(), String::new());
        encode_fcall(&mut buf, &mut keys, "p:user:u1", "{}").unwrap();
        assert_eq!(
            &buf[..],
            "*7\r\n$5\r\nFCALL\r\n$14\r\nfanout_publish\r\n$1\r\n2\r\n\
             $13\r\n{p:user:u1}:h\r\n$13\r\n{p:user:u1}:m\r\n$9\r\np:user:u1\r\n$2\r\n{}\r\n"
                .as_bytes()
        );
    }

    /// Replies are taken one at a time; an incomplete one stays buffered
    /// until the rest arrives; bytes that are not RESP are an error.
    #[test]
    fn replies_are_decoded_in_order_and_a_partial_one_waits() {
        let mut buf = BytesMut::from(&b":3\r\n-NOPERM no\r\n+OK\r\n$-1\r\n:1"[..]);
        assert_eq!(take_reply(&mut buf).unwrap(), Some(Reply::Integer(3)));
        assert_eq!(
            take_reply(&mut buf).unwrap(),
            Some(Reply::Error("NOPERM no".into()))
        );
        assert_eq!(
            take_reply(&mut buf).unwrap(),
            Some(Reply::Simple("OK".into()))
        );
        assert!(matches!(
            take_reply(&mut buf).unwrap(),
            Some(Reply::Other(_))
        ));
        assert_eq!(take_reply(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b":1");
        buf.extend_from_slice(b"0\r\n");
        assert_eq!(take_reply(&mut buf).unwrap(), Some(Reply::Integer(10)));
        assert_eq!(take_reply(&mut buf).unwrap(), None);
        let mut junk = BytesMut::from(&b"?what\r\n"[..]);
        assert!(take_reply(&mut junk).is_err());
    }

    /// A batch encoded here, written at once to a real redis-server, is
    /// answered reply by reply, and the decoder reads every reply: one per
    /// PUBLISH, an error for a malformed command.
    #[tokio::test]
    async fn a_real_redis_answers_an_encoded_batch() {
        let Some(server) = redis_server() else { return };
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let mut buf = BytesMut::new();
        for i in 0..500 {
            encode_publish(&mut buf, &format!("nobody:{i}"), "{}").unwrap();
        }
        encode_command(&mut buf, &[b"PUBLISH", b"too few"]).unwrap();
        encode_publish(&mut buf, "nobody", "last").unwrap();
        stream.write_all(&buf).await.unwrap();
        let mut replies = BytesMut::new();
        for _ in 0..500 {
            let reply = read_reply(&mut stream, &mut replies).await.unwrap();
            assert_eq!(reply, Reply::Integer(0));
        }
        let Reply::Error(e) = read_reply(&mut stream, &mut replies).await.unwrap() else {
            panic!("a malformed PUBLISH was not refused");
        };
        assert!(e.contains("wrong number of arguments"), "{e}");
        let last = read_reply(&mut stream, &mut replies).await.unwrap();
        assert_eq!(last, Reply::Integer(0));
        assert!(replies.is_empty());
        assert_eq!(server.command_calls("publish").unwrap(), 501);
    }

    /// Connecting sends AUTH (an ACL user) and SELECT from the URL, and a
    /// wrong password fails the connect, not the run.
    #[tokio::test]
    async fn connect_authenticates_and_selects_the_database() {
        let Some(server) = redis_server() else { return };
        let acl = ["ACL", "SETUSER", "bench", "on", ">s3cret", "+@all"];
        assert_eq!(server.cli(&acl).unwrap().trim(), "OK");
        let url = format!("redis://bench:s3cret@127.0.0.1:{}/2", server.port);
        let held = RedisTarget::parse(&url, "p", false)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let clients = server.cli(&["CLIENT", "LIST"]).unwrap();
        assert!(
            clients
                .lines()
                .any(|l| l.contains(" db=2 ") && l.contains(" user=bench ")),
            "{clients}"
        );
        drop(held);
        let url = format!("redis://bench:wrong@127.0.0.1:{}", server.port);
        let err = RedisTarget::parse(&url, "p", false)
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("AUTH: WRONGPASS"), "{err:#}");
    }

    /// Back to back and paced, every message is published and every reply
    /// counted; a message to several users is one PUBLISH per user; a
    /// PUBLISH Redis refuses (a channel the ACL user may not use) counts as
    /// a failed message, with the reason.
    #[tokio::test]
    async fn every_reply_is_counted_and_refusals_count_as_failed() {
        let Some(server) = redis_server() else { return };
        let acl = [
            "ACL",
            "SETUSER",
            "bench",
            "on",
            ">s3cret",
            "resetchannels",
            "&bench:user:*",
            "-@all",
            "+publish",
            "+ping",
        ];
        assert_eq!(server.cli(&acl).unwrap().trim(), "OK");
        let url = format!("redis://bench:s3cret@127.0.0.1:{}", server.port);
        let target = RedisTarget::parse(&url, "bench", false).unwrap();
        let dest_of = |i: u64| match i {
            5 => Dest::Users {
                first: 10,
                n: 3,
                of: 50,
            },
            i if i % 10 == 0 => Dest::All,
            i => Dest::User(i % 50),
        };
        // Three writes of up to 1,000 messages.
        let sent = publish_all(&target, plan(2_500, 0.0), dest_of).await;
        assert_eq!((sent.sent, sent.failed), (2_250, 250), "{:?}", sent.errors);
        assert_eq!(sent.send_times.len(), 2_500);
        assert_eq!(sent.dests.len(), 2_500);
        for (i, t) in sent.send_times.iter().enumerate() {
            assert_eq!(*t == 0, i % 10 == 0, "message {i}");
        }
        assert!(
            sent.errors.iter().any(|e| e.contains("NOPERM")),
            "{:?}",
            sent.errors
        );
        assert_eq!(server.command_calls("publish").unwrap(), 2_250 + 2);

        // Paced: 20,000/s, one write per millisecond.
        let sent = publish_all(&target, plan(2_000, 20_000.0), |i| Dest::User(i % 50)).await;
        assert_eq!((sent.sent, sent.failed), (2_000, 0), "{:?}", sent.errors);
        assert!(
            sent.elapsed >= Duration::from_millis(95),
            "{:?}",
            sent.elapsed
        );
        assert_eq!(server.command_calls("publish").unwrap(), 2_252 + 2_000);
    }

    /// When Redis goes away mid-run the drive ends without hanging: what
    /// was not answered counts as failed, the rest is never sent.
    #[tokio::test]
    async fn a_lost_connection_fails_what_was_unanswered_and_ends_the_run() {
        let Some(mut server) = redis_server() else {
            return;
        };
        let target = RedisTarget::parse(&server.url(), "bench", false).unwrap();
        // Through the spawning entry point, as the scenarios call it.
        let run = tokio::spawn(drive(Arc::new(target), plan(1_000_000, 10_000.0), |i| {
            Dest::User(i % 50)
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill();
        let sent = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the drive hung after Redis went away")
            .unwrap();
        assert!(sent.sent > 0 && sent.sent < 1_000_000, "{}", sent.sent);
        let failed = sent.send_times.iter().filter(|t| **t == 0).count() as u64;
        assert_eq!(failed, sent.failed);
        assert_eq!(sent.sent + sent.failed, sent.send_times.len() as u64);
        assert!(
            sent.errors.iter().any(|e| e.contains("Redis")),
            "{:?}",
            sent.errors
        );
    }
}
