/**
 * The Redis layer on a Redis Cluster (three masters): the conformance suite through `clusterHosts`.
 * Every script touches keys of one slot (hash tags); group sends read the group, then send to each
 * member by its own slot; the layer listens on every master, since a cluster PUBLISH counts only
 * the subscribers of the node it ran on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisChannelLayer, type RedisLayerOptions } from '../../src/layers/index.js';
import { hasRedisCluster, startRedisCluster, type RedisCluster } from '../helpers/redis-cluster.js';
import { hasRedisServer } from '../helpers/redis-server.js';
import { describeChannelLayer, receiveWithin, uid } from './conformance.js';

describe.skipIf(!hasRedisServer() || !hasRedisCluster)('Redis Cluster', () => {
  let cluster: RedisCluster;

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicas: 0 });
    await cluster.waitUntilHealthy();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  describeChannelLayer('Redis Cluster', {
    make: (options) => new RedisChannelLayer({ clusterHosts: cluster.urls, ...options } as RedisLayerOptions),
    shared: true,
  });

  it('keys of many channels spread over the masters, and every send still arrives', async () => {
    const prefix = `cl${uid()}`;
    const [a, b] = [new RedisChannelLayer({ clusterHosts: cluster.urls, prefix }), new RedisChannelLayer({ clusterHosts: cluster.urls, prefix })];
    try {
      for (let i = 0; i < 30; i++) await b.send(`spread.${i}`, { type: 'm', i });
      const holders = new Set<number>();
      for (let i = 0; i < 30; i++) holders.add(await cluster.keySlot(`${prefix}:q:{spread.${i}}`));
      expect(holders.size).toBeGreaterThan(1);
      for (let i = 0; i < 30; i++) expect(await receiveWithin(a, `spread.${i}`)).toEqual({ type: 'm', i });
    } finally {
      await a.close();
      await b.close();
    }
  });
});
