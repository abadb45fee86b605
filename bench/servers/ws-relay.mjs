// The yardstick: a bare `ws` relay speaking the shape of our protocol (welcome, peer-joined,
// relay to the other peers of the call). `raw` forwards frames untouched; `json` parses each
// frame and adds `from`, as any real relay must. Usage: node ws-relay.mjs raw|json (env PORT).
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { WebSocketServer } from 'ws';

const json = process.argv[2] === 'json';
const calls = new Map(); // callId -> Map<peerId, ws>
const http = createServer((_req, res) => res.writeHead(404).end());
const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });

http.on('upgrade', (req, socket, head) => {
  const m = /^\/ws\/call\/([A-Za-z0-9_-]{1,64})$/.exec(req.url);
  if (!m) return socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
  wss.handleUpgrade(req, socket, head, (ws) => join(ws, m[1]));
});

function join(ws, callId) {
  const peers = calls.get(callId) ?? new Map();
  calls.set(callId, peers);
  const peerId = randomUUID();
  ws.send(JSON.stringify({ type: 'welcome', peerId, callId, peers: [...peers.keys()] }));
  for (const other of peers.values()) other.send(JSON.stringify({ type: 'peer-joined', peerId }));
  peers.set(peerId, ws);
  ws.on('message', (data) => {
    let out = data;
    if (json) {
      let msg;
      try { msg = JSON.parse(data); } catch { return; }
      msg.from = peerId;
      out = JSON.stringify(msg);
    }
    for (const [id, other] of peers) if (id !== peerId) other.send(out, { binary: false });
  });
  ws.on('close', () => {
    peers.delete(peerId);
    if (peers.size === 0) calls.delete(callId);
  });
}

process.on('SIGTERM', () => process.exit(0)); // a clean exit, so --cpu-prof writes its profile
http.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'listening', port: http.address().port, mode: json ? 'json' : 'raw' }));
});
