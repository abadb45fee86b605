/**
 * Drives one HttpConsumer over an HttpTransport: `handle(body)` first, then layer messages until
 * the response ends or the client goes away; then the groups are left and `disconnect()` runs.
 */
import { DenyConnection, StopConsumer } from './errors.js';
import type { HttpControl, HttpState } from './internal.js';
import { handlerTable, type ConsumerClassLike } from './consumer.js';
import { Runner, type RunnerOptions } from './runner.js';
import { bindHttpControl, type HttpConsumer } from './http.js';
import type { HttpTransport, HttpTransportEvents } from './transport.js';

/** Options of an HttpRunner. */
export interface HttpRunnerOptions extends RunnerOptions {
  /** The response, as the binding translated it. */
  transport: HttpTransport;
  /** The whole request body. */
  body: Uint8Array;
}

const encoder = new TextEncoder();

/** Runs one HttpConsumer; the binding reports the client leaving to it. */
export class HttpRunner<C extends HttpConsumer = HttpConsumer> extends Runner<C> implements HttpControl, HttpTransportEvents {
  private readonly transport: HttpTransport;
  private readonly body: Uint8Array;
  private readonly handlesMessages: boolean;
  private current: HttpState = 'pending';

  constructor(Class: ConsumerClassLike & (new () => C), opts: HttpRunnerOptions) {
    super(Class, opts);
    this.transport = opts.transport;
    this.body = opts.body;
    this.handlesMessages = handlerTable(Class).size > 0;
    bindHttpControl(this.consumer, this);
  }

  /** The response's state. */
  get state(): HttpState {
    return this.current;
  }

  /** Bytes sent but not yet written. */
  get bufferedAmount(): number {
    return this.transport.bufferedAmount;
  }

  // What the consumer calls.

  async sendHeaders(status: number, headers: Record<string, string>): Promise<void> {
    if (this.current === 'ended' || this.current === 'gone') return;
    if (this.current === 'streaming') throw new Error('sendHeaders() was called twice: the response has started');
    if (!Number.isInteger(status) || status < 200 || status > 599) throw new RangeError(`HTTP status ${status} is not one a response may have (200-599)`);
    this.current = 'streaming';
    this.transport.start(status, headers);
  }

  async sendBody(chunk: string | Uint8Array, more: boolean): Promise<void> {
    if (this.current === 'ended' || this.current === 'gone') return;
    if (this.current === 'pending') throw new Error('sendBody() before sendHeaders(): start the response first');
    const bytes = typeof chunk === 'string' ? encoder.encode(chunk) : chunk;
    if (!(bytes instanceof Uint8Array)) throw new TypeError('sendBody() takes a string or a Uint8Array');
    const buffered = this.transport.bufferedAmount;
    if (buffered > this.maxBufferedBytes) {
      this.log.warn({ bufferedAmount: buffered, limit: this.maxBufferedBytes }, 'The client is not reading the response; cutting it');
      this.current = 'ended';
      this.transport.abort('Client is not reading');
      this.enqueueFinish(0);
      return;
    }
    if (bytes.byteLength > 0) this.transport.write(bytes);
    if (!more) {
      this.current = 'ended';
      this.transport.end();
      this.enqueueFinish(0);
    }
  }

  // What the binding reports.

  gone(): void {
    if (this.current === 'ended' || this.current === 'gone') return;
    this.current = 'gone';
    this.enqueueFinish(0);
  }

  /** Calls the consumer's `serverShutdown()` in its turn. */
  shutdown(): void {
    this.enqueueTask(() => this.consumer.serverShutdown());
  }

  // The runner's contract.

  protected async begin(): Promise<void> {
    await this.consumer.handle(this.body);
    if (this.current === 'pending' && !this.handlesMessages) {
      throw new Error(`${this.consumer.constructor.name}.handle() returned without responding, and it handles no layer messages that could`);
    }
  }

  protected async end(err: unknown): Promise<void> {
    if (this.current === 'pending') {
      const [status, code, message] = err instanceof StopConsumer
        ? [204, '', '']
        : err instanceof DenyConnection
          ? [403, 'forbidden', err.reason || 'Forbidden.']
          : [500, 'internal-error', 'The server failed to handle this request.'];
      this.current = 'streaming';
      if (status === 204) this.transport.start(204, {});
      else {
        this.transport.start(status, { 'content-type': 'application/json' });
        this.transport.write(encoder.encode(JSON.stringify({ type: 'error', code, message })));
      }
      this.current = 'ended';
      this.transport.end();
    } else if (this.current === 'streaming') {
      this.current = 'ended';
      if (err instanceof StopConsumer) this.transport.end();
      else this.transport.abort('Handler failed');
    }
    this.enqueueFinish(0);
  }

  protected callDisconnect(): Promise<void> {
    return this.consumer.disconnect();
  }
}
