/**
 * The InMemory channel layer: one process, no network. Right for a single worker (Render's free
 * tier); it cannot span processes. Messages still go through the shared codec, so what works
 * here works on Redis.
 */
import { BaseChannelLayer, SETTLED } from './base.js';
import { ChannelFull, LayerClosed } from './errors.js';
import type { LayerOptions, Message, MessageSink, RosterChangeOptions, RosterEntry, RosterJoinOptions, RosterJoinResult } from './types.js';

/** What a queue keeps: the codec's bytes, or a checked copy of the message (`copyMessage`). */
type Stored = Uint8Array | Message;

interface QueuedItem {
  stored: Stored;
  expiresAt: number;
}

/**
 * The empty list every Queue starts with and goes back to, for its messages and its receives
 * alike: never changed, replaced by a list of its own when something is added.
 */
const EMPTY: readonly never[] = Object.freeze([]);
const empty = <T>(): T[] => EMPTY as unknown as T[];

/** `list` with `value` appended: a list of its own in place of an empty one. */
function appended<T>(list: T[], value: T): T[] {
  if (list.length === 0) return [value];
  list.push(value);
  return list;
}

/** `list` once it dropped its first `n` entries: the shared empty list when nothing is left. */
function dropped<T>(list: T[], n: number): T[] {
  if (n >= list.length) return empty<T>();
  if (n > 0) list.splice(0, n);
  return list;
}

/**
 * A channel's queue: messages waiting for a receive, or receives waiting for a message. A channel
 * with just one pending receive has none (the layer keeps the sink itself); a Queue is made when
 * a message must wait, or a second receive does, and both its lists share EMPTY while empty.
 */
class Queue {
  /** Messages not yet received, oldest first. */
  items: QueuedItem[] = empty();
  /** Pending receives, oldest first. */
  waiters: MessageSink[] = empty();

  get idle(): boolean {
    return this.items.length === 0 && this.waiters.length === 0;
  }

  /** The pending receive when it is the only one, else undefined. */
  get loneWaiter(): MessageSink | undefined {
    return this.waiters.length === 1 ? this.waiters[0] : undefined;
  }

  addItem(item: QueuedItem): void {
    this.items = appended(this.items, item);
  }

  takeItem(): QueuedItem | undefined {
    const item = this.items[0];
    this.items = dropped(this.items, 1); // an emptied list would keep its grown storage
    return item;
  }

  /** Drops the first `n` messages. */
  dropItems(n: number): void {
    this.items = dropped(this.items, n);
  }

  addWaiter(sink: MessageSink): void {
    this.waiters = appended(this.waiters, sink);
  }

  /** The oldest pending receive, taken off the queue. */
  takeWaiter(): MessageSink | undefined {
    const waiter = this.waiters[0];
    this.waiters = dropped(this.waiters, 1);
    return waiter;
  }

  /** Withdraws a pending receive; false when it was not pending here. */
  removeWaiter(sink: MessageSink): boolean {
    const i = this.waiters.indexOf(sink);
    if (i === -1) return false;
    if (this.waiters.length === 1) this.waiters = empty();
    else this.waiters.splice(i, 1);
    return true;
  }

  /** Takes every pending receive off the queue, oldest first. */
  takeWaiters(): MessageSink[] {
    const all = this.waiters;
    this.waiters = empty();
    return all;
  }
}

/**
 * Roster times are kept as ms since the layer module loaded: small integers that V8 stores in the
 * object itself, where a `Date.now()` is a boxed double of its own (16 bytes per peer, idle).
 */
const EPOCH = Date.now();
const rosterNow = (): number => Date.now() - EPOCH;

/** A roster entry as stored: `since` in rosterNow() time. */
interface StoredEntry {
  member: string;
  data: string;
  since: number;
}

/**
 * A roster: its entries in join order, in an array of exactly their number, replaced on every
 * join or leave (never grown in place). A roster holds a call's few peers; a Map would keep a
 * hash table of its own besides (about 120 bytes more per call of two, idle), and every roster
 * operation but an update answers the whole list anyway.
 */
