/**
 * WebsocketConsumer and JsonWebsocketConsumer, driven in-process by the communicator (the same
 * runner the server uses): lifecycle, accept and close, ordering, failures, backpressure.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer, type Message } from '../../src/layers/index.js';
import {
  DenyConnection, isValidCloseCode, JsonWebsocketConsumer, RecordingLogger, StopConsumer, WebsocketConsumer,
  type Frame, type Scope,
} from '../../src/consumers/index.js';
import { WebsocketCommunicator } from '../helpers/communicator.js';

let layer: InMemoryChannelLayer;
beforeEach(() => {
  layer = new InMemoryChannelLayer();
});
afterEach(async () => {
  await layer.close();
});

/** Resolves with the next message on `channel`, or undefined when none comes within `ms`. */
async function receiveWithin(channel: string, ms: number): Promise<Message | undefined> {
  try {
    return await layer.receive(channel, { signal: AbortSignal.timeout(ms) });
  } catch {
    return undefined;
  }
}

class Echo extends WebsocketConsumer {
  override async receive(frame: Frame): Promise<void> {
    await this.send(frame);
  }
}

class JsonEcho extends JsonWebsocketConsumer {
  override async receiveJson(content: unknown): Promise<void> {
    await this.sendJson({ echo: content });
  }
}

describe('lifecycle', () => {
  it('resolves the channel, joins the groups, then connects; on close leaves the groups, then calls disconnect(code)', async () => {
    const events: string[] = [];
    class Lifecycle extends WebsocketConsumer {
      static override handles = ['probe'];
      protected override async resolveChannelName(): Promise<string> {
        events.push('channel');
        return 'seat.lifecycle';
      }
      override groups(): string[] {
        events.push(`groups (channel ${this.channelName})`);
        return ['room'];
      }
      override async connect(): Promise<void> {
        events.push('connect');
        // Joined already: a group message sent now is dispatched once connect() has returned.
        await this.channelLayer.groupSend('room', { type: 'probe' });
        await this.accept();
      }
      async probe(): Promise<void> {
        events.push('probe');
      }
      override async disconnect(code: number): Promise<void> {
        events.push(`disconnect ${code}`);
        // The groups are left: this group message reaches nobody.
        await this.channelLayer.groupSend('room', { type: 'probe' });
      }
    }
    const c = new WebsocketCommunicator(Lifecycle, { layer });
    expect(await c.connect()).toEqual({ accepted: true });
    await sleep(20);
    await c.disconnect(4001);
    expect(events).toEqual(['channel', 'groups (channel seat.lifecycle)', 'connect', 'probe', 'disconnect 4001']);
    expect(await receiveWithin('seat.lifecycle', 50)).toBeUndefined();
  });

  it('stops receiving as soon as the socket closes: what is sent to its channel after that stays on the layer', async () => {
    class Seat extends WebsocketConsumer {
      static override handles = ['signal.relay'];
      protected override async resolveChannelName(): Promise<string> {
        return 'seat.kept';
      }
      async signalRelay(m: Message): Promise<void> {
        await this.send({ text: String(m.n) });
      }
      override async disconnect(): Promise<void> {
        // Sent while disconnect runs: the consumer must not take it.
        await this.channelLayer.send(this.channelName, { type: 'signal.relay', n: 2 });
      }
    }
    const c = new WebsocketCommunicator(Seat, { layer });
    await c.connect();
    await layer.send('seat.kept', { type: 'signal.relay', n: 1 });
    expect(await c.receiveOutput()).toEqual({ text: '1' });
    await c.disconnect(1001);
    await layer.send('seat.kept', { type: 'signal.relay', n: 3 });
    expect(await receiveWithin('seat.kept', 200)).toEqual({ type: 'signal.relay', n: 2 });
    expect(await receiveWithin('seat.kept', 200)).toEqual({ type: 'signal.relay', n: 3 });
  });

  it('builds one instance per connection, each with its own scope', async () => {
    const a = new WebsocketCommunicator(Echo, { layer, path: '/a', params: { id: 'a' } });
    const b = new WebsocketCommunicator(Echo, { layer, path: '/b', params: { id: 'b' }, query: { x: '1' } });
    await a.connect();
    await b.connect();
    expect(a.consumer).not.toBe(b.consumer);
    expect(a.consumer!.scope.path).toBe('/a');
    expect(b.consumer!.scope.params).toEqual({ id: 'b' });
    expect(b.consumer!.scope.query.get('x')).toBe('1');
    expect(a.consumer!.channelName).not.toBe(b.consumer!.channelName);
    await a.disconnect();
    await b.disconnect();
  });

  it('calls disconnect once, even when the server closes and the client then disconnects', async () => {
    const codes: number[] = [];
    class Bye extends WebsocketConsumer {
      override async receive(): Promise<void> {
        await this.close(4000, 'bye');
      }
      override async disconnect(code: number): Promise<void> {
        codes.push(code);
      }
    }
    const c = new WebsocketCommunicator(Bye, { layer });
    await c.connect();
    c.sendText('x');
    expect(await c.receiveOutput()).toEqual({ close: 4000, reason: 'bye' });
    await c.disconnect(1000);
    expect(codes).toEqual([4000]);
  });
});

