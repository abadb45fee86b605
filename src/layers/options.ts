import { InvalidChannelLayerError } from './errors.js';
import type { CapacityPattern, LayerOptions, RedisLayerOptions } from './types.js';

/** Every option's default, in one place. */
export const DEFAULT_LAYER_OPTIONS = Object.freeze({
  /** Seconds an undelivered message is kept: 60. */
  expiry: 60,
  /** Seconds a group membership lives after its latest add: 86400. */
  groupExpiry: 86_400,
  /** Messages a channel holds before `ChannelFull`: 100. */
  capacity: 100,
  /** Largest encoded message: 1 MiB. */
  maxMessageSize: 1024 * 1024,
  /** Key and name prefix in shared storage: "asgi". */
  prefix: 'asgi',
});

/** Options after defaults and validation. */
export interface ResolvedLayerOptions {
  expiry: number;
  groupExpiry: number;
  capacity: number;
  channelCapacity: Array<[CapacityPattern, number]>;
  maxMessageSize: number;
  prefix: string;
}

const COMMON_KEYS = ['expiry', 'groupExpiry', 'capacity', 'channelCapacity', 'maxMessageSize', 'prefix'] as const;
/** The option names the Redis backend accepts beyond the common ones. */
export const REDIS_KEYS = ['hosts', 'clusterHosts', 'symmetricEncryptionKeys', 'tls'] as const;

function positive(name: string, value: unknown, integer: boolean): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new InvalidChannelLayerError(`Option ${name} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function capacityRules(value: LayerOptions['channelCapacity']): Array<[CapacityPattern, number]> {
  if (value === undefined) return [];
  const entries: Array<[CapacityPattern, number]> =
    value instanceof Map ? [...value.entries()] : Array.isArray(value) ? value : Object.entries(value);
  for (const [pattern, n] of entries) {
    if (typeof pattern !== 'string' && !(pattern instanceof RegExp)) {
      throw new InvalidChannelLayerError(`Option channelCapacity keys must be glob strings or RegExps, got ${typeof pattern}`);
    }
    positive(`channelCapacity[${String(pattern)}]`, n, true);
  }
  return entries;
}

/** Applies defaults and validates; an unknown option is an error, never ignored. */
export function resolveLayerOptions(options: LayerOptions | RedisLayerOptions = {}, extraKeys: readonly string[] = []): ResolvedLayerOptions {
  const known = new Set<string>([...COMMON_KEYS, ...extraKeys]);
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new InvalidChannelLayerError(`Unknown channel layer option "${key}" (known: ${[...known].join(', ')})`);
  }
  const o = { ...DEFAULT_LAYER_OPTIONS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
  const prefix = o.prefix;
  if (typeof prefix !== 'string' || !/^[a-zA-Z\d\-_.]{1,40}$/.test(prefix)) {
    throw new InvalidChannelLayerError(`Option prefix must be 1-40 of letters, digits, "-", "_", ".", got ${JSON.stringify(prefix)}`);
  }
  return {
    expiry: positive('expiry', o.expiry, false),
    groupExpiry: positive('groupExpiry', o.groupExpiry, false),
    capacity: positive('capacity', o.capacity, true),
    channelCapacity: capacityRules(options.channelCapacity),
    maxMessageSize: positive('maxMessageSize', o.maxMessageSize, true),
    prefix,
  };
}
