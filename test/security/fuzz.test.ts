/**
 * Property-based fuzzing (fast-check) of every client message type and of raw frames, against a
 * live `node dist/main.js`, while a bystander call on the same server relays numbered signals.
 * Whatever a client sends, the worker must not crash, the bystander must get every signal once
 * and in order and nothing else, the fuzzing peer's own call must go on, and every refusal must
 * be the protocol's `bad-message` with a sentence, counted in /metrics.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Received, TestClient } from '../helpers/ws-client.js';
import { connect, expectHttpRefusal } from '../helpers/ws-client.js';
import { Bystander, newCallId, twoPeers, type Seated } from '../reliability/support/calls.js';
import { countDiff, errorCount, errorCounts, health } from '../reliability/support/http.js';
import { buildProblem, spawnServer, stopAllServers, type ServerProcess } from '../reliability/support/processes.js';
import { rawUpgrade } from '../reliability/support/raw-ws.js';

const LIMIT = 65_536; // MAX_MESSAGE_BYTES (the default, set explicitly below)
const SIGNAL_TYPES = ['offer', 'answer', 'candidate', 'renegotiate', 'transceiverRequest'] as const;
const CLIENT_TYPES = new Set<string>([...SIGNAL_TYPES, 'pranswer', 'rollback', 'bye', 'ping']);

let server: ServerProcess;
let bystander: Bystander;
let f1: Seated;
let f2: Seated;
let fuzzCall: string;
/** Markers of the valid signals f1 sent, in order: f2 must receive exactly these. */
const relayedMarkers: number[] = [];
let marker = 0;
/** bad-message errors the fuzzing peers were answered, to compare with /metrics. */
let badMessages = 0;

beforeAll(async () => {
  const problem = buildProblem();
  if (problem) throw new Error(problem);
  server = await spawnServer({
    label: 'fuzz target',
    env: { RATE_LIMIT: '0', MAX_CONNECTIONS_PER_IP: '0', MAX_MESSAGE_BYTES: String(LIMIT), RESUME_GRACE: '5' },
  });
  bystander = await Bystander.start(server.wsUrl(newCallId('bystander')), undefined, 20);
  fuzzCall = newCallId('fuzz');
  ({ a: f1, b: f2 } = await twoPeers(server.wsUrl(fuzzCall)));
});

afterAll(async () => {
  await stopAllServers();
});

/** Sends `ping` and waits for `pong`: everything f1 was answered before it is returned (the server answers in order). */
async function answersTo(client: TestClient, send: () => void): Promise<Received[]> {
  send();
  client.send({ type: 'ping' });
  await client.next('pong', 5000);
  return client.queue.splice(0, client.queue.length);
}

function expectBadMessage(answers: Received[], what: string): void {
  expect(answers, `answers to ${what}`).toHaveLength(1);
  const [err] = answers;
  expect(err).toMatchObject({ type: 'error', code: 'bad-message' });
  expect(String(err!.message), 'an error carries a human-readable sentence').toMatch(/^[A-Z"].{10,}/);
  badMessages += 1;
}

/** JSON round-trip: what a receiver can possibly see of `value` (-0 becomes 0, and so on). */
const wire = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

const text = (max: number) => fc.string({ unit: 'binary', maxLength: max });
const extraKey = fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !['type', 'to', 'from', 'fz'].includes(k));
const extras = fc.dictionary(extraKey, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 });

/** A well-formed signal of each type protocol.md lists, with random content and extra fields. */
const validSignal = fc.oneof(
  fc.record({ type: fc.constantFrom('offer', 'answer'), sdp: text(3000) }),
  fc.record({
    type: fc.constant('candidate'),
    candidate: fc.record(
      {
        candidate: text(500),
        sdpMid: fc.option(text(32), { nil: null }),
        sdpMLineIndex: fc.option(fc.integer({ min: 0, max: 64 }), { nil: null }),
        usernameFragment: fc.option(text(32), { nil: null }),
      },
      { requiredKeys: ['candidate'] },
    ),
  }),
  fc.record({ type: fc.constant('renegotiate'), renegotiate: fc.constant(true) }),
  fc.record({
    type: fc.constant('transceiverRequest'),
    transceiverRequest: fc.record({ kind: fc.constantFrom('audio', 'video'), init: fc.constant({}) }),
  }),
);

/** A value of the wrong JSON type for a string field. */
const notAString = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.nat(), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 4 }), fc.nat(), { maxKeys: 2 }));

