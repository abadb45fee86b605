/**
 * HTTP consumers, as Channels' AsyncHttpConsumer, with what it lacks (channels#1302, #1747): the
 * response may stay open after `handle` returns (server-sent events, long-poll) while the
 * consumer keeps receiving layer messages, until it ends the response or the client goes away.
 *
 * Subclass contract: implement `handle(body)`; respond there, or from a layer message handler.
 * A consumer that handles no layer messages must have responded when `handle` returns.
 */
import type { ChannelLayer } from '../layers/index.js';
import { Consumer, reserveMethods } from './consumer.js';
import type { HttpControl, HttpState } from './internal.js';
import type { Scope } from './scope.js';
import type { PrecheckRefusal } from './websocket.js';

let setHttpControl: (consumer: HttpConsumer, control: HttpControl) => void;

/** Connects a consumer to the runner it responds through (the runner calls it). */
export function bindHttpControl(consumer: HttpConsumer, control: HttpControl): void {
  setHttpControl(consumer, control);
}

/** An HTTP consumer: one instance per request. */
export abstract class HttpConsumer extends Consumer {
  /** Runs before the consumer exists, as `WebsocketConsumer.precheck`: `{ status }` refuses the request. */
  static precheck?(scope: Scope, layer: ChannelLayer): Promise<void | PrecheckRefusal>;

  #control!: HttpControl;

  static {
    setHttpControl = (consumer, control) => {
      consumer.#control = control;
    };
  }

  /** Called once with the whole request body, after the channel is resolved and the groups joined. */
  abstract handle(body: Uint8Array): Promise<void>;

  /** Starts the response (default status 200). Throws when it has started already. */
  sendHeaders(opts: { status?: number; headers?: Record<string, string> } = {}): Promise<void> {
    return this.#control.sendHeaders(opts.status ?? 200, opts.headers ?? {});
  }

  /**
   * Sends part of the body (a string goes as UTF-8); `more: true` keeps the response open for
   * more. A no-op once the response has ended or the client has gone. A client that leaves more
   * than `maxBufferedBytes` unread has its response cut instead.
   */
  sendBody(chunk: string | Uint8Array, opts: { more?: boolean } = {}): Promise<void> {
    return this.#control.sendBody(chunk, opts.more ?? false);
  }

  /** Sends a whole response: headers, then the body, then ends it. */
  async sendResponse(status: number, body: string | Uint8Array, headers: Record<string, string> = {}): Promise<void> {
    await this.sendHeaders({ status, headers });
    await this.sendBody(body);
  }

  /** Called once when the response has ended or the client has gone, after the groups are left. */
  async disconnect(): Promise<void> {}

  /** Called when the server shuts down (default: 503 if nothing was sent yet, else end the response). */
  async serverShutdown(): Promise<void> {
    const state = this.#control.state;
    if (state === 'pending') await this.sendResponse(503, 'The server is restarting.', { 'content-type': 'text/plain; charset=utf-8', 'retry-after': '1' });
    else if (state === 'streaming') await this.sendBody('');
  }

  /** Bytes sent but not yet written to the client. */
  get bufferedAmount(): number {
    return this.#control.bufferedAmount;
  }

  /** `pending` until headers are sent, then `streaming`, then `ended` (or `gone` when the client left first). */
  get state(): HttpState {
    return this.#control.state;
  }
}

reserveMethods(HttpConsumer.prototype);
