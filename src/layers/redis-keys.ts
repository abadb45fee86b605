/**
 * Every Redis key and pub/sub topic the Redis layer uses, built in this one file (in TypeScript
 * for the layer, and in Lua for the scripts that must find a group member's keys themselves).
 *
 * With prefix `asgi`:
 *   asgi:s:{NL}        hash   a channel's state: `s` last sequence number, `o` holder (layer id,
 *                             `~id` while it hands the channel back), `n` messages published to
 *                             the holder, `w` layer ids waiting to hold it. NL is the channel's
 *                             non-local name (the whole name for a normal channel).
 *   asgi:q:{NL}LOCAL   zset   a channel's stored messages, scored by sequence number.
 *   asgi:g:{GROUP}     zset   a group's member channels, scored by time of their latest add (ms).
 *   asgi:gc:{GROUP}    hash   member channel -> capacity, for members whose capacity is not the default.
 *   asgi:r:{ROSTER}    hash   a roster: `#` join counter, member -> "joinSeq\nsince\ndata".
 *   asgi:w:ID          topic  the wake topic of the layer instance with id ID.
 *
 * The `{...}` are Redis Cluster hash tags: a channel's state and queue share a slot, as do a
 * group's two keys, so each script touches one slot. Channel, group and roster names never hold
 * `{`, `}` or `:` (names.ts), so one name cannot forge another's key.
 */
import { createHash } from 'node:crypto';
import { nonLocalName } from './names.js';

/** The key and topic names of one layer prefix. */
export class RedisKeys {
  /** What every key and topic starts with: `<prefix>:`. */
  readonly base: string;

  constructor(prefix: string) {
    this.base = `${prefix}:`;
  }

  /** A channel's state hash. */
  state(channel: string): string {
    return `${this.base}s:{${nonLocalName(channel)}}`;
  }

  /** A channel's stored-message queue. */
  queue(channel: string): string {
    const nl = nonLocalName(channel);
    return `${this.base}q:{${nl}}${channel.slice(nl.length)}`;
  }

  /** A group's member set. */
  group(group: string): string {
    return `${this.base}g:{${group}}`;
  }

  /** A group's per-member capacities. */
  groupCapacities(group: string): string {
    return `${this.base}gc:{${group}}`;
  }

  /** A roster's hash. */
  roster(roster: string): string {
    return `${this.base}r:{${roster}}`;
  }

  /** The wake topic of a layer instance. */
  wakeTopic(layerId: string): string {
    return `${this.base}w:${layerId}`;
  }

  /** The SCAN pattern matching every key of this prefix. */
  everything(): string {
    return `${this.base}*`;
  }
}

/**
 * Which of `count` hosts holds a name: the first 12 bits of its SHA-1 split into `count` equal
 * ranges. The Lua scripts compute the same with `redis.sha1hex` (LUA_HOST_OF below).
 */
export function hostOf(name: string, count: number): number {
  if (count <= 1) return 0;
  const bucket = parseInt(createHash('sha1').update(name).digest('hex').slice(0, 3), 16);
  return Math.floor(bucket / (4096 / count));
}

/** The Lua twins of the builders above; KP is the key base (`<prefix>:`), a script argument. */
export const LUA_KEYS = `
local function split_channel(ch)
  local bang = string.find(ch, '!', 1, true)
  if not bang then return ch, '', false end
  local nl = string.sub(ch, 1, bang)
  return nl, string.sub(ch, bang + 1), string.match(string.sub(ch, 1, bang - 1), '([^.]*)$')
end
local function state_key(nl) return KP .. 's:{' .. nl .. '}' end
local function queue_key(nl, loc) return KP .. 'q:{' .. nl .. '}' .. loc end
local function wake_topic(id) return KP .. 'w:' .. id end
local function host_of(name, count)
  if count <= 1 then return 0 end
  local bucket = tonumber(string.sub(redis.sha1hex(name), 1, 3), 16)
  return math.floor(bucket / (4096 / count))
end
`;
