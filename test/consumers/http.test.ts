/**
 * HttpConsumer in-process: a whole response, failures, and a response held open (SSE) while the
 * consumer keeps receiving layer messages, until the client goes away.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer, type Message } from '../../src/layers/index.js';
import { HttpConsumer, StopConsumer } from '../../src/consumers/index.js';
import { HttpCommunicator } from '../helpers/communicator.js';

let layer: InMemoryChannelLayer;
beforeEach(() => {
  layer = new InMemoryChannelLayer();
});
afterEach(async () => {
  await layer.close();
});

const decoder = new TextDecoder();

class EchoBody extends HttpConsumer {
  disconnected = 0;
  async handle(body: Uint8Array): Promise<void> {
    const json = JSON.parse(decoder.decode(body)) as unknown;
    await this.sendResponse(201, JSON.stringify({ got: json, method: this.scope.method }), { 'content-type': 'application/json' });
  }
  override async disconnect(): Promise<void> {
    this.disconnected++;
  }
}

/** Server-sent events of the `news` group, after a first comment. */
class NewsStream extends HttpConsumer {
  static override handles = ['news.item'];
  static events: string[] = [];
  override groups(): string[] {
    return ['news'];
  }
  async handle(): Promise<void> {
    await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } });
    await this.sendBody(': open\n\n', { more: true });
  }
  async newsItem(m: Message): Promise<void> {
    await this.sendBody(`data: ${String(m.text)}\n\n`, { more: m.text !== 'last' });
  }
  override async disconnect(): Promise<void> {
    NewsStream.events.push('disconnect');
  }
}

