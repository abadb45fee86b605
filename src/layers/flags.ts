/**
 * Yes/no states kept as bits of one number field, read and written as boolean properties.
 * For objects there is one of per connection or per channel: V8 gives every boolean field a
 * word of its own, so eleven states cost 88 bytes as fields and 8 as bits.
 */

/**
 * Defines, on `prototype`, a boolean accessor for each name of `bits` (a distinct power of two
 * each), backed by the bits of the number field `field`. Declare the names on the class with
 * `declare` so TypeScript knows them and emits no field that would hide the accessor.
 */
export function defineFlags(prototype: object, bits: Readonly<Record<string, number>>, field = 'flags'): void {
  for (const [name, bit] of Object.entries(bits)) {
    Object.defineProperty(prototype, name, {
      get(this: Record<string, number>): boolean {
        return (this[field]! & bit) !== 0;
      },
      set(this: Record<string, number>, on: boolean): void {
        this[field] = on ? this[field]! | bit : this[field]! & ~bit;
      },
      configurable: true,
    });
  }
}