describe('accept and close', () => {
  it('accepts with a subprotocol the client offered', async () => {
    class Proto extends WebsocketConsumer {
      override async connect(): Promise<void> {
        await this.accept(this.scope.subprotocols![1]);
      }
    }
    const c = new WebsocketCommunicator(Proto, { layer, subprotocols: ['v1', 'v2'] });
    expect(await c.connect()).toEqual({ accepted: true, subprotocol: 'v2' });
    await c.disconnect();
  });

  it('fails the connection with 1011 when accept names a subprotocol the client did not offer', async () => {
    class Proto extends WebsocketConsumer {
      override async connect(): Promise<void> {
        await this.accept('v9');
      }
    }
    const c = new WebsocketCommunicator(Proto, { layer, subprotocols: ['v1'] });
    expect(await c.connect()).toMatchObject({ accepted: false, closeCode: 1011 });
    expect(c.logger!.at('error')[0]!.obj).toMatchObject({ err: expect.objectContaining({ message: expect.stringContaining('v9') }) });
  });

  it('refuses with the code when connect() closes before accepting, and still calls disconnect', async () => {
    const codes: number[] = [];
    class Full extends WebsocketConsumer {
      override async connect(): Promise<void> {
        await this.close(4409, 'call-full');
      }
      override async disconnect(code: number): Promise<void> {
        codes.push(code);
      }
    }
    const c = new WebsocketCommunicator(Full, { layer });
    expect(await c.connect()).toEqual({ accepted: false, closeCode: 4409, closeReason: 'call-full' });
    await c.done;
    expect(codes).toEqual([4409]);
  });

  it('refuses with 1008 (or the code it carries) when connect() throws DenyConnection', async () => {
    class Deny extends WebsocketConsumer {
      override async connect(): Promise<void> {
        throw this.scope.query.has('code') ? new DenyConnection('go away', Number(this.scope.query.get('code'))) : new DenyConnection();
      }
    }
    expect(await new WebsocketCommunicator(Deny, { layer }).connect()).toEqual({ accepted: false, closeCode: 1008 });
    const c = new WebsocketCommunicator(Deny, { layer, query: { code: '4403' } });
    expect(await c.connect()).toEqual({ accepted: false, closeCode: 4403, closeReason: 'go away' });
    expect(c.logger!.at('error')).toEqual([]);
  });

  it('closes with 1011 and logs when connect() returns without accepting or closing', async () => {
    class Undecided extends WebsocketConsumer {
      override async connect(): Promise<void> {}
    }
    const c = new WebsocketCommunicator(Undecided, { layer });
    expect(await c.connect()).toMatchObject({ accepted: false, closeCode: 1011 });
    expect(String((c.logger!.at('error')[0]!.obj as { err: Error }).err.message)).toMatch(/without calling accept\(\) or close\(\)/);
  });

  it('closes after accepting with the code and reason given; disconnect gets the code', async () => {
    const codes: number[] = [];
    class Closer extends WebsocketConsumer {
      override async receive(frame: Frame): Promise<void> {
        await this.close(Number(frame.text), 'done');
      }
      override async disconnect(code: number): Promise<void> {
        codes.push(code);
      }
    }
    const c = new WebsocketCommunicator(Closer, { layer });
    await c.connect();
    c.sendText('4321');
    expect(await c.receiveOutput()).toEqual({ close: 4321, reason: 'done' });
    await c.done;
    expect(codes).toEqual([4321]);
  });

  it('accepts only the close codes a server may send', () => {
    for (const code of [1000, 1001, 1008, 1009, 1011, 1012, 1013, 1014, 3000, 4000, 4999]) expect(isValidCloseCode(code)).toBe(true);
    for (const code of [0, 999, 1002, 1003, 1004, 1005, 1006, 1007, 1010, 1015, 2000, 2999, 5000, 1000.5, Number.NaN]) expect(isValidCloseCode(code)).toBe(false);
  });

  it('throws a RangeError for close(1005), close(1006), close(1015) and an over-long reason, which ends the connection with 1011', async () => {
    const thrown: unknown[] = [];
    class BadClose extends WebsocketConsumer {
      override async receive(frame: Frame): Promise<void> {
        const [code, reason] = JSON.parse(frame.text!) as [number, string];
        try {
          await this.close(code, reason);
        } catch (err) {
          thrown.push(err);
          throw err;
        }
      }
    }
    for (const [code, reason] of [[1005, ''], [1006, ''], [1015, ''], [1000, 'x'.repeat(124)]] as const) {
      const c = new WebsocketCommunicator(BadClose, { layer });
      await c.connect();
      c.sendJson([code, reason]);
      expect(await c.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
      await c.done;
    }
    expect(thrown).toHaveLength(4);
    for (const err of thrown) expect(err).toBeInstanceOf(RangeError);
  });

  it('sends then closes with send(frame, true) and send(frame, 4000)', async () => {
    class Last extends WebsocketConsumer {
      override async receive(frame: Frame): Promise<void> {
        await this.send({ text: 'last' }, frame.text === 'true' ? true : Number(frame.text));
      }
    }
    for (const [arg, code] of [['true', 1000], ['4000', 4000]] as const) {
      const c = new WebsocketCommunicator(Last, { layer });
      await c.connect();
      c.sendText(arg);
      expect(await c.receiveOutput()).toEqual({ text: 'last' });
      expect(await c.receiveOutput()).toEqual({ close: code });
    }
  });

  it('makes send() after close a no-op, not a throw', async () => {
    class Late extends WebsocketConsumer {
      override async receive(): Promise<void> {
        await this.close(1000);
        await this.send({ text: 'after close' });
        await this.send({ bytes: new Uint8Array([1]) });
        await this.close(4000); // closing twice does nothing either
      }
    }
    const c = new WebsocketCommunicator(Late, { layer });
    await c.connect();
    c.sendText('go');
    expect(await c.receiveOutput()).toEqual({ close: 1000 });
    expect(await c.receiveNothing()).toBe(true);
    expect(c.logger!.at('error')).toEqual([]);
  });

  it('refuses send() before accept() (1011) and a send of neither or both of text and bytes (TypeError)', async () => {
    class Early extends WebsocketConsumer {
      override async connect(): Promise<void> {
        await this.send({ text: 'too early' });
      }
    }
    const early = new WebsocketCommunicator(Early, { layer });
    expect(await early.connect()).toMatchObject({ accepted: false, closeCode: 1011 });
    const errors: unknown[] = [];
    class Shapes extends WebsocketConsumer {
      override async receive(): Promise<void> {
        for (const frame of [{}, { text: 'a', bytes: new Uint8Array() }, null as unknown as Frame]) {
          await this.send(frame).catch((err: unknown) => errors.push(err)); // rejects: never throws at the call
        }
        await this.send({ text: 'ok' });
      }
    }
    const c = new WebsocketCommunicator(Shapes, { layer });
    await c.connect();
    c.sendText('go');
    expect(await c.receiveOutput()).toEqual({ text: 'ok' });
    expect(errors.map((e) => e instanceof TypeError)).toEqual([true, true, true]);
  });

  it('echoes text and bytes frames as they came', async () => {
    const c = new WebsocketCommunicator(Echo, { layer });
    await c.connect();
    c.sendText('héllo');
    c.sendBytes(new Uint8Array([0, 1, 255]));
    expect(await c.receiveOutput()).toEqual({ text: 'héllo' });
    expect(await c.receiveOutput()).toEqual({ bytes: new Uint8Array([0, 1, 255]) });
    await c.disconnect();
  });
});

describe('ordering', () => {
  it('echoes 2,000 frames in the order they were sent', async () => {
    const c = new WebsocketCommunicator(JsonEcho, { layer });
    await c.connect();
    for (let i = 0; i < 2000; i++) c.sendJson(i);
    const got: unknown[] = [];
    for (let i = 0; i < 2000; i++) got.push(((await c.receiveJson()) as { echo: number }).echo);
    expect(got).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    await c.disconnect();
  });

  it('runs one handler at a time, socket frames and layer messages through one queue in arrival order', async () => {
    let active = 0;
    let most = 0;
    class Slow extends WebsocketConsumer {
      static override handles = ['note'];
      private async handle(label: string): Promise<void> {
        active++;
        most = Math.max(most, active);
        await sleep(2);
        await this.send({ text: label });
        active--;
      }
      override async receive(frame: Frame): Promise<void> {
        await this.handle(`frame ${frame.text}`);
      }
      async note(m: Message): Promise<void> {
        await this.handle(`note ${m.n}`);
      }
    }
    const c = new WebsocketCommunicator(Slow, { layer });
    await c.connect();
    const sent: string[] = [];
    for (let i = 0; i < 10; i++) {
      if (i % 2 === 0) {
        c.sendText(String(i));
        sent.push(`frame ${i}`);
      } else {
        await layer.send(c.consumer!.channelName, { type: 'note', n: i });
        sent.push(`note ${i}`);
      }
      await sleep(10); // lets each reach the queue before the next is sent, so arrival order is sending order
    }
    const got: string[] = [];
    for (let i = 0; i < 10; i++) got.push(((await c.receiveOutput()) as Frame).text!);
    expect(got).toEqual(sent);
    expect(most).toBe(1);
    await c.disconnect();
  });

  it('leaves layer messages on the layer while a handler is busy, and takes them in order afterwards', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    class Busy extends WebsocketConsumer {
      static override handles = ['note'];
      override async receive(): Promise<void> {
        await gate;
      }
      async note(m: Message): Promise<void> {
        await this.send({ text: String(m.n) });
      }
    }
    const small = new InMemoryChannelLayer({ capacity: 3 });
    const c = new WebsocketCommunicator(Busy, { layer: small });
    await c.connect();
    c.sendText('block');
    await sleep(5);
    const channel = c.consumer!.channelName;
    // One message is taken by the pending receive; three more fill the channel; the next is refused.
    for (let n = 1; n <= 4; n++) await small.send(channel, { type: 'note', n });
    await expect(small.send(channel, { type: 'note', n: 5 })).rejects.toMatchObject({ code: 'channel-full' });
    release();
    const got: string[] = [];
    for (let i = 0; i < 4; i++) got.push(((await c.receiveOutput()) as Frame).text!);
    expect(got).toEqual(['1', '2', '3', '4']);
    await c.disconnect();
    await small.close();
  });
});

