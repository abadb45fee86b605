/**
 * The scope's headers: read as a Web Headers object reads them, held as a plain list (a scope
 * lives as long as its connection), and a real upgrade fills them from the request.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer } from '../../src/layers/index.js';
import { JsonWebsocketConsumer, ScopeHeaders, createScope, queryParam, type Scope } from '../../src/consumers/index.js';
import type { WebsocketConsumerClass } from '../../src/hono/index.js';
import { openClient, startServer, type TestServer } from '../hono/support.js';

describe('ScopeHeaders', () => {
  const init: Array<[string, string]> = [
    ['X-Trace', 'a'],
    ['Origin', 'https://example.org'],
    ['x-trace', 'b'],
    ['Accept', 'text/html'],
  ];

  it('answers get, has and iteration as a Headers object does', () => {
    const ours = new ScopeHeaders(init);
    const web = new Headers(init);
    for (const name of ['origin', 'ORIGIN', 'x-trace', 'accept', 'missing']) {
      expect(ours.get(name)).toBe(web.get(name));
      expect(ours.has(name)).toBe(web.has(name));
    }
    expect(ours.get('x-trace')).toBe('a, b');
    expect([...ours]).toEqual([...web]);
    expect([...ours.entries()]).toEqual([...web.entries()]);
    expect([...ours.keys()]).toEqual([...web.keys()]);
    expect([...ours.values()]).toEqual([...web.values()]);
    const seen: string[] = [];
    ours.forEach((value, name, headers) => {
      expect(headers).toBe(ours);
      seen.push(`${name}=${value}`);
    });
    expect(seen).toEqual(['accept=text/html', 'origin=https://example.org', 'x-trace=a, b']);
  });

  it('is built from a record, a Headers object or nothing, and offers no way to change it', () => {
    expect(new ScopeHeaders({ Host: 'h' }).get('host')).toBe('h');
    expect(new ScopeHeaders(new Headers({ Host: 'h2' })).get('Host')).toBe('h2');
    expect([...new ScopeHeaders()]).toEqual([]);
    const headers = new ScopeHeaders({ a: '1' }) as unknown as Record<string, unknown>;
    expect(headers.set).toBeUndefined();
    expect(headers.append).toBeUndefined();
    expect(headers.delete).toBeUndefined();
  });

  it('gives every scope its own values, however many distinct ones it has seen (shared names and values are only shared copies)', () => {
    // More distinct user agents than the shared pool keeps, and a few that repeat.
    const scopes = Array.from({ length: 1500 }, (_, i) => {
      const agent = i % 3 === 0 ? `Agent/${i % 7}` : `Agent/${i}.${'x'.repeat(i % 40)}`;
      return { agent, headers: new ScopeHeaders([['User-Agent', agent], ['Sec-WebSocket-Key', `key${i}`], ['X-Custom', `c${i}`], ['Host', 'example.org']]) };
    });
    for (const [i, { agent, headers }] of scopes.entries()) {
      expect([...headers]).toEqual([['host', 'example.org'], ['sec-websocket-key', `key${i}`], ['user-agent', agent], ['x-custom', `c${i}`]]);
    }
    const long = 'L'.repeat(5000);
    expect(new ScopeHeaders({ 'user-agent': long }).get('user-agent')).toBe(long);
  });

  it('rejects what Headers rejects (a bad name), when the scope is built', () => {
    expect(() => new ScopeHeaders({ 'bad name': 'x' })).toThrow(TypeError);
    expect(() => createScope({ headers: { 'bad name': 'x' } })).toThrow(TypeError);
  });
});

/** A consumer class that accepts and keeps each connection's scope. */
function recorder(): { scopes: Scope[]; Recorder: WebsocketConsumerClass } {
  const scopes: Scope[] = [];
  class Recorder extends JsonWebsocketConsumer {
    override async connect(): Promise<void> {
      scopes.push(this.scope);
      await this.accept();
    }
  }
  return { scopes, Recorder };
}

