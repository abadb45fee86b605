import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeMessage, encodeMessage, MessageTooLarge, type Message } from '../../src/layers/index.js';
import { copyMessage } from '../../src/layers/codec.js';

const roundTrip = <T>(value: T): unknown => decodeMessage(encodeMessage({ type: 't', value } as never, 1 << 20)).value;

describe('the shared codec', () => {
  it('decodes a Map as a Map (not a plain object), keys of any type and order kept', () => {
    const map = new Map<unknown, unknown>([['b', 1], [1, 'one'], [null, [new Map([['deep', true]])]], [{ k: 1 }, 'object key']]);
    const back = roundTrip(map) as Map<unknown, unknown>;
    expect(back).toBeInstanceOf(Map);
    expect([...back.keys()]).toEqual(['b', 1, null, { k: 1 }]);
    expect((back.get(null) as Array<Map<string, boolean>>)[0]).toBeInstanceOf(Map);
    expect(back).toEqual(map);
  });

  it('leaves messages without a Map as they are, and plain objects stay plain objects', () => {
    const back = roundTrip({ a: { b: [1, { c: 'd' }] } }) as Record<string, unknown>;
    expect(back).toEqual({ a: { b: [1, { c: 'd' }] } });
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    expect(back).not.toBeInstanceOf(Map);
  });

  it('an empty Map and a Map inside an object inside a list survive', () => {
    expect(roundTrip([{ m: new Map() }])).toEqual([{ m: new Map() }]);
  });

  it('does not change the message it was given', () => {
    const map = new Map([['k', 1]]);
    const message = { type: 't', map };
    encodeMessage(message, 1 << 20);
    expect(message.map).toBe(map);
  });
});

describe('copyMessage: the InMemory shortcut gives exactly what the codec round trip gives, or steps aside', () => {
  const viaCodec = (m: Message, max = 1 << 20): Message => decodeMessage(encodeMessage(m, max));
  /** JSON-like values with the edges that differ in a copy: -0, lone surrogates, "__proto__" keys, undefined. */
  const edgy = fc.oneof(fc.constant(-0), fc.constant('\uD800x'), fc.constant(undefined), fc.string({ unit: 'binary', maxLength: 6 }), fc.double());
  const value = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 2 }), edgy, fc.array(tie('v'), { maxLength: 3 }), fc.dictionary(fc.oneof(fc.string({ maxLength: 4 }), fc.constant('__proto__')), tie('v'), { maxKeys: 3 })),
  })).v;

  it('for random plain messages: a copy, when it makes one, deep-equals the decoded bytes and shares no object with the original', () => {
    let copied = 0;
    fc.assert(
      fc.property(value, (v) => {
        const message = { type: 't', v } as Message;
        const copy = copyMessage(message, 1 << 20);
        if (copy === undefined) return;
        copied++;
        expect(copy).toStrictEqual(viaCodec(message));
        if (typeof v === 'object' && v !== null) expect(copy.v).not.toBe(v);
      }),
      { numRuns: 500 },
    );
    expect(copied, 'most plain messages take the shortcut').toBeGreaterThan(100);
  });

  it('steps aside for values only the codec handles, and for sizes it cannot be sure of', () => {
    for (const v of [new Date(0), new Map([[1, 2]]), new Uint8Array([1]), 10n, undefined, '\uDC00', { ['__proto__']: 1 }, () => 1]) {
      expect(copyMessage({ type: 't', v } as never, 1 << 20), String(v)).toBeUndefined();
    }
    const big = { type: 't', sdp: 'x'.repeat(1000) };
    expect(copyMessage(big, 4000)).toEqual(big); // 3 bytes a unit still fits
    expect(copyMessage(big, 2000), 'possibly over: the codec decides').toBeUndefined();
    expect(() => encodeMessage(big, 900)).toThrow(MessageTooLarge);
  });

  it('turns -0 into 0 as the codec does', () => {
    expect(Object.is(copyMessage({ type: 't', n: -0 }, 100)!.n, 0)).toBe(true);
    expect(Object.is(viaCodec({ type: 't', n: -0 }).n, 0)).toBe(true);
  });
});
