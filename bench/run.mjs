// `npm run bench`: the same workload, in one run, against a bare ws relay (the yardstick), the
// same relay parsing JSON, PeerJS server 1.0.2, our server on the InMemory layer, and our
// server on Redis with two workers. Prints the figures of design.md and writes
// bench/results/latest.json and bench/results/chart.svg.
//
//   node bench/run.mjs [--quick] [--only=ws,ws-json,peerjs,memory,redis,redis1] [--profile] [--node-flags=F,F]
//
// --quick    a 1-2 minute smoke run (short windows, 1,000 idle peers); figures are rough.
// --only     run a subset of the servers.
// --phases   run a subset of the phases (memory,latency,throughput,setup).
// --report=F print the tables and redraw the chart from a saved results file (no run).
// --profile  run the servers (default: bare ws+JSON and ours) under `node --cpu-prof` and print
//            where the time goes; figures from a profiled run are distorted, so they go to
//            results/profile.json and profile.txt instead of latest.json.
// --node-flags=F,F  Node/V8 flags for every server (cluster workers inherit them), e.g.
//            --node-flags=--min-semi-space-size=16; the report's header names them.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { machine, openFileLimits, phaseMeter, rssKiB, tree, treeRssKiB } from './lib/proc.mjs';
import { startRedis, commandStats, statsDiff, redisCommand, monitor } from './lib/redis.mjs';
import { startServer } from './lib/server.mjs';
import { chartSvg } from './lib/chart.mjs';
import { summarize, formatSummary } from './lib/profile.mjs';
import { ALL_SERVERS, BASE_ENV, startLoadgen } from './lib/targets.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = join(ROOT, 'bench', 'results');
const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const PROFILE = args.includes('--profile');
const ONLY = args.find((a) => a.startsWith('--only='))?.slice(7).split(',');
const NODE_FLAGS = args.find((a) => a.startsWith('--node-flags='))?.slice(13).split(',').filter(Boolean) ?? [];
const PHASES = args.find((a) => a.startsWith('--phases='))?.slice(9).split(',') ?? ['memory', 'latency', 'throughput', 'setup'];
const BUDGET_MS = (QUICK ? 4 : 28) * 60_000; // a hard stop, well above the expected run time

/** Every duration and size of the workload, in one place. */
let P = QUICK
  ? { latencyCalls: [1, 100, 500], latencyRounds: 1, ratePerCall: 4, warmupS: 0.5, durationS: 2,
      tputCalls: 100, tputWindow: 8, tputWarmupS: 0.5, tputDurationS: 2, tputRounds: 1,
      setupRate: 50, setupS: 2, candidates: 10, auditCalls: 10, idlePeers: 1000, morePeers: 1000, moreIdleS: 5, settleS: 1, idleS: 5, redisIdleS: 5 }
  : { latencyCalls: [1, 100, 500], latencyRounds: 5, ratePerCall: 4, warmupS: 2, durationS: 6,
      tputCalls: 100, tputWindow: 8, tputWarmupS: 1, tputDurationS: 6, tputRounds: 3,
      setupRate: 50, setupS: 10, candidates: 10, auditCalls: 20, idlePeers: 5000, morePeers: 5000, moreIdleS: 10, settleS: 3, idleS: 25, redisIdleS: 25 };

const SERVERS = ALL_SERVERS
  .filter((s) => (ONLY ? ONLY.includes(s.id) : !s.optIn && (!PROFILE || s.ours || s.id === 'ws-json')))
  .sort((a, b) => (ONLY ? ONLY.indexOf(a.id) - ONLY.indexOf(b.id) : 0));

// ---------------------------------------------------------------------------------------------
// Running the phases on one server

/** Monotonic µs, the clock V8 stamps .cpuprofile samples with (to cut profiles to windows). */
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

/** Runs a loadgen phase, measuring CPU and Redis commands over its measurement window. */
async function measured(lg, pids, redis, cmd, a, timeoutMs) {
  let meter = null;
  let cpu = null;
  let windowUs = null;
  let cmds0 = null;
  let cmds = null;
  const pendingStats = [];
  lg.onMark = (mark) => {
    if (mark === 'start') {
      windowUs = [nowUs(), null];
      meter = phaseMeter(pids);
      if (redis) pendingStats.push(commandStats(redis.port).then((s) => { cmds0 = s; }));
    } else if (mark === 'end' && meter) {
      windowUs[1] = nowUs();
      cpu = meter();
      if (redis) pendingStats.push(commandStats(redis.port).then((s) => { cmds = s; }));
    }
  };
  const result = await lg.call(cmd, a, timeoutMs);
  await Promise.all(pendingStats);
  lg.onMark = () => {};
  const out = { ...result, ...(cpu ?? {}), windowUs };
  if (cmds0 && cmds) out.redisCommands = statsDiff(cmds0, cmds);
  return out;
}

