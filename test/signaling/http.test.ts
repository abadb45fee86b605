/**
 * protocol.md, "HTTP" and "Ended by the server": creating calls, ICE servers and TURN
 * credentials, health, metrics, the pages' security headers, and ending a call from outside.
 */
import { createHmac } from 'node:crypto';
import perfHooks from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SignalingMetrics } from '../../src/signaling/index.js';
import { ADMIN_TOKEN, callUrl, expectAlive, expectError, http, join, newCallId, open, pair, SHAPES, serve, type Server } from './harness.js';

const TURN_SECRET = 'turn-static-auth-secret-for-tests-42';
const TURN_TTL = 3600;
const TURN_URLS = ['turn:turn.example.com:3478?transport=udp', 'turns:turn.example.com:5349?transport=tcp'];

let one: Server; // defaults
let turn: Server; // TURN configured, custom STUN
let noStun: Server; // STUN_URLS=''

beforeAll(async () => {
  [one, turn, noStun] = await Promise.all([
    serve(),
    serve({ TURN_URLS: TURN_URLS.join(','), TURN_SECRET, TURN_TTL: String(TURN_TTL), STUN_URLS: 'stun:stun.example.com:3478' }),
    serve({ STUN_URLS: '' }),
  ]);
});
afterAll(async () => {
  await Promise.all([one?.close(), turn?.close(), noStun?.close()]);
});

type IceServer = { urls: string | string[]; username?: string; credential?: string };
const urlsOf = (s: IceServer) => (Array.isArray(s.urls) ? s.urls : [s.urls]);
const isTurn = (s: IceServer) => urlsOf(s).some((u) => /^turns?:/.test(u));

/** Checks TURN REST API credentials the way coturn's use-auth-secret does. */
function expectCoturnCredentials(s: IceServer, secret: string, ttl: number): void {
  expect(typeof s.username).toBe('string');
  const m = /^(\d+):(.+)$/.exec(s.username!);
  expect(m, `username ${s.username} is <expiry-unix-time>:<id>`).not.toBeNull();
  const expiry = Number(m![1]);
  const now = Math.floor(Date.now() / 1000);
  expect(Math.abs(expiry - (now + ttl))).toBeLessThanOrEqual(5);
  expect(s.credential).toBe(createHmac('sha1', secret).update(s.username!).digest('base64'));
}

describe('POST /api/calls', () => {
  it('answers 201 with a fresh call id and a url ending in /c/<callId>', async () => {
    const res = await http(one, '/api/calls', { method: 'POST' });
    expect(res.status).toBe(201);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    const body = (await res.json()) as { callId: string; url: string };
    expect(body.callId).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(body.url.endsWith(`/c/${body.callId}`)).toBe(true);
    expect(() => new URL(body.url)).not.toThrow();
  });

  it('makes ids of at least 128 random bits, never the same twice (64 samples)', async () => {
    const ids = await Promise.all(
      Array.from({ length: 64 }, async () => ((await (await http(one, '/api/calls', { method: 'POST' })).json()) as { callId: string }).callId),
    );
    expect(new Set(ids).size).toBe(64);
    const alphabet = new Set(ids.join(''));
    const length = Math.min(...ids.map((id) => id.length));
    // Bits per character from the alphabet actually used (16 for hex, 64 for base64url, …).
    const bits = length * Math.log2(alphabet.size);
    expect(bits, `ids like ${ids[0]} (alphabet of ${alphabet.size})`).toBeGreaterThanOrEqual(128);
  });

  it('gives an id a call can be joined with, and a link whose page loads', async () => {
    const body = (await (await http(one, '/api/calls', { method: 'POST' })).json()) as { callId: string; url: string };
    const { welcome } = await join(one, body.callId);
    expect(welcome.callId).toBe(body.callId);
    const page = await http(one, new URL(body.url).pathname);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
  });
});

