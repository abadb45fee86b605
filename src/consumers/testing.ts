/**
 * In-process test harnesses, as Channels' WebsocketCommunicator and HttpCommunicator: they drive
 * a consumer through the same runner the server uses, over an in-memory transport, without a
 * port. The communicator plays the client: it answers a server close as a browser does.
 */
import type { ChannelLayer } from '../layers/index.js';
import type { ConsumerClassLike } from './consumer.js';
import { HttpRunner } from './http-runner.js';
import type { HttpConsumer } from './http.js';
import { RecordingLogger, type Logger } from './logger.js';
import { runPrecheck, type PrecheckClass } from './precheck.js';
import type { ConsumerHooks } from './runner.js';
import { createScope, type Scope } from './scope.js';
import type { HttpTransport, WebsocketTransport } from './transport.js';
import type { Frame, WebsocketConsumer } from './websocket.js';
import { WebsocketRunner } from './websocket-runner.js';

/** What a communicator's output queue holds: a frame, or the close the server sent. */
export type Output = Frame | { close: number; reason?: string };

/** The answer to `WebsocketCommunicator.connect`. */
export interface ConnectResult {
  /** True when the consumer accepted. */
  accepted: boolean;
  /** The subprotocol it accepted with. */
  subprotocol?: string;
  /** The close code, when the consumer closed before accepting. */
  closeCode?: number;
  /** The close reason, when the consumer closed before accepting. */
  closeReason?: string;
  /** The HTTP status, when precheck refused the request (no consumer was created). */
  status?: number;
  /** The body precheck refused with. */
  body?: unknown;
}

/** Options of a WebsocketCommunicator. */
export interface WebsocketCommunicatorOptions {
  layer: ChannelLayer;
  path?: string;
  params?: Record<string, string>;
  query?: string | Record<string, string>;
  headers?: Record<string, string>;
  client?: { address: string; port?: number };
  /** Subprotocols the client offers (default: none, or those in a `sec-websocket-protocol` header). */
  subprotocols?: string[];
  /** Where the consumer logs (default: a RecordingLogger, readable as `communicator.logger`). */
  logger?: Logger;
  /** Unread output bytes over which the consumer sheds this client with 1013 (default 1 MiB). */
  maxBufferedBytes?: number;
  hooks?: ConsumerHooks;
}

type WebsocketClass<C extends WebsocketConsumer> = ConsumerClassLike & PrecheckClass & (new () => C);

/** A queue of outputs that a reader awaits with a timeout. */
class OutputQueue<T> {
  private readonly items: T[] = [];
  private waiter: (() => void) | undefined;

  push(item: T): void {
    this.items.push(item);
    this.waiter?.();
  }

  get size(): number {
    return this.items.length;
  }

  /** Waits until an item is queued or `timeoutMs` passes; true when one is. */
  async wait(timeoutMs: number): Promise<boolean> {
    if (this.items.length > 0) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve(false);
      }, timeoutMs);
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve(true);
      };
    });
  }

  shift(): T | undefined {
    return this.items.shift();
  }
}

/** Resolves with `promise`, or rejects when `timeoutMs` passes first. */
async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not happen within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function frameSize(frame: Frame): number {
  return frame.text !== undefined ? Buffer.byteLength(frame.text) : frame.bytes?.byteLength ?? 0;
}

/** Drives a WebsocketConsumer in-process, playing the client. */
export class WebsocketCommunicator<C extends WebsocketConsumer = WebsocketConsumer> {
  /** The scope the consumer gets (precheck may have filled `user` and `state`). */
  readonly scope: Scope;
  /** Where the consumer logs, when no logger was given. */
  readonly logger: RecordingLogger | undefined;
  private readonly log: Logger;
  private readonly outputs = new OutputQueue<Output>();
  private runner: WebsocketRunner<C> | undefined;
  private unreadBytes = 0;
  private accepted = false;
  private clientClosed = false;
  private decide: ((result: ConnectResult) => void) | undefined;

  constructor(private readonly Class: WebsocketClass<C>, private readonly opts: WebsocketCommunicatorOptions) {
    const headers = opts.headers ?? {};
    this.scope = createScope({
      type: 'websocket',
      path: opts.path ?? '/',
      params: opts.params ?? {},
      query: opts.query ?? '',
      headers,
      client: opts.client ?? { address: '127.0.0.1' },
      ...(opts.subprotocols ? { subprotocols: opts.subprotocols } : {}),
    });
    this.logger = opts.logger ? undefined : new RecordingLogger();
    this.log = opts.logger ?? this.logger!;
  }

  /** The consumer instance, once `connect` has created it. */
  get consumer(): C | undefined {
    return this.runner?.consumer;
  }

  /** Resolves when the consumer has finished (groups left, disconnect run). */
  get done(): Promise<void> {
    return this.runner?.done ?? Promise.resolve();
  }

