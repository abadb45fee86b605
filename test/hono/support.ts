/**
 * What the binding tests share: a real server on a free loopback port, and a `ws` client that
 * queues every frame from the moment the socket exists (the listener is attached before 'open').
 */
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import WebSocket from 'ws';
import { createConsumerServer, type ConsumerServer, type ConsumerServerOptions } from '../../src/hono/index.js';
import { RecordingLogger } from '../../src/consumers/index.js';
import type { ChannelLayer } from '../../src/layers/index.js';

/** A running server for one test. */
export interface TestServer {
  app: Hono;
  consumers: ConsumerServer;
  logger: RecordingLogger;
  server: ServerType;
  port: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `ws://127.0.0.1:<port>` */
  wsUrl: string;
  /** Closes every client, then the server. */
  close(): Promise<void>;
}

/** Starts a server whose routes `routes` adds. */
export async function startServer(
  layer: ChannelLayer,
  routes: (consumers: ConsumerServer, app: Hono) => void,
  options: Partial<Omit<ConsumerServerOptions, 'app' | 'layer'>> = {},
): Promise<TestServer> {
  const app = new Hono();
  const logger = new RecordingLogger();
  const consumers = createConsumerServer({ app, layer, logger, ...options });
  routes(consumers, app);
  const { server, port } = await new Promise<{ server: ServerType; port: number }>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => resolve({ server: s, port: info.port }));
  });
  consumers.inject(server);
  return {
    app,
    consumers,
    logger,
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    async close() {
      await consumers.shutdown(1001, 2000);
      const s = server as import('node:http').Server;
      s.closeAllConnections?.();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
}

/** A frame a client received. */
export type Received = { text: string } | { bytes: Buffer };

/** A `ws` client for tests. */
export interface Client {
  ws: WebSocket;
  /** Frames received and not yet taken. */
  readonly frames: Received[];
  /** Resolves with the close code and reason. */
  readonly closed: Promise<{ code: number; reason: string }>;
  /** The next frame (rejects after `timeoutMs`, or when the socket closes first). */
  next(timeoutMs?: number): Promise<Received>;
  /** The next frame, parsed as JSON. */
  nextJson(timeoutMs?: number): Promise<unknown>;
  send(data: string | object | Buffer): void;
}

/** Opens a client; resolves once open, rejects with the HTTP status when the upgrade is refused. */
export function openClient(url: string, opts: WebSocket.ClientOptions & { protocols?: string[] } = {}): Promise<Client> {
  const { protocols, ...options } = opts;
  const ws = new WebSocket(url, protocols ?? [], options);
  const frames: Received[] = [];
  let wake: (() => void) | undefined;
  let closedWith: { code: number; reason: string } | undefined;
  ws.on('message', (data: Buffer, isBinary) => {
    frames.push(isBinary ? { bytes: data } : { text: data.toString('utf8') });
    wake?.();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => {
      closedWith = { code, reason: reason.toString() };
      resolve(closedWith);
      wake?.();
    });
  });
  const next = async (timeoutMs = 3000): Promise<Received> => {
    const deadline = Date.now() + timeoutMs;
    while (frames.length === 0) {
      if (closedWith) throw new Error(`The socket closed (${closedWith.code} ${closedWith.reason}) with no frame queued`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`No frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        };
      });
    }
    return frames.shift()!;
  };
  const client: Client = {
    ws,
    frames,
    closed,
    next,
    async nextJson(timeoutMs) {
      const frame = await next(timeoutMs);
      if (!('text' in frame)) throw new Error('Expected a text frame, got a binary one');
      return JSON.parse(frame.text);
    },
    send(data) {
      ws.send(typeof data === 'string' || Buffer.isBuffer(data) ? data : JSON.stringify(data));
    },
  };
  return new Promise<Client>((resolve, reject) => {
    ws.once('open', () => resolve(client));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => reject(Object.assign(new Error(`Upgrade refused: HTTP ${res.statusCode}`), { status: res.statusCode, body: Buffer.concat(chunks).toString() })));
    });
  });
}

/** Waits until `check` is true (polling), failing after `timeoutMs` with `what`. */
export async function until(check: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
