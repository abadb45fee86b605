/**
 * The web app across two server processes (`node dist/main.js`) sharing one real Redis: each
 * person's page talks to a different worker, and one worker is killed mid-call.
 *
 * How a page fails over: each page is served by its own worker and given the other worker as a
 * second WebSocket URL (`?ws=ws://127.0.0.1:<own>,ws://127.0.0.1:<other>`, same host name only).
 * CallClient connects to the first; when that connection drops it resumes its seat with its
 * resume token on the next. Both workers list both origins in ALLOWED_ORIGINS, as a deployment
 * with several entry points must. Behind one load balancer the list would be a single URL.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import {
  NO_CHROMIUM, callState, connectionStates, createCall, ensureBuilt, freePort, hasChromium, inboundBytes, launchChromium,
  openCallPage, pageProblems, peerConnectionCount, sampleBytesWhile, sampleMedia, startWorkerProcess, stateHistory, waitForCallState,
  waitForStateSeen, warnSkipped,
  type CallPage, type WorkerProcess,
} from '../helpers/browser.js';

const hasRedis = hasRedisServer();
if (!hasChromium) warnSkipped('test/browser/failover.test.ts (a call across two workers)', NO_CHROMIUM);

/** Remote video plays (frames, advancing time) and audio and video bytes keep arriving. */
async function expectMediaFlowing(cp: CallPage): Promise<void> {
  const { before, after } = await sampleMedia(cp);
  expect(after.video.width).toBeGreaterThan(0);
  expect(after.video.time).toBeGreaterThan(before.video.time);
  expect(after.bytes.video).toBeGreaterThan(before.bytes.video);
  expect(after.bytes.audio).toBeGreaterThan(before.bytes.audio);
}

/** The peer id a page joined as, from its console ("joined as <id> on <server>"). */
function joinedAs(cp: CallPage): string | undefined {
  for (const line of cp.logs) {
    const m = /\bjoined as (\S+) on /.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

describe.skipIf(!hasChromium || !hasRedis)('a call across two server processes sharing Redis', { timeout: 90_000 }, () => {
  let redis: RedisServer;
  let workers: WorkerProcess[] = [];
  let browser: Browser;
  let people: CallPage[] = [];

  /** Opens the call on worker `on`, failing over to worker `then`. */
  const join = async (callId: string, on: WorkerProcess, then: WorkerProcess) => {
    const cp = await openCallPage(browser, `${on.url}/c/${callId}?ws=${on.wsUrl},${then.wsUrl}`);
    people.push(cp);
    return cp;
  };

  beforeAll(async () => {
    ensureBuilt();
    redis = await startRedisServer();
    const ports = [await freePort(), await freePort()];
    const env = {
      REDIS_URL: redis.url,
      STUN_URLS: '',
      RATE_LIMIT: '0',
      RESUME_GRACE: '30',
      WEB_CONCURRENCY: '1',
      ALLOWED_ORIGINS: ports.map((p) => `http://127.0.0.1:${p}`).join(','),
    };
    workers = await Promise.all(ports.map((port) => startWorkerProcess({ ...env, PORT: String(port) })));
    browser = await launchChromium();
  });
  afterEach(async () => {
    const problems = people.flatMap(pageProblems);
    await Promise.all(people.map((p) => p.context.close()));
    people = [];
    expect(problems, 'the pages ran without errors or CSP refusals').toEqual([]);
  });
  afterAll(async () => {
    await browser?.close();
    await Promise.all(workers.map((w) => w.stop()));
    await redis?.stop();
  });

  it('two people on different workers see and hear each other', async () => {
    const [w1, w2] = workers as [WorkerProcess, WorkerProcess];
    const callId = await createCall(w1.url);
    const a = await join(callId, w1, w2);
    await waitForCallState(a, 'waiting');
    const b = await join(callId, w2, w1);
    await Promise.all([waitForCallState(a, 'connected'), waitForCallState(b, 'connected')]);
    expect(a.logs.join('\n')).toContain(`on ${w1.wsUrl}`);
    expect(b.logs.join('\n')).toContain(`on ${w2.wsUrl}`);
    await expectMediaFlowing(a);
    await expectMediaFlowing(b);
  });

  it("when one person's worker is killed, their media keeps flowing and they resume their seat on the other worker", async () => {
    const [w1, w2] = workers as [WorkerProcess, WorkerProcess];
    const callId = await createCall(w2.url);
    const a = await join(callId, w1, w2);
    await waitForCallState(a, 'waiting');
    const b = await join(callId, w2, w1);
    await Promise.all([waitForCallState(a, 'connected'), waitForCallState(b, 'connected')]);
    await expectMediaFlowing(a);
    const seat = joinedAs(a);
    expect(seat).toBeTruthy();
    const connectionsBefore = await peerConnectionCount(a);
    const bytesAtKill = await inboundBytes(a);

    await w1.kill(); // SIGKILL: no goodbye, no 1012; the page sees its socket die

    await waitForStateSeen(a, 'reconnecting');
    // While the page has no server, the browsers keep talking to each other directly.
    const whileAway = await sampleBytesWhile(a, 'reconnecting');
    await waitForCallState(a, 'connected');
    expect(a.logs.join('\n')).toContain(`resumed seat as ${seat} on ${w2.wsUrl}`);
    // peer-reconnected reaches the other page through Redis, a moment after the welcome.
    await expect.poll(() => b.logs.join('\n'), { timeout: 5000 }).toContain(`${seat} reconnected to the server`);
    const history = await stateHistory(a);
    expect(history.slice(history.lastIndexOf('reconnecting') - 1)).toEqual(['connected', 'reconnecting', 'connected']);
    expect(await stateHistory(b)).not.toContain('reconnecting');
    expect(await callState(b)).toBe('connected');

    expect(whileAway.length).toBeGreaterThanOrEqual(2);
    expect(whileAway.at(-1)!.video).toBeGreaterThan(whileAway[0]!.video);
    expect(whileAway.at(-1)!.audio).toBeGreaterThan(bytesAtKill.audio);
    // One RTCPeerConnection carried the call throughout, and it never faltered.
    expect(await peerConnectionCount(a)).toEqual(connectionsBefore);
    for (const states of await connectionStates(a)) expect(states).toEqual(['new', 'connecting', 'connected']);
    await expectMediaFlowing(a);
    await expectMediaFlowing(b);
  });
});
