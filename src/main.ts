/**
 * The entry point (`npm start` runs `node dist/main.js`). One process by default; with
 * WEB_CONCURRENCY=N the primary forks N workers (node:cluster), each with its own Redis channel
 * layer connections, and accepts the connections itself to hand each call's to one worker
 * (sticky.ts).
 */
import cluster from 'node:cluster';
import type { Socket } from 'node:net';
import { ConfigError, describeConfig, loadConfig, type Config } from './config.js';
import { tuneHeap } from './heap-tuning.js';
import { createLogger, type Logger } from './logger.js';
import { layerAnnouncement, startServer } from './server.js';
import { CONNECTION_MESSAGE, CallRouter, type ConnectionMessage } from './sticky.js';

/** How the primary tells the workers it forks which port it accepts on for them. */
const HANDED_OVER_PORT = 'CALLSIG_HANDED_OVER_PORT';

/** How long shutdown may take before the process exits anyway (Render gives 30 s). */
const SHUTDOWN_BUDGET_MS = 20_000;

function readConfig(): Readonly<Config> {
  try {
    return loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${JSON.stringify({ level: 60, time: Date.now(), msg: `Configuration error: ${err.message}` })}\n`);
      process.exit(78);
    }
    throw err;
  }
}

async function runWorker(config: Readonly<Config>, logger: Logger, announce: boolean): Promise<void> {
  tuneHeap(); // before the first socket: see heap-tuning.ts
  const handedOverPort = cluster.isWorker ? Number(process.env[HANDED_OVER_PORT]) : NaN;
  const handedOver = Number.isInteger(handedOverPort) ? { port: handedOverPort } : undefined;
  const running = await startServer({ config, logger, announce, handedOver });
  if (handedOver) {
    process.on('message', (m: Partial<ConnectionMessage>, socket?: Socket) => {
      if (m?.type === CONNECTION_MESSAGE && socket) running.take(socket, m as ConnectionMessage);
    });
  }
  logger.info({ port: running.port, host: config.host, worker: cluster.isWorker ? cluster.worker?.id : undefined }, 'listening');
  if (cluster.isWorker) {
    // Name this worker to the primary, and hear from it when a sibling dies without shutting down.
    process.send?.({ type: 'callsig:control-prefix', prefix: running.controlPrefix });
    process.on('message', (m: { type?: string; prefix?: string }) => {
      if (m?.type !== 'callsig:worker-died' || typeof m.prefix !== 'string') return;
      running.workerDied(m.prefix).then(
        (n) => n > 0 && logger.warn({ seats: n }, 'a worker died; its seats will be freed after the grace unless resumed'),
        (err: unknown) => logger.warn({ err }, 'could not handle a dead worker'),
      );
    });
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: telling peers to resume elsewhere');
    const force = setTimeout(() => {
      logger.warn('shutdown took too long; exiting');
      process.exit(1);
    }, SHUTDOWN_BUDGET_MS);
    force.unref();
    running.close(SHUTDOWN_BUDGET_MS / 2).then(
      () => {
        logger.info('shut down cleanly');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function runPrimary(config: Readonly<Config>, logger: Logger): Promise<void> {
  logger.info(layerAnnouncement(config));
  logger.info({ config: describeConfig(config) }, `starting ${config.webConcurrency} workers`);
  let stopping = false;
  const prefixes = new Map<number, string>();
  const router = new CallRouter(config.webConcurrency, config.workerRouting, logger);
  let port: number;
  try {
    port = await router.listen(config.port, config.host);
  } catch (err) {
    logger.fatal({ err, port: config.port, host: config.host }, `could not listen on ${config.host}:${config.port}`);
    process.exit(1);
  }
  // Fewer malloc arenas: a worker's connection burst otherwise leaves freed native memory in
  // per-thread arenas, about 6 MB per worker that glibc keeps (docs/performance.md, "Redis x2
  // memory, and malloc arenas").
  const fork = () => router.forked(cluster.fork({ MALLOC_ARENA_MAX: String(config.workerMallocArenaMax), [HANDED_OVER_PORT]: String(port) }));
  for (let i = 0; i < config.webConcurrency; i++) fork();
  cluster.on('message', (worker, m: { type?: string; prefix?: string }) => {
    if (m?.type === 'callsig:control-prefix' && typeof m.prefix === 'string') {
      // Sent once the worker serves: connections may go to it now.
      prefixes.set(worker.id, m.prefix);
      router.serving(worker);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    router.exited(worker);
    const prefix = prefixes.get(worker.id);
    prefixes.delete(worker.id);
    if (prefix && code !== 0) {
      for (const w of Object.values(cluster.workers ?? {})) w?.send({ type: 'callsig:worker-died', prefix });
    }
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    logger.warn({ worker: worker.id, code, signal }, 'worker died; starting another');
    fork();
  });
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down workers');
    router.close();
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(1), SHUTDOWN_BUDGET_MS + 2_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

const config = readConfig();
const logger = createLogger(config.logLevel);
process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'));
if (config.webConcurrency > 1 && cluster.isPrimary) {
  await runPrimary(config, logger);
} else {
  if (!cluster.isWorker) logger.info({ config: describeConfig(config) }, 'starting');
  await runWorker(config, logger, !cluster.isWorker);
}
