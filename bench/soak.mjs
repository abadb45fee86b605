// A bounded soak of the signaling server: N call slots of two peers each place a call, relay
// numbered signals both ways, hang up and start again, for a set time, against two workers
// (`node dist/main.js`, WEB_CONCURRENCY=2) sharing a redis-server this script starts on a free
// loopback port. Then a churn phase runs connect/join/leave cycles back to back (the issue's
// 20,000) and compares the server's memory and Redis keys with their values before it.
//
//   node bench/soak.mjs [--calls 500] [--minutes 10] [--churn 20000] [--rate 2] [--workers 2]
//
// --calls    call slots running at once (two peers each)                  default 500
// --minutes  length of the soak phase                                     default 10
// --churn    connect/join/leave cycles in the churn phase (0 skips it)    default 20000
// --rate     signals a second each peer sends while its call is up        default 2 (4 per call)
// --workers  WEB_CONCURRENCY of the server                                default 2
//
// Reported: errors (target 0), signals lost (0), duplicated, reordered, relay latency p50/p99/max
// per 30 s window, the server's memory (RSS of the primary and workers) and Redis keys/memory
// over time. Prints a table and writes bench/results/soak.json. Loopback only; every process it
// starts is stopped at the end, and a hard deadline stops the run if anything hangs.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { cpuMeter, rssKiB, tree } from './lib/proc.mjs';
import { redisCommand, startRedis } from './lib/redis.mjs';
import { startServer } from './lib/server.mjs';
import { Samples } from './lib/stats.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = join(ROOT, 'bench', 'results');

function flag(name, fallback) {
  const args = process.argv.slice(2);
  const i = args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (i < 0) return fallback;
  const v = args[i].includes('=') ? args[i].split('=')[1] : args[i + 1];
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} needs a number, got ${v}`);
  return n;
}

const CALLS = flag('calls', 500);
const MINUTES = flag('minutes', 10);
const CHURN = flag('churn', 20_000);
const RATE = flag('rate', 2);
const WORKERS = flag('workers', 2);
const WINDOW_MS = 30_000;
const SAMPLE_MS = 5_000;
/** Call length in the soak: uniformly 5 to 20 s, then hang up and place the next call. */
const CALL_MS = [5_000, 20_000];
const CHURN_CONCURRENCY = 50;
const CONNECT_TIMEOUT_MS = 15_000;
/**
 * How long a call waits, after its last signal, for everything to arrive before hanging up.
 * Whatever has not arrived by then is counted lost (a hang-up drops what is still on its way).
 */
const DRAIN_MS = 30_000;
/** Hard stop: the soak, the churn at a pessimistic 100 cycles/s, and 3 minutes of start-up and settling. */
const DEADLINE_MS = MINUTES * 60_000 + (CHURN / 100) * 1000 + 180_000;

const hardStop = setTimeout(() => {
  console.error(`soak: still running after ${Math.round(DEADLINE_MS / 1000)} s; stopping everything`);
  cleanup().finally(() => process.exit(2));
}, DEADLINE_MS);
hardStop.unref();

let server = null;
let loadAtStart = null;
let redis = null;
async function cleanup() {
  await server?.stop().catch(() => {});
  await redis?.stop().catch(() => {});
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => cleanup().finally(() => process.exit(130)));

// ---------------------------------------------------------------------------------------------
// Counting: per window and in total.

function newWindow(start) {
  return {
    start, latency: new Samples(1 << 14), signals: 0, lost: 0, duplicated: 0, reordered: 0, errors: {}, callsDone: 0,
    serverCpu: server ? cpuMeter(server.pid) : null, selfCpu: process.cpuUsage(), selfWall: performance.now(),
  };
}
const loopLag = monitorEventLoopDelay({ resolution: 10 });
const totals = { signals: 0, sent: 0, lost: 0, duplicated: 0, reordered: 0, errors: {}, callsDone: 0, cycles: 0 };
let win = newWindow(0);
const windows = [];
const memory = [];
let t0 = 0;
let activeCalls = 0;

function error(kind, detail) {
  totals.errors[kind] = (totals.errors[kind] ?? 0) + 1;
  win.errors[kind] = (win.errors[kind] ?? 0) + 1;
  if ((totals.errors[kind] ?? 0) <= 3) console.error(`  error ${kind}: ${String(detail).slice(0, 200)}`);
}

const SDP = `v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n${'a=candidate-padding:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n'.repeat(25)}`;
const CANDIDATE = { candidate: 'candidate:842163049 1 udp 1677729535 192.0.2.17 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0', sdpMid: '0', sdpMLineIndex: 0 };

/** One direction of a call: what was sent and what arrived. */
class Direction {
  constructor() {
    this.sent = 0;
    this.expected = 0;
    this.gaps = new Set();
    this.received = 0;
  }
  take(seq, sentAt) {
    const now = performance.now();
    win.latency.add(now - sentAt);
    win.signals += 1;
    totals.signals += 1;
    this.received += 1;
    if (seq === this.expected) this.expected += 1;
    else if (seq > this.expected) {
      for (let s = this.expected; s < seq; s++) this.gaps.add(s);
      this.expected = seq + 1;
    } else if (this.gaps.delete(seq)) {
      win.reordered += 1;
      totals.reordered += 1;
    } else {
      win.duplicated += 1;
      totals.duplicated += 1;
    }
  }
  /** Lost = never arrived (holes, and the tail the receiver never got). */
  settle() {
    const lost = this.gaps.size + (this.sent - this.expected);
    win.lost += lost;
    totals.lost += lost;
    totals.sent += this.sent;
  }
}

// ---------------------------------------------------------------------------------------------
// Peers and calls.

/** Opens a socket to a call and resolves with {ws, welcome, messages} once welcomed. */
function openPeer(port, callId, onSignal) {
  return new Promise((resolvePeer, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/call/${callId}`, { perMessageDeflate: false });
    const peer = { ws, welcome: null, control: [], closed: null, closeCode: null, waiters: [] };
    peer.closed = new Promise((r) => ws.once('close', (code) => { peer.closeCode = code; r(code); peer.waiters.forEach((w) => w()); }));
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('no welcome in time')); }, CONNECT_TIMEOUT_MS);
    ws.on('error', (err) => { clearTimeout(timer); reject(err); });
    ws.on('unexpected-response', (_req, res) => { clearTimeout(timer); reject(new Error(`HTTP ${res.statusCode}`)); ws.terminate(); });
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (typeof m.seq === 'number' && typeof m.from === 'string') return onSignal(m);
      if (m.type === 'welcome') {
        clearTimeout(timer);
        peer.welcome = m;
        return resolvePeer(peer);
      }
      if (m.type === 'error') error(`server error: ${m.code}`, m.message);
      peer.control.push(m);
      for (const w of peer.waiters.splice(0)) w();
    });
  });
}

