/**
 * protocol.md, "Other client messages" and "Errors": ping, bye, bad messages, too-large frames
 * and the rate limit, each with its error code and what happens to the connection.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callUrl, expectAlive, expectError, join, open, pair, range, SHAPES, serve, sleep, type Server } from './harness.js';

let one: Server; // defaults: 64 KiB frames, 50/s with a burst of 100
let small: Server; // MAX_MESSAGE_BYTES=2048
let strict: Server; // RATE_LIMIT=10, RATE_BURST=10
let unlimited: Server; // RATE_LIMIT=0

beforeAll(async () => {
  [one, small, strict, unlimited] = await Promise.all([
    serve(),
    serve({ MAX_MESSAGE_BYTES: '2048' }),
    serve({ RATE_LIMIT: '10', RATE_BURST: '10' }),
    serve({ RATE_LIMIT: '0' }),
  ]);
});
afterAll(async () => {
  await Promise.all([one?.close(), small?.close(), strict?.close(), unlimited?.close()]);
});

/** A text frame of exactly `bytes` bytes holding a valid offer. */
function offerOfSize(bytes: number, fill = 'x'): string {
  const empty = JSON.stringify({ type: 'offer', sdp: '' });
  const fillBytes = Buffer.byteLength(fill);
  const count = Math.floor((bytes - empty.length) / fillBytes);
  const pad = 'y'.repeat(bytes - empty.length - count * fillBytes);
  const text = JSON.stringify({ type: 'offer', sdp: `${fill.repeat(count)}${pad}` });
  expect(Buffer.byteLength(text)).toBe(bytes);
  return text;
}

describe('ping', () => {
  it('{"type":"ping"} is answered with {"type":"pong"}', async () => {
    const { c } = await join(one, 'ping-call-' + Date.now());
    c.send({ type: 'ping' });
    expect(await c.next()).toEqual({ type: 'pong' });
  });

  it('is answered in a call with two peers, and the other peer sees nothing of it', async () => {
    const { a, b } = await pair(one);
    a.c.send({ type: 'ping' });
    expect(await a.c.next()).toEqual({ type: 'pong' });
    await b.c.nothing(200);
  });
});

describe('bad messages', () => {
  const cases: Array<[string, string | Buffer]> = [
    ['text that is not JSON', 'hello, is it me you are looking for'],
    ['truncated JSON', '{"type":"offer","sdp":"v=0'],
    ['a JSON array', JSON.stringify([{ type: 'offer', sdp: 'v=0' }])],
    ['a JSON string', JSON.stringify('offer')],
    ['a JSON number', '42'],
    ['JSON null', 'null'],
    ['an object with no type', JSON.stringify({ sdp: 'v=0' })],
    ['a non-string type', JSON.stringify({ type: 7 })],
    ['an unknown type', JSON.stringify({ type: 'hello' })],
    ['a server message type sent by a client', JSON.stringify({ type: 'welcome', peerId: 'x' })],
    ['an offer whose sdp is a number', JSON.stringify({ type: 'offer', sdp: 5 })],
    ['an answer whose sdp is an object', JSON.stringify({ type: 'answer', sdp: { sdp: 'v=0' } })],
    ['a candidate whose candidate is a number', JSON.stringify({ type: 'candidate', candidate: 42 })],
    ['a renegotiate whose renegotiate is a string', JSON.stringify({ type: 'renegotiate', renegotiate: 'yes' })],
    ['a transceiverRequest that is a string', JSON.stringify({ type: 'transceiverRequest', transceiverRequest: 'video' })],
    ['a to that is not a string', JSON.stringify({ ...SHAPES.offer, to: 42 })],
    ['a binary frame', Buffer.from(JSON.stringify(SHAPES.offer))],
  ];

  it.each(cases)('%s gets bad-message; the socket stays open and the other peer gets nothing', async (_what, frame) => {
    const { a, b } = await pair(one);
    a.c.sendRaw(frame);
    await expectError(a.c, 'bad-message');
    await expectAlive(a.c);
    await b.c.nothing(150);
    expect(a.c.isClosed).toBe(false);
  });

  it('never harm the other peer or the call: after a barrage of every kind, signals still relay both ways', async () => {
    const { a, b } = await pair(one);
    for (const [, frame] of cases) a.c.sendRaw(frame);
    for (let i = 0; i < cases.length; i++) await expectError(a.c, 'bad-message');
    a.c.send(SHAPES.offer);
    expect(await b.c.next()).toEqual({ ...SHAPES.offer, from: a.id });
    b.c.send(SHAPES.answer);
    expect(await a.c.next()).toEqual({ ...SHAPES.answer, from: b.id });
    await expectAlive(b.c);
  });
});