describe('a WebSocket scope', () => {
  let server: TestServer | undefined;
  let layer: InMemoryChannelLayer | undefined;
  afterEach(async () => {
    await server?.close();
    await layer?.close();
    server = undefined;
    layer = undefined;
  });

  it('carries the upgrade request headers', async () => {
    const { scopes, Recorder } = recorder();
    layer = new InMemoryChannelLayer();
    server = await startServer(layer, (consumers) => consumers.websocket('/ws/:room', Recorder));
    const sockets: unknown[] = [];
    server.consumers.wss.on('connection', (ws) => sockets.push(ws));
    const c = await openClient(`${server.wsUrl}/ws/r1`, { headers: { 'X-Trace': 'abc', Origin: 'http://example.test' } });
    expect(scopes).toHaveLength(1);
    const headers = scopes[0]!.headers;
    expect(headers).toBeInstanceOf(ScopeHeaders);
    expect(headers.get('x-trace')).toBe('abc');
    expect(headers.get('origin')).toBe('http://example.test');
    expect(headers.get('host')).toBe(`127.0.0.1:${server.port}`);
    // The handshake's own headers mean nothing once the socket is open: left out.
    for (const name of ['upgrade', 'connection', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions']) expect(headers.has(name)).toBe(false);
    expect([...headers.keys()].sort()).toEqual(['host', 'origin', 'x-trace']);
    // The client's address is read once; Node's cached copy on the socket is dropped, yet the socket still answers.
    expect(scopes[0]!.client.address).toBe('127.0.0.1');
    const socket = (sockets[0] as unknown as { _socket: { _peername?: unknown; remoteAddress?: string } })._socket;
    expect(socket._peername).toBeUndefined();
    expect(socket.remoteAddress).toBe('127.0.0.1');
    c.ws.close();
  });

  it('carries the path, its own route params and the query string, parsed when read', async () => {
    const { scopes, Recorder } = recorder();
    layer = new InMemoryChannelLayer();
    server = await startServer(layer, (consumers) => consumers.websocket('/ws/:room/:part', Recorder));
    const c = await openClient(`${server.wsUrl}/ws/r%C3%A9/x?a=1&b=two%20words&a=3`);
    const d = await openClient(`${server.wsUrl}/ws/r2/y`);
    const [withQuery, without] = scopes as [Scope, Scope];
    expect(withQuery.path).toBe('/ws/r%C3%A9/x');
    expect(withQuery.params).toEqual({ room: 'ré', part: 'x' });
    expect(withQuery.queryString).toBe('a=1&b=two%20words&a=3');
    expect(queryParam(withQuery, 'b')).toBe('two words');
    expect(queryParam(withQuery, 'missing')).toBeNull();
    expect(withQuery.query.getAll('a')).toEqual(['1', '3']);
    expect(withQuery.query).toBe(withQuery.query); // parsed once, then kept: changes to it stay
    withQuery.query.set('c', '4');
    expect(withQuery.query.get('c')).toBe('4');
    expect(without.queryString).toBe('');
    expect(queryParam(without, 'a')).toBeNull();
    expect([...without.query]).toEqual([]);
    // state: made on first read, then kept; a precheck's replacement stays too.
    without.state.plan = 'free';
    expect(without.state).toEqual({ plan: 'free' });
    without.state = { other: 1 };
    expect(without.state).toEqual({ other: 1 });
    c.ws.close();
    d.ws.close();
  });
});

describe('createScope', () => {
  it('takes the query as a string, a record or a URLSearchParams (kept as given), and fills in neutral defaults', () => {
    expect(createScope({ query: '?x=1' }).queryString).toBe('x=1');
    expect(createScope({ query: { y: 'a b' } }).query.get('y')).toBe('a b');
    const given = new URLSearchParams('z=9');
    const scope = createScope({ query: given, user: 'u', state: { s: 1 } });
    expect(scope.query).toBe(given);
    expect(scope.queryString).toBe('z=9');
    expect([scope.user, scope.state]).toEqual(['u', { s: 1 }]);
    const plain = createScope();
    expect([plain.type, plain.path, plain.queryString, plain.method, plain.client.address, plain.user]).toEqual(['websocket', '/', '', 'GET', '127.0.0.1', undefined]);
    expect(plain.subprotocols).toEqual([]);
    expect(plain.state).toEqual({});
  });
});
