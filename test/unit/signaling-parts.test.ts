import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer } from '../../src/layers/index.js';
import {
  checkAccessToken, iceServersFor, parseClientMessage, parseResumeToken, readSeat, Seats, signAccessToken, RateLimit, turnCredentials,
} from '../../src/signaling/index.js';
import { withFrom } from '../../src/signaling/call-consumer.js';
import { MAX_DEPTH, quickAccepts, schemaAccepts } from '../../src/signaling/protocol.js';

describe('TURN REST credentials', () => {
  it('follow the coturn formula: username "<expiry>:<id>", credential base64(HMAC-SHA1(secret, username))', () => {
    const now = Date.UTC(2026, 0, 1);
    const { username, credential } = turnCredentials('s3cret', 'peer1', 3600, now);
    expect(username).toBe(`${now / 1000 + 3600}:peer1`);
    expect(credential).toBe(createHmac('sha1', 's3cret').update(username).digest('base64'));
  });

  it('are handed out only with TURN urls and a secret; STUN entries carry none', () => {
    const cfg = { stunUrls: ['stun:s.example:3478'], turnUrls: ['turn:t.example:3478'], turnSecret: 'x', turnTtl: 600 };
    const { iceServers, ttl } = iceServersFor(cfg, 'id');
    expect(ttl).toBe(600);
    expect(iceServers[0]).toEqual({ urls: ['stun:s.example:3478'] });
    expect(iceServers[1]).toMatchObject({ urls: ['turn:t.example:3478'], username: expect.stringMatching(/^\d+:id$/) });
    expect(iceServersFor({ ...cfg, stunUrls: [], turnUrls: [] }, 'id').iceServers).toEqual([]);
  });
});

describe('access tokens', () => {
  const secret = 'a-long-enough-secret';
  it('admit their own call until they expire', () => {
    const token = signAccessToken(secret, 'room1', 60);
    expect(checkAccessToken(secret, token, 'room1')).toBeUndefined();
    expect(checkAccessToken(secret, token, 'room2')).toMatch(/another call/);
    expect(checkAccessToken(secret, token, 'room1', Date.now() + 61_000)).toMatch(/expired/);
  });
  it('refuse forged, malformed and missing tokens', () => {
    const token = signAccessToken(secret, 'room1', 60);
    expect(checkAccessToken('another-secret-xyz', token, 'room1')).toMatch(/signature/);
    expect(checkAccessToken(secret, `${token}x`, 'room1')).toMatch(/signature/);
    expect(checkAccessToken(secret, 'garbage', 'room1')).toMatch(/malformed/);
    expect(checkAccessToken(secret, undefined, 'room1')).toMatch(/required/);
  });
});

describe('the rate limit', () => {
  /** Sends at the given times (ms) from one sender; which passed. */
  function sends(limit: RateLimit, times: number[]): boolean[] {
    let time = 0;
    return times.map((now) => {
      const next = limit.pass(time, now);
      if (next === undefined) return false;
      time = next;
      return true;
    });
  }

  it('lets a burst through, then refuses until the rate allows again, as a token bucket does', () => {
    // 1 a second, bursts of 3: three at once, the fourth refused; one more a second later.
    expect(sends(new RateLimit(1, 3), [1000, 1000, 1000, 1000, 1500, 2000, 2000, 5000, 5000, 5000, 5000])).toEqual([
      true, true, true, false, false, true, false, true, true, true, false,
    ]);
    // A steady 10 a second passes a limit of 10 a second with no burst, and 20 a second does not.
    expect(sends(new RateLimit(10, 1), Array.from({ length: 50 }, (_, i) => 100 + i * 100)).every(Boolean)).toBe(true);
    const fast = sends(new RateLimit(10, 1), Array.from({ length: 50 }, (_, i) => 100 + i * 50));
    expect(fast.filter(Boolean)).toHaveLength(25);
  });

  it('holds every sender to its own time: one sender using its burst leaves another untouched', () => {
    const limit = new RateLimit(1, 2);
    expect(sends(limit, [1000, 1000, 1000])).toEqual([true, true, false]);
    expect(sends(limit, [1000, 1000, 1000])).toEqual([true, true, false]);
  });

  it('a rate of 0 never refuses', () => {
    expect(sends(new RateLimit(0, 1), Array.from({ length: 1000 }, () => 1)).every(Boolean)).toBe(true);
  });
});

