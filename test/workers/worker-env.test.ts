/**
 * The primary forks its WEB_CONCURRENCY workers with MALLOC_ARENA_MAX (default 2): glibc then
 * keeps about 6 MB less freed native memory per worker after a burst of connections (see the
 * README's memory figures). Read from each real process's /proc/<pid>/environ.
 */
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../deploy/support/server-process.js';
import { hasRedisServer, startRedisServer } from '../helpers/redis-server.js';
import { childPids } from '../helpers/server-process.js';
import { ensureBuilt, exitWithin, killAll, spawnMain, startMain } from '../signaling/processes.js';

const hasRedis = hasRedisServer();
const hasProc = existsSync('/proc/self/environ');
if (!hasProc) console.warn('SKIPPED: the worker environment tests read /proc/<pid>/environ (Linux)');

/** MALLOC_ARENA_MAX in `pid`'s environment, or undefined. */
function arenaMaxOf(pid: number): string | undefined {
  const vars = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
  return vars.find((v) => v.startsWith('MALLOC_ARENA_MAX='))?.slice('MALLOC_ARENA_MAX='.length);
}

describe.skipIf(!hasRedis || !hasProc)('the environment WEB_CONCURRENCY workers start with', () => {
  let redis: Awaited<ReturnType<typeof startRedisServer>>;

  beforeAll(async () => {
    ensureBuilt();
    redis = await startRedisServer();
  }, 120_000);

  afterEach(() => killAll());

  afterAll(async () => {
    killAll();
    await redis?.stop();
  });

  it('each worker gets MALLOC_ARENA_MAX=2 by default, a worker started after one dies too, and the primary is left as it was', async () => {
    const main = await startMain({ REDIS_URL: redis.url, WEB_CONCURRENCY: '2' }, 2);
    const primary = main.proc.pid!;
    const workers = childPids(primary);
    expect(workers).toHaveLength(2);
    expect(workers.map(arenaMaxOf)).toEqual(['2', '2']);
    expect(arenaMaxOf(primary)).toBeUndefined();

    process.kill(workers[0]!, 'SIGKILL');
    const replacement = await waitFor('a replacement worker', () =>
      childPids(primary).find((pid) => !workers.includes(pid)), 15_000, 50);
    expect(arenaMaxOf(replacement)).toBe('2');
  });

  it("MALLOC_ARENA_MAX set for the server is the workers' value", async () => {
    const main = await startMain({ REDIS_URL: redis.url, WEB_CONCURRENCY: '2', MALLOC_ARENA_MAX: '5' }, 2);
    expect(childPids(main.proc.pid!).map(arenaMaxOf)).toEqual(['5', '5']);
  });

  it('a MALLOC_ARENA_MAX that is not a whole number from 1 to 1024 stops start-up with a sentence naming it', async () => {
    const p = spawnMain({ REDIS_URL: redis.url, WEB_CONCURRENCY: '2', MALLOC_ARENA_MAX: 'lots' });
    const { code } = await exitWithin(p, 10_000);
    expect(code).toBe(78);
    expect(p.output()).toMatch(/MALLOC_ARENA_MAX must be a whole number from 1 to 1024, got \\"lots\\"/);
    expect(p.listening()).toEqual([]);
  });
});
