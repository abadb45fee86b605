/**
 * The channel layer conformance suite (test/layers/conformance.ts) on a Redis Cluster: the same
 * tests the InMemory and single-Redis layers pass, with the layer built from `clusterHosts`.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { RedisChannelLayer, type RedisLayerOptions } from '../../src/layers/index.js';
import { hasRedisCluster, startRedisCluster, type RedisCluster } from '../helpers/redis-cluster.js';
import { describeChannelLayer } from '../layers/conformance.js';

if (!hasRedisCluster) console.warn('\n*** SKIPPING test/deploy/cluster-conformance.test.ts: redis-server and redis-cli are not on PATH. ***\n');

let cluster: RedisCluster | undefined;

describe.skipIf(!hasRedisCluster)('Redis Cluster (three masters, three replicas)', () => {
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicas: 1 });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  describeChannelLayer('Redis Cluster', {
    make: (options) => new RedisChannelLayer({ clusterHosts: cluster!.urls.slice(0, 3), ...options } as RedisLayerOptions),
    shared: true,
  });
});
