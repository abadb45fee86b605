/**
 * The Redis channel layer: any number of workers and instances share channels, groups and rosters.
 *
 * How it stays silent while idle and loses nothing across a drop:
 *  - Each layer instance subscribes once (per host) to its own wake topic, and never polls.
 *  - A channel this instance receives on is *held*: a process-specific channel from `newChannel`
 *    is held by the instance its name names; a normal channel is claimed (one script: become the
 *    holder and drain what Redis stored). A send is one script: it PUBLISHes the message to the
 *    holder's wake topic, or stores it (bounded by capacity, expiring) when there is no live
 *    holder or PUBLISH reached nobody. So a message for a worker that died or lost its
 *    connection waits in Redis and is drained by whichever instance next receives on the channel.
 *  - Every message gets a per-channel sequence number (the server clock in microseconds, kept
 *    increasing), and the layer delivers in sequence order: messages that come by pub/sub, by a
 *    drain, or after being put back all fall into place. Drains publish a fence to our topic, and
 *    a drained batch is used only once its fence arrives (all that was published before it has
 *    arrived too). A channel no send ever reached through Redis is claimed without either.
 *  - A normal channel stays held while a receive waits and for a short linger after (consumers
 *    receive in a loop; claiming per message would cost commands). Then, or when the receive is
 *    aborted, the layer releases it: one script puts back what it buffered and lets go. If
 *    messages published to us are still in flight, the script parks the channel instead (senders
 *    store, nobody else may take it) until they have arrived, so handing a channel to another
 *    instance never reorders or loses one.
 *  - When a subscription drops, every channel on that host is re-claimed or drained after it
 *    comes back; group memberships made through this instance are re-added (a restarted Redis
 *    without persistence lost them).
 *  - On a Redis Cluster a failover moves a channel's keys to a promoted replica. When a send there
 *    finds none of our subscribers (we have not seen the failover yet), it stores the message,
 *    lets go of a normal channel and publishes an `L` notice, which the cluster bus brings to our
 *    subscribers on the other masters: we claim the channel again (draining what was stored, in
 *    sequence order, duplicates dropped by id) and have the transport re-read the cluster.
 */
import { randomBytes } from 'node:crypto';
import { BaseChannelLayer, randomName } from './base.js';
import { ChannelFull, InvalidChannelLayerError, LayerClosed } from './errors.js';
import { defineFlags } from './flags.js';
import { layerIdOf, nonLocalName } from './names.js';
import { REDIS_KEYS } from './options.js';
import { MessageCipher } from './redis-crypto.js';
import { RedisKeys, hostOf } from './redis-keys.js';
import type { ScriptName } from './redis-scripts.js';
import { RedisTransport, parseRedisUrl, type RedisEndpoint } from './redis-transport.js';
import type { Message, MessageSink, RedisLayerOptions, RosterChangeOptions, RosterEntry, RosterJoinOptions, RosterJoinResult } from './types.js';

/** Where the layer connects when no `hosts` are given. */
const DEFAULT_HOST = 'redis://127.0.0.1:6379';
/** How long a normal channel stays held after a receive resolves, waiting for the next receive (ms). */
const HOLD_LINGER_MS = 1000;
/** How long an idle process-specific inbox is kept after its last receive (ms). */
const INBOX_LINGER_MS = 5000;
/** How long a parked channel waits for messages still in flight before letting go anyway (ms). */
const PARK_TIMEOUT_MS = 2000;
/** How soon an operation that failed (Redis unreachable past the retries) is tried again (ms). */
const RETRY_MS = 1000;
/** How long `close` waits for operations in flight before releasing and disconnecting (ms). */
const CLOSE_WAIT_MS = 2000;
/** Message ids remembered (at least; at most twice as many) to drop duplicates (a command resent after a reconnect; cluster fan-out). */
const RECENT_IDS = 4096;
/** Bytes of a message id: 8 random per instance + a 4-byte counter. */
const ID_BYTES = 12;
/** Upper bound on remembered group memberships and known-empty channels. */
const MAX_TRACKED = 100_000;

/** One message as the layer holds it. */
interface Item {
  seq: number;
  expiresAt: number;
  /** Message id + payload (encoded, and sealed when encryption is on). */
  entry: Buffer;
}

interface Fence {
  token: string;
  /** The fence frame arrived (or can no longer arrive: the subscription dropped). */
  seen: boolean;
  /** The drained items, once the script replied. */
  drained: Item[] | undefined;
}

/** No undelivered items: one empty list for every inbox that has none (most, most of the time). */
const NO_ITEMS: Item[] = Object.freeze([]) as unknown as Item[];

/** The yes/no state of an Inbox, one bit each of `Inbox.flags` (read and written as booleans). */
const INBOX_FLAGS = {
  /** A process-specific channel of this instance (held by its name); else a normal channel. */
  specific: 1,
  /** Normal channels: Redis names us the holder (as far as we know). */
  owned: 2,
  /** We parked the channel: waiting for `parkTarget` arrivals before releasing. */
  parked: 4,
  /** Redis may have stored messages for this channel: drain before delivering. */
  remote: 8,
  /** An N or L notice came while a claim was in flight: it may tell of a message stored after the claim drained, so drain again. */
  renotified: 16,
  /** A script for this inbox is in flight. */
  busy: 32,
  /** The subscription dropped while a claim was in flight: its result is not to be trusted. */
  stale: 64,
  /** Our claim found another live holder; its release wakes us. */
  waitingForHolder: 128,
  /** A release notice came while a claim was in flight. */
  claimable: 256,
  /** Counting messages published to us since our claim's fence. */
  counting: 512,
  /** Release now rather than after the linger (a receive was aborted, or the layer closes). */
  releaseNow: 1024,
  /** A message this instance sent to the channel through Redis may still be on its way back (`ownLast`). */
  ownInFlight: 2048,
} as const;

