/**
 * Drives one WebsocketConsumer over a WebsocketTransport: the handshake decision (accept or
 * close), frames in, frames out with the buffered-bytes check, and the end of the connection.
 * Bindings (src/hono) and the communicator both use it, so tests exercise the same code.
 */
import { isValidCloseCode, requireValidClose, truncateCloseReason, CloseCode } from './close-codes.js';
import { DenyConnection, StopConsumer } from './errors.js';
import type { WebsocketControl, WebsocketState } from './internal.js';
import { defineFlags } from '../layers/flags.js';
import { Runner, RUNNER_FREE_BIT, callHook, type RunnerOptions } from './runner.js';
import type { ConsumerClassLike } from './consumer.js';
import type { WebsocketTransport, WebsocketTransportEvents } from './transport.js';
import { bindWebsocketControl, type Frame, type WebsocketConsumer } from './websocket.js';

/** Options of a WebsocketRunner. */
export interface WebsocketRunnerOptions extends RunnerOptions {
  /** The connection, as the binding translated it. */
  transport: WebsocketTransport;
}

/** Runs one WebsocketConsumer; the binding reports frames and the close to it. */
export class WebsocketRunner<C extends WebsocketConsumer = WebsocketConsumer>
  extends Runner<C>
  implements WebsocketControl, WebsocketTransportEvents {
  private readonly transport: WebsocketTransport;
  private current: WebsocketState = 'connecting';

  static {
    defineFlags(WebsocketRunner.prototype, { opened: RUNNER_FREE_BIT });
  }

  /** The consumer accepted and the socket opened (a bit of the runner's flags). */
  private declare opened: boolean;

  constructor(Class: ConsumerClassLike & (new () => C), opts: WebsocketRunnerOptions) {
    super(Class, opts);
    this.transport = opts.transport;
    bindWebsocketControl(this.consumer, this);
  }

  /** The connection's state. */
  get state(): WebsocketState {
    return this.current;
  }

  /** Bytes sent but not yet written. */
  get bufferedAmount(): number {
    return this.transport.bufferedAmount;
  }

  /** True once the consumer accepted and the socket opened. */
  get hasOpened(): boolean {
    return this.opened;
  }

  // What the consumer calls.

  async accept(subprotocol: string | undefined): Promise<void> {
    if (this.current !== 'connecting') {
      if (this.current === 'open') throw new Error('accept() was called twice');
      return; // a close started or the client left: there is nothing to accept
    }
    if (subprotocol !== undefined) {
      const offered = this.consumer.scope.subprotocols ?? [];
      if (!offered.includes(subprotocol)) {
        throw new RangeError(`accept(${JSON.stringify(subprotocol)}): the client offered ${offered.length ? JSON.stringify(offered) : 'no subprotocols'}`);
      }
    }
    this.current = 'open';
    await this.transport.accept(subprotocol);
    if (this.current === 'open' && !this.opened) {
      this.opened = true;
      if (this.hooks.onOpen) callHook(this.log, 'onOpen', this.hooks.onOpen, this.consumer);
    }
  }

  async close(code: number, reason: string): Promise<void> {
    requireValidClose(code, reason);
    if (this.current === 'closing' || this.current === 'closed') return;
    this.current = 'closing';
    this.stopReceiving();
    this.transport.close(code, reason);
  }

  /** Sends at once; returns a promise only when it had to close the connection instead. */
  send(data: string | Uint8Array): Promise<void> | undefined {
    if (this.current === 'connecting') throw new Error('send() before accept(): accept the connection first');
    if (this.current !== 'open') return undefined;
    const buffered = this.transport.bufferedAmount;
    if (buffered > this.maxBufferedBytes) {
      this.log.warn({ bufferedAmount: buffered, limit: this.maxBufferedBytes }, 'The peer is not reading what it is sent; closing with 1013');
      return this.close(CloseCode.TRY_AGAIN_LATER, 'Peer is not reading');
    }
    this.transport.send(data);
    return undefined;
  }

  // What the binding reports.

  frame(frame: Frame): void {
    if (this.current === 'closed') return;
    this.enqueueFrame(frame);
  }

  closed(code: number, _reason = ''): void {
    if (this.current === 'closed') return;
    this.current = 'closed';
    this.enqueueFinish(code);
  }

  /** Calls the consumer's `serverShutdown(code)` in its turn (default 1012: service restart). */
  shutdown(code: number = CloseCode.SERVICE_RESTART): void {
    this.enqueueTask(() => this.consumer.serverShutdown(code));
  }

  // The runner's contract.

  protected async begin(): Promise<void> {
    await this.consumer.connect();
    if (this.current === 'connecting') {
      throw new Error(`${this.consumer.constructor.name}.connect() returned without calling accept() or close()`);
    }
  }

  protected override handleFrame(frame: Frame): Promise<void> | undefined {
    if (this.current !== 'open') return undefined; // once a close has started, frames are not handled
    return this.consumer.receive(frame);
  }

  protected async end(err: unknown): Promise<void> {
    let code: number = CloseCode.INTERNAL_ERROR;
    let reason = 'Internal error';
    if (err instanceof StopConsumer) {
      code = CloseCode.NORMAL;
      reason = '';
    } else if (err instanceof DenyConnection) {
      code = isValidCloseCode(err.closeCode) ? err.closeCode : CloseCode.POLICY_VIOLATION;
      reason = truncateCloseReason(err.reason);
    }
    await this.close(code, reason);
  }

  protected callDisconnect(code: number): Promise<void> {
    return this.consumer.disconnect(code);
  }

  protected override pauseFrames(): void {
    this.transport.pause?.();
  }

  protected override resumeFrames(): void {
    this.transport.resume?.();
  }

  protected override afterFinish(code: number): void {
    if (this.opened && this.hooks.onClose) callHook(this.log, 'onClose', this.hooks.onClose, this.consumer, code);
  }
}
