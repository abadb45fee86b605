/**
 * The call server on a Redis Cluster (REDIS_CLUSTER_URLS): three masters with a replica each on
 * loopback, two server processes, a call relayed across them; then the master that holds the
 * callee's inbox is killed mid-call, and the signals sent while the cluster fails over must
 * still arrive once, in order, within the resume grace.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasRedisCluster, startRedisCluster, type ClusterNode, type RedisCluster } from '../helpers/redis-cluster.js';
import { builtCheckout } from './support/checkout.js';
import { healthz, startServerProcess, waitFor, type ServerProcess } from './support/server-process.js';
import { ANSWER, OFFER, candidate, fullCall, relay, takeCandidates, twoPeers } from './support/call.js';

if (!hasRedisCluster) console.warn('\n*** SKIPPING test/deploy/redis-cluster.test.ts: redis-server and redis-cli are not on PATH. ***\n');

/** Seconds a dropped peer keeps its seat (and the bound on how long a failover may delay signals). */
const RESUME_GRACE = 30;
/** The key prefix the server gives its layer (src/server.ts) and the key names of src/layers/redis-keys.ts. */
const inboxStateKey = (callId: string, peerId: string) => `callsig:s:{call.${callId}.${peerId}}`;
const rosterKey = (callId: string) => `callsig:r:{call.${callId}}`;

/** A worker's log lines at warn level or above, and its non-JSON lines, last 15. */
function troubles(w: ServerProcess): string {
  return w
    .lines()
    .filter((l) => typeof l.level !== 'number' || l.level >= 40)
    .slice(-15)
    .map((l) => JSON.stringify(l).slice(0, 400))
    .join('\n');
}