describe('client message validation', () => {
  it.each([
    [{ type: 'offer', sdp: 'v=0' }],
    [{ type: 'answer', sdp: 'v=0', to: 'p' }],
    [{ type: 'candidate', candidate: { candidate: 'candidate:1 1 udp 1 1.2.3.4 5 typ host', sdpMid: '0', sdpMLineIndex: 0 } }],
    [{ type: 'renegotiate', renegotiate: true }],
    [{ type: 'transceiverRequest', transceiverRequest: { kind: 'video', init: {} } }],
    [{ type: 'bye' }],
    [{ type: 'ping' }],
  ])('accepts %o', (m) => expect(parseClientMessage(m).ok).toBe(true));

  it.each([
    [[1, 2], /JSON object/],
    [{ sdp: 'x' }, /string "type"/],
    [{ type: 'welcome' }, /Unknown message type "welcome"/],
    [{ type: 'offer', sdp: 5 }, /Bad "offer" message: "sdp"/],
    [{ type: 'candidate', candidate: 'x' }, /Bad "candidate" message/],
    [{ type: 'offer', sdp: 'v=0', to: 7 }, /"to"/],
  ])('refuses %o with a sentence', (m, reason) => {
    const r = parseClientMessage(m);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });

  // The hand-written check of the common signals may only accept what the schema accepts.
  const candidate = { candidate: 'candidate:1 1 udp 2122260223 192.168.1.10 54321 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  it.each([
    [{ type: 'offer', sdp: 'v=0' }, true],
    [{ type: 'answer', sdp: '', to: 'p'.repeat(64) }, true],
    [{ type: 'pranswer', sdp: 'v=0', extra: [1, { a: 2 }] }, true],
    [{ type: 'candidate', candidate }, true],
    [{ type: 'candidate', candidate: null, to: 'abc' }, true],
    [{ type: 'candidate', candidate: { candidate: '', sdpMid: null, sdpMLineIndex: null, usernameFragment: null } }, true],
    [{ type: 'candidate', candidate: { candidate: 'x'.repeat(4096), sdpMLineIndex: 65535, usernameFragment: 'u'.repeat(256) } }, true],
    [{ type: 'offer', sdp: 5 }, false],
    [{ type: 'offer' }, false],
    [{ type: 'offer', sdp: 'v=0', to: '' }, false],
    [{ type: 'offer', sdp: 'v=0', to: 'p'.repeat(65) }, false],
    [{ type: 'offer', sdp: 'v=0', to: null }, false],
    [{ type: 'candidate' }, false],
    [{ type: 'candidate', candidate: [] }, false],
    [{ type: 'candidate', candidate: 'x' }, false],
    [{ type: 'candidate', candidate: { sdpMid: '0' } }, false],
    [{ type: 'candidate', candidate: { candidate: 'x'.repeat(4097) } }, false],
    [{ type: 'candidate', candidate: { ...candidate, sdpMid: 'm'.repeat(257) } }, false],
    [{ type: 'candidate', candidate: { ...candidate, sdpMid: 0 } }, false],
    [{ type: 'candidate', candidate: { ...candidate, sdpMLineIndex: 1.5 } }, false],
    [{ type: 'candidate', candidate: { ...candidate, sdpMLineIndex: -1 } }, false],
    [{ type: 'candidate', candidate: { ...candidate, sdpMLineIndex: 65536 } }, false],
    [{ type: 'candidate', candidate: { ...candidate, sdpMLineIndex: '0' } }, false],
    [{ type: 'candidate', candidate: { ...candidate, usernameFragment: 7 } }, false],
  ])('checks %o by hand as its schema does', (m, valid) => {
    expect(schemaAccepts(m)).toBe(valid);
    expect(quickAccepts(m)).toBe(valid);
    expect(parseClientMessage(m).ok).toBe(valid);
  });

  it('leaves the other types to their schemas', () => {
    for (const m of [{ type: 'rollback' }, { type: 'renegotiate', renegotiate: true }, { type: 'bye' }, { type: 'ping' }]) {
      expect(quickAccepts(m)).toBe(false);
      expect(parseClientMessage(m).ok).toBe(true);
    }
  });

  it(`refuses a message nested deeper than ${MAX_DEPTH} levels, without walking all of it`, () => {
    const nest = (levels: number): unknown => {
      let v: unknown = 'leaf';
      for (let i = 0; i < levels; i++) v = i % 2 ? { v } : [v];
      return v;
    };
    expect(parseClientMessage({ type: 'offer', sdp: 'v=0', x: nest(MAX_DEPTH - 1) }).ok).toBe(true);
    const deep = parseClientMessage({ type: 'offer', sdp: 'v=0', x: nest(MAX_DEPTH) });
    expect(deep.ok).toBe(false);
    if (!deep.ok) expect(deep.reason).toMatch(/at most 32 levels/);
    expect(parseClientMessage({ type: 'offer', sdp: 'v=0', x: nest(100_000) }).ok).toBe(false); // no stack overflow
  });

  it('passes unknown extra fields through untouched', () => {
    const r = parseClientMessage({ type: 'offer', sdp: 'v=0', extra: { a: 1 } });
    expect(r.ok && (r.message as Record<string, unknown>).extra).toEqual({ a: 1 });
  });
});

