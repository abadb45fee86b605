/**
 * protocol.md, "Leaving, dead peers and resume": a dropped peer keeps its seat for
 * RESUME_GRACE, signals wait for it in order, a resume token takes the seat back once, the
 * grace passing frees the seat, and the server's ping frames find dead peers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callUrl, expectAlive, expectError, join, newCallId, open, pair, range, seqOf, seqSignal, SHAPES, serve, sleep, type Server } from './harness.js';

const GRACE_S = 2;
let srv: Server; // RESUME_GRACE=2
let pinging: Server; // PING_INTERVAL=1, RESUME_GRACE=1
let fast: Server; // RATE_LIMIT=0, RESUME_GRACE=5

/** Time for the server to see a dropped TCP connection on the loopback interface. */
const NOTICE_MS = 300;

beforeAll(async () => {
  [srv, pinging, fast] = await Promise.all([
    serve({ RESUME_GRACE: String(GRACE_S) }),
    serve({ PING_INTERVAL: '1', RESUME_GRACE: '1' }),
    serve({ RATE_LIMIT: '0', RESUME_GRACE: '5' }),
  ]);
});
afterAll(async () => {
  await Promise.all([srv?.close(), pinging?.close(), fast?.close()]);
});

describe('resuming after a dropped socket, within the grace', () => {
  it('gives welcome with resumed:true, the same peerId, callId, peers and polite, and a fresh resume token', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    expect(b2.welcome.resumed).toBe(true);
    expect(b2.welcome.peerId).toBe(b.id);
    expect(b2.welcome.callId).toBe(callId);
    expect(b2.welcome.peers).toEqual([a.id]);
    expect(b2.welcome.polite).toBe(b.welcome.polite);
    expect(b2.welcome.maxPeers).toBe(2);
    expect(typeof b2.welcome.resumeToken).toBe('string');
    expect(b2.welcome.resumeToken).not.toBe(b.welcome.resumeToken);
  });

  it('delivers every signal sent meanwhile, in order and exactly once, right after the welcome, then new ones', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    for (const n of range(0, 20)) a.c.send(seqSignal(n));
    a.c.send({ ...SHAPES.offer, to: b.id });
    await sleep(100);
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    const kept = [];
    for (let i = 0; i < 21; i++) kept.push(await b2.c.next());
    expect(kept.slice(0, 20).map(seqOf)).toEqual(range(0, 20));
    for (const m of kept) expect(m.from).toBe(a.id);
    expect(kept[20]).toEqual({ ...SHAPES.offer, to: b.id, from: a.id });
    a.c.send(seqSignal(20));
    expect(seqOf(await b2.c.next())).toBe(20);
    await b2.c.nothing(300);
    expect(a.c.log.filter((m) => m.type === 'error'), 'the sender got no error while its peer was away').toEqual([]);
  });

  it('tells the others peer-reconnected', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    await join(srv, callId, { resume: b.welcome.resumeToken });
    expect(await a.c.next()).toEqual({ type: 'peer-reconnected', peerId: b.id });
    await a.c.nothing(200);
  });

  it('relays from the resumed peer with its same peerId', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    await a.c.next('peer-reconnected');
    b2.c.send(SHAPES.answer);
    expect(await a.c.next()).toEqual({ ...SHAPES.answer, from: b.id });
  });

  it('keeps the seat during the grace: a newcomer to the full call gets call-full, and the others get no peer-left', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    const c = await open(callUrl(srv, callId));
    await expectError(c, 'call-full');
    expect((await c.closed).code).toBe(4409);
    await a.c.nothing((GRACE_S * 1000) / 2 - NOTICE_MS);
  });

  it('works again with the token from the resumed welcome, after a second drop', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    await a.c.next('peer-reconnected');
    b2.c.terminate();
    await sleep(NOTICE_MS);
    a.c.send(SHAPES.renegotiate);
    const b3 = await join(srv, callId, { resume: b2.welcome.resumeToken });
    expect(b3.welcome).toMatchObject({ resumed: true, peerId: b.id });
    expect(await b3.c.next()).toEqual({ ...SHAPES.renegotiate, from: a.id });
    expect(await a.c.next()).toEqual({ type: 'peer-reconnected', peerId: b.id });
  });

  it('lets both peers drop and resume, and signals sent by each while the other was away arrive', async () => {
    const { a, b, callId } = await pair(srv);
    a.c.terminate();
    b.c.terminate();
    await sleep(NOTICE_MS);
    const a2 = await join(srv, callId, { resume: a.welcome.resumeToken });
    a2.c.send(seqSignal(1));
    await sleep(50);
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    expect(seqOf(await b2.c.next('candidate'))).toBe(1);
    b2.c.send(seqSignal(2));
    expect(seqOf(await a2.c.next((m) => m.type === 'candidate'))).toBe(2);
  });

  it('keeps the seat when the socket is closed cleanly without bye (a page reload): resume works', async () => {
    const { a, b, callId } = await pair(srv);
    await b.c.close(1001, 'going away');
    await a.c.nothing(500);
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    expect(b2.welcome).toMatchObject({ resumed: true, peerId: b.id });
    expect(await a.c.next()).toEqual({ type: 'peer-reconnected', peerId: b.id });
  });

  it('keeps a bounded backlog: past it the sender gets peer-unavailable and stays open; the resumed peer gets an in-order prefix, exactly once', async () => {
    const { a, b, callId } = await pair(fast);
    b.c.terminate();
    await sleep(NOTICE_MS);
    const N = 3000;
    for (const n of range(0, N)) a.c.send(seqSignal(n));
    await expectError(a.c, 'peer-unavailable', 10_000);
    await expectAlive(a.c);
    const b2 = await join(fast, callId, { resume: b.welcome.resumeToken });
    const got: number[] = [];
    for (;;) {
      const m = await b2.c.next(undefined, 1000).catch(() => undefined);
      if (!m) break;
      if (seqOf(m) !== undefined) got.push(seqOf(m)!);
    }
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThan(N);
    expect(got).toEqual(range(0, got.length));
  }, 20_000);

  it('takes the seat over while the server still holds the old socket: new signals go to the new one', async () => {
    const { a, b, callId } = await pair(srv);
    // The old socket is not closed: a phone that switched networks, whose old TCP connection lingers.
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    expect(b2.welcome).toMatchObject({ resumed: true, peerId: b.id });
    await a.c.next('peer-reconnected', 4000);
    a.c.send(SHAPES.offer);
    expect(await b2.c.next('offer', 4000)).toEqual({ ...SHAPES.offer, from: a.id });
    const old = await b.c.collect(200);
    expect(old.filter((m) => m.type === 'offer')).toEqual([]);
  });
});

