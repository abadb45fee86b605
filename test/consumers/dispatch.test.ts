/**
 * Dispatch of layer messages by type: only the types a class declares in `handles` reach a
 * handler; anything else is refused loudly and ends only that consumer.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer, type Message } from '../../src/layers/index.js';
import { DispatchError, handlerName, handlerTable, JsonWebsocketConsumer, RESOLVED, WebsocketConsumer } from '../../src/consumers/index.js';
import { WebsocketCommunicator } from '../helpers/communicator.js';

let layer: InMemoryChannelLayer;
beforeEach(() => {
  layer = new InMemoryChannelLayer();
});
afterEach(async () => {
  await layer.close();
});

/** Declares `signal.relay` and `chat_message.sent`; also has a public method it does not declare. */
class Relay extends JsonWebsocketConsumer {
  static override handles = ['signal.relay', 'chat_message.sent'];
  readonly disconnects: number[] = [];
  async signalRelay(m: Message): Promise<void> {
    await this.sendJson({ relayed: m.text });
  }
  async chatMessageSent(m: Message): Promise<void> {
    await this.sendJson({ chat: m.text });
  }
  /** Public, but not in `handles`: no layer message may reach it. */
  async secretMethod(): Promise<void> {
    await this.sendJson({ leaked: true });
  }
  override async disconnect(code: number): Promise<void> {
    this.disconnects.push(code);
  }
}

async function connected(): Promise<WebsocketCommunicator<Relay>> {
  const c = new WebsocketCommunicator(Relay, { layer });
  expect(await c.connect()).toEqual({ accepted: true });
  return c;
}

describe('handler names', () => {
  it('start a capitalised word at each dot and underscore', () => {
    expect(handlerName('signal.relay')).toBe('signalRelay');
    expect(handlerName('a.b_c')).toBe('aBC');
    expect(handlerName('chat_message.sent')).toBe('chatMessageSent');
    expect(handlerName('ping')).toBe('ping');
  });
});

