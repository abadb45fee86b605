/**
 * protocol.md, "Relaying signals": the five simple-peer shapes, `from`, `to`, unknown peers,
 * and order and exactly-once delivery.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectAlive, expectError, join, newCallId, pair, range, readSeqs, seqOf, seqSignal, SHAPES, serve, type Peer, type Server } from './harness.js';

let one: Server; // defaults
let mesh: Server; // MAX_PEERS=3
let fast: Server; // RATE_LIMIT=0, as benchmarks run it

beforeAll(async () => {
  [one, mesh, fast] = await Promise.all([serve(), serve({ MAX_PEERS: '3' }), serve({ RATE_LIMIT: '0' })]);
});
afterAll(async () => {
  await Promise.all([one?.close(), mesh?.close(), fast?.close()]);
});

/** Three peers in a mesh call, each having read the peer-joined notices. */
async function trio(): Promise<[Peer, Peer, Peer]> {
  const callId = newCallId();
  const a = await join(mesh, callId);
  const b = await join(mesh, callId);
  await a.c.next('peer-joined');
  const c = await join(mesh, callId);
  await a.c.next('peer-joined');
  await b.c.next('peer-joined');
  return [a, b, c];
}

describe('the five simple-peer signal shapes', () => {
  it.each(Object.entries(SHAPES))('%s arrives at the other peer with from set and otherwise untouched, both ways', async (_name, shape) => {
    const { a, b } = await pair(one);
    a.c.send(shape);
    expect(await b.c.next()).toEqual({ ...shape, from: a.id });
    b.c.send(shape);
    expect(await a.c.next()).toEqual({ ...shape, from: b.id });
    await a.c.nothing(100);
    await b.c.nothing(0);
  });

  it('passes fields beyond the shape through untouched (usernameFragment, nulls, nesting, unicode)', async () => {
    const { a, b } = await pair(one);
    const candidate = {
      type: 'candidate',
      candidate: { candidate: 'candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host', sdpMid: null, sdpMLineIndex: 0, usernameFragment: 'Xy9z' },
    };
    const offer = { ...SHAPES.offer, sdp: `${SHAPES.offer.sdp}a=tool:résumé ☎ 通话\r\n`, extra: { nested: [1, 'two', null, { three: true }] } };
    a.c.send(candidate);
    a.c.send(offer);
    expect(await b.c.next()).toEqual({ ...candidate, from: a.id });
    expect(await b.c.next()).toEqual({ ...offer, from: a.id });
  });

  it('passes "__proto__" keys through as ordinary fields, at the top and nested (found by the fuzz suite)', async () => {
    const { a, b } = await pair(one);
    a.c.sendRaw('{"__proto__":[],"type":"renegotiate","renegotiate":true,"x":{"__proto__":{"polluted":1}}}');
    const got = await b.c.next('renegotiate');
    expect(Object.keys(got)).toContain('__proto__');
    expect(JSON.parse(JSON.stringify(got))).toEqual(JSON.parse(`{"__proto__":[],"type":"renegotiate","renegotiate":true,"x":{"__proto__":{"polluted":1}},"from":"${a.id}"}`));
    expect(({} as Record<string, unknown>).polluted, 'no prototype was touched').toBeUndefined();
  });

  it('relays a multi-kilobyte SDP byte for byte', async () => {
    const { a, b } = await pair(one);
    const lines = range(0, 400).map((i) => `a=candidate:${i} 1 udp 2122260223 192.168.${i % 255}.1 ${50000 + i} typ host`);
    const offer = { type: 'offer', sdp: `${SHAPES.offer.sdp}${lines.join('\r\n')}\r\n` };
    expect(JSON.stringify(offer).length).toBeGreaterThan(20_000);
    a.c.send(offer);
    const got = await b.c.next();
    expect(got.sdp).toBe(offer.sdp);
    expect(got).toEqual({ ...offer, from: a.id });
  });

  it('does not echo a signal back to its sender', async () => {
    const { a, b } = await pair(one);
    a.c.send(SHAPES.offer);
    await b.c.next('offer');
    await a.c.nothing(300);
  });
});

describe('from', () => {
  it('is overwritten with the sender\'s peerId when a client sends its own', async () => {
    const { a, b } = await pair(one);
    a.c.send({ ...SHAPES.offer, from: b.id });
    expect(await b.c.next()).toEqual({ ...SHAPES.offer, from: a.id });
    a.c.send({ ...SHAPES.answer, from: 'server' });
    expect(await b.c.next()).toEqual({ ...SHAPES.answer, from: a.id });
  });

  it('is overwritten even when the client sends a non-string from', async () => {
    const { a, b } = await pair(one);
    a.c.send({ ...SHAPES.renegotiate, from: { id: 'x' } });
    const got = await b.c.next('renegotiate');
    expect(got.from).toBe(a.id);
  });
});

