// Where a server's CPU goes, process by process and thread by thread: the latency workload of
// `npm run bench` (4 signals/s per call), with every thread of the server's process tree read
// from /proc at the start and end of each measurement window. An investigation tool beside
// `npm run bench`, for questions the tree-wide figure cannot answer (which process, the main
// thread or V8's helper threads, how many wake-ups).
//
//   node bench/threads.mjs [--only=memory,redis] [--calls=100] [--rounds=3] [--duration=6]
//
// For each server: per process, the main thread's user and system CPU, its CPU per relayed
// signal (all the server's signals, not that process's own share), and its voluntary and
// involuntary context switches per signal (a voluntary one is, in effect, a wake-up: the event
// loop waited and was woken); V8's and libuv's helper threads summed on a line of their own.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { cpus, release } from 'node:os';
import { startServer } from './lib/server.mjs';
import { startRedis } from './lib/redis.mjs';
import { machine, tree } from './lib/proc.mjs';
import { ALL_SERVERS, BASE_ENV, startLoadgen } from './lib/targets.mjs';

const TICK_US = 1e6 / machine().TICKS_PER_S;
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt;
const ONLY = opt('only', 'memory,redis').split(',');
const CALLS = Number(opt('calls', '100'));
const ROUNDS = Number(opt('rounds', '3'));
const DURATION_S = Number(opt('duration', '6'));
const RATE_PER_CALL = 4;
const WARMUP_S = 2;

const log = (m) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${m}`);

/** Every thread of `pids`: key pid/tid -> {pid, main, user, sys (ticks), vol, invol}. */
function threads(pids) {
  const out = new Map();
  for (const pid of pids) {
    let tids = [];
    try { tids = readdirSync(`/proc/${pid}/task`); } catch { continue; }
    for (const tid of tids) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from #3 (state) on
        const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
        out.set(`${pid}/${tid}`, {
          pid, main: String(pid) === tid, user: Number(f[11]), sys: Number(f[12]),
          vol: Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(status)[1]),
          invol: Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)[1]),
        });
      } catch { /* thread gone */ }
    }
  }
  return out;
}

/** Sums what each thread used between `before` and `after` into `acc`, by process and role. */
function accumulate(acc, before, after, primaryPid) {
  for (const [key, a] of after) {
    const b = before.get(key);
    if (!b) continue; // started inside the window
    const name = `${a.pid === primaryPid ? 'first process' : `child ${a.pid}`}, ${a.main ? 'main thread' : 'helper threads'}`;
    const e = acc.get(name) ?? { user: 0, sys: 0, vol: 0, invol: 0 };
    e.user += a.user - b.user; e.sys += a.sys - b.sys; e.vol += a.vol - b.vol; e.invol += a.invol - b.invol;
    acc.set(name, e);
  }
}

async function measure(def, lg) {
  const env = { ...BASE_ENV, ...(def.env ?? {}) };
  let redis = null;
  let srv = null;
  try {
    if (def.redis) { redis = await startRedis(); env.REDIS_URL = redis.url; }
    const [node, script, ...rest] = def.argv;
    srv = await startServer({ argv: [node, join(ROOT, script), ...rest], env, cwd: ROOT, label: def.label });
    if (def.ours) await sleep((def.workers ?? 1) > 1 ? 2500 : 500);
    await lg.call('target', { protocol: def.protocol, hangup: def.hangup, port: srv.port });
    const acc = new Map();
    let before = null;
    let signals = 0;
    let seconds = 0;
    let t0 = 0;
    lg.onMark = (mark) => {
      const now = threads(tree(srv.pid));
      if (mark === 'start') { before = now; t0 = performance.now(); return; }
      if (before) accumulate(acc, before, now, srv.pid);
      seconds += (performance.now() - t0) / 1000;
      before = null;
    };
    for (let round = 1; round <= ROUNDS; round++) {
      const r = await lg.call('latency', { calls: CALLS, ratePerCall: RATE_PER_CALL, warmupS: WARMUP_S, durationS: DURATION_S });
      signals += r.n;
      log(`${def.label}: ${CALLS} calls, round ${round}: p50 ${r.p50} p99 ${r.p99} ms (n ${r.n}, lost ${r.lost})`);
    }
    lg.onMark = () => {};
    return { acc, signals, seconds };
  } finally {
    await srv?.stop();
    await redis?.stop();
  }
}

function table(label, { acc, signals, seconds }) {
  const out = [`${label}: ${signals} signals relayed in ${seconds.toFixed(0)} s of windows`];
  const head = ['process, thread', 'user s', 'system s', 'CPU % of a core', 'CPU µs/signal', 'wake-ups/signal', 'preempted/signal'];
  const rows = [...acc].sort(([a], [b]) => a.localeCompare(b)).map(([name, e]) => [
    name, (e.user * TICK_US / 1e6).toFixed(2), (e.sys * TICK_US / 1e6).toFixed(2),
    ((100 * (e.user + e.sys) * TICK_US) / 1e6 / seconds).toFixed(1),
    (((e.user + e.sys) * TICK_US) / signals).toFixed(1), (e.vol / signals).toFixed(2), (e.invol / signals).toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  out.push(fmt(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt));
  return out.join('\n');
}

async function main() {
  const defs = ALL_SERVERS.filter((d) => ONLY.includes(d.id));
  if (!defs.length) throw new Error(`--only matched no server (${ALL_SERVERS.map((d) => d.id).join(', ')})`);
  const lg = startLoadgen(ROOT);
  try {
    await lg.ready;
    console.log(`callsig threads, ${new Date().toISOString()}\nmachine: ${machine().model}, ${cpus().length} cores, node ${process.version}, Linux ${release()}\n`
      + `Latency workload: ${CALLS} calls, ${RATE_PER_CALL} signals/s per call, ${ROUNDS} round(s) of ${DURATION_S} s after ${WARMUP_S} s warm-up; `
      + `per signal = over all the server's signals. A wake-up is a voluntary context switch (the thread waited and was woken), preempted an involuntary one.\n`);
    for (const def of defs) console.log(`${table(def.label, await measure(def, lg))}\n`);
  } finally {
    lg.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
