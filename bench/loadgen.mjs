// The load generator: a child process of run.mjs, driven over IPC. It opens calls against one
// target at a time, runs one phase per command and answers with what it measured. It targets
// 127.0.0.1 only, holds at most MAX_PEERS sockets, and exits by itself when its parent goes
// away or its lifetime runs out.
import { performance, monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Call, pool, nowMicros, withTimeout } from './lib/clients.mjs';
import { Samples } from './lib/stats.mjs';
import { writeFileSync } from 'node:fs';

const MAX_PEERS = 12_000;
const LIFETIME_MS = 26 * 60_000;
const OPEN_CONCURRENCY = 50;
const DRAIN_MS = 3_000;

let target = null; // {protocol: 'ours'|'peerjs', hangup: 'bye'|'close', port}
let held = []; // calls kept open by `idleOpen` until `idleRelease`

setTimeout(() => { console.error('loadgen: lifetime over, exiting'); process.exit(3); }, LIFETIME_MS).unref();
process.on('disconnect', () => process.exit(0));

/** Opens `n` calls, at most OPEN_CONCURRENCY at a time; throws if any fails. */
async function openCalls(n, opts) {
  if (n * 2 > MAX_PEERS) throw new Error(`refusing ${n * 2} peers (max ${MAX_PEERS})`);
  const calls = Array.from({ length: n }, () => new Call(target));
  const results = await pool(calls, OPEN_CONCURRENCY, (c) => c.open(opts));
  const failed = results.filter((r) => !r.ok);
  if (failed.length) {
    await closeCalls(calls);
    throw new Error(`${failed.length}/${n} calls failed to open, first: ${failed[0].error}`);
  }
  return calls;
}

async function closeCalls(calls) {
  await pool(calls, 200, (c) => c.hangup());
}

/** Measures the loadgen's event-loop delay over a phase, to show it kept up (run.mjs reads its CPU). */
function selfMeter() {
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  return () => {
    loop.disable();
    return { loadgenLoopDelayP99Ms: Math.round(loop.percentile(99) / 1e4) / 100 };
  };
}

/** Tells run.mjs when the measurement window opens and closes, so it can read server CPU. */
function markWindow(warmupS, durationS) {
  const a = setTimeout(() => process.send({ mark: 'start' }), warmupS * 1000);
  const b = setTimeout(() => process.send({ mark: 'end' }), (warmupS + durationS) * 1000);
  return () => { clearTimeout(a); clearTimeout(b); };
}

async function drain(isDone) {
  const end = performance.now() + DRAIN_MS;
  while (!isDone() && performance.now() < end) await sleep(20);
}

