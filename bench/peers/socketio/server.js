'use strict';
// Socket.IO benchmark peer for `fanout-bench --target socketio`.
//
// It mirrors the shape of PHPSocket.IO's web-msg-sender, the usual "push to a
// user" Socket.IO deployment: clients connect and identify with a uid, may join
// named rooms, and an HTTP endpoint publishes an event to one uid, one room, or
// everyone. Several nodes share one Redis through @socket.io/redis-adapter's
// classic createAdapter(pub, sub), so a publish on node A reaches sockets on B.
// Only the WebSocket transport is offered (Engine.IO v4 / Socket.IO v5 frames).
//
//   node server.js --host 127.0.0.1 --port 0 --redis redis://127.0.0.1:6379 --node-id sio1
//
// Env fallbacks: SIO_HOST, SIO_PORT, SIO_REDIS_URL, SIO_NODE_ID,
// SIO_PING_INTERVAL_MS, SIO_PING_TIMEOUT_MS. See README.md for the wire protocol.
const http = require('node:http');
const { Server } = require('socket.io');

const FLAGS = ['host', 'port', 'redis', 'node-id', 'ping-interval-ms', 'ping-timeout-ms'];
function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m || !FLAGS.includes(m[1])) throw new Error(`unexpected argument: ${argv[i]} (flags: --${FLAGS.join(' --')})`);
    o[m[1]] = m[2] !== undefined ? m[2] : argv[++i];
    if (o[m[1]] === undefined) throw new Error(`--${m[1]} needs a value`);
  }
  return o;
}

const args = parseArgs(process.argv.slice(2));
const env = process.env;
const opt = {
  host: args.host || env.SIO_HOST || '127.0.0.1',
  port: Number(args.port || env.SIO_PORT || 0),
  redis: args.redis || env.SIO_REDIS_URL || '',
  node: args['node-id'] || env.SIO_NODE_ID || 'sio1',
  pingInterval: Number(args['ping-interval-ms'] || env.SIO_PING_INTERVAL_MS || 25000),
  pingTimeout: Number(args['ping-timeout-ms'] || env.SIO_PING_TIMEOUT_MS || 20000),
};
const MAX_BODY = 1 << 20;

// A uid or room name: a non-empty string or a number.
const named = (v) => (typeof v === 'string' || typeof v === 'number') && String(v) !== '';

// Emit through io (and so through the adapter): uid room, group room, or everyone.
function publish(to, room, event, content) {
  let target = io;
  if (named(to)) target = target.to(`uid:${to}`);
  if (named(room)) target = target.to(`room:${room}`);
  target.emit(event || 'new_msg', content);
}

function send(res, status, body, type) {
  const buf = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  res.writeHead(status, { 'content-type': type || 'application/json', 'content-length': buf.length });
  res.end(buf);
}

// Requests that are not Socket.IO's (engine.io forwards everything outside /socket.io/ here).
function onRequest(req, res) {
  const url = new URL(req.url, 'http://x');
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c);
  });
  req.on('end', () => {
    if (size > MAX_BODY) return send(res, 413, { error: 'body too large' });
    const body = Buffer.concat(chunks).toString('utf8');
    if (url.pathname === '/healthz') return send(res, 200, 'ok', 'text/plain');
    if (url.pathname === '/publish') {
      if (req.method !== 'POST') return send(res, 405, { error: 'use POST' });
      let msg;
      try {
        msg = JSON.parse(body);
      } catch (e) {
        return send(res, 400, { error: `bad JSON: ${e.message}` });
      }
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
        return send(res, 400, { error: 'body must be a JSON object' });
      }
      if (msg.event !== undefined && (typeof msg.event !== 'string' || msg.event === '')) {
        return send(res, 400, { error: 'event must be a non-empty string' });
      }
      if ([msg.to, msg.room].some((v) => v !== undefined && v !== null && v !== '' && !named(v))) {
        return send(res, 400, { error: 'to and room must be strings or numbers' });
      }
      publish(msg.to, msg.room, msg.event, msg.content);
      return send(res, 200, { ok: true });
    }
    // web-msg-sender's original API: GET|POST /?type=publish&to=<uid>&content=<text>
    // (POST may carry the fields as an application/x-www-form-urlencoded body).
    const q = new URLSearchParams(url.search);
    if (req.method === 'POST') new URLSearchParams(body).forEach((v, k) => q.set(k, v));
    if (url.pathname === '/' && q.get('type') === 'publish') {
      publish(q.get('to'), undefined, 'new_msg', q.get('content'));
      return send(res, 200, 'ok', 'text/plain');
    }
    send(res, 404, { error: 'not found' });
  });
}

const httpServer = http.createServer(onRequest);
const io = new Server(httpServer, {
  path: '/socket.io/',
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  pingInterval: opt.pingInterval,
  pingTimeout: opt.pingTimeout,
});

// The CONNECT packet must carry {"uid": "..."}; otherwise the client gets 44{"message":"uid required"}.
io.use((socket, next) => {
  const uid = socket.handshake.auth && socket.handshake.auth.uid;
  if (uid === undefined || uid === null || String(uid) === '') return next(new Error('uid required'));
  socket.data.uid = String(uid);
  next();
});

io.on('connection', (socket) => {
  socket.join(`uid:${socket.data.uid}`);
  // `join`/`leave` a group room; `login` (web-msg-sender style) adds a uid room. Each acks if asked.
  const handle = (event, prefix, op) =>
    socket.on(event, (name, ack) => {
      const reply = typeof ack === 'function' ? ack : () => {};
      if (!named(name)) return reply({ ok: false, error: `${event} needs a name` });
      Promise.resolve(op(`${prefix}${name}`)).then(
        () => reply({ ok: true }),
        (err) => reply({ ok: false, error: String(err && err.message) }),
      );
    });
  handle('login', 'uid:', (room) => socket.join(room));
  handle('join', 'room:', (room) => socket.join(room));
  handle('leave', 'room:', (room) => socket.leave(room));
});

let redisClients = [];
let stopping = false;
let listening = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(0), 3000).unref(); // e.g. Redis is down and unsubscribe/QUIT never answer
  try {
    // io.close() disconnects every socket, then waits for the HTTP server; drop lingering keep-alives.
    setTimeout(() => httpServer.closeAllConnections(), 1000).unref();
    await io.close();
    await Promise.all(redisClients.map((c) => (c.isReady ? c.quit() : c.disconnect()).catch(() => {})));
  } catch (err) {
    console.error(`[${opt.node}] shutdown on ${signal}:`, err);
  }
  process.exit(0);
}

async function main() {
  if (opt.redis) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    // Give up at startup after ~5 s without Redis; once serving, keep reconnecting.
    const reconnectStrategy = (retries, cause) => (listening ? Math.min(100 * retries, 2000) : retries >= 25 ? cause : 200);
    const pubClient = createClient({ url: opt.redis, socket: { reconnectStrategy } });
    const subClient = pubClient.duplicate();
    for (const c of [pubClient, subClient]) c.on('error', (err) => console.error(`[${opt.node}] redis:`, err.message));
    redisClients = [pubClient, subClient];
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
  }
  await new Promise((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(opt.port, opt.host, resolve);
  });
  listening = true;
  const { port } = httpServer.address();
  const line = { event: 'listening', host: opt.host, port, pid: process.pid, node: opt.node, redis: Boolean(opt.redis) };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
main().catch((err) => {
  console.error(`[${opt.node}] fatal:`, err);
  process.exit(1);
});
