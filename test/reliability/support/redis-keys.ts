/**
 * What the server keeps in Redis: every key under the layer's prefix with its type and TTL, read
 * with SCAN through our own connection (not the server's).
 */
import { Redis } from 'ioredis';

/** The layer prefix the server configures (src/server.ts: prefix 'callsig'). */
export const PREFIX = 'callsig';

/** A key and how long it has left. */
export interface KeyInfo {
  key: string;
  type: string;
  /** Seconds left; -1 = no expiry (kept forever), -2 = gone. */
  ttl: number;
}

/** A short-lived Redis client for inspection. */
export function inspectRedis(url: string): Redis {
  return new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1, enableOfflineQueue: true, retryStrategy: () => 200 });
}

/** Every key matching `pattern` (default: the prefix), with type and TTL. */
export async function keys(redis: Redis, pattern = `${PREFIX}*`): Promise<KeyInfo[]> {
  const out: KeyInfo[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    for (const key of batch) {
      const [type, ttl] = await Promise.all([redis.type(key), redis.ttl(key)]);
      if (ttl !== -2) out.push({ key, type, ttl });
    }
  } while (cursor !== '0');
  return out.sort((x, y) => x.key.localeCompare(y.key));
}

/** Keys whose name mentions `needle` (a call id or peer id). */
export async function keysMentioning(redis: Redis, needle: string): Promise<KeyInfo[]> {
  return (await keys(redis)).filter((k) => k.key.includes(needle));
}

/** One line per key for a test's log: "key (type) ttl". */
export function describeKeys(list: KeyInfo[]): string {
  if (list.length === 0) return '(none)';
  return list.map((k) => `${k.key} (${k.type}) ${k.ttl === -1 ? 'NO TTL' : `ttl ${k.ttl}s`}`).join('\n');
}
