/**
 * Abuse against live `node dist/main.js` processes: floods, oversized frames, many sockets from
 * one address, stalled upgrade requests, bad call ids, guessed ids, stolen or forged tokens,
 * cross-site origins, spoofed `from` and cross-call `to`. Every refusal must carry protocol.md's
 * error code and a sentence, be counted in /metrics, and leave every other call untouched (a
 * bystander call relays numbered signals on the same worker throughout).
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/signaling/index.js';
import { startServer } from '../../src/server.js';
import { connect, expectHttpRefusal, type HttpRefusal, type TestClient } from '../helpers/ws-client.js';
import { Bystander, candidate, join, newCallId, twoPeers, type Seated } from '../reliability/support/calls.js';
import { countDiff, errorCount, errorCounts, health, http } from '../reliability/support/http.js';
import { buildProblem, sleep, spawnServer, stopAllServers, waitFor, type ServerProcess } from '../reliability/support/processes.js';

const SECRET = 'access-token-secret-never-logged-4f1c9a';
const APP_ORIGIN = 'https://app.example';
const RATE = 50; // RATE_LIMIT default
const BURST = 100; // RATE_BURST default

/** Server with the defaults (same-origin only, rate limit on, 64 KiB frames, 20 sockets per address). */
let s: ServerProcess;
/** Server requiring access tokens, with an allow-listed origin, logging at debug. */
let t: ServerProcess;
let bystander: Bystander;
/** Every secret a client was handed in this file: none may appear in a log line. */
const secretsHanded = new Set<string>([SECRET]);

beforeAll(async () => {
  const problem = buildProblem();
  if (problem) throw new Error(problem);
  [s, t] = await Promise.all([
    spawnServer({ label: 'defaults', env: { RESUME_GRACE: '5' } }),
    spawnServer({ label: 'tokens+origins', env: { ACCESS_TOKEN_SECRET: SECRET, ALLOWED_ORIGINS: APP_ORIGIN, LOG_LEVEL: 'debug' } }),
  ]);
  bystander = await Bystander.start(s.wsUrl(newCallId('bystander')), undefined, 50);
  secretsHanded.add(bystander.a.resumeToken).add(bystander.b.resumeToken);
});

afterAll(async () => {
  await stopAllServers();
});

/** The refusal body protocol.md asks for: the code and a human-readable sentence. */
function expectReason(body: unknown, code: string, what: string): void {
  expect(body, `${what}: the answer carries {"type":"error","code":"${code}","message":<a sentence>}`).toMatchObject({
    type: 'error',
    code,
    message: expect.stringMatching(/^[A-Z].{10,}/),
  });
}

/** Every refusal before the upgrade, for the check that each one says why (one test, so that defect shows once). */
const refusedUpgrades: Array<{ what: string; code: string; status: number; body: unknown }> = [];

/** Refused before the upgrade with `status`, and counted under `code`. */
async function expectRefusedUpgrade(server: ServerProcess, url: string, opts: Parameters<typeof expectHttpRefusal>[1], status: number, code: string, what: string): Promise<HttpRefusal> {
  const before = await errorCount(server.url, code);
  const r = await expectHttpRefusal(url, opts);
  expect(r.status, what).toBe(status);
  expect(await errorCount(server.url, code), `${what}: counted in signaling_errors_total{code="${code}"}`).toBe(before + 1);
  refusedUpgrades.push({ what, code, status: r.status, body: r.body });
  return r;
}

/** Admitted: the socket opens and `welcome` comes. */
async function expectAdmitted(url: string, opts: Parameters<typeof connect>[1] = {}): Promise<Seated> {
  const seated = await join(url, opts);
  secretsHanded.add(seated.resumeToken).add(seated.resumeToken.slice(seated.resumeToken.indexOf('.') + 1));
  return seated;
}