describe('HttpConsumer', () => {
  it('answers with the status, headers and body it sends, then runs disconnect', async () => {
    const c = new HttpCommunicator(EchoBody, { layer, method: 'POST', body: '{"a":1}' });
    const res = await c.getResponse();
    expect(res).toMatchObject({ status: 201, headers: { 'content-type': 'application/json' }, complete: true });
    expect(JSON.parse(res.text)).toEqual({ got: { a: 1 }, method: 'POST' });
    await c.done;
    expect(c.consumer!.disconnected).toBe(1);
  });

  it('builds one instance per request', async () => {
    const a = new HttpCommunicator(EchoBody, { layer, body: '1' });
    const b = new HttpCommunicator(EchoBody, { layer, body: '2' });
    await Promise.all([a.getResponse(), b.getResponse()]);
    expect(a.consumer).toBeInstanceOf(EchoBody);
    expect(a.consumer).not.toBe(b.consumer);
  });

  it('answers 500 with a JSON error when handle fails before responding, and logs it', async () => {
    class Fails extends HttpConsumer {
      async handle(): Promise<void> {
        throw new Error('handle exploded');
      }
    }
    const c = new HttpCommunicator(Fails, { layer });
    const res = await c.getResponse();
    expect(res.status).toBe(500);
    expect(JSON.parse(res.text)).toEqual({ type: 'error', code: 'internal-error', message: 'The server failed to handle this request.' });
    expect((c.logger!.at('error')[0]!.obj as { err: Error }).err.message).toBe('handle exploded');
  });

  it('cuts a started response short when a handler fails after the headers', async () => {
    class FailsLate extends HttpConsumer {
      async handle(): Promise<void> {
        await this.sendHeaders({ status: 200 });
        await this.sendBody('partial', { more: true });
        throw new Error('late failure');
      }
    }
    const res = await new HttpCommunicator(FailsLate, { layer }).getResponse();
    expect(res).toMatchObject({ status: 200, text: 'partial', complete: false });
  });

  it('ends with 204 on StopConsumer before responding', async () => {
    class Stops extends HttpConsumer {
      async handle(): Promise<void> {
        throw new StopConsumer();
      }
    }
    const c = new HttpCommunicator(Stops, { layer });
    expect(await c.getResponse()).toMatchObject({ status: 204, text: '', complete: true });
    expect(c.logger!.at('error')).toEqual([]);
  });

  it('answers 500 when handle returns without responding and handles no layer messages', async () => {
    class Forgets extends HttpConsumer {
      async handle(): Promise<void> {}
    }
    const c = new HttpCommunicator(Forgets, { layer });
    expect((await c.getResponse()).status).toBe(500);
    expect(String((c.logger!.at('error')[0]!.obj as { err: Error }).err.message)).toMatch(/returned without responding/);
  });

  it('keeps a response open after handle returns, streaming group messages until it ends it', async () => {
    NewsStream.events = [];
    const c = new HttpCommunicator(NewsStream, { layer });
    expect(await c.start()).toEqual({ status: 200, headers: { 'content-type': 'text/event-stream' } });
    expect(decoder.decode((await c.receiveChunk())!)).toBe(': open\n\n');
    await layer.groupSend('news', { type: 'news.item', text: 'one' });
    expect(decoder.decode((await c.receiveChunk())!)).toBe('data: one\n\n');
    await layer.groupSend('news', { type: 'news.item', text: 'last' });
    expect(decoder.decode((await c.receiveChunk())!)).toBe('data: last\n\n');
    expect(await c.receiveChunk()).toBeNull();
    await c.done;
    expect(NewsStream.events).toEqual(['disconnect']);
  });

  it('ends a held response when the client goes away: groups left, disconnect run, nothing more taken', async () => {
    NewsStream.events = [];
    const c = new HttpCommunicator(NewsStream, { layer });
    await c.start();
    await c.receiveChunk();
    const channel = c.consumer!.channelName;
    await c.disconnect();
    expect(NewsStream.events).toEqual(['disconnect']);
    await layer.groupSend('news', { type: 'news.item', text: 'nobody listens' });
    await layer.send(channel, { type: 'news.item', text: 'kept' });
    expect(await layer.receive(channel, { signal: AbortSignal.timeout(200) })).toEqual({ type: 'news.item', text: 'kept' });
  });

  it('refuses with the precheck status and body, creating no consumer', async () => {
    class Guarded extends EchoBody {
      static override async precheck(): Promise<{ status: number; body: unknown }> {
        return { status: 429, body: { code: 'rate-limited' } };
      }
    }
    const c = new HttpCommunicator(Guarded, { layer });
    const res = await c.getResponse();
    expect(res.status).toBe(429);
    expect(JSON.parse(res.text)).toEqual({ code: 'rate-limited' });
    expect(c.consumer).toBeUndefined();
  });

  it('cuts the response of a client that leaves more than maxBufferedBytes unread, and ends the consumer', async () => {
    NewsStream.events = [];
    const c = new HttpCommunicator(NewsStream, { layer, maxBufferedBytes: 100 });
    await c.start();
    for (let i = 0; i < 10; i++) await layer.groupSend('news', { type: 'news.item', text: 'x'.repeat(30) });
    await c.done;
    expect(NewsStream.events).toEqual(['disconnect']);
    const res = await c.getResponse();
    expect(res.complete).toBe(false);
    // ': open' (8 bytes) and 3 events of 38 bytes are unread (122 > 100) when the 4th is sent: it cuts instead.
    expect(res.text.split('\n\n').filter((e) => e.startsWith('data:'))).toHaveLength(3);
    expect(c.logger!.at('warn')[0]!.msg).toMatch(/not reading/);
  });

  it('refuses sendBody before sendHeaders, and a second sendHeaders', async () => {
    const errors: string[] = [];
    class Misuse extends HttpConsumer {
      async handle(): Promise<void> {
        await this.sendBody('x').catch((err: Error) => errors.push(err.message));
        await this.sendHeaders();
        await this.sendHeaders().catch((err: Error) => errors.push(err.message));
        await this.sendBody('ok');
      }
    }
    expect((await new HttpCommunicator(Misuse, { layer }).getResponse()).text).toBe('ok');
    expect(errors).toEqual(['sendBody() before sendHeaders(): start the response first', 'sendHeaders() was called twice: the response has started']);
  });
});
