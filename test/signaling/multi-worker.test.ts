/**
 * protocol.md across workers: real `node dist/main.js` processes sharing one real Redis relay a
 * call split between them, resume a seat on the other worker with its kept signals, end calls
 * wherever their peers are, and shut down with server-restart/1012 so peers resume on a
 * restarted server. Skipped, loudly, when redis-server is not installed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ADMIN_TOKEN, callUrl, expectAlive, expectError, http, join, newCallId, open, range, readSeqs, seqOf, seqSignal, SHAPES, sleep, type Peer } from './harness.js';
import { ensureBuilt, exitWithin, killAll, spawnMain, startMain, type MainProcess } from './processes.js';

const hasRedis = hasRedisServer();
if (!hasRedis) {
  process.stderr.write('\n[signaling conformance] SKIPPING the Redis multi-worker suites: redis-server is not on PATH.\n\n');
}

const GRACE_S = 3;
const TURN_SECRET = 'turn-secret-that-must-never-be-logged-77';
const REDIS_PASSWORD = 'redis-password-that-must-never-be-logged-99';

type Redis = RedisServer;

/** A Redis that requires a password, and its URL in the form hosted Redis (Upstash) gives. */
async function redisWithPassword(): Promise<{ redis: Redis; url: string }> {
  const redis = await startRedisServer({ args: ['--requirepass', REDIS_PASSWORD] });
  const u = new URL(redis.url);
  u.username = 'default';
  u.password = REDIS_PASSWORD;
  return { redis, url: u.toString() };
}

afterAll(() => killAll());

describe('WEB_CONCURRENCY without Redis', () => {
  beforeAll(() => ensureBuilt(), 120_000);

  it('WEB_CONCURRENCY=2 without REDIS_URL exits non-zero with a sentence naming REDIS_URL', async () => {
    const p = spawnMain({ WEB_CONCURRENCY: '2' });
    const { code } = await exitWithin(p, 10_000);
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(p.output()).toMatch(/REDIS_URL/);
    expect(p.listening()).toEqual([]);
  });
});