describe('message floods', () => {
  it('a peer over its rate is answered rate-limited, then closed with 4429 after 20 refused messages; its partner keeps what passed, in order', async () => {
    const { a, b } = await twoPeers(s.wsUrl(newCallId('flood')));
    const before = await errorCount(s.url, 'rate-limited');
    for (let i = 0; i < 400; i++) a.client.send(candidate(i));
    const closed = await a.client.closed;
    expect(closed.code).toBe(4429);
    const errors = a.client.log.filter((m) => m.type === 'error');
    // README: answered rate-limited the first three times in a row, then closed after 20 refused in a row (one more answer).
    expect(errors.length).toBeGreaterThanOrEqual(4);
    for (const e of errors) expectReason(e, 'rate-limited', 'a flood');
    expect(await errorCount(s.url, 'rate-limited'), 'each rate-limited answer counted').toBe(before + errors.length);
    // What passed the bucket (the burst, plus the refill while sending) reached b once each, in order.
    await sleep(300);
    const got = b.client.log.filter((m) => typeof m.seq === 'number').map((m) => m.seq as number);
    expect(got.length).toBeGreaterThanOrEqual(BURST);
    expect(got.length).toBeLessThan(BURST + RATE);
    expect(got).toEqual([...got].sort((x, y) => x - y));
    expect(new Set(got).size).toBe(got.length);
    expect(b.client.isClosed).toBe(false);
    b.client.send({ type: 'bye' });
  });
});

describe('oversized frames', () => {
  it('a frame of exactly MAX_MESSAGE_BYTES is relayed; one byte more is answered too-large and closed with 1009, counted', async () => {
    const { a, b } = await twoPeers(s.wsUrl(newCallId('size')));
    const base = JSON.stringify({ type: 'offer', sdp: '' });
    const fits = JSON.stringify({ type: 'offer', sdp: 'x'.repeat(65_536 - base.length) });
    expect(Buffer.byteLength(fits)).toBe(65_536);
    a.client.send(fits);
    expect((await b.client.next('offer', 5000)).from).toBe(a.peerId);

    const before = await errorCount(s.url, 'too-large');
    const over = JSON.stringify({ type: 'offer', sdp: 'x'.repeat(65_537 - base.length) });
    a.client.send(over);
    const err = await a.client.next('error', 5000);
    expectReason(err, 'too-large', 'a 65,537-byte frame');
    expect((await a.client.closed).code).toBe(1009);
    expect(await errorCount(s.url, 'too-large')).toBe(before + 1);
    await b.client.nothing(300);
    b.client.terminate();
  });

  it('a frame far over the limit (2 MiB, past the socket maxPayload) is cut at the socket with 1009, reaches nobody, and is counted as too-large', async () => {
    const { a, b } = await twoPeers(s.wsUrl(newCallId('huge')));
    const before = await errorCount(s.url, 'too-large');
    a.client.send(JSON.stringify({ type: 'offer', sdp: 'x'.repeat(2 * 1024 * 1024) }));
    expect((await a.client.closed).code).toBe(1009);
    await b.client.nothing(200);
    b.client.terminate();
    const errors = a.client.log.filter((m) => m.type === 'error');
    expect(await errorCount(s.url, 'too-large'), 'counted in signaling_errors_total{code="too-large"}').toBe(before + 1);
    // Past the socket's hard limit (4 x MAX_MESSAGE_BYTES, at least 1 MiB) ws stops reading the
    // frame and closes at once, so no sentence can be sent first (README: Security).
    expect(errors).toHaveLength(0);
  });
});

