/**
 * Starting and stopping one server process: the layer the config asks for, the app, the HTTP
 * server, and a shutdown that tells peers to resume elsewhere.
 */
import type { AddressInfo, Server, Socket } from 'node:net';
import { createAdaptorServer, serve, type ServerType } from '@hono/node-server';
import { buildApp } from './app.js';
import { loadConfig, type Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { createChannelLayer, nonLocalName, type ChannelLayer } from './layers/index.js';
import { takeConnection, type ConnectionMessage } from './sticky.js';

/** Seconds an undelivered message lives in the layer: at least the resume grace, so kept signals outlive it. */
export function layerOptionsFor(config: Config) {
  const common = { expiry: Math.max(60, config.resumeGrace + 30), channelCapacity: { 'call.*': 500 }, prefix: 'callsig' };
  if (config.redisClusterUrls.length > 0) return { backend: 'redis' as const, clusterHosts: config.redisClusterUrls, ...common };
  if (config.redisUrl) return { backend: 'redis' as const, hosts: [config.redisUrl], ...common };
  return { backend: 'memory' as const, ...common };
}

/** The sentence the log carries at start: which layer is in use. */
export function layerAnnouncement(config: Config): string {
  return config.redisUrl || config.redisClusterUrls.length > 0 ? 'Using Redis channel layer' : 'Using InMemory channel layer';
}

/** How long start-up waits for the channel layer's connections before listening anyway. */
const LAYER_READY_TIMEOUT_MS = 10_000;

/** Waits (without sending commands) until the layer says it is connected, so the first peers are not refused. */
async function layerReady(layer: ChannelLayer, logger: Logger): Promise<void> {
  const healthy = (): boolean => layer.isHealthy();
  const end = Date.now() + LAYER_READY_TIMEOUT_MS;
  while (!healthy() && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
  if (!healthy()) logger.warn('the channel layer is not connected yet; starting anyway (/healthz answers 503 until it is)');
}

/** A running server. */
export interface RunningServer {
  port: number;
  url: string;
  config: Readonly<Config>;
  layer: ChannelLayer;
  logger: Logger;
  server: ServerType;
  /** The non-local part of this server's control channels (`conn.<layer id>!`), which names it to other workers. */
  controlPrefix: string;
  /** Serves a connection the primary accepted and handed over (`handedOver` servers). */
  take(socket: Socket, message: ConnectionMessage): void;
  /** Another worker died: free (after the grace) the seats it held in calls this server has peers in. */
  workerDied(controlPrefix: string): Promise<number>;
  /** Stops accepting, tells peers `server-restart` (1012), drains, closes the layer. Idempotent. */
  close(timeoutMs?: number): Promise<void>;
}

/** Options for `startServer`. */
export interface StartOptions {
  /** Environment to read the config from (default for tests: only this, on 127.0.0.1 and a free port). */
  env?: Record<string, string | undefined>;
  /** A ready config instead of `env`. */
  config?: Readonly<Config>;
  logger?: Logger;
  /** Log which layer is in use (the primary does it once in cluster mode). */
  announce?: boolean;
  /**
   * Listen on nothing: the primary accepts the connections on `port` and hands them over
   * (`take`). For WEB_CONCURRENCY workers (see sticky.ts).
   */
  handedOver?: { port: number };
}

/** Starts a server. Without `config`, reads `env` over test-friendly defaults (127.0.0.1, port 0, silent logs). */
export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const config = opts.config ?? loadConfig({ PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', ...opts.env });
  const logger = opts.logger ?? createLogger(config.logLevel);
  if (opts.announce) logger.info(layerAnnouncement(config));
  const layer = createChannelLayer(layerOptionsFor(config));
  await layerReady(layer, logger);
  const built = buildApp(config, layer, logger);
  const controlPrefix = nonLocalName(await layer.newChannel('conn'));
  const handedOver = opts.handedOver;
  const server = handedOver
    ? createAdaptorServer({ fetch: built.app.fetch })
    : await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: built.app.fetch, port: config.port, hostname: config.host }, () => resolve(s));
    });
  built.consumers.inject(server);
  const port = handedOver ? handedOver.port : (server.address() as AddressInfo).port;
  const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
  let closing: Promise<void> | undefined;
  return {
    port,
    url: `http://${host}:${port}`,
    config,
    layer,
    logger,
    server,
    controlPrefix,
    take(socket, message) {
      if (closing) socket.destroy();
      else takeConnection(server as Server, socket, message);
    },
    workerDied: (prefix) => built.workerDied(prefix),
    close(timeoutMs = 10_000) {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await built.shutdown(timeoutMs);
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        await stopped;
        await layer.close();
      })();
      return closing;
    },
  };
}
