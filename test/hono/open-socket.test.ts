/**
 * What an open socket keeps of its handshake: nothing node-ws or the transport no longer reads.
 * node-ws is wrapped (not replaced) to see the context it is handed, which its socket handlers
 * close over for as long as the socket lives.
 */
import { EventEmitter } from 'node:events';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InMemoryChannelLayer } from '../../src/layers/index.js';
import { JsonWebsocketConsumer } from '../../src/consumers/index.js';
import { NodeWsTransport } from '../../src/hono/ws-transport.js';
import { openClient, startServer, until, type TestServer } from './support.js';

/** The contexts node-ws's upgrade was given, in order. */
const upgradeContexts: Array<Record<string, unknown>> = [];
/** The same contexts, weakly: to see whether anything still holds them. */
const contextRefs: Array<WeakRef<object>> = [];

vi.mock('@hono/node-ws', async (importOriginal) => {
  const real = await importOriginal<typeof import('@hono/node-ws')>();
  return {
    createNodeWebSocket: ((init) => {
      const made = real.createNodeWebSocket(init);
      const upgradeWebSocket = ((...args: unknown[]) => {
        const middleware = (made.upgradeWebSocket as (...a: unknown[]) => unknown)(...args);
        return (c: Record<string, unknown>, next: () => Promise<void>) => {
          upgradeContexts.push(c);
          contextRefs.push(new WeakRef(c));
          return (middleware as unknown as (c: unknown, next: unknown) => unknown)(c, next);
        };
      }) as unknown as typeof made.upgradeWebSocket;
      return { ...made, upgradeWebSocket };
    }) as typeof real.createNodeWebSocket,
  };
});