/** Waits for a control message of `type` on `peer`. */
function nextControl(peer, type, ms) {
  return new Promise((res, rej) => {
    const deadline = setTimeout(() => rej(new Error(`no ${type} in ${ms} ms`)), ms);
    const check = () => {
      const i = peer.control.findIndex((m) => m.type === type);
      if (i >= 0) {
        clearTimeout(deadline);
        res(peer.control.splice(i, 1)[0]);
      } else if (peer.closeCode !== null) {
        clearTimeout(deadline);
        rej(new Error(`closed ${peer.closeCode} before ${type}`));
      } else peer.waiters.push(check);
    };
    check();
  });
}

function signal(seq, kind) {
  const t = performance.now();
  return JSON.stringify(kind === 'candidate' ? { type: 'candidate', candidate: CANDIDATE, seq, t } : { type: kind, sdp: SDP, seq, t });
}

/** One call, start to hang-up. `signals` false for the churn phase's bare connect/join/leave. */
async function oneCall(port, { lengthMs, signals }) {
  const callId = `soak-${randomBytes(12).toString('base64url')}`;
  const ab = new Direction();
  const ba = new Direction();
  let a;
  let b;
  try {
    a = await openPeer(port, callId, (m) => ba.take(m.seq, m.t));
    b = await openPeer(port, callId, (m) => ab.take(m.seq, m.t));
    await nextControl(a, 'peer-joined', CONNECT_TIMEOUT_MS);
  } catch (err) {
    error('connect', err.message);
    a?.ws.terminate();
    b?.ws.terminate();
    return false;
  }
  activeCalls += 1;
  try {
    if (signals) {
      const period = 1000 / RATE;
      const end = performance.now() + lengthMs;
      const send = (peer, dir, first) => {
        if (peer.ws.readyState !== WebSocket.OPEN) return;
        const kind = dir.sent % 11 === 0 ? first : 'candidate';
        peer.ws.send(signal(dir.sent++, kind));
      };
      while (performance.now() < end) {
        send(a, ab, 'offer');
        send(b, ba, 'answer');
        await sleep(period * (0.5 + Math.random()));
      }
      const drainEnd = performance.now() + DRAIN_MS;
      while (performance.now() < drainEnd && (ab.received < ab.sent || ba.received < ba.sent)) await sleep(20);
    } else {
      a.ws.send(signal(ab.sent++, 'candidate'));
      b.ws.send(signal(ba.sent++, 'candidate'));
      const drainEnd = performance.now() + DRAIN_MS;
      while (performance.now() < drainEnd && (ab.received < ab.sent || ba.received < ba.sent)) await sleep(2);
    }
    ab.settle();
    ba.settle();
    a.ws.send('{"type":"bye"}');
    const left = await nextControl(b, 'peer-left', CONNECT_TIMEOUT_MS);
    if (left.reason !== 'hangup') error('peer-left reason', left.reason);
    b.ws.send('{"type":"bye"}');
    const codes = await Promise.race([Promise.all([a.closed, b.closed]), sleep(CONNECT_TIMEOUT_MS).then(() => null)]);
    if (!codes) error('hang-up', 'sockets not closed after bye');
    else if (codes.some((c) => c !== 1000)) error('close code', codes.join(','));
    win.callsDone += 1;
    totals.callsDone += 1;
    totals.cycles += 2;
    return true;
  } catch (err) {
    error('call', err.message);
    return false;
  } finally {
    activeCalls -= 1;
    a.ws.terminate();
    b.ws.terminate();
  }
}