/** Starts one server (and its Redis); resolves a context the phases run on. */
async function startOne(def, lg, log) {
  const res = { id: def.id, label: def.label };
  const ctx = { def, res, srv: null, redis: null, pids: null };
  try {
    const env = { ...BASE_ENV, PORT: '0', ...(def.env ?? {}) };
    if (def.redis) {
      ctx.redis = await startRedis();
      cleanupHooks.push(ctx.redis.kill);
      env.REDIS_URL = ctx.redis.url;
      res.redisPort = ctx.redis.port;
    }
    const argv = [def.argv[0], ...NODE_FLAGS, ...def.argv.slice(1)];
    if (PROFILE) {
      const dir = join(RESULTS, 'profiles', def.id);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      argv.splice(1, 0, '--cpu-prof', `--cpu-prof-dir=${dir}`);
      res.profileDir = dir;
    }
    const inspect = PHASES.includes('memory');
    for (let attempt = 1; ; attempt++) {
      ctx.srv = await startServer({ argv, env, cwd: ROOT, label: def.label, fileLimit: FILE_LIMIT, inspect });
      cleanupHooks.push(ctx.srv.kill);
      if (def.ours) await waitHealthy(ctx.srv.port, def.workers ?? 1);
      // Every process needs its inspector for the memory phase (see collectGarbage): start again
      // when a worker's port was taken.
      const missing = inspect ? ctx.srv.uninspected() : 0;
      if (missing === 0 || attempt >= 3) break;
      log(`${def.label}: ${missing} of its processes started without an inspector; starting again`);
      await ctx.srv.stop('SIGTERM');
    }
    res.pid = ctx.srv.pid;
    ctx.pids = { server: ctx.srv.pid, redis: ctx.redis?.pid, loadgen: lg.pid };
    log(`${def.label}: listening on ${ctx.srv.port} (pid ${ctx.srv.pid})`);
  } catch (err) {
    res.error = err.message;
    log(`${def.label}: ${err.message}`);
    await stopOne(ctx, log);
  }
  return ctx;
}

async function stopOne(ctx, log) {
  if (ctx.srv) {
    const exit = await ctx.srv.stop('SIGTERM');
    if (PROFILE && !exit) log(`  ${ctx.def.label} did not exit on SIGTERM; its profile may be missing`);
    ctx.srv = null;
  }
  if (ctx.redis) { await ctx.redis.stop(); ctx.redis = null; }
}