/** The flags of which only `owned` may be set for a send to be handed over in-process. */
const HAND_OVER_BLOCKERS = INBOX_FLAGS.specific | INBOX_FLAGS.owned | INBOX_FLAGS.parked | INBOX_FLAGS.remote
  | INBOX_FLAGS.busy | INBOX_FLAGS.stale | INBOX_FLAGS.waitingForHolder | INBOX_FLAGS.ownInFlight;

/**
 * What this instance knows and does about one channel: one per channel it receives from, for as
 * long as it does (an idle peer's two), so kept small. Its twelve yes/no states share one field
 * (`INBOX_FLAGS`, read and written through accessors as booleans), and an inbox with nothing
 * undelivered shares NO_ITEMS.
 */
class Inbox {
  /** Undelivered messages, in sequence order (NO_ITEMS when none; see `addItem`). */
  items: Item[] = NO_ITEMS;
  /** Pending receives, oldest first (see `Waiters`). */
  waiters: Waiters = undefined;
  parkTarget = 0;
  fence: Fence | undefined = undefined;
  arrivals = 0;
  /**
   * What is due when (`later`); the timer may be armed for earlier, and then arms itself again.
   * Both times are `timerClock()` ms: small integers, kept in the object itself.
   */
  due: (() => void) | undefined = undefined;
  dueAt = 0;
  timer: NodeJS.Timeout | undefined = undefined;
  timerAt = 0;
  /** The id counter (as int32) of the last message this instance sent to the channel through Redis, while `ownInFlight`. */
  ownLast = 0;
  flags: number;
  declare readonly specific: boolean;
  declare owned: boolean;
  declare parked: boolean;
  declare remote: boolean;
  declare renotified: boolean;
  declare busy: boolean;
  declare stale: boolean;
  declare waitingForHolder: boolean;
  declare claimable: boolean;
  declare counting: boolean;
  declare releaseNow: boolean;
  declare ownInFlight: boolean;

  constructor(readonly channel: string, specific: boolean, readonly shard: number, readonly capacity: number, remote: boolean) {
    this.flags = (specific ? INBOX_FLAGS.specific : 0) | (remote ? INBOX_FLAGS.remote : 0);
  }

  static {
    defineFlags(Inbox.prototype, INBOX_FLAGS);
  }
}

/**
 * The clock of an inbox's timer: whole ms since the process started, monotonic like the timers
 * themselves. A small integer (for 24 days of uptime) that V8 keeps in the inbox's own field,
 * where a `Date.now()` is a boxed double: two per inbox, 64 bytes per idle peer.
 */
const timerClock = (): number => Math.floor(performance.now());

/**
 * An inbox's pending receives: none, one (the sink itself, an idle peer's usual state: no array
 * kept per channel, nor made per receive), or two or more in an array, oldest first. An array
 * never holds fewer than two.
 */
type Waiters = MessageSink | MessageSink[] | undefined;

function addWaiter(inbox: Inbox, sink: MessageSink): void {
  const w = inbox.waiters;
  if (w === undefined) inbox.waiters = sink;
  else if (Array.isArray(w)) w.push(sink);
  else inbox.waiters = [w, sink];
}

/** What `send` returns for a message handed over in-process: settled, and not SETTLED (see `send`). */
const HANDED_OVER: Promise<void> = Promise.resolve();

/** Takes the oldest pending receive. */
function takeWaiter(inbox: Inbox): MessageSink | undefined {
  const w = inbox.waiters;
  if (!Array.isArray(w)) {
    inbox.waiters = undefined;
    return w;
  }
  const first = w.shift();
  if (w.length === 1) inbox.waiters = w[0];
  return first;
}

/** Removes one pending receive; false if it was not pending. */
function removeWaiter(inbox: Inbox, sink: MessageSink): boolean {
  const w = inbox.waiters;
  if (w === sink) {
    inbox.waiters = undefined;
    return true;
  }
  if (!Array.isArray(w)) return false;
  const i = w.indexOf(sink);
  if (i === -1) return false;
  w.splice(i, 1);
  if (w.length === 1) inbox.waiters = w[0];
  return true;
}

/** Takes every pending receive, oldest first. */
function takeAllWaiters(inbox: Inbox): MessageSink[] {
  const w = inbox.waiters;
  inbox.waiters = undefined;
  return w === undefined ? [] : Array.isArray(w) ? w : [w];
}

/** Adds an undelivered item to an inbox, keeping sequence order (almost always an append). */
function addItem(inbox: Inbox, item: Item): void {
  if (inbox.items === NO_ITEMS) {
    inbox.items = [item];
    return;
  }
  const items = inbox.items;
  let i = items.length;
  while (i > 0 && items[i - 1]!.seq > item.seq) i--;
  items.splice(i, 0, item);
}

/**
 * Remembers recent message ids, to drop a duplicate: at least the last `size`, at most twice
 * that. Two generations: ids go into the newer Set, and when it holds `size` it becomes the older
 * one and the oldest generation is dropped whole. (Deleting the oldest id at each new one, as a
 * ring would, fills the Set's table with deleted entries that V8 clears by copying the whole
 * table every few thousand messages; those copies outlive young-generation collections.)
 */
class RecentIds {
  private newer = new Set<string>();
  private older = new Set<string>();

  constructor(private readonly size: number) {}

  /** True if seen before; remembers it otherwise. */
  check(channel: string, id: Buffer): boolean {
    const key = `${channel} ${id.toString('latin1')}`;
    if (this.newer.has(key) || this.older.has(key)) return true;
    if (this.newer.size >= this.size) {
      this.older = this.newer;
      this.newer = new Set();
    }
    this.newer.add(key);
    return false;
  }

  /** Forgets an id (its message went back to Redis, so it will be drained again). */
  forget(channel: string, id: Buffer): void {
    const key = `${channel} ${id.toString('latin1')}`;
    this.newer.delete(key);
    this.older.delete(key);
  }
}

