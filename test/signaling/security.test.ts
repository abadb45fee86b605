/**
 * protocol.md, "Security" and the `unauthorized` row of "Errors": allowed origins, access
 * tokens, and the per-address connection limit, all refused before the upgrade.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/signaling/index.js';
import { expectHttpRefusal } from '../helpers/ws-client.js';
import { callUrl, join, newCallId, serve, sleep, type Server } from './harness.js';

const SECRET = 'access-token-secret-for-tests-0123456789';
const ALLOWED = ['https://app.example.com', 'https://partner.example.org:8443'];

let sameOrigin: Server; // ALLOWED_ORIGINS unset
let listed: Server; // ALLOWED_ORIGINS set
let tokens: Server; // ACCESS_TOKEN_SECRET set
let fewPerIp: Server; // MAX_CONNECTIONS_PER_IP=3
let proxied: Server; // MAX_CONNECTIONS_PER_IP=3, behind a proxy that appends X-Forwarded-For (the default TRUST_PROXY)

beforeAll(async () => {
  [sameOrigin, listed, tokens, fewPerIp, proxied] = await Promise.all([
    serve(),
    serve({ ALLOWED_ORIGINS: ALLOWED.join(',') }),
    serve({ ACCESS_TOKEN_SECRET: SECRET, RESUME_GRACE: '5' }),
    serve({ MAX_CONNECTIONS_PER_IP: '3' }),
    serve({ MAX_CONNECTIONS_PER_IP: '3' }),
  ]);
});
afterAll(async () => {
  await Promise.all([sameOrigin?.close(), listed?.close(), tokens?.close(), fewPerIp?.close(), proxied?.close()]);
});

/** Expects the upgrade refused with `status`; answers the refusal. */
async function expectRefused(url: string, origin: string | undefined, status: number) {
  const r = await expectHttpRefusal(url, origin === undefined ? {} : { origin });
  expect(r.status, r.text).toBe(status);
  return r;
}

/** The body an `unauthorized` refusal should carry. */
function expectUnauthorizedBody(r: { body: unknown; text: string }): void {
  expect(r.body, `body was ${JSON.stringify(r.text)}`).toMatchObject({ type: 'error', code: 'unauthorized', message: expect.any(String) });
}

describe('origins, with ALLOWED_ORIGINS unset (same origin only)', () => {
  it('admits a browser on the server\'s own origin', async () => {
    const { welcome } = await join(sameOrigin, newCallId(), {}, { origin: sameOrigin.url });
    expect(welcome.type).toBe('welcome');
  });

  it('admits a client that sends no Origin (not a browser)', async () => {
    const { welcome } = await join(sameOrigin, newCallId());
    expect(welcome.type).toBe('welcome');
  });

  it.each([
    ['another site', 'https://evil.example'],
    ['another port on the same host', 'http://127.0.0.1:1'],
    ['another host name for the same machine', 'http://localhost'],
    ['the opaque origin "null"', 'null'],
  ])('refuses %s with HTTP 403', async (_what, origin) => {
    const o = origin === 'http://localhost' ? `http://localhost:${sameOrigin.port}` : origin;
    await expectRefused(callUrl(sameOrigin, newCallId()), o, 403);
  });
});

describe('origins: the refusal', () => {
  it('says why: the 403 carries a JSON body {type:"error", code:"unauthorized", message}', async () => {
    expectUnauthorizedBody(await expectRefused(callUrl(sameOrigin, newCallId()), 'https://evil.example', 403));
  });
});

describe('origins, with ALLOWED_ORIGINS set', () => {
  it.each(ALLOWED)('admits %s', async (origin) => {
    const { welcome } = await join(listed, newCallId(), {}, { origin });
    expect(welcome.type).toBe('welcome');
  });

  it('admits a client that sends no Origin', async () => {
    const { welcome } = await join(listed, newCallId());
    expect(welcome.type).toBe('welcome');
  });

  it.each([
    ['another site', 'https://evil.example'],
    ['a look-alike that extends an allowed host', 'https://app.example.com.evil.example'],
    ['an allowed host over http', 'http://app.example.com'],
    ['an allowed host on another port', 'https://partner.example.org'],
    ['a subdomain of an allowed host', 'https://x.app.example.com'],
  ])('refuses %s with HTTP 403', async (_what, origin) => {
    await expectRefused(callUrl(listed, newCallId()), origin, 403);
  });
});

