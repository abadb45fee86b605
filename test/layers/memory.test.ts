import { describe, expect, it } from 'vitest';
import { InMemoryChannelLayer, InvalidChannelLayerError, RedisChannelLayer, createChannelLayer } from '../../src/layers/index.js';
import { describeChannelLayer } from './conformance.js';

describeChannelLayer('InMemory', { make: (options) => new InMemoryChannelLayer(options), shared: false });

describe('createChannelLayer', () => {
  it('builds InMemory by default, and Redis when hosts are given or backend says so', async () => {
    const memory = createChannelLayer();
    expect(memory.kind).toBe('memory');
    expect(memory).toBeInstanceOf(InMemoryChannelLayer);
    await memory.close();
    for (const options of [{ hosts: 'redis://127.0.0.1:1' }, { backend: 'redis' as const, hosts: ['redis://127.0.0.1:1'] }]) {
      const redis = createChannelLayer(options);
      expect(redis.kind).toBe('redis');
      expect(redis).toBeInstanceOf(RedisChannelLayer);
      await redis.close();
    }
  });

  it('refuses an unknown backend and, for InMemory, Redis-only options', () => {
    expect(() => createChannelLayer({ backend: 'kafka' } as never)).toThrow(InvalidChannelLayerError);
    expect(() => createChannelLayer({ backend: 'memory', hosts: 'redis://x' } as never)).toThrow(/hosts/);
  });
});
