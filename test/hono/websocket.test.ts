/**
 * The Hono binding over a real server (port 0) and real `ws` clients: scope, handshake, limits,
 * heartbeat, isolation of failures, and shutdown.
 */
import http from 'node:http';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Hono } from 'hono';
import WebSocket from 'ws';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer } from '../../src/layers/index.js';
import { JsonWebsocketConsumer, RecordingLogger, WebsocketConsumer, type Frame, type Scope } from '../../src/consumers/index.js';
import { createConsumerServer } from '../../src/hono/index.js';
import { openClient, startServer, until, type TestServer } from './support.js';

let layer: InMemoryChannelLayer;
let server: TestServer | undefined;
beforeEach(() => {
  layer = new InMemoryChannelLayer();
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  await layer.close();
});

/** Every consumer built, with what happened to it. */
const seen: Array<{ consumer: WebsocketConsumer; disconnect?: number }> = [];
beforeEach(() => {
  seen.length = 0;
});

class JsonEcho extends JsonWebsocketConsumer {
  constructor() {
    super();
    seen.push({ consumer: this });
  }
  override async connect(): Promise<void> {
    const offered = this.scope.subprotocols ?? [];
    await this.accept(offered.includes('echo.v2') ? 'echo.v2' : undefined);
  }
  override async receiveJson(content: unknown): Promise<void> {
    if (content === 'scope') {
      const { path, params, client } = this.scope;
      await this.sendJson({ path, params, query: Object.fromEntries(this.scope.query), client: client.address });
    } else if (content === 'boom') {
      throw new Error('handler exploded');
    } else if (typeof content === 'object' && content !== null && 'flood' in content) {
      const chunk = new Uint8Array(64 * 1024);
      while (this.state === 'open') {
        await this.send({ bytes: chunk });
        await new Promise((resolve) => setImmediate(resolve));
      }
    } else {
      await this.sendJson(content);
    }
  }
  override async disconnect(code: number): Promise<void> {
    seen.find((s) => s.consumer === this)!.disconnect = code;
  }
}

async function start(options: Parameters<typeof startServer>[2] = {}): Promise<TestServer> {
  server = await startServer(layer, (consumers) => consumers.websocket('/ws/room/:room', JsonEcho), options);
  return server;
}