/** A signal with one field of the wrong type (protocol.md: wrong field types → bad-message). */
const brokenSignal = fc.oneof(
  fc.record({ type: fc.constantFrom('offer', 'answer'), sdp: notAString }),
  fc.record({ type: fc.constantFrom('offer', 'answer') }), // sdp missing
  fc.record({ type: fc.constant('candidate'), candidate: fc.oneof(fc.integer(), fc.string({ maxLength: 20 }), fc.boolean(), fc.array(fc.nat())) }),
  fc.record({ type: fc.constant('candidate'), candidate: fc.record({ candidate: notAString }) }),
  fc.record({ type: fc.constant('renegotiate'), renegotiate: fc.oneof(fc.string({ maxLength: 10 }), fc.integer(), fc.constant(null)) }),
  fc.record({ type: fc.constant('transceiverRequest'), transceiverRequest: fc.oneof(fc.string({ maxLength: 10 }), fc.integer(), fc.constant(null)) }),
  fc.record({ type: fc.constantFrom(...SIGNAL_TYPES), sdp: fc.constant('v=0'), candidate: fc.constant({ candidate: '' }), renegotiate: fc.constant(true), transceiverRequest: fc.constant({ kind: 'audio' }), to: notAString }),
  fc.record({ type: notAString, sdp: fc.constant('v=0') }),
);