describe('GET /api/ice-servers', () => {
  it('answers {iceServers:[…], ttl:N}, by default with a STUN server', async () => {
    const res = await http(one, '/api/ice-servers');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { iceServers: IceServer[]; ttl: number };
    expect(Array.isArray(body.iceServers)).toBe(true);
    expect(Number.isInteger(body.ttl) && body.ttl > 0).toBe(true);
    expect(body.iceServers.length).toBeGreaterThan(0);
    for (const s of body.iceServers) for (const u of urlsOf(s)) expect(u).toMatch(/^(stuns?|turns?):/);
  });

  it('hands out STUN_URLS, and nothing when STUN_URLS is empty (the welcome agrees)', async () => {
    const none = (await (await http(noStun, '/api/ice-servers')).json()) as { iceServers: IceServer[] };
    expect(none.iceServers).toEqual([]);
    expect((await join(noStun, newCallId())).welcome.iceServers).toEqual([]);
    const body = (await (await http(turn, '/api/ice-servers')).json()) as { iceServers: IceServer[] };
    const stun = body.iceServers.filter((s) => !isTurn(s));
    expect(stun.flatMap(urlsOf)).toEqual(['stun:stun.example.com:3478']);
  });

  it('gives TURN entries coturn REST credentials: username <expiry>:<id> with expiry ≈ now+TURN_TTL, credential base64(HMAC-SHA1(secret, username))', async () => {
    const body = (await (await http(turn, '/api/ice-servers')).json()) as { iceServers: IceServer[]; ttl: number };
    const turns = body.iceServers.filter(isTurn);
    expect(turns.length).toBeGreaterThan(0);
    expect(turns.flatMap(urlsOf).sort()).toEqual([...TURN_URLS].sort());
    for (const s of turns) expectCoturnCredentials(s, TURN_SECRET, TURN_TTL);
    expect(body.ttl).toBe(TURN_TTL);
  });

  it('gives the welcome the same list, with valid TURN credentials of its own', async () => {
    const { welcome } = await join(turn, newCallId());
    const body = (await (await http(turn, '/api/ice-servers')).json()) as { iceServers: IceServer[] };
    const shape = (list: IceServer[]) => list.map((s) => ({ urls: urlsOf(s), turn: isTurn(s) }));
    expect(shape(welcome.iceServers)).toEqual(shape(body.iceServers));
    for (const s of welcome.iceServers.filter(isTurn)) expectCoturnCredentials(s, TURN_SECRET, TURN_TTL);
  });

  it('never sends the TURN secret or the admin token to a client', async () => {
    const texts = [
      await (await http(turn, '/api/ice-servers')).text(),
      await (await http(turn, '/healthz')).text(),
      await (await http(turn, '/metrics')).text(),
      await (await http(turn, '/api/calls', { method: 'POST' })).text(),
      JSON.stringify((await join(turn, newCallId())).welcome),
    ];
    for (const t of texts) {
      expect(t).not.toContain(TURN_SECRET);
      expect(t).not.toContain(ADMIN_TOKEN);
    }
  });
});

describe('GET /healthz', () => {
  it('answers 200 {status:"ok", layer:"memory"} on the InMemory layer', async () => {
    const res = await http(one, '/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', layer: 'memory' });
  });
});

/** Prometheus text as sample → value ("name{labels}" → number). */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

async function scrape(s: Server): Promise<Map<string, number>> {
  const res = await http(s, '/metrics');
  expect(res.status).toBe(200);
  return samples(await res.text());
}

/** Samples whose value grew between two scrapes. */
function grown(before: Map<string, number>, after: Map<string, number>, filter: RegExp): string[] {
  return [...after].filter(([k, v]) => filter.test(k) && v > (before.get(k) ?? 0)).map(([k]) => k);
}