describe('seats', () => {
  let layer: InMemoryChannelLayer;
  afterEach(() => layer.close());

  it('hold at most maxPeers, in join order, and resume only with the current token, once', async () => {
    layer = new InMemoryChannelLayer();
    const seats = new Seats(layer, { maxPeers: 2, ttl: 60 });
    const a = (await seats.join('c1', 'ctl-a'))!;
    const b = (await seats.join('c1', 'ctl-b'))!;
    expect(await seats.join('c1', 'ctl-c')).toBeUndefined();
    expect(b.entries.map((e) => e.member)).toEqual([a.peerId, b.peerId]);
    expect(parseResumeToken(a.resumeToken)?.peerId).toBe(a.peerId);

    const resumed = (await seats.resume('c1', a.resumeToken, 'ctl-a2'))!;
    expect(resumed.seat.peerId).toBe(a.peerId);
    expect(resumed.previous.c).toBe('ctl-a');
    expect(readSeat(resumed.seat.data)?.g).toBe(1);
    expect(await seats.resume('c1', a.resumeToken, 'ctl-a3')).toBeUndefined(); // single use
    expect(await seats.resume('c2', resumed.seat.resumeToken, 'ctl-a3')).toBeUndefined(); // its own call only
    // the old connection's data no longer matches: it cannot free the resumed seat
    expect(await seats.leave('c1', a.peerId, a.data)).toBeNull();
    expect(await seats.leave('c1', a.peerId, resumed.seat.data)).toHaveLength(1);
  });

  it('end the call: the notice goes to the control channel of each attached seat, a full one is skipped, a detached seat is not told', async () => {
    layer = new InMemoryChannelLayer({ capacity: 1 });
    const seats = new Seats(layer, { maxPeers: 3, ttl: 60 });
    const [full, open, away] = await Promise.all(['full', 'open', 'away'].map((name) => layer.newChannel(name)));
    await seats.join('c1', full!);
    await seats.join('c1', open!);
    const gone = (await seats.join('c1', away!))!;
    expect(await seats.detach(gone.callId, gone.peerId, gone.data)).toBeDefined();
    await layer.send(full!, { type: 'earlier' }); // its one place is taken
    const ended = await seats.end('c1', { type: 'call.ended', reason: 'r' });
    expect(ended.map((e) => e.member)).toHaveLength(3);
    expect(await layer.receive(open!)).toEqual({ type: 'call.ended', reason: 'r' });
    expect(await layer.receive(full!)).toEqual({ type: 'earlier' });
    const nothing = { type: 'nothing' };
    for (const ch of [full!, away!]) {
      await layer.send(ch, nothing);
      expect(await layer.receive(ch)).toEqual(nothing); // no notice was queued before it
    }
    expect(await seats.list('c1')).toEqual([]);
  });

  it('keep exactly one of two peers polite however peers come and go', async () => {
    layer = new InMemoryChannelLayer();
    const seats = new Seats(layer, { maxPeers: 2, ttl: 60 });
    const a = (await seats.join('c1', 'ctl-a'))!;
    const b = (await seats.join('c1', 'ctl-b'))!;
    expect([a.polite, b.polite]).toEqual([false, true]);
    await seats.leave('c1', a.peerId, a.data);
    const c = (await seats.join('c1', 'ctl-c'))!;
    expect([b.polite, c.polite]).toEqual([true, false]);
    await seats.leave('c1', c.peerId, c.data);
    const d = (await seats.join('c1', 'ctl-d'))!;
    expect(d.polite).toBe(false);
    const resumed = (await seats.resume('c1', b.resumeToken, 'ctl-b2'))!;
    expect(resumed.seat.polite).toBe(true);
  });
});

describe('withFrom: the relayed text of a signal', () => {
  const relayed = (frame: string, from = 'P1'): { text: string; parsed: Record<string, unknown> } => {
    const text = withFrom(JSON.parse(frame) as Record<string, unknown>, frame, from);
    return { text, parsed: JSON.parse(text) as Record<string, unknown> };
  };

  it('is the client frame with from put last, so the SDP is passed on byte for byte', () => {
    const frame = '{"type":"offer", "sdp":"v=0\\r\\na=x:{}\\r\\n"}  \n';
    const { text, parsed } = relayed(frame);
    expect(parsed).toEqual({ type: 'offer', sdp: 'v=0\r\na=x:{}\r\n', from: 'P1' });
    expect(text.startsWith('{"type":"offer", "sdp":"v=0\\r\\na=x:{}\\r\\n"')).toBe(true);
  });

  it('a from sent by the client is replaced, and the text names only the server one', () => {
    const { text, parsed } = relayed('{"type":"answer","from":"spoofed","sdp":"v=0"}', 'P2');
    expect(parsed).toEqual({ type: 'answer', from: 'P2', sdp: 'v=0' });
    expect(text).not.toContain('spoofed');
  });

  it('a from nested deeper is the client\'s own data and stays', () => {
    const { parsed } = relayed('{"type":"candidate","candidate":{"candidate":"c","from":"x"}}');
    expect(parsed).toEqual({ type: 'candidate', candidate: { candidate: 'c', from: 'x' }, from: 'P1' });
  });

  it('without the frame (a binary frame, or none) the object is serialized with from', () => {
    expect(JSON.parse(withFrom({ type: 'renegotiate', renegotiate: true }, undefined, 'P3'))).toEqual({ type: 'renegotiate', renegotiate: true, from: 'P3' });
  });
});