describe('dispatch', () => {
  it('calls the handler of a declared type', async () => {
    const c = await connected();
    await layer.send(c.consumer!.channelName, { type: 'signal.relay', text: 'sdp' });
    await layer.send(c.consumer!.channelName, { type: 'chat_message.sent', text: 'hi' });
    expect(await c.receiveJson()).toEqual({ relayed: 'sdp' });
    expect(await c.receiveJson()).toEqual({ chat: 'hi' });
    await c.disconnect();
  });

  it('refuses a type the class does not declare, even when a method by that name exists: logged, 1011, disconnect runs, others untouched', async () => {
    const victim = await connected();
    const bystander = await connected();
    await layer.groupAdd('everyone', victim.consumer!.channelName);
    await layer.groupAdd('everyone', bystander.consumer!.channelName);
    await layer.send(victim.consumer!.channelName, { type: 'secret.method' });
    expect(await victim.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
    await victim.done;
    expect(victim.consumer!.disconnects).toEqual([1011]);
    const [entry] = victim.logger!.at('error');
    expect(entry!.obj).toMatchObject({ err: expect.any(DispatchError) });
    const err = (entry!.obj as { err: DispatchError }).err;
    expect(err.code).toBe('not-handled');
    expect(err.message).toBe('Relay does not handle "secret.method": it is not in Relay.handles ["signal.relay","chat_message.sent"]');
    await layer.groupSend('everyone', { type: 'signal.relay', text: 'after' });
    expect(await bystander.receiveJson()).toEqual({ relayed: 'after' });
    await bystander.disconnect();
  });

  it('refuses a built-in method as a message type (a layer message can never close or disconnect a consumer)', async () => {
    for (const type of ['close', 'disconnect', 'websocket.disconnect', 'send']) {
      const c = await connected();
      await layer.send(c.consumer!.channelName, { type });
      expect(await c.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
      await c.done;
      expect((c.logger!.at('error')[0]!.obj as { err: DispatchError }).err.code).toBe('not-handled');
    }
  });

  it('refuses a type with a leading underscore or dot', async () => {
    for (const type of ['_private.handler', '.private_handler']) {
      const c = await connected();
      await layer.send(c.consumer!.channelName, { type });
      expect(await c.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
      const err = (c.logger!.at('error')[0]!.obj as { err: DispatchError }).err;
      expect(err.code).toBe('malformed-type');
      expect(err.message).toMatch(/leading underscore or dot/);
    }
  });

  it('refuses a message without a string type', async () => {
    const c = await connected();
    await expect(c.consumer!.dispatch({} as Message)).rejects.toMatchObject({ name: 'DispatchError', code: 'no-type' });
    await expect(c.consumer!.dispatch({ type: 'a..b' })).rejects.toMatchObject({ code: 'malformed-type' });
    await c.disconnect();
  });
});

describe('handlers that finish at once (RESOLVED, or no promise)', () => {
  /** Mixes handlers that return RESOLVED, return nothing, throw, and await: order must hold across them. */
  class Mixed extends WebsocketConsumer {
    static override handles = ['quick', 'plain', 'slow', 'broken'];
    readonly seen: string[] = [];
    quick(m: Message): Promise<void> {
      this.seen.push(`quick ${m.n}`);
      return this.send({ text: `quick ${m.n}` }); // RESOLVED: the frame went out at once
    }
    plain(m: Message): void {
      this.seen.push(`plain ${m.n}`);
    }
    async slow(m: Message): Promise<void> {
      await new Promise((r) => setTimeout(r, 20));
      this.seen.push(`slow ${m.n}`);
      await this.send({ text: `slow ${m.n}` });
    }
    broken(): void {
      throw new Error('sync handler failed');
    }
    override async receive(frame: { text?: string }): Promise<void> {
      this.seen.push(`frame ${frame.text}`);
    }
  }

  it('dispatch answers RESOLVED itself for them, and a rejection for one that throws', async () => {
    const c = new WebsocketCommunicator(Mixed, { layer });
    expect(await c.connect()).toEqual({ accepted: true });
    expect(c.consumer!.dispatch({ type: 'quick', n: 0 })).toBe(RESOLVED);
    expect(c.consumer!.dispatch({ type: 'plain', n: 0 })).toBe(RESOLVED);
    await expect(c.consumer!.dispatch({ type: 'broken' })).rejects.toThrow('sync handler failed');
    await c.disconnect();
  });

  it('messages and frames are still handled one at a time in arrival order, across quick and slow handlers', async () => {
    const c = new WebsocketCommunicator(Mixed, { layer });
    expect(await c.connect()).toEqual({ accepted: true });
    const ch = c.consumer!.channelName;
    await layer.send(ch, { type: 'slow', n: 1 });
    await layer.send(ch, { type: 'quick', n: 2 });
    await layer.send(ch, { type: 'plain', n: 3 });
    await layer.send(ch, { type: 'slow', n: 4 });
    await layer.send(ch, { type: 'quick', n: 5 });
    expect(await c.receiveOutput()).toEqual({ text: 'slow 1' });
    expect(await c.receiveOutput()).toEqual({ text: 'quick 2' });
    await c.sendText('a');
    expect(await c.receiveOutput()).toEqual({ text: 'slow 4' });
    expect(await c.receiveOutput()).toEqual({ text: 'quick 5' });
    // The frame came while `slow 4` ran, before `quick 5` was taken off the layer (a channel's next
    // message is taken only once the previous one was handled).
    expect(c.consumer!.seen).toEqual(['slow 1', 'quick 2', 'plain 3', 'slow 4', 'frame a', 'quick 5']);
    await c.disconnect();
  });

  it('a sync handler that throws ends that consumer with 1011, as an async one does', async () => {
    const c = new WebsocketCommunicator(Mixed, { layer });
    expect(await c.connect()).toEqual({ accepted: true });
    await layer.send(c.consumer!.channelName, { type: 'broken' });
    expect(await c.receiveOutput()).toEqual({ close: 1011, reason: 'Internal error' });
    await c.done;
  });
});

describe('handles', () => {
  it('must name a handler method for each type, and never a built-in one', async () => {
    class Missing extends WebsocketConsumer {
      static override handles = ['signal.relay'];
    }
    class Builtin extends WebsocketConsumer {
      static override handles = ['close'];
    }
    class Underscored extends WebsocketConsumer {
      static override handles = ['_hidden'];
    }
    expect(() => handlerTable(Missing)).toThrow('Missing.handles lists "signal.relay" but Missing has no signalRelay() method');
    expect(() => handlerTable(Builtin)).toThrow(/would call the built-in close\(\)/);
    expect(() => handlerTable(Underscored)).toThrow(/leading underscore/);
    await expect(new WebsocketCommunicator(Missing, { layer }).connect()).rejects.toThrow(/no signalRelay\(\) method/);
  });
});
