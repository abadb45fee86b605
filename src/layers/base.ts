/**
 * What every backend shares: option defaults and validation, name and message checks, capacity
 * lookup by pattern, the one codec, and the closed state.
 *
 * Subclass contract: a backend implements only storage, in the `store*` methods below. They are
 * called with names already validated, messages already encoded (so the size limit and the
 * codec's type rules are the same on every backend) and the destination's capacity already looked
 * up. `storeReceive` keeps a pending receive (a `MessageSink`) until it hands it the next
 * unexpired message, through `deliverTo` (which decodes it), or fails it (the layer closed);
 * `storeCancel` withdraws one, taking nothing. Both `receive` (a promise, cancelled by an
 * AbortSignal) and `receiveInto` (a sink the caller keeps) are built on these two.
 */
import { randomBytes } from 'node:crypto';
import { AbortSets } from './abort-sets.js';
import { CapacityTable, layerIdOf, requireValidChannelName, requireValidGroupName } from './names.js';
import { copyMessage, decodeMessage, encodeMessage } from './codec.js';
import { LayerClosed } from './errors.js';
import { resolveLayerOptions, type ResolvedLayerOptions } from './options.js';
import type {
  ChannelLayer, LayerOptions, Message, MessageSink, ReceiveOptions, RosterChangeOptions, RosterEntry,
  RosterJoinOptions, RosterJoinResult,
} from './types.js';

/** What a backend stored, as a message: bytes are decoded; a copy a backend kept is the message. */
const toMessage = (stored: Uint8Array | Message): Message => (stored instanceof Uint8Array ? decodeMessage(stored) : stored);

/** A `receive`'s sink: settles its promise; its signal withdraws it. */
class PromiseSink implements MessageSink {
  /** The pending receives of its AbortSignal, if it has one (`AbortSets`). */
  aborts: Set<PromiseSink> | undefined;

  constructor(
    private readonly layer: ChannelLayer,
    private readonly channel: string,
    private readonly resolve: (message: Message) => void,
    private readonly reject: (err: unknown) => void,
  ) {}

  deliver(message: Message): void {
    this.aborts?.delete(this);
    this.resolve(message);
  }

  fail(err: unknown): void {
    this.aborts?.delete(this);
    this.reject(err);
  }

  /** The signal fired: give up waiting, taking nothing (unless a message came first). */
  onAbort(reason: unknown): void {
    if (this.layer.cancelReceive(this.channel, this)) this.reject(reason);
  }
}

/** A random name part of `bytes` bytes, in URL-safe base64 without padding ("-" and "_" are valid in names). */
export function randomName(bytes = 12): string {
  return randomBytes(bytes).toString('base64url');
}

function requirePositiveInteger(name: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new TypeError(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
  }
}

/**
 * One shared fulfilled promise: what a layer's `send` returns when the message was handed over at
 * once (InMemory). A caller on a hot path may compare by identity and go on without awaiting it,
 * which spares a microtask and the allocations of an await per message.
 */
export const SETTLED: Promise<void> = Promise.resolve();

/** The shared half of every channel layer. */
export abstract class BaseChannelLayer implements ChannelLayer {
  readonly extensions = Object.freeze(['groups', 'flush', 'rosters', 'liveness']);
  /** This layer instance's id: the non-local part of its `newChannel()` names. */
  readonly id = randomName(9);
  protected readonly options: ResolvedLayerOptions;
  protected readonly capacities: CapacityTable;
  protected closed = false;
  /** The pending promise receives of each AbortSignal given to `receive`. */
  private readonly aborts = new AbortSets<PromiseSink>();

  constructor(options: LayerOptions = {}, extraOptionKeys: readonly string[] = []) {
    this.options = resolveLayerOptions(options, extraOptionKeys);
    this.capacities = new CapacityTable(this.options.capacity, this.options.channelCapacity);
  }

