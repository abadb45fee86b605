/**
 * The channel layer conformance suite: one set of tests every backend must pass, each backend
 * supplying only a factory (as socket.io's adapters share one test runner). It re-expresses the
 * layer tests of Django Channels and channels_redis (shared/research/channels-spec.md §5) plus
 * what this project adds: same codec and size limit on every backend, rosters, cancellation that
 * loses nothing, clean close.
 */
import { getEventListeners } from 'node:events';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import {
  ChannelFull, InvalidChannelLayerError, LayerClosed, MessageTooLarge,
  type BaseChannelLayer, type LayerOptions, type Message, type MessageSink, type MessageValue,
} from '../../src/layers/index.js';

/** What a backend supplies. */
export interface ConformanceTarget {
  /** A new layer instance: a new "process" (its own connections and id). */
  make(options?: LayerOptions): BaseChannelLayer;
  /** True when instances share channels and groups (Redis); false when each has its own (InMemory). */
  shared: boolean;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A short random suffix, so tests never share names. */
export const uid = (): string => Math.random().toString(36).slice(2, 10);

/** Receives within `ms` or fails. */
export async function receiveWithin(layer: BaseChannelLayer, channel: string, ms = 5000): Promise<Message> {
  return layer.receive(channel, { signal: AbortSignal.timeout(ms) });
}

/** Fails if a message arrives on `channel` within `ms` (the wait takes nothing when it ends). */
export async function expectNothing(layer: BaseChannelLayer, channel: string, ms = 150): Promise<void> {
  const outcome = await layer.receive(channel, { signal: AbortSignal.timeout(ms) }).then(
    (m) => ({ message: m }),
    (err: unknown) => ({ error: err }),
  );
  expect(outcome).not.toHaveProperty('message');
  expect((outcome as { error: Error }).error.name).toBe('TimeoutError');
}

function resourceCounts(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1);
  return counts;
}

