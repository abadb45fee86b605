/**
 * A worker killed with SIGKILL mid-call: two separate `node dist/main.js` processes share one
 * real redis-server; peer A sits on worker 1, peer B on worker 2, and worker 1 dies without a
 * word. A must take its seat back on worker 2 within RESUME_GRACE and get every signal B sent
 * meanwhile, once and in order; a peer that never comes back must be timed out and its call's
 * state must leave Redis. Skipped, loudly, without redis-server.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { connect } from '../helpers/ws-client.js';
import { Bystander, candidate, checkSequence, join, newCallId, seqsFrom, twoPeers } from './support/calls.js';
import { health } from './support/http.js';
import { buildProblem, sleep, spawnServer, stopAllServers, waitFor, type ServerProcess } from './support/processes.js';
import { describeKeys, inspectRedis, keysMentioning } from './support/redis-keys.js';

const GRACE_S = 6;
const PING_S = 1;
/** Seconds an undelivered message lives in Redis (src/server.ts: max(60, grace + 30)). */
const LAYER_EXPIRY_S = Math.max(60, GRACE_S + 30);
/**
 * The longest any key of a finished call may live: a channel's state hash outlives its last
 * message by 60 s (src/layers/redis.ts stateTtl = expiry + 60 s, so sequence numbers stay
 * increasing). Anything longer, or without a TTL, is call state that outlived the call.
 */
const STATE_TTL_S = LAYER_EXPIRY_S + 60;

const redisAvailable = hasRedisServer();

