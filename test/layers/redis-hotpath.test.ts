/**
 * The Redis layer's send and receive hot path: sends the transport encodes itself (EVALSHA),
 * commands coalesced into one write per tick, and the send
 * script's short path. What must hold whatever the shortcuts: FIFO per channel, exactly once,
 * exact bytes, and recovery when Redis forgets its scripts.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RedisChannelLayer, SETTLED, type RedisLayerOptions } from '../../src/layers/index.js';
import { RedisKeys } from '../../src/layers/redis-keys.js';
import { waitFor } from '../deploy/support/server-process.js';
import { encodeScriptCall } from '../../src/layers/redis-transport.js';
import { connect, countCommands, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { expectNothing, receiveWithin, uid } from './conformance.js';

/** RESP built the plain way: one string per bulk, joined (what encodeScriptCall must equal). */
function referenceEncoding(command: string, script: string, keys: string[], args: Array<string | Buffer | number>): Buffer {
  const bulk = (b: Buffer): Buffer => Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n')]);
  const parts = [command, script, String(keys.length), ...keys, ...args].map((a) => bulk(Buffer.isBuffer(a) ? a : Buffer.from(String(a))));
  return Buffer.concat([Buffer.from(`*${parts.length}\r\n`), ...parts]);
}

describe('the script call encoding', () => {
  it('writes the same bytes as plain RESP for every kind of argument', () => {
    const cases: Array<[string, string, string[], Array<string | Buffer | number>]> = [
      ['EVALSHA', 'a'.repeat(40), ['k1', 'key:é✓'], ['', 'x', 0, 9, 10, 99, 100, 1733170000123, Number.MAX_SAFE_INTEGER, -1, 2.5, 1e21, Buffer.from([0, 13, 10, 255]), Buffer.alloc(0), 'ünï\ud83d\ude00', '\ud800']],
      ['EVAL', 'return 1 -- ✓', [], []],
      ['EVALSHA', 'b'.repeat(40), Array.from({ length: 12 }, (_, i) => `key${i}`), [Buffer.alloc(5000, 7), 'tail']],
    ];
    for (const [command, script, keys, args] of cases) {
      expect(encodeScriptCall(command as 'EVAL' | 'EVALSHA', script, keys, args)).toEqual(referenceEncoding(command, script, keys, args));
    }
  });
});

