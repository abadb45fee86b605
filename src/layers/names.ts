import type { CapacityPattern } from './types.js';

const CHANNEL_NAME = /^[a-zA-Z\d\-_.]+(![\w\-.]*)?$/;
const GROUP_NAME = /^[a-zA-Z\d\-_.]+$/;
/** Names are shorter than this many characters (Channels: `len(name) < 100`). */
export const MAX_NAME_LENGTH = 100;

function describe(kind: 'Channel' | 'Group', name: unknown, why: string): TypeError {
  const shown = typeof name === 'string' ? JSON.stringify(name.length > 120 ? `${name.slice(0, 120)}…` : name) : String(name);
  return new TypeError(`${kind} name ${shown} is invalid: ${why}`);
}

function check(kind: 'Channel' | 'Group', name: unknown, pattern: RegExp, allowed: string): asserts name is string {
  if (typeof name !== 'string') throw describe(kind, name, `it must be a string, not ${typeof name}`);
  if (name.length === 0) throw describe(kind, name, 'it is empty');
  if (name.length >= MAX_NAME_LENGTH) throw describe(kind, name, `it is ${name.length} characters long; the limit is ${MAX_NAME_LENGTH - 1}`);
  if (!pattern.test(name)) throw describe(kind, name, `only ${allowed} are allowed`);
}

/** Channel names found valid lately: a busy channel is checked once, not at every send and receive. */
const validChannels = new Set<string>();
const VALID_CACHE_SIZE = 10_000;

/** Throws a TypeError naming the channel and the reason unless `name` is a valid channel name. */
export function requireValidChannelName(name: unknown): asserts name is string {
  if (typeof name === 'string' && validChannels.has(name)) return;
  check('Channel', name, CHANNEL_NAME, 'ASCII letters, digits, "-", "_", "." and one "!" (process-specific channels)');
  if (validChannels.size >= VALID_CACHE_SIZE) validChannels.clear();
  validChannels.add(name);
}

/** Throws a TypeError naming the group and the reason unless `name` is a valid group name. */
export function requireValidGroupName(name: unknown): asserts name is string {
  check('Group', name, GROUP_NAME, 'ASCII letters, digits, "-", "_" and "."');
}

/** The part of a process-specific channel name up to and including the `!`; the whole name otherwise. */
export function nonLocalName(name: string): string {
  const bang = name.indexOf('!');
  return bang === -1 ? name : name.slice(0, bang + 1);
}

/**
 * The id of the layer instance a process-specific channel belongs to: the last dot-separated part
 * before the `!` (`<prefix>.<layer id>!<random>` from `newChannel`); undefined for a normal channel.
 */
export function layerIdOf(channel: string): string | undefined {
  const bang = channel.indexOf('!');
  if (bang === -1) return undefined;
  const nl = channel.slice(0, bang);
  return nl.slice(nl.lastIndexOf('.') + 1);
}

/** Turns a glob (`*`, `?`, `[...]`) into a RegExp matching the whole name, as Python's `fnmatch.translate`. */
export function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end === -1) out += '\\[';
      else {
        let body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        out += `[${body}]`;
        i = end;
      }
    } else out += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^(?:${out})$`, 's');
}

/** Capacity patterns compiled once: the first pattern that matches a channel name gives its capacity. */
export class CapacityTable {
  private readonly rules: Array<[RegExp, number]>;

  constructor(private readonly fallback: number, patterns: Iterable<[CapacityPattern, number]>) {
    this.rules = [...patterns].map(([p, n]) => [typeof p === 'string' ? globToRegExp(p) : p, n]);
  }

  /** The capacity of a channel. */
  capacityOf(channel: string): number {
    // No cache by channel name: testing a rule costs about what a Map lookup does (~30 ns), and a
    // cache kept an entry, and its name, for every channel ever used (one per connection here).
    const rules = this.rules;
    for (let i = 0; i < rules.length; i++) {
      const [re, n] = rules[i]!;
      re.lastIndex = 0;
      if (re.test(channel)) return n;
    }
    return this.fallback;
  }
}
