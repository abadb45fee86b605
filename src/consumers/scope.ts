/** What a consumer knows about its connection, built by the binding before the consumer exists. */
export interface Scope {
  /** The kind of connection. */
  type: 'websocket' | 'http';
  /** The request path, without the query. */
  path: string;
  /** Route parameters (`/ws/call/:callId` gives `{ callId }`). */
  params: Record<string, string>;
  /** The query string as the request had it, without the "?" ('' when it had none). */
  readonly queryString: string;
  /** The query string, parsed (on first read: a consumer that never reads it keeps none). */
  query: URLSearchParams;
  /** The request headers (read-only; names lower-case). */
  headers: ScopeHeaders;
  /** The client: the first `X-Forwarded-For` hop when the binding trusts the proxy, else the socket's peer. */
  client: { address: string; port?: number };
  /** The authenticated identity, set by `precheck` (undefined until then). */
  user: unknown;
  /** Per-connection data `precheck` leaves for the consumer (made on first read). */
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

/**
 * Header names requests carry, each kept once. Every request brings its own copy of every name
 * and value, and a scope keeps them as long as its connection: 5,000 idle connections would
 * hold 5,000 copies of "user-agent" and of most browsers' user agent.
 */
const KNOWN_NAMES = new Map(
  [
    'accept', 'accept-encoding', 'accept-language', 'authorization', 'cache-control', 'cdn-loop', 'cf-connecting-ip',
    'cf-ipcountry', 'cf-ray', 'cf-visitor', 'connection', 'content-length', 'content-type', 'cookie', 'dnt', 'forwarded',
    'host', 'origin', 'pragma', 'referer', 'render-proxy-ttl', 'rndr-id', 'sec-ch-ua', 'sec-ch-ua-mobile',
    'sec-ch-ua-platform', 'sec-fetch-dest', 'sec-fetch-mode', 'sec-fetch-site', 'sec-websocket-extensions',
    'sec-websocket-key', 'sec-websocket-protocol', 'sec-websocket-version', 'traceparent', 'true-client-ip', 'upgrade',
    'user-agent', 'via', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-proto', 'x-real-ip',
    'x-request-id',
  ].map((name) => [name, name]),
);

/** Headers whose values repeat from one connection to the next (not keys, cookies, addresses or ids). */
const SHARED_VALUES = new Set([
  'accept', 'accept-encoding', 'accept-language', 'cache-control', 'cdn-loop', 'cf-ipcountry', 'cf-visitor', 'connection',
  'content-type', 'dnt', 'host', 'origin', 'pragma', 'render-proxy-ttl', 'sec-ch-ua', 'sec-ch-ua-mobile',
  'sec-ch-ua-platform', 'sec-fetch-dest', 'sec-fetch-mode', 'sec-fetch-site', 'sec-websocket-extensions',
  'sec-websocket-protocol', 'sec-websocket-version', 'upgrade', 'user-agent', 'via', 'x-forwarded-host',
  'x-forwarded-port', 'x-forwarded-proto',
]);

/**
 * The values of SHARED_VALUES headers seen so far, each kept once. Bounded, so that requests
 * with made-up values cannot grow it: once full, new values are kept per scope as before.
 */
const sharedValues = new Map<string, string>();
const SHARED_VALUES_MAX = 1024;
const SHARED_VALUE_MAX_LENGTH = 512;

function sharedValue(name: string, value: string): string {
  if (!SHARED_VALUES.has(name) || value.length > SHARED_VALUE_MAX_LENGTH) return value;
  const known = sharedValues.get(value);
  if (known !== undefined) return known;
  if (sharedValues.size < SHARED_VALUES_MAX) sharedValues.set(value, value);
  return value;
}

/**
 * The headers of a WebSocket handshake that mean nothing once the socket is open, which the
 * bindings leave out of a WebSocket scope: `sec-websocket-key` is a nonce (a string of its own
 * per connection, kept for the connection's life for nothing), and the others only say that it
 * is a WebSocket upgrade. `sec-websocket-protocol` stays (and is `subprotocols`, parsed).
 */
export const WEBSOCKET_HANDSHAKE_HEADERS: ReadonlySet<string> = new Set(['connection', 'sec-websocket-extensions', 'sec-websocket-key', 'sec-websocket-version', 'upgrade']);

/**
 * A request's headers as a consumer reads them: `get`, `has` and iteration answer as a Web
 * `Headers` object would (names lower-case, in name order, repeated headers joined by ", "), but
 * nothing can be changed. Kept as one list of strings: a scope lives as long as its connection,
 * and a `Headers` object keeps a Map and an object per header besides (`bench/heap.mjs`: 0.4 KiB
 * more per connection with six headers). Common names, and the values of headers whose values
 * repeat across connections, are shared by every scope.
 */
export class ScopeHeaders implements Iterable<[string, string]> {
  /** Name, value, name, value, ...: lower-case names in order, as a Headers object iterates them. */
  readonly #list: string[];

  /** `omit`: lower-case names left out (see WEBSOCKET_HANDSHAKE_HEADERS). */
  constructor(init?: ConstructorParameters<typeof Headers>[0], omit?: ReadonlySet<string>) {
    const list: string[] = [];
    for (const [name, value] of init instanceof Headers ? init : new Headers(init)) {
      if (omit?.has(name)) continue;
      const known = KNOWN_NAMES.get(name);
      list.push(known ?? name, known === undefined ? value : sharedValue(known, value));
    }
    this.#list = list.slice(); // exactly its size: a list grown by push keeps room for more
  }

