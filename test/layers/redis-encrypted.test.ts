/**
 * The Redis layer with symmetricEncryptionKeys: the conformance suite, ciphertext at rest, and
 * key rotation (the first key seals, every key opens; a layer without the key cannot read).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisChannelLayer, UndecryptableMessage, type RedisLayerOptions } from '../../src/layers/index.js';
import { connect, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { describeChannelLayer, receiveWithin, uid } from './conformance.js';

describe.skipIf(!hasRedisServer())('Redis with encryption', () => {
  let server: RedisServer;
  const layers: RedisChannelLayer[] = [];
  const make = (options: RedisLayerOptions): RedisChannelLayer => {
    const layer = new RedisChannelLayer({ hosts: server.url, ...options });
    layers.push(layer);
    return layer;
  };

  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    await Promise.all(layers.map((l) => l.close()));
    await server?.stop();
  });

  describeChannelLayer('Redis (encrypted)', {
    make: (options) => new RedisChannelLayer({ hosts: server.url, symmetricEncryptionKeys: ['conformance key'], ...options } as RedisLayerOptions),
    shared: true,
  });

  /** Every stored queue member under a prefix, as raw bytes. */
  const stored = async (prefix: string): Promise<Buffer[]> => {
    const admin = connect(server);
    try {
      const keys = await admin.keys(`${prefix}:q:*`);
      return (await Promise.all(keys.map((k) => admin.zrangeBuffer(k, 0, -1)))).flat();
    } finally {
      admin.disconnect();
    }
  };

  it('what Redis stores is ciphertext, not the message', async () => {
    const secret = 'the-plaintext-marker-that-must-not-appear';
    const [plainPrefix, sealedPrefix] = [`pl${uid()}`, `se${uid()}`];
    await make({ prefix: plainPrefix }).send('vault', { type: 'x', secret });
    await make({ prefix: sealedPrefix, symmetricEncryptionKeys: ['k1'] }).send('vault', { type: 'x', secret });
    const [plain, sealed] = [await stored(plainPrefix), await stored(sealedPrefix)];
    expect(plain.length).toBe(1);
    expect(sealed.length).toBe(1);
    expect(plain[0]!.includes(secret)).toBe(true); // the control: without keys it is readable
    expect(sealed[0]!.includes(secret)).toBe(false);
    expect(await receiveWithin(make({ prefix: sealedPrefix, symmetricEncryptionKeys: ['k1'] }), 'vault')).toEqual({ type: 'x', secret });
  });

  it('keys rotate: old messages still open with the old key listed second; a layer without it cannot read', async () => {
    const prefix = `rot${uid()}`;
    const old = make({ prefix, symmetricEncryptionKeys: ['old key'] });
    await old.send('rotating', { type: 'm', n: 1 });
    const rotated = make({ prefix, symmetricEncryptionKeys: ['new key', 'old key'] });
    await rotated.send('rotating', { type: 'm', n: 2 });
    // The rotated layer reads both: n=1 sealed with the old key, n=2 with the new one.
    expect(await receiveWithin(rotated, 'rotating')).toEqual({ type: 'm', n: 1 });
    expect(await receiveWithin(rotated, 'rotating')).toEqual({ type: 'm', n: 2 });
    // A layer that has only the new key cannot open an old message: it says so and moves on.
    await old.send('rotating', { type: 'm', n: 3 });
    await rotated.send('rotating', { type: 'm', n: 4 });
    const newOnly = make({ prefix, symmetricEncryptionKeys: ['new key'] });
    await expect(receiveWithin(newOnly, 'rotating')).rejects.toBeInstanceOf(UndecryptableMessage);
    expect(await receiveWithin(newOnly, 'rotating')).toEqual({ type: 'm', n: 4 });
    // Nor can a layer with a wrong key, or with none, read sealed messages.
    await rotated.send('rotating', { type: 'm', n: 5 });
    await expect(receiveWithin(make({ prefix, symmetricEncryptionKeys: ['wrong'] }), 'rotating')).rejects.toThrow(/could not be decrypted/);
    await rotated.send('rotating', { type: 'm', n: 6 });
    await expect(receiveWithin(make({ prefix }), 'rotating')).rejects.toThrow();
  });
});