describe.skipIf(!redisAvailable)('a worker killed with SIGKILL mid-call (two processes sharing Redis)', () => {
  let redis: RedisServer;
  let inspect: Redis;
  let w1: ServerProcess;
  let w2: ServerProcess;
  const env = () => ({ REDIS_URL: redis.url, RESUME_GRACE: String(GRACE_S), PING_INTERVAL: String(PING_S), RATE_LIMIT: '0' });

  beforeAll(async () => {
    const problem = buildProblem();
    if (problem) throw new Error(problem);
    redis = await startRedisServer();
    inspect = inspectRedis(redis.url);
    [w1, w2] = await Promise.all([spawnServer({ label: 'worker 1', env: env() }), spawnServer({ label: 'worker 2', env: env() })]);
  });

  afterAll(async () => {
    inspect?.disconnect();
    await stopAllServers();
    await redis?.stop();
  });

  it('A resumes on worker 2 within RESUME_GRACE, with the same peer id, and gets every signal B sent once the drop was seen, once, in order', async () => {
    const bystander = await Bystander.start(w2.wsUrl(newCallId('bystander')), undefined, 20);
    const callId = newCallId('crash');
    const { a, b } = await twoPeers(w1.wsUrl(callId), w2.wsUrl(callId));
    a.client.send(candidate(-1));
    expect((await b.client.next('candidate')).seq).toBe(-1);

    // B signals every 10 ms throughout: before the kill, while A is gone, and after A is back.
    const TOTAL = 200;
    let sent = 0;
    const sender = setInterval(() => {
      if (sent < TOTAL) b.client.send(candidate(sent++));
    }, 10);
    await waitFor(() => sent >= 40, 'B to send 40 signals');
    const killedAt = Date.now();
    w1.kill('SIGKILL');
    await w1.exited;
    await a.client.closed;
    // Signals B sent before this moment were in flight through the dying worker: protocol v1 has
    // no client acknowledgement, so those the worker had taken but not yet written to A's socket
    // cannot be told apart from those A got (README: "A worker that dies"). From here on, none may be lost.
    const sentWhenDropSeen = sent;
    await sleep(300); // a client's reconnect backoff
    const a2 = await join(w2.wsUrl(callId, { resume: a.resumeToken }));
    const resumedAfterMs = Date.now() - killedAt;
    expect(a2.welcome).toMatchObject({ type: 'welcome', resumed: true, peerId: a.peerId, callId });
    expect(resumedAfterMs).toBeLessThan(GRACE_S * 1000);
    expect(await b.client.next('peer-reconnected', 5000)).toEqual({ type: 'peer-reconnected', peerId: a.peerId });

    await waitFor(() => sent >= TOTAL, 'B to finish sending', 10_000);
    clearInterval(sender);
    await waitFor(() => seqsFrom(a.client, b.peerId).length + seqsFrom(a2.client, b.peerId).length >= TOTAL, `A to hold all ${TOTAL} signals`, 5000).catch(() => {});
    const got = [...seqsFrom(a.client, b.peerId), ...seqsFrom(a2.client, b.peerId)];
    const report = checkSequence(got, TOTAL);
    console.log(
      `worker crash: A resumed ${resumedAfterMs} ms after SIGKILL; of B's ${TOTAL} signals A got ${report.received} ` +
        `(${seqsFrom(a.client, b.peerId).length} before the kill, ${seqsFrom(a2.client, b.peerId).length} after resuming); ` +
        `missing ${JSON.stringify(report.missing)}, duplicated ${JSON.stringify(report.duplicated)}, reordered ${report.reordered}`,
    );
    expect(report.missing.filter((n) => n >= sentWhenDropSeen), `signals sent after the drop was seen (from #${sentWhenDropSeen}) that never arrived`).toEqual([]);
    expect(report.missing.length, 'signals lost in flight through the dying worker (a few, sent in the moments before it died)').toBeLessThan(20);
    expect(report.duplicated).toEqual([]);
    expect(report.reordered).toBe(0);

    // The call goes on both ways, and B never heard A leave.
    a2.client.send(candidate(1000));
    expect(await b.client.next((m) => m.seq === 1000)).toMatchObject({ from: a.peerId });
    expect(b.client.log.some((m) => m.type === 'peer-left')).toBe(false);
    // A call that lived on worker 2 only never noticed.
    const side = await bystander.stop();
    expect(side.unexpected).toEqual([]);
    for (const dir of [side.aToB, side.bToA]) expect(dir.missing.length + dir.duplicated.length + dir.reordered).toBe(0);
    a2.client.send({ type: 'bye' });
    b.client.send({ type: 'bye' });
  });

  it('a peer whose worker died and who never comes back is timed out: its partner gets peer-left "timeout" after the grace, and the seat is free again', async () => {
    const w3 = await spawnServer({ label: 'worker 3 (to be killed)', env: env() });
    const callId = newCallId('gone');
    const { a: c, b: d } = await twoPeers(w3.wsUrl(callId), w2.wsUrl(callId));
    w3.kill('SIGKILL');
    await w3.exited;
    const killedAt = Date.now();
    const waitS = GRACE_S + 2;
    const left = await d.client.next('peer-left', waitS * 1000).catch(() => undefined);
    const whileStaying = await keysMentioning(inspect, callId);
    console.log(
      `worker crash, peer never back: ${left ? `peer-left after ${Date.now() - killedAt} ms` : `no peer-left within ${waitS} s (RESUME_GRACE=${GRACE_S})`}; ` +
        `Redis keys of the call while its partner stays:\n${describeKeys(whileStaying)}`,
    );
    // Separate instances cannot learn of each other's death without polling Redis (commands while
    // idle), so without a trigger the partner hears nothing (README: "A worker that dies"); a
    // newcomer finding the call full is the trigger. (Cluster siblings: test/workers.)
    expect(left, 'no peer-left without a trigger across separate instances').toBeUndefined();
    // A newcomer: finds the call full, which starts the dead seat's grace.
    const e = await connect(w2.wsUrl(callId));
    const first = await e.next(undefined, 5000).catch((err: Error) => ({ type: 'nothing', message: err.message }));
    if (first.type === 'welcome') e.send({ type: 'bye' });
    await e.closed;
    expect(first, 'a newcomer finds the dead seat still held').toMatchObject({ type: 'error', code: 'call-full' });
    {
      // The server checks the holder's worker only when someone finds the call full; then the grace starts. Does that path work?
      const lateLeft = left ?? (await d.client.next('peer-left', (GRACE_S + 4) * 1000).catch(() => undefined));
      const f = await connect(w2.wsUrl(callId));
      const again = await f.next(undefined, 5000).catch((err: Error) => ({ type: 'nothing', message: err.message }));
      f.send({ type: 'bye' });
      await f.closed;
      console.log(
        `after a newcomer found the call full (${JSON.stringify(first).slice(0, 80)}): partner ${lateLeft ? `got ${JSON.stringify(lateLeft)}` : 'got no peer-left'} ` +
          `${Date.now() - killedAt} ms after the kill; a second newcomer got ${JSON.stringify(again).slice(0, 80)}`,
      );
      expect(lateLeft, 'peer-left once a newcomer has triggered the check').toMatchObject({ type: 'peer-left', peerId: c.peerId, reason: 'timeout' });
      expect(again, 'a second newcomer after that grace').toMatchObject({ type: 'welcome', peers: [d.peerId] });
    }
    d.client.send({ type: 'bye' });
    await d.client.closed;
    await sleep(1000);
    const after = await keysMentioning(inspect, callId);
    console.log(`once everyone has left that call, Redis holds for it:\n${describeKeys(after)}`);
    expect.soft(after.filter((k) => k.ttl === -1 || k.ttl > STATE_TTL_S).map((k) => `${k.key} ${k.ttl === -1 ? 'no TTL' : `ttl ${k.ttl}s`}`), 'keys of a finished call kept without a TTL or for longer than a state hash').toEqual([]);
  }, 60_000);

  it('once every peer of a call has gone (one hung up, one died with its worker), nothing of the call stays in Redis longer than a state hash (expiry + 60 s)', async () => {
    const w4 = await spawnServer({ label: 'worker 4 (to be killed)', env: env() });
    const callId = newCallId('cleanup');
    const { a: c, b: d } = await twoPeers(w4.wsUrl(callId), w2.wsUrl(callId));
    c.client.send(candidate(1));
    await d.client.next('candidate');
    d.client.send(candidate(2)); // sits in C's inbox when its worker dies
    await sleep(100);
    w4.kill('SIGKILL');
    await w4.exited;
    d.client.send(candidate(3)); // kept for C, who never comes back
    d.client.send({ type: 'bye' });
    await d.client.closed;
    await sleep((GRACE_S + 2) * 1000);
    const left = await keysMentioning(inspect, callId);
    console.log(`after both peers of a call are gone and the grace (${GRACE_S} s) passed, Redis holds for it:\n${describeKeys(left)}`);
    const forever = left.filter((k) => k.ttl === -1);
    const longer = left.filter((k) => k.ttl > STATE_TTL_S);
    expect.soft(forever.map((k) => k.key), 'keys of an ended call with no TTL').toEqual([]);
    expect.soft(longer.map((k) => `${k.key} ttl ${k.ttl}s`), `keys of an ended call kept longer than a state hash (${STATE_TTL_S} s)`).toEqual([]);
  });

  it('a call that ended with both peers saying bye leaves only expiring state hashes (at most expiry + 60 s)', async () => {
    const callId = newCallId('clean');
    const { a, b } = await twoPeers(w2.wsUrl(callId), w2.wsUrl(callId));
    a.client.send(candidate(1));
    await b.client.next('candidate');
    b.client.send(candidate(2));
    await a.client.next('candidate');
    a.client.send({ type: 'bye' });
    await b.client.next('peer-left');
    b.client.send({ type: 'bye' });
    await Promise.all([a.client.closed, b.client.closed]);
    await sleep(500);
    const left = await keysMentioning(inspect, callId);
    console.log(`after a call ended with bye on both sides, Redis holds for it:\n${describeKeys(left)}`);
    expect(left.filter((k) => k.ttl === -1 || k.ttl > STATE_TTL_S).map((k) => `${k.key} ttl ${k.ttl}`)).toEqual([]);
    expect(left.filter((k) => !k.key.startsWith('callsig:s:')).map((k) => k.key), 'no roster, group or queue of a call that ended cleanly').toEqual([]);
    expect((await health(w2.url)).status).toBe(200);
  });
});
