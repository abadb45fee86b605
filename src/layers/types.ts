/**
 * The channel layer contract: the Channel Layer Specification of Django Channels, in TypeScript.
 * `src/layers` imports nothing else of ours; consumers and the app depend on this file.
 */

/** A value a message may carry: what the shared msgpackr codec round-trips exactly on every backend. */
export type MessageValue =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | Date
  | Uint8Array
  | MessageValue[]
  | Map<MessageValue, MessageValue>
  | { [key: string]: MessageValue };

/** A channel layer message: a plain object with a string `type` (it picks the consumer's handler). */
export interface Message {
  type: string;
  [key: string]: MessageValue;
}

/** Options for `receive`. */
export interface ReceiveOptions {
  /** Cancels the wait; a cancelled receive takes no message, so the next receive gets it. */
  signal?: AbortSignal;
}

/**
 * Where `receiveInto` hands the message it took. Exactly one of the two is called per receive,
 * unless the receive is cancelled first; neither may throw.
 */
export interface MessageSink {
  /** The next message of the channel (taken off it: at-most-once, as with `receive`). */
  deliver(message: Message): void;
  /** The receive failed (the layer closed, a message could not be decoded); nothing was taken. */
  fail(err: unknown): void;
}

/** One member of a roster, oldest first. */
export interface RosterEntry {
  /** The member's name (for the signaling app, a peer id). */
  member: string;
  /** Opaque data the app stores with the member (replaced as a whole, compared as a whole). */
  data: string;
  /** When the member joined, in ms since the epoch (kept across updates). */
  since: number;
}

/** The answer to `rosterJoin`. */
export interface RosterJoinResult {
  /** False when the roster already held `limit` members and the member was not one of them. */
  joined: boolean;
  /** The roster after the call, oldest first. */
  entries: RosterEntry[];
}

/** Options for `rosterJoin`. */
export interface RosterJoinOptions {
  /** The most members the roster may hold. */
  limit: number;
  /** Seconds the roster lives after its last change (refreshed by every join and update). */
  ttl: number;
}

/** Options for `rosterUpdate` and `rosterLeave`. */
export interface RosterChangeOptions {
  /** Only change the member when its data is exactly this (compare-and-set). */
  ifData?: string;
  /** Seconds the roster lives after this change (rosterUpdate only; default: unchanged). */
  ttl?: number;
}

/**
 * The channel layer. Channels are FIFO queues with at-most-once delivery, each read by one
 * receiver; groups are named sets of channels for broadcast; rosters are small ordered, bounded
 * memberships with data, changed atomically (the extension the signaling app keeps seats in).
 */
export interface ChannelLayer {
  /** The extensions this layer supports: `groups`, `flush`, `rosters` and `liveness`. */
  readonly extensions: readonly string[];
  /** A new, unique, process-specific channel name (`<prefix>.<layer id>!<random>`) to receive on. */
  newChannel(prefix?: string): Promise<string>;
  /** Puts a message on a channel. Throws `ChannelFull`, `MessageTooLarge`, or `TypeError` for a bad name or message. */
  send(channel: string, message: Message): Promise<void>;
  /** Waits for the next message on a channel. */
  receive(channel: string, opts?: ReceiveOptions): Promise<Message>;
  /**
   * `receive` without a promise or an AbortSignal, for a receiver that keeps one pending on each of
   * its channels for as long as it lives (a consumer): the next message of `channel` goes to
   * `sink`, perhaps before this returns (one was waiting). One pending receive per sink at a time.
   * Throws like `receive` rejects for a bad name or a closed layer.
   */
  receiveInto(channel: string, sink: MessageSink): void;
  /**
   * Withdraws `sink`'s pending receive on `channel`, taking nothing: true when it was pending (the
   * sink will not be called for it), false when it was not (it was called already, or never made).
   */
  cancelReceive(channel: string, sink: MessageSink): boolean;
  /** Adds a channel to a group (idempotent; refreshes the membership's age). */
  groupAdd(group: string, channel: string): Promise<void>;
  /** Removes a channel from a group; does nothing when it is not a member. */
  groupDiscard(group: string, channel: string): Promise<void>;
  /** Sends to every member of a group. Never throws `ChannelFull`: full members are skipped. */
  groupSend(group: string, message: Message): Promise<void>;
  /** Adds a member to a roster unless it is full. */
  rosterJoin(roster: string, member: string, data: string, opts: RosterJoinOptions): Promise<RosterJoinResult>;
  /** The roster's members, oldest first (empty when it does not exist). */
  rosterList(roster: string): Promise<RosterEntry[]>;
  /** Replaces a member's data; false when the member is absent or `ifData` does not match. */
  rosterUpdate(roster: string, member: string, data: string, opts?: RosterChangeOptions): Promise<boolean>;
  /** Removes a member; the remaining entries, or null when nothing was removed. */
  rosterLeave(roster: string, member: string, opts?: RosterChangeOptions): Promise<RosterEntry[] | null>;
  /** Deletes a roster; the entries it held. */
  rosterDelete(roster: string): Promise<RosterEntry[]>;
  /**
   * Whether the layer instance that made a process-specific channel (`newChannel()`) is still
   * connected (extension "liveness"). One command on Redis; for rare checks, never for polling.
   */
  channelOwnerAlive(channel: string): Promise<boolean>;
  /** True while the layer can do its work (open; for Redis, connected and subscribed). Sends no command. */
  isHealthy(): boolean;
  /** Empties everything the layer holds under its prefix. */
  flush(): Promise<void>;
  /** Releases every connection and timer; pending receives reject. */
  close(): Promise<void>;
}

/** A pattern for `channelCapacity`: a glob (`*`, `?`, `[...]`, matching the whole name) or a RegExp. */
export type CapacityPattern = string | RegExp;

/** Options every backend shares. Defaults: see `DEFAULT_LAYER_OPTIONS`. */
export interface LayerOptions {
  /** Seconds an undelivered message is kept (default 60). */
  expiry?: number;
  /** Seconds a group membership lives after its latest `groupAdd` (default 86400). */
  groupExpiry?: number;
  /** Messages a channel may hold before `send` throws `ChannelFull` (default 100). */
  capacity?: number;
  /** Per-channel capacities by pattern; the first match wins (default none). */
  channelCapacity?: Map<CapacityPattern, number> | Record<string, number> | Array<[CapacityPattern, number]>;
  /** The largest encoded message in bytes (default 1 MiB). */
  maxMessageSize?: number;
  /** Prefix of every key and name the layer uses in shared storage (default "asgi"). */
  prefix?: string;
}

/** Options of the Redis backend. */
export interface RedisLayerOptions extends LayerOptions {
  /** Redis URLs (`redis://`, `rediss://`); several shard channels and groups by consistent hashing (default `redis://127.0.0.1:6379`). */
  hosts?: string | string[];
  /** Redis Cluster seed URLs: run on a Redis Cluster instead of `hosts` (default none). */
  clusterHosts?: string[];
  /** Keys that encrypt messages at rest (AES-256-GCM); the first encrypts, all decrypt (default none). */
  symmetricEncryptionKeys?: string[];
  /** Extra TLS options for `rediss://` (for example `ca`); certificate checks stay on unless you say otherwise. */
  tls?: Record<string, unknown>;
}
