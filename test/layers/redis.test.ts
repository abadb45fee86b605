/**
 * The Redis layer on one real redis-server: the conformance suite, then what only Redis has:
 * restarts and dropped connections, dead workers, command counts, connection options.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { InvalidChannelLayerError, RedisChannelLayer, type Message, type RedisLayerOptions } from '../../src/layers/index.js';
import { connect, countCommands, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { describeChannelLayer, expectNothing, receiveWithin, sleep, uid } from './conformance.js';
import { runChild } from './support/child-layer.js';

const redisAvailable = hasRedisServer();

describe.skipIf(!redisAvailable)('Redis (one host)', () => {
  let server: RedisServer;
  const layers: RedisChannelLayer[] = [];
  const make = (options: RedisLayerOptions = {}): RedisChannelLayer => {
    const layer = new RedisChannelLayer({ hosts: server.url, prefix: `r${uid()}`, ...options });
    layers.push(layer);
    return layer;
  };
  /** Receives on `channel` until aborted, collecting what arrives. */
  const collect = (layer: RedisChannelLayer, channel: string, got: Message[], signal: AbortSignal): Promise<void> =>
    (async () => {
      for (;;) {
        const m = await layer.receive(channel, { signal }).catch(() => undefined);
        if (!m) return;
        got.push(m);
      }
    })();
  const until = async (what: () => boolean, ms = 10_000): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!what()) {
      if (Date.now() > deadline) throw new Error('timed out waiting');
      await sleep(10);
    }
  };

  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterEach(async () => {
    await Promise.all(layers.splice(0).map((l) => l.close()));
  });
  afterAll(async () => {
    await server?.stop();
  });

  describeChannelLayer('Redis', {
    make: (options) => new RedisChannelLayer({ hosts: server.url, ...options } as RedisLayerOptions),
    shared: true,
  });

  describe('commands sent to Redis', () => {
    it('none at all while idle, however many receives wait', async () => {
      const prefix = `idle${uid()}`;
      const [a, b] = [make({ prefix }), make({ prefix })];
      const stop = new AbortController();
      const channels = [await a.newChannel(), await a.newChannel(), await a.newChannel(), await b.newChannel(), await b.newChannel()];
      const named = ['idle.one', 'idle.two'];
      const waiting = [
        ...channels.map((c, i) => (i < 3 ? a : b).receive(c, { signal: stop.signal }).catch(() => undefined)),
        ...named.map((c) => a.receive(c, { signal: stop.signal }).catch(() => undefined)),
      ];
      await a.groupAdd('idle-group', channels[0]!);
      await sleep(300);
      const counter = await countCommands(server);
      await sleep(3000);
      const counts = await counter.stop();
      console.log(`[layer figures] Redis commands over 3 s idle with ${waiting.length} receives waiting: ${counts.wire} (+${counts.lua} inside scripts)`);
      expect(counts).toMatchObject({ wire: 0, lua: 0 });
      // They were really waiting: a message still reaches one.
      await b.send(named[0]!, { type: 'wake' });
      expect(await waiting[5]).toEqual({ type: 'wake' });
      stop.abort();
      await Promise.all(waiting);
    });

    it('one per send and one per group send, whatever the group size (50 members)', async () => {
      const prefix = `one${uid()}`;
      const [a, b, s] = [make({ prefix }), make({ prefix }), make({ prefix })];
      const members = [
        ...(await Promise.all(Array.from({ length: 20 }, () => a.newChannel()))),
        ...(await Promise.all(Array.from({ length: 20 }, () => b.newChannel()))),
        ...Array.from({ length: 10 }, (_, i) => `stored.${i}`),
      ];
      for (const m of members) await s.groupAdd('big', m);
      await s.send('warm.up', { type: 'warm' }); // the first call on a connection sends the script source
      await s.groupSend('warm-up', { type: 'warm' });
      const counter = await countCommands(server);
      await s.groupSend('big', { type: 'to.all' });
      const afterGroup = await counter.stop();
      const counter2 = await countCommands(server);
      await s.send(members[0]!, { type: 'one' });
      const afterSend = await counter2.stop();
      console.log(`[layer figures] groupSend to 50 members: ${afterGroup.wire} command (${afterGroup.lua} inside the script); send: ${afterSend.wire}`);
      expect(afterGroup.wire).toBe(1);
      expect(afterGroup.wireByCommand).toEqual({ evalsha: 1 });
      expect(afterSend.wire).toBe(1);
      for (const m of members) {
        const owner = members.indexOf(m) < 20 ? a : members.indexOf(m) < 40 ? b : s;
        expect(await receiveWithin(owner, m)).toEqual({ type: 'to.all' });
      }
    });

    it('two consumers on two instances, a group, 20 group sends, leave and stop: at most 40 commands', async () => {
      const counter = await countCommands(server);
      const prefix = `flow${uid()}`;
      const [a, b] = [make({ prefix }), make({ prefix })];
      const [ca, cb] = [await a.newChannel(), await b.newChannel()];
      const stop = new AbortController();
      const gotA: Message[] = [];
      const gotB: Message[] = [];
      const loops = [collect(a, ca, gotA, stop.signal), collect(b, cb, gotB, stop.signal)];
      await a.groupAdd('call.X', ca);
      await b.groupAdd('call.X', cb);
      for (let i = 0; i < 10; i++) {
        await a.groupSend('call.X', { type: 'signal', from: 'a', i });
        await b.groupSend('call.X', { type: 'signal', from: 'b', i });
      }
      await until(() => gotA.length === 20 && gotB.length === 20);
      await a.groupDiscard('call.X', ca);
      await b.groupDiscard('call.X', cb);
      stop.abort();
      await Promise.all(loops);
      await a.close();
      await b.close();
      const counts = await counter.stop();
      console.log(`[layer figures] join, 20 group sends, leave, stop (two instances): ${counts.wire} commands ${JSON.stringify(counts.wireByCommand)} (+${counts.lua} inside scripts); channels_redis: 306`);
      expect(gotA.map((m) => `${m.from}${m.i}`)).toEqual(gotB.map((m) => `${m.from}${m.i}`));
      expect(counts.wire).toBeLessThanOrEqual(40);
    });
  });

  describe('drops and restarts', () => {
    it('a Redis restart mid-stream: every message is delivered exactly once, in order; groups and rosters are put back', async () => {
      const own = await startRedisServer();
      const receiver = new RedisChannelLayer({ hosts: own.url });
      const sender = new RedisChannelLayer({ hosts: own.url });
      const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
      try {
        const specific = await receiver.newChannel();
        const named = 'restart.inbox';
        await receiver.groupAdd('restart-group', specific);
        await receiver.rosterJoin('restart-roster', 'first', 'a', { limit: 3, ttl: 600 });
        await receiver.rosterJoin('restart-roster', 'second', 'b', { limit: 3, ttl: 600 });
        await receiver.rosterUpdate('restart-roster', 'second', 'b2');
        await receiver.rosterJoin('restart-roster', 'gone', 'c', { limit: 3, ttl: 600 });
        await receiver.rosterLeave('restart-roster', 'gone');
        const stop = new AbortController();
        const got = { named: [] as Message[], specific: [] as Message[] };
        const loops = [collect(receiver, named, got.named, stop.signal), collect(receiver, specific, got.specific, stop.signal)];
        const sends: Array<Promise<void>> = [];
        const total = 60;
        for (let i = 0; i < total; i++) {
          if (i === 20) await own.stop();
          if (i === 40) await own.start();
          sends.push(sender.send(named, { type: 'm', i }), sender.send(specific, { type: 'm', i }));
          await sleep(25);
        }
        await Promise.all(sends);
        await until(() => got.named.length >= total && got.specific.length >= total, 20_000);
        await sleep(300);
        const expected = Array.from({ length: total }, (_, i) => i);
        expect(got.named.map((m) => m.i)).toEqual(expected);
        expect(got.specific.map((m) => m.i)).toEqual(expected);
        // The membership made before the restart was put back.
        await sender.groupSend('restart-group', { type: 'm', i: 'after' });
        await until(() => got.specific.length === total + 1);
        expect(got.specific.at(-1)).toEqual({ type: 'm', i: 'after' });
        // So were the roster members this instance joined, in join order, with their latest data.
        expect((await sender.rosterList('restart-roster')).map((e) => [e.member, e.data])).toEqual([['first', 'a'], ['second', 'b2']]);
        stop.abort();
        await Promise.all(loops);
        expect(warn.mock.calls.flat().join('\n')).not.toMatch(/password/i);
      } finally {
        warn.mockRestore();
        await receiver.close();
        await sender.close();
        await own.stop();
      }
    });

    it("a dropped subscriber connection: what was sent meanwhile is kept and delivered after", async () => {
      const prefix = `drop${uid()}`;
      const [receiver, sender] = [make({ prefix }), make({ prefix })];
      const specific = await receiver.newChannel();
      const stop = new AbortController();
      const got = { named: [] as Message[], specific: [] as Message[] };
      const loops = [collect(receiver, 'drop.inbox', got.named, stop.signal), collect(receiver, specific, got.specific, stop.signal)];
      await sender.send('drop.inbox', { type: 'm', i: 0 });
      await sender.send(specific, { type: 'm', i: 0 });
      await until(() => got.named.length === 1 && got.specific.length === 1);
      const admin = connect(server);
      const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
      try {
        await admin.client('KILL', 'TYPE', 'pubsub');
        for (let i = 1; i <= 5; i++) {
          await sender.send('drop.inbox', { type: 'm', i });
          await sender.send(specific, { type: 'm', i });
        }
        await until(() => got.named.length === 6 && got.specific.length === 6);
      } finally {
        warn.mockRestore();
        admin.disconnect();
      }
      expect(got.named.map((m) => m.i)).toEqual([0, 1, 2, 3, 4, 5]);
      expect(got.specific.map((m) => m.i)).toEqual([0, 1, 2, 3, 4, 5]);
      stop.abort();
      await Promise.all(loops);
    });

    it('a worker killed (SIGKILL) while holding a named channel: the next receiver gets what came after, in order', async () => {
      const prefix = `kill${uid()}`;
      const child = runChild(`
        import { RedisChannelLayer } from './layers/index.js';
        const [url, prefix] = process.argv.slice(2);
        const layer = new RedisChannelLayer({ hosts: url, prefix });
        console.log('ready');
        for (;;) console.log(JSON.stringify(await layer.receive('worker.inbox')));
      `, [server.url, prefix]);
      await child.waitFor(/^ready$/);
      const sender = make({ prefix });
      await sender.send('worker.inbox', { type: 'm', i: 0 });
      await child.waitFor(/"i":0/);
      child.proc.kill('SIGKILL');
      await child.exited;
      await sleep(200); // Redis notices the dead connection
      for (const i of [1, 2, 3]) await sender.send('worker.inbox', { type: 'm', i });
      const next = make({ prefix });
      for (const i of [1, 2, 3]) expect(await receiveWithin(next, 'worker.inbox')).toEqual({ type: 'm', i });
      await expectNothing(next, 'worker.inbox');
    });

    it('a process exits by itself after close(): no connection or timer left', async () => {
      const child = runChild(`
        import { RedisChannelLayer } from './layers/index.js';
        const layer = new RedisChannelLayer({ hosts: process.argv[2], prefix: 'exit' + process.pid });
        const ch = await layer.newChannel();
        await layer.groupAdd('g', ch);
        await layer.groupSend('g', { type: 'x' });
        await layer.receive(ch);
        await layer.send('exit.named', { type: 'y' });
        await layer.receive('exit.named');
        const ac = new AbortController();
        const p = layer.receive('exit.other', { signal: ac.signal }).catch(() => {});
        setTimeout(() => ac.abort(), 20);
        await p;
        await layer.receive('exit.pending', { signal: AbortSignal.timeout(50) }).catch(() => {});
        await layer.close();
        console.log('closed');
      `, [server.url]);
      await child.waitFor(/^closed$/);
      const code = await Promise.race([child.exited, sleep(5000).then(() => 'still running')]);
      if (code === 'still running') child.proc.kill('SIGKILL');
      expect(code).toBe(0);
    });
  });

  describe('health', () => {
    it('isHealthy() is false while Redis is down, true once the layer is connected again', async () => {
      const own = await startRedisServer();
      const layer = new RedisChannelLayer({ hosts: own.url });
      const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
      try {
        await until(() => layer.isHealthy());
        await own.stop();
        await until(() => !layer.isHealthy());
        await own.start();
        await until(() => layer.isHealthy());
        await layer.close();
        expect(layer.isHealthy()).toBe(false);
      } finally {
        warn.mockRestore();
        await layer.close();
        await own.stop();
      }
    });
  });

  describe('connection options', () => {
    it('refuses bad hosts without ever repeating a password', () => {
      const bad = (options: RedisLayerOptions): Error => {
        try {
          new RedisChannelLayer(options);
        } catch (err) {
          return err as Error;
        }
        throw new Error('no error');
      };
      for (const options of [
        { hosts: 'http://user:hunter22@example.com' },
        { hosts: 'redis://user:hunter22@[broken' },
        { hosts: ['redis://:hunter22@host/notanumber'] },
        { hosts: [] },
        { hosts: 'redis://a', clusterHosts: ['redis://b'] },
        { symmetricEncryptionKeys: 'hunter22' as never },
        { symmetricEncryptionKeys: [''] },
        { tls: 'yes' as never },
        { clusterHosts: [] },
      ]) {
        const err = bad(options);
        expect(err).toBeInstanceOf(InvalidChannelLayerError);
        expect(err.message).not.toContain('hunter22');
      }
    });

    it('connects with a password and a database number from the URL', async () => {
      const secured = await startRedisServer({ args: ['--requirepass', 'sesame-open-77'] });
      const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
      try {
        const good = new RedisChannelLayer({ hosts: `redis://:sesame-open-77@127.0.0.1:${secured.port}/3` });
        await good.send('stored.here', { type: 'x' });
        const admin = connect(`redis://:sesame-open-77@127.0.0.1:${secured.port}/3`);
        expect(await admin.dbsize()).toBeGreaterThan(0);
        await admin.select(0);
        expect(await admin.dbsize()).toBe(0);
        admin.disconnect();
        expect(await receiveWithin(good, 'stored.here')).toEqual({ type: 'x' });
        await good.close();
        const wrong = new RedisChannelLayer({ hosts: `redis://:not-the-password-99@127.0.0.1:${secured.port}` });
        await expect(wrong.receive('x', { signal: AbortSignal.timeout(500) })).rejects.toThrow();
        await wrong.close();
        const said = warn.mock.calls.flat().join('\n');
        expect(said).toMatch(/WRONGPASS|NOAUTH|invalid/i);
        expect(said).not.toContain('not-the-password-99');
        expect(said).not.toContain('sesame-open-77');
      } finally {
        warn.mockRestore();
        await secured.stop();
      }
    });
  });
});
