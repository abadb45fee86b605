import fc from 'fast-check';

// Any unhandled rejection in a test process is a failure, not a warning (as ioredis's test setup does).
process.on('unhandledRejection', (reason) => {
  throw reason instanceof Error ? reason : new Error(`Unhandled rejection: ${String(reason)}`);
});

// Property tests run from one fixed seed, so the suite (and CI) is deterministic; a failure prints
// its seed and path to replay. FUZZ_SEED=random explores new inputs; FUZZ_SEED=<n> replays one run.
const fuzzSeed = process.env.FUZZ_SEED;
if (fuzzSeed !== 'random') fc.configureGlobal({ seed: fuzzSeed ? Number(fuzzSeed) : 20261122 });
