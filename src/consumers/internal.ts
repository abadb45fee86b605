/**
 * What a consumer and the runner driving it share, kept out of the public surface: the control
 * interfaces consumers call through. A consumer keeps its runner in an ES private field that
 * the runner sets through `bindWebsocketControl`/`bindHttpControl`, so no hidden key shows in
 * the declared types of classes built on it (an exported class expression must name them all).
 */
import { SETTLED } from '../layers/index.js';
import type { Logger } from './logger.js';

/**
 * One shared settled promise, for a handler to return when it finished at once (`send` returns
 * it when the frame went out). The runner runs the next job without awaiting it, which spares a
 * microtask and its allocations per message. Exported for consumers: a hot handler that is not
 * an async function may return it too. It is the layers' `SETTLED` (what a send that handed its
 * message over at once returns), so a handler can return what such a send gave it.
 */
export const RESOLVED: Promise<void> = SETTLED;

/** The state of a WebSocket connection, as the consumer sees it. */
export type WebsocketState = 'connecting' | 'open' | 'closing' | 'closed';

/** What a WebsocketConsumer calls on its runner. */
export interface WebsocketControl {
  readonly state: WebsocketState;
  readonly bufferedAmount: number;
  accept(subprotocol: string | undefined): Promise<void>;
  close(code: number, reason: string): Promise<void>;
  /** Sends a frame at once; a promise only when the send closed the connection instead (a peer over maxBufferedBytes). */
  send(data: string | Uint8Array): Promise<void> | undefined;
}

/** The state of an HTTP response, as the consumer sees it. */
export type HttpState = 'pending' | 'streaming' | 'ended' | 'gone';

/** What an HttpConsumer calls on its runner. */
export interface HttpControl {
  readonly state: HttpState;
  readonly bufferedAmount: number;
  sendHeaders(status: number, headers: Record<string, string>): Promise<void>;
  sendBody(chunk: string | Uint8Array, more: boolean): Promise<void>;
}

/** Bindings a consumer's lazily built logger carries. */
export function logBindings(consumerName: string, path: string, channel: string | undefined): Record<string, unknown> {
  return channel === undefined ? { consumer: consumerName, path } : { consumer: consumerName, path, channel };
}

export type { Logger };