describe('failures', () => {
  it('closes only the failing connection with 1011, logs the error, reports it, and still runs disconnect', async () => {
    const reported: unknown[] = [];
    const disconnected: number[] = [];
    class Fragile extends JsonWebsocketConsumer {
      override async receiveJson(content: unknown): Promise<void> {
        if (content === 'boom') throw new Error('handler exploded');
        await this.sendJson(content);
      }
      override async disconnect(code: number): Promise<void> {
        disconnected.push(code);
      }
    }
    const hooks = { onError: (err: unknown) => void reported.push(err) };
    const a = new WebsocketCommunicator(Fragile, { layer, hooks });
    const b = new WebsocketCommunicator(Fragile, { layer, hooks });
    await a.connect();
    await b.connect();
    a.sendJson('boom');
    a.sendJson('never handled');
    expect(await a.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
    expect(await a.receiveNothing()).toBe(true);
    await a.done;
    expect(disconnected).toEqual([1011]);
    expect(a.logger!.at('error')).toHaveLength(1);
    expect((a.logger!.at('error')[0]!.obj as { err: Error }).err.message).toBe('handler exploded');
    expect(reported).toHaveLength(1);
    b.sendJson('still here');
    expect(await b.receiveJson()).toBe('still here');
    expect(b.logger!.at('error')).toEqual([]);
    await b.disconnect();
  });

  it('ends cleanly with 1000 on StopConsumer, without logging an error', async () => {
    const disconnected: number[] = [];
    class Stopper extends WebsocketConsumer {
      override async receive(): Promise<void> {
        throw new StopConsumer();
      }
      override async disconnect(code: number): Promise<void> {
        disconnected.push(code);
      }
    }
    const c = new WebsocketCommunicator(Stopper, { layer });
    await c.connect();
    c.sendText('stop');
    expect(await c.receiveOutput()).toEqual({ close: 1000 });
    await c.done;
    expect(disconnected).toEqual([1000]);
    expect(c.logger!.at('error')).toEqual([]);
  });

  it('logs a failing disconnect() and a throwing or rejecting hook, and still finishes', async () => {
    class BadBye extends WebsocketConsumer {
      override async disconnect(): Promise<void> {
        throw new Error('disconnect exploded');
      }
    }
    const c = new WebsocketCommunicator(BadBye, {
      layer,
      hooks: {
        onOpen: () => {
          throw new Error('onOpen exploded');
        },
        onClose: async () => {
          throw new Error('onClose exploded');
        },
      },
    });
    await c.connect();
    await c.disconnect();
    await sleep(1);
    const messages = c.logger!.at('error').map((e) => (e.obj as { err: Error }).err.message);
    expect(messages).toEqual(['onOpen exploded', 'disconnect exploded', 'onClose exploded']);
  });

  it('ends the connection with 1011 when the layer closes under a receiving consumer', async () => {
    const own = new InMemoryChannelLayer();
    const c = new WebsocketCommunicator(Echo, { layer: own });
    await c.connect();
    await own.close();
    expect(await c.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
    expect((c.logger!.at('error')[0]!.obj as { err: Error }).err.name).toBe('LayerClosed');
  });
});

describe('JSON frames', () => {
  it('answers a frame that is not JSON with bad-message and keeps the socket open', async () => {
    const c = new WebsocketCommunicator(JsonEcho, { layer });
    await c.connect();
    c.sendText('{not json');
    expect(await c.receiveJson()).toMatchObject({ type: 'error', code: 'bad-message', message: expect.stringMatching(/^The message is not valid JSON/) });
    c.sendText('');
    expect(await c.receiveJson()).toMatchObject({ type: 'error', code: 'bad-message' });
    c.sendJson({ ok: true });
    expect(await c.receiveJson()).toEqual({ echo: { ok: true } });
    await c.disconnect();
  });

  it('answers a binary frame with a clear error and keeps the socket open', async () => {
    const c = new WebsocketCommunicator(JsonEcho, { layer });
    await c.connect();
    c.sendBytes(new Uint8Array([123, 125]));
    expect(await c.receiveJson()).toEqual({ type: 'error', code: 'bad-message', message: 'Binary frames are not accepted; send JSON as a text frame.' });
    c.sendJson(1);
    expect(await c.receiveJson()).toEqual({ echo: 1 });
    await c.disconnect();
  });

  it('fails the handler (1011) when receiveJson throws before returning its promise, and still runs disconnect', async () => {
    let disconnected: number | undefined;
    class SyncThrow extends JsonWebsocketConsumer {
      override receiveJson(): Promise<void> {
        throw new Error('thrown, not rejected');
      }
      override async disconnect(code: number): Promise<void> {
        disconnected = code;
      }
    }
    const c = new WebsocketCommunicator(SyncThrow, { layer });
    await c.connect();
    c.sendJson({});
    expect(await c.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
    await c.disconnect();
    expect(disconnected).toBe(1011);
    expect((c.logger!.at('error')[0]!.obj as { err: Error }).err.message).toBe('thrown, not rejected');
  });

  it('fails the handler (1011) when sendJson is given what JSON cannot hold', async () => {
    class BigIntSender extends JsonWebsocketConsumer {
      override async receiveJson(): Promise<void> {
        await this.sendJson({ n: 1n });
      }
    }
    const c = new WebsocketCommunicator(BigIntSender, { layer });
    await c.connect();
    c.sendJson({});
    expect(await c.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
  });
});

describe('backpressure', () => {
  it('closes a peer that leaves more than maxBufferedBytes unread with 1013', async () => {
    class Flood extends WebsocketConsumer {
      override async receive(): Promise<void> {
        for (let i = 0; i < 20; i++) await this.send({ text: 'x'.repeat(200) });
      }
    }
    const c = new WebsocketCommunicator(Flood, { layer, maxBufferedBytes: 1000 });
    await c.connect();
    c.sendText('go');
    await sleep(20); // the client reads nothing while the consumer sends
    const outputs = [];
    for (;;) {
      const out = await c.receiveOutput();
      outputs.push(out);
      if ('close' in out) break;
    }
    // 6 frames (1,200 bytes) are unread when the 7th send checks: that one closes instead.
    expect(outputs).toHaveLength(7);
    expect(outputs.at(-1)).toEqual({ close: 1013, reason: 'Peer is not reading' });
    expect(c.logger!.at('warn')[0]!.msg).toMatch(/not reading/);
  });
});

describe('precheck', () => {
  it('refuses with its status and body before any consumer exists', async () => {
    let built = 0;
    class Guarded extends WebsocketConsumer {
      static override async precheck(scope: Scope): Promise<void | { status: number; body?: unknown }> {
        if (scope.query.get('token') !== 'ok') return { status: 401, body: { code: 'unauthorized' } };
      }
      constructor() {
        super();
        built++;
      }
    }
    expect(await new WebsocketCommunicator(Guarded, { layer }).connect()).toEqual({ accepted: false, status: 401, body: { code: 'unauthorized' } });
    expect(built).toBe(0);
    const ok = new WebsocketCommunicator(Guarded, { layer, query: 'token=ok' });
    expect(await ok.connect()).toEqual({ accepted: true });
    expect(built).toBe(1);
    await ok.disconnect();
  });

  it('hands scope.user and scope.state to the consumer', async () => {
    class Authed extends JsonWebsocketConsumer {
      static override async precheck(scope: Scope): Promise<void> {
        scope.user = { name: 'ada' };
        scope.state.plan = 'free';
      }
      override async connect(): Promise<void> {
        await this.accept();
        await this.sendJson({ user: this.scope.user, state: this.scope.state });
      }
    }
    const c = new WebsocketCommunicator(Authed, { layer });
    await c.connect();
    expect(await c.receiveJson()).toEqual({ user: { name: 'ada' }, state: { plan: 'free' } });
    await c.disconnect();
  });

  it('refuses with 500 and logs when precheck throws or answers a status that is not an error', async () => {
    class Broken extends WebsocketConsumer {
      static override async precheck(scope: Scope): Promise<void | { status: number }> {
        if (scope.query.has('ok-status')) return { status: 200 };
        throw new Error('precheck exploded');
      }
    }
    const thrown = new WebsocketCommunicator(Broken, { layer });
    expect(await thrown.connect()).toEqual({ accepted: false, status: 500 });
    expect(thrown.logger!.at('error')).toHaveLength(1);
    const twoHundred = new WebsocketCommunicator(Broken, { layer, query: 'ok-status' });
    expect(await twoHundred.connect()).toEqual({ accepted: false, status: 500 });
  });
});

describe('serverShutdown', () => {
  it('closes with the code the binding gives (1012) by default', async () => {
    const c = new WebsocketCommunicator(Echo, { layer });
    await c.connect();
    c.shutdown(1012);
    expect(await c.receiveOutput()).toEqual({ close: 1012 });
    await c.done;
  });
});

describe('listen', () => {
  it('feeds another channel through the same queue, and stops it with the connection (later messages stay on the layer)', async () => {
    class Inbox extends WebsocketConsumer {
      static override handles = ['signal.relay'];
      override async connect(): Promise<void> {
        await this.accept();
        this.listen('inbox.peer-1');
      }
      async signalRelay(m: Message): Promise<void> {
        await this.send({ text: String(m.n) });
      }
    }
    const c = new WebsocketCommunicator(Inbox, { layer });
    await c.connect();
    await layer.send('inbox.peer-1', { type: 'signal.relay', n: 1 });
    await layer.send(c.consumer!.channelName, { type: 'signal.relay', n: 2 });
    expect(await c.receiveOutput()).toEqual({ text: '1' });
    expect(await c.receiveOutput()).toEqual({ text: '2' });
    await c.disconnect();
    await layer.send('inbox.peer-1', { type: 'signal.relay', n: 3 });
    expect(await receiveWithin('inbox.peer-1', 200)).toEqual({ type: 'signal.relay', n: 3 });
  });

  it.each(['stop', 'unlisten'])('stops with %s, which leaves the channel to the next reader', async (how) => {
    class Handover extends WebsocketConsumer {
      static override handles = ['signal.relay'];
      private stop: (() => Promise<void>) | undefined;
      override async receive(frame: Frame): Promise<void> {
        if (frame.text === 'listen') this.stop = this.listen('inbox.peer-2');
        else if (how === 'stop') await this.stop?.();
        else await this.unlisten('inbox.peer-2');
        await this.send({ text: `${frame.text} done` });
      }
      async signalRelay(m: Message): Promise<void> {
        await this.send({ text: String(m.n) });
      }
    }
    const c = new WebsocketCommunicator(Handover, { layer });
    await c.connect();
    c.sendText('listen');
    expect(await c.receiveOutput()).toEqual({ text: 'listen done' });
    await layer.send('inbox.peer-2', { type: 'signal.relay', n: 1 });
    expect(await c.receiveOutput()).toEqual({ text: '1' });
    c.sendText('stop');
    expect(await c.receiveOutput()).toEqual({ text: 'stop done' });
    await layer.send('inbox.peer-2', { type: 'signal.relay', n: 2 });
    expect(await c.receiveNothing(50)).toBe(true);
    expect(await receiveWithin('inbox.peer-2', 200)).toEqual({ type: 'signal.relay', n: 2 });
    await c.disconnect();
  });
});

describe('the recording logger', () => {
  it('keeps child bindings on each entry', () => {
    const log = new RecordingLogger();
    log.child({ consumer: 'X' }).warn({ a: 1 }, 'hello');
    expect(log.entries).toEqual([{ level: 'warn', obj: { a: 1 }, msg: 'hello', bindings: { consumer: 'X' } }]);
  });
});
