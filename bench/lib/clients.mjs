// Client peers for the three protocols the bench speaks: ours (also spoken by the bare ws
// relays) and PeerJS'. A phase sets `peer.onSignal(tsMicros, kind)`; everything else a server
// sends (welcome, peer-joined, OPEN, errors) is parsed here.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { ourTemplates, peerjsTemplates, readTimestamp, lastKind } from './signals.mjs';

const CONNECT_TIMEOUT_MS = 15_000;
const HANGUP_TIMEOUT_MS = 5_000;
/** PeerJS clients send HEARTBEAT every 5 s (pingInterval); we spread them over the period. */
const HEARTBEAT_MS = 5_000;
const HEARTBEAT_SLICES = 20;

const OURS = ourTemplates();
const nowMicros = () => Math.round(performance.now() * 1000);
const randomId = () => randomBytes(12).toString('base64url');

/** One WebSocket peer of a two-peer call. */
export class Peer {
  constructor(target, callId, side) {
    this.target = target;
    this.callId = callId;
    this.side = side; // 'a' joins first, 'b' second
    this.seq = 0;
    this.inFlight = 0;
    this.other = null;
    this.ws = null;
    this.closed = null; // Promise resolved on close
    this.onSignal = noop;
    this.onControl = noop;
    this.templates = target.protocol === 'peerjs' ? null : OURS;
    this.id = target.protocol === 'peerjs' ? `${callId}-${side}` : null;
    this.errors = [];
  }

  /** Opens the socket and resolves once the server has admitted us (welcome / OPEN). */
  connect() {
    const t = this.target;
    const url = t.protocol === 'peerjs'
      ? `ws://127.0.0.1:${t.port}/peerjs?key=peerjs&id=${this.id}&token=${randomId()}&version=1.5.5`
      : `ws://127.0.0.1:${t.port}/ws/call/${this.callId}`;
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      headers: { Origin: `http://127.0.0.1:${t.port}` },
    });
    this.ws = ws;
    this.closed = new Promise((resolve) => ws.once('close', (code) => { this.closeCode = code; resolve(code); }));
    ws.on('message', (buf) => {
      const ts = readTimestamp(buf);
      if (ts >= 0) this.onSignal(ts, lastKind);
      else this.control(buf);
    });
    ws.on('error', (err) => this.errors.push(err.message));
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => fail(new Error(`no welcome within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.onControl = noop;
        ws.terminate();
        reject(err);
      };
      ws.once('unexpected-response', (_req, res) => fail(new Error(`HTTP ${res.statusCode} on upgrade`)));
      this.closed.then((code) => fail(new Error(`closed ${code} before welcome: ${this.errors.join('; ') || this.lastControl || ''}`)));
      this.onControl = (msg) => {
        if ((msg.type === 'welcome' || msg.type === 'OPEN') && !settled) {
          settled = true;
          clearTimeout(timer);
          this.onControl = noop;
          this.welcome = msg;
          resolve(this);
        }
      };
    });
  }

  control(buf) {
    let msg;
    try { msg = JSON.parse(buf); } catch { return; }
    this.lastControl = buf.toString().slice(0, 200);
    if (msg.type === 'error' || msg.type === 'ERROR' || msg.type === 'ID-TAKEN') this.errors.push(this.lastControl);
    if (msg.type === 'peer-joined') this.joined?.();
    this.onControl(msg);
  }

  /** Sends the next signal of this peer's sequence: one SDP, then ten candidates, repeating. */
  sendNext() {
    const kind = this.seq++ % 11 === 0 ? (this.side === 'a' ? 'offer' : 'answer') : 'candidate';
    this.send(kind);
  }

  send(kind) {
    const tpl = this.templates[kind];
    this.ws.send(tpl.pre + nowMicros() + tpl.post);
  }

  /** Hangs up the way a client of this server would: `bye` on ours, a close otherwise. */
  async hangup() {
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    if (this.target.hangup === 'bye' && ws.readyState === WebSocket.OPEN) ws.send('{"type":"bye"}');
    else ws.close(1000);
    const timer = setTimeout(() => ws.terminate(), HANGUP_TIMEOUT_MS);
    await this.closed;
    clearTimeout(timer);
  }
}

function noop() {}

/** A two-peer call; `open()` resolves once both are admitted (and, if asked, `a` saw b join). */
export class Call {
  constructor(target) {
    this.target = target;
    this.id = randomId();
    this.a = new Peer(target, this.id, 'a');
    this.b = new Peer(target, this.id, 'b');
    this.a.other = this.b;
    this.b.other = this.a;
    if (target.protocol === 'peerjs') {
      const conn = `mc_${randomId().slice(0, 10)}`;
      this.a.templates = peerjsTemplates(this.b.id, conn);
      this.b.templates = peerjsTemplates(this.a.id, conn);
    }
  }

  async open({ waitJoined = true } = {}) {
    let joined = Promise.resolve();
    if (waitJoined && this.target.protocol !== 'peerjs') joined = new Promise((r) => { this.a.joined = r; });
    await this.a.connect();
    heartbeats.add(this.a);
    await this.b.connect();
    heartbeats.add(this.b);
    await withTimeout(joined, CONNECT_TIMEOUT_MS, 'peer-joined');
    return this;
  }

  async hangup() {
    heartbeats.delete(this.a);
    heartbeats.delete(this.b);
    await Promise.all([this.a.hangup(), this.b.hangup()]);
  }
}

/** PeerJS drops a client without HEARTBEAT for alive_timeout; keep every PeerJS peer alive. */
const heartbeats = {
  peers: new Set(),
  timer: null,
  slice: 0,
  add(peer) {
    if (peer.target.protocol !== 'peerjs') return;
    peer.hb = Math.floor(Math.random() * HEARTBEAT_SLICES);
    this.peers.add(peer);
    this.timer ??= setInterval(() => this.beat(), HEARTBEAT_MS / HEARTBEAT_SLICES);
  },
  delete(peer) {
    this.peers.delete(peer);
    if (this.peers.size === 0 && this.timer) { clearInterval(this.timer); this.timer = null; }
  },
  beat() {
    this.slice = (this.slice + 1) % HEARTBEAT_SLICES;
    for (const p of this.peers) if (p.hb === this.slice && p.ws.readyState === WebSocket.OPEN) p.ws.send('{"type":"HEARTBEAT"}');
  },
};

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]);
}

/** Runs `fn` over `items` with at most `n` at a time; returns settled results in order. */
export async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      try { out[i] = { ok: true, value: await fn(items[i], i) }; } catch (err) { out[i] = { ok: false, error: err.message }; }
    }
  }
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

export { nowMicros };