describe('resume tokens', () => {
  it('work once only: reusing one gets unauthorized and 4401, and the resumed peer keeps its seat', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    await a.c.next('peer-reconnected');
    const again = await open(callUrl(srv, callId, { resume: b.welcome.resumeToken }));
    await expectError(again, 'unauthorized');
    expect((await again.closed).code).toBe(4401);
    a.c.send(SHAPES.offer);
    expect(await b2.c.next()).toEqual({ ...SHAPES.offer, from: a.id });
    await a.c.nothing(200);
  });

  it('work for their own call only: in another call one gets unauthorized and 4401', async () => {
    const { b } = await pair(srv);
    const other = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    const wrong = await open(callUrl(srv, other.callId, { resume: b.welcome.resumeToken }));
    await expectError(wrong, 'unauthorized');
    expect((await wrong.closed).code).toBe(4401);
    await other.a.c.nothing(100);
    await other.b.c.nothing(0);
  });

  it('in an empty call that never existed one gets unauthorized and 4401', async () => {
    const { b } = await pair(srv);
    b.c.terminate();
    const wrong = await open(callUrl(srv, newCallId(), { resume: b.welcome.resumeToken }));
    await expectError(wrong, 'unauthorized');
    expect((await wrong.closed).code).toBe(4401);
  });

  it.each([
    ['a made-up token', () => 'not-a-token'],
    ['the right peerId with a made-up secret', (id: string) => `${id}.${'A'.repeat(32)}`],
    ['a token of the right shape with another peerId', () => `${'Q'.repeat(22)}.${'B'.repeat(32)}`],
  ])('%s gets unauthorized and 4401, and the seat stays for its owner', async (_what, make) => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    const bad = await open(callUrl(srv, callId, { resume: make(b.id) }));
    await expectError(bad, 'unauthorized');
    expect((await bad.closed).code).toBe(4401);
    const b2 = await join(srv, callId, { resume: b.welcome.resumeToken });
    expect(b2.welcome).toMatchObject({ resumed: true, peerId: b.id });
    await expectAlive(a.c);
  });

  it('a live peer\'s bare peerId is no resume token: unauthorized and 4401, and the call goes on', async () => {
    const { a, b, callId } = await pair(srv);
    const bad = await open(callUrl(srv, callId, { resume: b.id }));
    await expectError(bad, 'unauthorized');
    expect((await bad.closed).code).toBe(4401);
    a.c.send(SHAPES.offer);
    expect(await b.c.next()).toEqual({ ...SHAPES.offer, from: a.id });
  });
});