describe.skipIf(!hasRedisServer())('Redis layer hot path', () => {
  let server: RedisServer;
  const layers: RedisChannelLayer[] = [];
  const make = (options: RedisLayerOptions = {}): RedisChannelLayer => {
    const layer = new RedisChannelLayer({ hosts: server.url, prefix: `hp${uid()}`, ...options });
    layers.push(layer);
    return layer;
  };
  const pair = (options: RedisLayerOptions = {}): [RedisChannelLayer, RedisChannelLayer] => {
    const prefix = `hp${uid()}`;
    return [make({ prefix, ...options }), make({ prefix, ...options })];
  };

  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    await Promise.all(layers.map((l) => l.close()));
    await server?.stop();
  });

  it('sends issued in one tick (one coalesced write) arrive in order, each once', async () => {
    // Room for all of them: nobody receives on the inbox until every send is in.
    const [sender, receiver] = pair({ capacity: 1000 });
    const inbox = await receiver.newChannel();
    const held = `held-${uid()}`;
    // Hold the normal channel first, so the sends take the publish path.
    const first = receiver.receive(held);
    await sender.send(held, { type: 'm', n: -1 });
    expect(await first).toEqual({ type: 'm', n: -1 });
    const n = 300;
    await Promise.all(Array.from({ length: n }, (_, i) => [sender.send(inbox, { type: 'm', n: i }), sender.send(held, { type: 'm', n: i })]).flat());
    for (let i = 0; i < n; i++) expect(await receiveWithin(receiver, inbox)).toEqual({ type: 'm', n: i });
    for (let i = 0; i < n; i++) expect(await receiveWithin(receiver, held)).toEqual({ type: 'm', n: i });
    await expectNothing(receiver, inbox);
    await expectNothing(receiver, held);
  });

  it('message bytes survive the hand-made encoding exactly (CR LF, NUL, UTF-8, large)', async () => {
    const [sender, receiver] = pair();
    const channel = await receiver.newChannel();
    const bytes = new Uint8Array(60_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
    bytes.set([13, 10, 36, 13, 10, 42, 0], 100);
    const messages = [
      { type: 'a', text: 'line\r\n$5\r\nnot a header\r\n*3\r\n', bytes },
      { type: 'b', text: 'héllo wörld ☎ 📞 \u0000 end' },
      { type: 'c', empty: '', date: new Date(1_700_000_000_000), map: new Map([['k', 1]]) },
    ];
    for (const m of messages) await sender.send(channel, m);
    for (const m of messages) expect(await receiveWithin(receiver, channel)).toEqual(m);
  });

  it('after Redis forgets its scripts (SCRIPT FLUSH), every operation runs them again and nothing is lost', async () => {
    const [sender, receiver] = pair();
    const inbox = await receiver.newChannel();
    const normal = `after-flush-${uid()}`;
    const group = `g${uid()}`;
    await receiver.groupAdd(group, inbox);
    // Warm up: every script involved has run once on each connection (later calls name its SHA).
    for (let round = 0; round < 2; round++) {
      await sender.send(inbox, { type: 'w', round });
      await sender.send(normal, { type: 'w', round });
      await sender.groupSend(group, { type: 'gw', round });
      expect(await receiveWithin(receiver, inbox)).toEqual({ type: 'w', round });
      expect(await receiveWithin(receiver, inbox)).toEqual({ type: 'gw', round });
      expect(await receiveWithin(receiver, normal)).toEqual({ type: 'w', round });
    }
    const admin = connect(server);
    try {
      await admin.script('FLUSH');
    } finally {
      admin.disconnect();
    }
    // Several at once: the first fails NOSCRIPT and so do the ones behind it; each is run again.
    await Promise.all([0, 1, 2].map((i) => sender.send(inbox, { type: 'x', i })));
    for (let i = 0; i < 3; i++) expect(await receiveWithin(receiver, inbox)).toEqual({ type: 'x', i });
    await sender.groupSend(group, { type: 'gx' });
    expect(await receiveWithin(receiver, inbox)).toEqual({ type: 'gx' });
    await sender.send(normal, { type: 'y' });
    expect(await receiveWithin(receiver, normal)).toEqual({ type: 'y' });
    await expectNothing(receiver, inbox);
    await expectNothing(receiver, normal);
  });

  it('a relayed signal to a held channel costs one round trip', async () => {
    const [sender, receiver] = pair();
    const channel = `one-trip-${uid()}`;
    const first = receiver.receive(channel);
    await sender.send(channel, { type: 'm', n: 0 });
    await first;
    // Warm: the send script is loaded on the connection; the next sends name it by SHA.
    await sender.send(channel, { type: 'm', n: 1 });
    expect(await receiveWithin(receiver, channel)).toEqual({ type: 'm', n: 1 });
    const counter = await countCommands(server);
    for (let n = 2; n < 7; n++) {
      const next = receiver.receive(channel);
      await sender.send(channel, { type: 'm', n });
      expect(await next).toEqual({ type: 'm', n });
    }
    const counts = await counter.stop();
    expect(counts.wireByCommand).toEqual({ evalsha: 5 });
    // Inside the script: TIME, HMGET, ZRANGE (empty queue), PUBLISH, HSET per send.
    expect(counts.luaByCommand).toEqual({ time: 5, hmget: 5, zrange: 5, publish: 5, hset: 5 });
  });

  describe('what a call costs inside the scripts (INFO counts these as commands too)', () => {
    // MONITOR counts every client's commands: close the layers of earlier tests first (one
    // letting go of a channel after its linger would be counted here).
    beforeEach(async () => {
      await Promise.all(layers.splice(0).map((l) => l.close()));
    });

    /** Polls (every 10 ms, at most 5 s) until `check` holds. */
    const until = (what: string, check: () => Promise<boolean>): Promise<true> =>
      waitFor(what, async () => ((await check()) ? true : undefined), 5000, 10);

    it('a channel no send ever reached through Redis is claimed and let go with two commands in each script', async () => {
      const prefix = `hp${uid()}`;
      const layer = make({ prefix });
      const other = make({ prefix });
      const keys = new RedisKeys(prefix);
      const redis = connect(server);
      try {
        /** Claims `channel` with a receive, then aborts it: the layer lets go at once. */
        const claimAndLetGo = async (channel: string): Promise<void> => {
          const abort = new AbortController();
          const receiving = layer.receive(channel, { signal: abort.signal }).catch(() => 'aborted');
          await until('the claim', async () => (await redis.hget(keys.state(channel), 'o')) !== null);
          abort.abort();
          expect(await receiving).toBe('aborted');
          await until('the release', async () => (await redis.exists(keys.state(channel))) === 0);
        };
        await claimAndLetGo(`warm-${uid()}`); // both scripts loaded on the connection: EVALSHA from here on
        const counter = await countCommands(server);
        const channel = `fresh-${uid()}`;
        await claimAndLetGo(channel);
        const counts = await counter.stop();
        expect(counts.wireByCommand).toEqual({ evalsha: 2, hget: expect.any(Number), exists: expect.any(Number) });
        // claim: HMGET o s, HSET o n (no PERSIST, drain or fence); release: HMGET o n w s, HDEL o n.
        expect(counts.luaByCommand).toEqual({ hmget: 2, hset: 1, hdel: 1 });
        // It leaves nothing behind, and the channel works as before.
        expect(await redis.exists(keys.state(channel), keys.queue(channel))).toBe(0);
        const next = layer.receive(channel);
        await other.send(channel, { type: 'after' });
        expect(await next).toEqual({ type: 'after' });
      } finally {
        redis.disconnect();
      }
    });

    it('what an instance buffered reaches the next receiver even after Redis lost the channel\'s state', async () => {
      // A release puts the buffer back in the queue. A channel without a sequence number counts as
      // fresh (claimed without a drain), so the release must write one when Redis lost it.
      const prefix = `hp${uid()}`;
      const [holder, sender, next] = [make({ prefix }), make({ prefix }), make({ prefix })];
      const keys = new RedisKeys(prefix);
      const redis = connect(server);
      try {
        const channel = `lost-${uid()}`;
        const first = holder.receive(channel);
        await sender.send(channel, { type: 'm', n: 0 });
        expect(await first).toEqual({ type: 'm', n: 0 });
        // No receive waits now, but the holder keeps the channel a while: these wait in its buffer.
        await sender.send(channel, { type: 'm', n: 1 });
        await sender.send(channel, { type: 'm', n: 2 });
        await new Promise((r) => setTimeout(r, 100));
        expect(await redis.exists(keys.queue(channel))).toBe(0);
        await redis.del(keys.state(channel)); // what a restart without persistence, or an eviction, does
        // The holder lets go after its linger and puts its buffer back.
        await until('the buffer put back', async () => (await redis.zcard(keys.queue(channel))) === 2);
        expect(await redis.pttl(keys.state(channel))).toBeGreaterThan(0);
        expect(await receiveWithin(next, channel)).toEqual({ type: 'm', n: 1 });
        expect(await receiveWithin(next, channel)).toEqual({ type: 'm', n: 2 });
        await expectNothing(next, channel);
      } finally {
        redis.disconnect();
      }
    });

    it('a roster join and a leave each read the roster once', async () => {
      const layer = make();
      const roster = `call-${uid()}`;
      const opts = { limit: 2, ttl: 60 };
      const warm = `warm-${uid()}`;
      await layer.rosterJoin(warm, 'x', 'd', opts); // the scripts loaded on the connection
      await layer.rosterLeave(warm, 'x');
      const joining = await countCommands(server);
      expect((await layer.rosterJoin(roster, 'a', 'da', opts)).joined).toBe(true);
      const second = await layer.rosterJoin(roster, 'b', 'db', opts);
      expect(second.entries.map((e) => [e.member, e.data])).toEqual([['a', 'da'], ['b', 'db']]);
      // join: HGETALL, HSET (member and join counter), PEXPIRE.
      expect((await joining.stop()).luaByCommand).toEqual({ hgetall: 2, hset: 2, pexpire: 2 });
      const leaving = await countCommands(server);
      expect((await layer.rosterLeave(roster, 'a'))?.map((e) => e.member)).toEqual(['b']);
      expect(await layer.rosterLeave(roster, 'b')).toEqual([]);
      // leave: HGETALL, then HDEL (or DEL for the last member).
      expect((await leaving.stop()).luaByCommand).toEqual({ hgetall: 2, hdel: 1, del: 1 });
      expect(await layer.rosterList(roster)).toEqual([]);
    });
  });

  describe('a send to a channel this instance holds, with a receive waiting, is handed over in-process', () => {
    /** Holds `channel` on `layer`: the first receive claims it (a message through Redis proves the claim done). */
    const hold = async (layer: RedisChannelLayer, channel: string): Promise<void> => {
      const first = layer.receive(channel);
      await layer.send(channel, { type: 'hold' });
      expect(await first).toEqual({ type: 'hold' });
    };

    it('without a Redis command, and the message arrives whole', async () => {
      const layer = make();
      const channel = `local-${uid()}`;
      await hold(layer, channel);
      const counter = await countCommands(server);
      for (let n = 0; n < 5; n++) {
        const next = layer.receive(channel);
        await layer.send(channel, { type: 'm', n, text: 'v=0\r\n', bytes: new Uint8Array([0, 13, 10, 255]) });
        expect(await next).toEqual({ type: 'm', n, text: 'v=0\r\n', bytes: new Uint8Array([0, 13, 10, 255]) });
      }
      const counts = await counter.stop();
      expect(counts.wire).toBe(0);
      await expectNothing(layer, channel);
    });

    it('a message of plain values goes as a copy: what the sender changes afterwards is not received', async () => {
      const layer = make();
      const channel = `copy-${uid()}`;
      await hold(layer, channel);
      const nested = { sdp: 'v=0\r\n', list: [1, 'two', null, true] };
      const message = { type: 'm', n: 7, nested };
      const next = layer.receive(channel);
      const sent = layer.send(channel, message);
      expect(sent).not.toBe(SETTLED); // settled, but for the caller to await (the receiver re-arms meanwhile)
      nested.list.push(5); // the sender changing its object afterwards changes nothing received
      const got = await next;
      expect(got).toEqual({ type: 'm', n: 7, nested: { sdp: 'v=0\r\n', list: [1, 'two', null, true] } });
      expect(got.nested).not.toBe(nested);
      await expectNothing(layer, channel);
    });

    it('not before a message the same instance sent it through Redis a moment earlier', async () => {
      // Issued in one tick: m1 finds no receive waiting and goes through Redis; m2 finds one
      // waiting, but must not overtake m1, which is still on its way back.
      for (let round = 0; round < 20; round++) {
        const layer = make();
        const channel = `order-${uid()}`;
        await hold(layer, channel);
        const r0 = layer.receive(channel);
        const sends = [layer.send(channel, { type: 'm', n: 0 }), layer.send(channel, { type: 'm', n: 1 })];
        const r1 = layer.receive(channel);
        sends.push(layer.send(channel, { type: 'm', n: 2 }));
        const r2 = layer.receive(channel);
        await Promise.all(sends);
        expect([await r0, await r1, await r2]).toEqual([0, 1, 2].map((n) => ({ type: 'm', n })));
        await expectNothing(layer, channel, 50);
      }
    });

    it('not before a group message the same instance sent just before', async () => {
      // groupSend resolves once its script ran; the copy it published to us may still be on the
      // wire. A send right after must not overtake it (checked over many rounds: it is a race).
      for (let round = 0; round < 30; round++) {
        const layer = make();
        const channel = `group-order-${uid()}`;
        const group = `g${uid()}`;
        await layer.groupAdd(group, channel);
        await hold(layer, channel);
        const first = layer.receive(channel);
        await layer.groupSend(group, { type: 'group' });
        const second = layer.receive(channel);
        await layer.send(channel, { type: 'direct' });
        expect([await first, await second]).toEqual([{ type: 'group' }, { type: 'direct' }]);
      }
    });

    it('and a burst from one instance to its own held channel arrives in order, each once', async () => {
      const layer = make({ capacity: 1000 });
      const channel = `burst-${uid()}`;
      await hold(layer, channel);
      const got: number[] = [];
      const n = 400;
      const receiving = (async () => {
        while (got.length < n) got.push((await receiveWithin(layer, channel)).n as number);
      })();
      // Some find the receive waiting, some do not (the loop re-arms it a microtask later).
      for (let i = 0; i < n; i++) {
        void layer.send(channel, { type: 'm', n: i });
        if (i % 7 === 0) await new Promise((r) => setImmediate(r));
      }
      await receiving;
      expect(got).toEqual(Array.from({ length: n }, (_, i) => i));
      await expectNothing(layer, channel);
    });
  });

  it('a held channel whose queue holds only expired messages takes the publish path again', async () => {
    const prefix = `hp${uid()}`;
    const sender = make({ prefix, expiry: 1 });
    const receiver = make({ prefix, expiry: 1 });
    const channel = `expired-${uid()}`;
    await sender.send(channel, { type: 'old' }); // stored: nobody holds the channel yet
    await new Promise((r) => setTimeout(r, 1200));
    const next = receiver.receive(channel);
    await sender.send(channel, { type: 'new' });
    expect(await next).toEqual({ type: 'new' });
    await expectNothing(receiver, channel);
  });
});