describe('the handshake', () => {
  it('gives the consumer the route params, query and client address, and echoes', async () => {
    const s = await start();
    const c = await openClient(`${s.wsUrl}/ws/room/r1?x=1`);
    c.send(JSON.stringify('scope'));
    expect(await c.nextJson()).toEqual({ path: '/ws/room/r1', params: { room: 'r1' }, query: { x: '1' }, client: '127.0.0.1' });
    c.send({ hello: 'world' });
    expect(await c.nextJson()).toEqual({ hello: 'world' });
    c.ws.close();
    await c.closed;
  });

  it('takes the client address from the last X-Forwarded-For hop (the one our proxy appended; earlier ones can be forged)', async () => {
    const s = await start();
    const c = await openClient(`${s.wsUrl}/ws/room/r1`, { headers: { 'x-forwarded-for': '203.0.113.7, 198.51.100.9' } });
    c.send(JSON.stringify('scope'));
    expect(await c.nextJson()).toMatchObject({ client: '198.51.100.9' });
    c.ws.close();
  });

  it('negotiates the subprotocol the consumer accepts with', async () => {
    const s = await start();
    const c = await openClient(`${s.wsUrl}/ws/room/r1`, { protocols: ['echo.v1', 'echo.v2'] });
    expect(c.ws.protocol).toBe('echo.v2');
    c.ws.close();
  });

  it('refuses with a plain HTTP status when precheck says no, and builds no consumer', async () => {
    class Guarded extends JsonEcho {
      static override async precheck(scope: Scope): Promise<void | { status: number; body: unknown }> {
        if (scope.query.get('token') !== 'ok') return { status: 403, body: { code: 'forbidden' } };
        scope.user = 'ada';
      }
      override async connect(): Promise<void> {
        await this.accept();
        await this.sendJson({ user: this.scope.user });
      }
    }
    server = await startServer(layer, (consumers) => consumers.websocket('/guarded', Guarded));
    await expect(openClient(`${server.wsUrl}/guarded`)).rejects.toMatchObject({ status: 403 });
    expect(seen).toHaveLength(0);
    expect(server.consumers.connections).toBe(0);
    const ok = await openClient(`${server.wsUrl}/guarded?token=ok`);
    expect(await ok.nextJson()).toEqual({ user: 'ada' });
    expect(seen).toHaveLength(1);
    ok.ws.close();
  });

  it('lets a consumer that closes before accepting show the client its close code', async () => {
    class Full extends WebsocketConsumer {
      override async connect(): Promise<void> {
        await this.close(4409, 'call-full');
      }
    }
    server = await startServer(layer, (consumers) => consumers.websocket('/full', Full));
    const c = await openClient(`${server.wsUrl}/full`);
    expect(await c.closed).toEqual({ code: 4409, reason: 'call-full' });
    await until(() => server!.consumers.connections === 0, 'the consumer to finish');
  });

  it('ends a consumer whose client leaves while connect() runs, before the upgrade: disconnect gets 1006', async () => {
    const events: string[] = [];
    class Slow extends WebsocketConsumer {
      override async connect(): Promise<void> {
        await sleep(150);
        await this.accept();
        events.push(`accepted, state ${this.state}`);
        await this.send({ text: 'nobody reads this' });
      }
      override async disconnect(code: number): Promise<void> {
        events.push(`disconnect ${code}`);
      }
    }
    server = await startServer(layer, (consumers) => consumers.websocket('/slow', Slow));
    const ws = new WebSocket(`${server.wsUrl}/slow`);
    const failed = new Promise((resolve) => ws.once('error', resolve));
    await sleep(50);
    ws.terminate();
    await failed;
    await until(() => events.length === 2, 'disconnect');
    expect(events).toEqual(['accepted, state closed', 'disconnect 1006']);
    expect(server.consumers.connections).toBe(0);
    expect(server.logger.at('error')).toEqual([]);
  });

  it('lets plain GETs of a WebSocket route fall through to later routes', async () => {
    server = await startServer(layer, (consumers, app) => {
      consumers.websocket('/both', JsonEcho);
      app.get('/both', (c) => c.text('a page'));
    });
    const res = await fetch(`${server.url}/both`);
    expect(await res.text()).toBe('a page');
    expect(seen).toHaveLength(0);
  });
});

describe('frames', () => {
  it('echoes 2,000 frames in order', async () => {
    const s = await start();
    const c = await openClient(`${s.wsUrl}/ws/room/r1`);
    for (let i = 0; i < 2000; i++) c.send(JSON.stringify(i));
    const got: unknown[] = [];
    for (let i = 0; i < 2000; i++) got.push(await c.nextJson());
    expect(got).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    c.ws.close();
  });

  it('answers a frame that is not JSON and keeps the socket open', async () => {
    const s = await start();
    const c = await openClient(`${s.wsUrl}/ws/room/r1`);
    c.send('not json');
    expect(await c.nextJson()).toMatchObject({ type: 'error', code: 'bad-message' });
    c.send(Buffer.from([1, 2, 3]));
    expect(await c.nextJson()).toMatchObject({ type: 'error', code: 'bad-message', message: expect.stringMatching(/Binary frames/) });
    c.send({ still: 'open' });
    expect(await c.nextJson()).toEqual({ still: 'open' });
    c.ws.close();
  });

  it('closes a socket that sends a frame over maxPayload with 1009, and disconnect gets 1009', async () => {
    const s = await start({ maxPayload: 1024 });
    const c = await openClient(`${s.wsUrl}/ws/room/r1`);
    c.send(JSON.stringify('x'.repeat(1024)));
    expect((await c.closed).code).toBe(1009);
    await until(() => seen[0]?.disconnect !== undefined, 'disconnect');
    expect(seen[0]!.disconnect).toBe(1009);
  });
});

