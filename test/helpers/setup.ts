// Any unhandled rejection in a test process is a failure, not a warning (as ioredis's test setup does).
process.on('unhandledRejection', (reason) => {
  throw reason instanceof Error ? reason : new Error(`Unhandled rejection: ${String(reason)}`);
});