/** Runs the conformance suite against one backend. */
export function describeChannelLayer(name: string, target: ConformanceTarget): void {
  describe(`${name} channel layer`, () => {
    const prefix = `t${uid()}`;
    const open: BaseChannelLayer[] = [];
    const make = (options: LayerOptions = {}): BaseChannelLayer => {
      const layer = target.make({ prefix, ...options });
      open.push(layer);
      return layer;
    };
    let shared: BaseChannelLayer | undefined;
    /** Layers of the concurrent tests, closed at the end. */
    const timed: BaseChannelLayer[] = [];
    /** One long-lived layer for the simple cases. */
    const layer = (): BaseChannelLayer => (shared ??= target.make({ prefix, capacity: 3 }));

    afterEach(async () => {
      await Promise.all(open.splice(0).map((l) => l.close()));
    });
    afterAll(async () => {
      await Promise.all([shared?.close(), ...timed.map((l) => l.close())]);
    });

    describe('send and receive', () => {
      it('a message sent on a channel is received, equal', async () => {
        const ch = `test-channel.${uid()}`;
        await layer().send(ch, { type: 'test.message', text: 'Ahoy-hoy!' });
        expect(await receiveWithin(layer(), ch)).toEqual({ type: 'test.message', text: 'Ahoy-hoy!' });
      });

      it('messages come out in the order they went in (FIFO)', async () => {
        const ch = `fifo.${uid()}`;
        for (const n of [1, 2, 3]) await layer().send(ch, { type: 'm', n });
        for (const n of [1, 2, 3]) expect((await receiveWithin(layer(), ch)).n).toBe(n);
      });

      it('a receive that waits gets the message sent after it began', async () => {
        const ch = `waiting.${uid()}`;
        const pending = receiveWithin(layer(), ch);
        await sleep(50);
        await layer().send(ch, { type: 'late' });
        expect(await pending).toEqual({ type: 'late' });
      });

      it('a receive on an empty channel keeps waiting (does not return early)', async () => {
        await expectNothing(layer(), `empty.${uid()}`, 300);
      });

      it('process-specific channels from newChannel() round-trip, in order', async () => {
        const ch = await layer().newChannel();
        for (const n of [1, 2, 3]) await layer().send(ch, { type: 'm', n });
        for (const n of [1, 2, 3]) expect(await receiveWithin(layer(), ch)).toEqual({ type: 'm', n });
      });

      it('two receives waiting on one channel get one message each (at most once)', async () => {
        const ch = `twice.${uid()}`;
        const a = receiveWithin(layer(), ch);
        const b = receiveWithin(layer(), ch);
        await layer().send(ch, { type: 'm', n: 1 });
        await layer().send(ch, { type: 'm', n: 2 });
        const got = [(await a).n, (await b).n].sort();
        expect(got).toEqual([1, 2]);
        await expectNothing(layer(), ch);
      });

      it('a message sent while nobody receives waits for the next receive', async () => {
        const ch = await layer().newChannel();
        await layer().send(ch, { type: 'kept' });
        await sleep(100);
        expect(await receiveWithin(layer(), ch)).toEqual({ type: 'kept' });
      });
    });

    describe('newChannel', () => {
      it('names are unique, valid, and say which layer instance they belong to', async () => {
        const l = make();
        const names = await Promise.all(Array.from({ length: 500 }, () => l.newChannel()));
        expect(new Set(names).size).toBe(500);
        for (const n of names) expect(n).toMatch(new RegExp(`^specific\\.${l.id}![\\w\\-.]+$`));
        expect(await l.newChannel('conn')).toMatch(/^conn\./);
      });

      it('two instances never share a name prefix (each is its own "process")', async () => {
        const [a, b] = [make(), make()];
        expect(a.id).not.toBe(b.id);
        expect((await a.newChannel()).split('!')[0]).not.toBe((await b.newChannel()).split('!')[0]);
      });

      it('a bad prefix is a TypeError', async () => {
        await expect(layer().newChannel('bad prefix')).rejects.toThrow(TypeError);
      });

      it('says whether the instance that made a channel is still connected (liveness)', async () => {
        const [a, b] = [make(), make()];
        const mine = await a.newChannel('conn');
        const theirs = await b.newChannel('conn');
        expect(await a.channelOwnerAlive(mine)).toBe(true);
        // Only instances that share storage can see each other (once b's subscription is in place).
        if (target.shared) await vi.waitFor(async () => expect(await a.channelOwnerAlive(theirs)).toBe(true), { timeout: 3000 });
        else expect(await a.channelOwnerAlive(theirs)).toBe(false);
        await b.close();
        await vi.waitFor(async () => expect(await a.channelOwnerAlive(theirs)).toBe(false), { timeout: 3000 });
        await expect(a.channelOwnerAlive('not-process-specific')).rejects.toThrow(TypeError);
      });
    });

    describe('names', () => {
      const msg = { type: 'x' };
      it('a bad channel name is a TypeError that names the channel, on send and receive', async () => {
        await expect(layer().send('=+135!', msg)).rejects.toThrow(TypeError);
        await expect(layer().send('=+135!', msg)).rejects.toThrow(/=\+135!/);
        await expect(layer().receive('=+135!')).rejects.toThrow(/=\+135!/);
        await expect(layer().send('¯\\_(ツ)_/¯', msg)).rejects.toThrow(TypeError);
        for (const bad of ['', 'a b', 'a?b', 'a:b', '!abc', 'a!b!c', 'a{b}']) await expect(layer().send(bad, msg)).rejects.toThrow(TypeError);
      });

      it('names of 100 characters or more are refused, saying so', async () => {
        await expect(layer().send('c'.repeat(100), msg)).rejects.toThrow(/99/);
        await expect(layer().groupAdd('g'.repeat(100), 'chat')).rejects.toThrow(/99/);
        await layer().send(`${'c'.repeat(90)}${uid()}`.slice(0, 99), msg);
      });

      it('a bad group name is a TypeError naming the group', async () => {
        await expect(layer().groupAdd('a!b', 'chat')).rejects.toThrow(/Group name "a!b"/);
        await expect(layer().groupSend('¯\\_(ツ)_/¯', msg)).rejects.toThrow(TypeError);
        await expect(layer().groupDiscard('sp ace', 'chat')).rejects.toThrow(TypeError);
        await expect(layer().groupAdd('ok', 'bad channel')).rejects.toThrow(TypeError);
      });

      it("receiving on another instance's process-specific channel is refused", async () => {
        const other = make();
        const ch = await other.newChannel();
        await expect(layer().receive(ch)).rejects.toThrow(TypeError);
        await expect(layer().receive(ch)).rejects.toThrow(/process-specific/);
      });
    });

    describe('capacity', () => {
      it('the send past capacity throws ChannelFull, naming channel and capacity', async () => {
        const ch = `full.${uid()}`;
        for (let i = 0; i < 3; i++) await layer().send(ch, { type: 'm', i });
        const err = await layer().send(ch, { type: 'm', i: 3 }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(ChannelFull);
        expect(err).toMatchObject({ channel: ch, capacity: 3, code: 'channel-full' });
        for (let i = 0; i < 3; i++) expect((await receiveWithin(layer(), ch)).i).toBe(i);
        await layer().send(ch, { type: 'm', i: 4 });
      });

      it('per-channel capacities by glob and RegExp; the first match wins', async () => {
        const l = make({
          capacity: 4,
          channelCapacity: [['tiny', 1], [/^rx-/, 2], ['glob-*', 3], ['glob-x', 1]],
        });
        const fill = async (ch: string): Promise<number> => {
          for (let i = 0; ; i++) {
            try {
              await l.send(ch, { type: 'm' });
            } catch (err) {
              expect(err).toBeInstanceOf(ChannelFull);
              return i;
            }
          }
        };
        expect(await fill('tiny')).toBe(1);
        expect(await fill(`rx-${uid()}`)).toBe(2);
        expect(await fill('glob-x')).toBe(3);
        expect(await fill(`other-${uid()}`)).toBe(4);
        expect(await fill(`tiny${uid()}`)).toBe(4);
      });

      for (const kind of ['process-specific channel nobody reads', 'named channel held by a receiver that stopped reading'] as const) {
        it(`a ${kind}: sends end in ChannelFull, and every send that did not throw is received, in order`, async () => {
          const [receiver, sender] = target.shared ? [make({ capacity: 3 }), make({ capacity: 3 })] : [make({ capacity: 3 }), undefined];
          const from = sender ?? receiver;
          let ch: string;
          if (kind.startsWith('process')) {
            ch = await receiver.newChannel();
          } else {
            ch = `held.${uid()}`;
            await from.send(ch, { type: 'm', i: -1 });
            expect((await receiveWithin(receiver, ch)).i).toBe(-1);
          }
          const accepted: number[] = [];
          let full = 0;
          for (let i = 0; i < 12; i++) {
            try {
              await from.send(ch, { type: 'm', i });
              accepted.push(i);
            } catch (err) {
              expect(err).toBeInstanceOf(ChannelFull);
              full++;
            }
            await sleep(5);
          }
          expect(full).toBeGreaterThan(0);
          expect(accepted.length).toBeGreaterThanOrEqual(3);
          const got: number[] = [];
          for (const _ of accepted) got.push((await receiveWithin(receiver, ch)).i as number);
          expect(got).toEqual(accepted);
          await expectNothing(receiver, ch);
        });
      }

      it('channelCapacity also takes a Map and a plain object', async () => {
        const a = make({ channelCapacity: new Map([['one', 1]]) });
        const b = make({ channelCapacity: { 'two-*': 2 } });
        await a.send('one', { type: 'm' });
        await expect(a.send('one', { type: 'm' })).rejects.toThrow(ChannelFull);
        await b.send('two-a', { type: 'm' });
        await b.send('two-a', { type: 'm' });
        await expect(b.send('two-a', { type: 'm' })).rejects.toThrow(ChannelFull);
      });
    });

    // Tests that wait for time to pass run side by side, each with its own layer.
    describe.concurrent('expiry (messages, memberships, rosters)', () => {
      const own = (options: LayerOptions = {}): BaseChannelLayer => {
        const l = target.make({ prefix, capacity: 3, ...options });
        timed.push(l);
        return l;
      };
      it('a message older than expiry is dropped; younger ones still arrive', async () => {
        const l = own({ expiry: 1 });
        const ch = `expiry.${uid()}`;
        await l.send(ch, { type: 'm', n: 1 });
        await sleep(600);
        await l.send(ch, { type: 'm', n: 2 });
        await sleep(600);
        await l.send(ch, { type: 'm', n: 3 });
        expect((await receiveWithin(l, ch)).n).toBe(2);
        expect((await receiveWithin(l, ch)).n).toBe(3);
        await expectNothing(l, ch);
      });

      it('messages all younger than expiry all arrive', async () => {
        const l = own({ expiry: 2 });
        const ch = `fresh.${uid()}`;
        for (const n of [1, 2, 3]) {
          await l.send(ch, { type: 'm', n });
          await sleep(200);
        }
        for (const n of [1, 2, 3]) expect((await receiveWithin(l, ch)).n).toBe(n);
      });

      it('expiry applies to group sends too', async () => {
        const l = own({ expiry: 1 });
        const ch = `gexp.${uid()}`;
        const group = `gexp-${uid()}`;
        await l.groupAdd(group, ch);
        await l.groupSend(group, { type: 'm', n: 1 });
        await sleep(1100);
        await l.groupSend(group, { type: 'm', n: 2 });
        expect((await receiveWithin(l, ch)).n).toBe(2);
        await expectNothing(l, ch);
      });

      it('an expired message frees its place: a full channel takes sends again', async () => {
        const l = own({ expiry: 1, capacity: 1 });
        const ch = `free.${uid()}`;
        await l.send(ch, { type: 'm', n: 1 });
        await expect(l.send(ch, { type: 'm', n: 2 })).rejects.toThrow(ChannelFull);
        await sleep(1100);
        await l.send(ch, { type: 'm', n: 3 });
        expect((await receiveWithin(l, ch)).n).toBe(3);
      });

      it('a membership older than groupExpiry is dropped', async () => {
        const l = own({ groupExpiry: 1 });
        const group = `old-${uid()}`;
        const [stale, fresh] = [`stale.${uid()}`, `fresh.${uid()}`];
        await l.groupAdd(group, stale);
        await sleep(700);
        await l.groupAdd(group, fresh);
        await sleep(500);
        await l.groupSend(group, { type: 'm' });
        expect(await receiveWithin(l, fresh)).toEqual({ type: 'm' });
        await expectNothing(l, stale);
      });

      it('a roster lives ttl seconds after its last join or ttl-giving update', async () => {
        const l = own();
        const [short, kept] = [`rttl-${uid()}`, `rkeep-${uid()}`];
        await l.rosterJoin(short, 'p1', 'd', { limit: 2, ttl: 1 });
        await l.rosterJoin(kept, 'p1', 'd', { limit: 2, ttl: 1 });
        await sleep(600);
        await l.rosterUpdate(kept, 'p1', 'd2', { ttl: 2 });
        await sleep(600);
        expect(await l.rosterList(short)).toEqual([]);
        expect((await l.rosterList(kept)).map((e) => e.data)).toEqual(['d2']);
      });
    });

    describe('groups', () => {
      it('add three, discard one: a group send reaches exactly the two members', async () => {
        const group = `g-${uid()}`;
        const [c1, c2, c3] = await Promise.all([layer().newChannel(), layer().newChannel(), layer().newChannel()]);
        await layer().groupAdd(group, c1);
        await layer().groupAdd(group, c2);
        await layer().groupAdd(group, c3);
        await layer().groupDiscard(group, c2);
        await layer().groupSend(group, { type: 'message.1' });
        expect(await receiveWithin(layer(), c1)).toEqual({ type: 'message.1' });
        expect(await receiveWithin(layer(), c3)).toEqual({ type: 'message.1' });
        await expectNothing(layer(), c2);
      });

      it('adding twice is one membership (one message)', async () => {
        const group = `twice-${uid()}`;
        const ch = `member.${uid()}`;
        await layer().groupAdd(group, ch);
        await layer().groupAdd(group, ch);
        await layer().groupSend(group, { type: 'once' });
        expect(await receiveWithin(layer(), ch)).toEqual({ type: 'once' });
        await expectNothing(layer(), ch);
      });

      it('discarding from a group never joined, or a group that does not exist, is fine', async () => {
        await layer().groupDiscard(`nope-${uid()}`, 'chat');
        await layer().groupSend(`nope-${uid()}`, { type: 'nobody' });
      });

      it('several channels of one instance (same prefix) each get a group message', async () => {
        const group = `same-${uid()}`;
        const chans = await Promise.all([1, 2, 3].map(() => layer().newChannel('same')));
        for (const c of chans) await layer().groupAdd(group, c);
        await layer().groupSend(group, { type: 'all' });
        for (const c of chans) expect(await receiveWithin(layer(), c)).toEqual({ type: 'all' });
      });

      it('group messages keep their order per member', async () => {
        const group = `order-${uid()}`;
        const ch = await layer().newChannel();
        const normal = `order.${uid()}`;
        await layer().groupAdd(group, ch);
        await layer().groupAdd(group, normal);
        for (const n of [1, 2, 3]) await layer().groupSend(group, { type: 'm', n });
        for (const n of [1, 2, 3]) expect((await receiveWithin(layer(), ch)).n).toBe(n);
        for (const n of [1, 2, 3]) expect((await receiveWithin(layer(), normal)).n).toBe(n);
      });

      it('a group send to a full member never throws; the member keeps `capacity` messages', async () => {
        const group = `gfull-${uid()}`;
        const full = `gfull.${uid()}`;
        await layer().groupAdd(group, full);
        for (let i = 0; i < 5; i++) await layer().groupSend(group, { type: 'm', i });
        for (let i = 0; i < 3; i++) expect((await receiveWithin(layer(), full)).i).toBe(i);
        await expectNothing(layer(), full);
      });

      it('one full member does not stop the others', async () => {
        const group = `gmixed-${uid()}`;
        const [prefilled, roomy] = [`pre.${uid()}`, `roomy.${uid()}`];
        await layer().send(prefilled, { type: 'pre', i: -2 });
        await layer().send(prefilled, { type: 'pre', i: -1 });
        await layer().groupAdd(group, prefilled);
        await layer().groupAdd(group, roomy);
        for (let i = 0; i < 3; i++) await layer().groupSend(group, { type: 'm', i });
        expect([...(await Promise.all([0, 1, 2].map(() => receiveWithin(layer(), prefilled))))].map((m) => m.i)).toEqual([-2, -1, 0]);
        await expectNothing(layer(), prefilled);
        for (let i = 0; i < 3; i++) expect((await receiveWithin(layer(), roomy)).i).toBe(i);
      });

      it('group send checks the message like send: MessageTooLarge and TypeError', async () => {
        const l = make({ maxMessageSize: 100 });
        await expect(l.groupSend('g', { type: 'x', big: 'x'.repeat(200) })).rejects.toThrow(MessageTooLarge);
        await expect(l.groupSend('g', { type: 'x', f: (() => 1) as never })).rejects.toThrow(TypeError);
      });
    });

    describe('cancelling a receive', () => {
      it('an aborted receive rejects with the signal reason and takes nothing', async () => {
        const ch = `cancel.${uid()}`;
        const ac = new AbortController();
        const p = layer().receive(ch, { signal: ac.signal });
        await sleep(20);
        ac.abort(new Error('stop'));
        await expect(p).rejects.toThrow('stop');
        await layer().send(ch, { type: 'after' });
        expect(await receiveWithin(layer(), ch)).toEqual({ type: 'after' });
      });

      it('one signal for many receives (as a consumer receives) keeps one abort listener; aborting it then takes nothing', async () => {
        const l = make({ capacity: 100 });
        const ch = await l.newChannel();
        const ac = new AbortController();
        for (let i = 0; i < 20; i++) {
          const next = l.receive(ch, { signal: ac.signal });
          await l.send(ch, { type: 'm', i });
          expect(await next).toEqual({ type: 'm', i });
        }
        expect(getEventListeners(ac.signal, 'abort').length).toBe(1);
        const pending = l.receive(ch, { signal: ac.signal });
        ac.abort(new Error('stop'));
        await expect(pending).rejects.toThrow('stop');
        await l.send(ch, { type: 'after' });
        expect(await receiveWithin(l, ch)).toEqual({ type: 'after' });
      });

      it('an already-aborted signal rejects at once', async () => {
        await expect(layer().receive(`pre.${uid()}`, { signal: AbortSignal.abort() })).rejects.toThrow();
      });

      for (const kind of ['normal', 'process-specific'] as const) {
        it(`cancel-then-send, repeated, never blocks, never loses, keeps order (${kind} channel)`, async () => {
          const l = make({ capacity: 100 });
          const ch = kind === 'normal' ? `rc.${uid()}` : await l.newChannel();
          // As channels_redis' test_receive_cancel: a receive may take the previous message before
          // its abort lands; either way every message is received exactly once, in order.
          const got: number[] = [];
          for (let i = 0; i < 10; i++) {
            const ac = new AbortController();
            const p = l.receive(ch, { signal: ac.signal }).then((m) => got.push(m.i as number), () => {});
            if (i % 2 === 1) await sleep(5);
            ac.abort();
            await p;
            await l.send(ch, { type: 'm', i });
          }
          while (got.length < 10) got.push((await receiveWithin(l, ch)).i as number);
          expect(got).toEqual(Array.from({ length: 10 }, (_, i) => i));
          await expectNothing(l, ch);
        });
      }

      it('a receive aborted just as its message arrives loses nothing', async () => {
        const l = make({ capacity: 100 });
        const ch = `race.${uid()}`;
        const got: number[] = [];
        for (let i = 0; i < 20; i++) {
          const ac = new AbortController();
          const p = l.receive(ch, { signal: ac.signal }).then((m) => got.push(m.i as number), () => {});
          const sent = l.send(ch, { type: 'm', i });
          await sleep(i % 3);
          ac.abort();
          await Promise.all([p, sent]);
        }
        while (got.length < 20) got.push((await receiveWithin(l, ch)).i as number);
        expect(got).toEqual(Array.from({ length: 20 }, (_, i) => i));
        await expectNothing(l, ch);
      });
    });

    describe('receiveInto (a sink instead of a promise)', () => {
      /** A sink that records what it is handed. */
      const recorder = (): MessageSink & { got: Message[]; errors: unknown[] } => {
        const got: Message[] = [];
        const errors: unknown[] = [];
        return { got, errors, deliver: (m) => got.push(m), fail: (e) => errors.push(e) };
      };
      const until = async (check: () => boolean, ms = 5000): Promise<void> => {
        const end = Date.now() + ms;
        while (!check()) {
          if (Date.now() > end) throw new Error('timed out');
          await sleep(5);
        }
      };

      for (const kind of ['normal', 'process-specific'] as const) {
        it(`each receive hands one message, in order; re-armed after each, every message arrives once (${kind} channel)`, async () => {
          const l = make({ capacity: 100 });
          const ch = kind === 'normal' ? `into.${uid()}` : await l.newChannel();
          await l.send(ch, { type: 'm', i: 0 });
          const got: number[] = [];
          const sink: MessageSink = {
            deliver: (m) => {
              got.push(m.i as number);
              if (got.length < 5) l.receiveInto(ch, sink);
            },
            fail: (e) => {
              throw e;
            },
          };
          l.receiveInto(ch, sink);
          for (let i = 1; i < 5; i++) await l.send(ch, { type: 'm', i });
          await until(() => got.length === 5);
          await l.send(ch, { type: 'm', i: 5 }); // no receive pending: it waits on the channel
          await sleep(30);
          expect(got).toEqual([0, 1, 2, 3, 4]);
          expect(await receiveWithin(l, ch)).toEqual({ type: 'm', i: 5 });
        });

        it(`cancelReceive withdraws a pending receive, taking nothing; false once it was handed its message (${kind} channel)`, async () => {
          const l = make({ capacity: 100 });
          const ch = kind === 'normal' ? `intoc.${uid()}` : await l.newChannel();
          const sink = recorder();
          l.receiveInto(ch, sink);
          await sleep(20);
          expect(l.cancelReceive(ch, sink)).toBe(true);
          expect(l.cancelReceive(ch, sink)).toBe(false);
          await l.send(ch, { type: 'after' });
          expect(await receiveWithin(l, ch)).toEqual({ type: 'after' });
          expect(sink.got).toEqual([]);

          await l.send(ch, { type: 'taken' });
          l.receiveInto(ch, sink);
          await until(() => sink.got.length === 1);
          expect(l.cancelReceive(ch, sink)).toBe(false);
          expect(sink.got).toEqual([{ type: 'taken' }]);
          expect(sink.errors).toEqual([]);
        });

        it(`several receives pending on one channel: a withdrawn one gets nothing, the others one message each (${kind} channel)`, async () => {
          const l = make({ capacity: 100 });
          const ch = kind === 'normal' ? `intom.${uid()}` : await l.newChannel();
          const [a, b, c] = [recorder(), recorder(), recorder()];
          for (const sink of [a, b, c]) l.receiveInto(ch, sink);
          await sleep(20);
          expect(l.cancelReceive(ch, b)).toBe(true); // the middle one of three
          expect(l.cancelReceive(ch, b)).toBe(false);
          await l.send(ch, { type: 'm', i: 1 });
          await l.send(ch, { type: 'm', i: 2 });
          await until(() => a.got.length + c.got.length === 2);
          expect([...a.got, ...c.got].map((m) => m.i).sort()).toEqual([1, 2]);
          expect([a.got.length, b.got.length, c.got.length]).toEqual([1, 0, 1]);
          expect(l.cancelReceive(ch, a)).toBe(false);

          // Two pending, the first withdrawn: the one left takes the next message alone.
          const [d, e] = [recorder(), recorder()];
          l.receiveInto(ch, d);
          l.receiveInto(ch, e);
          await sleep(20);
          expect(l.cancelReceive(ch, d)).toBe(true);
          await l.send(ch, { type: 'm', i: 3 });
          await until(() => e.got.length === 1);
          await l.send(ch, { type: 'm', i: 4 }); // nobody receives: it waits on the channel
          await sleep(30);
          expect([d.got, e.got]).toEqual([[], [{ type: 'm', i: 3 }]]);
          expect(await receiveWithin(l, ch)).toEqual({ type: 'm', i: 4 });
          for (const sink of [a, b, c, d, e]) expect(sink.errors).toEqual([]);
        });
      }

      it('a cancel racing its message loses nothing: what the sink did not get stays on the channel', async () => {
        const l = make({ capacity: 100 });
        const ch = `intor.${uid()}`;
        const sink = recorder();
        for (let i = 0; i < 20; i++) {
          l.receiveInto(ch, sink);
          const sent = l.send(ch, { type: 'm', i });
          await sleep(i % 3);
          l.cancelReceive(ch, sink);
          await sent;
        }
        const got = sink.got.map((m) => m.i as number);
        while (got.length < 20) got.push((await receiveWithin(l, ch)).i as number);
        expect(got).toEqual(Array.from({ length: 20 }, (_, i) => i));
        await expectNothing(l, ch);
      });

      it('bad names and a closed layer throw at once; closing fails a pending receive with LayerClosed', async () => {
        const l = make();
        expect(() => l.receiveInto('bad name!', recorder())).toThrow(TypeError);
        const sink = recorder();
        l.receiveInto(`intoz.${uid()}`, sink);
        await l.close();
        expect(sink.errors).toHaveLength(1);
        expect(sink.errors[0]).toBeInstanceOf(LayerClosed);
        expect(() => l.receiveInto(`intoz.${uid()}`, recorder())).toThrow(LayerClosed);
      });
    });

    describe('flush', () => {
      it('empties channels, groups and rosters; the layer works after', async () => {
        const l = make();
        const [ch, member] = [`flush.${uid()}`, `fm.${uid()}`];
        const group = `fg-${uid()}`;
        await l.send(ch, { type: 'gone' });
        await l.groupAdd(group, member);
        await l.rosterJoin(`fr-${uid()}`, 'p1', 'd', { limit: 2, ttl: 60 });
        const roster = `fr2-${uid()}`;
        await l.rosterJoin(roster, 'p1', 'd', { limit: 2, ttl: 60 });
        await l.flush();
        await expectNothing(l, ch);
        await l.groupSend(group, { type: 'nobody' });
        await expectNothing(l, member);
        expect(await l.rosterList(roster)).toEqual([]);
        await l.send(ch, { type: 'after' });
        expect(await receiveWithin(l, ch)).toEqual({ type: 'after' });
      });

      it('a receive waiting across a flush still gets what is sent after it', async () => {
        const l = make();
        const ch = `across.${uid()}`;
        const p = receiveWithin(l, ch);
        await sleep(50);
        await l.flush();
        await l.send(ch, { type: 'after' });
        expect(await p).toEqual({ type: 'after' });
      });
    });

    describe('messages (one codec on every backend)', () => {
      it('every supported type comes back as itself', async () => {
        const ch = `types.${uid()}`;
        const message = {
          type: 'types',
          date: new Date('2024-02-29T12:34:56.789Z'),
          bytes: new Uint8Array([0, 1, 254, 255]),
          buffer: Buffer.from('buffer bytes'),
          small: 42n,
          huge: 2n ** 100n + 7n,
          negative: -(2n ** 70n),
          int64: 2n ** 63n - 1n,
          float: 3.25,
          unicode: 'grüße, 你好, 🎉',
          empty: '',
          nothing: null,
          yes: true,
          list: [1, 'two', [3, { four: 4 }]],
          nested: { a: { b: { c: [new Date(0)] } } },
          map: new Map<MessageValue, MessageValue>([['k', 1], [2, 'two'], [true, new Map([['inner', [1, 2]]])]]),
          mapInList: [new Map([['x', null]])],
        } satisfies Message;
        await layer().send(ch, message);
        const got = await receiveWithin(layer(), ch);
        expect(got).toEqual(message);
        expect(got.date).toBeInstanceOf(Date);
        expect(got.map).toBeInstanceOf(Map);
        expect(((got.map as Map<unknown, unknown>).get(true) as Map<string, unknown>).get('inner')).toEqual([1, 2]);
        expect((got.mapInList as unknown[])[0]).toBeInstanceOf(Map);
        expect(got.bytes).toBeInstanceOf(Uint8Array);
        expect(Buffer.isBuffer(got.bytes)).toBe(false);
        expect(Buffer.isBuffer(got.buffer)).toBe(true);
        expect(got.huge).toBe(2n ** 100n + 7n);
        expect(typeof got.small).toBe('bigint');
      });

      it('group sends carry the same types', async () => {
        const group = `gt-${uid()}`;
        const ch = await layer().newChannel();
        await layer().groupAdd(group, ch);
        const message = { type: 't', when: new Date(1), m: new Map([[1, 2n ** 65n]]) };
        await layer().groupSend(group, message);
        expect(await receiveWithin(layer(), ch)).toEqual(message);
      });

      it('the receiver gets a copy: changing the sent object afterwards changes nothing', async () => {
        const ch = `copy.${uid()}`;
        const message = { type: 'copy', list: [1], obj: { a: 1 } };
        await layer().send(ch, message);
        message.list.push(2);
        message.obj.a = 2;
        expect(await receiveWithin(layer(), ch)).toEqual({ type: 'copy', list: [1], obj: { a: 1 } });
      });

      it('random messages round-trip exactly (property)', async () => {
        const ch = `prop.${uid()}`;
        const key = fc.string({ maxLength: 8 }).filter((k) => k !== '__proto__');
        const value = fc.letrec<{ v: unknown }>((tie) => ({
          v: fc.oneof(
            { depthSize: 'small' },
            fc.string(), fc.integer(), fc.double({ noNaN: true }).filter((d) => !Object.is(d, -0)), fc.boolean(), fc.constant(null),
            fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }),
            fc.date({ noInvalidDate: true }),
            fc.uint8Array({ maxLength: 16 }),
            fc.array(tie('v'), { maxLength: 4 }),
            fc.dictionary(key, tie('v'), { maxKeys: 4 }),
            fc.array(fc.tuple(fc.oneof(fc.string({ maxLength: 4 }), fc.integer()), tie('v')), { maxLength: 3 }).map((e) => new Map(e)),
          ),
        })).v;
        await fc.assert(
          fc.asyncProperty(fc.string({ maxLength: 10 }), value, async (type, payload) => {
            const message = { type, payload } as Message;
            await layer().send(ch, message);
            expect(await receiveWithin(layer(), ch)).toEqual(message);
          }),
          { numRuns: 40 },
        );
      });

      it('values the codec cannot carry are a TypeError at send, saying where', async () => {
        class Point {
          x = 1;
        }
        const cycle: Record<string, unknown> = { type: 'c' };
        cycle.self = cycle;
        const bad: Array<[unknown, RegExp]> = [
          [{ type: 'f', fn: () => 1 }, /message\.fn is a function/],
          [{ type: 's', sym: Symbol('x') }, /symbol/],
          [{ type: 'p', point: new Point() }, /instance of Point/],
          [cycle, /cycle/],
          [{ type: 'd', when: new Date(Number.NaN) }, /invalid Date/],
          [{ type: 'set', s: new Set([1]) }, /instance of Set/],
          [{ type: 'deep', list: [{ inner: [() => 1] }] }, /message\.list\[0\]\.inner\[0\]/],
          [{ notype: 1 }, /type/],
          [{ type: 7 }, /type/],
          ['a string', /plain object/],
          [null, /plain object/],
          [[{ type: 'x' }], /array/],
        ];
        for (const [message, why] of bad) {
          const err = await layer().send(`bad.${uid()}`, message as Message).catch((e: unknown) => e);
          expect(err, String(why)).toBeInstanceOf(TypeError);
          expect((err as Error).message).toMatch(why);
        }
      });

      it('a message over maxMessageSize is MessageTooLarge, with its size and the limit', async () => {
        const l = make({ maxMessageSize: 1000 });
        const err = await l.send(`big.${uid()}`, { type: 'big', data: 'x'.repeat(2000) }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(MessageTooLarge);
        expect((err as MessageTooLarge).limit).toBe(1000);
        expect((err as MessageTooLarge).size).toBeGreaterThan(2000);
        await l.send(`big.${uid()}`, { type: 'ok', data: 'x'.repeat(900) });
      });

      it('a message near the default 1 MiB limit is carried whole', async () => {
        const ch = `large.${uid()}`;
        const data = new Uint8Array(1000 * 1000).map((_, i) => i % 251);
        await layer().send(ch, { type: 'large', data });
        const got = (await receiveWithin(layer(), ch)).data as Uint8Array;
        expect(got).toBeInstanceOf(Uint8Array);
        expect(Buffer.from(got).equals(Buffer.from(data))).toBe(true);
      });
    });

    describe('options', () => {
      it('an unknown option is an error, never ignored', () => {
        expect(() => target.make({ prefix, expiry: 5, bogus: 1 } as LayerOptions)).toThrow(InvalidChannelLayerError);
        expect(() => target.make({ prefix, bogus: 1 } as LayerOptions)).toThrow(/bogus/);
      });

      it('bad option values are errors', () => {
        expect(() => target.make({ prefix, capacity: 0 })).toThrow(InvalidChannelLayerError);
        expect(() => target.make({ prefix, expiry: -1 })).toThrow(InvalidChannelLayerError);
        expect(() => target.make({ prefix: 'has space' })).toThrow(InvalidChannelLayerError);
        expect(() => target.make({ prefix, channelCapacity: { x: 1.5 } })).toThrow(InvalidChannelLayerError);
      });

      it('extensions are groups, flush, liveness and rosters', () => {
        expect([...layer().extensions].sort()).toEqual(['flush', 'groups', 'liveness', 'rosters']);
      });
    });

    describe('rosters', () => {
      const opts = { limit: 2, ttl: 60 };
      it('members join in order, up to the limit; a member already in may rejoin when full', async () => {
        const r = `roster-${uid()}`;
        const a = await layer().rosterJoin(r, 'alice', 'a1', opts);
        await sleep(5);
        const b = await layer().rosterJoin(r, 'bob', 'b1', opts);
        expect(a.joined && b.joined).toBe(true);
        expect(b.entries.map((e) => e.member)).toEqual(['alice', 'bob']);
        expect(b.entries[0]!.since).toBeLessThanOrEqual(b.entries[1]!.since);
        const c = await layer().rosterJoin(r, 'carol', 'c1', opts);
        expect(c).toEqual({ joined: false, entries: b.entries });
        const again = await layer().rosterJoin(r, 'alice', 'a2', opts);
        expect(again.joined).toBe(true);
        expect(again.entries).toEqual([{ ...b.entries[0], data: 'a2' }, b.entries[1]]);
        expect(await layer().rosterList(r)).toEqual(again.entries);
      });

      it('update replaces data, with compare-and-set', async () => {
        const r = `rupd-${uid()}`;
        await layer().rosterJoin(r, 'p1', 'old', opts);
        expect(await layer().rosterUpdate(r, 'nobody', 'x')).toBe(false);
        expect(await layer().rosterUpdate(r, 'p1', 'new', { ifData: 'wrong' })).toBe(false);
        expect(await layer().rosterUpdate(r, 'p1', 'new', { ifData: 'old' })).toBe(true);
        expect(await layer().rosterUpdate(r, 'p1', 'newer')).toBe(true);
        expect((await layer().rosterList(r))[0]!.data).toBe('newer');
        expect(await layer().rosterUpdate(`none-${uid()}`, 'p1', 'x')).toBe(false);
      });

      it('data may hold any text, newlines included', async () => {
        const r = `rdata-${uid()}`;
        const data = 'line 1\nline 2\n\n{"json": true} ✓';
        await layer().rosterJoin(r, 'p1', data, opts);
        expect((await layer().rosterList(r))[0]!.data).toBe(data);
      });

      it('leave removes a member (compare-and-set too); the last one out deletes the roster', async () => {
        const r = `rleave-${uid()}`;
        await layer().rosterJoin(r, 'p1', 'd1', opts);
        await layer().rosterJoin(r, 'p2', 'd2', opts);
        expect(await layer().rosterLeave(r, 'p3')).toBeNull();
        expect(await layer().rosterLeave(r, 'p1', { ifData: 'nope' })).toBeNull();
        expect((await layer().rosterLeave(r, 'p1', { ifData: 'd1' }))!.map((e) => e.member)).toEqual(['p2']);
        expect(await layer().rosterLeave(r, 'p2')).toEqual([]);
        expect(await layer().rosterList(r)).toEqual([]);
        const fresh = await layer().rosterJoin(r, 'p9', 'd9', opts);
        expect(fresh.entries.map((e) => e.member)).toEqual(['p9']);
      });

      it('delete returns what it held', async () => {
        const r = `rdel-${uid()}`;
        await layer().rosterJoin(r, 'p1', 'd1', opts);
        expect((await layer().rosterDelete(r)).map((e) => e.member)).toEqual(['p1']);
        expect(await layer().rosterList(r)).toEqual([]);
        expect(await layer().rosterDelete(r)).toEqual([]);
      });

      it('names and arguments are checked', async () => {
        await expect(layer().rosterJoin('bad name', 'p', 'd', opts)).rejects.toThrow(TypeError);
        await expect(layer().rosterJoin('r', 'bad member', 'd', opts)).rejects.toThrow(TypeError);
        await expect(layer().rosterJoin('r', 'p', 'd', { limit: 0, ttl: 1 })).rejects.toThrow(TypeError);
        await expect(layer().rosterJoin('r', 'p', 7 as never, opts)).rejects.toThrow(TypeError);
      });
    });

    describe.runIf(target.shared)('two instances (two "processes")', () => {
      it('one sends to the process-specific channel of the other', async () => {
        const [a, b] = [make(), make()];
        const ch = await b.newChannel();
        await a.send(ch, { type: 'hi', from: 'a' });
        expect(await receiveWithin(b, ch)).toEqual({ type: 'hi', from: 'a' });
      });

      it('a group with members on both instances reaches both, from a third', async () => {
        const [a, b, c] = [make(), make(), make()];
        const group = `both-${uid()}`;
        const [ca, cb] = [await a.newChannel(), await b.newChannel()];
        await a.groupAdd(group, ca);
        await b.groupAdd(group, cb);
        await c.groupSend(group, { type: 'all' });
        expect(await receiveWithin(a, ca)).toEqual({ type: 'all' });
        expect(await receiveWithin(b, cb)).toEqual({ type: 'all' });
      });

      it('a normal channel passes to another instance once the first stops receiving', async () => {
        const [a, b, s] = [make(), make(), make()];
        const ch = `handover.${uid()}`;
        await s.send(ch, { type: 'm', n: 1 });
        expect((await receiveWithin(a, ch)).n).toBe(1);
        const next = receiveWithin(b, ch);
        await s.send(ch, { type: 'm', n: 2 });
        await s.send(ch, { type: 'm', n: 3 });
        expect((await next).n).toBe(2);
        expect((await receiveWithin(b, ch)).n).toBe(3);
      });

      it('what a closed instance held for a normal channel goes to the next receiver, in order', async () => {
        const [a, b, s] = [make(), make(), make()];
        const ch = `left.${uid()}`;
        await s.send(ch, { type: 'm', n: 0 });
        expect((await receiveWithin(a, ch)).n).toBe(0);
        for (const n of [1, 2]) await s.send(ch, { type: 'm', n });
        await sleep(50);
        await a.close();
        for (const n of [3, 4]) await s.send(ch, { type: 'm', n });
        for (const n of [1, 2, 3, 4]) expect((await receiveWithin(b, ch)).n).toBe(n);
      });

      it('two instances receiving one channel share its messages: each exactly once', async () => {
        const [a, b, s] = [make(), make(), make()];
        const ch = `shared.${uid()}`;
        const got: number[] = [];
        const stop = new AbortController();
        const loop = async (l: BaseChannelLayer): Promise<void> => {
          while (got.length < 20) {
            const m = await l.receive(ch, { signal: stop.signal }).catch(() => undefined);
            if (!m) return;
            got.push(m.n as number);
          }
        };
        const loops = [loop(a), loop(b)];
        for (let n = 0; n < 20; n++) await s.send(ch, { type: 'm', n });
        const deadline = Date.now() + 10_000;
        while (got.length < 20 && Date.now() < deadline) await sleep(20);
        stop.abort();
        await Promise.all(loops);
        expect([...got].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, n) => n));
      });
    });

    describe('close', () => {
      it('rejects waiting receives and later calls with LayerClosed; closing twice is fine', async () => {
        const l = make();
        const ch = await l.newChannel();
        const pending = l.receive(ch).catch((e: unknown) => e);
        const normal = l.receive(`closing.${uid()}`).catch((e: unknown) => e);
        await sleep(50);
        await l.close();
        expect(await pending).toBeInstanceOf(LayerClosed);
        expect(await normal).toBeInstanceOf(LayerClosed);
        await expect(l.send(ch, { type: 'x' })).rejects.toBeInstanceOf(LayerClosed);
        await expect(l.groupSend('g', { type: 'x' })).rejects.toBeInstanceOf(LayerClosed);
        await expect(l.newChannel()).rejects.toBeInstanceOf(LayerClosed);
        await l.close();
      });

      it('leaves no sockets or timers behind', async () => {
        await sleep(50);
        const before = resourceCounts();
        const l = target.make({ prefix, expiry: 1 });
        const ch = await l.newChannel();
        await l.groupAdd('handles', ch);
        await l.send(ch, { type: 'x' });
        await receiveWithin(l, ch);
        await l.send('handles.normal', { type: 'y' });
        await receiveWithin(l, 'handles.normal');
        void l.receive(`handles.${uid()}`).catch(() => {});
        await l.rosterJoin('handles', 'p', 'd', { limit: 1, ttl: 1 });
        await l.close();
        await sleep(50);
        const after = resourceCounts();
        for (const [kind, n] of after) expect(n, `${kind} left open`).toBeLessThanOrEqual(before.get(kind) ?? 0);
      });
    });
  });
}
