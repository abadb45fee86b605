/**
 * With WEB_CONCURRENCY the primary accepts every connection and hands it to a worker: both peers
 * of a call to the same one (WORKER_ROUTING=call, the default), so the signals between them
 * cost Redis nothing; a worker's calls stay on it when a sibling dies and is replaced; whatever
 * is not a call, and a request line that arrives in pieces, is served as before.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../deploy/support/server-process.js';
import { countCommands, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { childPids, hasSs, serverPidOf } from '../helpers/server-process.js';
import { http, join, newCallId, pair, SHAPES, type Peer } from '../signaling/harness.js';
import { ensureBuilt, killAll, startMain, type MainProcess } from '../signaling/processes.js';

const hasRedis = hasRedisServer();
if (!hasSs) console.warn('SKIPPED: the call-routing tests need `ss` (iproute2) to find which worker holds a connection');

/** Sends raw bytes, in the pieces given (a pause between), and resolves with all that came back. */
function rawRequest(port: number, pieces: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      got += d;
    });
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
    socket.on('connect', async () => {
      for (const piece of pieces) {
        socket.write(piece);
        await new Promise((r) => setTimeout(r, 100));
      }
    });
  });
}

describe.skipIf(!hasRedis || !hasSs)('WEB_CONCURRENCY=2: connections dealt by call', () => {
  let redis: RedisServer;
  let main: MainProcess;
  const pidOf = (p: Peer): number => serverPidOf(p.c.ws, main.port);

  beforeAll(async () => {
    ensureBuilt();
    redis = await startRedisServer();
    main = await startMain({ REDIS_URL: redis.url, WEB_CONCURRENCY: '2', RATE_LIMIT: '0', RESUME_GRACE: '10' }, 2);
  }, 120_000);

  afterAll(async () => {
    killAll();
    await redis?.stop();
  });

  it('puts both peers of every call on one worker, and the calls on both workers', async () => {
    const workers = childPids(main.proc.pid!);
    const used = new Set<number>();
    for (let i = 0; i < 12; i++) {
      const { a, b } = await pair(main.url);
      const [aPid, bPid] = [pidOf(a), pidOf(b)];
      expect(bPid).toBe(aPid);
      expect(workers).toContain(aPid);
      used.add(aPid);
      await a.c.close();
      await b.c.close();
    }
    // 12 random call ids all hashing to one of two workers: 1 chance in 2,048.
    expect(used.size).toBe(2);
  });

  it('relays the signals of a call on one worker without a Redis command', async () => {
    const { a, b } = await pair(main.url);
    // Warm: each side's inbox is held (the first signal each way may claim it).
    a.c.send(SHAPES.offer);
    expect(await b.c.next('offer')).toEqual({ ...SHAPES.offer, from: a.id });
    b.c.send(SHAPES.answer);
    expect(await a.c.next('answer')).toEqual({ ...SHAPES.answer, from: b.id });
    const counter = await countCommands(redis);
    for (let i = 0; i < 10; i++) {
      a.c.send(SHAPES.candidate);
      expect(await b.c.next('candidate')).toEqual({ ...SHAPES.candidate, from: a.id });
      b.c.send(SHAPES.candidate);
      expect(await a.c.next('candidate')).toEqual({ ...SHAPES.candidate, from: b.id });
    }
    const counts = await counter.stop();
    expect(counts.wireByCommand).toEqual({});
    await a.c.close();
    await b.c.close();
  });

  it('serves what is not a call in turn, and a request line that comes in pieces', async () => {
    const res = await http(main.url, '/healthz');
    expect(res.status).toBe(200);
    const reply = await rawRequest(main.port, ['GE', 'T /healthz HTTP/1.1\r\nHo', 'st: 127.0.0.1\r\nConnection: close\r\n\r\n']);
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(reply).toContain('"status":"ok"');
  });

  it("keeps a worker's calls on it when its sibling dies and is replaced; the dead one's calls resume", async () => {
    const workers = childPids(main.proc.pid!);
    // A call on each worker.
    const calls = new Map<number, { a: Peer; b: Peer; callId: string }>();
    while (calls.size < 2) {
      const call = await pair(main.url, newCallId());
      const pid = pidOf(call.a);
      if (calls.has(pid)) {
        await call.a.c.close();
        await call.b.c.close();
      } else {
        calls.set(pid, call);
      }
    }
    const [doomed, survivor] = workers as [number, number];
    process.kill(doomed, 'SIGKILL');
    const replacement = await waitFor('a replacement worker', () => childPids(main.proc.pid!).find((pid) => !workers.includes(pid)), 15_000, 50);
    // The replacement serves once it logs "listening" (a third such line).
    await waitFor('the replacement to serve', () => main.listening().length >= 3 || undefined, 15_000, 50);

    // The survivor's call: a peer that drops and resumes comes back to the same worker.
    const kept = calls.get(survivor)!;
    await kept.a.c.close();
    const back = await join(main.url, kept.callId, { resume: kept.a.welcome.resumeToken });
    expect(back.welcome).toMatchObject({ resumed: true, peerId: kept.a.id });
    expect(pidOf(back)).toBe(survivor);
    back.c.send(SHAPES.offer);
    expect(await kept.b.c.next('offer')).toEqual({ ...SHAPES.offer, from: kept.a.id });

    // The dead worker's call: both peers resume, on its replacement, together.
    const lost = calls.get(doomed)!;
    const a2 = await join(main.url, lost.callId, { resume: lost.a.welcome.resumeToken });
    const b2 = await join(main.url, lost.callId, { resume: lost.b.welcome.resumeToken });
    expect([pidOf(a2), pidOf(b2)]).toEqual([replacement, replacement]);
    a2.c.send(SHAPES.offer);
    expect(await b2.c.next('offer')).toEqual({ ...SHAPES.offer, from: lost.a.id });
  });
});
