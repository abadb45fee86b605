/** What a consumer knows about its connection, built by the binding before the consumer exists. */
export interface Scope {
  /** The kind of connection. */
  type: 'websocket' | 'http';
  /** The request path, without the query. */
  path: string;
  /** Route parameters (`/ws/call/:callId` gives `{ callId }`). */
  params: Record<string, string>;
  /** The query string, parsed. */
  query: URLSearchParams;
  /** The request headers. */
  headers: Headers;
  /** The client: the first `X-Forwarded-For` hop when the binding trusts the proxy, else the socket's peer. */
  client: { address: string; port?: number };
  /** The authenticated identity, set by `precheck` (undefined until then). */
  user: unknown;
  /** Per-connection data `precheck` leaves for the consumer. */
  state: Record<string, unknown>;
  /** The request method (`GET` for WebSockets). */
  method?: string;
  /** WebSocket subprotocols the client offered, in its order (from `Sec-WebSocket-Protocol`). */
  subprotocols?: readonly string[];
}

/** The fields of a Scope a caller may give; everything else gets a neutral default. */
export interface ScopeInit {
  type?: Scope['type'];
  path?: string;
  params?: Record<string, string>;
  query?: string | URLSearchParams | Record<string, string>;
  headers?: ConstructorParameters<typeof Headers>[0];
  client?: Scope['client'];
  user?: unknown;
  state?: Record<string, unknown>;
  method?: string;
  subprotocols?: readonly string[];
}

/** Parses a `Sec-WebSocket-Protocol` header value into the offered subprotocols. */
export function parseSubprotocols(header: string | null | undefined): string[] {
  if (!header) return [];
  return header.split(',').map((p) => p.trim()).filter((p) => p.length > 0);
}

/** Builds a Scope from the parts given (used by the communicator and by tests). */
export function createScope(init: ScopeInit = {}): Scope {
  const headers = new Headers(init.headers);
  const subprotocols = init.subprotocols ?? parseSubprotocols(headers.get('sec-websocket-protocol'));
  return {
    type: init.type ?? 'websocket',
    path: init.path ?? '/',
    params: { ...init.params },
    query: init.query instanceof URLSearchParams ? init.query : new URLSearchParams(init.query ?? ''),
    headers,
    client: init.client ?? { address: '127.0.0.1' },
    user: init.user,
    state: init.state ?? {},
    method: init.method ?? 'GET',
    subprotocols,
  };
}
