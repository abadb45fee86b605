/**
 * The one file that translates @hono/node-ws (its WSContext and the raw `ws` socket) to the
 * consumers' WebsocketTransport, as hono's adapter files translate each runtime's socket.
 *
 * The upgrade waits for the consumer: the route runs `connect()` first, and only when it has
 * accepted (or closed) does node-ws complete the handshake, with the subprotocol `accept`
 * chose. A close before accept still upgrades, then closes with the code, because a browser
 * can read a close code but never the status of a refused handshake.
 */
import type { Socket } from 'node:net';
import type { WSEvents } from 'hono/ws';
import type { WebSocket } from 'ws';
import { RESOLVED, type WebsocketTransport, type WebsocketTransportEvents } from '../consumers/index.js';
import { defineFlags } from '../layers/flags.js';

/** What the route does once the consumer has decided: complete the upgrade, or nothing (the client left). */
export type UpgradeDecision = 'upgrade' | 'gone';

/** `ws` receiver error codes → the close code the peer was sent (ws puts it on a private symbol). */
const CLOSE_CODE_OF_WS_ERROR: Readonly<Record<string, number>> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: 1009,
  WS_ERR_INVALID_UTF8: 1007,
  WS_ERR_INVALID_CLOSE_CODE: 1002,
  WS_ERR_INVALID_OPCODE: 1002,
  WS_ERR_EXPECTED_FIN: 1002,
  WS_ERR_EXPECTED_MASK: 1002,
  WS_ERR_UNEXPECTED_MASK: 1002,
  WS_ERR_UNEXPECTED_RSV_1: 1002,
  WS_ERR_UNEXPECTED_RSV_2_3: 1002,
  WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH: 1002,
};

/**
 * The state of a handshake in progress, dropped once the socket opened or the client left: an
 * idle connection then keeps none of its resolvers, promises or listeners.
 */
class Handshake {
  /** Resolves once the consumer decided (accepted or closed), or the client left first. */
  readonly decision: Promise<UpgradeDecision>;
  /** Resolves once the socket opened, or the client left. */
  readonly opened: Promise<void>;
  decide!: (decision: UpgradeDecision) => void;
  open!: () => void;
  /** The subprotocol the consumer accepted with. */
  subprotocol: string | undefined;
  /** A close the consumer asked for before the socket opened. */
  pendingClose: { code: number; reason: string } | undefined;

  constructor(readonly onSocketClose: () => void) {
    this.decision = new Promise((resolve) => (this.decide = resolve));
    this.opened = new Promise((resolve) => (this.open = resolve));
  }
}

/** Whole milliseconds since the process started: the heartbeat's clock. */
export const monotonicMs = (): number => Math.floor(performance.now());

/** After the handshake, what `decision` and `accept` would have resolved to. */
const UPGRADED = Promise.resolve<UpgradeDecision>('upgrade');
const GONE = Promise.resolve<UpgradeDecision>('gone');

/**
 * The transport of each open socket, found from the socket: node-ws's events and ws's listeners
 * are then one function each for all sockets, not closures made per socket.
 */
const TRANSPORT = Symbol('NodeWsTransport');
type Listener = (...args: unknown[]) => void;
/** The events node-ws listens to on each socket. */
const NODE_WS_EVENTS: ReadonlySet<string | symbol> = new Set(['message', 'close', 'error']);
type TaggedWebSocket = WebSocket & { [TRANSPORT]?: NodeWsTransport };

const TRANSPORT_FLAGS = { awaitingPong: 1, reported: 2, corked: 4, sentThisTick: 8 } as const;

/** A WebSocket on @hono/node-ws, as consumers see it. */
export class NodeWsTransport implements WebsocketTransport {
  /**
   * When the last ping went out, also the time the socket opened: whole ms of `monotonicMs()`, a
   * small integer that V8 keeps in the field itself (a `Date.now()` would be a boxed double).
   */
  pingSentAt = 0;

  private ws: WebSocket | undefined;
  private events: WebsocketTransportEvents | undefined;
  private handshake: Handshake | undefined;
  private errorCloseCode: number | undefined;
  /** The yes/no states below, one bit each (see defineFlags). */
  private flags = 0;

  static {
    defineFlags(NodeWsTransport.prototype, TRANSPORT_FLAGS);
  }

  /** True from a ping until its pong. */
  declare awaitingPong: boolean;
  /** The close was reported to the runner. */
  private declare reported: boolean;
  /** True while the socket is corked until the end of the current tick. */
  private declare corked: boolean;
  /** A frame went out in the current tick (see `send`). */
  private declare sentThisTick: boolean;

  /**
   * `socket` is the upgrade request's TCP socket (the request itself is not kept: a live
   * connection holds nothing of its handshake).
   */
  constructor(private readonly socket: Socket) {
    this.handshake = new Handshake(() => this.clientLeft());
    socket.once('close', this.handshake.onSocketClose);
  }