describe('access tokens (ACCESS_TOKEN_SECRET set)', () => {
  it('admit a peer with a valid token for the call', async () => {
    const callId = newCallId();
    const { welcome } = await join(tokens, callId, { token: signAccessToken(SECRET, callId, 60) });
    expect(welcome.callId).toBe(callId);
  });

  it('let two peers with tokens for the call talk, and one resume with its token', async () => {
    const callId = newCallId();
    const token = signAccessToken(SECRET, callId, 60);
    const a = await join(tokens, callId, { token });
    const b = await join(tokens, callId, { token });
    await a.c.next('peer-joined');
    b.c.terminate();
    await sleep(300);
    const b2 = await join(tokens, callId, { token, resume: b.welcome.resumeToken });
    expect(b2.welcome).toMatchObject({ resumed: true, peerId: b.id });
  });

  it.each([
    ['no token', () => undefined],
    ['an empty token', () => ''],
    ['a made-up token', () => 'abc.def'],
    ['a token signed with another secret', (id: string) => signAccessToken('another-secret-entirely-0123456789', id, 60)],
    ['an expired token', (id: string) => signAccessToken(SECRET, id, -60)],
    ['a token for another call', () => signAccessToken(SECRET, newCallId(), 60)],
    [
      'a token whose call id was edited',
      (id: string) => {
        const [, mac] = signAccessToken(SECRET, newCallId(), 60).split('.');
        const body = Buffer.from(JSON.stringify({ c: id, e: Math.floor(Date.now() / 1000) + 60 })).toString('base64url');
        return `${body}.${mac}`;
      },
    ],
  ])('refuse %s with HTTP 401', async (_what, make) => {
    const callId = newCallId();
    const token = make(callId);
    await expectRefused(callUrl(tokens, callId, token === undefined ? {} : { token }), undefined, 401);
  });

  it('say why: the 401 carries a JSON body {type:"error", code:"unauthorized", message}', async () => {
    const callId = newCallId();
    expectUnauthorizedBody(await expectRefused(callUrl(tokens, callId, { token: signAccessToken(SECRET, callId, -60) }), undefined, 401));
  });

  it('refuse a resume without the access token', async () => {
    const callId = newCallId();
    const token = signAccessToken(SECRET, callId, 60);
    const a = await join(tokens, callId, { token });
    a.c.terminate();
    await sleep(300);
    await expectRefused(callUrl(tokens, callId, { resume: a.welcome.resumeToken }), undefined, 401);
  });
});

describe('connections per address (MAX_CONNECTIONS_PER_IP=3)', () => {
  it('refuses the fourth socket from one address with HTTP 429, and admits one again after one closes', async () => {
    const held = [];
    for (let i = 0; i < 3; i++) held.push(await join(fewPerIp, newCallId()));
    const r = await expectHttpRefusal(callUrl(fewPerIp, newCallId()));
    expect(r.status).toBe(429);
    await held[0]!.c.close();
    await sleep(200);
    const again = await join(fewPerIp, newCallId());
    expect(again.welcome.type).toBe('welcome');
  });

  it('behind a proxy that appends X-Forwarded-For, a client cannot escape the limit by sending addresses of its own', async () => {
    // The proxy appends the address it saw (198.51.100.7); what comes before it is whatever the client sent.
    const via = (spoofed: string) => ({ headers: { 'X-Forwarded-For': `${spoofed}, 198.51.100.7` } });
    for (const spoofed of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) await join(proxied, newCallId(), {}, via(spoofed));
    const r = await expectHttpRefusal(callUrl(proxied, newCallId()), via('10.0.0.4'));
    expect(r.status).toBe(429);
  });
});
