/**
 * The Redis layer over TLS (rediss://) with certificate verification on: the conformance suite
 * with the test CA given as the `tls.ca` option, and a refusal without it.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { RedisChannelLayer, type RedisLayerOptions } from '../../src/layers/index.js';
import { hasOpenssl, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { describeChannelLayer, receiveWithin, sleep } from './conformance.js';

const available = hasRedisServer() && hasOpenssl();
if (hasRedisServer() && !hasOpenssl()) console.warn('\n*** SKIPPING the Redis TLS suite: openssl is not on PATH. ***\n');

describe.skipIf(!available)('Redis over TLS', () => {
  let server: RedisServer;

  beforeAll(async () => {
    server = await startRedisServer({ tls: true });
  });
  afterAll(async () => {
    await server?.stop();
  });

  describeChannelLayer('Redis (rediss://)', {
    make: (options) => new RedisChannelLayer({ hosts: server.url, tls: { ca: server.tlsCa }, ...options } as RedisLayerOptions),
    shared: true,
  });

  it('the URL is rediss:// and a layer trusting the CA works', async () => {
    expect(server.url).toMatch(/^rediss:\/\//);
    const layer = new RedisChannelLayer({ hosts: server.url, tls: { ca: server.tlsCa } });
    await layer.send('tls.check', { type: 'secure' });
    expect(await receiveWithin(layer, 'tls.check')).toEqual({ type: 'secure' });
    await layer.close();
  });

  it('without the CA the certificate is refused (verification stays on)', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const layer = new RedisChannelLayer({ hosts: server.url });
    try {
      const outcome = await Promise.race([
        layer.send('tls.refused', { type: 'x' }).then(() => 'sent', () => 'failed'),
        sleep(1000).then(() => 'waiting'),
      ]);
      expect(outcome).not.toBe('sent');
      expect(warn.mock.calls.flat().join('\n')).toMatch(/certificate|self.signed/i);
    } finally {
      await layer.close();
      warn.mockRestore();
    }
  });
});