function parseHosts(options: RedisLayerOptions): { endpoints: RedisEndpoint[]; cluster: boolean } {
  const { hosts, clusterHosts, tls } = options;
  if (tls !== undefined && (typeof tls !== 'object' || tls === null || Array.isArray(tls))) {
    throw new InvalidChannelLayerError('Option tls must be an object of Node TLS options (for example { ca })');
  }
  if (hosts !== undefined && clusterHosts !== undefined) {
    throw new InvalidChannelLayerError('Give either hosts or clusterHosts, not both');
  }
  if (clusterHosts !== undefined) {
    if (!Array.isArray(clusterHosts) || clusterHosts.length === 0) {
      throw new InvalidChannelLayerError('Option clusterHosts must be a non-empty array of redis:// or rediss:// URLs');
    }
    return { endpoints: clusterHosts.map((url, i) => parseRedisUrl(url, `clusterHosts[${i}]`, tls)), cluster: true };
  }
  const list = hosts === undefined ? [DEFAULT_HOST] : typeof hosts === 'string' ? [hosts] : hosts;
  if (!Array.isArray(list) || list.length === 0) {
    throw new InvalidChannelLayerError('Option hosts must be a redis:// or rediss:// URL or a non-empty array of them');
  }
  return { endpoints: list.map((url, i) => parseRedisUrl(url, typeof hosts === 'string' ? 'hosts' : `hosts[${i}]`, tls)), cluster: false };
}

function asBuffer(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (typeof value === 'string') return Buffer.from(value);
  if (typeof value === 'number') return Buffer.from(String(value));
  throw new Error(`Unexpected reply from Redis: ${typeof value}`);
}

function asArray(value: unknown): unknown[] {
  if (!Array.isArray(value)) throw new Error(`Unexpected reply from Redis: ${typeof value}`);
  return value;
}

/** Parses a stored queue member: `<seq>\n<expiresAt>\n<entry>`. */
function parseMember(member: Buffer): Item {
  const a = member.indexOf(10);
  const b = member.indexOf(10, a + 1);
  return { seq: Number(member.toString('latin1', 0, a)), expiresAt: Number(member.toString('latin1', a + 1, b)), entry: member.subarray(b + 1) };
}

function memberOf(item: Item): Buffer {
  return Buffer.concat([Buffer.from(`${item.seq}\n${item.expiresAt}\n`, 'latin1'), item.entry]);
}

function roster(reply: unknown): RosterEntry[] {
  const flat = asArray(reply);
  const out: RosterEntry[] = [];
  for (let i = 0; i + 2 < flat.length; i += 3) {
    out.push({ member: asBuffer(flat[i]).toString(), since: Number(asBuffer(flat[i + 1]).toString()), data: asBuffer(flat[i + 2]).toString() });
  }
  return out;
}

/** The Redis channel layer. */
export class RedisChannelLayer extends BaseChannelLayer {
  readonly kind = 'redis' as const;
  private readonly keys: RedisKeys;
  private readonly transport: RedisTransport;
  private readonly cipher: MessageCipher | undefined;
  private readonly inboxes = new Map<string, Inbox>();
  private readonly fences = new Map<string, Inbox>();
  private readonly recent = new RecentIds(RECENT_IDS);
  /** Per AbortSignal given to `receive`: its pending receives. */
  /** Our process-specific channels known to have nothing stored in Redis (their first receive need not drain). */
  private readonly clean = new Set<string>();
  /** Roster members joined or changed through this instance: `roster\nmember` -> what to put back after a restart. */
  private readonly rosterMembers = new Map<string, { data: string; since: number; ttlMs: number }>();
  /** Group memberships added through this instance: `group\nchannel` -> time of add (ms). */
  private readonly memberships = new Map<string, number>();
  private readonly everSubscribed: boolean[];
  /** Bumped on every subscription drop, per shard: results from before it are not trusted. */
  private readonly epochs: number[];
  private readonly inflight = new Set<Promise<unknown>>();
  /**
   * Per shard: the id counter (as int32) of this instance's last group send, until a later
   * message of ours comes back through that shard's subscription (undefined: none pending).
   * While set, no message is handed over in-process on the shard (see `canHandOver`).
   */
  private readonly groupBlock: Array<number | undefined>;
  private readonly idSeed = randomBytes(ID_BYTES - 4);
  private idCounter = 0;
  private closing = false;

  constructor(options: RedisLayerOptions = {}) {
    super(options, REDIS_KEYS);
    const hosts = parseHosts(options);
    this.cipher = options.symmetricEncryptionKeys === undefined ? undefined : new MessageCipher(options.symmetricEncryptionKeys);
    this.keys = new RedisKeys(this.options.prefix);
    this.transport = new RedisTransport(
      { ...hosts, topic: this.keys.wakeTopic(this.id) },
      {
        message: (frame) => this.onFrame(frame),
        subscribed: (shard) => this.onSubscribed(shard),
        lost: (shard) => this.onLost(shard),
      },
    );
    this.everSubscribed = Array.from({ length: this.transport.shards }, () => false);
    this.epochs = Array.from({ length: this.transport.shards }, () => 0);
    this.groupBlock = Array.from({ length: this.transport.shards }, () => undefined);
  }

  /** Open, every command connection ready and the wake topic subscribed on every host. */
  override isHealthy(): boolean {
    return super.isHealthy() && this.transport.isHealthy();
  }

  override async newChannel(prefix = 'specific'): Promise<string> {
    const name = await super.newChannel(prefix);
    // Subscribed already: nothing can be stored for it, so its first receive need not drain.
    if (this.transport.isSubscribed(this.shardOf(name))) this.markClean(name);
    return name;
  }

  // ---- sending -------------------------------------------------------------------------------

