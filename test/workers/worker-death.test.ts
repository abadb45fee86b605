/**
 * WEB_CONCURRENCY workers share one port; when one dies without shutting down (SIGKILL), the
 * primary tells the others, and they free its seats after the grace unless the peers resume.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasRedisServer, startRedisServer } from '../helpers/redis-server.js';
import { hasSs, serverPidOf } from '../helpers/server-process.js';
import { connect, type Received, type TestClient } from '../helpers/ws-client.js';
import { ensureBuilt, killAll, startMain, type MainProcess } from '../signaling/processes.js';

const hasRedis = hasRedisServer();
if (!hasSs) console.warn('SKIPPED: the worker-death tests need `ss` (iproute2) to find which worker holds a connection');

describe.skipIf(!hasRedis || !hasSs)('a WEB_CONCURRENCY worker killed with SIGKILL', () => {
  let redis: Awaited<ReturnType<typeof startRedisServer>>;
  let main: MainProcess;

  beforeAll(async () => {
    ensureBuilt();
    redis = await startRedisServer();
    // Round-robin, so two peers of one call can land on different workers (by default they share one).
    main = await startMain({ REDIS_URL: redis.url, WEB_CONCURRENCY: '2', WORKER_ROUTING: 'round-robin', RESUME_GRACE: '2', RATE_LIMIT: '0' }, 2);
  });

  afterAll(async () => {
    killAll();
    await redis?.stop();
  });

  /** Two peers of one call, on different workers (connections are dealt in turn; retry until they differ). */
  async function splitCall(): Promise<{ a: TestClient; b: TestClient; aPid: number; bPid: number; aWelcome: Received }> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const callId = `death${attempt}${Date.now()}`;
      const a = await connect(`ws://127.0.0.1:${main.port}/ws/call/${callId}`);
      const aWelcome = await a.next('welcome');
      const b = await connect(`ws://127.0.0.1:${main.port}/ws/call/${callId}`);
      await b.next('welcome');
      await a.next('peer-joined');
      const [aPid, bPid] = [serverPidOf(a.ws, main.port), serverPidOf(b.ws, main.port)];
      if (aPid !== bPid) return { a, b, aPid, bPid, aWelcome };
      await a.close();
      await b.close();
    }
    throw new Error('could not place two peers on different workers');
  }

  it('the peer on the surviving worker gets peer-left timeout after the grace when the other never comes back', async () => {
    const { a, b, aPid, aWelcome } = await splitCall();
    process.kill(aPid, 'SIGKILL');
    await a.closed;
    const left = await b.next('peer-left', 10_000);
    expect(left).toEqual({ type: 'peer-left', peerId: aWelcome.peerId, reason: 'timeout' });
    await b.close();
  });

  it('a peer that does come back within the grace resumes its seat, and the other hears peer-reconnected, not peer-left', async () => {
    // The primary has replaced the dead worker by now; wait until both workers listen again.
    await new Promise((r) => setTimeout(r, 1000));
    const { a, b, aPid, aWelcome } = await splitCall();
    process.kill(aPid, 'SIGKILL');
    await a.closed;
    await new Promise((r) => setTimeout(r, 300));
    b.send({ type: 'candidate', candidate: { candidate: 'candidate:kept 1 udp 1 192.0.2.1 9 typ host', sdpMid: '0', sdpMLineIndex: 0 } });
    const again = await connect(`ws://127.0.0.1:${main.port}/ws/call/${aWelcome.callId as string}?resume=${aWelcome.resumeToken as string}`);
    expect(await again.next('welcome')).toMatchObject({ resumed: true, peerId: aWelcome.peerId });
    expect(await again.next('candidate')).toMatchObject({ candidate: { candidate: 'candidate:kept 1 udp 1 192.0.2.1 9 typ host' } });
    expect(await b.next('peer-reconnected')).toMatchObject({ peerId: aWelcome.peerId });
    await b.nothing(2500); // no peer-left after the grace: the seat was resumed
    await again.close();
    await b.close();
  });
});
