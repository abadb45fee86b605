/**
 * Binds consumers to Hono routes on @hono/node-server through @hono/node-ws: a Scope from each
 * request, precheck before the upgrade, one runner per connection, the ws limits (maxPayload,
 * closeTimeout), pings, and a bounded shutdown.
 *
 * It owns the app's WebSocket upgrades: call `inject(server)` once, and do not call
 * `createNodeWebSocket` elsewhere on the same server (two upgrade listeners would both answer).
 */
import type { IncomingMessage, Server } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Http2SecureServer, Http2Server } from 'node:http2';
import type { Context, Next } from 'hono';
import { createNodeWebSocket } from '@hono/node-ws';
import type { WebSocketServer } from 'ws';
import {
  CloseCode, consoleLogger, handlerTable, HttpRunner, runPrecheck, WebsocketRunner,
  type ConsumerClassLike, type HttpConsumer, type Logger, type PrecheckClass, type PrecheckRefusal, type WebsocketConsumer, type WebsocketRunnerOptions,
} from '../consumers/index.js';
import { resolveServerOptions, type ConsumerServerOptions, type ResolvedServerOptions } from './options.js';
import { scopeFromContext } from './scope.js';
import { StreamingResponse } from './http-transport.js';
import { monotonicMs, NodeWsTransport } from './ws-transport.js';

/** A WebsocketConsumer class a route can serve. */
export type WebsocketConsumerClass = ConsumerClassLike & PrecheckClass & (new () => WebsocketConsumer);
/** An HttpConsumer class a route can serve. */
export type HttpConsumerClass = ConsumerClassLike & PrecheckClass & (new () => HttpConsumer);

/** What `createConsumerServer` returns. */
export interface ConsumerServer {
  /** Serves `ConsumerClass` on WebSocket upgrades of GET `path` (other GETs fall through to later routes). */
  websocket(path: string, ConsumerClass: WebsocketConsumerClass): void;
  /** Serves `ConsumerClass` on `path` for `methods` (default GET and POST). */
  http(path: string, ConsumerClass: HttpConsumerClass, methods?: string[]): void;
  /** Attaches the upgrade handler to the HTTP server `serve()` returned. */
  inject(server: Server | Http2Server | Http2SecureServer): void;
  /** Live WebSocket consumers (from the upgrade request until disconnect has run). */
  readonly connections: number;
  /** The ws server node-ws created (its options carry the limits). */
  readonly wss: WebSocketServer;
  /**
   * Refuses new connections (503), calls `serverShutdown(code)` on every live consumer (HTTP
   * ones end their responses) and waits for them to finish; after `timeoutMs`, drops the rest.
   */
  shutdown(code?: number, timeoutMs?: number): Promise<void>;
}

/** The node-server bindings of a request (`c.env`); node-ws's upgrade path has no `outgoing`. */
interface NodeBindings {
  incoming?: IncomingMessage;
  outgoing?: unknown;
}

/** The part of a Context node-ws's upgrade reads; emptied as it stops reading each part. */
interface SlimContext {
  env: NodeBindings | undefined;
  req: { url: string; header?(name: string): string | undefined } | undefined;
}

/** A key node-ws needs; anything else is a broken request that never reaches a consumer. */
const WEBSOCKET_KEY = /^[+/0-9A-Za-z]{22}==$/;

function refusalResponse(refusal: PrecheckRefusal): Response {
  const headers = new Headers(refusal.headers);
  if (refusal.body === undefined) return new Response(null, { status: refusal.status, headers });
  if (!headers.has('content-type')) headers.set('content-type', 'application/json');
  return new Response(JSON.stringify(refusal.body), { status: refusal.status, headers });
}

/** A response that refuses an upgrade (so the route can answer it in full on the socket). */
class Refusal extends Response {}

function asRefusal(response: Response): Refusal {
  return new Refusal(response.body, { status: response.status, headers: response.headers });
}