// ---------------------------------------------------------------------------------------------
// Server memory and Redis, sampled.

async function sampleMemory() {
  const pids = tree(server.pid);
  const perProcess = pids.map((p) => rssKiB(p));
  let redisKeys = null;
  let redisBytes = null;
  try {
    redisKeys = Number(await redisCommand(redis.port, 'DBSIZE').then((r) => r.replace(/^:/, '')));
    redisBytes = Number(/used_memory:(\d+)/.exec(await redisCommand(redis.port, 'INFO memory'))?.[1]);
  } catch {
    // counted as unknown
  }
  const s = { t: Math.round((performance.now() - t0) / 1000), rssKiB: perProcess.reduce((x, y) => x + y, 0), perProcessKiB: perProcess, redisKeys, redisBytes };
  memory.push(s);
  return s;
}

/** Keys of the server's prefix that never expire on their own within minutes (rosters, groups). */
async function lastingKeys() {
  let cursor = '0';
  let n = 0;
  do {
    const reply = await scan(cursor);
    cursor = reply.cursor;
    n += reply.keys.filter((k) => /^callsig:(r|g|gc):/.test(k)).length;
  } while (cursor !== '0');
  return n;
}

/** One SCAN page, parsed from RESP without a client library. */
function scan(cursor) {
  return new Promise((res, rej) => {
    import('node:net').then(({ createConnection }) => {
      const sock = createConnection({ host: '127.0.0.1', port: redis.port });
      let buf = '';
      sock.on('error', rej);
      sock.on('data', (d) => {
        buf += d;
        const lines = buf.split('\r\n');
        if (lines[0] !== '*2' || lines.length < 4) return;
        const count = Number(lines[3]?.slice(1));
        if (!(lines.length >= 4 + count * 2)) return;
        const keys = [];
        for (let i = 0; i < count; i++) keys.push(lines[5 + i * 2]);
        sock.end();
        res({ cursor: lines[2], keys });
      });
      sock.write(`SCAN ${cursor} MATCH callsig:* COUNT 1000\r\n`);
    }, rej);
  });
}

// ---------------------------------------------------------------------------------------------
// The run.