  /** The WebSocket is open and has not closed: the heartbeat pings it. */
  get isOpen(): boolean {
    return this.ws !== undefined && !this.reported;
  }

  /** Resolves once the consumer decided (accepted or closed), or the client left first. */
  get decision(): Promise<UpgradeDecision> {
    return this.handshake?.decision ?? (this.ws ? UPGRADED : GONE);
  }

  /** Resolves once the socket opened (node-ws has built its context), or the client left. */
  get opened(): Promise<void> {
    return this.handshake?.opened ?? RESOLVED;
  }

  /** The subprotocol the consumer accepted with (read by `handleProtocols` during the handshake). */
  get subprotocol(): string | undefined {
    return this.handshake?.subprotocol;
  }

  /** Connects the runner that receives this socket's frames and close. */
  attach(events: WebsocketTransportEvents): void {
    this.events = events;
    // The client may have left while precheck ran: its socket's 'close' has fired already.
    if (this.socket.destroyed) this.clientLeft();
  }

  /** Stops watching the request's socket (no consumer will use this transport). */
  detach(): void {
    if (this.handshake) this.socket.off('close', this.handshake.onSocketClose);
  }

  /**
   * Marks `ws` as this transport's socket (ws has just made it; node-ws opens it next) and reads
   * its frames and close from ws itself, from the first frame on. node-ws would wrap each frame in
   * a DOM MessageEvent (and the close in a CloseEvent) before handing it over: it builds them
   * only for the handlers it is given, and `wsEvents` gives it none but `onOpen`.
   */
  claim(ws: WebSocket): void {
    (ws as TaggedWebSocket)[TRANSPORT] = this;
    ws.on('message', NodeWsTransport.onMessage);
    ws.on('close', NodeWsTransport.onClose);
  }

  // The consumers' contract.

  accept(subprotocol: string | undefined): Promise<void> {
    const handshake = this.handshake;
    if (!handshake) return RESOLVED;
    handshake.subprotocol = subprotocol;
    handshake.decide('upgrade');
    return handshake.opened;
  }

  send(data: string | Uint8Array): void {
    const ws = this.ws;
    if (!ws) return;
    // The first frame of a tick goes out at once: a lone signal waits for nothing. Consumers send
    // from promise continuations, one message at a time, so from a second frame in the same tick
    // on, the TCP socket is corked until the tick ends, and the rest of a burst leaves in one
    // write, not one syscall each. (ws writes on the upgrade request's socket itself.)
    if (!this.sentThisTick) {
      this.sentThisTick = true;
      if (NodeWsTransport.senders.push(this) === 1) process.nextTick(NodeWsTransport.endTick);
    } else if (!this.corked && this.socket.writable) {
      this.corked = true;
      this.socket.cork();
    }
    ws.send(data);
  }

  /**
   * The transports that sent in the current tick: one `process.nextTick` ends the tick for all of
   * them, instead of a callback made per socket per tick.
   */
  private static readonly senders: NodeWsTransport[] = [];

  /** The tick ends: each socket that sent in it may send at once again, and one a burst corked is uncorked. */
  private static endTick(): void {
    const senders = NodeWsTransport.senders;
    for (let i = 0; i < senders.length; i++) {
      const transport = senders[i]!;
      transport.sentThisTick = false;
      if (transport.corked) {
        transport.corked = false;
        transport.socket.uncork();
      }
    }
    senders.length = 0;
  }

  close(code: number, reason: string): void {
    if (this.ws) {
      this.ws.close(code, reason);
      return;
    }
    const handshake = this.handshake;
    if (!handshake) return; // the client left: the consumer has been told
    handshake.pendingClose = { code, reason };
    handshake.decide('upgrade');
  }

  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  pause(): void {
    this.ws?.pause();
  }

  resume(): void {
    this.ws?.resume();
  }

  // The binding's side.

  /**
   * node-ws's events, the same object for every socket (each finds its transport from `ctx.raw`):
   * only `onOpen`, as frames and the close come from ws directly (`claim`).
   */
  static readonly wsEvents: WSEvents<WebSocket> = {
    onOpen: (_event, ctx) => {
      const ws = ctx.raw as TaggedWebSocket;
      ws[TRANSPORT]?.open(ws);
    },
  };

  /** ws's 'message' listener, called with the socket as `this` (ws has checked text is UTF-8). */
  private static onMessage(this: TaggedWebSocket, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    const events = this[TRANSPORT]?.events;
    if (!events) return;
    if (!isBinary) events.frame({ text: (data as Buffer).toString('utf8') });
    else events.frame({ bytes: Array.isArray(data) ? new Uint8Array(Buffer.concat(data)) : new Uint8Array(data) });
  }