/** V8's collector, which vitest's workers do not expose by default. */
function collector(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/** Whether V8 keeps `o`'s properties as fields rather than in a hash dictionary. */
function hasFastProperties(o: object): boolean {
  v8.setFlagsFromString('--allow-natives-syntax');
  return (vm.runInNewContext('(o) => %HasFastProperties(o)') as (o: object) => boolean)(o);
}

class Echo extends JsonWebsocketConsumer {
  override async receiveJson(content: unknown): Promise<void> {
    await this.sendJson(content);
  }
}

/** Echo that records the close codes its consumers saw. */
class ClosingEcho extends Echo {
  static closes: number[] = [];
  override async disconnect(code: number): Promise<void> {
    ClosingEcho.closes.push(code);
  }
}

describe('an open socket', () => {
  let layer: InMemoryChannelLayer;
  let server: TestServer | undefined;
  beforeEach(() => {
    layer = new InMemoryChannelLayer();
    upgradeContexts.length = 0;
    contextRefs.length = 0;
    ClosingEcho.closes = [];
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
    await layer.close();
  });

  it('leaves node-ws an empty context (no env, no request) and still echoes', async () => {
    server = await startServer(layer, (consumers) => consumers.websocket('/ws/room/:room', Echo));
    const c = await openClient(`${server.wsUrl}/ws/room/r1`);
    c.send({ hello: 'world' });
    expect(await c.nextJson()).toEqual({ hello: 'world' });
    expect(upgradeContexts).toHaveLength(1);
    await until(() => upgradeContexts[0]!.req === undefined, 'the request dropped from the context');
    expect(upgradeContexts[0]).toEqual({ env: undefined, req: undefined });
    c.send({ still: 'open' });
    expect(await c.nextJson()).toEqual({ still: 'open' });
  });

  it('keeps nothing of node-ws once open: its per-socket listeners are gone, so its context is collected', async () => {
    const gc = collector();
    server = await startServer(layer, (consumers) => consumers.websocket('/ws/room/:room', ClosingEcho));
    const c = await openClient(`${server.wsUrl}/ws/room/r1`);
    c.send({ hello: 'world' });
    expect(await c.nextJson()).toEqual({ hello: 'world' });
    expect(contextRefs).toHaveLength(1);
    upgradeContexts.length = 0;
    for (let i = 0; i < 20 && contextRefs[0]!.deref() !== undefined; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
    }
    // node-ws's 'message', 'close' and 'error' listeners close over the context it was given.
    expect(contextRefs[0]!.deref()).toBeUndefined();
    // Frames and the close still arrive (through this project's own listeners).
    c.send({ still: 'open' });
    expect(await c.nextJson()).toEqual({ still: 'open' });
    c.ws.close(4000, 'bye');
    await until(() => ClosingEcho.closes.length === 1, 'the consumer to see the close');
    expect(ClosingEcho.closes).toEqual([4000]);
  });
});

/** A request socket: an emitter that can be destroyed. */
function fakeSocket(): Socket & EventEmitter {
  return Object.assign(new EventEmitter(), { destroyed: false, writable: true, cork() {}, uncork() {}, destroy() {} }) as unknown as Socket & EventEmitter;
}

/** A ws socket as far as the transport uses it. */
function fakeWs(): WebSocket & EventEmitter & { closedWith?: [number, string] } {
  const ws = Object.assign(new EventEmitter(), {
    bufferedAmount: 0,
    closedWith: undefined as [number, string] | undefined,
    ping() {},
    close(code: number, reason: string) {
      ws.closedWith = [code, reason];
    },
  });
  return ws as unknown as WebSocket & EventEmitter & { closedWith?: [number, string] };
}

function open(transport: NodeWsTransport, ws: WebSocket): void {
  transport.claim(ws);
  NodeWsTransport.wsEvents.onOpen!(new Event('open'), { raw: ws } as never);
}

describe('NodeWsTransport', () => {
  it('drops its handshake once open: decision and accept stay settled, the request socket is no longer watched', async () => {
    const gc = collector();
    const socket = fakeSocket();
    const closed: Array<[number, string | undefined]> = [];
    const frames: unknown[] = [];
    const transport = new NodeWsTransport(socket);
    expect(transport.isOpen).toBe(false);
    transport.attach({ frame: (f) => frames.push(f), closed: (code, reason) => closed.push([code, reason]) });
    let handshake: WeakRef<Promise<unknown>> | undefined = new WeakRef(transport.decision);
    const accepted = transport.accept('v1');
    expect(await transport.decision).toBe('upgrade');
    expect(transport.subprotocol).toBe('v1');

    const ws = fakeWs();
    open(transport, ws);
    await accepted;
    expect(socket.listenerCount('close')).toBe(0);
    expect(transport.isOpen).toBe(true);
    expect(await transport.decision).toBe('upgrade');
    await transport.accept(undefined); // settled at once
    for (let i = 0; i < 20 && handshake.deref() !== undefined; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
    }
    expect(handshake.deref()).toBeUndefined();
    handshake = undefined;

    transport.ping(Date.now());
    expect(transport.awaitingPong).toBe(true);
    ws.emit('pong');
    expect(transport.awaitingPong).toBe(false);
    // Frames come from ws itself (node-ws is given no onMessage, so it builds no MessageEvent).
    expect(NodeWsTransport.wsEvents.onMessage).toBeUndefined();
    expect(NodeWsTransport.wsEvents.onClose).toBeUndefined();
    ws.emit('message', Buffer.from('{"type":"ping","é":1}'), false);
    const bytes = Buffer.from([1, 2, 3]);
    ws.emit('message', bytes, true);
    bytes[0] = 9; // the frame has its own copy
    expect(frames).toEqual([{ text: '{"type":"ping","é":1}' }, { bytes: new Uint8Array([1, 2, 3]) }]);
    ws.emit('error', Object.assign(new Error('bad utf-8'), { code: 'WS_ERR_INVALID_UTF8' }));
    ws.emit('close', 1006, Buffer.from(''));
    expect(closed).toEqual([[1007, '']]);
    expect(transport.isOpen).toBe(false);
  });

  it("removes only the listeners node-ws adds after onOpen: ws's server keeps its own 'close' listener", async () => {
    const transport = new NodeWsTransport(fakeSocket());
    transport.attach({ frame: () => {}, closed: () => {} });
    const accepted = transport.accept(undefined);
    const ws = fakeWs();
    const serverTracking = (): void => {}; // ws's WebSocketServer drops the socket from `clients` on close
    ws.on('close', serverTracking);
    let closedOnce = 0;
    ws.once('close', () => closedOnce++); // a `once` listener stays one
    open(transport, ws);
    const nodeWs = { message: () => {}, close: () => {}, error: () => {} }; // what node-ws adds as onOpen returns
    for (const [event, listener] of Object.entries(nodeWs)) ws.on(event, listener);
    const otherEvent = (): void => {};
    ws.on('ping', otherEvent); // not one of node-ws's events: stays
    await accepted;
    await Promise.resolve();
    expect(ws.listeners('close')).toContain(serverTracking);
    for (const [event, listener] of Object.entries(nodeWs)) expect(ws.listeners(event)).not.toContain(listener);
    expect(ws.listenerCount('message')).toBe(1);
    expect(ws.listenerCount('close')).toBe(3);
    expect(ws.listenerCount('error')).toBe(1);
    expect(ws.listeners('ping')).toEqual([otherEvent]);
    // The listener table is a plain object now (no hash dictionary), still with no prototype:
    // an event named after an Object.prototype property finds nothing.
    const table = (ws as unknown as { _events: object })._events;
    expect(hasFastProperties(table)).toBe(true);
    expect(Object.getPrototypeOf(table)).toBeNull();
    expect(ws.listenerCount('toString')).toBe(0);
    expect(ws.emit('constructor')).toBe(false);
    // and the emitter goes on adding and removing listeners on it.
    const later = (): void => {};
    ws.on('message', later);
    expect(ws.listenerCount('message')).toBe(2);
    ws.off('message', later);
    ws.removeAllListeners('ping');
    expect(ws.eventNames()).not.toContain('ping');
    expect(ws.listenerCount('message')).toBe(1);
    ws.emit('close', 1000, Buffer.from(''));
    ws.emit('close', 1000, Buffer.from(''));
    expect(closedOnce).toBe(1);
  });

  it('a socket that closes between ws making it and node-ws opening it is reported once and never counted open', async () => {
    const closed: number[] = [];
    const transport = new NodeWsTransport(fakeSocket());
    transport.attach({ frame: () => {}, closed: (code) => closed.push(code) });
    const accepted = transport.accept(undefined);
    const ws = fakeWs();
    transport.claim(ws);
    ws.emit('close', 1001, Buffer.from('going'));
    NodeWsTransport.wsEvents.onOpen!(new Event('open'), { raw: ws } as never);
    await accepted;
    expect(closed).toEqual([1001]);
    expect(transport.isOpen).toBe(false);
  });

  it('writes the first frame of a tick at once, and corks the socket for the rest of a burst until the tick ends', async () => {
    const log: string[] = [];
    const socket = Object.assign(fakeSocket(), { cork: () => log.push('cork'), uncork: () => log.push('uncork') });
    const transport = new NodeWsTransport(socket);
    transport.attach({ frame: () => {}, closed: () => {} });
    const accepted = transport.accept(undefined);
    const ws = Object.assign(fakeWs(), { send: (data: string) => log.push(`send ${data}`) });
    open(transport, ws);
    await accepted;
    transport.send('lone');
    expect(log).toEqual(['send lone']); // not corked: nothing waits for the tick to end
    await new Promise((resolve) => process.nextTick(resolve));
    log.length = 0;
    transport.send('a');
    transport.send('b');
    transport.send('c');
    expect(log).toEqual(['send a', 'cork', 'send b', 'send c']);
    await new Promise((resolve) => process.nextTick(resolve));
    expect(log).toEqual(['send a', 'cork', 'send b', 'send c', 'uncork']);
    log.length = 0;
    transport.send('next tick'); // a new tick: at once again
    expect(log).toEqual(['send next tick']);
  });

  it('closes with the code a consumer gave before the socket opened', async () => {
    const transport = new NodeWsTransport(fakeSocket());
    transport.attach({ frame: () => {}, closed: () => {} });
    transport.close(4403, 'no');
    expect(await transport.decision).toBe('upgrade');
    const ws = fakeWs();
    open(transport, ws);
    expect(ws.closedWith).toEqual([4403, 'no']);
  });

  it('ends with 1006 when the client leaves before the socket opened, and answers accept at once', async () => {
    const socket = fakeSocket();
    const closed: number[] = [];
    const transport = new NodeWsTransport(socket);
    transport.attach({ frame: () => {}, closed: (code) => closed.push(code) });
    socket.emit('close');
    expect(await transport.decision).toBe('gone');
    await transport.accept(undefined);
    transport.close(1000, '');
    expect(closed).toEqual([1006]);
    expect(await transport.decision).toBe('gone');
  });
});