describe('fuzzing every client message type against a live worker', () => {
  it('well-formed signals of every type, with random content, extra fields and a spoofed from, reach the other peer untouched but for from', async () => {
    await fc.assert(
      fc.asyncProperty(validSignal, extras, fc.boolean(), fc.option(text(30), { nil: undefined }), async (signal, extra, addressed, spoofedFrom) => {
        const fz = ++marker;
        const msg: Record<string, unknown> = { ...extra, ...signal, fz };
        if (addressed) msg.to = f2.peerId;
        if (spoofedFrom !== undefined) msg.from = spoofedFrom;
        const answers = await answersTo(f1.client, () => f1.client.send(msg));
        expect(answers, 'a valid signal is answered with nothing').toEqual([]);
        relayedMarkers.push(fz);
        const got = await f2.client.next((m) => m.fz === fz, 3000);
        expect(got).toEqual({ ...wire(msg), from: f1.peerId });
      }),
      { numRuns: 300 },
    );
  });

  it('signals with a field of the wrong type are answered bad-message, and the connection stays open', async () => {
    await fc.assert(
      fc.asyncProperty(brokenSignal, extras, async (signal, extra) => {
        const msg = { ...extra, ...signal };
        expectBadMessage(await answersTo(f1.client, () => f1.client.send(msg)), JSON.stringify(msg).slice(0, 200));
      }),
      { numRuns: 300 },
    );
    expect(f1.client.isClosed).toBe(false);
  });

  it('objects with an unknown or missing type are answered bad-message', async () => {
    const unknownType = fc.string({ maxLength: 40 }).filter((t) => !CLIENT_TYPES.has(t));
    await fc.assert(
      fc.asyncProperty(fc.option(unknownType, { nil: undefined }), extras, async (type, extra) => {
        const msg = type === undefined ? { ...extra } : { ...extra, type };
        if (type === undefined) delete (msg as { type?: unknown }).type;
        expectBadMessage(await answersTo(f1.client, () => f1.client.send(msg)), JSON.stringify(msg).slice(0, 200));
      }),
      { numRuns: 200 },
    );
  });

  it('random JSON values that are not a message object are answered bad-message', async () => {
    const notAMessage = fc.jsonValue({ maxDepth: 4 }).filter((v) => {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return true;
      const t = (v as { type?: unknown }).type;
      return typeof t !== 'string' || !CLIENT_TYPES.has(t);
    });
    await fc.assert(
      fc.asyncProperty(notAMessage, async (value) => {
        expectBadMessage(await answersTo(f1.client, () => f1.client.send(JSON.stringify(value))), JSON.stringify(value).slice(0, 200));
      }),
      { numRuns: 200 },
    );
  });

  it('text that is not JSON at all is answered bad-message', async () => {
    const notJson = text(2000).filter((s) => {
      try {
        JSON.parse(s);
        return false;
      } catch {
        return true;
      }
    });
    await fc.assert(
      fc.asyncProperty(notJson, async (s) => {
        expectBadMessage(await answersTo(f1.client, () => f1.client.send(s)), JSON.stringify(s).slice(0, 200));
      }),
      { numRuns: 200 },
    );
  });

  it('binary frames are answered bad-message (messages are JSON text frames), and the connection stays open', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 4096 }), async (bytes) => {
        expectBadMessage(await answersTo(f1.client, () => f1.client.sendRaw(Buffer.from(bytes), { binary: true })), `${bytes.length} binary bytes`);
      }),
      { numRuns: 100 },
    );
    // Even a binary frame holding a perfectly valid signal is not relayed.
    const valid = Buffer.from(JSON.stringify({ type: 'offer', sdp: 'v=0', fz: -1 }));
    expectBadMessage(await answersTo(f1.client, () => f1.client.sendRaw(valid, { binary: true })), 'a valid signal in a binary frame');
    expect(f1.client.isClosed).toBe(false);
  });

  it('signals with strings just under the size limit are relayed whole, and just over it never', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 400 }), fc.constantFrom('a', 'é', '€', '😀'), async (under, ch) => {
        const fz = ++marker;
        const base = { type: 'offer', sdp: '', fz };
        const room = LIMIT - under - Buffer.byteLength(JSON.stringify(base));
        const unit = Buffer.byteLength(ch);
        const sdp = ch.repeat(Math.floor(room / unit));
        const msg = { ...base, sdp };
        const bytes = Buffer.byteLength(JSON.stringify(msg));
        expect(bytes).toBeLessThanOrEqual(LIMIT);
        const answers = await answersTo(f1.client, () => f1.client.send(msg));
        expect(answers, `a ${bytes}-byte signal is answered with nothing`).toEqual([]);
        relayedMarkers.push(fz);
        const got = await f2.client.next((m) => m.fz === fz, 5000);
        expect(got.sdp).toBe(sdp);
      }),
      { numRuns: 40 },
    );
  });

  it('deeply nested JSON (up to the frame limit) is relayed or answered bad-message, never closes the connection', async () => {
    const outcomes: string[] = [];
    for (const depth of [100, 1_000, 4_000, 5_000, 10_000, 30_000]) {
      const nested = `${'['.repeat(depth)}${']'.repeat(depth)}`;
      const objects = `${'{"a":'.repeat(Math.min(depth, 10_000))}1${'}'.repeat(Math.min(depth, 10_000))}`;
      for (const [what, frame] of [
        [`a pass-through field nested ${depth} deep`, `{"type":"offer","sdp":"v=0","fz":-100,"deep":${nested}}`],
        [`a whole message of arrays nested ${depth} deep`, nested],
        [`a whole message of objects nested ${Math.min(depth, 10_000)} deep`, objects],
      ] as const) {
        // A call of its own for each frame, so one failure cannot hide the next.
        const { a, b } = await twoPeers(server.wsUrl(newCallId('deep')));
        let outcome: string;
        try {
          const answers = await answersTo(a.client, () => a.client.send(frame));
          if (answers.length === 0) {
            await b.client.next((m) => m.fz === -100, 5000);
            outcome = 'relayed';
          } else {
            expectBadMessage(answers, what);
            outcome = 'bad-message';
          }
        } catch {
          outcome = a.client.isClosed ? `closed ${(await a.client.closed).code}` : 'no answer';
        }
        outcomes.push(`${what}: ${outcome}`);
        a.client.terminate();
        b.client.terminate();
      }
    }
    console.log(`deep nesting outcomes:\n  ${outcomes.join('\n  ')}`);
    expect(outcomes.filter((o) => !/: (relayed|bad-message)$/.test(o)), 'frames that were neither relayed nor answered bad-message').toEqual([]);
  });

  it('bye with any extra fields hangs up: the other peer gets peer-left hangup, the socket closes with 1000', async () => {
    await fc.assert(
      fc.asyncProperty(extras, async (extra) => {
        const callId = newCallId('bye');
        const { a, b } = await twoPeers(server.wsUrl(callId));
        a.client.send({ ...extra, type: 'bye' });
        expect((await a.client.closed).code).toBe(1000);
        expect(await b.client.next('peer-left')).toEqual({ type: 'peer-left', peerId: a.peerId, reason: 'hangup' });
        b.client.send({ type: 'bye' });
        expect((await b.client.closed).code).toBe(1000);
      }),
      { numRuns: 25 },
    );
  });

  it('text frames with invalid UTF-8 (raw socket) end only that connection, with 1007 or bad-message', async () => {
    const bad = [Buffer.from([0xff]), Buffer.from([0xc3, 0x28]), Buffer.from('{"type":"offer","sdp":"\xed\xa0\x80"}', 'latin1'), Buffer.from([0xf4, 0x90, 0x80, 0x80])];
    for (const payload of bad) {
      const raw = await rawUpgrade(server.port, `/ws/call/${newCallId('utf8')}`);
      expect(raw.status).toBe(101);
      await raw.waitFrame((f) => f.opcode === 1 && f.payload.includes('welcome'));
      raw.sendFrame(0x1, payload);
      const outcome = await Promise.race([raw.ended.then((e) => ({ closed: e.closeCode })), new Promise<{ closed: undefined }>((r) => setTimeout(() => r({ closed: undefined }), 1500))]);
      if (outcome.closed !== undefined) expect(outcome.closed, `invalid UTF-8 ${payload.toString('hex')}`).toBe(1007);
      else expect(raw.messages()).toContainEqual(expect.objectContaining({ type: 'error', code: 'bad-message' }));
      raw.socket.destroy();
    }
    // A reserved opcode and an unmasked client frame are protocol errors (1002): still only that connection.
    for (const [what, send] of [
      ['reserved opcode 0x3', (r: Awaited<ReturnType<typeof rawUpgrade>>) => r.sendFrame(0x3, Buffer.from('x'))],
      ['unmasked frame', (r: Awaited<ReturnType<typeof rawUpgrade>>) => r.sendFrame(0x1, Buffer.from('{"type":"ping"}'), { mask: false })],
      ['RSV bits without an extension', (r: Awaited<ReturnType<typeof rawUpgrade>>) => r.sendFrame(0x1, Buffer.from('{"type":"ping"}'), { rsv: 4 })],
      ['continuation without a start', (r: Awaited<ReturnType<typeof rawUpgrade>>) => r.sendFrame(0x0, Buffer.from('x'))],
    ] as const) {
      const raw = await rawUpgrade(server.port, `/ws/call/${newCallId('proto')}`);
      await raw.waitFrame((f) => f.opcode === 1 && f.payload.includes('welcome'));
      send(raw);
      const ended = await Promise.race([raw.ended, new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000))]);
      expect(ended?.closeCode, `${what} closes with 1002`).toBe(1002);
    }
  });

  it('call ids of any form: the valid ones are admitted, every other one refused with HTTP 400 invalid-call-id, counted', async () => {
    const before = await errorCount(server.url, 'invalid-call-id');
    const refusals: string[] = [];
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.string({ unit: 'binary', minLength: 1, maxLength: 80 }), fc.stringMatching(/^[A-Za-z0-9_-]{1,70}$/)),
        async (id) => {
          fc.pre(id !== '.' && id !== '..');
          const url = server.wsUrl(encodeURIComponent(id));
          if (/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
            const c = await connect(url);
            expect(await c.next()).toMatchObject({ type: 'welcome', callId: id });
            c.send({ type: 'bye' });
            await c.closed;
          } else {
            const r = await expectHttpRefusal(url);
            expect(r.status, `call id ${JSON.stringify(id)}`).toBe(400);
            refusals.push(id);
          }
        },
      ),
      { numRuns: 150 },
    );
    expect(refusals.length).toBeGreaterThan(20);
    expect(await errorCount(server.url, 'invalid-call-id'), 'every refusal is counted').toBe(before + refusals.length);
    // Whether each refusal also says why in its body is checked once, in abuse.test.ts.
  });

  it('after all of it: the worker is alive and healthy, the fuzzed call still relays, the bystander got every signal once, in order, and nothing else', async () => {
    expect(server.alive).toBe(true);
    expect((await health(server.url)).status).toBe(200);
    // The fuzzed call still works both ways.
    f2.client.send({ type: 'answer', sdp: 'v=0 after', fz: -2 });
    expect(await f1.client.next((m) => m.fz === -2)).toMatchObject({ from: f2.peerId, sdp: 'v=0 after' });
    // f2 got exactly the valid signals f1 sent, in order, and nothing else.
    const seen = f2.client.log.filter((m) => m.type !== 'welcome');
    expect(seen.map((m) => m.fz)).toEqual(relayedMarkers);
    // Every bad-message answer was counted.
    const counts = await errorCounts(server.url);
    expect(counts['bad-message']).toBe(badMessages);
    await bystander.relaysNow();
    const report = await bystander.stop();
    expect(report.closed).toBe(false);
    expect(report.unexpected).toEqual([]);
    for (const dir of [report.aToB, report.bToA]) {
      expect(dir.missing).toEqual([]);
      expect(dir.duplicated).toEqual([]);
      expect(dir.reordered).toBe(0);
      expect(dir.expected).toBeGreaterThan(50);
    }
    console.log(`fuzz: ${relayedMarkers.length} signals relayed, ${badMessages} bad messages refused; bystander ${report.aToB.received + report.bToA.received} signals, p99 ${report.p99LatencyMs} ms, max ${report.maxLatencyMs} ms; error counters ${JSON.stringify(countDiff({}, counts))}`);
  });
});


