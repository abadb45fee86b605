// Where a relayed signal's time goes, hop by hop: the latency workload of `npm run bench` with
// every bench signal stamped as it passes each process (bench/lib/hop-trace.mjs, loaded into the
// server with --import), all on the machine's monotonic clock. An investigation tool beside
// `npm run bench`; the stamping costs a little CPU, so its end-to-end figures are not the bench's.
//
//   node bench/hops.mjs [--only=ws,memory,redis,redis-rr] [--calls=100,500] [--rounds=3] [--node-flags=F,F]
//
// For each server and call count: p50 and p99 of each hop and of the whole trip, and, over the
// slowest 1 % of signals, each hop's mean and how often it was the largest. Redis x2 has six
// hops: load generator -> worker A, A's own work, A -> Redis (to when Redis ran the send script,
// read from the message's sequence number: Redis's clock, good to some µs), Redis -> worker B,
// B's own work, B -> load generator. Writes bench/results/hops.txt.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants } from 'node:perf_hooks';
import { machine } from './lib/proc.mjs';
import { percentile } from './lib/stats.mjs';
import { ALL_SERVERS, startLoadgen, startTarget } from './lib/targets.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3).split(',') ?? dflt;
const ONLY = opt('only', ['ws', 'memory', 'redis', 'redis-rr']);
const CALLS = opt('calls', ['100', '500']).map(Number);
const ROUNDS = Number(opt('rounds', ['3'])[0]);
/** Node/V8 flags for the servers (a cluster's workers inherit them), e.g. --node-flags=--max-semi-space-size=32. */
const NODE_FLAGS = opt('node-flags', []);
const RATE_PER_CALL = 4;
const WARMUP_S = 2;
const DURATION_S = 6;

/** Stamp points (bench/lib/hop-trace.mjs). */
const IN = 1, LAYER_SEND = 2, FROM_REDIS = 3, OUT = 4, REDIS_RAN = 5;

/** Hops: [label, from, to]; 'sent' and 'received' are the load generator's. */
const HOPS = {
  plain: [['load generator -> server', 'sent', IN], ['server: frame in -> frame out', IN, OUT], ['server -> load generator', OUT, 'received']],
  redis: [
    ['load generator -> worker A', 'sent', IN], ['worker A: frame in -> layer send', IN, LAYER_SEND],
    ['worker A -> Redis ran the script', LAYER_SEND, REDIS_RAN], ['Redis -> worker B', REDIS_RAN, FROM_REDIS],
    ['worker B: from Redis -> frame out', FROM_REDIS, OUT], ['worker B -> load generator', OUT, 'received'],
  ],
};