function closeWindow(now) {
  const s = win.latency.summary();
  const self = process.cpuUsage(win.selfCpu);
  const selfPct = Math.round(((self.user + self.system) / 1000 / (performance.now() - win.selfWall)) * 1000) / 10;
  const lagP99 = Math.round(loopLag.percentile(99) / 1e4) / 100;
  loopLag.reset();
  windows.push({
    fromS: Math.round(win.start / 1000),
    toS: Math.round(now / 1000),
    calls: activeCalls,
    callsDone: win.callsDone,
    signals: win.signals,
    lost: win.lost,
    duplicated: win.duplicated,
    reordered: win.reordered,
    errors: Object.values(win.errors).reduce((x, y) => x + y, 0),
    p50: s.p50,
    p99: s.p99,
    max: s.max,
    rssMiB: memory.length ? Math.round(memory.at(-1).rssKiB / 102.4) / 10 : null,
    redisKeys: memory.at(-1)?.redisKeys ?? null,
    redisMiB: memory.at(-1)?.redisBytes ? Math.round(memory.at(-1).redisBytes / 104857.6) / 10 : null,
    serverCpuPct: win.serverCpu ? win.serverCpu().cpuPct : null,
    loadgenCpuPct: selfPct,
    loadgenLagP99Ms: lagP99,
  });
  win = newWindow(now);
}

function printWindows() {
  const head = ['window s', 'calls up', 'calls done', 'signals', 'lost', 'dup', 'reord', 'errors', 'p50 ms', 'p99 ms', 'max ms', 'server RSS MiB', 'server CPU %', 'redis keys', 'redis MiB', 'loadgen CPU %', 'loadgen lag p99 ms'];
  const rows = windows.map((w) => [`${w.fromS}-${w.toS}`, w.calls, w.callsDone, w.signals, w.lost, w.duplicated, w.reordered, w.errors, w.p50, w.p99, w.max, w.rssMiB, w.serverCpuPct, w.redisKeys, w.redisMiB, w.loadgenCpuPct, w.loadgenLagP99Ms]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '-').length)));
  const line = (r) => r.map((c, i) => String(c ?? '-').padStart(widths[i])).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
}

async function soak(port) {
  const end = performance.now() + MINUTES * 60_000;
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  loopLag.enable();
  win = newWindow(0);
  const sampler = setInterval(() => void sampleMemory(), SAMPLE_MS);
  const windower = setInterval(() => {
    closeWindow(performance.now() - t0);
    const w = windows.at(-1);
    console.log(`  ${w.toS}s: ${w.calls} calls up, ${w.signals} signals, p99 ${w.p99} ms, lost ${w.lost}, errors ${w.errors}, server RSS ${w.rssMiB} MiB, server CPU ${w.serverCpuPct} %, load generator CPU ${w.loadgenCpuPct} % (lag p99 ${w.loadgenLagP99Ms} ms)`);
  }, WINDOW_MS);
  // Slots start spread over the first 10 s so that calls do not all end together.
  await Promise.all(
    Array.from({ length: CALLS }, async (_, i) => {
      await sleep((i / CALLS) * 10_000);
      while (performance.now() < end) {
        const lengthMs = Math.min(CALL_MS[0] + Math.random() * (CALL_MS[1] - CALL_MS[0]), end - performance.now());
        const ok = await oneCall(port, { lengthMs: Math.max(0, lengthMs), signals: true });
        if (!ok) await sleep(1000);
      }
    }),
  );
  clearInterval(windower);
  clearInterval(sampler);
  await sampleMemory();
  closeWindow(performance.now() - t0);
  lag.disable();
  loopLag.disable();
  return { loadgenEventLoopP99Ms: Math.round(lag.percentile(99) / 1e4) / 100 };
}

async function churn(port) {
  if (CHURN === 0) return null;
  await sleep(10_000); // let the soak's last grace periods and lingers run out
  const before = { ...(await sampleMemory()), lastingKeys: await lastingKeys() };
  const started = performance.now();
  const errorsBefore = Object.values(totals.errors).reduce((x, y) => x + y, 0);
  const lostBefore = totals.lost;
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: CHURN_CONCURRENCY }, async () => {
      while (next < CHURN / 2) {
        next += 1;
        if (await oneCall(port, { signals: false })) done += 1;
      }
    }),
  );
  const ms = Math.round(performance.now() - started);
  await sleep(10_000);
  const after = { ...(await sampleMemory()), lastingKeys: await lastingKeys() };
  return {
    cycles: done * 2,
    ms,
    perSecond: Math.round((done * 2) / (ms / 1000)),
    errors: Object.values(totals.errors).reduce((x, y) => x + y, 0) - errorsBefore,
    lost: totals.lost - lostBefore,
    rssMiBBefore: Math.round(before.rssKiB / 102.4) / 10,
    rssMiBAfter: Math.round(after.rssKiB / 102.4) / 10,
    redisKeysBefore: before.redisKeys,
    redisKeysAfter: after.redisKeys,
    lastingKeysBefore: before.lastingKeys,
    lastingKeysAfter: after.lastingKeys,
  };
}

