import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeMessage } from '../../src/layers/index.js';

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