  /** The header's value (repeated headers joined by ", "), or null when the request has none. */
  get(name: string): string | null {
    const key = name.toLowerCase();
    const list = this.#list;
    let found: string | null = null;
    for (let i = 0; i < list.length; i += 2) {
      if (list[i] === key) found = found === null ? list[i + 1]! : `${found}, ${list[i + 1]!}`;
    }
    return found;
  }

  has(name: string): boolean {
    const key = name.toLowerCase();
    const list = this.#list;
    for (let i = 0; i < list.length; i += 2) if (list[i] === key) return true;
    return false;
  }

  forEach(callback: (value: string, name: string, headers: ScopeHeaders) => void): void {
    for (const [name, value] of this) callback(value, name, this);
  }

  *entries(): IterableIterator<[string, string]> {
    const list = this.#list;
    for (let i = 0; i < list.length; i += 2) yield [list[i]!, list[i + 1]!];
  }

  *keys(): IterableIterator<string> {
    for (const [name] of this) yield name;
  }

  *values(): IterableIterator<string> {
    for (const [, value] of this) yield value;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }
}

/** Parses a `Sec-WebSocket-Protocol` header value into the offered subprotocols. */
export function parseSubprotocols(header: string | null | undefined): string[] {
  if (!header) return [];
  return header.split(',').map((p) => p.trim()).filter((p) => p.length > 0);
}

/**
 * A scope's `state` before anything is stored in it. V8 gives an `{}` literal room for four
 * properties inside the object; instances of a class shrink to the fields they were seen to use
 * (none, for most connections), and a property added later still works.
 */
class ScopeState {}

/** The parts of a RequestScope that most connections never set or read. */
class ScopeExtra {
  user: unknown = undefined;
  query: URLSearchParams | undefined = undefined;
  state: Record<string, unknown> | undefined = undefined;
}

/** What a RequestScope is made of. */
export interface RequestScopeFields {
  type: Scope['type'];
  path: string;
  params: Record<string, string>;
  /** Without the "?". */
  queryString: string;
  headers: ScopeHeaders;
  client: Scope['client'];
  method: string;
  subprotocols: readonly string[];
}

/**
 * The Scope the bindings (and `createScope`) build. A scope lives as long as its connection, so
 * what most connections never read is made on first read: `query` (parsed from `queryString`)
 * and `state`, kept with `user` in one object that a scope without them does not have. All three
 * can still be replaced, as plain fields can.
 */
export class RequestScope implements Scope {
  type: Scope['type'];
  path: string;
  params: Record<string, string>;
  readonly queryString: string;
  headers: ScopeHeaders;
  client: Scope['client'];
  method: string;
  subprotocols: readonly string[];
  /** `user`, the parsed `query` and `state`, once one is set or read: most connections keep none. */
  #extra: ScopeExtra | undefined;

  constructor(fields: RequestScopeFields) {
    this.type = fields.type;
    this.path = fields.path;
    this.params = fields.params;
    this.queryString = fields.queryString;
    this.headers = fields.headers;
    this.client = fields.client;
    this.method = fields.method;
    this.subprotocols = fields.subprotocols;
  }

  get user(): unknown {
    return this.#extra?.user;
  }

  set user(user: unknown) {
    if (user !== undefined || this.#extra) (this.#extra ??= new ScopeExtra()).user = user;
  }

  get query(): URLSearchParams {
    const extra = (this.#extra ??= new ScopeExtra());
    return (extra.query ??= new URLSearchParams(this.queryString));
  }

  set query(query: URLSearchParams) {
    (this.#extra ??= new ScopeExtra()).query = query;
  }

  get state(): Record<string, unknown> {
    const extra = (this.#extra ??= new ScopeExtra());
    return (extra.state ??= new ScopeState() as Record<string, unknown>);
  }

  set state(state: Record<string, unknown>) {
    (this.#extra ??= new ScopeExtra()).state = state;
  }
}

/** One query parameter, read without keeping a parsed query on the scope. */
export function queryParam(scope: Scope, name: string): string | null {
  return scope.queryString === '' ? null : new URLSearchParams(scope.queryString).get(name);
}

/** Builds a Scope from the parts given (used by the communicator and by tests). */
export function createScope(init: ScopeInit = {}): Scope {
  const headers = new ScopeHeaders(init.headers);
  const query = init.query instanceof URLSearchParams ? init.query : new URLSearchParams(init.query ?? '');
  const scope = new RequestScope({
    type: init.type ?? 'websocket',
    path: init.path ?? '/',
    params: { ...init.params },
    queryString: query.toString(),
    headers,
    client: init.client ?? { address: '127.0.0.1' },
    method: init.method ?? 'GET',
    subprotocols: init.subprotocols ?? parseSubprotocols(headers.get('sec-websocket-protocol')),
  });
  if (init.query instanceof URLSearchParams) scope.query = init.query;
  scope.user = init.user;
  if (init.state) scope.state = init.state;
  return scope;
}
