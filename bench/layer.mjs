#!/usr/bin/env node
/**
 * Channel layer benchmark: `npm run bench:layer` (builds first, imports dist/layers).
 *
 * For InMemory and for Redis (a redis-server it starts itself on a free loopback port, without
 * persistence): send -> receive latency (p50/p99, one message in flight), send throughput (many
 * in flight), group send throughput (a 10-member group), and for Redis the commands each
 * operation costs on the wire (counted with MONITOR; script internals shown apart) and while idle.
 * Bounded: fixed message counts, a time limit per phase, everything stopped at the end.
 *
 * Options (environment): BENCH_MESSAGES (default 5000), BENCH_REDIS_URL (use this Redis
 * instead of starting one; it must be on loopback and disposable: the bench flushes its prefix).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { InMemoryChannelLayer, RedisChannelLayer } = await import(path.join(ROOT, 'dist', 'layers', 'index.js'));
const { Redis } = await import('ioredis');

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 5000);
const PHASE_LIMIT_MS = 60_000;
const PAYLOAD = { type: 'signal.relay', from: 'peer-a', to: 'peer-b', data: { kind: 'candidate', candidate: 'candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host', sdpMid: '0', sdpMLineIndex: 0 } };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function deadline(what) {
  const end = Date.now() + PHASE_LIMIT_MS;
  return () => {
    if (Date.now() > end) throw new Error(`${what} took longer than ${PHASE_LIMIT_MS / 1000} s`);
  };
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startRedis() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'callsig-bench-redis-'));
  const port = await freePort();
  const proc = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${out}`)), 10_000);
    proc.on('error', (err) => reject(new Error(`cannot run redis-server (${err.message}); install it or set BENCH_REDIS_URL`)));
    proc.stdout.on('data', (d) => {
      out += d;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.on('exit', (code) => reject(new Error(`redis-server exited (${code}):\n${out}`)));
  });
  proc.stdout.resume();
  proc.stderr.resume();
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Counts wire commands (and script-internal ones) with MONITOR between start() and stop(). */
async function commandCounter(url) {
  const client = new Redis(url, { enableReadyCheck: false, disableClientInfo: true });
  const monitor = await client.monitor();
  client.disconnect();
  const marker = `bench-marker-${Math.random()}`;
  let counts = { wire: 0, lua: 0, byCommand: {} };
  let seen;
  monitor.on('monitor', (_t, args, source) => {
    const name = String(args[0]).toLowerCase();
    if (name === 'echo' && args[1] === marker) return seen?.();
    if (source === 'lua') counts.lua++;
    else {
      counts.wire++;
      counts.byCommand[name] = (counts.byCommand[name] ?? 0) + 1;
    }
  });
  const sync = async () => {
    const probe = new Redis(url, { enableReadyCheck: false, disableClientInfo: true });
    const done = new Promise((r) => (seen = r));
    await probe.echo(marker);
    await done;
    probe.disconnect();
  };
  return {
    async start() {
      await sync();
      counts = { wire: 0, lua: 0, byCommand: {} };
    },
    async stop() {
      await sync();
      return structuredClone(counts);
    },
    close() {
      monitor.disconnect();
    },
  };
}

/** Receives on `channel` forever (until the layer closes), calling onMessage for each. */
function receiveLoop(layer, channel, onMessage) {
  (async () => {
    for (;;) {
      let m;
      try {
        m = await layer.receive(channel);
      } catch {
        return;
      }
      onMessage(m);
    }
  })();
}

async function latency(sender, receiver, channel, count) {
  const check = deadline('latency');
  let resolveNext;
  receiveLoop(receiver, channel, () => resolveNext?.());
  const samples = [];
  for (let i = 0; i < count; i++) {
    const got = new Promise((r) => (resolveNext = r));
    const t0 = performance.now();
    await sender.send(channel, { ...PAYLOAD, i });
    await got;
    samples.push(performance.now() - t0);
    check();
  }
  samples.sort((a, b) => a - b);
  return { p50: percentile(samples, 50), p99: percentile(samples, 99) };
}

async function throughput(sender, receiver, channel, count, inFlight = 200) {
  const check = deadline('throughput');
  let received = 0;
  let done;
  const all = new Promise((r) => (done = r));
  receiveLoop(receiver, channel, () => {
    if (++received === count) done();
  });
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await sender.send(channel, { ...PAYLOAD, i });
      check();
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  await all;
  return count / ((performance.now() - t0) / 1000);
}

async function groupThroughput(sender, receivers, count, members = 10) {
  const check = deadline('group send');
  const group = `bench-group-${Math.random().toString(36).slice(2)}`;
  let delivered = 0;
  let done;
  const all = new Promise((r) => (done = r));
  for (let m = 0; m < members; m++) {
    const layer = receivers[m % receivers.length];
    const ch = await layer.newChannel();
    await layer.groupAdd(group, ch);
    receiveLoop(layer, ch, () => {
      if (++delivered === count * members) done();
    });
  }
  await sleep(100);
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      await sender.groupSend(group, PAYLOAD);
      check();
    }
  };
  await Promise.all(Array.from({ length: 50 }, worker));
  await all;
  const seconds = (performance.now() - t0) / 1000;
  return { sends: count / seconds, deliveries: (count * members) / seconds };
}

