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
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus, release } from 'node:os';
import { machine, threadStats, tree } from './lib/proc.mjs';
import { ALL_SERVERS, startLoadgen, startTarget } from './lib/targets.mjs';

const MACHINE = machine();
const TICK_US = 1e6 / MACHINE.TICKS_PER_S;
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
  const target = await startTarget(ROOT, def, lg);
  try {
    const acc = new Map();
    let before = null;
    let signals = 0;
    let seconds = 0;
    let t0 = 0;
    lg.onMark = (mark) => {
      const now = threadStats(tree(target.srv.pid));
      if (mark === 'start') { before = now; t0 = performance.now(); return; }
      if (!before) return;
      accumulate(acc, before, now, target.srv.pid);
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
    await target.stop();
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
    console.log(`callsig threads, ${new Date().toISOString()}\nmachine: ${MACHINE.model}, ${cpus().length} cores, node ${process.version}, Linux ${release()}\n`
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