describe('many sockets from one address', () => {
  let p: ServerProcess;
  let u: ServerProcess;
  beforeAll(async () => {
    [p, u] = await Promise.all([
      spawnServer({ label: 'per-address limit (defaults)' }),
      spawnServer({ label: 'per-address limit, TRUST_PROXY=false', env: { MAX_CONNECTIONS_PER_IP: '3', TRUST_PROXY: 'false' } }),
    ]);
  });

  it('the 21st socket from one address is refused with HTTP 429 rate-limited (counted); closing one lets a new one in', async () => {
    const open: TestClient[] = [];
    for (let i = 0; i < 20; i++) open.push((await expectAdmitted(p.wsUrl(newCallId('ip')))).client);
    await expectRefusedUpgrade(p, p.wsUrl(newCallId('ip')), {}, 429, 'rate-limited', 'the 21st socket');
    await open[0]!.close();
    await waitFor(async () => (await health(p.url)).body.connections === 19, 'the closed socket to be forgotten', 5000);
    const again = await expectAdmitted(p.wsUrl(newCallId('ip')));
    again.client.terminate();
    for (const c of open) c.terminate();
    await waitFor(async () => (await health(p.url)).body.connections === 0, 'every socket to be gone', 5000);
  });

  it('behind a proxy, writing your own X-Forwarded-For does not lift the limit (the proxy appends the address it saw; that one counts)', async () => {
    const open: TestClient[] = [];
    const refused: number[] = [];
    for (let i = 0; i < 24; i++) {
      // What Render's proxy forwards when the client at 198.51.100.7 sent "X-Forwarded-For: 10.9.0.<i>".
      const headers = { 'X-Forwarded-For': `10.9.0.${i}, 198.51.100.7` };
      try {
        open.push(await connect(p.wsUrl(newCallId('xff')), { headers }));
      } catch (err) {
        refused.push((err as { status?: number }).status ?? -1);
      }
    }
    for (const c of open) c.terminate();
    expect(open.length, 'sockets admitted from one real address with forged first hops').toBe(20);
    expect(refused).toEqual([429, 429, 429, 429]);
  });

  it('with TRUST_PROXY=false, X-Forwarded-For is ignored: the socket address counts', async () => {
    const open: TestClient[] = [];
    const refused: number[] = [];
    for (let i = 0; i < 5; i++) {
      try {
        open.push(await connect(u.wsUrl(newCallId('noproxy')), { headers: { 'X-Forwarded-For': `10.8.0.${i}` } }));
      } catch (err) {
        refused.push((err as { status?: number }).status ?? -1);
      }
    }
    for (const c of open) c.terminate();
    expect(open.length, 'sockets admitted with MAX_CONNECTIONS_PER_IP=3').toBe(3);
    expect(refused).toEqual([429, 429]);
  });
});

describe('slow upgrade requests', () => {
  it('sockets that send half an upgrade request and stall block nobody: calls still join and relay, /healthz answers', async () => {
    const stalled: net.Socket[] = [];
    const closedAt = new Map<net.Socket, number>();
    const t0 = Date.now();
    for (let i = 0; i < 100; i++) {
      const sock = net.connect({ host: '127.0.0.1', port: s.port });
      sock.on('error', () => {});
      sock.on('close', () => closedAt.set(sock, Date.now() - t0));
      sock.write(`GET /ws/call/${newCallId('slow')} HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`);
      stalled.push(sock);
    }
    await sleep(200);
    const { a, b } = await twoPeers(s.wsUrl(newCallId('during-slow')));
    a.client.send(candidate(1));
    expect((await b.client.next('candidate')).seq).toBe(1);
    b.client.send(candidate(2));
    expect((await a.client.next('candidate')).seq).toBe(2);
    expect((await health(s.url)).status).toBe(200);
    await bystander.relaysNow();
    a.client.send({ type: 'bye' });
    b.client.terminate();
    await sleep(2000);
    console.log(
      `slow upgrades: after ${Date.now() - t0} ms the server had closed ${closedAt.size} of ${stalled.length} half-sent upgrade requests ` +
        `(they count toward no per-address limit; Node's http headersTimeout ends them, see the next test)`,
    );
    for (const sock of stalled) sock.destroy();
  });

  it('the HTTP server ends a stalled request: headersTimeout and requestTimeout are set (finite, at most 60 s for headers)', async () => {
    const srv = await startServer({ env: {} });
    try {
      const h = srv.server as unknown as { headersTimeout: number; requestTimeout: number; keepAliveTimeout: number };
      console.log(`HTTP timeouts: headersTimeout ${h.headersTimeout} ms, requestTimeout ${h.requestTimeout} ms, keepAliveTimeout ${h.keepAliveTimeout} ms`);
      expect(h.headersTimeout).toBeGreaterThan(0);
      expect(h.headersTimeout).toBeLessThanOrEqual(60_000);
      expect(h.requestTimeout).toBeGreaterThan(0);
    } finally {
      await srv.close();
    }
  });
});

