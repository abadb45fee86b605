/** defineFlags: booleans kept as bits of one number field. */
import { describe, expect, it } from 'vitest';
import { defineFlags } from '../../src/layers/flags.js';

class Thing {
  flags = 0;
  declare a: boolean;
  declare b: boolean;
  declare c: boolean;
  static {
    defineFlags(Thing.prototype, { a: 1, b: 2, c: 4 });
  }
}

describe('defineFlags', () => {
  it('reads and writes each name as a boolean, independently, in one field', () => {
    const t = new Thing();
    expect([t.a, t.b, t.c]).toEqual([false, false, false]);
    t.b = true;
    t.c = true;
    expect([t.a, t.b, t.c, t.flags]).toEqual([false, true, true, 6]);
    t.b = true; // setting again changes nothing
    t.c = false;
    expect([t.a, t.b, t.c, t.flags]).toEqual([false, true, false, 2]);
    const other = new Thing();
    expect(other.b).toBe(false); // per instance
    expect(Object.keys(t)).toEqual(['flags']); // no own field hides an accessor
  });
});