function errorResponse(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ type: 'error', code, message }), { status, headers: { 'content-type': 'application/json' } });
}

/**
 * Writes a refusal (status, headers and body) on the socket of an upgrade request itself:
 * node-ws would answer only the status line with an empty body, so clients could not read why.
 * node-ws's own `socket.end(...)` that follows becomes a no-op on this finished socket.
 */
async function writeRefusal(incoming: IncomingMessage, response: Response): Promise<void> {
  const socket = incoming.socket;
  const body = Buffer.from(await response.arrayBuffer());
  const lines = [`HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? ''}`, 'Connection: close', `Content-Length: ${body.length}`];
  response.headers.forEach((value, name) => {
    if (!['connection', 'content-length', 'transfer-encoding'].includes(name)) lines.push(`${name}: ${value.replace(/[\r\n]/g, ' ')}`);
  });
  socket.on('error', () => {}); // the client may be gone already
  socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), body]));
  socket.end = (() => socket) as typeof socket.end;
}

/** Resolves true when `promise` settles within `ms`, false otherwise. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads a request body up to `limit` bytes; null when it is bigger. */
async function readBody(c: Context, limit: number): Promise<Uint8Array | null> {
  const declared = Number(c.req.header('content-length') ?? 0);
  if (declared > limit) return null;
  const stream = c.req.raw.body;
  if (!stream) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/**
 * Pings open sockets and drops those whose pong is late; one timer for the whole server, ticking
 * at a quarter of the shorter period. A peer that dies right after a pong is dropped within
 * pingInterval + pingTimeout + two ticks.
 */
class Heartbeat {
  private timer: NodeJS.Timeout | undefined;

  /** `sockets`: every transport of the server, open or not yet (only open ones are pinged). */
  constructor(private readonly sockets: ReadonlyMap<unknown, NodeWsTransport>, private readonly interval: number, private readonly timeout: number, private readonly log: Logger) {}

  start(): void {
    if (this.interval === 0 || this.timer) return;
    const tick = Math.max(10, Math.floor(Math.min(this.interval, this.timeout) / 4));
    this.timer = setInterval(() => this.beat(monotonicMs()), tick);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private beat(now: number): void {
    for (const socket of this.sockets.values()) {
      if (!socket.isOpen) continue;
      if (socket.awaitingPong) {
        if (now - socket.pingSentAt >= this.timeout) {
          this.log.info({ silentMs: now - socket.pingSentAt }, 'A peer stopped answering pings; dropping its socket');
          socket.terminate();
        }
      } else if (now - socket.pingSentAt >= this.interval) {
        socket.ping(now);
      }
    }
  }
}

/** Binds consumers to routes of `opts.app`. */
export function createConsumerServer(options: ConsumerServerOptions): ConsumerServer {
  const opts: ResolvedServerOptions = resolveServerOptions(options, consoleLogger);
  const { app, layer, logger: log } = opts;
  /** Sockets whose consumer decided, by their upgrade request: node-ws and ws find them here. */
  const upgrading = new WeakMap<IncomingMessage, NodeWsTransport>();
  const { upgradeWebSocket, injectWebSocket, wss } = createNodeWebSocket({ app });
  // node-ws builds its WebSocketServer without options; ws reads these at each upgrade.
  wss.options.maxPayload = opts.maxPayload;
  (wss.options as { closeTimeout?: number }).closeTimeout = opts.closeTimeout; // ws 8.18+; not yet in @types/ws
  wss.options.handleProtocols = (_offered: Set<string>, req: IncomingMessage) => upgrading.get(req)?.subprotocol ?? false;
  // What `clientTracking: false` would have made: ws keeps no Set of its clients, and adds no
  // 'close' listener to each socket to keep it. The server tracks its connections already
  // (`websockets`); ws's copy cost about 150 bytes per idle connection (bench/heap.mjs).
  wss.options.clientTracking = false;
  (wss as { clients?: Set<unknown> }).clients = undefined;
  // After node-ws's own listener, before its onOpen: the socket is tagged with its transport,
  // so the events and listeners shared by all sockets can find it.
  wss.on('connection', (ws, req: IncomingMessage) => upgrading.get(req)?.claim(ws));

  const websockets = new Map<WebsocketRunner, NodeWsTransport>();
  const https = new Map<HttpRunner, StreamingResponse>();
  const heartbeat = new Heartbeat(websockets, opts.pingInterval, opts.pingTimeout, log);
  let shuttingDown = false;
  const runnerOptions = {
    layer,
    logger: log,
    maxBufferedBytes: opts.maxBufferedBytes,
    ...(opts.hooks ? { hooks: opts.hooks } : {}),
  };
  // One function for every WebSocket runner: a `done.then(...)` per connection would build a
  // promise, its resolver and a reaction that an idle peer keeps until it leaves.
  const websocketRunnerOptions: Omit<WebsocketRunnerOptions, 'scope' | 'transport'> = {
    ...runnerOptions,
    onDone: (runner) => websockets.delete(runner as WebsocketRunner),
  };

  const upgrade = upgradeWebSocket(
    () => NodeWsTransport.wsEvents,
    { onError: (err) => log.error({ err }, 'A WebSocket event handler failed') },
  );

  /** The WebSocket route: a refused upgrade is answered in full here (node-ws would drop the body). */
  async function websocketRoute(Class: WebsocketConsumerClass, c: Context, next: Next): Promise<Response | void> {
    const result = await upgradeRoute(Class, c, next);
    const incoming = (c.env as NodeBindings | undefined)?.incoming;
    if (result instanceof Refusal && incoming) await writeRefusal(incoming, result.clone());
    return result;
  }

  async function upgradeRoute(Class: WebsocketConsumerClass, c: Context, next: Next): Promise<Response | void> {
    if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') return next();
    const bindings = c.env as NodeBindings | undefined;
    const incoming = bindings?.incoming;
    if (!incoming || bindings.outgoing !== undefined) {
      // Not node-ws's upgrade path: nothing could complete this handshake, so no consumer is made.
      log.error({ path: c.req.path }, 'A WebSocket upgrade reached the app outside node-ws; is inject(server) called on this server?');
      return asRefusal(errorResponse(500, 'internal-error', 'WebSocket upgrades are not set up on this server.'));
    }
    if (!WEBSOCKET_KEY.test(c.req.header('sec-websocket-key') ?? '') || !['8', '13'].includes(c.req.header('sec-websocket-version') ?? '')) {
      return asRefusal(errorResponse(400, 'bad-request', 'Not a valid WebSocket upgrade request.'));
    }
    if (shuttingDown) return asRefusal(errorResponse(503, 'server-restart', 'The server is shutting down.'));
    const scope = scopeFromContext(c, 'websocket', opts.trustProxy);
    const refusal = await runPrecheck(Class, scope, layer, log);
    if (refusal) return asRefusal(refusalResponse(refusal));

    const transport = new NodeWsTransport(incoming.socket);
    let runner: WebsocketRunner;
    try {
      runner = new WebsocketRunner(Class, { ...websocketRunnerOptions, scope, transport });
    } catch (err) {
      log.error({ err, consumer: Class.name }, 'Creating the consumer failed');
      transport.detach();
      return asRefusal(errorResponse(500, 'internal-error', 'The server failed to handle this connection.'));
    }
    websockets.set(runner, transport); // first: attach ends the runner if the client has left
    transport.attach(runner);
    runner.start();

    if ((await transport.decision) === 'gone') return new Response(null, { status: 499 });
    upgrading.set(incoming, transport);
    return upgradeSlim(c, incoming, transport, next);
  }

  /**
   * Runs node-ws's upgrade with a context of only what it reads. Its socket handlers close over
   * the context they were given for as long as the socket lives, and Hono's holds the Request,
   * its headers, the IncomingMessage and the Response: about 10 KiB a connection, kept for
   * nothing. node-ws reads, before its upgrade returns, the `upgrade` header and `env`:
   * `incoming`, and a symbol it marks the connection with, which its upgrade listener then looks
   * for on the request's own env, so the mark is copied back there. It reads the URL once more,
   * as the socket opens. Each part is dropped once read: an open socket keeps an empty context.
   */
  async function upgradeSlim(c: Context, incoming: IncomingMessage, transport: NodeWsTransport, next: Next): Promise<Response | void> {
    const env: NodeBindings = { incoming };
    const headers = c.req.raw.headers;
    const req = { url: c.req.url, header: (name: string): string | undefined => headers.get(name) ?? undefined };
    const slim: SlimContext = { env, req };
    const response = await upgrade(slim as unknown as Context, next);
    const bindings = c.env as Record<symbol, unknown>;
    for (const key of Object.getOwnPropertySymbols(env)) bindings[key] = (env as Record<symbol, unknown>)[key];
    slim.env = undefined;
    slim.req = { url: req.url };
    void transport.opened.then(() => (slim.req = undefined));
    return response;
  }

  async function httpRoute(Class: HttpConsumerClass, c: Context): Promise<Response> {
    if (shuttingDown) return errorResponse(503, 'server-restart', 'The server is shutting down.');
    const scope = scopeFromContext(c, 'http', opts.trustProxy);
    const refusal = await runPrecheck(Class, scope, layer, log);
    if (refusal) return refusalResponse(refusal);
    let body: Uint8Array | null;
    try {
      body = await readBody(c, opts.maxBodyBytes);
    } catch {
      return errorResponse(400, 'bad-request', 'The request body could not be read.'); // the client aborted it
    }
    if (!body) return errorResponse(413, 'too-large', `A request body may be at most ${opts.maxBodyBytes} bytes.`);

    let runner: HttpRunner | undefined;
    const response = new StreamingResponse(() => runner!);
    try {
      runner = new HttpRunner(Class, { ...runnerOptions, scope, transport: response, body });
    } catch (err) {
      log.error({ err, consumer: Class.name }, 'Creating the consumer failed');
      return errorResponse(500, 'internal-error', 'The server failed to handle this request.');
    }
    const started = runner;
    https.set(started, response);
    const signal = c.req.raw.signal;
    const onAbort = (): void => {
      started.gone();
      response.abandon();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    void started.done.then(() => {
      https.delete(started);
      signal.removeEventListener('abort', onAbort);
    });
    started.start();
    return response.response;
  }

  return {
    websocket(path, Class) {
      handlerTable(Class); // a misdeclared class fails at start-up, not at the first connection
      app.get(path, (c: Context, next: Next) => websocketRoute(Class, c, next));
      heartbeat.start();
    },

    http(path, Class, methods = ['GET', 'POST']) {
      handlerTable(Class);
      app.on(methods, path, (c: Context) => httpRoute(Class, c));
    },

    inject(server) {
      injectWebSocket(server);
    },

    get connections() {
      return websockets.size;
    },

    get wss() {
      return wss;
    },

    async shutdown(code = CloseCode.SERVICE_RESTART, timeoutMs = 10_000) {
      shuttingDown = true;
      heartbeat.stop();
      for (const runner of websockets.keys()) runner.shutdown(code);
      for (const runner of https.keys()) runner.shutdown();
      const finished = (): Promise<unknown> => Promise.all([...websockets.keys(), ...https.keys()].map((r) => r.done));
      if (await settlesWithin(finished(), timeoutMs)) return;
      log.warn({ websockets: websockets.size, http: https.size }, 'Consumers did not finish within the shutdown timeout; dropping their connections');
      for (const transport of websockets.values()) transport.terminate();
      for (const response of https.values()) response.abort('Server shutting down');
      for (const runner of https.keys()) runner.gone();
      await settlesWithin(finished(), 1000);
    },
  };
}