describe('call ids', () => {
  it('call ids of the wrong form are refused with HTTP 400 invalid-call-id, each counted', async () => {
    const bad = ['x'.repeat(65), 'a.b', 'a%20b', '%C3%BC', 'a%00b', '..%2F..%2Fetc', 'a;b', "a'b", 'a%2Fb', '%F0%9F%98%80', 'a~b'];
    for (const id of bad) await expectRefusedUpgrade(s, s.wsUrl(id), {}, 400, 'invalid-call-id', `call id ${id}`);
  });

  it('ids from POST /api/calls carry at least 128 random bits: 500 ids, all distinct, every bit position balanced', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 500; i++) {
      const r = await http(`${s.url}/api/calls`, { method: 'POST' });
      expect(r.status).toBe(201);
      const body = r.json as { callId: string; url: string };
      expect(body.url).toContain(body.callId);
      ids.push(body.callId);
    }
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{22,64}$/);
    const bytes = ids.map((id) => Buffer.from(id, 'base64url'));
    const bits = Math.min(...bytes.map((b) => b.length)) * 8;
    expect(bits).toBeGreaterThanOrEqual(128);
    // Each of the first 128 bit positions is set in about half the ids (500 samples: sd 2.2 %; the bound, 12 %, is 5.4 sd).
    const skewed: string[] = [];
    for (let bit = 0; bit < 128; bit++) {
      const ones = bytes.filter((b) => (b[bit >> 3]! >> (7 - (bit & 7))) & 1).length / bytes.length;
      if (Math.abs(ones - 0.5) > 0.12) skewed.push(`bit ${bit}: ${ones}`);
    }
    expect(skewed).toEqual([]);
  });

  it('peer ids and resume tokens are unguessable too (≥ 128 bits each, distinct)', async () => {
    const seen: Seated[] = [];
    for (let i = 0; i < 20; i++) {
      const x = await expectAdmitted(s.wsUrl(newCallId('ids')));
      seen.push(x);
      x.client.send({ type: 'bye' });
    }
    for (const x of seen) {
      expect(Buffer.from(x.peerId, 'base64url').length * 8).toBeGreaterThanOrEqual(128);
      const secret = x.resumeToken.slice(x.resumeToken.indexOf('.') + 1);
      expect(Buffer.from(secret, 'base64url').length * 8).toBeGreaterThanOrEqual(128);
    }
    expect(new Set(seen.map((x) => x.peerId)).size).toBe(seen.length);
    expect(new Set(seen.map((x) => x.resumeToken)).size).toBe(seen.length);
  });
});

describe('resume tokens', () => {
  /** A resume attempt that is refused after the upgrade: unauthorized with a sentence, then 4401. */
  async function expectResumeRefused(url: string, what: string): Promise<void> {
    const c = await connect(url);
    const err = await c.next('error', 5000);
    expectReason(err, 'unauthorized', what);
    expect((await c.closed).code, what).toBe(4401);
    expect(c.log.some((m) => m.type === 'welcome'), `${what}: no welcome`).toBe(false);
  }

  it('a reused, foreign, forged or garbage resume token gets unauthorized and 4401, counted; the seat holder and its call notice nothing', async () => {
    const callId = newCallId('resume');
    const { a, b } = await twoPeers(s.wsUrl(callId));
    const firstToken = a.resumeToken;
    // a's connection drops; it resumes with its token (single use) and gets a new one.
    a.client.terminate();
    const a2 = await expectAdmitted(s.wsUrl(callId, { resume: firstToken }));
    expect(a2.welcome).toMatchObject({ resumed: true, peerId: a.peerId });
    expect(a2.resumeToken).not.toBe(firstToken);
    expect(await b.client.next('peer-reconnected')).toMatchObject({ peerId: a.peerId });

    const other = await expectAdmitted(s.wsUrl(newCallId('resume-other')));
    const before = await errorCount(s.url, 'unauthorized');
    await expectResumeRefused(s.wsUrl(callId, { resume: firstToken }), 'a used resume token');
    await expectResumeRefused(s.wsUrl(callId, { resume: other.resumeToken }), 'a token from another call');
    await expectResumeRefused(s.wsUrl(newCallId('resume-elsewhere'), { resume: a2.resumeToken }), 'a live token on another call');
    await expectResumeRefused(s.wsUrl(callId, { resume: `${b.peerId}.${randomBytes(24).toString('base64url')}` }), 'a forged token naming a real peer');
    await expectResumeRefused(s.wsUrl(callId, { resume: 'garbage' }), 'a garbage token');
    expect(await errorCount(s.url, 'unauthorized')).toBe(before + 5);

    // Nobody in the call noticed, and the seat still works both ways with the same peer ids.
    await b.client.nothing(200);
    await a2.client.nothing(0);
    a2.client.send(candidate(7));
    expect(await b.client.next('candidate')).toMatchObject({ seq: 7, from: a.peerId });
    b.client.send(candidate(8));
    expect(await a2.client.next('candidate')).toMatchObject({ seq: 8, from: b.peerId });
    // The token that was stolen-and-refused on another call still resumes its own seat.
    a2.client.terminate();
    const a3 = await expectAdmitted(s.wsUrl(callId, { resume: a2.resumeToken }));
    expect(a3.welcome).toMatchObject({ resumed: true, peerId: a.peerId });
    for (const x of [a3, b, other]) x.client.send({ type: 'bye' });
  });
});