async function measure(name, makeLayer) {
  const options = { capacity: 1_000_000, prefix: `bench${Math.random().toString(36).slice(2, 8)}` };
  const sender = makeLayer(options);
  const receiver = name === 'InMemory' ? sender : makeLayer(options);
  try {
    const specific = await receiver.newChannel();
    await latency(sender, receiver, specific, 1000); // warm up
    const lat = await latency(sender, receiver, await receiver.newChannel(), Math.min(MESSAGES, 2000));
    const named = await latency(sender, receiver, `bench.inbox.${Math.random().toString(36).slice(2)}`, Math.min(MESSAGES, 2000));
    const tput = await throughput(sender, receiver, await receiver.newChannel(), MESSAGES);
    const group = await groupThroughput(sender, name === 'InMemory' ? [sender] : [receiver, sender], Math.ceil(MESSAGES / 5));
    return { name, lat, named, tput, group };
  } finally {
    await sender.close();
    if (receiver !== sender) await receiver.close();
  }
}

async function commandsPerOperation(url) {
  const counter = await commandCounter(url);
  const prefix = `benchc${Math.random().toString(36).slice(2, 8)}`;
  const rows = [];
  try {
    // The whole life of two workers: connect, join a group, 20 group sends, leave, close.
    await counter.start();
    const a = new RedisChannelLayer({ hosts: url, prefix });
    const b = new RedisChannelLayer({ hosts: url, prefix });
    const [ca, cb] = [await a.newChannel(), await b.newChannel()];
    let got = 0;
    receiveLoop(a, ca, () => got++);
    receiveLoop(b, cb, () => got++);
    await a.groupAdd('call.X', ca);
    await b.groupAdd('call.X', cb);
    for (let i = 0; i < 10; i++) {
      await a.groupSend('call.X', PAYLOAD);
      await b.groupSend('call.X', PAYLOAD);
    }
    while (got < 40) await sleep(5);
    await a.groupDiscard('call.X', ca);
    await b.groupDiscard('call.X', cb);
    await a.close();
    await b.close();
    const flow = await counter.stop();
    rows.push(['two workers: connect, join, 20 group sends, leave, close', flow]);

    const s = new RedisChannelLayer({ hosts: url, prefix });
    const r = new RedisChannelLayer({ hosts: url, prefix });
    const ch = await r.newChannel();
    const named = 'bench.named';
    let n = 0;
    receiveLoop(r, ch, () => n++);
    receiveLoop(r, named, () => n++);
    const members = await Promise.all(Array.from({ length: 50 }, () => r.newChannel()));
    for (const m of members) {
      await s.groupAdd('big', m);
      receiveLoop(r, m, () => n++);
    }
    await s.send(ch, PAYLOAD);
    await s.send(named, PAYLOAD);
    await s.groupSend('big', PAYLOAD);
    while (n < 52) await sleep(5);

    await counter.start();
    for (let i = 0; i < 100; i++) await s.send(ch, PAYLOAD);
    rows.push(['send to a process-specific channel (per send)', await counter.stop(), 100]);
    await counter.start();
    for (let i = 0; i < 100; i++) await s.send(named, PAYLOAD);
    rows.push(['send to a named channel being received (per send)', await counter.stop(), 100]);
    await counter.start();
    for (let i = 0; i < 20; i++) await s.groupSend('big', PAYLOAD);
    rows.push(['group send to 50 members (per group send)', await counter.stop(), 20]);
    await sleep(500);
    await counter.start();
    await sleep(5000);
    rows.push(['idle 5 s with 52 receives waiting', await counter.stop()]);
    await s.close();
    await r.close();
  } finally {
    counter.close();
  }
  return rows;
}

const fmt = (n, digits = 2) => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits));

let redis;
try {
  redis = process.env.BENCH_REDIS_URL ? { url: process.env.BENCH_REDIS_URL, stop: async () => {} } : await startRedis();
  console.log(`callsig channel layer benchmark (${MESSAGES} messages; Node ${process.version}; Redis at ${redis.url})\n`);
  const results = [
    await measure('InMemory', (o) => new InMemoryChannelLayer(o)),
    await measure('Redis', (o) => new RedisChannelLayer({ hosts: redis.url, ...o })),
  ];
  console.log('| layer | latency p50 / p99 ms (process-specific) | latency p50 / p99 ms (named channel) | sends/s | group sends/s (10 members) | deliveries/s |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of results) {
    console.log(`| ${r.name} | ${fmt(r.lat.p50, 3)} / ${fmt(r.lat.p99, 3)} | ${fmt(r.named.p50, 3)} / ${fmt(r.named.p99, 3)} | ${fmt(r.tput)} | ${fmt(r.group.sends)} | ${fmt(r.group.deliveries)} |`);
  }
  console.log('\nRedis commands (wire = what a hosted Redis bills; in scripts = run inside them):\n');
  console.log('| operation | wire commands | in scripts |');
  console.log('| --- | ---: | ---: |');
  for (const [what, counts, per] of await commandsPerOperation(redis.url)) {
    const d = per ?? 1;
    console.log(`| ${what} | ${fmt(counts.wire / d)}${per ? '' : ` ${JSON.stringify(counts.byCommand)}`} | ${fmt(counts.lua / d)} |`);
  }
} finally {
  await redis?.stop();
}