describe('bye', () => {
  it('tells the others peer-left with reason hangup, and the server closes the socket with 1000', async () => {
    const { a, b } = await pair(one);
    b.c.send({ type: 'bye' });
    expect(await a.c.next()).toEqual({ type: 'peer-left', peerId: b.id, reason: 'hangup' });
    expect((await b.c.closed).code).toBe(1000);
  });

  it('frees the seat: a newcomer can join the 1:1 call and sees only the one who stayed', async () => {
    const { a, b, callId } = await pair(one);
    b.c.send({ type: 'bye' });
    await a.c.next('peer-left');
    const c = await join(one, callId);
    expect(c.welcome.peers).toEqual([a.id]);
    expect(await a.c.next()).toEqual({ type: 'peer-joined', peerId: c.id });
  });

  it('ends the seat for good: its resume token no longer works (unauthorized, 4401)', async () => {
    const { a, b, callId } = await pair(one);
    b.c.send({ type: 'bye' });
    await a.c.next('peer-left');
    await b.c.closed;
    const again = await open(callUrl(one, callId, { resume: b.welcome.resumeToken }));
    await expectError(again, 'unauthorized');
    expect((await again.closed).code).toBe(4401);
  });

  it('from the only peer closes with 1000 and leaves an empty call anyone can join', async () => {
    const solo = await join(one, `solo-${Date.now()}`);
    solo.c.send({ type: 'bye' });
    expect((await solo.c.closed).code).toBe(1000);
    const next = await join(one, solo.welcome.callId);
    expect(next.welcome.peers).toEqual([]);
  });
});

describe('too-large frames', () => {
  it('a frame over 64 KiB gets too-large and close 1009, and the other peer gets none of it', async () => {
    const { a, b } = await pair(one);
    a.c.sendRaw(offerOfSize(65_537));
    await expectError(a.c, 'too-large');
    expect((await a.c.closed).code).toBe(1009);
    const seen = await b.c.collect(300);
    expect(seen.filter((m) => m.type === 'offer')).toEqual([]);
  });

  it('a frame of exactly 64 KiB is relayed', async () => {
    const { a, b } = await pair(one);
    const text = offerOfSize(65_536);
    a.c.sendRaw(text);
    expect(await b.c.next('offer')).toEqual({ ...JSON.parse(text), from: a.id });
    await expectAlive(a.c);
  });

  it('counts bytes, not characters: 30,000 three-byte characters are too large', async () => {
    const { a } = await pair(one);
    const text = JSON.stringify({ type: 'offer', sdp: '€'.repeat(30_000) });
    expect(text.length).toBeLessThan(65_536);
    expect(Buffer.byteLength(text)).toBeGreaterThan(65_536);
    a.c.sendRaw(text);
    await expectError(a.c, 'too-large');
    expect((await a.c.closed).code).toBe(1009);
  });

  it('follows MAX_MESSAGE_BYTES: 2,048 bytes pass, 2,049 get too-large and 1009', async () => {
    const { a, b } = await pair(small);
    a.c.sendRaw(offerOfSize(2048));
    expect((await b.c.next('offer')).from).toBe(a.id);
    a.c.sendRaw(offerOfSize(2049));
    await expectError(a.c, 'too-large');
    expect((await a.c.closed).code).toBe(1009);
  });

  it('a binary frame over the limit also gets too-large and 1009', async () => {
    const { a } = await pair(small);
    a.c.sendRaw(Buffer.alloc(4096, 1));
    await expectError(a.c, 'too-large');
    expect((await a.c.closed).code).toBe(1009);
  });
});

describe('the rate limit', () => {
  it('lets a burst of RATE_BURST messages through at once (defaults: 100)', async () => {
    const { c } = await join(one, `burst-${Date.now()}`);
    for (let i = 0; i < 100; i++) c.send({ type: 'ping' });
    for (let i = 0; i < 100; i++) expect(await c.next()).toEqual({ type: 'pong' });
    await c.nothing(200);
  });

  it('answers the first messages over the rate with rate-limited and keeps the connection open', async () => {
    const { a, b } = await pair(strict);
    for (let i = 0; i < 25; i++) a.c.send({ type: 'ping' });
    let pongs = 0;
    const errors = [];
    while (pongs < 10 || errors.length === 0) {
      const m = await a.c.next(undefined, 3000);
      if (m.type === 'pong') pongs += 1;
      else if (m.type === 'error') errors.push(m);
      else throw new Error(`unexpected ${JSON.stringify(m)}`);
    }
    for (const e of errors) expect(e.code).toBe('rate-limited');
    await a.c.collect(200); // the rest of the answers to the burst
    await sleep(400); // the bucket refills at 10/s
    await expectAlive(a.c);
    a.c.send(SHAPES.offer);
    expect(await b.c.next()).toEqual({ ...SHAPES.offer, from: a.id });
  });

  it('closes a peer that keeps overrunning with 4429, after rate-limited errors', async () => {
    const { a, b } = await pair(strict);
    for (let i = 0; i < 60; i++) a.c.send({ type: 'ping' });
    await expectError(a.c, 'rate-limited');
    expect((await a.c.closed).code).toBe(4429);
    await expectAlive(b.c); // the other peer is unharmed
  });

  it('does not count one peer\'s messages against another', async () => {
    const { a, b } = await pair(strict);
    for (let i = 0; i < 10; i++) a.c.send({ type: 'ping' });
    for (let i = 0; i < 10; i++) b.c.send({ type: 'ping' });
    for (let i = 0; i < 10; i++) {
      expect(await a.c.next()).toEqual({ type: 'pong' });
      expect(await b.c.next()).toEqual({ type: 'pong' });
    }
    await a.c.nothing(100);
    await b.c.nothing(0);
  });

  it('RATE_LIMIT=0 turns it off: 1,000 messages at once are all answered', async () => {
    const { c } = await join(unlimited, `nolimit-${Date.now()}`);
    for (const _ of range(0, 1000)) c.send({ type: 'ping' });
    for (let i = 0; i < 1000; i++) expect((await c.next(undefined, 5000)).type).toBe('pong');
    await c.nothing(100);
  });
});