  /** ws's 'close' listener: the close code the peer sent, or the one a protocol error got. */
  private static onClose(this: TaggedWebSocket, code: number, reason: Buffer): void {
    const transport = this[TRANSPORT];
    transport?.report(transport.errorCloseCode ?? code, reason.toString());
  }

  /** Sends a ping; the heartbeat calls it. */
  ping(now: number): void {
    this.awaitingPong = true;
    this.pingSentAt = now;
    try {
      this.ws?.ping();
    } catch {
      // The socket is closing; its close event ends the consumer.
    }
  }

  /** Drops the socket without a closing handshake (a dead peer, or a shutdown that ran out of time). */
  terminate(): void {
    if (this.ws) this.ws.terminate();
    else this.socket.destroy();
  }

  /** ws's 'pong' listener, called with the socket as `this`. */
  private static onPong(this: TaggedWebSocket): void {
    const transport = this[TRANSPORT];
    if (transport) transport.awaitingPong = false;
  }

  /** ws's 'error' listener (the receiver's protocol errors come before 'close'). */
  private static onError(this: TaggedWebSocket, err: Error & { code?: string }): void {
    const transport = this[TRANSPORT];
    if (transport) transport.errorCloseCode ??= (err.code && CLOSE_CODE_OF_WS_ERROR[err.code]) || undefined;
  }

  private open(ws: WebSocket): void {
    const handshake = this.handshake;
    if (!handshake) return;
    this.handshake = undefined;
    if (this.reported) {
      handshake.open(); // closed before node-ws opened it: nothing to keep
      return;
    }
    this.ws = ws;
    this.socket.off('close', handshake.onSocketClose);
    this.pingSentAt = monotonicMs();
    ws.on('pong', NodeWsTransport.onPong);
    ws.on('error', NodeWsTransport.onError);
    // node-ws adds its own 'message', 'close' and 'error' listeners right after onOpen returns.
    // With no handlers of its to call they do nothing, yet each closes over node-ws's state for
    // this socket (its context object, a URL, the Hono context, a buffer of early frames): about
    // 1.6 KiB an idle connection keeps for nothing. Once they are on, remove them: exactly the ones
    // added after this point (a listener added before, such as ws's server's own 'close' listener
    // when it tracks clients, must stay).
    const before = new Set(NodeWsTransport.listenerList(ws).map(([, listener]) => listener));
    queueMicrotask(() => NodeWsTransport.keepListeners(ws, before));
    if (handshake.pendingClose) ws.close(handshake.pendingClose.code, handshake.pendingClose.reason);
    handshake.open();
  }

  /** Every listener of `ws` as [event, listener], `once` wrappers as they are. */
  private static listenerList(ws: WebSocket): Array<[string | symbol, Listener]> {
    return ws.eventNames().flatMap((event) => ws.rawListeners(event).map((listener): [string | symbol, Listener] => [event, listener as Listener]));
  }

  /**
   * Removes every 'message', 'close' and 'error' listener of `ws` not in `kept`, and gives the
   * others a table of their own. An emitter starts with a `{ __proto__: null }` table, which V8
   * keeps as a hash dictionary: 256 bytes for four events, and removing a listener deletes a key
   * and leaves it bigger still. The new table holds the same listeners with no prototype either
   * (so no event name can find an inherited property), but as a plain object with one field per
   * event: about 200 bytes less for the socket's life (`bench/heap.mjs`). EventEmitter reads and
   * writes its table only by key, so it keeps working on it (a later removal makes it a
   * dictionary again, which is only at the end).
   */
  private static keepListeners(ws: WebSocket, kept: ReadonlySet<Listener>): void {
    const keep = NodeWsTransport.listenerList(ws).filter(([event, listener]) => kept.has(listener) || !NODE_WS_EVENTS.has(event));
    ws.removeAllListeners();
    for (const [event, listener] of keep) ws.on(event, listener);
    const emitter = ws as unknown as { _events?: Record<string | symbol, unknown> };
    const events = emitter._events;
    if (events === undefined || Object.getPrototypeOf(events) !== null) return; // not the EventEmitter we know
    const table: Record<string | symbol, unknown> = {};
    for (const event of Reflect.ownKeys(events)) table[event] = events[event];
    emitter._events = Object.setPrototypeOf(table, null) as Record<string | symbol, unknown>;
  }

  /** The TCP connection closed before the WebSocket opened: the consumer ends with 1006. */
  private clientLeft(): void {
    const handshake = this.handshake;
    if (this.ws || !handshake) return;
    this.handshake = undefined;
    handshake.decide('gone');
    handshake.open();
    this.report(1006, '');
  }

  private report(code: number, reason: string): void {
    if (this.reported) return;
    this.reported = true;
    this.events?.closed(code, reason);
  }
}