describe('reading from the client', () => {
  it('stops reading a client whose frames queue up behind a busy handler, then takes every frame in order', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    class Busy extends WebsocketConsumer {
      override async receive(frame: Frame): Promise<void> {
        if (frame.text === 'block') await gate;
        else await this.send(frame);
      }
    }
    server = await startServer(layer, (consumers) => consumers.websocket('/busy', Busy));
    const serverSockets: WebSocket[] = [];
    server.consumers.wss.on('connection', (ws) => serverSockets.push(ws));
    const c = await openClient(`${server.wsUrl}/busy`);
    c.send('block');
    for (let i = 0; i < 1000; i++) c.send(String(i));
    const serverSocket = serverSockets[0]!;
    await until(() => serverSocket.isPaused, 'the server to stop reading the client');
    release();
    const got: string[] = [];
    for (let i = 0; i < 1000; i++) got.push(((await c.next()) as { text: string }).text);
    expect(got).toEqual(Array.from({ length: 1000 }, (_, i) => String(i)));
    expect(serverSocket.isPaused).toBe(false);
    c.ws.close();
  });

  it('limits frames to 64 KiB unless told otherwise', async () => {
    const s = await start();
    expect(s.consumers.wss.options.maxPayload).toBe(64 * 1024);
    const c = await openClient(`${s.wsUrl}/ws/room/r1`);
    c.send(JSON.stringify('x'.repeat(64 * 1024 - 2)));
    expect(((await c.nextJson()) as string).length).toBe(64 * 1024 - 2);
    c.send(JSON.stringify('x'.repeat(64 * 1024)));
    expect((await c.closed).code).toBe(1009);
  });
});

describe('failures', () => {
  it('closes only the failing connection with 1011; the other keeps working and the server keeps serving', async () => {
    const s = await start();
    const a = await openClient(`${s.wsUrl}/ws/room/r1`);
    const b = await openClient(`${s.wsUrl}/ws/room/r1`);
    a.send(JSON.stringify('boom'));
    expect(await a.closed).toEqual({ code: 1011, reason: 'Internal error' });
    b.send({ n: 1 });
    expect(await b.nextJson()).toEqual({ n: 1 });
    const c = await openClient(`${s.wsUrl}/ws/room/r1`);
    c.send({ n: 2 });
    expect(await c.nextJson()).toEqual({ n: 2 });
    expect(s.logger.at('error').map((e) => (e.obj as { err: Error }).err.message)).toEqual(['handler exploded']);
    b.ws.close();
    c.ws.close();
  });
});

describe('backpressure', () => {
  it('sheds a peer that stops reading with 1013 instead of buffering without bound', async () => {
    const s = await start({ maxBufferedBytes: 256 * 1024 });
    const c = await openClient(`${s.wsUrl}/ws/room/r1`);
    (c.ws as unknown as { _socket: Socket })._socket.pause();
    c.send({ flood: true });
    await until(() => s.logger.at('warn').some((e) => /not reading/.test(e.msg ?? '')), 'the server to shed the peer', 10_000);
    const warned = s.logger.at('warn').find((e) => /not reading/.test(e.msg ?? ''))!;
    expect((warned.obj as { bufferedAmount: number }).bufferedAmount).toBeGreaterThan(256 * 1024);
    (c.ws as unknown as { _socket: Socket })._socket.resume();
    expect((await c.closed).code).toBe(1013);
    await until(() => seen[0]?.disconnect !== undefined, 'disconnect');
    expect(seen[0]!.disconnect).toBe(1013);
  });
});

describe('closing', () => {
  it('drops a socket whose peer never answers the close frame after closeTimeout, and disconnect runs', async () => {
    class Closer extends WebsocketConsumer {
      override async receive(): Promise<void> {
        await this.close(4000, 'done');
      }
      override async disconnect(code: number): Promise<void> {
        seen.push({ consumer: this, disconnect: code });
      }
    }
    server = await startServer(layer, (consumers) => consumers.websocket('/closer', Closer), { closeTimeout: 200 });
    const c = await openClient(`${server.wsUrl}/closer`);
    (c.ws as unknown as { _socket: Socket })._socket.pause(); // reads nothing more: the close frame goes unanswered
    c.send('close please');
    await until(() => seen.length === 1, 'disconnect', 3000);
    expect(seen[0]!.disconnect).toBe(1006);
    c.ws.terminate();
  });
});

