import { describe, expect, it } from 'vitest';
import { RESOLVED } from '../../src/consumers/index.js';
import { InMemoryChannelLayer, InvalidChannelLayerError, RedisChannelLayer, SETTLED, createChannelLayer, type Message, type MessageSink } from '../../src/layers/index.js';
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

describe('InMemory receives waiting on one channel', () => {
  /** A sink that records what it was handed, and how it failed. */
  function sink(name: string, log: string[]): MessageSink {
    return { deliver: (m: Message) => log.push(`${name}:${String(m.n)}`), fail: (err: unknown) => log.push(`${name}:failed ${(err as Error).name}`) };
  }

  it('are served oldest first; one withdrawn from the middle takes nothing; closing fails the rest', async () => {
    const layer = new InMemoryChannelLayer();
    const ch = await layer.newChannel();
    const log: string[] = [];
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((n) => sink(n, log)) as [MessageSink, MessageSink, MessageSink, MessageSink];
    for (const s of [a, b, c, d]) layer.receiveInto(ch, s);
    expect(layer.cancelReceive(ch, b)).toBe(true);
    expect(layer.cancelReceive(ch, b)).toBe(false);
    await layer.send(ch, { type: 'm', n: 1 });
    await layer.send(ch, { type: 'm', n: 2 });
    expect(log).toEqual(['a:1', 'c:2']);
    expect(layer.cancelReceive(ch, a)).toBe(false); // handed its message already
    // Messages wait when nobody receives, and go out oldest first.
    await layer.send(ch, { type: 'm', n: 3 });
    expect(log).toEqual(['a:1', 'c:2', 'd:3']);
    await layer.send(ch, { type: 'm', n: 4 });
    await layer.send(ch, { type: 'm', n: 5 });
    layer.receiveInto(ch, a);
    layer.receiveInto(ch, c);
    await Promise.resolve();
    expect(log.slice(3)).toEqual(['a:4', 'c:5']);
    layer.receiveInto(ch, b);
    await layer.close();
    expect(log.slice(5)).toEqual(['b:failed LayerClosed']);
  });

  it('keep no Queue for a channel with one pending receive and no message: only while messages or receives queue up', async () => {
    const layer = new InMemoryChannelLayer();
    const entries = (layer as unknown as { queues: Map<string, unknown> }).queues;
    const ch = await layer.newChannel();
    const log: string[] = [];
    const [a, b] = ['a', 'b'].map((n) => sink(n, log)) as [MessageSink, MessageSink];
    layer.receiveInto(ch, a);
    expect(entries.get(ch)).toBe(a); // the idle channel: its sink, nothing else
    await layer.send(ch, { type: 'm', n: 1 });
    expect(typeof entries.get(ch)).toBe('symbol'); // taken: the entry stays for the next receive
    await layer.send(ch, { type: 'm', n: 2 }); // nobody receives: it waits in a Queue
    expect(entries.get(ch)).not.toBe(a);
    expect(entries.get(ch)).toBeDefined();
    layer.receiveInto(ch, a);
    expect(entries.has(ch)).toBe(false);
    layer.receiveInto(ch, a);
    layer.receiveInto(ch, b); // two waiting: a Queue, in order
    expect(entries.get(ch)).not.toBe(a);
    expect(layer.cancelReceive(ch, a)).toBe(true);
    expect(entries.get(ch)).toBe(b); // one left: its sink again
    await layer.flush();
    expect(entries.get(ch)).toBe(b);
    await layer.send(ch, { type: 'm', n: 3 });
    expect(log).toEqual(['a:1', 'a:2', 'b:3']);
    layer.receiveInto(ch, a);
    expect(layer.cancelReceive(ch, a)).toBe(true);
    expect(entries.has(ch)).toBe(false);
    layer.receiveInto(ch, b);
    await layer.close();
    expect(log.at(-1)).toBe('b:failed LayerClosed');
  });

  it("keep a channel's map entry from a message to the receive after it, and sweep it if that receive never comes", async () => {
    const layer = new InMemoryChannelLayer({ expiry: 0.02 }); // sweeps every 10 ms
    const entries = (layer as unknown as { queues: Map<string, unknown> }).queues;
    const log: string[] = [];
    const [x, y] = [await layer.newChannel(), await layer.newChannel()];
    layer.receiveInto(x, sink('x', log));
    layer.receiveInto(y, sink('y', log));
    for (let n = 1; n <= 3; n++) {
      await layer.send(x, { type: 'm', n });
      layer.receiveInto(x, sink('x', log)); // as a consumer does after each message
    }
    // The entry was overwritten in place each time, not deleted and added again (which would move it after y).
    expect([...entries.keys()]).toEqual([x, y]);
    expect(log).toEqual(['x:1', 'x:2', 'x:3']);
    await layer.send(y, { type: 'm', n: 4 }); // y's reader never comes back
    expect(entries.has(y)).toBe(true);
    await new Promise((r) => setTimeout(r, 60));
    expect(entries.has(y)).toBe(false);
    expect(entries.has(x)).toBe(true); // a pending receive is kept
    await layer.send(y, { type: 'm', n: 5 }); // and y still works: the message waits for a receive
    layer.receiveInto(y, sink('y', log));
    expect(log.at(-1)).toBe('y:5');
    await layer.close();
  });
});