describe.skipIf(!hasRedis)('two workers sharing one Redis', () => {
  let redis: Redis;
  let redisUrl: string;
  let w1: MainProcess;
  let w2: MainProcess;
  const env = () => ({ REDIS_URL: redisUrl, RESUME_GRACE: String(GRACE_S), ADMIN_TOKEN, RATE_LIMIT: '0', TURN_URLS: 'turn:turn.example.com:3478', TURN_SECRET });

  beforeAll(async () => {
    ensureBuilt();
    ({ redis, url: redisUrl } = await redisWithPassword());
    [w1, w2] = await Promise.all([startMain(env()), startMain(env())]);
  }, 120_000);
  afterAll(async () => {
    for (const w of [w1, w2]) w?.proc.kill('SIGKILL');
    await redis?.stop();
  });

  /** A on w1, B on w2. */
  async function split(callId = newCallId()): Promise<{ a: Peer; b: Peer; callId: string }> {
    const a = await join(w1.url, callId);
    const b = await join(w2.url, callId);
    expect(await a.c.next('peer-joined', 5000)).toEqual({ type: 'peer-joined', peerId: b.id });
    return { a, b, callId };
  }

  it('each worker answers /healthz with layer redis, and logs "Using Redis channel layer"', async () => {
    for (const w of [w1, w2]) {
      const res = await http(w.url, '/healthz');
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'ok', layer: 'redis' });
      expect(w.output()).toContain('Using Redis channel layer');
      expect(w.output()).not.toContain('Using InMemory channel layer');
    }
  });

  it('a call split across the workers: the newcomer sees the first peer, and every shape is relayed both ways with from', async () => {
    const { a, b } = await split();
    expect(b.welcome.peers).toEqual([a.id]);
    expect([a.welcome.polite, b.welcome.polite].filter(Boolean)).toHaveLength(1);
    for (const shape of Object.values(SHAPES)) {
      a.c.send({ ...shape, from: 'spoofed' });
      expect(await b.c.next(undefined, 5000)).toEqual({ ...shape, from: a.id });
      b.c.send({ ...shape, to: a.id });
      expect(await a.c.next(undefined, 5000)).toEqual({ ...shape, to: a.id, from: b.id });
    }
    a.c.send({ ...SHAPES.offer, to: 'nobody-here' });
    await expectError(a.c, 'unknown-peer', 5000);
    await expectAlive(a.c);
  });

  it('500 signals each way across the workers arrive in order, exactly once', async () => {
    const { a, b } = await split();
    for (const n of range(0, 500)) {
      a.c.send(seqSignal(n));
      b.c.send(seqSignal(n));
    }
    const [atB, atA] = await Promise.all([readSeqs(b.c, 500, 10_000), readSeqs(a.c, 500, 10_000)]);
    expect(atB).toEqual(range(0, 500));
    expect(atA).toEqual(range(0, 500));
    await a.c.nothing(300);
    await b.c.nothing(0);
  });

  it('a third peer on either worker is refused with call-full and 4409, and the two inside notice nothing', async () => {
    const { a, b, callId } = await split();
    for (const w of [w1, w2]) {
      const third = await open(callUrl(w.url, callId));
      await expectError(third, 'call-full', 5000);
      expect((await third.closed).code).toBe(4409);
    }
    await a.c.nothing(300);
    await b.c.nothing(0);
  });

  it('a peer that drops on one worker resumes on the other: resumed, same peerId, the kept signals in order, then new ones', async () => {
    const { a, b, callId } = await split();
    b.c.terminate();
    await sleep(300);
    for (const n of range(0, 30)) a.c.send(seqSignal(n));
    await sleep(100);
    const b2 = await join(w1.url, callId, { resume: b.welcome.resumeToken });
    expect(b2.welcome).toMatchObject({ resumed: true, peerId: b.id, callId, peers: [a.id] });
    const kept = [];
    for (let i = 0; i < 30; i++) kept.push(seqOf(await b2.c.next(undefined, 5000)));
    expect(kept).toEqual(range(0, 30));
    a.c.send(seqSignal(30));
    expect(seqOf(await b2.c.next(undefined, 5000))).toBe(30);
    await b2.c.nothing(300);
    expect(await a.c.next(undefined, 5000)).toEqual({ type: 'peer-reconnected', peerId: b.id });
    b2.c.send(SHAPES.answer);
    expect(await a.c.next(undefined, 5000)).toEqual({ ...SHAPES.answer, from: b.id });
  });

  it('a resume token used on one worker is refused on the other', async () => {
    const { b, callId } = await split();
    b.c.terminate();
    await sleep(300);
    await join(w1.url, callId, { resume: b.welcome.resumeToken });
    const again = await open(callUrl(w2.url, callId, { resume: b.welcome.resumeToken }));
    await expectError(again, 'unauthorized', 5000);
    expect((await again.closed).code).toBe(4401);
  });

  it('when the grace passes, the peer on the other worker gets peer-left timeout and a newcomer there takes the seat', async () => {
    const { a, b, callId } = await split();
    b.c.terminate();
    expect(await a.c.next('peer-left', GRACE_S * 1000 + 5000)).toEqual({ type: 'peer-left', peerId: b.id, reason: 'timeout' });
    const c = await join(w2.url, callId);
    expect(c.welcome.peers).toEqual([a.id]);
  }, 20_000);

  it('DELETE /api/calls on one worker ends a call whose peers are on the other: call-ended and 1000 for each', async () => {
    const callId = newCallId();
    const a = await join(w2.url, callId);
    const b = await join(w2.url, callId);
    const res = await http(w1.url, `/api/calls/${callId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBeLessThan(300);
    for (const p of [a, b]) {
      await p.c.next('call-ended', 5000);
      expect((await p.c.closed).code).toBe(1000);
    }
    const fresh = await join(w1.url, callId);
    expect(fresh.welcome.peers).toEqual([]);
  });

  it('DELETE /api/calls with a wrong token answers 401 on every worker', async () => {
    const { a, callId } = await split();
    for (const w of [w1, w2]) {
      const res = await http(w.url, `/api/calls/${callId}`, { method: 'DELETE', headers: { Authorization: 'Bearer not-the-admin-token-at-all' } });
      expect(res.status).toBe(401);
    }
    await a.c.nothing(200);
  });

  it('no secret (Redis password, TURN secret, admin token) appears in either worker\'s log', () => {
    for (const w of [w1, w2]) {
      const out = w.output();
      expect(out.length).toBeGreaterThan(0);
      expect(out).not.toContain(REDIS_PASSWORD);
      expect(out).not.toContain(TURN_SECRET);
      expect(out).not.toContain(ADMIN_TOKEN);
    }
  });
});

describe.skipIf(!hasRedis)('a worker that dies (SIGKILL) mid-call', () => {
  let redis: Redis;
  let stays: MainProcess;
  const env = () => ({ REDIS_URL: redis.url, RESUME_GRACE: String(GRACE_S), ADMIN_TOKEN });

  beforeAll(async () => {
    ensureBuilt();
    redis = await startRedisServer();
    stays = await startMain(env());
  }, 120_000);
  afterAll(async () => {
    stays?.proc.kill('SIGKILL');
    await redis?.stop();
  });

  it('loses no signal: its peer resumes on another worker and gets every signal sent meanwhile, in order', async () => {
    const dies = await startMain(env());
    const callId = newCallId();
    const a = await join(stays.url, callId);
    const b = await join(dies.url, callId);
    await a.c.next('peer-joined', 5000);
    dies.proc.kill('SIGKILL');
    await b.c.closed;
    for (const n of range(0, 10)) a.c.send(seqSignal(n));
    const b2 = await join(stays.url, callId, { resume: b.welcome.resumeToken });
    expect(b2.welcome).toMatchObject({ resumed: true, peerId: b.id });
    expect(await readSeqs(b2.c, 10, 5000)).toEqual(range(0, 10));
    expect(await a.c.next('peer-reconnected', 5000)).toEqual({ type: 'peer-reconnected', peerId: b.id });
  }, 20_000);

  it('a peer that never comes back, on a separate instance that died: a newcomer who finds the call full starts its grace; then the others get peer-left timeout and the seat is free', async () => {
    // Separate instances cannot hear of each other's death without polling Redis (which would
    // cost commands while idle), so the dead seat is noticed when someone finds the call full
    // (one liveness check). Cluster siblings hear it from their primary (test/workers).
    const dies = await startMain(env());
    const callId = newCallId();
    const a = await join(stays.url, callId);
    const b = await join(dies.url, callId);
    await a.c.next('peer-joined', 5000);
    dies.proc.kill('SIGKILL');
    await b.c.closed;
    await sleep(300);
    const refused = await open(callUrl(stays.url, callId));
    await expectError(refused, 'call-full');
    expect((await refused.closed).code).toBe(4409);
    expect(await a.c.next('peer-left', GRACE_S * 1000 + 5000)).toEqual({ type: 'peer-left', peerId: b.id, reason: 'timeout' });
    const c = await join(stays.url, callId);
    expect(c.welcome.peers).toEqual([a.id]);
  }, 20_000);
});

describe.skipIf(!hasRedis)('shutting down and restarting (SIGTERM)', () => {
  let redis: Redis;
  const env = () => ({ REDIS_URL: redis.url, RESUME_GRACE: '20', ADMIN_TOKEN });

  beforeAll(async () => {
    ensureBuilt();
    redis = await startRedisServer();
  }, 120_000);
  afterAll(async () => {
    await redis?.stop();
  });

  it('WEB_CONCURRENCY=2 serves one port; on SIGTERM peers get server-restart and 1012, it exits 0, and they resume on a restarted server and keep relaying', async () => {
    const cluster = await startMain({ ...env(), WEB_CONCURRENCY: '2' }, 2);
    const ports = cluster.listening().map((l) => l.port);
    expect(ports).toEqual([cluster.port, cluster.port]);
    expect(cluster.output().match(/Using Redis channel layer/g)?.length).toBeGreaterThanOrEqual(1);

    // Several calls, so both workers hold peers.
    const calls = [];
    for (let i = 0; i < 3; i++) {
      const callId = newCallId();
      const a = await join(cluster.url, callId);
      const b = await join(cluster.url, callId);
      await a.c.next('peer-joined', 5000);
      a.c.send(SHAPES.offer);
      expect(await b.c.next(undefined, 5000)).toEqual({ ...SHAPES.offer, from: a.id });
      calls.push({ callId, a, b });
    }

    const started = Date.now();
    cluster.proc.kill('SIGTERM');
    for (const { a, b } of calls) {
      for (const p of [a, b]) {
        await expectError(p.c, 'server-restart', 15_000);
        expect((await p.c.closed).code).toBe(1012);
      }
    }
    const { code } = await exitWithin(cluster, 30_000 - (Date.now() - started));
    expect(code).toBe(0);

    // The restarted server, on the same port and the same Redis.
    const again = await startMain({ ...env(), PORT: String(cluster.port) });
    for (const { callId, a, b } of calls) {
      const a2 = await join(again.url, callId, { resume: a.welcome.resumeToken });
      expect(a2.welcome).toMatchObject({ resumed: true, peerId: a.id });
      for (const n of range(0, 5)) a2.c.send(seqSignal(n)); // b is still away
      const b2 = await join(again.url, callId, { resume: b.welcome.resumeToken });
      expect(b2.welcome).toMatchObject({ resumed: true, peerId: b.id, peers: [a.id] });
      expect(await readSeqs(b2.c, 5, 5000)).toEqual(range(0, 5));
      b2.c.send(SHAPES.answer);
      expect(await a2.c.next('answer', 5000)).toEqual({ ...SHAPES.answer, from: b.id });
    }

    // And a single process shuts down the same way.
    const live = await join(again.url, newCallId());
    again.proc.kill('SIGTERM');
    await expectError(live.c, 'server-restart', 15_000);
    expect((await live.c.closed).code).toBe(1012);
    expect((await exitWithin(again, 30_000)).code).toBe(0);
  }, 90_000);
});

describe.skipIf(!hasRedis)('a peer that does not come back after a restart', () => {
  it('is timed out by the restarted server: the one who resumed gets peer-left timeout after the grace, and the seat is free', async () => {
    ensureBuilt();
    const redis = await startRedisServer();
    try {
      const env = { REDIS_URL: redis.url, RESUME_GRACE: String(GRACE_S) };
      const first = await startMain(env);
      const callId = newCallId();
      const a = await join(first.url, callId);
      const b = await join(first.url, callId);
      await a.c.next('peer-joined', 5000);
      first.proc.kill('SIGTERM');
      await a.c.closed;
      await b.c.closed;
      expect((await exitWithin(first, 30_000)).code).toBe(0);
      const again = await startMain(env);
      const a2 = await join(again.url, callId, { resume: a.welcome.resumeToken });
      expect(a2.welcome).toMatchObject({ resumed: true, peerId: a.id });
      // b never comes back.
      expect(await a2.c.next('peer-left', GRACE_S * 1000 + 6000)).toEqual({ type: 'peer-left', peerId: b.id, reason: 'timeout' });
      const c = await join(again.url, callId);
      expect(c.welcome.peers).toEqual([a.id]);
      again.proc.kill('SIGKILL');
    } finally {
      await redis.stop();
    }
  }, 40_000);
});

describe.skipIf(!hasRedis)('GET /healthz with Redis gone', () => {
  it('answers 503 while the configured Redis is unreachable', async () => {
    ensureBuilt();
    const redis = await startRedisServer();
    const w = await startMain({ REDIS_URL: redis.url });
    try {
      expect((await http(w.url, '/healthz')).status).toBe(200);
      await redis.stop();
      let status = 0;
      const end = Date.now() + 10_000;
      while (Date.now() < end) {
        status = (await http(w.url, '/healthz')).status;
        if (status === 503) break;
        await sleep(200);
      }
      expect(status).toBe(503);
    } finally {
      w.proc.kill('SIGKILL');
    }
  }, 40_000);
});