async function main() {
  if (!existsSync(join(ROOT, 'dist', 'main.js'))) throw new Error('dist/main.js is missing: run `npm run build` first');
  loadAtStart = loadavg();
  console.log(`machine: ${cpus().length} CPUs, load average ${loadAtStart.map((l) => l.toFixed(1)).join(' ')} (other processes compete for them; see the CPU columns)`);
  console.log(`soak: ${CALLS} calls, ${MINUTES} min, ${RATE} signals/s per peer, ${WORKERS} workers on Redis, then ${CHURN} churn cycles`);
  redis = await startRedis();
  server = await startServer({
    argv: [process.execPath, 'dist/main.js'],
    cwd: ROOT,
    label: 'callsig',
    env: {
      PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: 'production', PORT: '0', HOST: '127.0.0.1',
      WEB_CONCURRENCY: String(WORKERS), REDIS_URL: redis.url, RATE_LIMIT: '0', MAX_CONNECTIONS_PER_IP: '0', LOG_LEVEL: 'info',
    },
  });
  await sleep(2000); // every worker listening
  t0 = performance.now();
  await sampleMemory();
  const loadgen = await soak(server.port);
  const soakTotals = { ...totals, errors: { ...totals.errors } };
  const churned = await churn(server.port);
  const result = {
    at: new Date().toISOString(),
    config: { calls: CALLS, minutes: MINUTES, ratePerPeer: RATE, workers: WORKERS, churn: CHURN, windowS: WINDOW_MS / 1000 },
    machine: { cpus: cpus().length, loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadavg() },
    soak: {
      callsCompleted: soakTotals.callsDone,
      connectJoinLeaveCycles: soakTotals.cycles,
      signalsSent: soakTotals.sent,
      signalsReceived: soakTotals.signals,
      lost: soakTotals.lost,
      duplicated: soakTotals.duplicated,
      reordered: soakTotals.reordered,
      errors: soakTotals.errors,
      ...loadgen,
    },
    windows,
    memory,
    churn: churned,
  };
  console.log('');
  printWindows();
  console.log('');
  console.log(
    `soak totals: ${result.soak.callsCompleted} calls (${result.soak.connectJoinLeaveCycles} connect/join/leave cycles), ` +
      `${result.soak.signalsReceived}/${result.soak.signalsSent} signals, lost ${result.soak.lost}, duplicated ${result.soak.duplicated}, ` +
      `reordered ${result.soak.reordered}, errors ${JSON.stringify(result.soak.errors)}; load generator event-loop p99 ${loadgen.loadgenEventLoopP99Ms} ms`,
  );
  if (churned) {
    console.log(
      `churn: ${churned.cycles} cycles in ${churned.ms} ms (${churned.perSecond}/s), errors ${churned.errors}, lost ${churned.lost}; ` +
        `server RSS ${churned.rssMiBBefore} → ${churned.rssMiBAfter} MiB; Redis keys ${churned.redisKeysBefore} → ${churned.redisKeysAfter} ` +
        `(rosters/groups ${churned.lastingKeysBefore} → ${churned.lastingKeysAfter}; the rest expire within 2 min)`,
    );
  }
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, 'soak.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${join('bench', 'results', 'soak.json')}`);
  const bad = result.soak.lost + result.soak.duplicated + result.soak.reordered + Object.values(result.soak.errors).reduce((x, y) => x + y, 0) + (churned ? churned.errors + churned.lost : 0);
  return bad === 0 ? 0 : 1;
}

main().then(
  async (code) => {
    await cleanup();
    process.exit(code);
  },
  async (err) => {
    console.error(err);
    await cleanup();
    process.exit(1);
  },
);