describe.skipIf(!hasRedisCluster)('Redis Cluster (REDIS_CLUSTER_URLS)', () => {
  let cluster: RedisCluster;
  let checkout = '';
  const workers: ServerProcess[] = [];

  beforeAll(async () => {
    [checkout, cluster] = await Promise.all([builtCheckout(), startRedisCluster({ masters: 3, replicas: 1, nodeTimeoutMs: 2000 })]);
    // Seeds: one URL per master is what a user would paste; the client finds the rest.
    const env = { PORT: '0', NODE_ENV: 'production', REDIS_CLUSTER_URLS: cluster.urls.slice(0, 3).join(','), RESUME_GRACE: String(RESUME_GRACE) };
    workers.push(...(await Promise.all([startServerProcess({ cwd: checkout, env }), startServerProcess({ cwd: checkout, env })])));
  }, 240_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop('SIGKILL')));
    await cluster?.stop();
  });

  it('both workers use the Redis layer on the cluster and pass /healthz', async () => {
    for (const w of workers) {
      expect(w.lines().some((l) => l.msg === 'Using Redis channel layer')).toBe(true);
      const h = await healthz(w.url);
      expect(h.status).toBe(200);
      expect(h.body).toMatchObject({ status: 'ok', layer: 'redis' });
    }
  });

  it('relays a whole call across the two workers', async () => {
    const { a, b } = await twoPeers(workers[0]!.url, workers[1]!.url);
    await fullCall(a, b, 10);
  });

  // The callee's worker sends nothing to the dead master's slots: it must notice the failover
  // by itself (a dropped subscriber, the slot table re-read while a master lacks one, or an L
  // notice from a send that found none of its subscribers on the promoted replica).
  it('keeps a call going when the master holding the callee inbox dies: signals arrive once, in order, within the resume grace', async () => {
    const { callId, a, b } = await twoPeers(workers[0]!.url, workers[1]!.url);
    await relay(b, a, OFFER);
    await relay(a, b, ANSWER);

    // Which master holds b's inbox (the keys a's signals are written to)?
    const key = inboxStateKey(callId, b.id);
    const slot = await cluster.keySlot(key);
    const victim: ClusterNode = await cluster.masterOf(slot);
    expect(Number(await cluster.cli(['EXISTS', key], victim.port)), `${key} should be on the master of slot ${slot} (port ${victim.port})`).toBe(1);
    const aInbox = await cluster.masterOf(await cluster.keySlot(inboxStateKey(callId, a.id)));
    const roster = await cluster.masterOf(await cluster.keySlot(rosterKey(callId)));
    console.info(`[cluster] b's inbox: slot ${slot} on :${victim.port}; a's inbox on :${aInbox.port}; roster on :${roster.port}. Killing :${victim.port}.`);

    // Before: both directions flow.
    for (let i = 0; i < 5; i++) a.c.send(candidate(i, 'a'));
    for (let i = 0; i < 5; i++) b.c.send(candidate(100 + i, 'b'));
    expect(await takeCandidates(b, 5, 5000)).toEqual([0, 1, 2, 3, 4]);
    expect(await takeCandidates(a, 5, 5000)).toEqual([100, 101, 102, 103, 104]);

    // The master dies (SIGKILL: no goodbye). Signals sent during detection and election, then after.
    const killedAt = Date.now();
    await cluster.kill(victim, 'SIGKILL');
    for (let i = 5; i < 10; i++) a.c.send(candidate(i, 'a'));
    for (let i = 5; i < 10; i++) b.c.send(candidate(100 + i, 'b'));
    await cluster.waitUntilHealthy(RESUME_GRACE * 1000);
    const promoted = await cluster.masterOf(slot);
    expect(promoted.port).not.toBe(victim.port);
    const failoverMs = Date.now() - killedAt;
    for (let i = 10; i < 15; i++) a.c.send(candidate(i, 'a'));
    for (let i = 10; i < 15; i++) b.c.send(candidate(100 + i, 'b'));

    const left = () => Math.max(1000, RESUME_GRACE * 1000 - (Date.now() - killedAt));
    const toB = await takeCandidates(b, 10, left()).catch((err: Error) => err);
    const toA = await takeCandidates(a, 10, left()).catch((err: Error) => err);
    const deliveredMs = Date.now() - killedAt;
    console.info(`[cluster] failover took ${failoverMs} ms; all signals delivered ${deliveredMs} ms after the kill.`);
    const logs = `\nworker 1 warnings and errors:\n${troubles(workers[0]!)}\nworker 2 warnings and errors:\n${troubles(workers[1]!)}`;
    expect(toB, `a -> b (b inbox on the killed master)${logs}`).toEqual([5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    expect(toA, `b -> a${logs}`).toEqual([105, 106, 107, 108, 109, 110, 111, 112, 113, 114]);
    expect(deliveredMs).toBeLessThan(RESUME_GRACE * 1000);

    // Exactly once: nothing more arrives, and each sequence number was seen once in all.
    await new Promise((r) => setTimeout(r, 1000));
    const seen = (log: typeof b.c.log, from: string) => log.filter((m) => m.type === 'candidate' && m.from === from).length;
    expect(seen(b.c.log, a.id)).toBe(15);
    expect(seen(a.c.log, b.id)).toBe(15);
    expect(b.c.isClosed || a.c.isClosed, 'the sockets stay open through the failover').toBe(false);

    // And the call goes on: hang up reaches the other side.
    a.c.send({ type: 'bye' });
    expect(await b.c.next('peer-left', 10_000)).toEqual({ type: 'peer-left', peerId: a.id, reason: 'hangup' });
  }, (RESUME_GRACE + 30) * 1000);

  it('after the failover, the workers report healthy again and a new call across them works', async () => {
    // Both workers re-read the slot table while a master lacks their subscriber; they are healthy
    // again once every master of it has one.
    for (const w of workers) {
      await waitFor(`${w.url}/healthz to answer 200 after the failover`, async () => ((await healthz(w.url)).status === 200 ? true : undefined), 15_000, 250);
    }
    const { a, b } = await twoPeers(workers[1]!.url, workers[0]!.url);
    await fullCall(a, b, 3);
  }, 60_000);
});
