import type { Hono } from 'hono';
import type { ChannelLayer } from '../layers/index.js';
import { DEFAULT_MAX_BUFFERED_BYTES, type ConsumerHooks, type Logger } from '../consumers/index.js';

/** Options of `createConsumerServer`. Defaults: `DEFAULT_SERVER_OPTIONS`. */
export interface ConsumerServerOptions {
  /** The Hono app the routes are added to. */
  app: Hono<any, any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- any app, whatever its env
  /** The channel layer every consumer receives on. */
  layer: ChannelLayer;
  /** Where the binding and the consumers log (default: warnings and errors to the console). */
  logger?: Logger;
  /** The largest WebSocket message in bytes; a bigger one closes the socket with 1009 (default 64 KiB). */
  maxPayload?: number;
  /** How often each socket is pinged, in ms; 0 turns pings off (default 15000). */
  pingInterval?: number;
  /**
   * How long a ping may go unanswered before the socket is dropped (disconnect gets 1006), in ms
   * (default 15000). A peer that dies is dropped within pingInterval + pingTimeout + half the shorter.
   */
  pingTimeout?: number;
  /** Bytes a peer may leave unread before the next send closes it with 1013 (an HTTP stream is cut) (default 1 MiB). */
  maxBufferedBytes?: number;
  /** How long a closing socket waits for the peer's close frame before it is dropped, in ms (default 5000; ws's own is 30000). */
  closeTimeout?: number;
  /** The largest HTTP request body an HttpConsumer is given; a bigger one is refused with 413 (default 64 KiB). */
  maxBodyBytes?: number;
  /** Take the client address from the first `X-Forwarded-For` hop, as behind Render's proxy (default true). */
  trustProxy?: boolean;
  /** Observers of the consumers, each called defensively. */
  hooks?: ConsumerHooks;
}

/** The default of every limit, in one place. */
export const DEFAULT_SERVER_OPTIONS = Object.freeze({
  maxPayload: 64 * 1024,
  pingInterval: 15_000,
  pingTimeout: 15_000,
  maxBufferedBytes: DEFAULT_MAX_BUFFERED_BYTES,
  closeTimeout: 5_000,
  maxBodyBytes: 64 * 1024,
  trustProxy: true,
});

/** The options with every default filled in. */
export type ResolvedServerOptions = Required<Omit<ConsumerServerOptions, 'hooks' | 'logger'>> & Pick<ConsumerServerOptions, 'hooks'> & { logger: Logger };

function requireNonNegativeInteger(name: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new TypeError(`${name} must be a non-negative integer, got ${JSON.stringify(value)}`);
  }
}

/** Fills in defaults and checks every limit; throws a TypeError naming a bad one. */
export function resolveServerOptions(opts: ConsumerServerOptions, fallbackLogger: Logger): ResolvedServerOptions {
  const resolved = {
    ...DEFAULT_SERVER_OPTIONS,
    ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
    logger: opts.logger ?? fallbackLogger,
  } as ResolvedServerOptions;
  for (const name of ['maxPayload', 'pingInterval', 'pingTimeout', 'maxBufferedBytes', 'closeTimeout', 'maxBodyBytes'] as const) {
    requireNonNegativeInteger(name, resolved[name]);
  }
  if (resolved.maxPayload === 0) throw new TypeError('maxPayload must be at least 1');
  if (resolved.pingInterval > 0 && resolved.pingTimeout === 0) throw new TypeError('pingTimeout must be at least 1 when pings are on');
  return resolved;
}