describe('when the grace passes', () => {
  it('the others get peer-left with reason timeout, and the seat is free for a newcomer', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    expect(await a.c.next('peer-left', GRACE_S * 1000 + 4000)).toEqual({ type: 'peer-left', peerId: b.id, reason: 'timeout' });
    const c = await join(srv, callId);
    expect(c.welcome.peers).toEqual([a.id]);
    expect(await a.c.next()).toEqual({ type: 'peer-joined', peerId: c.id });
  });

  it('the old resume token is refused with unauthorized and 4401', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await a.c.next('peer-left', GRACE_S * 1000 + 4000);
    const late = await open(callUrl(srv, callId, { resume: b.welcome.resumeToken }));
    await expectError(late, 'unauthorized');
    expect((await late.closed).code).toBe(4401);
  });

  it('signals that were kept for the peer that timed out never reach whoever takes its seat', async () => {
    const { a, b, callId } = await pair(srv);
    b.c.terminate();
    await sleep(NOTICE_MS);
    a.c.send(SHAPES.offer);
    a.c.send(SHAPES.candidate);
    await a.c.next('peer-left', GRACE_S * 1000 + 4000);
    const c = await join(srv, callId);
    await c.c.nothing(400);
  });
});

describe('dead peers (PING_INTERVAL=1)', () => {
  async function until(check: () => boolean, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (check()) return true;
      await sleep(50);
    }
    return check();
  }

  it('the server sends WebSocket ping frames', async () => {
    const { c } = await join(pinging, newCallId());
    expect(await until(() => c.pings > 0, 3500)).toBe(true);
  });

  it('a peer that answers them stays connected', async () => {
    const { a, b } = await pair(pinging);
    await sleep(3500);
    expect(a.c.isClosed || b.c.isClosed).toBe(false);
    expect(b.c.pings).toBeGreaterThan(1);
    await expectAlive(b.c);
    await a.c.nothing(0); // no peer-left
  });

  it('a peer that stops answering is dropped, and when the grace passes the others get peer-left timeout', async () => {
    const callId = newCallId();
    const a = await join(pinging, callId);
    const b = await join(pinging, callId, {}, { autoPong: false });
    await a.c.next('peer-joined');
    await b.c.closed; // the test timeout bounds this; PING_INTERVAL=1 should take a few seconds
    expect(await a.c.next('peer-left', 8000)).toEqual({ type: 'peer-left', peerId: b.id, reason: 'timeout' });
  }, 20_000);
});