describe('access tokens (ACCESS_TOKEN_SECRET set)', () => {
  it('forged, expired, foreign, malformed, tampered and missing tokens are refused with HTTP 401 unauthorized, each counted; a good one is admitted', async () => {
    const callId = newCallId('tok');
    const good = signAccessToken(SECRET, callId, 300);
    secretsHanded.add(good);
    const [body, mac] = good.split('.') as [string, string];
    const tampered = `${Buffer.from(JSON.stringify({ c: callId, e: Math.floor(Date.now() / 1000) + 86_400 * 365 })).toString('base64url')}.${mac}`;
    const cases: Array<[string, Record<string, string>]> = [
      ['no token', {}],
      ['a token signed with another secret', { token: signAccessToken('some-other-secret-0123456789', callId, 300) }],
      ['an expired token', { token: signAccessToken(SECRET, callId, -5) }],
      ['a token for another call', { token: signAccessToken(SECRET, newCallId('tok-other'), 300) }],
      ['a malformed token', { token: 'not-a-token' }],
      ['a token with a lengthened expiry', { token: tampered }],
      ['a token with a truncated signature', { token: `${body}.${mac.slice(0, 10)}` }],
    ];
    for (const [what, query] of cases) await expectRefusedUpgrade(t, t.wsUrl(callId, query), {}, 401, 'unauthorized', what);
    const ok = await expectAdmitted(t.wsUrl(callId, { token: good }));
    ok.client.send({ type: 'bye' });
  });
});

describe('origins', () => {
  it('same-origin only by default: a cross-site Origin gets 403 unauthorized (counted); same origin and no Origin are admitted', async () => {
    await expectRefusedUpgrade(s, s.wsUrl(newCallId('origin')), { origin: 'https://evil.example' }, 403, 'unauthorized', 'a cross-site Origin');
    (await expectAdmitted(s.wsUrl(newCallId('origin')), { origin: `http://127.0.0.1:${s.port}` })).client.send({ type: 'bye' });
    (await expectAdmitted(s.wsUrl(newCallId('origin')))).client.send({ type: 'bye' });
  });

  it('with ALLOWED_ORIGINS, only the listed origin is admitted: another site and "null" get 403, each counted', async () => {
    const callId = newCallId('origin-list');
    const token = signAccessToken(SECRET, callId, 300);
    secretsHanded.add(token);
    (await expectAdmitted(t.wsUrl(callId, { token }), { origin: APP_ORIGIN })).client.send({ type: 'bye' });
    for (const origin of ['https://evil.example', 'null', 'https://app.example.evil.example', 'http://app.example']) {
      await expectRefusedUpgrade(t, t.wsUrl(callId, { token }), { origin }, 403, 'unauthorized', `Origin ${origin}`);
    }
  });
});