  /** True while the layer can do its work (open, and for Redis: connected and subscribed). `/healthz` reports it. */
  isHealthy(): boolean {
    return !this.closed;
  }

  /** The capacity of a channel: the first matching `channelCapacity` pattern, else `capacity`. */
  capacityOf(channel: string): number {
    return this.capacities.capacityOf(channel);
  }

  async newChannel(prefix = 'specific'): Promise<string> {
    requireValidGroupName(prefix);
    this.requireOpen();
    const name = `${prefix}.${this.id}!${randomName()}`;
    requireValidChannelName(name);
    return name;
  }

  async send(channel: string, message: Message): Promise<void> {
    requireValidChannelName(channel);
    const bytes = encodeMessage(message, this.options.maxMessageSize);
    this.requireOpen();
    await this.storeSend(channel, bytes, this.capacities.capacityOf(channel));
  }

  /**
   * For a backend that keeps or hands over a message without the codec: a checked copy of
   * `message` (codec.ts `copyMessage`: the value the codec's round trip gives), once the channel
   * name and the open layer are checked; undefined when the message is not made only of plain
   * values (or is too large), and so must go through `send` and the codec, which accept and
   * refuse exactly what every backend does. Throws like `send` for a bad name or a closed layer.
   */
  protected sendableCopy(channel: string, message: Message): Message | undefined {
    const copy = copyMessage(message, this.options.maxMessageSize);
    if (copy === undefined) return undefined;
    requireValidChannelName(channel);
    this.requireOpen();
    return copy;
  }