const phases = {
  target(t) {
    if (!Number.isInteger(t.port)) throw new Error('target needs a port');
    target = t;
    return { ok: true };
  },

  /** Fixed offered rate: each call sends `ratePerCall` signals/s, alternating direction. */
  async latency({ calls: n, ratePerCall, warmupS, durationS, traceFile }) {
    const calls = await openCalls(n);
    const meter = selfMeter();
    const samples = new Samples();
    const period = 1000 / ratePerCall;
    const t0 = nowMicros() + warmupS * 1e6;
    const t1 = t0 + durationS * 1e6;
    let sent = 0;
    let received = 0;
    /**
     * With `traceFile` (bench/hops.mjs): each sample's send and arrival time (µs), written at the
     * end with `toMono`, what turns them into the machine's monotonic clock (the servers' stamps
     * use it): performance.now() counts on that clock from this process's time origin.
     */
    const trace = traceFile ? [] : null;
    const onSignal = (ts) => {
      if (ts >= t0 && ts < t1) {
        const now = nowMicros();
        samples.add((now - ts) / 1000);
        trace?.push(ts, now);
        received++;
      }
    };
    const timers = [];
    const unmark = markWindow(warmupS, durationS);
    for (const c of calls) {
      c.a.onSignal = onSignal;
      c.b.onSignal = onSignal;
      let turn = 0;
      const tick = () => {
        const peer = turn++ % 2 === 0 ? c.a : c.b;
        const now = nowMicros();
        if (now >= t0 && now < t1) sent++;
        peer.sendNext();
      };
      timers.push(setTimeout(() => { tick(); timers.push(setInterval(tick, period)); }, Math.random() * period));
    }
    await sleep((warmupS + durationS) * 1000 + 5);
    unmark();
    for (const t of timers) { clearTimeout(t); clearInterval(t); }
    await drain(() => received >= sent);
    if (trace) writeFileSync(traceFile, JSON.stringify({ toMono: Number(process.hrtime.bigint() / 1000n) - nowMicros(), samples: trace }));
    const self = meter();
    await closeCalls(calls);
    return {
      calls: n, offeredPerS: n * ratePerCall, sentPerS: Math.round(sent / durationS), lost: sent - received,
      ...samples.summary(), ...self,
    };
  },

  /** Closed loop: every peer keeps `window` signals in flight; counts arrivals per second. */
  async throughput({ calls: n, window, warmupS, durationS }) {
    const calls = await openCalls(n);
    const meter = selfMeter();
    const samples = new Samples(1 << 20);
    let running = true;
    let received = 0;
    let inFlight = 0;
    const perSecond = new Array(Math.ceil(durationS)).fill(0);
    const start = nowMicros();
    const t0 = start + warmupS * 1e6;
    const t1 = t0 + durationS * 1e6;
    for (const c of calls) {
      for (const peer of [c.a, c.b]) {
        const sender = peer.other;
        peer.onSignal = (ts) => {
          inFlight--;
          const now = nowMicros();
          if (now >= t0 && now < t1) {
            received++;
            perSecond[Math.floor((now - t0) / 1e6)]++;
            samples.add((now - ts) / 1000);
          }
          if (running) { inFlight++; sender.sendNext(); }
        };
      }
    }
    const unmark = markWindow(warmupS, durationS);
    for (const c of calls) for (let i = 0; i < window; i++) { inFlight += 2; c.a.sendNext(); c.b.sendNext(); }
    await sleep((warmupS + durationS) * 1000 + 5);
    unmark();
    running = false;
    await drain(() => inFlight <= 0);
    const self = meter();
    await closeCalls(calls);
    return { calls: n, window, signalsPerS: Math.round(received / durationS), perSecond, lostAtEnd: inFlight, ...samples.summary(), ...self };
  },

  /** New calls at `ratePerS`: join both, offer, answer, `candidates` each way, hang up. */
  async setup({ ratePerS, durationS, candidates }) {
    const meter = selfMeter();
    const total = Math.round(ratePerS * durationS);
    const times = new Samples();
    const parts = { joinA: new Samples(), joinB: new Samples(), offer: new Samples(), rest: new Samples() };
    const errors = [];
    const running = [];
    const begin = performance.now();
    let started = 0;
    while (started < total) {
      const due = Math.min(total, Math.floor(((performance.now() - begin) / 1000) * ratePerS) + 1);
      while (started < due) {
        started++;
        running.push(withTimeout(oneCall(candidates, parts), 20_000, 'call set-up').then(
          (ms) => times.add(ms),
          (err) => errors.push(err.message),
        ));
      }
      await sleep(5);
    }
    const offeredS = (performance.now() - begin) / 1000;
    await Promise.all(running);
    return {
      calls: total, ratePerS, offeredS: Math.round(offeredS * 100) / 100, completed: times.n, failed: errors.length,
      firstError: errors[0] ?? null, timeMs: times.summary(), ...meter(),
      // Where a call's time goes: A's connect to welcome, B's, B's offer to A, the rest to done.
      partsMs: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, v.summary()])),
    };
  },

  /** Opens `peers` idle peers in calls of two and keeps them until `idleRelease`. */
  async idleOpen({ peers }) {
    const t = performance.now();
    held = held.concat(await openCalls(Math.floor(peers / 2), { waitJoined: false }));
    return { peers: held.length * 2, openMs: Math.round(performance.now() - t) };
  },

  async idleRelease() {
    const n = held.length * 2;
    const t = performance.now();
    await closeCalls(held);
    held = [];
    return { peers: n, closeMs: Math.round(performance.now() - t) };
  },
};

/** One call set-up; resolves with its time in ms from the first connect to the last candidate. */
async function oneCall(candidates, parts) {
  const t = performance.now();
  const call = new Call(target);
  try {
    await call.a.connect();
    const tA = performance.now();
    const { a, b } = call;
    let tOffer = 0;
    const done = new Promise((resolve) => {
      const got = { a: { sdp: 0, cand: 0 }, b: { sdp: 0, cand: 0 } };
      const check = () => {
        if (got.a.sdp === 1 && got.b.sdp === 1 && got.a.cand === candidates && got.b.cand === candidates) resolve();
      };
      a.onSignal = (_ts, kind) => {
        if (kind === 1) {
          got.a.sdp++;
          tOffer = performance.now();
          a.send('answer');
          for (let i = 0; i < candidates; i++) a.send('candidate');
        } else got.a.cand++;
        check();
      };
      b.onSignal = (_ts, kind) => { if (kind === 1) got.b.sdp++; else got.b.cand++; check(); };
    });
    await b.connect();
    const tB = performance.now();
    // The newcomer finds a peer in `welcome` and makes the offer, trickling its candidates.
    b.send('offer');
    for (let i = 0; i < candidates; i++) b.send('candidate');
    await done;
    const end = performance.now();
    parts.joinA.add(tA - t);
    parts.joinB.add(tB - tA);
    parts.offer.add(tOffer - tB);
    parts.rest.add(end - tOffer);
    return end - t;
  } finally {
    await call.hangup();
  }
}

process.on('message', async ({ id, cmd, args }) => {
  try {
    if (!phases[cmd]) throw new Error(`unknown command ${cmd}`);
    process.send({ id, result: await phases[cmd](args ?? {}) });
  } catch (err) {
    process.send({ id, error: err.stack ?? String(err) });
  }
});
process.send({ ready: true });
