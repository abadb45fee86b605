/**
 * The Redis layer sharded over two redis-servers: the conformance suite, and proof that every
 * send reaches its receiver (channels_redis#221 hashed the full name of a process-specific
 * channel, so a direct send landed on a shard nobody read).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisChannelLayer, type RedisLayerOptions } from '../../src/layers/index.js';
import { connect, countCommands, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { describeChannelLayer, receiveWithin, uid } from './conformance.js';

describe.skipIf(!hasRedisServer())('Redis sharded over two hosts', () => {
  let servers: RedisServer[] = [];
  const hosts = (): string[] => servers.map((s) => s.url);

  beforeAll(async () => {
    servers = await Promise.all([startRedisServer(), startRedisServer()]);
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  describeChannelLayer('Redis (two shards)', {
    make: (options) => new RedisChannelLayer({ hosts: hosts(), ...options } as RedisLayerOptions),
    shared: true,
  });

  it('spreads channels, groups and rosters over both hosts, and every send reaches its receiver', async () => {
    const prefix = `sh${uid()}`;
    const [a, b] = [new RedisChannelLayer({ hosts: hosts(), prefix }), new RedisChannelLayer({ hosts: hosts(), prefix })];
    try {
      const specific = await Promise.all(Array.from({ length: 20 }, (_, i) => a.newChannel(`p${i}`)));
      for (const [i, ch] of specific.entries()) await b.send(ch, { type: 'direct', i });
      for (const [i, ch] of specific.entries()) expect(await receiveWithin(a, ch)).toEqual({ type: 'direct', i });
      for (let i = 0; i < 20; i++) {
        await b.send(`stored.${i}`, { type: 'kept', i });
        await b.groupAdd(`group-${i}`, specific[i]!);
        await b.rosterJoin(`roster-${i}`, 'p', 'd', { limit: 1, ttl: 60 });
      }
      for (const server of servers) {
        const admin = connect(server);
        const keys = await admin.keys(`${prefix}:*`);
        admin.disconnect();
        expect(keys.filter((k) => k.startsWith(`${prefix}:q:`)).length).toBeGreaterThan(0);
        expect(keys.filter((k) => k.startsWith(`${prefix}:g:`)).length).toBeGreaterThan(0);
        expect(keys.filter((k) => k.startsWith(`${prefix}:r:`)).length).toBeGreaterThan(0);
      }
      for (let i = 0; i < 20; i++) {
        expect(await receiveWithin(a, `stored.${i}`)).toEqual({ type: 'kept', i });
        await a.groupSend(`group-${i}`, { type: 'grouped', i });
        expect(await receiveWithin(a, specific[i]!)).toEqual({ type: 'grouped', i });
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a group send is one command per host its members live on', async () => {
    const prefix = `gs${uid()}`;
    const [a, s] = [new RedisChannelLayer({ hosts: hosts(), prefix }), new RedisChannelLayer({ hosts: hosts(), prefix })];
    try {
      const members = await Promise.all(Array.from({ length: 30 }, () => a.newChannel()));
      for (const m of members) await s.groupAdd('spread', m);
      await s.groupSend('spread', { type: 'warm' });
      for (const m of members) await receiveWithin(a, m);
      const counters = await Promise.all(servers.map((srv) => countCommands(srv)));
      await s.groupSend('spread', { type: 'counted' });
      const counts = await Promise.all(counters.map((c) => c.stop()));
      const total = counts.reduce((n, c) => n + c.wire, 0);
      expect(total).toBeGreaterThanOrEqual(1);
      expect(total).toBeLessThanOrEqual(2);
      for (const m of members) expect(await receiveWithin(a, m)).toEqual({ type: 'counted' });
    } finally {
      await a.close();
      await s.close();
    }
  });
});