  /** Not `async`: a suspended async frame costs more than the promise it returns. */
  receive(channel: string, opts: ReceiveOptions = {}): Promise<Message> {
    try {
      this.requireReceivable(channel);
      const signal = opts.signal;
      signal?.throwIfAborted();
      return new Promise<Message>((resolve, reject) => {
        const sink = new PromiseSink(this, channel, resolve, reject);
        // Registered first: the store may deliver at once, and a settled sink leaves its set.
        if (signal) (sink.aborts = this.aborts.of(signal)).add(sink);
        this.storeReceive(channel, sink);
      });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  receiveInto(channel: string, sink: MessageSink): void {
    this.requireReceivable(channel);
    this.storeReceive(channel, sink);
  }

  cancelReceive(channel: string, sink: MessageSink): boolean {
    return this.storeCancel(channel, sink);
  }

  async groupAdd(group: string, channel: string): Promise<void> {
    requireValidGroupName(group);
    requireValidChannelName(channel);
    this.requireOpen();
    await this.storeGroupAdd(group, channel);
  }

  async groupDiscard(group: string, channel: string): Promise<void> {
    requireValidGroupName(group);
    requireValidChannelName(channel);
    this.requireOpen();
    await this.storeGroupDiscard(group, channel);
  }

  async groupSend(group: string, message: Message): Promise<void> {
    requireValidGroupName(group);
    const bytes = encodeMessage(message, this.options.maxMessageSize);
    this.requireOpen();
    await this.storeGroupSend(group, bytes);
  }

  async rosterJoin(roster: string, member: string, data: string, opts: RosterJoinOptions): Promise<RosterJoinResult> {
    this.requireRosterArgs(roster, member, data);
    requirePositiveInteger('limit', opts.limit);
    if (!(opts.ttl > 0)) throw new TypeError(`ttl must be a positive number, got ${JSON.stringify(opts.ttl)}`);
    this.requireOpen();
    return this.storeRosterJoin(roster, member, data, opts);
  }

  async rosterList(roster: string): Promise<RosterEntry[]> {
    requireValidGroupName(roster);
    this.requireOpen();
    return this.storeRosterList(roster);
  }

  async rosterUpdate(roster: string, member: string, data: string, opts: RosterChangeOptions = {}): Promise<boolean> {
    this.requireRosterArgs(roster, member, data);
    this.requireOpen();
    return this.storeRosterUpdate(roster, member, data, opts);
  }

  async rosterLeave(roster: string, member: string, opts: RosterChangeOptions = {}): Promise<RosterEntry[] | null> {
    this.requireRosterArgs(roster, member, '');
    this.requireOpen();
    return this.storeRosterLeave(roster, member, opts);
  }

  async rosterDelete(roster: string): Promise<RosterEntry[]> {
    requireValidGroupName(roster);
    this.requireOpen();
    return this.storeRosterDelete(roster);
  }

  async channelOwnerAlive(channel: string): Promise<boolean> {
    requireValidChannelName(channel);
    const owner = layerIdOf(channel);
    if (owner === undefined) throw new TypeError(`Channel name ${JSON.stringify(channel)} is not process-specific (it has no "!")`);
    this.requireOpen();
    return owner === this.id || this.storeInstanceAlive(owner);
  }

  async flush(): Promise<void> {
    this.requireOpen();
    await this.storeFlush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.storeClose();
  }

  /** Hands a stored message to a pending receive: decoded, or the decoding error. */
  protected deliverTo(sink: MessageSink, stored: Uint8Array | Message): void {
    let message: Message;
    try {
      message = toMessage(stored);
    } catch (err) {
      sink.fail(err);
      return;
    }
    sink.deliver(message);
  }

  /** Throws unless this layer may receive on `channel` now. */
  private requireReceivable(channel: string): void {
    requireValidChannelName(channel);
    const owner = layerIdOf(channel);
    if (owner !== undefined && owner !== this.id) {
      throw new TypeError(`Channel ${JSON.stringify(channel)} cannot be received on this layer: it is process-specific to layer ${JSON.stringify(owner)}, and only the layer whose newChannel() made it receives on it`);
    }
    this.requireOpen();
  }

  protected requireOpen(): void {
    if (this.closed) throw new LayerClosed();
  }

  private requireRosterArgs(roster: string, member: string, data: string): void {
    requireValidGroupName(roster);
    requireValidGroupName(member);
    if (typeof data !== 'string') throw new TypeError(`Roster data must be a string, got ${typeof data}`);
  }

  protected abstract storeSend(channel: string, bytes: Buffer, capacity: number): Promise<void>;
  /**
   * Keeps `sink` waiting for the next message of `channel`, which it gets through `deliverTo`
   * (encoded bytes, or a copy a backend kept instead: InMemory's codec.ts `copyMessage`); at once
   * when one is there.
   */
  protected abstract storeReceive(channel: string, sink: MessageSink): void;
  /** Withdraws `sink`'s pending receive on `channel`; false when it had none. */
  protected abstract storeCancel(channel: string, sink: MessageSink): boolean;
  protected abstract storeGroupAdd(group: string, channel: string): Promise<void>;
  protected abstract storeGroupDiscard(group: string, channel: string): Promise<void>;
  /** Sends to each member with its own capacity (`this.capacityOf`), skipping full ones. */
  protected abstract storeGroupSend(group: string, bytes: Buffer): Promise<void>;
  protected abstract storeRosterJoin(roster: string, member: string, data: string, opts: RosterJoinOptions): Promise<RosterJoinResult>;
  protected abstract storeRosterList(roster: string): Promise<RosterEntry[]>;
  protected abstract storeRosterUpdate(roster: string, member: string, data: string, opts: RosterChangeOptions): Promise<boolean>;
  protected abstract storeRosterLeave(roster: string, member: string, opts: RosterChangeOptions): Promise<RosterEntry[] | null>;
  protected abstract storeRosterDelete(roster: string): Promise<RosterEntry[]>;
  /** Whether the layer instance with this id (not this one) is connected. */
  protected abstract storeInstanceAlive(layerId: string): Promise<boolean>;
  protected abstract storeFlush(): Promise<void>;
  protected abstract storeClose(): Promise<void>;
}
