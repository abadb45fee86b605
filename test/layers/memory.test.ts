import { describe, expect, it } from 'vitest';
import { RESOLVED } from '../../src/consumers/index.js';
import { InMemoryChannelLayer, InvalidChannelLayerError, RedisChannelLayer, SETTLED, createChannelLayer } from '../../src/layers/index.js';
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

describe('InMemory send', () => {
  it('returns the shared SETTLED promise when it handed the message over, and a rejection when it could not', async () => {
    const layer = new InMemoryChannelLayer({ capacity: 1 });
    try {
      expect(layer.send('inbox.a', { type: 'm', n: 1 })).toBe(SETTLED); // queued
      const received = layer.receive('inbox.b');
      expect(layer.send('inbox.b', { type: 'm', n: 2 })).toBe(SETTLED); // handed to a waiting receive
      expect(await received).toEqual({ type: 'm', n: 2 });
      await expect(layer.send('inbox.b', { type: 'm', n: new Map([[1, 2]]) })).resolves.toBeUndefined(); // through the codec: awaited
      await expect(layer.send('inbox.a', { type: 'm', n: 3 })).rejects.toMatchObject({ code: 'channel-full' });
      await expect(layer.send('bad name', { type: 'm' })).rejects.toThrow(TypeError);
      await expect(layer.send('inbox.c', { type: 'm', f: () => 1 } as never)).rejects.toThrow(/function/);
      expect(RESOLVED).toBe(SETTLED); // a consumer handler may return what the send gave it
    } finally {
      await layer.close();
    }
  });
});