describe('heartbeat', () => {
  it('drops a peer that stops answering pings, and disconnect gets 1006', async () => {
    const s = await start({ pingInterval: 100, pingTimeout: 100 });
    const silent = await openClient(`${s.wsUrl}/ws/room/r1`, { autoPong: false });
    const lively = await openClient(`${s.wsUrl}/ws/room/r1`);
    let pings = 0;
    lively.ws.on('ping', () => pings++);
    expect((await silent.closed).code).toBe(1006);
    await until(() => seen[0]?.disconnect !== undefined, 'disconnect');
    expect(seen[0]!.disconnect).toBe(1006);
    await sleep(300);
    expect(pings).toBeGreaterThanOrEqual(2);
    expect(lively.ws.readyState).toBe(WebSocket.OPEN);
    lively.send({ alive: true });
    expect(await lively.nextJson()).toEqual({ alive: true });
    lively.ws.close();
  });

  it('neither pings nor drops a socket whose consumer is still deciding to accept it', async () => {
    class Slow extends WebsocketConsumer {
      override async connect(): Promise<void> {
        await sleep(600); // several ping periods and timeouts
        await this.accept();
      }
      override async receive(frame: Frame): Promise<void> {
        await this.send(frame);
      }
    }
    server = await startServer(layer, (consumers) => consumers.websocket('/slow', Slow), { pingInterval: 100, pingTimeout: 100 });
    const c = await openClient(`${server.wsUrl}/slow`);
    c.send('still here');
    expect(await c.next()).toEqual({ text: 'still here' });
    c.ws.close();
  });
});

describe('what an open socket keeps', () => {
  it("has ws's server track no clients: one 'close' listener per socket, the binding's own", async () => {
    const s = await start();
    const serverSockets: WebSocket[] = [];
    s.consumers.wss.on('connection', (ws) => serverSockets.push(ws));
    const c = await openClient(`${s.wsUrl}/ws/room/r1`);
    c.send('"hello"');
    expect(await c.nextJson()).toBe('hello');
    expect(s.consumers.wss.clients).toBeUndefined();
    expect(serverSockets[0]!.listenerCount('close')).toBe(1);
    expect(s.consumers.connections).toBe(1);
    c.ws.close();
    await until(() => s.consumers.connections === 0, 'the connection to be dropped');
  });
});

describe('shutdown', () => {
  it('closes every consumer with 1012, waits for disconnect, and refuses new upgrades with 503', async () => {
    const s = await start();
    const a = await openClient(`${s.wsUrl}/ws/room/r1`);
    const b = await openClient(`${s.wsUrl}/ws/room/r2`);
    expect(s.consumers.connections).toBe(2);
    await s.consumers.shutdown(1012, 2000);
    expect(seen.map((x) => x.disconnect)).toEqual([1012, 1012]);
    expect(s.consumers.connections).toBe(0);
    expect((await a.closed).code).toBe(1012);
    expect((await b.closed).code).toBe(1012);
    await expect(openClient(`${s.wsUrl}/ws/room/r1`)).rejects.toMatchObject({ status: 503 });
  });

  it('drops, after the timeout, a consumer whose serverShutdown does not finish; its disconnect still runs once that handler returns', async () => {
    class Stubborn extends WebsocketConsumer {
      override async serverShutdown(): Promise<void> {
        await sleep(800);
      }
      override async disconnect(code: number): Promise<void> {
        seen.push({ consumer: this, disconnect: code });
      }
    }
    server = await startServer(layer, (consumers) => consumers.websocket('/stubborn', Stubborn));
    const c = await openClient(`${server.wsUrl}/stubborn`);
    await server.consumers.shutdown(1012, 200);
    expect((await c.closed).code).toBe(1006);
    expect(server.logger.at('warn').some((e) => /did not finish/.test(e.msg ?? ''))).toBe(true);
    await until(() => seen.length === 1, 'disconnect');
    expect(seen[0]!.disconnect).toBe(1006);
  });
});

