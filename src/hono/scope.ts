/** Builds a consumer's Scope from a Hono context on @hono/node-server. */
import type { Context } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import { RequestScope, ScopeHeaders, WEBSOCKET_HANDSHAKE_HEADERS, parseSubprotocols, type Scope } from '../consumers/index.js';

/**
 * The client: when the proxy is trusted, the last X-Forwarded-For hop (the one the proxy in
 * front of us appended; earlier hops come from the client and can be forged), else the socket's peer.
 */
function clientOf(c: Context, trustProxy: boolean): Scope['client'] {
  if (trustProxy) {
    const last = c.req.header('x-forwarded-for')?.split(',').pop()?.trim();
    if (last) return { address: last };
  }
  try {
    const { address, port } = getConnInfo(c).remote;
    forgetPeername(c);
    if (address) return port !== undefined ? { address, port } : { address };
  } catch {
    // Not on @hono/node-server (app.request in a test): there is no socket to ask.
  }
  return { address: 'unknown' };
}

/**
 * Node keeps a socket's peer address, once read, as an object on the socket (`_peername`) for the
 * socket's life: about 56 bytes per idle connection, for an address the scope holds already.
 * Dropping it is safe: a later read asks the OS again.
 */
function forgetPeername(c: Context): void {
  const socket = (c.env as { incoming?: { socket?: { _peername?: unknown } } } | undefined)?.incoming?.socket;
  if (socket?._peername !== undefined) socket._peername = undefined;
}

/**
 * A copy of `s` with storage of its own. V8 makes a substring a slice that keeps the whole
 * string it was cut from (the request URL, Hono's path): a scope lives as long as its
 * connection, and should keep only its own few bytes. (A JSON round trip copies any string
 * exactly, lone surrogates included.)
 */
function own(s: string): string {
  return JSON.parse(JSON.stringify(s)) as string;
}

/**
 * Route parameters, each value its own string, in an object of exactly their number (a JSON
 * round trip: a `{}` filled in afterwards keeps room for four).
 */
function paramsOf(c: Context): Record<string, string> {
  return JSON.parse(JSON.stringify(c.req.param())) as Record<string, string>;
}

/** No subprotocols: one frozen list for every scope that offers none (most). */
const NO_SUBPROTOCOLS: readonly string[] = Object.freeze([]);

function offered(header: string | undefined): readonly string[] {
  const list = parseSubprotocols(header);
  return list.length > 0 ? list : NO_SUBPROTOCOLS;
}

/** The Scope of the request `c` is handling. */
export function scopeFromContext(c: Context, type: Scope['type'], trustProxy: boolean): Scope {
  const url = new URL(c.req.url);
  return new RequestScope({
    type,
    path: own(url.pathname),
    params: paramsOf(c),
    queryString: own(url.search.slice(1)),
    headers: new ScopeHeaders(c.req.raw.headers, type === 'websocket' ? WEBSOCKET_HANDSHAKE_HEADERS : undefined),
    client: clientOf(c, trustProxy),
    method: c.req.method,
    subprotocols: offered(type === 'websocket' ? c.req.header('sec-websocket-protocol') : undefined),
  });
}
