import { Packr, Unpackr, addExtension } from 'msgpackr';
import { MessageTooLarge } from './errors.js';
import type { Message } from './types.js';

/**
 * A Map on its way into msgpackr. msgpackr writes a Map as a msgpack map before it looks at
 * extensions, and with `mapsAsObjects` that map comes back a plain object; so `encodeMessage`
 * swaps each Map for one of these (a class of our own, which only our extension handles) and the
 * extension reads it back as a Map, keys and order intact.
 */
class PackedMap {
  constructor(readonly entries: Array<[unknown, unknown]>) {}
}

/** msgpackr extension type for Map (1-100 are the application's). Registered once, process-wide. */
const MAP_EXTENSION = 42;
addExtension({
  Class: PackedMap,
  type: MAP_EXTENSION,
  write: (packed: PackedMap) => packed.entries,
  read: (entries: Array<[unknown, unknown]>) => new Map(entries),
});

const OPTIONS = { useRecords: false, moreTypes: true, int64AsType: 'bigint', useBigIntExtension: true, mapsAsObjects: true } as const;
const packr = new Packr(OPTIONS);
const unpackr = new Unpackr(OPTIONS);

const MAX_DEPTH = 64;

function fail(path: string, why: string): never {
  throw new TypeError(`Message cannot be sent: ${path} ${why}`);
}

/** Checks one value; returns true when it holds a Map somewhere (so `encodeMessage` must swap them). */
function checkValue(value: unknown, path: string, seen: Set<object>, depth: number): boolean {
  switch (typeof value) {
    case 'string': case 'number': case 'boolean': case 'bigint': case 'undefined': return false;
    case 'function': fail(path, 'is a function');
    case 'symbol': fail(path, 'is a symbol');
  }
  if (value === null) return false;
  const obj = value as object;
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) fail(path, 'is an invalid Date');
    return false;
  }
  if (value instanceof Uint8Array) return false;
  if (depth > MAX_DEPTH) fail(path, `nests deeper than ${MAX_DEPTH} levels`);
  if (seen.has(obj)) fail(path, 'is part of a cycle');
  seen.add(obj);
  let hasMap = false;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) hasMap = checkValue(value[i], `${path}[${i}]`, seen, depth + 1) || hasMap;
  } else if (value instanceof Map) {
    hasMap = true;
    for (const [k, v] of value) {
      checkValue(k, `${path} key`, seen, depth + 1);
      checkValue(v, `${path}.get(${String(k)})`, seen, depth + 1);
    }
  } else {
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      fail(path, `is an instance of ${(proto?.constructor as { name?: string } | undefined)?.name ?? 'a class'}, not a plain object`);
    }
    for (const key of Object.keys(obj)) {
      hasMap = checkValue((obj as Record<string, unknown>)[key], `${path}.${key}`, seen, depth + 1) || hasMap;
    }
  }
  seen.delete(obj);
  return hasMap;
}

/** A copy of a checked value with every Map replaced by a PackedMap (only called when there is one). */
function packMaps(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || value instanceof Date || value instanceof Uint8Array) return value;
  if (Array.isArray(value)) return value.map(packMaps);
  if (value instanceof Map) return new PackedMap([...value].map(([k, v]) => [packMaps(k), packMaps(v)]));
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    // defineProperty, so an own "__proto__" key stays a key instead of setting the prototype.
    Object.defineProperty(out, key, { value: packMaps((value as Record<string, unknown>)[key]), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function checkMessage(message: unknown): boolean {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new TypeError(`Message must be a plain object with a string "type", not ${message === null ? 'null' : Array.isArray(message) ? 'an array' : typeof message}`);
  }
  if (typeof (message as { type?: unknown }).type !== 'string') throw new TypeError('Message must have a string "type"');
  return checkValue(message, 'message', new Set(), 0);
}

/** Throws a TypeError unless `message` is a plain object with a string `type` holding only codec-safe values. */
export function requireValidMessage(message: unknown): asserts message is Message {
  checkMessage(message);
}

/** Encodes a message with the codec every backend shares; checks its shape and size first. */
export function encodeMessage(message: Message, maxSize: number): Buffer {
  const hasMap = checkMessage(message);
  const bytes = packr.pack(hasMap ? packMaps(message) : message);
  if (bytes.length > maxSize) throw new MessageTooLarge(bytes.length, maxSize);
  return bytes;
}

/**
 * A copy of `message` equal to what `decodeMessage(encodeMessage(message))` gives, made without
 * encoding, when the message is built only of plain objects, arrays, well-formed strings, numbers,
 * booleans and null, and its encoded size is surely within `maxSize` (an upper bound is counted:
 * 3 bytes per UTF-16 unit, 9 per number, 5 per header). Otherwise `undefined`: the caller encodes,
 * so every other value, every error and every size on the edge goes through the one codec.
 * A backend that keeps messages in this process (InMemory) uses it to skip a pack and an unpack.
 */
export function copyMessage(message: Message, maxSize: number): Message | undefined {
  let budget = maxSize;
  const copy = (value: unknown, depth: number): unknown => {
    switch (typeof value) {
      case 'string':
        budget -= 5 + value.length * 3;
        return value.isWellFormed() ? value : undefined;
      case 'number':
        budget -= 9;
        return value === 0 ? 0 : value; // -0 encodes as 0
      case 'boolean':
        budget -= 1;
        return value;
      case 'object':
        break;
      default:
        return undefined;
    }
    if (value === null) {
      budget -= 1;
      return null;
    }
    if (depth > MAX_DEPTH || budget < 0) return undefined;
    budget -= 5;
    if (Array.isArray(value)) {
      const out: unknown[] = new Array(value.length);
      for (let i = 0; i < value.length; i++) {
        const v = copy(value[i], depth + 1);
        if (v === undefined) return undefined;
        out[i] = v;
      }
      return out;
    }
    if (Object.getPrototypeOf(value) !== Object.prototype) return undefined;
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      if (key === '__proto__' || !key.isWellFormed()) return undefined;
      budget -= 5 + key.length * 3;
      const v = copy((value as Record<string, unknown>)[key], depth + 1);
      if (v === undefined) return undefined;
      out[key] = v;
    }
    return out;
  };
  if (typeof message !== 'object' || message === null || typeof message.type !== 'string') return undefined;
  const out = copy(message, 0);
  return out !== undefined && budget >= 0 ? (out as Message) : undefined;
}

/** Decodes bytes made by `encodeMessage`; throws a TypeError for bytes that are not a message (garbage, ciphertext). */
export function decodeMessage(bytes: Uint8Array): Message {
  let message: unknown;
  try {
    message = unpackr.unpack(bytes);
  } catch (err) {
    throw new TypeError(`Received bytes are not a channel layer message (${(err as Error).message})`);
  }
  if (typeof message !== 'object' || message === null || Array.isArray(message) || typeof (message as Message).type !== 'string') {
    throw new TypeError('Received bytes are not a channel layer message (no object with a string "type")');
  }
  return message as Message;
}
