/**
 * protocol.md, "Calls and peers" and "Connecting": the welcome, peer-joined, politeness,
 * call ids and full calls, as a client sees them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectHttpRefusal } from '../helpers/ws-client.js';
import { callUrl, expectAlive, expectError, http, join, newCallId, open, pair, SHAPES, serve, type Server } from './harness.js';

let one: Server; // defaults: MAX_PEERS=2
let mesh: Server; // MAX_PEERS=3

beforeAll(async () => {
  [one, mesh] = await Promise.all([serve(), serve({ MAX_PEERS: '3' })]);
});
afterAll(async () => {
  await Promise.all([one?.close(), mesh?.close()]);
});

describe('the welcome a peer gets on joining', () => {
  it('is the first message, with the call id, an opaque peerId, a resume token, no peers, maxPeers 2 and resumed false', async () => {
    const callId = newCallId();
    const { welcome } = await join(one, callId);
    expect(welcome.callId).toBe(callId);
    expect(typeof welcome.peerId).toBe('string');
    expect(welcome.peerId.length).toBeGreaterThanOrEqual(16);
    expect(typeof welcome.resumeToken).toBe('string');
    expect(welcome.resumeToken.length).toBeGreaterThanOrEqual(16);
    expect(welcome.resumeToken).not.toBe(welcome.peerId);
    expect(welcome.peers).toEqual([]);
    expect(typeof welcome.polite).toBe('boolean');
    expect(Array.isArray(welcome.iceServers)).toBe(true);
    expect(welcome.maxPeers).toBe(2);
    expect(welcome.resumed).toBe(false);
  });

  it('gives every peer a different, unguessable peerId and resume token (40 joins)', async () => {
    const ids = new Set<string>();
    const tokens = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const p = await join(one, newCallId());
      ids.add(p.id);
      tokens.add(p.welcome.resumeToken);
      expect(p.id.length).toBeGreaterThanOrEqual(16);
      await p.c.close();
    }
    expect(ids.size).toBe(40);
    expect(tokens.size).toBe(40);
  });

  it('ignores a peerId the client tries to choose', async () => {
    const callId = newCallId();
    const p = await join(one, callId, { peerId: 'i-choose-my-own-id-123', id: 'i-choose-my-own-id-123' });
    expect(p.id).not.toBe('i-choose-my-own-id-123');
  });

  it('lists the peers already in the call, oldest first', async () => {
    const callId = newCallId();
    const a = await join(mesh, callId);
    const b = await join(mesh, callId);
    const c = await join(mesh, callId);
    expect(a.welcome.peers).toEqual([]);
    expect(b.welcome.peers).toEqual([a.id]);
    expect(c.welcome.peers).toEqual([a.id, b.id]);
  });

  it('reports MAX_PEERS as maxPeers', async () => {
    const { welcome } = await join(mesh, newCallId());
    expect(welcome.maxPeers).toBe(3);
  });

  it('carries the same iceServers as GET /api/ice-servers', async () => {
    const { welcome } = await join(one, newCallId());
    const res = await http(one, '/api/ice-servers');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { iceServers: unknown[] };
    expect(welcome.iceServers).toEqual(body.iceServers);
    expect(welcome.iceServers.length).toBeGreaterThan(0); // the default STUN server
  });
});

describe('the peers already inside', () => {
  it('get peer-joined with the newcomer\'s peerId, and the newcomer gets none about itself', async () => {
    const callId = newCallId();
    const a = await join(one, callId);
    const b = await join(one, callId);
    expect(await a.c.next()).toEqual({ type: 'peer-joined', peerId: b.id });
    await b.c.nothing(200);
    await a.c.nothing(0);
  });

  it('all get peer-joined in a mesh call', async () => {
    const callId = newCallId();
    const a = await join(mesh, callId);
    const b = await join(mesh, callId);
    expect(await a.c.next()).toEqual({ type: 'peer-joined', peerId: b.id });
    const c = await join(mesh, callId);
    expect(await a.c.next()).toEqual({ type: 'peer-joined', peerId: c.id });
    expect(await b.c.next()).toEqual({ type: 'peer-joined', peerId: c.id });
    await c.c.nothing(200);
  });

  it('get peer-joined before the newcomer\'s first offer', async () => {
    const callId = newCallId();
    const a = await join(one, callId);
    const b = await join(one, callId);
    b.c.send(SHAPES.offer); // the newcomer finds a peer, so it makes the first offer at once
    expect(await a.c.next()).toEqual({ type: 'peer-joined', peerId: b.id });
    expect(await a.c.next()).toEqual({ ...SHAPES.offer, from: b.id });
  });
});

describe('politeness (perfect negotiation)', () => {
  it('makes exactly one of two peers polite: the one that joined later', async () => {
    const { a, b } = await pair(one);
    expect(a.welcome.polite).toBe(false);
    expect(b.welcome.polite).toBe(true);
  });

  it('still makes exactly one polite when the first peer hangs up and someone new joins', async () => {
    const { a, b, callId } = await pair(one);
    a.c.send({ type: 'bye' });
    expect(await b.c.next('peer-left')).toEqual({ type: 'peer-left', peerId: a.id, reason: 'hangup' });
    const c = await join(one, callId);
    expect(c.welcome.peers).toEqual([b.id]);
    // b was told polite:true on joining and no message ever changes that.
    expect([b.welcome.polite, c.welcome.polite].filter(Boolean), `b.polite=${b.welcome.polite}, c.polite=${c.welcome.polite}`).toHaveLength(1);
  });
});

describe('call ids', () => {
  it('accepts 64 characters of A-Z a-z 0-9 _ -', async () => {
    const callId = `${'Az09_-'.repeat(10)}abcd`;
    expect(callId).toHaveLength(64);
    const { welcome } = await join(one, callId);
    expect(welcome.callId).toBe(callId);
  });

  it('accepts a one-character call id', async () => {
    const { welcome } = await join(one, '_');
    expect(welcome.callId).toBe('_');
  });

  it.each([
    ['65 characters', 'a'.repeat(65)],
    ['a dot', 'a.b'],
    ['a space', 'a%20b'],
    ['a tilde', 'a~b'],
    ['a non-ASCII letter', 'caf%C3%A9'],
    ['a percent-encoded slash', 'a%2Fb'],
    ['a plus', 'a+b'],
  ])('refuses a call id with %s before the upgrade with HTTP 400', async (_what, id) => {
    const r = await expectHttpRefusal(`${one.url.replace(/^http/, 'ws')}/ws/call/${id}`);
    expect(r.status).toBe(400);
  });

  it('says why in the 400 refusal: a JSON body {type:"error", code:"invalid-call-id", message}', async () => {
    const r = await expectHttpRefusal(`${one.url.replace(/^http/, 'ws')}/ws/call/a.b`);
    expect(r.status).toBe(400);
    expect(r.body, `body was ${JSON.stringify(r.text)}`).toMatchObject({ type: 'error', code: 'invalid-call-id', message: expect.any(String) });
  });

  it('refuses an empty call id before the upgrade with HTTP 400', async () => {
    const r = await expectHttpRefusal(`${one.url.replace(/^http/, 'ws')}/ws/call/`);
    expect(r.status).toBe(400);
  });
});

describe('a full call', () => {
  it('refuses a third peer with call-full and close 4409, and the two inside notice nothing', async () => {
    const { a, b } = await pair(one);
    const third = await open(callUrl(one, a.welcome.callId));
    const first = await third.next();
    expect(first).toMatchObject({ type: 'error', code: 'call-full' });
    expect(typeof first.message).toBe('string');
    expect((await third.closed).code).toBe(4409);
    await a.c.nothing(300);
    await b.c.nothing(0);
    // and the call goes on
    a.c.send(SHAPES.offer);
    expect(await b.c.next()).toEqual({ ...SHAPES.offer, from: a.id });
    await expectAlive(a.c);
  });

  it('refuses the fourth peer of a MAX_PEERS=3 call the same way', async () => {
    const callId = newCallId();
    const peers = [await join(mesh, callId), await join(mesh, callId), await join(mesh, callId)];
    await peers[0]!.c.next('peer-joined');
    await peers[0]!.c.next('peer-joined');
    await peers[1]!.c.next('peer-joined');
    const fourth = await open(callUrl(mesh, callId));
    await expectError(fourth, 'call-full');
    expect((await fourth.closed).code).toBe(4409);
    for (const p of peers) await p.c.nothing(100);
  });

  it('refuses again and again without taking a seat (five refused attempts, then the call still has its two)', async () => {
    const { a, b, callId } = await pair(one);
    for (let i = 0; i < 5; i++) {
      const extra = await open(callUrl(one, callId));
      await expectError(extra, 'call-full');
      expect((await extra.closed).code).toBe(4409);
    }
    b.c.send({ type: 'bye' });
    await a.c.next('peer-left');
    const c = await join(one, callId);
    expect(c.welcome.peers).toEqual([a.id]);
  });
});