  /** Opens the connection: runs precheck, then the consumer's connect, until it accepts or closes. */
  async connect(timeoutMs = 1000): Promise<ConnectResult> {
    if (this.runner || this.decide) throw new Error('connect() was called twice');
    const decided = new Promise<ConnectResult>((resolve) => (this.decide = resolve));
    const refusal = await runPrecheck(this.Class, this.scope, this.opts.layer, this.log);
    if (refusal) return { accepted: false, status: refusal.status, ...(refusal.body !== undefined ? { body: refusal.body } : {}) };
    this.runner = new WebsocketRunner(this.Class, {
      scope: this.scope,
      layer: this.opts.layer,
      logger: this.log,
      ...(this.opts.maxBufferedBytes !== undefined ? { maxBufferedBytes: this.opts.maxBufferedBytes } : {}),
      ...(this.opts.hooks ? { hooks: this.opts.hooks } : {}),
      transport: this.transport(),
    });
    this.runner.start();
    return within(decided, timeoutMs, 'The consumer accepting or closing');
  }

  /** Sends a text frame to the consumer. */
  sendText(text: string): void {
    this.sendFrame({ text });
  }

  /** Sends a binary frame to the consumer. */
  sendBytes(bytes: Uint8Array): void {
    this.sendFrame({ bytes: Uint8Array.from(bytes) });
  }

  /** Sends `content` as a JSON text frame. */
  sendJson(content: unknown): void {
    this.sendText(JSON.stringify(content));
  }

  /** The next frame the consumer sent, or the close; rejects when nothing comes within `timeoutMs`. */
  async receiveOutput(timeoutMs = 1000): Promise<Output> {
    if (!(await this.outputs.wait(timeoutMs))) throw new Error(`No output from the consumer within ${timeoutMs} ms`);
    const output = this.outputs.shift()!;
    if (!('close' in output)) this.unreadBytes -= frameSize(output);
    return output;
  }

  /** The next frame, decoded as JSON; rejects for a close or a binary frame. */
  async receiveJson(timeoutMs = 1000): Promise<unknown> {
    const output = await this.receiveOutput(timeoutMs);
    if ('close' in output) throw new Error(`Expected a JSON frame, but the consumer closed with ${output.close}${output.reason ? ` (${output.reason})` : ''}`);
    if (output.text === undefined) throw new Error('Expected a JSON text frame, got a binary frame');
    return JSON.parse(output.text);
  }

  /** True when the consumer sends nothing within `timeoutMs` (nothing is taken from the queue). */
  async receiveNothing(timeoutMs = 100): Promise<boolean> {
    return !(await this.outputs.wait(timeoutMs));
  }

  /** Closes the connection from the client (default 1000) and waits for the consumer to finish. */
  async disconnect(code = 1000, timeoutMs = 1000): Promise<void> {
    if (!this.runner) return;
    if (!this.clientClosed) {
      this.clientClosed = true;
      this.runner.closed(code);
    }
    await within(this.runner.done, timeoutMs, 'The consumer finishing');
  }

  /** Calls the consumer's serverShutdown(code), as the binding does on shutdown. */
  shutdown(code = 1012): void {
    this.runner?.shutdown(code);
  }

  private sendFrame(frame: Frame): void {
    if (!this.runner || !this.accepted) throw new Error('The connection is not open: connect() and be accepted first');
    if (this.clientClosed) throw new Error('The connection is closed');
    this.runner.frame(frame);
  }

  /** The in-memory socket: outputs go to the queue; a close is answered as a browser would. */
  private transport(): WebsocketTransport {
    const unread = (): number => this.unreadBytes;
    return {
      accept: async (subprotocol) => {
        this.accepted = true;
        this.decide?.({ accepted: true, ...(subprotocol !== undefined ? { subprotocol } : {}) });
      },
      send: (data) => {
        const frame: Frame = typeof data === 'string' ? { text: data } : { bytes: Uint8Array.from(data) };
        this.unreadBytes += frameSize(frame);
        this.outputs.push(frame);
      },
      close: (code, reason) => {
        if (this.accepted) this.outputs.push(reason ? { close: code, reason } : { close: code });
        else this.decide?.({ accepted: false, closeCode: code, ...(reason ? { closeReason: reason } : {}) });
        if (!this.clientClosed) {
          this.clientClosed = true;
          queueMicrotask(() => this.runner?.closed(code, reason));
        }
      },
      get bufferedAmount() {
        return unread();
      },
    };
  }
}

/** The response an HttpCommunicator collected. */
export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
  /** The body as UTF-8 text. */
  text: string;
  /** False when the response was cut short (a failure after the headers, or a shed client). */
  complete: boolean;
}

/** Options of an HttpCommunicator. */
export interface HttpCommunicatorOptions {
  layer: ChannelLayer;
  method?: string;
  path?: string;
  params?: Record<string, string>;
  query?: string | Record<string, string>;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  client?: { address: string; port?: number };
  logger?: Logger;
  maxBufferedBytes?: number;
}

type HttpClass<C extends HttpConsumer> = ConsumerClassLike & PrecheckClass & (new () => C);

