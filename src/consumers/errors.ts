/** Thrown from any handler to end this consumer cleanly: a WebSocket closes with 1000, an HTTP response ends. */
export class StopConsumer extends Error {
  override readonly name = 'StopConsumer';
  /** Stable error code. */
  readonly code = 'stop-consumer';
  constructor(message = 'Consumer stopped') {
    super(message);
  }
}

/** Thrown from `connect()` (or any handler) to refuse a connection: it closes with `closeCode` (default 1008). */
export class DenyConnection extends Error {
  override readonly name = 'DenyConnection';
  /** Stable error code. */
  readonly code = 'deny-connection';
  /** The close reason the client sees: only what the caller passed, never an internal message. */
  readonly reason: string;

  constructor(reason?: string, readonly closeCode = 1008) {
    super(reason ?? 'Connection denied');
    this.reason = reason ?? '';
  }
}

/** Why a layer message could not be dispatched. */
export type DispatchErrorCode = 'no-type' | 'malformed-type' | 'not-handled' | 'no-handler' | 'reserved-handler';

/** A layer message was refused by `dispatch` (no handler may run for it); it ends that one consumer. */
export class DispatchError extends Error {
  override readonly name = 'DispatchError';

  constructor(readonly code: DispatchErrorCode, message: string, readonly type?: string) {
    super(message);
  }
}
