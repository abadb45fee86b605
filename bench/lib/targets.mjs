// The servers under test, and the client side of the load generator process.
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer } from './server.mjs';
import { startRedis } from './redis.mjs';

const node = process.execPath;
/** The environment every server starts with (nothing else is inherited). */
export const BASE_ENV = { PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: 'production' };
// MAX_CONNECTIONS_PER_IP=0: every bench peer comes from 127.0.0.1 (default limit 20).
const OURS_ENV = { PORT: '0', HOST: '127.0.0.1', RATE_LIMIT: '0', LOG_LEVEL: 'warn', MAX_CONNECTIONS_PER_IP: '0' };

/** The servers under test, in the order the tables show them. argv[0] is node, argv[1] the script. */
export const ALL_SERVERS = [
  { id: 'ws', label: 'bare ws', argv: [node, 'bench/servers/ws-relay.mjs', 'raw'], protocol: 'ours', hangup: 'close' },
  { id: 'ws-json', label: 'bare ws+JSON', argv: [node, 'bench/servers/ws-relay.mjs', 'json'], protocol: 'ours', hangup: 'close' },
  { id: 'peerjs', label: 'PeerJS 1.0.2', argv: [node, 'bench/servers/peerjs.mjs'], protocol: 'peerjs', hangup: 'close' },
  { id: 'memory', label: 'ours InMemory', argv: [node, 'dist/main.js'], env: OURS_ENV, protocol: 'ours', hangup: 'bye', ours: true },
  { id: 'redis', label: 'ours Redis x2', argv: [node, 'dist/main.js'], env: { ...OURS_ENV, WEB_CONCURRENCY: '2' }, protocol: 'ours', hangup: 'bye', ours: true, redis: true, workers: 2 },
  // The same, with connections dealt to the workers in turn (WORKER_ROUTING=round-robin) rather
  // than each call's to one worker: half the signals cross workers through Redis, as they do
  // between instances behind a load balancer. Latency only: the path Redis adds, measured.
  { id: 'redis-rr', label: 'ours Redis x2 rr', argv: [node, 'dist/main.js'], env: { ...OURS_ENV, WEB_CONCURRENCY: '2', WORKER_ROUTING: 'round-robin' }, protocol: 'ours', hangup: 'bye', ours: true, redis: true, workers: 2, phases: ['latency'] },
  // Opt-in (--only=...,redis1): the Redis layer in one process, to tell what Redis costs from
  // what the second worker costs.
  { id: 'redis1', label: 'ours Redis x1', argv: [node, 'dist/main.js'], env: { ...OURS_ENV, WEB_CONCURRENCY: '1' }, protocol: 'ours', hangup: 'bye', ours: true, redis: true, optIn: true },
];

/** Forks bench/loadgen.mjs; `call(cmd, args)` runs one of its phases and resolves its result. */
export function startLoadgen(root, fileLimit) {
  const child = fork(join(root, 'bench', 'loadgen.mjs'), [], {
    cwd: root, stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    ...(fileLimit ? { execPath: '/bin/sh', execArgv: ['-c', `ulimit -n ${fileLimit} && exec "${node}" "$0" "$@"`] } : {}),
  });
  let next = 1;
  const pending = new Map();
  let onMark = () => {};
  const ready = new Promise((res, rej) => {
    child.once('exit', (code) => rej(new Error(`load generator exited (${code}) before it was ready`)));
    child.on('message', (m) => {
      if (m.ready) return res();
      if (m.mark) return onMark(m.mark);
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      if (m.error) p.reject(new Error(m.error)); else p.resolve(m.result);
    });
  });
  child.on('exit', (code) => { for (const p of pending.values()) p.reject(new Error(`load generator exited (${code})`)); pending.clear(); });
  return {
    ready,
    pid: child.pid,
    call(cmd, a, timeoutMs = 120_000) {
      const id = next++;
      return new Promise((res, rej) => {
        const timer = setTimeout(() => { pending.delete(id); rej(new Error(`${cmd}: no answer in ${timeoutMs} ms`)); }, timeoutMs);
        pending.set(id, { resolve: (v) => { clearTimeout(timer); res(v); }, reject: (e) => { clearTimeout(timer); rej(e); } });
        child.send({ id, cmd, args: a });
      });
    },
    /** Calls `fn('start'|'end')` when the load generator opens and closes a measurement window. */
    set onMark(fn) { onMark = fn; },
    stop() { if (child.exitCode === null) child.kill('SIGTERM'); },
  };
}

/**
 * For the investigation scripts (heap, hops, threads): starts `def`'s server, with a Redis of
 * its own when it needs one, gives ours time to start its workers, and points the load generator
 * `lg` at it. `nodeArgs` go between node and the script; `env` is laid over the server's own.
 * Resolves {srv, redis, stop()}; `stop()` stops both and resolves how the server exited. A start
 * that fails stops what it had started.
 */
export async function startTarget(root, def, lg, { nodeArgs = [], env = {}, cwd = root } = {}) {
  let srv = null;
  let redis = null;
  const stop = async () => {
    const stopped = await srv?.stop();
    await redis?.stop();
    return stopped;
  };
  try {
    const serverEnv = { ...BASE_ENV, ...(def.env ?? {}), ...env };
    if (def.redis) { redis = await startRedis(); serverEnv.REDIS_URL = redis.url; }
    const [node, script, ...rest] = def.argv;
    srv = await startServer({ argv: [node, ...nodeArgs, join(root, script), ...rest], env: serverEnv, cwd, label: def.label });
    if (def.ours) await sleep((def.workers ?? 1) > 1 ? 2500 : 500);
    await lg.call('target', { protocol: def.protocol, hangup: def.hangup, port: srv.port });
    return { srv, redis, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