/** The phases, each run on every server back to back so that compared figures are seconds apart. */
const PHASE_RUNNERS = [
  // Memory first, on fresh processes: warm the code paths, then RSS before and after.
  ['memory', async ({ srv, redis, pids }, lg, log, label) => {
    await lg.call('idleOpen', { peers: 20 });
    await lg.call('idleRelease', {});
    await sleep(1000);
    // RSS is read with every process's heap just collected (through its inspector), so what a
    // reading holds does not depend on when the collector last ran.
    // Each process is read too: a cluster's primary and each worker grow on their own.
    const settled = async () => {
      await srv.collectGarbage();
      await sleep(1000);
      return new Map(tree(srv.pid).map((p) => [p, rssKiB(p)]));
    };
    const sum = (byPid) => [...byPid.values()].reduce((a, b) => a + b, 0);
    const beforeByPid = await settled();
    const before = sum(beforeByPid);
    const rm0 = redis ? await redisMemory(redis.port) : null;
    const opened = await lg.call('idleOpen', { peers: P.idlePeers }, 180_000);
    // Two readings: seconds after the burst of connections, as the process is (what their
    // set-up left behind may still be there), and the figure: after the peers sat idle for
    // P.idleS, with every heap collected.
    await sleep(P.settleS * 1000);
    const atOpen = treeRssKiB(srv.pid);
    const out = { peers: opened.peers, openMs: opened.openMs, rssBeforeKiB: before, rssAtOpenKiB: atOpen,
      kibPerPeerAtOpen: round((atOpen - before) / opened.peers, 2), idleS: P.idleS };
    // CPU over the idle window, every peer still connected: what heartbeats and timers cost (on
    // Render's free tier, 0.1 CPU, it is what an idle server pays all day).
    const idleCpu = phaseMeter(pids);
    if (redis) {
      out.redisUsedMemoryKiBPerPeer = round(((await redisMemory(redis.port)) - rm0) / 1024 / opened.peers, 2);
      // Redis commands over an idle window with every peer still connected.
      const s0 = await commandStats(redis.port);
      await sleep(P.redisIdleS * 1000);
      const idle = statsDiff(s0, await commandStats(redis.port));
      out.redisIdle = { windowS: P.redisIdleS, commands: idle.total, perMinute: round((idle.total * 60) / P.redisIdleS, 1), byCommand: idle.byCommand };
    }
    const rest = P.idleS - (redis ? P.redisIdleS : 0);
    if (rest > 0) await sleep(rest * 1000);
    out.idleCpu = idleCpu();
    const afterByPid = await settled();
    const after = sum(afterByPid);
    out.rssAfterKiB = after;
    if (beforeByPid.size > 1) {
      out.rssByProcessKiB = [...beforeByPid].map(([pid, kib], i) => ({ process: i === 0 ? 'primary' : 'worker', before: kib, after: afterByPid.get(pid) ?? null }));
    }
    out.kibPerPeer = round((after - before) / opened.peers, 2);
    // The next P.morePeers, on top of those: what one more idle connection costs once the
    // server holds thousands. The first peers paid the one-time costs (code compiled as they
    // came, allocator and heap growth), and they stay open, so the newcomers reuse no memory
    // that departed peers freed.
    if (P.morePeers > 0) {
      const more = await lg.call('idleOpen', { peers: P.morePeers }, 180_000);
      await sleep(P.moreIdleS * 1000);
      const moreByPid = await settled();
      const added = more.peers - opened.peers;
      out.morePeers = added;
      out.rssMoreKiB = sum(moreByPid);
      out.kibPerPeerMore = added > 0 ? round((out.rssMoreKiB - after) / added, 2) : null;
      if (out.rssByProcessKiB) for (const [i, pid] of [...beforeByPid.keys()].entries()) out.rssByProcessKiB[i].more = moreByPid.get(pid) ?? null;
    }
    await lg.call('idleRelease', {}, 120_000);
    log(`${label} memory: ${out.peers} idle peers, ${out.kibPerPeer} KiB each after ${P.idleS} s idle, ${out.kibPerPeerAtOpen} at open` +
      ` (RSS ${before} -> ${atOpen} -> ${after} KiB); server CPU idle ${out.idleCpu.serverCpuPct} %` +
      (out.redisIdle ? `; Redis idle: ${out.redisIdle.commands} commands in ${P.redisIdleS} s` : ''));
    return out;
  }],
  // Latency is run in rounds too, servers interleaved, and the round with the median p99 kept:
  // on these 2 cores one round's p99 moves by 2x with what else ran in its window (bare ws gave
  // 5.8, 2.3 and 1.7 ms in three rounds of one run), and a median of rounds is steadier than any
  // one of them. Five rounds of 6 s, not three of 10: the same time measured, and it takes three
  // disturbed rounds, not two, to move the median.
  ...Array.from({ length: P.latencyRounds }, (_, i) => P.latencyCalls.map((calls) => [`latency${calls}#${i + 1}`, async ({ redis, pids, res }, lg, log, label) => {
    const r = await measured(lg, pids, redis, 'latency',
      { calls, ratePerCall: P.ratePerCall, warmupS: P.warmupS, durationS: P.durationS }, 180_000);
    r.serverCpuUsPerSignal = usPerSignal(r.serverCpuS, r.n);
    r.serverUserUsPerSignal = usPerSignal(r.serverUserCpuS, r.n);
    log(`${label} latency, ${calls} calls, round ${i + 1}: p50 ${r.p50} p99 ${r.p99} max ${r.max} ms (n ${r.n}, lost ${r.lost}, CPU: server ${r.serverCpuPct} %, other ${r.otherCpuPct} %)`);
    const key = `latency${calls}`;
    const rounds = [...(res[key]?.rounds ?? []), r];
    const byP99 = [...rounds].sort((x, y) => x.p99 - y.p99);
    res[key] = { ...byP99[Math.floor((byP99.length - 1) / 2)], rounds };
    return undefined;
  }])).flat(),
  // Throughput is run in rounds, servers interleaved, and the best round kept: work from
  // outside the bench can only lower a closed-loop rate, never raise it.
  ...Array.from({ length: P.tputRounds }, (_, i) => [`throughput#${i + 1}`, async ({ redis, pids, res }, lg, log, label) => {
    const r = await measured(lg, pids, redis, 'throughput',
      { calls: P.tputCalls, window: P.tputWindow, warmupS: P.tputWarmupS, durationS: P.tputDurationS }, 180_000);
    r.serverCpuUsPerSignal = usPerSignal(r.serverCpuS, r.signalsPerS * P.tputDurationS);
    r.serverUserUsPerSignal = usPerSignal(r.serverUserCpuS, r.signalsPerS * P.tputDurationS);
    log(`${label} throughput: ${r.signalsPerS} signals/s (CPU: server ${r.serverCpuPct} %, load generator ${r.loadgenCpuPct} %, other ${r.otherCpuPct} %; per second ${r.perSecond.join(' ')})`);
    const rounds = [...(res.throughput?.rounds ?? []), r];
    const best = rounds.reduce((x, y) => (y.signalsPerS > x.signalsPerS ? y : x));
    res.throughput = { ...best, rounds };
    return undefined;
  }]),
  ['setup', async ({ redis, pids }, lg, log, label) => {
    await sleep(1000);
    const s0 = redis ? await commandStats(redis.port) : null;
    const meter = phaseMeter(pids);
    const r = await lg.call('setup', { ratePerS: P.setupRate, durationS: P.setupS, candidates: P.candidates }, 180_000);
    await sleep(1000); // let the last hang-ups land before reading counters
    const cpu = meter();
    const out = { ...r, ...cpu, cpuMsPerCall: r.completed ? round((cpu.serverCpuS * 1000) / r.completed, 2) : null };
    if (redis) {
      const d = statsDiff(s0, await commandStats(redis.port));
      out.redisCommands = { total: d.total, perCall: r.calls ? round(d.total / r.calls, 1) : null, byCommand: d.byCommand };
      // The same flow once more, few calls and slowly, under MONITOR: which commands are round
      // trips from the server and which run inside Lua scripts (INFO counts both alike).
      await sleep(500);
      const mon = monitor(redis.port);
      await mon.started;
      const audit = await lg.call('setup', { ratePerS: 10, durationS: P.auditCalls / 10, candidates: P.candidates }, 60_000);
      await sleep(1000);
      const seen = await mon.stop();
      const per = (n) => round(n / audit.calls, 1);
      out.redisAudit = { calls: audit.calls, completed: audit.completed, perCall: per(seen.client + seen.script),
        roundTripsPerCall: per(seen.client), inScriptsPerCall: per(seen.script),
        byCommandPerCall: Object.fromEntries(Object.entries(seen.byCommand).sort((x, y) => (y[1].client + y[1].script) - (x[1].client + x[1].script))
          .map(([k, v]) => [k, { client: per(v.client), script: per(v.script) }])) };
    }
    log(`${label} set-up: ${r.completed}/${r.calls} calls, p50 ${r.timeMs.p50} p99 ${r.timeMs.p99} ms, ${out.cpuMsPerCall} ms server CPU per call` +
      (out.redisCommands ? `, ${out.redisCommands.perCall} Redis commands per call` : '') +
      (out.redisAudit ? ` (audit of ${out.redisAudit.calls}: ${out.redisAudit.roundTripsPerCall} sent + ${out.redisAudit.inScriptsPerCall} inside scripts)` : ''));
    return out;
  }],
];

