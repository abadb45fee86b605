/**
 * The server process runs with V8's allocation-site pretenuring off (src/heap-tuning.ts): a
 * literal whose objects outlived young-generation collections must not start allocating in the
 * old generation. Checked inside a live `node dist/main.js` through its inspector, against a
 * control server started with `--allocation-site-pretenuring`, which the server leaves alone:
 * there the same probe shows the literal pretenured, so the probe can tell the two apart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Inspector } from './support/inspector.js';
import { buildProblem, spawnServer, stopAllServers } from './support/processes.js';

/**
 * Run in the server: one array literal, like ws's `_fragments = []`, makes 24 x 5,000 arrays that
 * all outlive a young-generation collection (with the young generation at its largest, 1 MB, so
 * V8 may decide to pretenure; and calls enough for its optimized code, which is what allocates a
 * pretenured literal in the old generation), then 5,000 more with no collection between; returns
 * how many bytes the old generation grew by while they were made. Young arrays: 0. Pretenured:
 * 106 to 257 KB in runs by hand (up to 64 B each).
 */
const PROBE = `(() => {
  const v8 = process.getBuiltinModule('v8');
  const oldUsed = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_used_size;
  const make = (i) => [i, i];
  const keep = [];
  for (let round = 0; round < 24; round++) {
    for (let i = 0; i < 5000; i++) keep.push(make(i));
    globalThis.gc({ type: 'minor' });
  }
  keep.length = 0;
  const fresh = new Array(5000).fill(null);
  globalThis.gc();
  const before = oldUsed();
  for (let i = 0; i < fresh.length; i++) fresh[i] = make(i);
  return oldUsed() - before;
})()`;

/** What makes a probe readable: a GC on demand, and a young generation at its largest from the start. */
const NODE_ARGS = ['--inspect=127.0.0.1:0', '--expose-gc', '--min-semi-space-size=1', '--max-semi-space-size=1'];

async function oldGrowth(extraArgs: string[], label: string): Promise<number> {
  const server = await spawnServer({ label, nodeArgs: [...NODE_ARGS, ...extraArgs] });
  const inspector = await Inspector.attach(server);
  try {
    return await inspector.evaluate<number>(PROBE);
  } finally {
    inspector.close();
  }
}

describe.skipIf(typeof process.getBuiltinModule !== 'function')('V8 heap tuning of the server process (the probe needs Node 20.16+: process.getBuiltinModule)', () => {
  let tuned: number;
  let control: number;

  beforeAll(async () => {
    const problem = buildProblem();
    if (problem) throw new Error(problem);
    tuned = await oldGrowth([], 'heap tuning (default)');
    control = await oldGrowth(['--allocation-site-pretenuring'], 'heap tuning (pretenuring asked for)');
    console.log(`heap tuning: old generation grew by ${tuned} B while the tuned server made 5,000 arrays, ${control} B on the control`);
  }, 60_000);

  afterAll(async () => {
    await stopAllServers();
  });

  it('the probe sees pretenuring where node was told to keep it (the control)', () => {
    expect(control, 'old-generation growth while 5,000 arrays of a pretenured literal are made (bytes)').toBeGreaterThan(50_000);
  });

  it('the server turns pretenuring off: the same literal keeps allocating young', () => {
    expect(tuned, 'old-generation growth while 5,000 arrays of the literal are made (bytes)').toBeLessThan(control / 10);
  });
});
