import { describe, expect, it } from 'vitest';
import { ConfigError, describeConfig, loadConfig, redactUrl } from '../../src/config.js';

describe('configuration from the environment', () => {
  it('has working defaults with nothing set: port 10000 on 0.0.0.0, 1-to-1 calls, InMemory', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: 10_000, host: '0.0.0.0', maxPeers: 2, resumeGrace: 30, rateLimit: 50, rateBurst: 100, maxMessageBytes: 65_536, webConcurrency: 1 });
    expect(c.redisUrl).toBeUndefined();
    expect(c.stunUrls).toEqual(['stun:stun.l.google.com:19302']);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it.each([
    [{ PORT: 'abc' }, /PORT must be a whole number/],
    [{ PORT: '70000' }, /PORT must be a whole number from 0 to 65535/],
    [{ MAX_PEERS: '1' }, /MAX_PEERS/],
    [{ RESUME_GRACE: '-3' }, /RESUME_GRACE/],
    [{ REDIS_URL: 'http://example.com' }, /REDIS_URL must start with redis:\/\/ or rediss:\/\//],
    [{ REDIS_URL: 'not a url' }, /REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ ALLOWED_ORIGINS: 'example.com' }, /ALLOWED_ORIGINS entries must be origins/],
    [{ TURN_URLS: 'turn:turn.example.com' }, /TURN_SECRET must be set/],
    [{ TURN_URLS: 'http://x', TURN_SECRET: 's' }, /TURN_URLS entries must start with turn: or turns:/],
    [{ STUN_URLS: 'turn:x' }, /STUN_URLS entries must start with stun:/],
    [{ ACCESS_TOKEN_SECRET: 'short' }, /ACCESS_TOKEN_SECRET must be at least 16/],
    [{ ADMIN_TOKEN: 'short' }, /ADMIN_TOKEN must be at least 16/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL must be one of/],
    [{ MAX_MESSAGE_BYTES: '10' }, /MAX_MESSAGE_BYTES/],
    [{ MALLOC_ARENA_MAX: 'two' }, /MALLOC_ARENA_MAX must be a whole number from 1 to 1024, got "two"/],
    [{ MALLOC_ARENA_MAX: '0' }, /MALLOC_ARENA_MAX must be a whole number from 1 to 1024, got 0/],
    [{ WORKER_ROUTING: 'random' }, /WORKER_ROUTING must be one of call, round-robin, got "random"/],
  ])('refuses %o with one sentence naming the variable', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it('refuses WEB_CONCURRENCY above 1 without Redis, and says why', () => {
    expect(() => loadConfig({ WEB_CONCURRENCY: '2' })).toThrow(/WEB_CONCURRENCY is 2 but REDIS_URL is not set: the InMemory channel layer cannot span processes/);
    expect(loadConfig({ WEB_CONCURRENCY: '2', REDIS_URL: 'redis://127.0.0.1:6379' }).webConcurrency).toBe(2);
  });

  it('routes each call to one worker unless WORKER_ROUTING says round-robin', () => {
    expect(loadConfig({}).workerRouting).toBe('call');
    expect(loadConfig({ WORKER_ROUTING: 'Round-Robin' }).workerRouting).toBe('round-robin');
  });

  it('gives workers 2 malloc arenas unless MALLOC_ARENA_MAX says otherwise', () => {
    expect(loadConfig({}).workerMallocArenaMax).toBe(2);
    expect(loadConfig({ MALLOC_ARENA_MAX: '8' }).workerMallocArenaMax).toBe(8);
  });

  it('reads lists, and an empty STUN_URLS means no STUN server', () => {
    const c = loadConfig({ ALLOWED_ORIGINS: 'https://a.example, https://b.example/', STUN_URLS: '', TURN_URLS: 'turn:t.example:3478,turns:t.example:5349', TURN_SECRET: 'secret' });
    expect(c.allowedOrigins).toEqual(['https://a.example', 'https://b.example']);
    expect(c.stunUrls).toEqual([]);
    expect(c.turnUrls).toHaveLength(2);
  });

  it('never shows a secret or a Redis password when described for the log', () => {
    const c = loadConfig({ REDIS_URL: 'rediss://default:hunter2-password@db.upstash.io:6379', TURN_URLS: 'turn:t', TURN_SECRET: 'turn-secret-value', ADMIN_TOKEN: 'admin-token-123456', ACCESS_TOKEN_SECRET: 'access-secret-123456' });
    const text = JSON.stringify(describeConfig(c));
    for (const secret of ['hunter2-password', 'turn-secret-value', 'admin-token-123456', 'access-secret-123456']) expect(text).not.toContain(secret);
    expect(text).toContain('db.upstash.io');
    expect(redactUrl('redis://:pw@h:1/2')).toBe('redis://:***@h:1/2');
  });
});