describe('GET /metrics', () => {
  it('answers Prometheus text with HELP and TYPE lines', async () => {
    const res = await http(one, '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain|openmetrics/);
    const text = await res.text();
    expect(text).toMatch(/^# HELP /m);
    expect(text).toMatch(/^# TYPE \S+ (counter|gauge|histogram|summary)/m);
    expect(samples(text).size).toBeGreaterThan(0);
  });

  it('counts connections, calls and signals relayed, and observes layer latency, after a relay', async () => {
    await new Promise((r) => setTimeout(r, 200)); // let the previous test's sockets finish closing
    const before = await scrape(one);
    const { a, b } = await pair(one);
    a.c.send(SHAPES.offer);
    await b.c.next('offer');
    const after = await scrape(one);
    expect(grown(before, after, /connection/i), 'a connections sample grew').not.toEqual([]);
    expect(grown(before, after, /call/i).filter((k) => !/connection/i.test(k)), 'a calls sample grew').not.toEqual([]);
    expect(grown(before, after, /signal|relay/i), 'a signals-relayed sample grew').not.toEqual([]);
    expect(grown(before, after, /layer|latency/i), 'a layer latency sample grew').not.toEqual([]);
  });

  it("reports the event loop's lag, sampled every 100 ms: an idle server wakes 10 times a second for it, not 100", async () => {
    const text = await (await http(one, '/metrics')).text();
    expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds \S+/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_max_seconds \S+/m);
    const spy = vi.spyOn(perfHooks, 'monitorEventLoopDelay');
    try {
      new SignalingMetrics();
      expect(spy).toHaveBeenCalledWith(expect.objectContaining({ resolution: 100 }));
    } finally {
      spy.mockRestore();
    }
  });

  it('counts errors by code', async () => {
    const { a } = await pair(one);
    const before = await scrape(one);
    a.c.sendRaw('not json');
    await expectError(a.c, 'bad-message');
    a.c.send({ ...SHAPES.offer, to: 'nobody' });
    await expectError(a.c, 'unknown-peer');
    const after = await scrape(one);
    expect(grown(before, after, /code="bad-message"/), 'an errors{code="bad-message"} sample grew').not.toEqual([]);
    expect(grown(before, after, /code="unknown-peer"/), 'an errors{code="unknown-peer"} sample grew').not.toEqual([]);
  });
});

describe('the pages', () => {
  it.each([['/'], ['/c/SomeCall_id-123']])('%s is HTML with CSP, X-Content-Type-Options and framing refused', async (path) => {
    const res = await http(one, path);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    const csp = res.headers.get('content-security-policy');
    expect(csp).toBeTruthy();
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const frameAncestors = /frame-ancestors\s+('none'|'self')/.test(csp ?? '');
    const xfo = /^(DENY|SAMEORIGIN)$/i.test(res.headers.get('x-frame-options') ?? '');
    expect(frameAncestors || xfo, `CSP "${csp}", X-Frame-Options "${res.headers.get('x-frame-options')}"`).toBe(true);
  });
});

describe('DELETE /api/calls/:callId', () => {
  const del = (s: Server, callId: string, token?: string) =>
    http(s, `/api/calls/${callId}`, { method: 'DELETE', headers: token === undefined ? {} : { Authorization: `Bearer ${token}` } });

  it('with the admin bearer token sends every peer call-ended and closes them with 1000', async () => {
    const { a, b, callId } = await pair(one);
    const res = await del(one, callId, ADMIN_TOKEN);
    expect(res.status).toBeGreaterThanOrEqual(200);
    expect(res.status).toBeLessThan(300);
    for (const p of [a, b]) {
      const m = await p.c.next('call-ended');
      expect(typeof m.reason).toBe('string');
      expect((await p.c.closed).code).toBe(1000);
    }
  });

  it('lets the call id be joined afresh: an empty call, two seats, and the old resume tokens refused', async () => {
    const { a, b, callId } = await pair(one);
    await del(one, callId, ADMIN_TOKEN);
    await a.c.closed;
    await b.c.closed;
    const c = await join(one, callId);
    expect(c.welcome.peers).toEqual([]);
    expect(c.welcome.resumed).toBe(false);
    const d = await join(one, callId);
    expect(d.welcome.peers).toEqual([c.id]);
    const stale = await open(callUrl(one, callId, { resume: a.welcome.resumeToken }));
    await expectError(stale, 'unauthorized');
    expect((await stale.closed).code).toBe(4401);
  });

  it('ends a call whose peer had dropped within the grace: the seat is gone', async () => {
    const { a, b, callId } = await pair(one);
    b.c.terminate();
    await new Promise((r) => setTimeout(r, 300));
    await del(one, callId, ADMIN_TOKEN);
    await a.c.next('call-ended');
    const resumed = await open(callUrl(one, callId, { resume: b.welcome.resumeToken }));
    await expectError(resumed, 'unauthorized');
    expect((await resumed.closed).code).toBe(4401);
  });

  it.each([
    ['a wrong token', 'x'.repeat(ADMIN_TOKEN.length)],
    ['a prefix of the token', ADMIN_TOKEN.slice(0, 16)],
    ['no token', undefined],
  ])('with %s answers 401 and the peers notice nothing', async (_what, token) => {
    const { a, b } = await pair(one);
    const res = await del(one, a.welcome.callId, token);
    expect(res.status).toBe(401);
    await a.c.nothing(200);
    await b.c.nothing(0);
    await expectAlive(a.c);
  });

  it('with the token as a query parameter or basic auth instead of a bearer answers 401', async () => {
    const { a } = await pair(one);
    const q = await http(one, `/api/calls/${a.welcome.callId}?token=${ADMIN_TOKEN}`, { method: 'DELETE' });
    expect(q.status).toBe(401);
    const basic = await http(one, `/api/calls/${a.welcome.callId}`, {
      method: 'DELETE',
      headers: { Authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` },
    });
    expect(basic.status).toBe(401);
    await a.c.nothing(100);
  });
});
