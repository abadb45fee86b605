/**
 * WebSocket consumers, as Channels' AsyncWebsocketConsumer and AsyncJsonWebsocketConsumer.
 *
 * Subclass contract: override `connect` (accept or close; default accepts), `receive` or
 * `receiveJson` for client frames, `disconnect` for cleanup, and one handler per type in
 * `handles` for layer messages. Every handler of one instance runs alone, in arrival order.
 */
import type { ChannelLayer } from '../layers/index.js';
import { Consumer, reserveMethods } from './consumer.js';
import { RESOLVED, type WebsocketControl, type WebsocketState } from './internal.js';
import type { Scope } from './scope.js';


/** One WebSocket frame: text or bytes. */
export interface Frame {
  text?: string;
  bytes?: Uint8Array;
}

/** What `precheck` returns to refuse a request before the upgrade. */
export interface PrecheckRefusal {
  /** The HTTP status (for example 400, 401, 403, 429). */
  status: number;
  /** A JSON body (sent where the transport can send one; see the binding). */
  body?: unknown;
  /** Extra response headers. */
  headers?: Record<string, string>;
}

let setWebsocketControl: (consumer: WebsocketConsumer, control: WebsocketControl) => void;

/** Connects a consumer to the runner it sends through (the runner calls it). */
export function bindWebsocketControl(consumer: WebsocketConsumer, control: WebsocketControl): void {
  setWebsocketControl(consumer, control);
}

/** A WebSocket consumer: one instance per connection. */
export abstract class WebsocketConsumer extends Consumer {
  /**
   * Runs before the upgrade, before any consumer exists. Resolve with nothing to let the request
   * through (after setting `scope.user` and `scope.state` as needed), or with `{ status }` to
   * refuse it with that plain HTTP status.
   */
  static precheck?(scope: Scope, layer: ChannelLayer): Promise<void | PrecheckRefusal>;

  #control!: WebsocketControl;

  static {
    setWebsocketControl = (consumer, control) => {
      consumer.#control = control;
    };
  }

  /** Called once the channel is resolved and the groups joined; accept or close here (default: accept). */
  async connect(): Promise<void> {
    await this.accept();
  }

  /** Accepts the connection, choosing one of the subprotocols the client offered (`scope.subprotocols`). */
  accept(subprotocol?: string): Promise<void> {
    return this.#control.accept(subprotocol);
  }

  /**
   * Closes the connection (default 1000). Before `accept`, it refuses the connection with that
   * code. Throws a RangeError for a code a server may not send (1005, 1006, 1015, ...) or a
   * reason over 123 bytes. Closing twice does nothing.
   */
  close(code = 1000, reason = ''): Promise<void> {
    return this.#control.close(code, reason);
  }

  /** Called for each frame from the client (default: ignored). */
  async receive(_frame: Frame): Promise<void> {}

  /**
   * Sends one frame (exactly one of `text` or `bytes`), then closes when `close` is true (1000)
   * or a close code. A no-op once the connection is closing or closed. A peer that leaves more
   * than `maxBufferedBytes` unread is closed with 1013 instead.
   */
  send(frame: Frame, close?: boolean | number): Promise<void> {
    // Not an async function: the relay path calls this for every message, and a plain return
    // spares the suspended frame an async function allocates per call.
    if (typeof frame !== 'object' || frame === null) return Promise.reject(new TypeError('send() takes a frame: { text } or { bytes }'));
    const hasText = frame.text !== undefined && frame.text !== null;
    const hasBytes = frame.bytes !== undefined && frame.bytes !== null;
    if (hasText === hasBytes) return Promise.reject(new TypeError('send() takes exactly one of text or bytes'));
    if (hasText && typeof frame.text !== 'string') return Promise.reject(new TypeError(`send() text must be a string, got ${typeof frame.text}`));
    if (hasBytes && !(frame.bytes instanceof Uint8Array)) return Promise.reject(new TypeError('send() bytes must be a Uint8Array'));
    const shedding = this.#control.send(hasText ? frame.text! : frame.bytes!);
    if (!close) return shedding ?? RESOLVED;
    const code = close === true ? 1000 : close;
    return (shedding ?? RESOLVED).then(() => this.close(code));
  }

  /** Called once when the socket has closed, after the groups are left, with the close code (1006 when none arrived). */
  async disconnect(_code: number): Promise<void> {}

  /** Called when the server shuts down (default: close with `code`, 1012 unless the binding says otherwise). */
  serverShutdown(code: number): Promise<void> {
    return this.close(code);
  }

  /** Bytes sent but not yet written to the peer. */
  get bufferedAmount(): number {
    return this.#control.bufferedAmount;
  }

  /** `connecting` until accepted, then `open`, `closing` once a close started, `closed` when the socket has closed. */
  get state(): WebsocketState {
    return this.#control.state;
  }
}

/** A WebSocket consumer that speaks JSON text frames. */
export abstract class JsonWebsocketConsumer extends WebsocketConsumer {
  /** Decodes each text frame and passes it to `receiveJson`; answers frames it cannot decode through `decodeError`. */
  override receive(frame: Frame): Promise<void> {
    // Not an async function, for the same reason as `send`: every client message passes here.
    try {
      if (frame.text === undefined) return this.decodeError(frame, new TypeError('Binary frames are not accepted; send JSON as a text frame.'));
      let content: unknown;
      try {
        content = this.decodeJson(frame.text);
      } catch (err) {
        return this.decodeError(frame, err);
      }
      return this.receiveJson(content);
    } catch (err) {
      return Promise.reject(err); // a handler that threw before returning its promise
    }
  }

  /** Called with each decoded JSON frame (default: ignored). */
  async receiveJson(_content: unknown): Promise<void> {}

  /** Sends `content` as one JSON text frame, then closes when `close` says so (as `send`). */
  sendJson(content: unknown, close?: boolean | number): Promise<void> {
    return this.send({ text: this.encodeJson(content) }, close);
  }

  /** Encodes outgoing content (default JSON.stringify); throws a TypeError for what JSON cannot hold. */
  encodeJson(content: unknown): string {
    const text = JSON.stringify(content);
    if (text === undefined) throw new TypeError(`Cannot encode ${typeof content} as JSON`);
    return text;
  }

  /** Decodes an incoming text frame (default JSON.parse). */
  decodeJson(text: string): unknown {
    return JSON.parse(text);
  }

  /**
   * Answers a frame that could not be decoded (default: an error message, and the socket stays
   * open): `{"type":"error","code":"bad-message","message":"<sentence>"}`.
   */
  protected async decodeError(frame: Frame, err: unknown): Promise<void> {
    const message = frame.text === undefined
      ? 'Binary frames are not accepted; send JSON as a text frame.'
      : `The message is not valid JSON (${err instanceof Error ? err.message.slice(0, 120) : 'unparsable'}).`;
    await this.sendJson({ type: 'error', code: 'bad-message', message });
  }
}

reserveMethods(WebsocketConsumer.prototype);
reserveMethods(JsonWebsocketConsumer.prototype);