describe('to, in a mesh call (MAX_PEERS=3)', () => {
  it('reaches only the peer it names', async () => {
    const [a, b, c] = await trio();
    const offer = { ...SHAPES.offer, to: b.id };
    a.c.send(offer);
    expect(await b.c.next()).toEqual({ ...offer, from: a.id });
    await c.c.nothing(300);
    await a.c.nothing(0);
    c.c.send({ ...SHAPES.answer, to: a.id });
    expect(await a.c.next()).toEqual({ ...SHAPES.answer, to: a.id, from: c.id });
    await b.c.nothing(200);
  });

  it('without to, a signal goes to every other peer', async () => {
    const [a, b, c] = await trio();
    b.c.send(SHAPES.renegotiate);
    expect(await a.c.next()).toEqual({ ...SHAPES.renegotiate, from: b.id });
    expect(await c.c.next()).toEqual({ ...SHAPES.renegotiate, from: b.id });
    await b.c.nothing(200);
  });

  it('an unknown to gets unknown-peer, the socket stays open, and nobody gets the signal', async () => {
    const [a, b, c] = await trio();
    a.c.send({ ...SHAPES.offer, to: 'no-such-peer-id-0000' });
    await expectError(a.c, 'unknown-peer');
    await expectAlive(a.c);
    await b.c.nothing(200);
    await c.c.nothing(0);
    a.c.send({ ...SHAPES.offer, to: c.id });
    expect(await c.c.next()).toEqual({ ...SHAPES.offer, to: c.id, from: a.id });
  });

  it('naming a peer of another call gets unknown-peer and does not reach it', async () => {
    const [a] = await trio();
    const [x, y] = await trio();
    a.c.send({ ...SHAPES.offer, to: x.id });
    await expectError(a.c, 'unknown-peer');
    await x.c.nothing(200);
    await y.c.nothing(0);
  });

  it('as peers leave and join, a signal without to reaches exactly the others of the moment', async () => {
    const [a, b, c] = await trio();
    const callId = a.welcome.callId;
    b.c.send({ type: 'bye' });
    await a.c.next('peer-left');
    await c.c.next('peer-left');
    a.c.send(SHAPES.renegotiate); // one other peer left: c
    expect(await c.c.next()).toEqual({ ...SHAPES.renegotiate, from: a.id });
    c.c.send({ type: 'bye' });
    await a.c.next('peer-left');
    a.c.send(SHAPES.candidate); // nobody else: nothing happens, the socket stays open
    await expectAlive(a.c);
    const d = await join(mesh, callId);
    await a.c.next('peer-joined');
    const e = await join(mesh, callId);
    await a.c.next('peer-joined');
    await d.c.next('peer-joined');
    a.c.send(SHAPES.offer); // two others again
    expect(await d.c.next()).toEqual({ ...SHAPES.offer, from: a.id });
    expect(await e.c.next()).toEqual({ ...SHAPES.offer, from: a.id });
    e.c.send({ ...SHAPES.answer, to: a.id });
    expect(await a.c.next()).toEqual({ ...SHAPES.answer, to: a.id, from: e.id });
  });

  it('naming a peer that hung up gets unknown-peer', async () => {
    const [a, b, c] = await trio();
    b.c.send({ type: 'bye' });
    await a.c.next('peer-left');
    await c.c.next('peer-left');
    a.c.send({ ...SHAPES.offer, to: b.id });
    await expectError(a.c, 'unknown-peer');
    await expectAlive(a.c);
  });
});

describe('unknown-peer in a 1:1 call', () => {
  it('answers an unknown to with unknown-peer; the socket stays open and the other peer gets nothing', async () => {
    const { a, b } = await pair(one);
    a.c.send({ ...SHAPES.candidate, to: 'nobody' });
    await expectError(a.c, 'unknown-peer');
    await b.c.nothing(200);
    await expectAlive(a.c);
    a.c.send({ ...SHAPES.candidate, to: b.id });
    expect(await b.c.next()).toEqual({ ...SHAPES.candidate, to: b.id, from: a.id });
  });
});

describe('order and exactly-once delivery', () => {
  it('delivers 1,000 signals each way, sent at once from both sides, in order and exactly once', async () => {
    const { a, b } = await pair(fast);
    const N = 1000;
    for (const n of range(0, N)) {
      a.c.send(seqSignal(n));
      b.c.send(seqSignal(n));
    }
    const [atB, atA] = await Promise.all([readSeqs(b.c, N, 10_000), readSeqs(a.c, N, 10_000)]);
    expect(atB).toEqual(range(0, N));
    expect(atA).toEqual(range(0, N));
    await a.c.nothing(300);
    await b.c.nothing(0);
    expect(a.c.log.every((m) => m.type !== 'error') && b.c.log.every((m) => m.type !== 'error')).toBe(true);
  });

  it('keeps each sender\'s order in a mesh where two peers send to the third at once', async () => {
    const [a, b, c] = await trio();
    const N = 90; // within the default burst of 100
    for (const n of range(0, N)) {
      a.c.send({ ...seqSignal(n), to: c.id });
      b.c.send({ ...seqSignal(n), to: c.id });
    }
    const got = [];
    for (let i = 0; i < 2 * N; i++) got.push(await c.c.next('candidate', 5000));
    expect(got.filter((m) => m.from === a.id).map(seqOf)).toEqual(range(0, N));
    expect(got.filter((m) => m.from === b.id).map(seqOf)).toEqual(range(0, N));
    await c.c.nothing(200);
    await a.c.nothing(0);
    await b.c.nothing(0);
  });
});