  /**
   * A send that can be handed over in this process (a receive of ours waits on a channel we
   * hold; see `canHandOver`) hands over a checked copy, as InMemory does (codec.ts
   * `copyMessage`: the value the codec's round trip would give): no msgpack encoding and
   * decoding for a message that never leaves the process. Every other send, and a message that
   * is not made only of plain values, goes through the codec as before.
   *
   * It returns HANDED_OVER, settled but not SETTLED, so a caller awaits it: that gives the
   * receiver's consumer the microtask in which it re-arms its receive. A sender that went on at
   * once (as SETTLED lets it) would find no receive waiting for its next message of a burst,
   * and send that one, and those after it, through Redis.
   */
  override send(channel: string, message: Message): Promise<void> {
    const inbox = this.inboxes.get(channel);
    if (inbox === undefined || !this.canHandOver(inbox)) return super.send(channel, message);
    try {
      const copy = this.sendableCopy(channel, message);
      if (copy === undefined) return super.send(channel, message);
      this.handOver(inbox, copy);
      return HANDED_OVER;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  protected async storeSend(channel: string, bytes: Buffer, capacity: number): Promise<void> {
    const inbox = this.inboxes.get(channel);
    if (inbox !== undefined) {
      if (this.canHandOver(inbox)) {
        // A receive of ours is waiting on a channel we hold: hand the message over here, as
        // InMemory would. Redis never sees it (nor its sequence number): nothing it stored or
        // published for the channel can be older, or the checks above would have failed.
        this.handOver(inbox, bytes);
        return;
      }
      if (!inbox.specific) {
        // Through Redis to a channel we hold (or are about to): the next hand-over waits for it.
        inbox.ownLast = this.idCounter | 0;
        inbox.ownInFlight = true;
      }
    }
    const now = Date.now();
    const full = await this.run(this.shardOf(channel), 'send', [this.keys.state(channel), this.keys.queue(channel)], [
      this.keys.base, now, now + this.expiryMs, this.entry(bytes), this.stateTtlMs, channel, capacity, layerIdOf(channel) ?? '',
    ]);
    if (Number(full) > 0) throw new ChannelFull(channel, capacity);
  }

  protected async storeGroupSend(group: string, bytes: Buffer): Promise<void> {
    const now = Date.now();
    // Its copies to channels we hold come back through Redis: no hand-over until they are in.
    this.groupBlock.fill(this.idCounter | 0);
    const entry = this.entry(bytes);
    const expiresAt = now + this.expiryMs;
    const cutoff = now - this.options.groupExpiry * 1000;
    const groupKeys = [this.keys.group(group), this.keys.groupCapacities(group)];
    if (this.transport.clustered) {
      // Members live in other slots: read the group, then one send per member (pipelined by ioredis).
      const pairs = asArray(await this.run(0, 'groupMembers', groupKeys, [this.keys.base, cutoff]));
      const sends: Array<Promise<unknown>> = [];
      for (let i = 0; i + 1 < pairs.length; i += 2) {
        const channel = asBuffer(pairs[i]).toString();
        const cap = asBuffer(pairs[i + 1]).toString();
        sends.push(this.run(0, 'send', [this.keys.state(channel), this.keys.queue(channel)], [
          this.keys.base, now, expiresAt, entry, this.stateTtlMs, channel, cap === '' ? this.options.capacity : Number(cap), layerIdOf(channel) ?? '',
        ]));
      }
      await Promise.all(sends);
      return;
    }
    const shard = hostOf(group, this.transport.shards);
    const reply = asArray(await this.run(shard, 'groupSend', groupKeys, [
      this.keys.base, now, cutoff, this.options.capacity, expiresAt, entry, this.stateTtlMs, shard, this.transport.shards,
    ]));
    if (reply.length <= 1) return;
    // Members whose channels live on other hosts: one script per host.
    const byShard = new Map<number, Array<string | number>>();
    for (let i = 1; i + 1 < reply.length; i += 2) {
      const channel = asBuffer(reply[i]).toString();
      const target = this.shardOf(channel);
      let list = byShard.get(target);
      if (!list) byShard.set(target, (list = []));
      list.push(channel, asBuffer(reply[i + 1]).toString());
    }
    await Promise.all([...byShard].map(([target, list]) =>
      this.run(target, 'deliverMany', [], [this.keys.base, now, expiresAt, entry, this.stateTtlMs, ...list])));
  }

  // ---- groups and rosters --------------------------------------------------------------------

  protected async storeGroupAdd(group: string, channel: string): Promise<void> {
    const now = Date.now();
    await this.addMembership(group, channel, now);
    const key = `${group}\n${channel}`;
    this.memberships.delete(key);
    this.memberships.set(key, now);
    if (this.memberships.size > MAX_TRACKED) this.memberships.delete(this.memberships.keys().next().value!);
  }

  protected async storeGroupDiscard(group: string, channel: string): Promise<void> {
    this.memberships.delete(`${group}\n${channel}`);
    await this.run(this.groupShard(group), 'groupDiscard', [this.keys.group(group), this.keys.groupCapacities(group)], [this.keys.base, channel]);
  }

  protected async storeRosterJoin(name: string, member: string, data: string, opts: RosterJoinOptions): Promise<RosterJoinResult> {
    const reply = asArray(await this.run(this.groupShard(name), 'rosterJoin', [this.keys.roster(name)], [
      this.keys.base, member, data, Date.now(), opts.limit, Math.max(1, Math.round(opts.ttl * 1000)),
    ]));
    const result = { joined: Number(reply[0]) === 1, entries: roster(reply[1]) };
    const mine = result.joined ? result.entries.find((e) => e.member === member) : undefined;
    if (mine) this.trackRosterMember(name, member, data, mine.since, opts.ttl * 1000);
    return result;
  }

  protected async storeRosterList(name: string): Promise<RosterEntry[]> {
    return roster(await this.run(this.groupShard(name), 'rosterList', [this.keys.roster(name)], [this.keys.base]));
  }

  protected async storeRosterUpdate(name: string, member: string, data: string, opts: RosterChangeOptions): Promise<boolean> {
    const ttl = opts.ttl === undefined ? '' : Math.max(1, Math.round(opts.ttl * 1000));
    const reply = await this.run(this.groupShard(name), 'rosterUpdate', [this.keys.roster(name)], [
      this.keys.base, member, data, opts.ifData === undefined ? '0' : '1', opts.ifData ?? '', ttl,
    ]);
    const changed = Number(reply) === 1;
    const tracked = this.rosterMembers.get(`${name}\n${member}`);
    if (changed && tracked) tracked.data = data;
    return changed;
  }

  protected async storeRosterLeave(name: string, member: string, opts: RosterChangeOptions): Promise<RosterEntry[] | null> {
    const reply = asArray(await this.run(this.groupShard(name), 'rosterLeave', [this.keys.roster(name)], [
      this.keys.base, member, opts.ifData === undefined ? '0' : '1', opts.ifData ?? '',
    ]));
    if (Number(reply[0]) !== 1) return null;
    this.rosterMembers.delete(`${name}\n${member}`);
    return roster(reply[1]);
  }

  protected async storeRosterDelete(name: string): Promise<RosterEntry[]> {
    for (const key of [...this.rosterMembers.keys()]) if (key.startsWith(`${name}\n`)) this.rosterMembers.delete(key);
    return roster(await this.run(this.groupShard(name), 'rosterDelete', [this.keys.roster(name)], [this.keys.base]));
  }

  /** One PUBSUB NUMSUB on the instance's wake topic: every live instance is subscribed to its own. */
  protected async storeInstanceAlive(layerId: string): Promise<boolean> {
    return (await this.transport.subscriberCount(0, this.keys.wakeTopic(layerId))) > 0;
  }

  protected async storeFlush(): Promise<void> {
    await this.transport.scanDelete(this.keys.everything());
    this.memberships.clear();
    this.rosterMembers.clear();
    for (const inbox of this.inboxes.values()) {
      // Our claims were deleted with everything else: claim again for whoever is waiting.
      inbox.items = NO_ITEMS;
      inbox.remote = false;
      inbox.owned = false;
      inbox.parked = false;
      inbox.waitingForHolder = false;
      this.pump(inbox);
    }
  }

  protected async storeClose(): Promise<void> {
    this.closing = true;
    const closed = new LayerClosed();
    for (const inbox of this.inboxes.values()) {
      clearTimeout(inbox.timer);
      inbox.timer = undefined;
      inbox.due = undefined;
      for (const w of takeAllWaiters(inbox)) w.fail(closed);
    }
    await this.settleInflight();
    for (const inbox of this.inboxes.values()) {
      // A claim whose fence never came: keep what it drained.
      for (const item of inbox.fence?.drained ?? []) addItem(inbox, item);
      inbox.fence = undefined;
    }
    // Hand back the normal channels we hold, with what we buffered for them, so another
    // instance can take over at once; process-specific channels end with this instance.
    await Promise.all([...this.inboxes.values()].filter((i) => !i.specific && (i.owned || i.items.length > 0)).map((i) => this.finalRelease(i)));
    this.inboxes.clear();
    this.fences.clear();
    this.clean.clear();
    this.memberships.clear();
    this.rosterMembers.clear();
    await this.transport.close();
  }

  // ---- receiving -----------------------------------------------------------------------------

  protected storeReceive(channel: string, sink: MessageSink): void {
    const inbox = this.inboxFor(channel);
    addWaiter(inbox, sink);
    this.pump(inbox);
  }

  protected storeCancel(channel: string, sink: MessageSink): boolean {
    const inbox = this.inboxes.get(channel);
    if (!inbox || !removeWaiter(inbox, sink)) return false;
    if (inbox.waiters === undefined) inbox.releaseNow = true;
    this.pump(inbox);
    return true;
  }

  private inboxFor(channel: string): Inbox {
    let inbox = this.inboxes.get(channel);
    if (inbox) return inbox;
    const specific = layerIdOf(channel) === this.id;
    inbox = new Inbox(channel, specific, this.shardOf(channel), this.capacityOf(channel), specific ? !this.clean.has(channel) : true);
    this.clean.delete(channel);
    this.inboxes.set(channel, inbox);
    return inbox;
  }

  /** Moves an inbox on: claim, drain, deliver, release or forget, whichever is due. */
  private pump(inbox: Inbox): void {
    if (this.closing || inbox.busy || this.inboxes.get(inbox.channel) !== inbox) return;
    if (inbox.waiters !== undefined) {
      this.clearTimer(inbox);
      inbox.releaseNow = false;
      if (!inbox.specific && (!inbox.owned || inbox.parked)) {
        if (!inbox.waitingForHolder && this.transport.isSubscribed(inbox.shard)) this.claim(inbox);
        return;
      }
      if (inbox.remote) {
        if (this.transport.isSubscribed(inbox.shard)) this.claim(inbox);
        return;
      }
      this.deliver(inbox);
      if (inbox.waiters !== undefined) return;
    }
    this.idle(inbox);
  }

  private deliver(inbox: Inbox): void {
    const now = Date.now();
    while (inbox.waiters !== undefined && inbox.items.length > 0) {
      const item = inbox.items.shift()!;
      if (item.expiresAt <= now) continue;
      const waiter = takeWaiter(inbox)!;
      let bytes: Buffer;
      try {
        bytes = this.open(item.entry);
      } catch (err) {
        waiter.fail(err);
        continue;
      }
      this.deliverTo(waiter, bytes);
    }
    if (inbox.items.length === 0) inbox.items = NO_ITEMS; // an emptied list keeps its grown storage
  }

  /** No receive is waiting: release, spill, or forget the inbox, now or after a linger. */
  private idle(inbox: Inbox): void {
    const now = Date.now();
    if (inbox.items.length > 0) inbox.items = inbox.items.filter((item) => item.expiresAt > now);
    if (inbox.specific) {
      if (inbox.items.length > inbox.capacity) return this.release(inbox, true);
      if (inbox.items.length === 0) {
        return this.later(inbox, INBOX_LINGER_MS, () => {
          if (inbox.items.length === 0 && inbox.waiters === undefined) this.forget(inbox);
          else this.pump(inbox);
        });
      }
      const next = Math.min(...inbox.items.map((i) => i.expiresAt)) - now;
      return this.later(inbox, Math.max(next, 1), () => this.pump(inbox));
    }
    if (inbox.parked) return this.later(inbox, PARK_TIMEOUT_MS, () => this.release(inbox, true));
    if (inbox.owned) {
      if (inbox.releaseNow || inbox.items.length >= inbox.capacity) return this.release(inbox, false);
      return this.later(inbox, HOLD_LINGER_MS, () => {
        inbox.releaseNow = true;
        this.pump(inbox);
      });
    }
    // Not ours: give back anything that reached us anyway, then forget the channel.
    if (inbox.items.length > 0) return this.release(inbox, true);
    this.forget(inbox);
  }

  private forget(inbox: Inbox): void {
    if (inbox.busy || this.inboxes.get(inbox.channel) !== inbox) return;
    this.clearTimer(inbox);
    clearTimeout(inbox.timer);
    inbox.timer = undefined;
    this.inboxes.delete(inbox.channel);
    if (inbox.specific && !inbox.remote) this.markClean(inbox.channel);
  }

  // ---- the scripts an inbox runs ---------------------------------------------------------------

  /** Claims a normal channel, or drains a process-specific one (and our normal one, when Redis stored for it). */
  private claim(inbox: Inbox): void {
    inbox.busy = true;
    // What we sent before this claim runs in Redis before it (one ordered connection per host):
    // by the time the claim is done it was drained, arrived before the fence, or went elsewhere.
    inbox.ownInFlight = false;
    inbox.claimable = false;
    inbox.renotified = false;
    inbox.stale = false;
    // Count what arrives from here on. A fence restarts the count (what arrives before it was
    // published before the claim); a fresh channel has no fence, and nothing published to us for
    // it before the claim (see the claim script).
    inbox.counting = true;
    inbox.arrivals = 0;
    const token = randomName(9);
    inbox.fence = { token, seen: false, drained: undefined };
    this.fences.set(token, inbox);
    const epoch = this.epochs[inbox.shard];
    const now = Date.now();
    const call = inbox.specific
      ? this.inboxOp(inbox.shard, 'drain', [this.keys.queue(inbox.channel)], [this.keys.base, this.id, token, now])
      : this.inboxOp(inbox.shard, 'claim', [this.keys.state(inbox.channel), this.keys.queue(inbox.channel)],
        [this.keys.base, this.id, token, now, this.transport.clustered ? '' : '1']);
    call.then(
      (reply) => {
        const [ok, members, fresh] = asArray(reply);
        if (Number(ok) !== 1) {
          // Another live instance holds it: wait for its release notice.
          this.fences.delete(token);
          inbox.fence = undefined;
          inbox.busy = false;
          inbox.counting = false;
          // We may have held it until a send let us go (L): it is not ours now.
          inbox.owned = false;
          inbox.parked = false;
          if (!inbox.claimable) inbox.waitingForHolder = true;
          return this.pump(inbox);
        }
        if (!inbox.specific) {
          inbox.owned = true;
          inbox.parked = false;
          inbox.waitingForHolder = false;
        }
        if (epoch !== this.epochs[inbox.shard]) inbox.stale = true;
        inbox.fence!.drained = asArray(members).map((m) => parseMember(asBuffer(m)));
        if (Number(fresh) === 1) inbox.fence!.seen = true; // no fence was published
        this.finishClaim(inbox);
      },
      () => {
        this.fences.delete(token);
        inbox.fence = undefined;
        inbox.busy = false;
        inbox.counting = false;
        this.retrySoon(inbox);
      },
    );
  }

  /** Merges a drained batch once both the script's reply and its fence are in. */
  private finishClaim(inbox: Inbox): void {
    const fence = inbox.fence;
    if (!fence || !fence.seen || fence.drained === undefined) return;
    this.fences.delete(fence.token);
    inbox.fence = undefined;
    for (const item of fence.drained) {
      if (this.recent.check(inbox.channel, item.entry.subarray(0, ID_BYTES))) continue;
      addItem(inbox, item);
      this.ownArrived(inbox, item.entry);
    }
    inbox.busy = false;
    if (inbox.stale) {
      // The subscription dropped around the claim: claim again once it is back.
      inbox.stale = false;
      inbox.remote = true;
      inbox.owned = false;
    } else {
      inbox.remote = inbox.renotified;
    }
    inbox.renotified = false;
    this.pump(inbox);
  }

  /**
   * Gives a channel back: puts its buffered messages back in Redis in order and, for a normal
   * channel we hold, lets go of it. `force` skips the in-flight check (we no longer know).
   */
  private release(inbox: Inbox, force: boolean): void {
    this.clearTimer(inbox);
    inbox.busy = true;
    const items = inbox.items.slice();
    const received = force || !inbox.counting ? -1 : inbox.arrivals;
    this.releaseScript(inbox, received, items).then(
      (reply) => {
        inbox.busy = false;
        const [ok, published] = asArray(reply);
        if (Number(ok) !== 1) {
          inbox.parked = true;
          inbox.parkTarget = Number(published);
          if (inbox.arrivals >= inbox.parkTarget) return this.release(inbox, false);
          return this.pump(inbox);
        }
        this.gaveBack(inbox, items);
        inbox.releaseNow = false;
        if (inbox.specific) {
          inbox.remote = true;
        } else {
          inbox.owned = false;
          inbox.parked = false;
          inbox.counting = false;
          inbox.remote = true;
        }
        this.pump(inbox);
      },
      () => {
        inbox.busy = false;
        this.retrySoon(inbox);
      },
    );
  }

  private releaseScript(inbox: Inbox, received: number, items: Item[]): Promise<unknown> {
    return this.inboxOp(inbox.shard, 'release', [this.keys.state(inbox.channel), this.keys.queue(inbox.channel)], [
      this.keys.base, this.id, received, Date.now(), this.stateTtlMs, inbox.channel, ...items.map(memberOf),
    ]);
  }

  /** Drops items that went back to Redis (and their ids from the duplicate check: they come back by a drain). */
  private gaveBack(inbox: Inbox, items: Item[]): void {
    const given = new Set(items);
    inbox.items = inbox.items.filter((i) => !given.has(i));
    for (const item of items) this.recent.forget(inbox.channel, item.entry.subarray(0, ID_BYTES));
  }

  /** At close: release a held channel, waiting briefly for messages still in flight. */
  private async finalRelease(inbox: Inbox): Promise<void> {
    const deadline = Date.now() + PARK_TIMEOUT_MS;
    try {
      for (;;) {
        const force = !inbox.counting || Date.now() >= deadline;
        const items = inbox.items.slice();
        const [ok, published] = asArray(await this.releaseScript(inbox, force ? -1 : inbox.arrivals, items));
        if (Number(ok) === 1) {
          this.gaveBack(inbox, items);
          if (inbox.items.length === 0) return;
          continue;
        }
        const target = Number(published);
        while (inbox.arrivals < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      }
    } catch {
      // Redis is unreachable: what we buffered goes with this instance.
    }
  }

  // ---- wake topic ----------------------------------------------------------------------------

  private onFrame(frame: Buffer): void {
    const kind = frame[0];
    if (kind === 0x4d /* M */) return this.onMessages(frame);
    const rest = frame.toString('latin1', 1);
    if (kind === 0x46 /* F */) {
      const inbox = this.fences.get(rest);
      if (!inbox?.fence || inbox.fence.token !== rest) return;
      inbox.fence.seen = true;
      inbox.counting = true;
      inbox.arrivals = 0;
      return this.finishClaim(inbox);
    }
    const inbox = this.inboxes.get(rest);
    if (kind === 0x4e /* N */ || kind === 0x4c /* L */) {
      // L: a send stored for want of a subscriber of ours on the node that ran it (the cluster
      // bus brought us the notice from there): a failover we have not seen. Look at the cluster
      // again, and claim the channel again (a normal one was let go) to drain what was stored.
      if (kind === 0x4c) this.transport.refreshTopology();
      if (inbox) {
        inbox.remote = true;
        if (inbox.busy) inbox.renotified = true;
        this.pump(inbox);
      } else {
        this.clean.delete(rest);
      }
      return;
    }
    if (kind === 0x43 /* C */ && inbox) {
      if (inbox.busy) inbox.claimable = true;
      inbox.waitingForHolder = false;
      this.pump(inbox);
    }
  }

  /** `M<k>\n(<channel>\n<seq>\n)*k<expiresAt>\n<entry>` */
  private onMessages(frame: Buffer): void {
    let pos = 1;
    const field = (): string => {
      const end = frame.indexOf(10, pos);
      const text = frame.toString('latin1', pos, end);
      pos = end + 1;
      return text;
    };
    const count = Number(field());
    const targets: Array<[string, number]> = [];
    for (let i = 0; i < count; i++) targets.push([field(), Number(field())]);
    const expiresAt = Number(field());
    const entry = frame.subarray(pos);
    const id = entry.subarray(0, ID_BYTES);
    for (const [channel, seq] of targets) {
      if (this.recent.check(channel, id)) continue;
      const inbox = this.inboxFor(channel);
      addItem(inbox, { seq, expiresAt, entry });
      this.ownArrived(inbox, entry);
      if (inbox.counting) inbox.arrivals++;
      if (inbox.busy) continue;
      if (inbox.parked && inbox.arrivals >= inbox.parkTarget) this.release(inbox, false);
      else if (inbox.waiters !== undefined) this.pump(inbox);
      else if (!inbox.due || inbox.items.length > inbox.capacity || !inbox.owned) this.pump(inbox);
    }
  }

  private onLost(shard: number): void {
    this.epochs[shard]!++;
    this.clean.clear();
    for (const inbox of this.inboxes.values()) {
      if (inbox.shard !== shard) continue;
      inbox.remote = true;
      inbox.counting = false;
      if (!inbox.specific) {
        inbox.owned = false;
        inbox.parked = false;
        inbox.waitingForHolder = false;
      }
      if (inbox.fence && !inbox.fence.seen) {
        // Its fence may have been published into the dropped connection.
        inbox.fence.seen = true;
        inbox.stale = true;
        this.finishClaim(inbox);
      }
    }
  }

  private onSubscribed(shard: number): void {
    if (this.closing) return;
    const again = this.everSubscribed[shard];
    this.everSubscribed[shard] = true;
    if (again) {
      this.restoreMemberships(shard);
      this.restoreRosters(shard);
    }
    for (const inbox of [...this.inboxes.values()]) if (inbox.shard === shard) this.pump(inbox);
  }

  /** Re-adds the memberships this instance made (a Redis restart without persistence lost them). */
  private restoreMemberships(shard: number): void {
    const oldest = Date.now() - this.options.groupExpiry * 1000;
    for (const [key, addedAt] of this.memberships) {
      const [group, channel] = key.split('\n') as [string, string];
      if (addedAt <= oldest) {
        this.memberships.delete(key);
        continue;
      }
      if (this.groupShard(group) === shard) this.addMembership(group, channel, addedAt).catch(() => {});
    }
  }

  /**
   * Puts back the roster members this instance joined and has not seen leave, oldest first, where
   * they are missing (a Redis restart without persistence lost them); a member still there is
   * left as it is, so newer data written by another instance wins.
   */
  private restoreRosters(shard: number): void {
    const members = [...this.rosterMembers.entries()].sort((a, b) => a[1].since - b[1].since);
    for (const [key, m] of members) {
      const [name, member] = key.split('\n') as [string, string];
      if (this.groupShard(name) !== shard) continue;
      this.run(shard, 'rosterRestore', [this.keys.roster(name)], [this.keys.base, member, m.data, m.since, Math.max(1, Math.round(m.ttlMs))]).catch(() => {});
    }
  }

  private trackRosterMember(name: string, member: string, data: string, since: number, ttlMs: number): void {
    const key = `${name}\n${member}`;
    this.rosterMembers.delete(key);
    this.rosterMembers.set(key, { data, since, ttlMs });
    if (this.rosterMembers.size > MAX_TRACKED) this.rosterMembers.delete(this.rosterMembers.keys().next().value!);
  }

  // ---- handing over in-process ----------------------------------------------------------------

  /**
   * True when a send to `inbox`'s channel may go straight to its oldest waiting receive, with no
   * Redis command: a normal channel we hold (not parked, nothing stored for it in Redis, no script
   * in flight), a receive waiting and nothing buffered, the subscription up, and no message of
   * ours (sent to it, or to a group, through Redis) still on its way back. Messages from other
   * instances still in flight are concurrent with this one: the layer orders a channel's messages
   * per sender, as Redis would. Not on a Redis Cluster, where one instance's commands to
   * different nodes, and their publishes, are not ordered.
   */
  private canHandOver(inbox: Inbox): boolean {
    return inbox.waiters !== undefined && inbox.items.length === 0
      && (inbox.flags & HAND_OVER_BLOCKERS) === INBOX_FLAGS.owned
      && inbox.fence === undefined
      && this.groupBlock[inbox.shard] === undefined
      && !this.transport.clustered
      && !this.closing
      && this.transport.isSubscribed(inbox.shard);
  }

  /** Hands a message to the oldest receive waiting on `inbox` (`canHandOver` said it may). */
  private handOver(inbox: Inbox, stored: Buffer | Message): void {
    this.deliverTo(takeWaiter(inbox)!, stored);
    this.pump(inbox);
  }

  /** A message reached `inbox` through Redis: if it is ours, what we sent before it is in too. */
  private ownArrived(inbox: Inbox, entry: Buffer): void {
    if (entry.compare(this.idSeed, 0, ID_BYTES - 4, 0, ID_BYTES - 4) !== 0) return;
    const counter = entry.readInt32BE(ID_BYTES - 4);
    if (inbox.ownInFlight && ((counter - inbox.ownLast) | 0) >= 0) inbox.ownInFlight = false;
    const block = this.groupBlock[inbox.shard];
    if (block !== undefined && ((counter - block) | 0) >= 0) this.groupBlock[inbox.shard] = undefined;
  }

  // ---- helpers -------------------------------------------------------------------------------

  private addMembership(group: string, channel: string, addedAt: number): Promise<unknown> {
    const cap = this.capacityOf(channel);
    const ttl = Math.max(1, Math.round(addedAt + this.options.groupExpiry * 1000 - Date.now()));
    return this.run(this.groupShard(group), 'groupAdd', [this.keys.group(group), this.keys.groupCapacities(group)], [
      this.keys.base, addedAt, ttl, channel, cap === this.options.capacity ? '' : cap,
    ]);
  }

  private run(shard: number, script: ScriptName, keys: string[], args: Array<string | Buffer | number>): Promise<unknown> {
    return this.transport.run(shard, script, keys, args);
  }

  /** Runs an inbox's own script (claim, drain, release), which `close` waits for before handing channels back. */
  private inboxOp(shard: number, script: ScriptName, keys: string[], args: Array<string | Buffer | number>): Promise<unknown> {
    const p = this.transport.run(shard, script, keys, args);
    this.inflight.add(p);
    const done = (): void => {
      this.inflight.delete(p);
    };
    p.then(done, done);
    return p;
  }

  private async settleInflight(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.inflight]),
      new Promise((r) => {
        timer = setTimeout(r, CLOSE_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  }


  /**
   * Runs `fn` in `ms` unless something is due already. Every delivered message makes a held
   * channel linger and the next receive cancels that, so this keeps one timer per inbox and moves
   * a deadline instead of making and clearing a timer per message: a timer that fires before the
   * deadline arms itself again for the rest, and one that finds nothing due ends.
   */
  private later(inbox: Inbox, ms: number, fn: () => void): void {
    if (inbox.due) return;
    const at = timerClock() + ms;
    inbox.due = fn;
    inbox.dueAt = at;
    if (inbox.timer && inbox.timerAt <= at) return;
    clearTimeout(inbox.timer);
    this.arm(inbox, at);
  }

  private arm(inbox: Inbox, at: number): void {
    inbox.timerAt = at;
    inbox.timer = setTimeout(() => {
      inbox.timer = undefined;
      const fn = inbox.due;
      if (!fn) return;
      if (timerClock() < inbox.dueAt) return this.arm(inbox, inbox.dueAt);
      inbox.due = undefined;
      if (!this.closing) fn();
    }, Math.max(1, at - timerClock()));
    inbox.timer.unref();
  }

  /** Cancels what was due (the timer, if armed, fires to nothing or serves the next `later`). */
  private clearTimer(inbox: Inbox): void {
    inbox.due = undefined;
  }

  private retrySoon(inbox: Inbox): void {
    this.clearTimer(inbox);
    this.later(inbox, RETRY_MS, () => this.pump(inbox));
  }

  private markClean(channel: string): void {
    if (this.clean.size >= MAX_TRACKED) this.clean.clear();
    this.clean.add(channel);
  }

  private shardOf(channel: string): number {
    return this.transport.clustered ? 0 : hostOf(nonLocalName(channel), this.transport.shards);
  }

  private groupShard(name: string): number {
    return this.transport.clustered ? 0 : hostOf(name, this.transport.shards);
  }

  /** A message id + the payload (sealed when encryption is on). */
  private entry(bytes: Buffer): Buffer {
    const payload = this.cipher ? this.cipher.seal(bytes) : bytes;
    const entry = Buffer.allocUnsafe(ID_BYTES + payload.length); // one buffer, no concat
    this.idSeed.copy(entry, 0);
    entry.writeUInt32BE(this.idCounter, ID_BYTES - 4);
    this.idCounter = (this.idCounter + 1) >>> 0;
    payload.copy(entry, ID_BYTES);
    return entry;
  }

  private open(entry: Buffer): Buffer {
    const payload = entry.subarray(ID_BYTES);
    return this.cipher ? this.cipher.open(payload) : payload;
  }

  private get expiryMs(): number {
    return Math.max(1, Math.round(this.options.expiry * 1000));
  }

  /** How long a channel's state (its sequence counter) outlives its last send when nobody holds it. */
  private get stateTtlMs(): number {
    return this.expiryMs + 60_000;
  }
}
