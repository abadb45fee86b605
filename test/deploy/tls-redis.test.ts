/**
 * Redis over TLS the way Upstash serves it: `rediss://default:<password>@host:port`, TLS only,
 * certificate verification on. The certificate here comes from a throwaway CA, which the server
 * processes trust "through the ordinary Node means" (NODE_EXTRA_CA_CERTS), as a Render user
 * with a private CA would; Upstash's public certificates need nothing at all.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect as redisClient, hasOpenssl, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { builtCheckout } from './support/checkout.js';
import { healthz, startServerProcess, waitFor, type ServerProcess } from './support/server-process.js';
import { connect } from '../helpers/ws-client.js';
import { callSocketUrl, createCall, fullCall, twoPeers } from './support/call.js';

const ready = hasRedisServer() && hasOpenssl();
if (!ready) console.warn('\n*** SKIPPING test/deploy/tls-redis.test.ts: needs redis-server (with TLS) and openssl on PATH. ***\n');

/** How many workers of a process have logged "listening". */
const listening = (p: ServerProcess): number => p.lines().filter((l) => l.msg === 'listening').length;

describe.skipIf(!ready)('TLS Redis as Upstash serves it (rediss://, certificate verified)', () => {
  let redis: RedisServer;
  let checkout = '';
  let dir = '';
  let caFile = '';
  let redisUrl = '';
  const password = randomBytes(12).toString('hex');
  const workers: ServerProcess[] = [];

  beforeAll(async () => {
    [checkout, redis] = await Promise.all([builtCheckout(), startRedisServer({ tls: true })]);
    dir = mkdtempSync(path.join(os.tmpdir(), 'callsig-tls-'));
    caFile = path.join(dir, 'throwaway-ca.pem');
    writeFileSync(caFile, redis.tlsCa!);
    // Upstash's URLs carry user `default` and a password: require one, as Upstash does.
    const admin = redisClient(redis);
    await admin.config('SET', 'requirepass', password);
    admin.disconnect();
    redisUrl = `rediss://default:${password}@127.0.0.1:${redis.port}`;
    const env = { PORT: '0', NODE_ENV: 'production', REDIS_URL: redisUrl, NODE_EXTRA_CA_CERTS: caFile };
    // Worker 1: one process. Worker 2: a process with WEB_CONCURRENCY=2 (the user raised the
    // worker count and changed nothing else); its two workers share one port.
    workers.push(await startServerProcess({ cwd: checkout, env }));
    workers.push(await startServerProcess({ cwd: checkout, env: { ...env, WEB_CONCURRENCY: '2' } }));
    await waitFor('both workers of the WEB_CONCURRENCY=2 process to listen', () => (listening(workers[1]!) === 2 ? true : undefined), 20_000);
  }, 240_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop('SIGKILL')));
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('both workers use the Redis layer and never log the password', async () => {
    for (const w of workers) {
      expect(w.lines().some((l) => l.msg === 'Using Redis channel layer')).toBe(true);
      const h = await healthz(w.url);
      expect(h.status).toBe(200);
      expect(h.body).toMatchObject({ status: 'ok', layer: 'redis' });
      expect(w.output()).not.toContain(password);
    }
  });

  it('the workers really talk to Redis over TLS, authenticated', async () => {
    // The server listens on its TLS port only, so every client connection in CLIENT LIST is TLS.
    const admin = redisClient(redis);
    await admin.auth(password);
    const clients = String(await admin.client('LIST')).trim().split('\n');
    admin.disconnect();
    // Each worker (three in all) holds a command connection and a subscriber connection; plus ours.
    const count = workers.reduce((n, w) => n + listening(w), 0);
    expect(count).toBe(3);
    expect(clients.filter((c) => / sub=1 /.test(c))).toHaveLength(count);
    expect(clients.filter((c) => / sub=0 /.test(c))).toHaveLength(count + 1);
  });

  it('relays a whole call across two processes: peer A on worker 1, peer B on worker 2 (WEB_CONCURRENCY=2)', async () => {
    const { a, b } = await twoPeers(workers[0]!.url, workers[1]!.url);
    await fullCall(a, b, 10);
  });

  it('relays a call started on worker 2 and joined on worker 1 (either direction)', async () => {
    const { a, b } = await twoPeers(workers[1]!.url, workers[0]!.url);
    await fullCall(a, b, 3);
  });

  describe('without the CA (certificate verification is really on)', () => {
    let untrusting: ServerProcess | undefined;
    let startFailure: Error | undefined;

    beforeAll(async () => {
      try {
        untrusting = await startServerProcess({ cwd: checkout, env: { PORT: '0', NODE_ENV: 'production', REDIS_URL: redisUrl }, readyTimeoutMs: 15_000 });
      } catch (err) {
        startFailure = err as Error;
      }
    }, 30_000);

    afterAll(async () => {
      await untrusting?.stop('SIGKILL');
    });

    it('refuses the connection: a certificate error is logged, and /healthz is 503 (or start-up fails)', async () => {
      if (startFailure) {
        // Start-up error: acceptable by the brief, but it must name the certificate problem.
        expect(startFailure.message).toMatch(/certificate|self.signed|CERT/i);
        return;
      }
      const w = untrusting!;
      const certificateError = await waitFor('a certificate error in the log', () => (/self.signed certificate|unable to verify|CERT_/i.test(w.output()) ? true : undefined), 10_000);
      expect(certificateError).toBe(true);
      expect(w.output()).not.toContain(password);
      // It stays on the Redis layer it was configured with: no quiet fallback to InMemory.
      expect(w.lines().some((l) => l.msg === 'Using Redis channel layer')).toBe(true);
      const h = await healthz(w.url);
      expect(h.status, `/healthz said ${JSON.stringify(h.body)} while Redis is unreachable (protocol.md: 503)`).toBe(503);
    });

    it('never welcomes a peer through an unverified Redis', async () => {
      if (startFailure) return expect(startFailure).toBeInstanceOf(Error);
      const w = untrusting!;
      // Creating a call id needs no Redis; joining it does, and must not succeed.
      const { callId } = await createCall(w.url);
      const outcome = await connect(callSocketUrl(w.url, callId), { origin: w.url }).then(
        async (c) => {
          const first = await c.next(undefined, 8000).catch((err: Error) => ({ type: `nothing (${err.message.slice(0, 80)})` }));
          c.terminate();
          return `first message: ${String(first.type)}`;
        },
        (err: Error) => `upgrade failed: ${err.message}`,
      );
      console.info(`[tls] joining a call while the Redis certificate is untrusted: ${outcome}`);
      expect(outcome).not.toBe('first message: welcome');
    });
  });
});