interface Roster {
  entries: readonly StoredEntry[];
  /** In rosterNow() time. */
  expiresAt: number;
}

const NO_STORED_ENTRIES: readonly StoredEntry[] = Object.freeze([]);
const findEntry = (roster: Roster | undefined, member: string): StoredEntry | undefined => roster?.entries.find((e) => e.member === member);

/** A stored entry as the layer's callers see it (a copy of their own). */
const entryOut = (e: StoredEntry): RosterEntry => ({ member: e.member, data: e.data, since: e.since + EPOCH });

/**
 * What a channel's entry holds once its lone pending receive took a message: nothing, but the
 * entry stays, so the receive that follows (at once, for a consumer) overwrites it in place. A
 * delete and a new entry per message would have the map rebuild its table every few thousand
 * messages, and each new table (tens of KB at a thousand channels) outlives a young-generation
 * collection. A sweep drops entries still left this way.
 */
const TAKEN = Symbol('taken');

/** How often expired messages, memberships and rosters are swept, at most (ms). */
const MAX_SWEEP_INTERVAL = 10_000;

/** The InMemory channel layer. */
export class InMemoryChannelLayer extends BaseChannelLayer {
  readonly kind = 'memory' as const;
  /**
   * Each channel with something in it: a Queue, or, for a channel with one pending receive and no
   * message (every channel an idle consumer reads), that receive's sink itself. So an idle
   * channel costs one map entry, no Queue; one is made when messages wait or receives queue up,
   * and dropped once it is idle again. TAKEN stands for nothing, between a message and the
   * receive after it.
   */
  private readonly queues = new Map<string, Queue | MessageSink | typeof TAKEN>();
  private readonly groups = new Map<string, Map<string, number>>();
  private readonly rosters = new Map<string, Roster>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(options: LayerOptions = {}) {
    super(options);
  }

