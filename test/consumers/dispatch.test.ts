/**
 * Dispatch of layer messages by type: only the types a class declares in `handles` reach a
 * handler; anything else is refused loudly and ends only that consumer.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InMemoryChannelLayer, type Message } from '../../src/layers/index.js';
import { DispatchError, handlerName, handlerTable, JsonWebsocketConsumer, WebsocketConsumer } from '../../src/consumers/index.js';
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
