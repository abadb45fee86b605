/**
 * HttpConsumer over a real HTTP connection, and sending from outside any consumer: an HTTP route
 * doing `groupSend` reaches WebSocket consumers and an SSE stream following the same group.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer, type Message } from '../../src/layers/index.js';
import { HttpConsumer, JsonWebsocketConsumer } from '../../src/consumers/index.js';
import { openClient, startServer, until, type TestServer } from './support.js';

let layer: InMemoryChannelLayer;
let server: TestServer | undefined;
beforeEach(() => {
  layer = new InMemoryChannelLayer();
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  await layer.close();
});

const events: string[] = [];
beforeEach(() => {
  events.length = 0;
});

/** Follows the `news` group over a WebSocket. */
class NewsSocket extends JsonWebsocketConsumer {
  static override handles = ['news.item'];
  override groups(): string[] {
    return ['news'];
  }
  async newsItem(m: Message): Promise<void> {
    await this.sendJson({ news: m.text });
  }
}

/** Follows the `news` group as server-sent events. */
class NewsStream extends HttpConsumer {
  static override handles = ['news.item'];
  override groups(): string[] {
    return ['news'];
  }
  async handle(): Promise<void> {
    await this.sendHeaders({ headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-store' } });
    await this.sendBody(': open\n\n', { more: true });
  }
  async newsItem(m: Message): Promise<void> {
    await this.sendBody(`data: ${String(m.text)}\n\n`, { more: true });
  }
  override async disconnect(): Promise<void> {
    events.push(`disconnect ${this.channelName}`);
  }
}

class Echo extends HttpConsumer {
  async handle(body: Uint8Array): Promise<void> {
    if (this.scope.query.has('fail')) throw new Error('handle exploded');
    await this.sendResponse(200, body, { 'content-type': 'application/octet-stream', 'x-method': this.scope.method ?? '' });
  }
}

async function start(): Promise<TestServer> {
  server = await startServer(
    layer,
    (consumers, app) => {
      consumers.websocket('/ws/news', NewsSocket);
      consumers.http('/events', NewsStream, ['GET']);
      consumers.http('/echo', Echo);
      app.post('/announce', async (c) => {
        await layer.groupSend('news', { type: 'news.item', text: await c.req.text() });
        return c.json({ sent: true });
      });
    },
    { maxBodyBytes: 1024 },
  );
  return server;
}

/** Reads an SSE response chunk by chunk. */
function sseReader(res: Response): { next(timeoutMs?: number): Promise<string> } {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  return {
    async next(timeoutMs = 3000) {
      const deadline = Date.now() + timeoutMs;
      while (!buffered.includes('\n\n')) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`No event within ${timeoutMs} ms`);
        const chunk = await Promise.race([reader.read(), new Promise<never>((_, reject) => setTimeout(() => reject(new Error('timed out')), left))]);
        if (chunk.done) throw new Error('The stream ended');
        buffered += decoder.decode(chunk.value, { stream: true });
      }
      const i = buffered.indexOf('\n\n');
      const event = buffered.slice(0, i);
      buffered = buffered.slice(i + 2);
      return event;
    },
  };
}

describe('sending from outside a consumer', () => {
  it('an HTTP route doing groupSend reaches WebSocket consumers and an SSE HttpConsumer following the same group', async () => {
    const s = await start();
    const sockets = [await openClient(`${s.wsUrl}/ws/news`), await openClient(`${s.wsUrl}/ws/news`)];
    const abort = new AbortController();
    const res = await fetch(`${s.url}/events`, { signal: abort.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const sse = sseReader(res);
    expect(await sse.next()).toBe(': open');
    const posted = await fetch(`${s.url}/announce`, { method: 'POST', body: 'launch at noon' });
    expect(await posted.json()).toEqual({ sent: true });
    for (const socket of sockets) expect(await socket.nextJson()).toEqual({ news: 'launch at noon' });
    expect(await sse.next()).toBe('data: launch at noon');
    await fetch(`${s.url}/announce`, { method: 'POST', body: 'second' });
    expect(await sse.next()).toBe('data: second');
    abort.abort();
    for (const socket of sockets) socket.ws.close();
  });
});

describe('server-sent events', () => {
  it('ends the consumer when the client goes away: groups left, disconnect run, the channel no longer read', async () => {
    const s = await start();
    const abort = new AbortController();
    const res = await fetch(`${s.url}/events`, { signal: abort.signal });
    const sse = sseReader(res);
    await sse.next();
    abort.abort();
    await until(() => events.length === 1, 'disconnect');
    const channel = events[0]!.replace('disconnect ', '');
    await layer.groupSend('news', { type: 'news.item', text: 'nobody' });
    await layer.send(channel, { type: 'news.item', text: 'kept' });
    expect(await layer.receive(channel, { signal: AbortSignal.timeout(500) })).toEqual({ type: 'news.item', text: 'kept' });
  });

  it('ends open streams on shutdown', async () => {
    const s = await start();
    const res = await fetch(`${s.url}/events`);
    const reader = res.body!.getReader();
    await reader.read();
    await s.consumers.shutdown(1012, 2000);
    let done = false;
    while (!done) done = (await reader.read()).done;
    expect(events).toHaveLength(1);
  });
});

describe('request and response', () => {
  it('hands the body to handle and sends the response back', async () => {
    const s = await start();
    const res = await fetch(`${s.url}/echo`, { method: 'POST', body: 'ping' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-method')).toBe('POST');
    expect(await res.text()).toBe('ping');
  });

  it('refuses a body over maxBodyBytes with 413', async () => {
    const s = await start();
    const res = await fetch(`${s.url}/echo`, { method: 'POST', body: 'x'.repeat(2048) });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ code: 'too-large' });
  });

  it('answers 500 when handle fails, and the server keeps serving', async () => {
    const s = await start();
    const res = await fetch(`${s.url}/echo?fail`, { method: 'POST', body: 'x' });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ type: 'error', code: 'internal-error', message: 'The server failed to handle this request.' });
    expect(await (await fetch(`${s.url}/echo`, { method: 'POST', body: 'ok' })).text()).toBe('ok');
  });
});