describe('hooks', () => {
  it('reports open and close, and keeps count of live connections', async () => {
    const events: string[] = [];
    const s = await start({
      hooks: {
        onOpen: (consumer) => void events.push(`open ${consumer.scope.params.room}`),
        onClose: (consumer, code) => void events.push(`close ${consumer.scope.params.room} ${code}`),
      },
    });
    const c = await openClient(`${s.wsUrl}/ws/room/r7`);
    expect(s.consumers.connections).toBe(1);
    c.ws.close(4000);
    await c.closed;
    await until(() => events.length === 2, 'the close hook');
    expect(events).toEqual(['open r7', 'close r7 4000']);
    expect(s.consumers.connections).toBe(0);
  });
});

describe('the binding', () => {
  it('refuses a consumer class whose handles name no method when the route is added', async () => {
    class Broken extends WebsocketConsumer {
      static override handles = ['missing.handler'];
    }
    await expect(startServer(layer, (consumers) => consumers.websocket('/broken', Broken))).rejects.toThrow(/no missingHandler\(\) method/);
  });

  it('makes no consumer for an upgrade that did not come through inject(server), and says why', async () => {
    const app = new Hono();
    const logger = new RecordingLogger();
    createConsumerServer({ app, layer, logger }).websocket('/ws', JsonEcho);
    const res = await app.request('/ws', {
      headers: { upgrade: 'websocket', connection: 'upgrade', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' },
    });
    expect(res.status).toBe(500);
    expect(seen).toHaveLength(0);
    expect(logger.at('error')[0]!.msg).toMatch(/is inject\(server\) called/);
  });

  it('answers 400 to a malformed upgrade request without making a consumer', async () => {
    const s = await start();
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${s.url}/ws/room/r1`, { headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': 'short', 'sec-websocket-version': '13' } });
      req.on('response', (r) => resolve(r.statusCode ?? 0));
      req.on('upgrade', () => reject(new Error('upgraded')));
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(400);
    expect(seen).toHaveLength(0);
  });

  it('sends a consumer frames exactly as text or bytes', async () => {
    class Raw extends WebsocketConsumer {
      override async receive(frame: Frame): Promise<void> {
        await this.send(frame.text !== undefined ? { text: `text:${frame.text}` } : { bytes: Uint8Array.from([...frame.bytes!].reverse()) });
      }
    }
    server = await startServer(layer, (consumers) => consumers.websocket('/raw', Raw));
    const c = await openClient(`${server.wsUrl}/raw`);
    c.send('hi');
    c.send(Buffer.from([1, 2, 3]));
    expect(await c.next()).toEqual({ text: 'text:hi' });
    expect(await c.next()).toEqual({ bytes: Buffer.from([3, 2, 1]) });
    c.ws.close();
  });
});

describe('what a live connection keeps', () => {
  /** V8's collector, which vitest's workers do not expose by default. */
  function collector(): () => void {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  }

  it('lets go of the upgrade request (Hono context, Request, IncomingMessage) once the socket is open', async () => {
    const gc = collector();
    const refs: Array<WeakRef<object>> = [];
    server = await startServer(layer, (consumers, app) => {
      app.use('/ws/*', async (c, next) => {
        refs.push(new WeakRef(c), new WeakRef(c.req.raw), new WeakRef((c.env as { incoming: object }).incoming));
        await next();
      });
      consumers.websocket('/ws/room/:room', JsonEcho);
    });
    const c = await openClient(`${server.wsUrl}/ws/room/r1`);
    c.send({ hello: 'world' });
    expect(await c.nextJson()).toEqual({ hello: 'world' });
    expect(refs).toHaveLength(3);
    // A WeakRef's target survives the job that made or read it: collect between turns until done.
    for (let i = 0; i < 20 && refs.some((r) => r.deref() !== undefined); i++) {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
    }
    expect(refs.map((r) => r.deref() === undefined)).toEqual([true, true, true]);
    c.send({ still: 'open' });
    expect(await c.nextJson()).toEqual({ still: 'open' });
  });
});
