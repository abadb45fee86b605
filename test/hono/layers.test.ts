/**
 * The same consumer, unchanged, over the InMemory layer in one process and over the Redis layer
 * across two processes (this one and a child) sharing one real redis-server: room messages in
 * order both ways, a groupSend from an HTTP route, a direct send to a consumer's channel from
 * outside, and a member leaving its group. Skipped, loudly, when redis-server is not installed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer, RedisChannelLayer, type ChannelLayer, type Message } from '../../src/layers/index.js';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { openClient, startServer, type Client, type TestServer } from './support.js';
import { roomRoutes } from './support/room.js';

const SUPPORT = path.join(import.meta.dirname, 'support');
const withRedis = hasRedisServer();
if (!withRedis) {
  process.stderr.write('\n[consumers over Redis] SKIPPING the two-process Redis run of the room consumer: redis-server is not on PATH.\n\n');
}

interface Endpoint {
  url: string;
  wsUrl: string;
}

type Joined = { type: 'joined'; channel: string; pid: number };
type RoomMessage = { type: 'message'; text: string; pid: number };

async function join(endpoint: Endpoint, room: string): Promise<{ client: Client; joined: Joined }> {
  const client = await openClient(`${endpoint.wsUrl}/ws/room/${room}`);
  return { client, joined: (await client.nextJson()) as Joined };
}

async function texts(client: Client, n: number): Promise<string[]> {
  const got: string[] = [];
  for (let i = 0; i < n; i++) got.push(((await client.nextJson(5000)) as RoomMessage).text);
  return got;
}

/**
 * Alice on `a`, Bob on `b`, both in one room. `layer` is a layer of this process on the same
 * backend as the servers (the same instance for InMemory; another Redis client for Redis).
 */
async function roomScenario(a: Endpoint, b: Endpoint, layer: ChannelLayer): Promise<void> {
  const room = `lobby-${Math.random().toString(36).slice(2, 8)}`;
  const alice = await join(a, room);
  const bob = await join(b, room);

  const fromAlice = Array.from({ length: 50 }, (_, i) => `alice ${i}`);
  for (const text of fromAlice) alice.client.send({ text });
  expect(await texts(bob.client, 50)).toEqual(fromAlice);
  expect(await texts(alice.client, 50)).toEqual(fromAlice);

  const fromBob = Array.from({ length: 20 }, (_, i) => `bob ${i}`);
  for (const text of fromBob) bob.client.send({ text });
  expect(await texts(alice.client, 20)).toEqual(fromBob);
  expect(await texts(bob.client, 20)).toEqual(fromBob);

  // Sending from outside any consumer: an HTTP route on Bob's server, and a direct send to Bob's channel.
  const posted = await fetch(`${b.url}/rooms/${room}`, { method: 'POST', body: 'from the API' });
  expect(posted.status).toBe(200);
  expect(await texts(alice.client, 1)).toEqual(['from the API']);
  expect(await texts(bob.client, 1)).toEqual(['from the API']);
  await layer.send(bob.joined.channel, { type: 'direct.message', text: 'just for bob' } satisfies Message);
  expect(await bob.client.nextJson(5000)).toEqual({ type: 'direct', text: 'just for bob' });

  // Bob leaves: his consumer leaves the group; Alice's room still works.
  bob.client.ws.close(1000);
  await bob.client.closed;
  await new Promise((resolve) => setTimeout(resolve, 100));
  alice.client.send({ text: 'anyone?' });
  expect(await texts(alice.client, 1)).toEqual(['anyone?']);
  alice.client.ws.close(1000);
  await alice.client.closed;
}

describe('the room consumer over InMemory, one process', () => {
  let layer: InMemoryChannelLayer;
  let server: TestServer;
  beforeAll(async () => {
    layer = new InMemoryChannelLayer();
    server = await startServer(layer, (consumers, app) => roomRoutes(consumers, app, layer));
  });
  afterAll(async () => {
    await server?.close();
    await layer?.close();
  });

  it('relays in order both ways, carries an HTTP groupSend and a direct send, and survives a member leaving', async () => {
    await roomScenario(server, server, layer);
  });
});

/** Starts the room app in a child process on the Redis at `redisUrl`. */
async function startWorker(redisUrl: string): Promise<{ child: ChildProcess; endpoint: Endpoint; output: () => string }> {
  const child = spawn(process.execPath, ['--import', path.join(SUPPORT, 'register-ts.mjs'), path.join(SUPPORT, 'room-worker.ts')], {
    env: { ...process.env, REDIS_URL: redisUrl },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`The worker did not start within 20 s:\n${output}`)), 20_000);
    child.stdout!.on('data', () => {
      const m = /LISTENING (\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`The worker exited with ${code} before listening:\n${output}`));
    });
  });
  return { child, endpoint: { url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}` }, output: () => output };
}

describe.skipIf(!withRedis)('the room consumer over Redis, two processes', () => {
  let redis: RedisServer;
  let layer: RedisChannelLayer;
  let server: TestServer;
  let worker: Awaited<ReturnType<typeof startWorker>>;

  beforeAll(async () => {
    redis = await startRedisServer();
    layer = new RedisChannelLayer({ hosts: redis.url });
    server = await startServer(layer, (consumers, app) => roomRoutes(consumers, app, layer));
    worker = await startWorker(redis.url);
  }, 30_000);

  afterAll(async () => {
    if (worker) {
      const exited = new Promise((resolve) => worker.child.once('exit', resolve));
      worker.child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
      worker.child.kill('SIGKILL');
    }
    await server?.close();
    await layer?.close();
    await redis?.stop();
  }, 20_000);

  it('relays in order both ways between the processes, carries an HTTP groupSend and a direct send, and survives a member leaving', async () => {
    const alice = await join(server, 'pid-check');
    const bob = await join(worker.endpoint, 'pid-check');
    expect(bob.joined.pid).not.toBe(alice.joined.pid);
    alice.client.ws.close();
    bob.client.ws.close();
    await roomScenario(server, worker.endpoint, layer);
  }, 30_000);
});