  /**
   * A message made only of plain values is kept as a checked copy (codec.ts `copyMessage`: the
   * same value the codec's round trip gives, without packing and unpacking it); anything else
   * goes through the codec like on every backend, so both accept and refuse the same messages.
   * Each stored message is received once, so the copy is the receiver's own.
   */
  override send(channel: string, message: Message): Promise<void> {
    // Not an async function: it returns SETTLED when the message was handed over (every send that
    // is not refused), so a relay need not await it.
    try {
      const copy = this.sendableCopy(channel, message);
      if (copy === undefined) return super.send(channel, message);
      return this.storeSend(channel, copy, this.capacityOf(channel));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  protected storeSend(channel: string, stored: Stored, capacity: number): Promise<void> {
    try {
      this.put(channel, stored, capacity);
      return SETTLED;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Delivers or queues a message; ChannelFull when the channel is full. */
  private put(channel: string, stored: Stored, capacity: number): void {
    if (!this.deliver(channel, stored, capacity)) throw new ChannelFull(channel, capacity);
  }

  /** Hands a message to a waiting receiver or queues it; false when the channel is full. */
  private deliver(channel: string, stored: Stored, capacity: number): boolean {
    const entry = this.entryOf(channel);
    if (entry !== undefined && !(entry instanceof Queue)) {
      // The channel's one pending receive: it is taken (its next receive takes the entry back).
      this.queues.set(channel, TAKEN);
      this.scheduleSweep();
      this.deliverTo(entry, stored);
      return true;
    }
    const waiter = entry?.takeWaiter();
    if (waiter) {
      this.forgetIfIdle(channel, entry!);
      this.deliverTo(waiter, stored);
      return true;
    }
    const now = Date.now();
    const q = entry ?? this.newQueue(channel);
    this.dropExpired(q, now);
    if (q.items.length >= capacity) return false;
    q.addItem({ stored, expiresAt: now + this.options.expiry * 1000 });
    this.scheduleSweep();
    return true;
  }

  protected storeReceive(channel: string, sink: MessageSink): void {
    const entry = this.entryOf(channel);
    if (entry === undefined) {
      this.queues.set(channel, sink); // nothing queued, nobody else waiting
      return;
    }
    const q = entry instanceof Queue ? entry : this.newQueue(channel, entry);
    this.dropExpired(q, Date.now());
    const item = q.takeItem();
    if (!item) {
      q.addWaiter(sink);
      this.forgetIfIdle(channel, q); // its messages expired: the lone receive may stand for it
      return;
    }
    this.forgetIfIdle(channel, q);
    this.deliverTo(sink, item.stored);
  }

  protected storeCancel(channel: string, sink: MessageSink): boolean {
    const q = this.queues.get(channel);
    if (q === sink) {
      this.queues.delete(channel);
      return true;
    }
    if (!(q instanceof Queue) || !q.removeWaiter(sink)) return false;
    this.forgetIfIdle(channel, q);
    return true;
  }

  protected async storeGroupAdd(group: string, channel: string): Promise<void> {
    let members = this.groups.get(group);
    if (!members) this.groups.set(group, (members = new Map()));
    members.delete(channel); // keep insertion order = order of latest add
    members.set(channel, Date.now());
    this.scheduleSweep();
  }

  protected async storeGroupDiscard(group: string, channel: string): Promise<void> {
    const members = this.groups.get(group);
    if (!members) return;
    members.delete(channel);
    if (members.size === 0) this.groups.delete(group);
  }

  protected async storeGroupSend(group: string, bytes: Buffer): Promise<void> {
    const members = this.groups.get(group);
    if (!members) return;
    const oldest = Date.now() - this.options.groupExpiry * 1000;
    for (const [channel, addedAt] of [...members]) {
      if (addedAt < oldest) {
        members.delete(channel);
        continue;
      }
      this.deliver(channel, bytes, this.capacityOf(channel)); // full members are skipped
    }
    if (members.size === 0) this.groups.delete(group);
  }

  protected async storeRosterJoin(name: string, member: string, data: string, opts: RosterJoinOptions): Promise<RosterJoinResult> {
    const roster = this.liveRoster(name) ?? { entries: NO_STORED_ENTRIES, expiresAt: 0 };
    const existing = findEntry(roster, member);
    if (!existing && roster.entries.length >= opts.limit) return { joined: false, entries: roster.entries.map(entryOut) };
    if (existing) existing.data = data; // a rejoin keeps its place and its `since`
    else roster.entries = roster.entries.concat({ member, data, since: rosterNow() }); // concat: exactly the new size
    roster.expiresAt = rosterNow() + opts.ttl * 1000;
    this.rosters.set(name, roster);
    this.scheduleSweep();
    return { joined: true, entries: roster.entries.map(entryOut) };
  }

  protected async storeRosterList(name: string): Promise<RosterEntry[]> {
    return (this.liveRoster(name)?.entries ?? NO_STORED_ENTRIES).map(entryOut);
  }

  protected async storeRosterUpdate(name: string, member: string, data: string, opts: RosterChangeOptions): Promise<boolean> {
    const roster = this.liveRoster(name);
    const entry = findEntry(roster, member);
    if (!roster || !entry || (opts.ifData !== undefined && entry.data !== opts.ifData)) return false;
    entry.data = data;
    if (opts.ttl !== undefined) roster.expiresAt = rosterNow() + opts.ttl * 1000;
    return true;
  }

  protected async storeRosterLeave(name: string, member: string, opts: RosterChangeOptions): Promise<RosterEntry[] | null> {
    const roster = this.liveRoster(name);
    const i = roster ? roster.entries.findIndex((e) => e.member === member) : -1;
    if (!roster || i === -1 || (opts.ifData !== undefined && roster.entries[i]!.data !== opts.ifData)) return null;
    roster.entries = roster.entries.slice(0, i).concat(roster.entries.slice(i + 1));
    if (roster.entries.length === 0) this.rosters.delete(name);
    return roster.entries.map(entryOut);
  }

  protected async storeRosterDelete(name: string): Promise<RosterEntry[]> {
    const roster = this.liveRoster(name);
    this.rosters.delete(name);
    return (roster?.entries ?? NO_STORED_ENTRIES).map(entryOut);
  }

  /** No other instance can share an InMemory layer's storage, so no other instance is reachable. */
  protected async storeInstanceAlive(): Promise<boolean> {
    return false;
  }

  protected async storeFlush(): Promise<void> {
    for (const [channel, q] of this.queues) {
      if (q === TAKEN) this.queues.delete(channel);
      if (!(q instanceof Queue)) continue; // a pending receive, nothing queued
      q.dropItems(q.items.length);
      this.forgetIfIdle(channel, q);
    }
    this.groups.clear();
    this.rosters.clear();
  }

  protected async storeClose(): Promise<void> {
    clearTimeout(this.sweeper);
    this.sweeper = undefined;
    const err = new LayerClosed();
    for (const q of this.queues.values()) {
      if (q instanceof Queue) for (const w of q.takeWaiters()) w.fail(err);
      else if (q !== TAKEN) q.fail(err);
    }
    this.queues.clear();
    this.groups.clear();
    this.rosters.clear();
  }

  /** Makes the channel's Queue, with its lone pending receive `waiter` if it had one. */
  private newQueue(channel: string, waiter?: MessageSink): Queue {
    const q = new Queue();
    if (waiter) q.addWaiter(waiter);
    this.queues.set(channel, q);
    return q;
  }

  /** The channel's entry, with TAKEN read as none. */
  private entryOf(channel: string): Queue | MessageSink | undefined {
    const entry = this.queues.get(channel);
    return entry === TAKEN ? undefined : entry;
  }

  private dropExpired(q: Queue, now: number): void {
    let n = 0;
    while (n < q.items.length && q.items[n]!.expiresAt <= now) n++;
    q.dropItems(n);
  }

  /**
   * Drops a channel's Queue once it holds nothing and nobody waits on it, or leaves its one
   * pending receive in its place once that is all it holds.
   */
  private forgetIfIdle(channel: string, q: Queue): void {
    if (this.queues.get(channel) !== q || q.items.length > 0) return;
    const lone = q.loneWaiter;
    if (q.idle) this.queues.delete(channel);
    else if (lone !== undefined) this.queues.set(channel, lone);
  }

  private liveRoster(name: string): Roster | undefined {
    const roster = this.rosters.get(name);
    if (roster && roster.expiresAt <= rosterNow()) {
      this.rosters.delete(name);
      return undefined;
    }
    return roster;
  }

  /** Sweeps expired state while there is any; the timer never keeps the process alive. */
  private scheduleSweep(): void {
    if (this.sweeper || this.closed) return;
    const interval = Math.min(MAX_SWEEP_INTERVAL, this.options.expiry * 500);
    this.sweeper = setTimeout(() => {
      this.sweeper = undefined;
      this.sweep();
    }, interval);
    this.sweeper.unref();
  }

  private sweep(): void {
    const now = Date.now();
    for (const [channel, q] of this.queues) {
      if (q === TAKEN) this.queues.delete(channel); // its receive did not come back
      if (!(q instanceof Queue)) continue; // a pending receive, nothing queued
      this.dropExpired(q, now);
      this.forgetIfIdle(channel, q);
    }
    const oldest = now - this.options.groupExpiry * 1000;
    for (const [group, members] of this.groups) {
      for (const [channel, addedAt] of members) if (addedAt < oldest) members.delete(channel);
      if (members.size === 0) this.groups.delete(group);
    }
    for (const name of this.rosters.keys()) this.liveRoster(name);
    if (this.queues.size > 0 || this.groups.size > 0 || this.rosters.size > 0) this.scheduleSweep();
  }
}