/** Other work above this share of a core marks a figure as disturbed. */
const DISTURBED_PCT = 15;
/** Seconds the run may spend re-measuring disturbed figures (a shared machine). */
let retryBudgetS = QUICK ? 30 : 150;

/** Waits (at most `maxS`) until the machine's other load stays under DISTURBED_PCT for 2 s. */
async function waitQuiet(lg, maxS) {
  const end = Date.now() + maxS * 1000;
  while (Date.now() < end) {
    const m = phaseMeter({ server: process.pid, loadgen: lg.pid });
    await sleep(2000);
    if (m().otherCpuPct < DISTURBED_PCT) return true;
  }
  return false;
}

async function runPhases(ctxs, lg, log) {
  for (const [name, run] of PHASE_RUNNERS) {
    const phase = name.replace(/[\d#]+$/, '');
    if (!PHASES.includes(phase)) continue;
    for (const ctx of ctxs) {
      if (!ctx.srv) continue;
      if (ctx.def.phases && !ctx.def.phases.includes(phase)) continue;
      const label = `${ctx.def.label}:`.padEnd(15);
      let best;
      for (let attempt = 1; ; attempt++) {
        try {
          await lg.call('target', { protocol: ctx.def.protocol, hangup: ctx.def.hangup, port: ctx.srv.port });
          const t0 = Date.now();
          const out = await run(ctx, lg, log, label);
          const other = (out ?? ctx.res[name.replace(/#\d+$/, '')])?.otherCpuPct;
          if (out !== undefined && (!best || !(best.otherCpuPct <= other))) best = { ...out, attempts: attempt };
          // Re-measure a figure that other work disturbed, while the budget lasts.
          const cost = (Date.now() - t0) / 1000;
          // Only the figures the bars compare are re-measured (latency at 100/500 calls, throughput).
          const barred = /^(latency100|latency500|throughput)/.test(name);
          if (!barred || !(other > DISTURBED_PCT) || attempt >= 3 || retryBudgetS < cost + 20) break;
          const w0 = Date.now();
          log(`${label} ${name}: other work used ${other} % of a core; waiting for a quiet moment to measure again`);
          await waitQuiet(lg, 20);
          retryBudgetS -= cost + (Date.now() - w0) / 1000;
        } catch (err) {
          ctx.res[name.replace(/#\d+$/, '')] ??= { error: err.message.split('\n')[0] };
          log(`${label} ${name} FAILED: ${err.message.split('\n')[0]}`);
          break;
        }
      }
      if (best) ctx.res[name] = best;
    }
  }
}

/** Waits for GET /healthz to answer 200, and for `workers` listening workers to settle. */
async function waitHealthy(port, workers) {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) break;
    } catch { /* not yet */ }
    await sleep(100);
  }
  if (workers > 1) await sleep(1500); // the cluster primary hands out connections only to listening workers
}

async function redisMemory(port) {
  const text = await redisCommand(port, 'INFO memory');
  return Number(/used_memory:(\d+)/.exec(text)?.[1] ?? 0);
}

/** Server CPU µs per relayed signal, from CPU seconds over a window and the signals in it. */
const usPerSignal = (cpuS, signals) => (signals && cpuS !== undefined ? round((cpuS * 1e6) / signals, 1) : null);

const round = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? null : Math.round(v * 10 ** d) / 10 ** d);

// ---------------------------------------------------------------------------------------------
// Reporting

function table(headers, rows) {
  const cells = [headers, ...rows].map((r) => headers.map((_, i) => (r[i] === null || r[i] === undefined ? '–' : String(r[i]))));
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const numeric = headers.map((_, i) => i > 0 && cells.slice(1).every((r) => /^(-?[\d.]+|–|)$/.test(r[i])));
  const line = (r) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

/** Whether the bench runs `phase` on result `r`'s server (a server may name the only phases it runs). */
function ran(r, phase) {
  const phases = ALL_SERVERS.find((s) => s.id === r.id)?.phases;
  return !phases || phases.includes(phase);
}

function report(meta, results) {
  const byId = Object.fromEntries(results.map((r) => [r.id, r]));
  const out = [];
  out.push(`callsig bench, ${meta.date}`);
  out.push(`machine: ${meta.cpu}, ${meta.cores} cores, node ${meta.node}, Linux ${meta.kernel}${meta.quick ? '  (--quick: rough figures)' : ''}${meta.profile ? '  (--profile: distorted figures)' : ''}${meta.nodeFlags?.length ? `  (servers run with ${meta.nodeFlags.join(' ')})` : ''}`);
  out.push('Server and load generator share the cores; compare ratios within this run, not absolute figures across machines.');
  for (const r of results) if (r.error || r.skipped) out.push(`${r.label}: ${r.skipped ? `skipped: ${r.skipped}` : `failed: ${r.error}`}`);
  out.push('');

  for (const calls of P.latencyCalls) {
    out.push(`Relay latency, ${calls} call${calls > 1 ? 's' : ''}, ${calls * P.ratePerCall} signals/s offered (${P.ratePerCall}/s per call), ${P.durationS} s after ${P.warmupS} s warm-up, the round with the median p99 of ${P.latencyRounds}; ms`);
    out.push(table(['server', 'p50', 'p90', 'p99', 'max', 'samples', 'sent/s', 'lost', 'server CPU %', 'server CPU µs/signal', 'of it user space', 'Redis CPU %', 'loadgen CPU %', 'other CPU %', 'p99 of each round'],
      results.filter((r) => !r.skipped).map((r) => {
        const x = r[`latency${calls}`] ?? {};
        return x.error ? [r.label, `error: ${x.error}`, '', '', '', '', '', '', '', '', '', '', '', '', '']
          : [r.label, x.p50, x.p90, x.p99, x.max, x.n, x.sentPerS, x.lost, x.serverCpuPct, x.serverCpuUsPerSignal, x.serverUserUsPerSignal, x.redisCpuPct, x.loadgenCpuPct, x.otherCpuPct,
            (x.rounds ?? [x]).map((y) => y.p99).join(' ')];
      })));
    out.push('');
  }
  out.push(`Max relayed signals/s: ${P.tputCalls} calls, ${P.tputWindow} signals in flight per peer, best of ${P.tputRounds} round(s) of ${P.tputDurationS} s`);
  out.push(table(['server', 'signals/s', 'p50 ms', 'p99 ms', 'server CPU %', 'server CPU µs/signal', 'of it user space', 'Redis CPU %', 'loadgen CPU %', 'other CPU %'],
    results.filter((r) => !r.skipped && ran(r, 'throughput')).map((r) => {
      const x = r.throughput ?? {};
      return x.error ? [r.label, `error: ${x.error}`]
        : [r.label, x.signalsPerS, x.p50, x.p99, x.serverCpuPct, x.serverCpuUsPerSignal, x.serverUserUsPerSignal, x.redisCpuPct, x.loadgenCpuPct, x.otherCpuPct];
    })));
  out.push('');
  out.push(`Call set-up: ${P.setupRate} new calls/s for ${P.setupS} s; join both, welcome, offer, answer, ${P.candidates} candidates each way, hang up`);
  out.push(table(['server', 'calls ok', 'failed', 'p50 ms', 'p90 ms', 'p99 ms', 'server CPU ms/call', 'server CPU %', 'Redis CPU %', 'other CPU %', 'Redis cmds/call'],
    results.filter((r) => !r.skipped && ran(r, 'setup')).map((r) => {
      const x = r.setup ?? {};
      return x.error ? [r.label, `error: ${x.error}`, '', '', '', '', '', '', '', '', '']
        : [r.label, x.completed, x.failed, x.timeMs?.p50, x.timeMs?.p90, x.timeMs?.p99, x.cpuMsPerCall, x.serverCpuPct, x.redisCpuPct, x.otherCpuPct, x.redisCommands?.perCall];
    })));
  out.push('');
  const rs = byId.redis;
  if (rs && !rs.skipped) {
    const per = (x, n) => (x?.redisCommands && n ? round(x.redisCommands.total / n, 1) : null);
    out.push('Redis x2: Redis commands (INFO commandstats) per relayed signal');
    out.push(table(['phase', 'signals', 'commands', 'per signal'], [
      ...P.latencyCalls.map((c) => { const x = rs[`latency${c}`]; return [`latency, ${c} calls`, x?.n, x?.redisCommands?.total, per(x, x?.n)]; }),
      (() => { const x = rs.throughput; const n = x?.signalsPerS && x.signalsPerS * P.tputDurationS; return ['throughput (best round)', n, x?.redisCommands?.total, per(x, n)]; })(),
    ]));
    out.push('');
  }
  out.push(`Memory: server RSS (whole process tree) before ${P.idlePeers} idle peers in calls of two, ${P.settleS} s after they opened, and after ${P.idleS} s idle (the figure); before and idle are read just after a full GC in every process; server CPU is over the idle window, every peer connected`);
  out.push(table(['server', 'peers', 'RSS before KiB', 'at open KiB', 'idle KiB', 'KiB/peer at open', 'KiB/peer idle', 'server CPU % idle', 'Redis KiB/peer', 'Redis cmds idle/min', 'KiB/peer, next peers'],
    results.filter((r) => !r.skipped && ran(r, 'memory')).map((r) => {
      const x = r.memory ?? {};
      return x.error ? [r.label, `error: ${x.error}`, '', '', '', '', '', '', '', '', '']
        : [r.label, x.peers, x.rssBeforeKiB, x.rssAtOpenKiB, x.rssAfterKiB, x.kibPerPeerAtOpen, x.kibPerPeer, x.idleCpu?.serverCpuPct, x.redisUsedMemoryKiBPerPeer, x.redisIdle?.perMinute,
          x.kibPerPeerMore ?? '–'];
    })));
  if (P.morePeers > 0) {
    out.push(`KiB/peer, next peers: ${P.morePeers} more idle peers opened on top of the ${P.idlePeers}, RSS read after ${P.moreIdleS} s and a full GC, over the idle reading: ` +
      'what one more connection costs once the one-time costs (code compiled as peers came, heap and allocator growth) are paid');
  }
  for (const r of results.filter((x) => x.memory?.rssByProcessKiB)) {
    out.push(`${r.label}, RSS by process, before -> idle KiB: ` +
      r.memory.rssByProcessKiB.map((x) => `${x.process} ${x.before} -> ${x.after} (+${x.after - x.before})` +
        (x.more != null ? `, next peers -> ${x.more} (+${x.more - x.after})` : '')).join('; '));
  }
  out.push('');

  // The design.md table, this run's column.
  const col = (f) => results.map((r) => (r.skipped ? 'skipped' : f(r) ?? '–'));
  out.push('Summary (design.md layout)');
  out.push(table(['', ...results.map((r) => r.label)], [
    ['p99 ms, 100 calls, 400 signals/s', ...col((r) => r.latency100?.p99)],
    ['p99 ms, 500 calls, 2,000 signals/s', ...col((r) => r.latency500?.p99)],
    [`max signals/s, ${P.tputCalls} calls`, ...col((r) => r.throughput?.signalsPerS)],
    [`KiB per idle connection (${P.idlePeers})`, ...col((r) => r.memory?.kibPerPeer)],
    [`server CPU % with ${P.idlePeers} idle peers`, ...col((r) => r.memory?.idleCpu?.serverCpuPct)],
    ['Redis commands per call', ...col((r) => r.setup?.redisCommands?.perCall)],
    ['Redis commands per idle minute', ...col((r) => r.memory?.redisIdle?.perMinute)],
  ]));
  out.push('');

  const busy = [];
  for (const r of results) {
    for (const [k, v] of Object.entries(r)) if (v && typeof v === 'object' && v.otherCpuPct > DISTURBED_PCT) busy.push(`${r.label} ${k} (${v.otherCpuPct} %)`);
  }
  if (busy.length) {
    out.push(`Warning: other processes used more than ${DISTURBED_PCT} % of a core during: ${busy.join(', ')}.`);
    out.push('Those figures are disturbed by work outside the bench; rerun on a quiet machine before trusting them.');
    out.push('');
  }

  const bars = evaluateBars(byId);
  out.push('Bars (design.md)');
  out.push(table(['figure', 'bar', 'measured', 'verdict'], bars.map((b) => [b.figure, b.bar, b.measured, b.verdict])));
  return { text: out.join('\n'), bars, disturbed: busy };
}

function evaluateBars(s) {
  const bars = [];
  const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? a / b : null);
  // A verdict on figures taken while other work used the machine is marked, not trusted.
  const noisy = (...phases) => phases.some((x) => x?.otherCpuPct > DISTURBED_PCT);
  const add = (figure, bar, value, measured, ok, ...phases) => bars.push({
    figure, bar, value, measured: value === null ? 'not measured' : measured,
    verdict: value === null ? 'n/a' : `${ok ? 'pass' : 'MISS'}${noisy(...phases) ? ' (disturbed)' : ''}`,
  });
  for (const calls of [100, 500]) {
    const r = ratio(s.memory?.[`latency${calls}`]?.p99, s.ws?.[`latency${calls}`]?.p99);
    add(`InMemory p99, ${calls} calls`, '<= 1.5x bare ws', r,
      r !== null && `${s.memory[`latency${calls}`].p99} / ${s.ws[`latency${calls}`].p99} ms = ${r.toFixed(2)}x`, r <= 1.5,
      s.memory?.[`latency${calls}`], s.ws?.[`latency${calls}`]);
  }
  // Redis x2, and as a reference, not a bar, the same server with each call's peers dealt to the
  // workers in turn (rr): half the signals cross workers through Redis, as between instances.
  const redisBars = [
    ['redis', 'Redis x2 p99', (limit) => `< ${limit} ms, sustained`],
    ['redis-rr', '  the same, calls split across workers (rr)', (limit) => `(reference: < ${limit} ms)`],
  ];
  for (const [id, figure, bar] of redisBars) {
    for (const [calls, limit] of [[100, 3], [500, 10]]) {
      const x = s[id]?.[`latency${calls}`];
      const v = typeof x?.p99 === 'number' ? x.p99 : null;
      if (id === 'redis-rr' && v === null) continue;
      const sustained = x && x.lost === 0 && x.sentPerS >= 0.95 * x.offeredPerS;
      add(`${figure}, ${calls} calls`, bar(limit), v,
        v !== null && `${v} ms, ${x.sentPerS}/${x.offeredPerS} signals/s sent, ${x.lost} lost`, v < limit && sustained, x);
    }
  }
  const t = ratio(s.memory?.throughput?.signalsPerS, s['ws-json']?.throughput?.signalsPerS);
  add('throughput, InMemory, one worker', '>= 0.9x bare ws+JSON', t,
    t !== null && `${s.memory.throughput.signalsPerS} / ${s['ws-json'].throughput.signalsPerS} = ${t.toFixed(2)}x`, t >= 0.9,
    s.memory?.throughput, s['ws-json']?.throughput);
  const cu = ratio(s['ws-json']?.throughput?.serverCpuUsPerSignal, s.memory?.throughput?.serverCpuUsPerSignal);
  if (cu !== null) {
    bars.push({ figure: '  the same, as signals per server CPU-second', bar: '(supporting: robust to outside load)', value: cu,
      measured: `${s.memory.throughput.serverCpuUsPerSignal} vs ${s['ws-json'].throughput.serverCpuUsPerSignal} µs/signal = ${cu.toFixed(2)}x`, verdict: cu >= 0.9 ? 'pass' : 'MISS' });
  }
  for (const id of ['memory', 'redis']) {
    const m = ratio(s[id]?.memory?.kibPerPeer, s.ws?.memory?.kibPerPeer);
    const o = ratio(s[id]?.memory?.kibPerPeerAtOpen, s.ws?.memory?.kibPerPeerAtOpen);
    add(`memory per idle connection, ${id === 'memory' ? 'InMemory' : 'Redis x2'}`, '<= 1.25x bare ws', m,
      m !== null && `${s[id].memory.kibPerPeer} / ${s.ws.memory.kibPerPeer} KiB = ${m.toFixed(2)}x after ${s[id].memory.idleS} s idle` +
        (o !== null ? ` (${o.toFixed(2)}x at open)` : ''), m <= 1.25);
    const next = ratio(s[id]?.memory?.kibPerPeerMore, s.ws?.memory?.kibPerPeerMore);
    if (next !== null) {
      bars.push({ figure: `  the same, the next ${s[id].memory.morePeers} peers`, bar: '(supporting: one-time costs left out)', value: next,
        measured: `${s[id].memory.kibPerPeerMore} / ${s.ws.memory.kibPerPeerMore} KiB = ${next.toFixed(2)}x`, verdict: next <= 1.25 ? 'pass' : 'MISS' });
    }
  }
  const idle = s.redis?.memory?.redisIdle;
  add('Redis commands while idle', '0 per minute', idle ? idle.perMinute : null,
    idle && `${idle.commands} in ${idle.windowS} s (${idle.perMinute}/min)`, idle?.commands === 0);
  const pc = s.redis?.setup?.redisCommands;
  const au = s.redis?.setup?.redisAudit;
  add('Redis commands per 1-to-1 call (INFO commandstats)', '<= 40', pc ? pc.perCall : null,
    pc && `${pc.perCall}${au ? ` (= ${au.roundTripsPerCall} sent by the server + ${au.inScriptsPerCall} run inside Lua scripts)` : ''}`, pc?.perCall <= 40);
  add('  the same, counting round trips only', '<= 40', au ? au.roundTripsPerCall : null, au && `${au.roundTripsPerCall} (MONITOR, ${au.calls} calls)`, au?.roundTripsPerCall <= 40);
  bars.push({ figure: 'signals lost across a worker/Redis restart', bar: '0 within the resume grace', value: null,
    measured: 'not measured by bench/ (a test of behaviour, not speed)', verdict: 'n/a' });
  return bars;
}

// ---------------------------------------------------------------------------------------------

const FILE_LIMIT = (() => {
  const need = P.idlePeers + P.morePeers + 2000;
  const { soft, hard } = openFileLimits();
  if (soft >= need) return null;
  if (hard >= need) return need;
  console.warn(`warning: open-file limit ${soft}/${hard} is below the ${need} the idle test needs; its peers will fail to connect. Raise it with ulimit -n.`);
  return hard === Infinity ? need : hard;
})();

/** `--report=FILE`: prints the tables and redraws the chart from a saved results file. */
function reprint(file) {
  const json = JSON.parse(readFileSync(file, 'utf8'));
  P = json.meta.params;
  const { text } = report(json.meta, json.results);
  console.log(text);
  writeFileSync(join(RESULTS, 'chart.svg'), chart(json.meta, json.results));
  console.log('\nwrote bench/results/chart.svg');
}

async function main() {
  const reportFile = args.find((a) => a.startsWith('--report='))?.slice(9);
  if (reportFile) return reprint(reportFile);
  const started = Date.now();
  const watchdog = setTimeout(() => { console.error(`bench: over the ${BUDGET_MS / 60000} min budget, stopping`); cleanup(); process.exit(2); }, BUDGET_MS);
  watchdog.unref();
  const log = (s) => console.log(`[${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s] ${s}`);
  const meta = {
    date: new Date().toISOString(), cpu: machine().model, cores: cpus().length, node: process.version, kernel: release(),
    quick: QUICK, profile: PROFILE, nodeFlags: NODE_FLAGS, params: P,
  };
  const limits = openFileLimits();
  log(`${meta.cpu}, ${meta.cores} cores, node ${meta.node}; open files ${limits.soft}/${limits.hard}${FILE_LIMIT ? `, raised to ${FILE_LIMIT} for the children` : ''}`);

  const quiet = phaseMeter({ server: process.pid });
  await sleep(2000);
  const background = quiet().otherCpuPct;
  meta.backgroundCpuPct = background;
  log(`background load before the run: ${background} % of a core${background > DISTURBED_PCT ? ' (busy machine: figures will be noisy)' : ''}`);

  const lg = startLoadgen(ROOT, FILE_LIMIT);
  cleanupHooks.push(() => lg.stop());
  await lg.ready;
  const ctxs = [];
  for (const def of SERVERS) {
    if (def.ours && !existsSync(join(ROOT, 'dist', 'main.js'))) {
      const skipped = 'dist/main.js does not exist (the server entry point is not built yet)';
      log(`${def.label}: skipped, ${skipped}`);
      ctxs.push({ def, res: { id: def.id, label: def.label, skipped } });
      continue;
    }
    ctxs.push(await startOne(def, lg, log));
  }
  try {
    await runPhases(ctxs, lg, log);
  } finally {
    for (const ctx of ctxs) await stopOne(ctx, log);
    lg.stop();
  }
  const results = ctxs.map((c) => c.res);

  const { text, bars, disturbed } = report(meta, results);
  meta.disturbed = disturbed;
  console.log(`\n${text}`);
  mkdirSync(RESULTS, { recursive: true });
  const json = { meta: { ...meta, wallS: round((Date.now() - started) / 1000) }, results, bars };
  if (PROFILE) {
    const summaries = [];
    for (const r of results) {
      if (!r.profileDir || !existsSync(r.profileDir)) continue;
      for (const f of readdirSync(r.profileDir).filter((n) => n.endsWith('.cpuprofile'))) {
        const windows = Object.values(r).flatMap((x) => [x, ...(x?.rounds ?? [])])
          .filter((x) => Array.isArray(x?.windowUs) && x.windowUs[1]).map((x) => x.windowUs);
        const s = summarize(join(r.profileDir, f), ROOT, windows);
        const title = `${r.label}, ${f}`;
        summaries.push(formatSummary(title, s));
        r.profiles = [...(r.profiles ?? []), { file: join('bench', 'results', 'profiles', r.id, f), ...s }];
      }
    }
    const profText = summaries.join('\n\n');
    console.log(`\n${profText || 'no .cpuprofile written (did the server exit cleanly on SIGTERM?)'}`);
    writeFileSync(join(RESULTS, 'profile.txt'), `${text}\n\n${profText}\n`);
    writeFileSync(join(RESULTS, 'profile.json'), `${JSON.stringify(json, null, 2)}\n`);
    console.log(`\nwrote bench/results/profile.json, bench/results/profile.txt`);
  } else {
    writeFileSync(join(RESULTS, 'latest.json'), `${JSON.stringify(json, null, 2)}\n`);
    writeFileSync(join(RESULTS, 'latest.txt'), `${text}\n`);
    writeFileSync(join(RESULTS, 'chart.svg'), chart(meta, results));
    console.log(`\nwrote bench/results/latest.json, latest.txt, chart.svg (${round((Date.now() - started) / 1000)} s)`);
  }
  process.exitCode = 0;
}

function chart(meta, results) {
  const live = results.filter((r) => !r.skipped);
  const val = (v) => (typeof v === 'number' ? v : null);
  const bars = (get, base) => live.map((r) => {
    const v = val(get(r));
    const b = base ? val(get(base)) : null;
    return { id: r.id, label: r.label, value: v, note: v !== null && b && r !== base ? `${(v / b).toFixed(2)}x` : '' };
  });
  const ws = live.find((r) => r.id === 'ws');
  const wsJson = live.find((r) => r.id === 'ws-json');
  return chartSvg({
    servers: live,
    meta: `callsig bench ${meta.date.slice(0, 16)}Z on ${meta.cpu}, ${meta.cores} cores, node ${meta.node}${meta.quick ? ' (quick run)' : ''}; ratios are to the bare ws relay (throughput: to ws+JSON)`,
    warning: meta.disturbed?.length ? `Disturbed by outside load in ${meta.disturbed.length} figure(s): see latest.txt` : '',
    figures: [
      { title: 'Relay latency p99', unit: `ms, ${P.ratePerCall} signals/s per call (lower is better)`, groups: [100, 500].map((c) => ({
        label: `${c} calls`, bars: bars((r) => r[`latency${c}`]?.p99, ws) })) },
      { title: 'Max relayed signals/s', unit: `one worker, ${P.tputCalls} calls (higher is better)`, groups: [{ label: 'signals/s', bars: bars((r) => r.throughput?.signalsPerS, wsJson) }] },
      { title: 'Memory per idle connection', unit: `KiB, ${P.idlePeers} peers (lower is better)`, groups: [{ label: 'KiB', bars: bars((r) => r.memory?.kibPerPeer, ws) }] },
    ],
  });
}

const cleanupHooks = [];
function cleanup() { for (const h of cleanupHooks) { try { h(); } catch { /* best effort */ } } }
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130); });

main().catch((err) => { console.error(err); cleanup(); process.exit(1); });
