/**
 * The Hono app: pages, the HTTP API, health, metrics and the call WebSocket route, built from a
 * config and a channel layer without listening on a port (tests build it directly).
 */
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Hono, type Context } from 'hono';
import { secureHeaders } from 'hono/secure-headers';
import { serveStatic } from '@hono/node-server/serve-static';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import type { ChannelLayer } from './layers/index.js';
import { createConsumerServer } from './hono/index.js';
import {
  createCallConsumer, iceServersFor, RateLimit, SeatWatch, isCallId, randomId, safeEqual, Seats, signAccessToken, SignalingMetrics,
  type CallDeps,
} from './signaling/index.js';

/** Where the web app's files are: `public/` beside `src/` and `dist/`. */
export const PUBLIC_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'public');
const SIMPLE_PEER = createRequire(import.meta.url).resolve('simple-peer/simplepeer.min.js');

/** The content security policy of the pages: nothing inline, media and sockets from this origin. */
const CSP = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:'],
  mediaSrc: ["'self'", 'blob:', 'mediastream:'],
  connectSrc: ["'self'", 'ws:', 'wss:'],
  frameAncestors: ["'none'"],
  baseUri: ["'none'"],
  formAction: ["'none'"],
};

function bearer(c: Context): string | undefined {
  const h = c.req.header('authorization');
  return h?.startsWith('Bearer ') ? h.slice(7).trim() : undefined;
}

function baseUrl(config: Config, c: Context): string {
  if (config.publicUrl) return config.publicUrl;
  const proto = config.trustProxy ? (c.req.header('x-forwarded-proto')?.split(',')[0]?.trim() ?? 'http') : 'http';
  return `${proto}://${c.req.header('host') ?? 'localhost'}`;
}

/** Builds the app. `inject(server)` must be called on the HTTP server; `shutdown()` before closing it. */
export function buildApp(config: Readonly<Config>, layer: ChannelLayer & { kind?: string }, logger: Logger) {
  const app = new Hono();
  const metrics = new SignalingMetrics();
  const seats = new Seats(layer, { maxPeers: config.maxPeers, ttl: 86_400 });
  const watch = new SeatWatch(layer, seats, config.resumeGrace * 1000, logger);
  const deps: CallDeps = {
    config, metrics, seats, watch, rateLimit: new RateLimit(config.rateLimit, config.rateBurst), perAddress: new Map(), localCalls: new Map(),
  };
  const consumers = createConsumerServer({
    app,
    layer,
    logger,
    maxPayload: Math.max(config.maxMessageBytes * 4, 1024 * 1024),
    pingInterval: config.pingInterval * 1000,
    pingTimeout: config.pingInterval * 1000,
    trustProxy: config.trustProxy,
  });
  const layerKind = layer.kind === 'redis' ? 'redis' : 'memory';

  app.use('*', secureHeaders({ contentSecurityPolicy: CSP, crossOriginEmbedderPolicy: false }));
  app.use('*', async (c, next) => {
    await next();
    c.header('Permissions-Policy', 'camera=(self), microphone=(self), display-capture=(self)');
  });

  consumers.websocket('/ws/call/:callId', createCallConsumer(deps));
  app.get('/ws/call', (c) => c.json({ type: 'error', code: 'invalid-call-id', message: 'The call id is missing: connect to /ws/call/<callId>.' }, 400));
  app.get('/ws/call/', (c) => c.json({ type: 'error', code: 'invalid-call-id', message: 'The call id is missing: connect to /ws/call/<callId>.' }, 400));

  app.post('/api/calls', (c) => {
    if (config.accessTokenSecret && (!config.adminToken || !safeEqual(bearer(c) ?? '', config.adminToken))) {
      return c.json({ type: 'error', code: 'unauthorized', message: 'Creating calls needs the admin bearer token when access tokens are required.' }, 401);
    }
    const callId = randomId(16);
    const token = config.accessTokenSecret ? signAccessToken(config.accessTokenSecret, callId, 86_400) : undefined;
    const url = `${baseUrl(config, c)}/c/${callId}${token ? `?token=${token}` : ''}`;
    c.header('Cache-Control', 'no-store');
    return c.json({ callId, url, ...(token ? { token } : {}) }, 201);
  });

  app.get('/api/ice-servers', (c) => {
    c.header('Cache-Control', 'no-store');
    return c.json(iceServersFor(config, randomId(8)));
  });

  app.delete('/api/calls/:callId', async (c) => {
    if (!config.adminToken) return c.json({ type: 'error', code: 'unauthorized', message: 'The admin API is off: set ADMIN_TOKEN to use it.' }, 401);
    if (!safeEqual(bearer(c) ?? '', config.adminToken)) {
      metrics.errors.inc({ code: 'unauthorized' });
      return c.json({ type: 'error', code: 'unauthorized', message: 'A valid admin bearer token is required.' }, 401);
    }
    const callId = c.req.param('callId');
    if (!isCallId(callId)) return c.json({ type: 'error', code: 'invalid-call-id', message: 'A call id is 1 to 64 letters, digits, "_" or "-".' }, 400);
    const reason = (c.req.query('reason') ?? 'ended by the server').slice(0, 200);
    const seated = await seats.end(callId, { type: 'call.ended', reason });
    logger.info({ callId, peers: seated.length }, 'call ended from the admin API');
    return c.json({ callId, ended: true, peers: seated.length });
  });

  app.get('/healthz', (c) => {
    const healthy = layer.isHealthy();
    c.header('Cache-Control', 'no-store');
    return c.json(
      { status: healthy ? 'ok' : 'unavailable', layer: layerKind, connections: consumers.connections, uptime: Math.round(process.uptime()) },
      healthy ? 200 : 503,
    );
  });

  app.get('/metrics', async (c) => {
    c.header('Content-Type', metrics.registry.contentType);
    return c.body(await metrics.registry.metrics());
  });

  const page = (file: string) => readFile(path.join(PUBLIC_DIR, file), 'utf8');
  app.get('/', async (c) => c.html(await page('index.html')));
  app.get('/c/:callId', async (c) => c.html(await page('call.html'), isCallId(c.req.param('callId')) ? 200 : 400));
  app.get('/vendor/simplepeer.min.js', serveStatic({ path: path.relative(process.cwd(), SIMPLE_PEER) }));
  app.use('/*', serveStatic({ root: path.relative(process.cwd(), PUBLIC_DIR) || '.' }));

  return {
    app,
    metrics,
    consumers,
    /** Stops grace timers and closes every call connection with 1012 so clients resume elsewhere. */
    async shutdown(timeoutMs = 10_000): Promise<void> {
      await consumers.shutdown(1012, timeoutMs);
      watch.clear();
    },
    /**
     * Another worker died without shutting down: free, after the grace, the seats its connections
     * held in calls this worker has peers in. `controlPrefix` is the non-local part of that
     * worker's control channels (`conn.<layer id>!`).
     */
    workerDied(controlPrefix: string): Promise<number> {
      return watch.workerDied(controlPrefix, [...deps.localCalls.keys()]);
    },
  };
}