/** Drives an HttpConsumer in-process, playing the client. */
export class HttpCommunicator<C extends HttpConsumer = HttpConsumer> {
  /** The scope the consumer gets. */
  readonly scope: Scope;
  /** Where the consumer logs, when no logger was given. */
  readonly logger: RecordingLogger | undefined;
  private readonly log: Logger;
  private readonly events = new OutputQueue<{ start: { status: number; headers: Record<string, string> } } | { chunk: Uint8Array } | { end: boolean }>();
  private runner: HttpRunner<C> | undefined;
  private status: { status: number; headers: Record<string, string> } | undefined;
  private unreadBytes = 0;

  constructor(private readonly Class: HttpClass<C>, private readonly opts: HttpCommunicatorOptions) {
    this.scope = createScope({
      type: 'http',
      method: opts.method ?? 'GET',
      path: opts.path ?? '/',
      params: opts.params ?? {},
      query: opts.query ?? '',
      headers: opts.headers ?? {},
      client: opts.client ?? { address: '127.0.0.1' },
    });
    this.logger = opts.logger ? undefined : new RecordingLogger();
    this.log = opts.logger ?? this.logger!;
  }

  /** The consumer instance, once the request started. */
  get consumer(): C | undefined {
    return this.runner?.consumer;
  }

  /** Resolves when the consumer has finished. */
  get done(): Promise<void> {
    return this.runner?.done ?? Promise.resolve();
  }

  /** Sends the request; resolves with the status and headers once the consumer starts its response. */
  async start(timeoutMs = 1000): Promise<{ status: number; headers: Record<string, string> }> {
    if (this.runner || this.status) throw new Error('start() was called twice');
    const refusal = await runPrecheck(this.Class, this.scope, this.opts.layer, this.log);
    if (refusal) {
      this.status = { status: refusal.status, headers: refusal.headers ?? {} };
      const body = refusal.body === undefined ? new Uint8Array() : new TextEncoder().encode(JSON.stringify(refusal.body));
      this.unreadBytes += body.byteLength;
      this.events.push({ chunk: body });
      this.events.push({ end: true });
      return this.status;
    }
    const body = typeof this.opts.body === 'string' ? new TextEncoder().encode(this.opts.body) : this.opts.body ?? new Uint8Array();
    const unread = (): number => this.unreadBytes;
    const transport: HttpTransport = {
      start: (status, headers) => this.events.push({ start: { status, headers: { ...headers } } }),
      write: (chunk) => {
        this.unreadBytes += chunk.byteLength;
        this.events.push({ chunk: Uint8Array.from(chunk) });
      },
      end: () => this.events.push({ end: true }),
      abort: () => this.events.push({ end: false }),
      get bufferedAmount() {
        return unread();
      },
    };
    this.runner = new HttpRunner(this.Class, {
      scope: this.scope,
      layer: this.opts.layer,
      logger: this.log,
      body,
      transport,
      ...(this.opts.maxBufferedBytes !== undefined ? { maxBufferedBytes: this.opts.maxBufferedBytes } : {}),
    });
    this.runner.start();
    if (!(await this.events.wait(timeoutMs))) throw new Error(`The consumer did not start a response within ${timeoutMs} ms`);
    const first = this.events.shift()!;
    if (!('start' in first)) throw new Error('The consumer sent a body before its headers');
    this.status = first.start;
    return this.status;
  }

  /** The next body chunk, or null when the response has ended; rejects when nothing comes within `timeoutMs`. */
  async receiveChunk(timeoutMs = 1000): Promise<Uint8Array | null> {
    if (!(await this.events.wait(timeoutMs))) throw new Error(`No body from the consumer within ${timeoutMs} ms`);
    const event = this.events.shift()!;
    if ('chunk' in event) {
      this.unreadBytes -= event.chunk.byteLength;
      return event.chunk;
    }
    if ('end' in event) return null;
    throw new Error('The consumer started its response twice');
  }

  /** Sends the request (if not yet) and collects the whole response. */
  async getResponse(timeoutMs = 1000): Promise<HttpResponse> {
    const head = this.status ?? (await this.start(timeoutMs));
    const chunks: Uint8Array[] = [];
    let complete = true;
    for (;;) {
      if (!(await this.events.wait(timeoutMs))) throw new Error(`The response did not end within ${timeoutMs} ms`);
      const event = this.events.shift()!;
      if ('chunk' in event) {
        this.unreadBytes -= event.chunk.byteLength;
        chunks.push(event.chunk);
      } else if ('end' in event) {
        complete = event.end;
        break;
      }
    }
    const body = Buffer.concat(chunks);
    return { status: head.status, headers: head.headers, body: new Uint8Array(body), text: body.toString('utf8'), complete };
  }

  /** The client goes away; waits for the consumer to finish. */
  async disconnect(timeoutMs = 1000): Promise<void> {
    if (!this.runner) return;
    this.runner.gone();
    await within(this.runner.done, timeoutMs, 'The consumer finishing');
  }
}
