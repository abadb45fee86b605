/**
 * The socket contract consumers depend on. A binding translates its runtime's connection to
 * these (src/hono does it for ws via @hono/node-ws; the communicator does it in memory), and
 * reports what happens on the connection to the runner it was given.
 */
import type { Frame } from './websocket.js';

/** A WebSocket as a consumer needs it. */
export interface WebsocketTransport {
  /**
   * Completes the opening handshake with `subprotocol` (none when undefined). Resolves once
   * frames can be sent, or at once when the client has gone (the binding then reports `closed`).
   */
  accept(subprotocol: string | undefined): Promise<void>;
  /** Sends one frame; called only between accept and close. */
  send(data: string | Uint8Array): void;
  /**
   * Starts the closing handshake with a validated code. Before `accept`, it refuses the
   * connection; the client still sees this code. The binding reports the end with `closed`.
   */
  close(code: number, reason: string): void;
  /** Bytes queued for the peer but not yet written. */
  readonly bufferedAmount: number;
  /** Stops reading frames from the peer (TCP backpressure) until `resume`; optional. */
  pause?(): void;
  /** Resumes reading frames after `pause`. */
  resume?(): void;
}

/** What a binding reports about a WebSocket: the runner implements it. */
export interface WebsocketTransportEvents {
  /** A frame arrived from the client. */
  frame(frame: Frame): void;
  /** The socket has closed (1006 when no close frame arrived); reported once. */
  closed(code: number, reason?: string): void;
}

/** An HTTP response as a consumer needs it. */
export interface HttpTransport {
  /** Sends the status line and headers. */
  start(status: number, headers: Record<string, string>): void;
  /** Sends part of the body. */
  write(chunk: Uint8Array): void;
  /** Ends the response. */
  end(): void;
  /** Cuts a started response short (the client sees an incomplete body). */
  abort(reason: string): void;
  /** Bytes queued for the client but not yet written. */
  readonly bufferedAmount: number;
}

/** What a binding reports about an HTTP request: the runner implements it. */
export interface HttpTransportEvents {
  /** The client went away before the response ended; reported once. */
  gone(): void;
}
