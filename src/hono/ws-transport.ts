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
import type { WebsocketTransport, WebsocketTransportEvents } from '../consumers/index.js';

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

/** A WebSocket on @hono/node-ws, as consumers see it. */
export class NodeWsTransport implements WebsocketTransport {
  /** Resolves once the consumer decided (accepted or closed), or the client left first. */
  readonly decision: Promise<UpgradeDecision>;
  /** The subprotocol the consumer accepted with (read by `handleProtocols` during the handshake). */
  subprotocol: string | undefined;
  /** When the last ping went out (ms); also the time the socket opened. */
  pingSentAt = 0;
  /** True from a ping until its pong. */
  awaitingPong = false;

  private ws: WebSocket | undefined;
  private events: WebsocketTransportEvents | undefined;
  private pendingClose: { code: number; reason: string } | undefined;
  private errorCloseCode: number | undefined;
  private reported = false;
  private decide!: (decision: UpgradeDecision) => void;
  private opened!: () => void;
  private readonly openedPromise: Promise<void>;
  private readonly onSocketClose = (): void => this.clientLeft();

  /**
   * `socket` is the upgrade request's TCP socket (the request itself is not kept: a live
   * connection holds nothing of its handshake).
   */
  constructor(private readonly socket: Socket, private readonly onOpen: (t: NodeWsTransport) => void, private readonly onEnd: (t: NodeWsTransport) => void) {
    this.decision = new Promise((resolve) => (this.decide = resolve));
    this.openedPromise = new Promise((resolve) => (this.opened = resolve));
    socket.once('close', this.onSocketClose);
  }

  /** Connects the runner that receives this socket's frames and close. */
  attach(events: WebsocketTransportEvents): void {
    this.events = events;
    // The client may have left while precheck ran: its socket's 'close' has fired already.
    if (this.socket.destroyed) this.clientLeft();
  }

  /** Stops watching the request's socket (no consumer will use this transport). */
  detach(): void {
    this.socket.off('close', this.onSocketClose);
  }

  // The consumers' contract.

  accept(subprotocol: string | undefined): Promise<void> {
    this.subprotocol = subprotocol;
    this.decide('upgrade');
    return this.openedPromise;
  }

  /** True while the socket is corked until the end of the current tick. */
  private corked = false;

  send(data: string | Uint8Array): void {
    const ws = this.ws;
    if (!ws) return;
    // Consumers send from promise continuations, one message at a time: cork the TCP socket until
    // the end of this tick so the frames of a burst leave in one write, not one syscall each.
    // (ws writes on the upgrade request's socket itself.)
    const socket = this.socket;
    if (!this.corked && socket.writable) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    ws.send(data);
  }

  close(code: number, reason: string): void {
    if (this.ws) {
      this.ws.close(code, reason);
      return;
    }
    this.pendingClose = { code, reason };
    this.decide('upgrade');
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

  /** node-ws's events for this socket. */
  wsEvents(): WSEvents<WebSocket> {
    return {
      onOpen: (_event, ctx) => this.open(ctx.raw!),
      onMessage: (event) => {
        const data = event.data;
        this.events?.frame(typeof data === 'string' ? { text: data } : { bytes: new Uint8Array(data as ArrayBuffer) });
      },
      onClose: (event) => this.report(this.errorCloseCode ?? event.code, event.reason),
    };
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

  private open(ws: WebSocket): void {
    this.ws = ws;
    this.socket.off('close', this.onSocketClose);
    this.pingSentAt = Date.now();
    ws.on('pong', () => (this.awaitingPong = false));
    ws.on('error', (err: Error & { code?: string }) => {
      this.errorCloseCode ??= (err.code && CLOSE_CODE_OF_WS_ERROR[err.code]) || undefined;
    });
    this.onOpen(this);
    if (this.pendingClose) ws.close(this.pendingClose.code, this.pendingClose.reason);
    this.opened();
  }

  /** The TCP connection closed before the WebSocket opened: the consumer ends with 1006. */
  private clientLeft(): void {
    if (this.ws) return;
    this.decide('gone');
    this.opened();
    this.report(1006, '');
  }

  private report(code: number, reason: string): void {
    if (this.reported) return;
    this.reported = true;
    this.onEnd(this);
    this.events?.closed(code, reason);
  }
}