describe('full calls', () => {
  it('a third peer is refused with call-full and 4409 (counted); the two inside notice nothing', async () => {
    const callId = newCallId('full');
    const { a, b } = await twoPeers(s.wsUrl(callId));
    const before = await errorCount(s.url, 'call-full');
    const third = await connect(s.wsUrl(callId));
    expectReason(await third.next('error'), 'call-full', 'a third peer');
    expect((await third.closed).code).toBe(4409);
    expect(await errorCount(s.url, 'call-full')).toBe(before + 1);
    await Promise.all([a.client.nothing(300), b.client.nothing(300)]);
    a.client.send({ type: 'bye' });
    b.client.send({ type: 'bye' });
  });
});

describe('spoofing other peers', () => {
  it('a spoofed from is overwritten with the sender; a to naming a peer of another call is unknown-peer (counted) and reaches nobody', async () => {
    const x = await twoPeers(s.wsUrl(newCallId('spoof-x')));
    const y = await twoPeers(s.wsUrl(newCallId('spoof-y')));
    x.a.client.send({ type: 'offer', sdp: 'v=0 spoof', from: x.b.peerId });
    expect(await x.b.client.next('offer')).toMatchObject({ from: x.a.peerId, sdp: 'v=0 spoof' });
    x.a.client.send({ type: 'offer', sdp: 'v=0 spoof2', from: y.a.peerId, to: x.b.peerId });
    expect(await x.b.client.next('offer')).toMatchObject({ from: x.a.peerId, sdp: 'v=0 spoof2' });

    const before = await errorCount(s.url, 'unknown-peer');
    x.a.client.send({ type: 'offer', sdp: 'v=0 cross-call', to: y.a.peerId });
    const err = await x.a.client.next('error');
    expectReason(err, 'unknown-peer', 'a to naming a peer of another call');
    expect(await errorCount(s.url, 'unknown-peer')).toBe(before + 1);
    await Promise.all([y.a.client.nothing(300), y.b.client.nothing(300), x.b.client.nothing(300)]);
    expect(x.a.client.isClosed).toBe(false);
    for (const p of [x.a, x.b, y.a, y.b]) p.client.send({ type: 'bye' });
  });
});

describe('after all of it', () => {
  it('every refusal before the upgrade (400, 401, 403, 429 above) said why: a JSON body with the protocol code and a sentence', () => {
    expect(refusedUpgrades.length).toBeGreaterThanOrEqual(20);
    const silent = refusedUpgrades.filter((r) => {
      const b = r.body as { type?: unknown; code?: unknown; message?: unknown } | undefined;
      return b?.type !== 'error' || b.code !== r.code || !/^[A-Z].{10,}/.test(String(b.message));
    });
    expect(
      silent.map((r) => `${r.status} ${r.what}: body ${JSON.stringify(r.body) ?? '(empty)'}`),
      'refusals whose answer carried no {"type":"error","code","message"}',
    ).toEqual([]);
  });

  it('both workers are alive, and the bystander call got every signal once, in order, and nothing else', async () => {
    expect(s.alive && t.alive).toBe(true);
    expect((await health(s.url)).status).toBe(200);
    await bystander.relaysNow();
    const report = await bystander.stop();
    expect(report.closed).toBe(false);
    expect(report.unexpected).toEqual([]);
    for (const dir of [report.aToB, report.bToA]) {
      expect(dir.missing).toEqual([]);
      expect(dir.duplicated).toEqual([]);
      expect(dir.reordered).toBe(0);
    }
    console.log(`abuse: error counters ${JSON.stringify(countDiff({}, await errorCounts(s.url)))} (defaults), ${JSON.stringify(countDiff({}, await errorCounts(t.url)))} (tokens); bystander p99 ${report.p99LatencyMs} ms`);
  });

  it('no secret, access token or resume token appears in any log line (tokens server logs at debug)', async () => {
    const logs = [...s.output(), ...t.output()].join('\n');
    expect(logs.length).toBeGreaterThan(0);
    const leaked = [...secretsHanded].filter((secret) => logs.includes(secret));
    expect(leaked).toEqual([]);
  });
});