const log = (m) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${m}`);
const ms = (us) => (Number.isFinite(us) ? (us / 1000).toFixed(3) : '–');

/** Each `<pid><suffix>` file hop-trace wrote in `dir`, as [pid, its numbers in threes]. */
function* tripleFiles(dir, suffix) {
  for (const f of readdirSync(dir)) {
    const pid = f.slice(0, -suffix.length);
    if (!f.endsWith(suffix) || !/^\d+$/.test(pid)) continue;
    const b = readFileSync(join(dir, f));
    yield [pid, new Float64Array(b.buffer, b.byteOffset, b.byteLength / 8)];
  }
}

/** Every stamp the server's processes wrote: ts -> {point: {at, pid}} (first stamp of each point). */
function readStamps(dir) {
  const byTs = new Map();
  for (const [pid, a] of tripleFiles(dir, '.bin')) {
    for (let i = 0; i + 2 < a.length; i += 3) {
      const ts = a[i + 1];
      let e = byTs.get(ts);
      if (!e) byTs.set(ts, (e = {}));
      e[a[i]] ??= { at: a[i + 2], pid };
    }
  }
  return byTs;
}

/** The server's garbage collections, [start, end, kind] µs (monotonic), sorted by start. */
function readGcs(dir) {
  const gcs = [];
  for (const [, a] of tripleFiles(dir, '.gc.bin')) {
    for (let i = 0; i + 2 < a.length; i += 3) gcs.push([a[i], a[i] + a[i + 1], a[i + 2]]);
  }
  return gcs.sort((x, y) => x[0] - y[0]);
}

/** V8's GC kinds (perf_hooks constants.NODE_PERFORMANCE_GC_*). */
const GC_KINDS = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor', [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental marking', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak callbacks',
};

/** The server's collections during the measurement windows: how many, how long, of which kinds. */
function gcSummary(traces, gcs) {
  const inWindows = gcs.filter(([start]) => traces.some(({ toMono, samples }) => start >= samples[0] + toMono && start <= samples.at(-1) + toMono));
  const seconds = traces.reduce((sum, { samples }) => sum + (samples.at(-1) - samples[0]) / 1e6, 0);
  if (!inWindows.length) return `no server garbage collection in the ${seconds.toFixed(0)} s measured`;
  const kinds = {};
  for (const [start, end, kind] of inWindows) {
    const k = GC_KINDS[kind] ?? `kind ${kind}`;
    (kinds[k] ??= []).push(end - start);
  }
  const each = Object.entries(kinds).map(([k, ds]) => {
    ds.sort((a, b) => a - b);
    return `${ds.length} ${k} (p50 ${ms(percentile(ds, 50))}, max ${ms(ds.at(-1))} ms)`;
  });
  return `server garbage collections in the ${seconds.toFixed(0)} s measured, all processes: ${each.join(', ')}`;
}

/** µs of server garbage collection within [from, to]. */
function gcWithin(gcs, from, to) {
  let lo = 0;
  let hi = gcs.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (gcs[mid][0] < from - 1e6) lo = mid + 1; else hi = mid; } // none lasts 1 s
  let us = 0;
  for (let i = lo; i < gcs.length && gcs[i][0] <= to; i++) us += Math.max(0, Math.min(to, gcs[i][1]) - Math.max(from, gcs[i][0]));
  return us;
}

/** Joins the load generator's samples with the servers' stamps; one row of hop µs per signal. */
function rowsOf(traces, stamps, hops, gcs, which = () => true) {
  const rows = [];
  let missing = 0;
  for (const { toMono, samples } of traces) {
    for (let i = 0; i < samples.length; i += 2) {
      const e = stamps.get(samples[i]);
      if (!which(e)) continue;
      const at = (p) => (p === 'sent' ? samples[i] + toMono : p === 'received' ? samples[i + 1] + toMono : e?.[p]?.at);
      const hopUs = hops.map(([, from, to]) => at(to) - at(from));
      if (hopUs.some((x) => !Number.isFinite(x))) { missing++; continue; }
      rows.push({
        total: samples[i + 1] - samples[i], hops: hopUs, sameWorker: e?.[IN]?.pid === e?.[FROM_REDIS]?.pid,
        gcUs: gcWithin(gcs, at('sent'), at('received')),
      });
    }
  }
  return { rows, missing };
}

function report(label, { rows, missing }, hops, redis, gcLine) {
  const out = [];
  const totals = rows.map((r) => r.total).sort((a, b) => a - b);
  const slow = [...rows].sort((a, b) => a.total - b.total).slice(-Math.max(1, Math.floor(rows.length / 100)));
  const largest = hops.map(() => 0);
  for (const r of slow) largest[r.hops.indexOf(Math.max(...r.hops))]++;
  const line = (name, p50, p99, slowMean, big) => `${label.padEnd(14)}  ${name.padEnd(36)}  ${String(p50).padStart(6)}  ${String(p99).padStart(6)}  ${String(slowMean).padStart(16)}  ${String(big).padStart(17)}`;
  out.push(line('end to end', ms(percentile(totals, 50)), ms(percentile(totals, 99)), ms(slow.reduce((s, r) => s + r.total, 0) / slow.length), `${slow.length} signals`));
  hops.forEach(([name], j) => {
    const xs = rows.map((r) => r.hops[j]).sort((a, b) => a - b);
    out.push(line(`  ${name}`, ms(percentile(xs, 50)), ms(percentile(xs, 99)), ms(slow.reduce((s, r) => s + r.hops[j], 0) / slow.length), largest[j]));
  });
  const share = (rs) => `${Math.round((100 * rs.filter((r) => r.gcUs > 0).length) / rs.length)} %`;
  const notes = [
    `${rows.length} signals traced${missing ? `, ${missing} not (a stamp missing)` : ''}`,
    gcLine,
    `a server garbage collection ran during ${share(rows)} of all trips, ${share(slow)} of the slowest 1 % (${ms(slow.reduce((s, r) => s + r.gcUs, 0) / slow.length)} ms of their mean)`,
  ];
  if (redis) {
    const same = rows.filter((r) => r.sameWorker);
    // Were a signal between two peers of one worker handed over inside it, it would skip the
    // two Redis hops (an estimate: the other hops as measured).
    const local = rows.map((r) => (r.sameWorker ? r.total - r.hops[2] - r.hops[3] : r.total)).sort((a, b) => a - b);
    notes.push(`${Math.round((100 * same.length) / rows.length)} % between two peers on one worker; p99 if those skipped Redis (estimate): ${ms(percentile(local, 99))} ms`);
  }
  for (const note of notes) out.push(`${''.padEnd(14)}  (${note})`);
  return out;
}

async function measure(def, lg, dir) {
  const traces = new Map(CALLS.map((c) => [c, []]));
  const target = await startTarget(ROOT, def, lg, { nodeArgs: [...NODE_FLAGS, '--import', join(ROOT, 'bench', 'lib', 'hop-trace.mjs')], env: { HOP_TRACE_DIR: dir } });
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const calls of CALLS) {
        const traceFile = join(dir, `loadgen-${calls}-${round}.json`);
        const r = await lg.call('latency', { calls, ratePerCall: RATE_PER_CALL, warmupS: WARMUP_S, durationS: DURATION_S, traceFile });
        log(`${def.label}: ${calls} calls, round ${round}: p50 ${r.p50} p99 ${r.p99} ms (n ${r.n}, lost ${r.lost})`);
        traces.get(calls).push(JSON.parse(readFileSync(traceFile, 'utf8')));
      }
    }
  } finally {
    const stopped = await target.stop();
    if (stopped?.code !== 0) log(`${def.label} did not exit cleanly on SIGTERM (${JSON.stringify(stopped)}); stamps of a killed process are missing`);
  }
  return traces;
}

async function main() {
  if (!existsSync(join(ROOT, 'dist', 'layers', 'redis.js'))) throw new Error('dist/ is missing: run npm run build first');
  const defs = ALL_SERVERS.filter((d) => ONLY.includes(d.id));
  if (!defs.length) throw new Error(`--only matched no server (${ALL_SERVERS.map((d) => d.id).join(', ')})`);
  const lg = startLoadgen(ROOT);
  await lg.ready;
  const out = [
    `callsig hop trace, ${new Date().toISOString()}`,
    `machine: ${machine().model}, ${cpus().length} cores, node ${process.version}, Linux ${release()}`,
    ...(NODE_FLAGS.length ? [`servers run with: ${NODE_FLAGS.join(' ')}`] : []),
    `Latency workload of npm run bench (${RATE_PER_CALL} signals/s per call, ${DURATION_S} s after ${WARMUP_S} s warm-up), ${ROUNDS} round(s) pooled; every signal stamped at each process it passes (monotonic clock, µs). ms.`,
  ];
  try {
    const results = [];
    for (const def of defs) {
      const dir = mkdtempSync(join(tmpdir(), 'bench-hops-'));
      try {
        const traces = await measure(def, lg, dir);
        results.push({ def, traces, stamps: readStamps(dir), gcs: readGcs(dir) });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
    for (const calls of CALLS) {
      out.push('', `${calls} calls, ${calls * RATE_PER_CALL} signals/s`);
      out.push(`${'server'.padEnd(14)}  ${'hop'.padEnd(36)}  ${'p50'.padStart(6)}  ${'p99'.padStart(6)}  ${'mean, slowest 1%'.padStart(16)}  ${'largest, slowest 1%'.padStart(17)}`);
      for (const { def, traces, stamps, gcs } of results) {
        const gcLine = gcSummary(traces.get(calls), gcs);
        if (!def.redis) {
          out.push(...report(def.label, rowsOf(traces.get(calls), stamps, HOPS.plain, gcs), HOPS.plain, false, gcLine));
          continue;
        }
        // A signal between two peers of one worker is handed over inside it (no Redis stamps):
        // those, and the ones through Redis, each with their own hops.
        const all = rowsOf(traces.get(calls), stamps, [['', 'sent', 'received']], gcs);
        const totals = all.rows.map((r) => r.total).sort((a, b) => a - b);
        const via = rowsOf(traces.get(calls), stamps, HOPS.redis, gcs, (e) => e?.[FROM_REDIS] !== undefined);
        const inside = rowsOf(traces.get(calls), stamps, HOPS.plain, gcs, (e) => e?.[FROM_REDIS] === undefined);
        out.push(`${def.label.padEnd(14)}  ${'all signals, end to end'.padEnd(36)}  ${ms(percentile(totals, 50)).padStart(6)}  ${ms(percentile(totals, 99)).padStart(6)}`
          + `  (${Math.round((100 * via.rows.length) / Math.max(1, all.rows.length))} % through Redis, ${Math.round((100 * inside.rows.length) / Math.max(1, all.rows.length))} % handed over in a worker)`);
        if (via.rows.length) out.push(...report(`${def.label}, through Redis`, via, HOPS.redis, true, gcLine));
        if (inside.rows.length) out.push(...report(`${def.label}, in a worker`, inside, HOPS.plain, false, gcLine));
      }
    }
  } finally {
    lg.stop();
  }
  const text = out.join('\n');
  console.log(text);
  writeFileSync(join(ROOT, 'bench', 'results', 'hops.txt'), `${text}\n`);
  console.error('wrote bench/results/hops.txt');
}

main().catch((err) => { console.error(err); process.exit(1); });
