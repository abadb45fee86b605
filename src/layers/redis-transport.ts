/**
 * The Redis transport beneath the Redis layer: connections, scripts, the wake-topic
 * subscription, SCAN+UNLINK. The only file that imports ioredis.
 *
 * Per host: one command connection (scripts run as EVALSHA through `defineCommand`) and one
 * subscriber connection, subscribed to this layer instance's wake topic only. Both reconnect for
 * ever with backoff; the subscriber re-subscribes itself and then reports `subscribed`, so the
 * layer knows when it may claim channels again. On Redis Cluster, one command client (ioredis
 * Cluster, routing each script by its first key's slot) and one subscriber per master: PUBLISH
 * in a cluster counts only the publishing node's subscribers (the bus still carries the message
 * to every node), so we listen on every master.
 *
 * Failover on a cluster. The masters are those of ioredis's slot table (CLUSTER SLOTS), and the
 * wake topic counts as subscribed only while every one of them has a live subscriber of ours; a
 * subscribed connection that drops is reported `lost` even if the rest still look complete (what
 * was published into it is gone), and `subscribed` follows once every master is covered again,
 * so the layer claims and drains its channels again. While some master lacks a subscriber, and
 * only then, the slot table is re-read every second (ioredis re-reads it only when a command
 * fails, and an instance that only receives sends none to the failed slots). A failover nobody
 * here has seen (CLUSTER FAILOVER; a replica ioredis did not list) is learned from the layer:
 * a send that found none of our subscribers on its node makes it call `refreshTopology`.
 */
import { isIP, type Socket } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { createHash } from 'node:crypto';
import { Cluster, Command, Redis, type RedisOptions } from 'ioredis';
import { InvalidChannelLayerError } from './errors.js';
import { SCRIPTS, type ScriptName } from './redis-scripts.js';

/** One Redis server to connect to, parsed from a `redis://` or `rediss://` URL. */
export interface RedisEndpoint {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db: number;
  /** TLS options (for `rediss://`); certificates are verified unless these say otherwise. */
  tls?: ConnectionOptions;
  /** The URL without its password, for messages. */
  label: string;
}

/** Parses a Redis URL; the error never repeats the URL (it may hold a password). */
export function parseRedisUrl(url: unknown, what: string, extraTls: Record<string, unknown> = {}): RedisEndpoint {
  const bad = (why: string): never => {
    throw new InvalidChannelLayerError(`Option ${what} ${why}`);
  };
  if (typeof url !== 'string') return bad(`must be a redis:// or rediss:// URL string, got ${typeof url}`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return bad('is not a valid URL (expected redis://[user:password@]host[:port][/db] or rediss://...)');
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') return bad(`must use redis:// or rediss://, not ${u.protocol}//`);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) return bad('has no host');
  const port = u.port ? Number(u.port) : 6379;
  const dbText = u.pathname.replace(/^\//, '');
  if (!/^\d*$/.test(dbText)) return bad('has a database path that is not a number');
  const db = dbText ? Number(dbText) : 0;
  const username = u.username ? decodeURIComponent(u.username) : undefined;
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  const secure = u.protocol === 'rediss:';
  const tls: ConnectionOptions | undefined = secure ? { ...(isIP(host) ? {} : { servername: host }), ...extraTls } : undefined;
  const who = username || password ? `${username ?? ''}${password ? ':***' : ''}@` : '';
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return { host, port, username, password, db, tls, label: `${u.protocol}//${who}${shownHost}:${port}/${db}` };
}

/** What the transport tells the layer. */
export interface TransportEvents {
  /** A frame arrived on this instance's wake topic. */
  message(frame: Buffer): void;
  /** The wake topic is subscribed on a shard (again, after a drop). */
  subscribed(shard: number): void;
  /** The subscription on a shard dropped: frames published meanwhile are lost. */
  lost(shard: number): void;
}

/** How long `close` waits for a connection's QUIT before cutting it. */
const QUIT_TIMEOUT_MS = 1000;
/** While a master lacks our subscriber: how often the cluster's slot table is read again (ms). */
const RESYNC_MS = 1000;
/** The least time between two reads of the slot table asked for by `refreshTopology` (ms). */
const REFRESH_GAP_MS = 250;

function connectionOptions(ep: RedisEndpoint): RedisOptions {
  return {
    host: ep.host,
    port: ep.port,
    username: ep.username,
    password: ep.password,
    db: ep.db,
    tls: ep.tls,
    keepAlive: 10_000,
    connectTimeout: 10_000,
    // No CLIENT SETINFO on connect: two commands per connection that buy us nothing.
    disableClientInfo: true,
    // Reconnect for ever: 100 ms, doubling, at most 2 s apart.
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times - 1, 5), 2000),
    // A call waits through this many reconnect attempts (about half a minute) before failing.
    maxRetriesPerRequest: 20,
  };
}

/** Logs a connection's trouble once per outage; ioredis messages name host:port, never the password. */
function watch(conn: Redis | Cluster, label: string, isClosed: () => boolean): void {
  let warned = false;
  conn.on('error', (err: Error) => {
    if (warned || isClosed()) return;
    warned = true;
    console.warn(`[callsig layers] Redis ${label}: ${err.message}; reconnecting`);
  });
  conn.on('ready', () => {
    warned = false;
  });
}

/** One subscriber connection, subscribed to one topic, re-subscribing after every reconnect. */
class Subscriber {
  readonly conn: Redis;
  /** host:port, as ioredis names cluster nodes. */
  readonly key: string;
  subscribed = false;

  /** `onChange(dropped)`: the subscription came up (false) or a subscribed connection dropped (true). */
  constructor(ep: RedisEndpoint, topic: string, onFrame: (frame: Buffer) => void, onChange: (dropped: boolean) => void, isClosed: () => boolean) {
    this.key = `${ep.host}:${ep.port}`;
    this.conn = new Redis({
      ...connectionOptions(ep),
      // We subscribe ourselves on 'ready', to know when the subscription is in place.
      autoResubscribe: false,
      // SUBSCRIBE works while Redis loads its data; no INFO needed.
      enableReadyCheck: false,
      maxRetriesPerRequest: null,
    });
    watch(this.conn, `${ep.label} (subscriber)`, isClosed);
    this.conn.on('messageBuffer', (_topic: Buffer, frame: Buffer) => onFrame(frame));
    this.conn.on('ready', () => {
      this.conn.subscribe(topic).then(
        () => {
          if (isClosed() || this.subscribed || this.conn.status !== 'ready') return;
          this.subscribed = true;
          onChange(false);
        },
        () => {
          // The connection dropped mid-subscribe: 'ready' comes again and we retry.
        },
      );
    });
    this.conn.on('close', () => {
      if (!this.subscribed) return;
      this.subscribed = false;
      onChange(true);
    });
  }
}

/**
 * The masters of ioredis's slot table (CLUSTER SLOTS as last read). Not its connection pool: the
 * pool drops a dead master at once (its connection ended), while its slots have no other master
 * until the cluster fails over, and a subscriber set that covers the pool's masters then covers
 * only part of the slots.
 */
function slotTable(cluster: Cluster): { masters: Set<string> } {
  const masters = new Set<string>();
  let last: string[] | undefined;
  for (const keys of cluster.slots) {
    // A range of slots shares one array: look at each once.
    if (!keys || keys === last) continue;
    last = keys;
    if (keys[0]) masters.add(keys[0]);
  }
  return { masters };
}

type ScriptCall = (...args: Array<string | Buffer | number>) => Promise<unknown>;
type Arg = string | Buffer | number;

/** Each script's SHA-1, as EVALSHA names it. */
const SHAS = new Map<string, string>(Object.entries(SCRIPTS).map(([name, lua]) => [name, createHash('sha1').update(lua).digest('hex')]));

/**
 * A script call whose bytes we encode ourselves (`encodeScriptCall`) and ioredis writes as they
 * are: ioredis's own encoding of a script call (its argument checks, a string and a byte count
 * per argument, then a copy into a second buffer) cost more than the rest of a send. As ioredis's
 * own script commands do, it chooses when it is written, per socket: EVAL with the script's text
 * the first time on a connection, EVALSHA after. So a call queued while Redis was down, or resent
 * by ioredis to a restarted Redis that lost its scripts, runs at its turn instead of failing with
 * NOSCRIPT and being sent again behind later calls (which would reorder a channel's messages).
 * Everything else (the reply, the queue in flight, the offline queue, resending after a
 * reconnect) is ioredis's as for any command.
 */
class ScriptCommand extends Command {
  constructor(
    private readonly script: ScriptName,
    private readonly scriptKeys: readonly string[],
    private readonly scriptArgs: readonly Arg[],
    /** Per socket, the scripts written there once in full (shared by the transport's commands). */
    private readonly loaded: WeakMap<object, Set<string>>,
  ) {
    super('evalsha', [], { replyEncoding: null });
  }

  override toWritable(socket: object): Buffer {
    let scripts = this.loaded.get(socket);
    if (!scripts) this.loaded.set(socket, (scripts = new Set()));
    if (scripts.has(this.script)) return encodeScriptCall('EVALSHA', SHAS.get(this.script)!, this.scriptKeys, this.scriptArgs);
    scripts.add(this.script);
    return encodeScriptCall('EVAL', SCRIPTS[this.script], this.scriptKeys, this.scriptArgs);
  }
}

/**
 * RESP for `EVALSHA sha numkeys key... arg...` (or EVAL with the script); strings are written as
 * UTF-8, numbers in decimal. Sized first, then written straight into one buffer: a send runs this
 * once per message, and building the text in strings first cost 2.7 KB of garbage per call.
 */
export function encodeScriptCall(command: 'EVAL' | 'EVALSHA', script: string, keys: readonly string[], args: readonly Arg[]): Buffer {
  const count = 3 + keys.length + args.length;
  const scriptBytes = Buffer.byteLength(script);
  let total = 1 + decimalLength(count) + 2 + bulkSize(command.length) + bulkSize(scriptBytes) + bulkSize(decimalLength(keys.length));
  let i = 0;
  for (const key of keys) total += bulkSize((argLengths[i++] = Buffer.byteLength(key)));
  for (const arg of args) total += bulkSize((argLengths[i++] = byteLengthOf(arg)));
  const out = Buffer.allocUnsafe(total);
  out[0] = 0x2a; // *
  let o = crlf(out, writeDecimal(out, 1, count));
  o = bulkHead(out, o, command.length);
  o = crlf(out, o + out.write(command, o, 'latin1'));
  o = bulkHead(out, o, scriptBytes);
  o = crlf(out, o + out.write(script, o));
  o = bulkHead(out, o, decimalLength(keys.length));
  o = crlf(out, writeDecimal(out, o, keys.length));
  i = 0;
  for (const key of keys) {
    o = bulkHead(out, o, argLengths[i++]!);
    o = crlf(out, o + out.write(key, o));
  }
  for (const arg of args) {
    o = bulkHead(out, o, argLengths[i++]!);
    if (typeof arg === 'string') o += out.write(arg, o);
    else if (typeof arg !== 'number') o += arg.copy(out, o);
    else if (isDecimalInteger(arg)) o = writeDecimal(out, o, arg);
    else o += out.write(String(arg), o, 'latin1');
    o = crlf(out, o);
  }
  return out;
}

/** Each argument's byte length, between encodeScriptCall's two passes (it never re-enters). */
const argLengths: number[] = [];

/** Bytes of a bulk string of `n` bytes: `$<n>\r\n<bytes>\r\n`. */
function bulkSize(n: number): number {
  return 1 + decimalLength(n) + 2 + n + 2;
}

function byteLengthOf(arg: Arg): number {
  if (typeof arg === 'string') return Buffer.byteLength(arg);
  if (typeof arg !== 'number') return arg.length;
  return isDecimalInteger(arg) ? decimalLength(arg) : String(arg).length;
}

/** A number written digit by digit: a safe integer, 0 or more (anything else goes through String). */
function isDecimalInteger(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

function decimalLength(n: number): number {
  let len = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    len++;
  }
  return len;
}

/** Writes `n` (a safe integer, 0 or more) in decimal at `o`; returns the offset after it. */
function writeDecimal(out: Buffer, o: number, n: number): number {
  const end = o + decimalLength(n);
  let p = end;
  do {
    out[--p] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  } while (n > 0);
  return end;
}

/** Writes `$<n>\r\n` at `o`; returns the offset after it. */
function bulkHead(out: Buffer, o: number, n: number): number {
  out[o] = 0x24; // $
  return crlf(out, writeDecimal(out, o + 1, n));
}

function crlf(out: Buffer, o: number): number {
  out[o] = 0x0d;
  out[o + 1] = 0x0a;
  return o + 2;
}

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.includes('NOSCRIPT');
}

async function quit(conn: Redis | Cluster): Promise<void> {
  if (conn.status !== 'ready') {
    conn.disconnect();
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      conn.quit(),
      new Promise((resolve) => {
        timer = setTimeout(resolve, QUIT_TIMEOUT_MS);
      }),
    ]);
  } catch {
    // Closing anyway.
  } finally {
    clearTimeout(timer);
    conn.disconnect();
  }
}

/** Lets a socket `coalesce` corked write what it holds. */
function uncork(stream: Socket): void {
  stream.uncork();
}

/** The connections of one layer instance. */
export class RedisTransport {
  /** How many shards keys are spread over (hosts; 1 on a cluster, which shards by slot itself). */
  readonly shards: number;
  readonly clustered: boolean;
  private readonly commands: Array<Redis | Cluster>;
  private readonly subscribers: Subscriber[][];
  private readonly shardSubscribed: boolean[];
  private closed = false;
  /** Per command connection socket: the scripts written there once in full (`ScriptCommand`). */
  private readonly loaded = new WeakMap<object, Set<string>>();
  /** Cluster only: the command client, whose slot table says which nodes serve which slots. */
  private readonly cluster: Cluster | undefined;
  /** Cluster only: re-reads the slot table (CLUSTER SLOTS) and fixes the subscriber set. */
  private resync: (() => void) | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  /** `refreshTopology`: a re-read waiting for its turn, and when the last one started. */
  private refreshTimer: NodeJS.Timeout | undefined;
  private lastRefresh = 0;

  constructor(
    config: { endpoints: RedisEndpoint[]; cluster: boolean; topic: string },
    private readonly events: TransportEvents,
  ) {
    this.clustered = config.cluster;
    const isClosed = (): boolean => this.closed;
    if (config.cluster) {
      const first = config.endpoints[0]!;
      const cluster = new Cluster(config.endpoints.map((ep) => ({ host: ep.host, port: ep.port })), {
        redisOptions: { ...connectionOptions(first), db: 0 },
        clusterRetryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times - 1, 5), 2000),
        // Ride out a failover (Redis's default cluster-node-timeout is 15 s): retry redirected and
        // refused commands every 300 ms, up to 100 times, instead of failing after about 1.6 s.
        retryDelayOnFailover: 300,
        retryDelayOnClusterDown: 300,
        retryDelayOnTryAgain: 300,
        maxRedirections: 100,
        enableReadyCheck: true,
        scaleReads: 'master',
      });
      this.cluster = cluster;
      watch(cluster, `cluster ${config.endpoints.map((ep) => ep.label).join(', ')}`, isClosed);
      this.commands = [cluster];
      this.subscribers = [[]];
      const sync = (): void => this.syncClusterSubscribers(cluster, first, config.topic);
      cluster.on('ready', sync);
      // The slot table changes (a failover promotes a replica, nodes join): follow it.
      for (const event of ['+node', '-node', 'refresh']) {
        cluster.on(event, () => {
          if (cluster.status === 'ready' || event === '-node') sync();
        });
      }
      // ioredis re-reads the slot table only when a command fails, and an instance that only
      // receives sends none to the slots of its channels: after a failover it would keep the dead
      // master in its table for good. So while some master in the table lacks a live subscriber,
      // and only then (never while healthy and idle), re-read the table every second.
      this.resync = () => cluster.refreshSlotsCache(sync);
    } else {
      this.commands = config.endpoints.map((ep) => {
        const conn = new Redis(connectionOptions(ep));
        watch(conn, ep.label, isClosed);
        return conn;
      });
      this.subscribers = config.endpoints.map((ep, shard) => [
        new Subscriber(ep, config.topic, (f) => this.frame(f), (dropped) => this.recount(shard, dropped), isClosed),
      ]);
    }
    for (const conn of this.commands) {
      for (const [name, lua] of Object.entries(SCRIPTS)) conn.defineCommand(name, { lua });
    }
    this.shards = this.commands.length;
    this.shardSubscribed = this.commands.map(() => false);
  }

  /** True while the wake topic is subscribed on the shard (every master, on a cluster). */
  isSubscribed(shard: number): boolean {
    return this.shardSubscribed[shard] ?? false;
  }

  /**
   * On a cluster: re-reads the slot table now (at most every REFRESH_GAP_MS) and fixes the
   * subscriber set. The layer calls it when a send found none of our subscribers on the node it
   * ran on, which means a failover we have not seen. Elsewhere: nothing to do.
   */
  refreshTopology(): void {
    if (!this.resync || this.closed || this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      this.lastRefresh = Date.now();
      this.resync?.();
    }, Math.max(0, this.lastRefresh + REFRESH_GAP_MS - Date.now()));
    this.refreshTimer.unref();
  }

  /** True while every command connection is ready and every shard subscribed. */
  isHealthy(): boolean {
    return !this.closed && this.commands.every((c) => c.status === 'ready') && this.shardSubscribed.every(Boolean);
  }

  /** Runs a script on a shard (on a cluster: on the node of the first key's slot). Replies keep strings as Buffers. */
  run(shard: number, script: ScriptName, keys: readonly string[], args: readonly Arg[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('The Redis transport is closed'));
    const conn = this.commands[shard]!;
    if (this.clustered) {
      // ioredis routes a cluster's script calls by key slot: its own command, defined per script.
      const call = (conn as unknown as Record<string, ScriptCall>)[`${script}Buffer`]!;
      return call.call(conn, keys.length, ...keys, ...args);
    }
    const redis = conn as Redis;
    this.coalesce(redis);
    const command = new ScriptCommand(script, keys, args, this.loaded);
    redis.sendCommand(command);
    return command.promise.catch((err: unknown) => {
      // Redis lost its scripts while connected (SCRIPT FLUSH): the script did not run. Send it
      // again; written on a socket that has forgotten it, it goes as EVAL.
      if (!isNoScript(err)) throw err;
      const current = (redis as unknown as { stream?: object }).stream;
      if (current) this.loaded.get(current)?.delete(script);
      const again = new ScriptCommand(script, keys, args, this.loaded);
      redis.sendCommand(again);
      return again.promise;
    });
  }

  /**
   * Corks the connection's socket until the end of this tick, so the commands issued meanwhile
   * (the sends of every signal a burst of frames brought) leave in one writev instead of one
   * write each: the syscalls were the largest cost of a relayed signal. Order is kept (one
   * socket, one buffer); ioredis still writes each command as it always does, and a command
   * issued while the connection is down waits in its offline queue as before.
   */
  private coalesce(conn: Redis): void {
    const stream = (conn as unknown as { stream?: Socket }).stream;
    // Corked already (by us, this tick): its uncork is on the way. (Not a Set of corked sockets:
    // adding and deleting an entry every tick makes V8 copy the Set's table again and again.)
    if (!stream || stream.writableCorked > 0 || !stream.writable) return;
    stream.cork();
    process.nextTick(uncork, stream);
  }

  /** How many connections are subscribed to `topic` (on a cluster, on one master: we subscribe on every master). */
  async subscriberCount(shard: number, topic: string): Promise<number> {
    if (this.closed) throw new Error('The Redis transport is closed');
    const conn = this.clustered ? (this.commands[0] as Cluster).nodes('master')[0]! : (this.commands[shard] as Redis);
    const reply = (await conn.call('PUBSUB', 'NUMSUB', topic)) as [string, number];
    return Number(reply[1] ?? 0);
  }

  /** Deletes every key matching `pattern` on every host (SCAN + UNLINK, never KEYS). */
  async scanDelete(pattern: string): Promise<number> {
    let deleted = 0;
    const nodes: Redis[] = this.clustered ? (this.commands[0] as Cluster).nodes('master') : (this.commands as Redis[]);
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        if (keys.length === 0) continue;
        if (this.clustered) {
          // Keys from different slots cannot share one command on a cluster.
          const pipeline = node.pipeline();
          for (const key of keys) pipeline.unlink(key);
          await pipeline.exec();
        } else {
          await node.unlink(...keys);
        }
        deleted += keys.length;
      } while (cursor !== '0');
    }
    return deleted;
  }

  /** Quits every connection (cutting those that do not answer); the process can then exit. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.resyncTimer);
    clearTimeout(this.refreshTimer);
    const all: Array<Redis | Cluster> = [...this.commands, ...this.subscribers.flat().map((s) => s.conn)];
    await Promise.all(all.map((conn) => quit(conn)));
  }

  private frame(frame: Buffer): void {
    if (!this.closed) this.events.message(frame);
  }

  /**
   * Works out whether the wake topic is subscribed on a shard and tells the layer when that
   * changes. `dropped`: a subscribed connection closed. Frames published into it may be lost, so
   * that is a loss even when the rest still cover every master (the layer then claims and drains
   * its channels again once `subscribed` follows).
   */
  private recount(shard: number, dropped: boolean): void {
    if (this.closed) return;
    const subs = this.subscribers[shard]!;
    let now: boolean;
    if (this.cluster) {
      // Subscribed means: every master of ioredis's slot table has a live subscriber (PUBLISH
      // counts the subscribers of the node it runs on, so a master without ours stores instead).
      const { masters } = slotTable(this.cluster);
      now = masters.size > 0 && [...masters].every((m) => subs.some((s) => s.subscribed && s.key === m));
      if (!now && !this.resyncTimer) {
        this.resyncTimer = setInterval(() => this.resync?.(), RESYNC_MS);
        this.resyncTimer.unref();
      } else if (now && this.resyncTimer) {
        clearInterval(this.resyncTimer);
        this.resyncTimer = undefined;
      }
    } else {
      now = subs.length > 0 && subs.every((s) => s.subscribed);
    }
    if (dropped && this.shardSubscribed[shard]) {
      this.shardSubscribed[shard] = false;
      this.events.lost(shard);
    }
    if (now === this.shardSubscribed[shard]) return;
    this.shardSubscribed[shard] = now;
    if (now) this.events.subscribed(shard);
    else this.events.lost(shard);
  }

  /**
   * Keeps one subscriber per master of the slot table. Subscribers of nodes that are no longer
   * masters go once they are down, or once the others cover every master (a stale read of the
   * table must not cost us a live one on a promoted replica).
   */
  private syncClusterSubscribers(cluster: Cluster, first: RedisEndpoint, topic: string): void {
    if (this.closed) return;
    const subs = this.subscribers[0]!;
    const { masters } = slotTable(cluster);
    if (masters.size === 0) return; // no table yet: keep what we have
    const have = new Set(subs.map((s) => s.key));
    for (const key of masters) {
      if (have.has(key)) continue;
      const colon = key.lastIndexOf(':');
      const host = key.slice(0, colon);
      const port = Number(key.slice(colon + 1));
      if (!host || !port) continue;
      const shownHost = host.includes(':') ? `[${host}]` : host;
      const ep: RedisEndpoint = { ...first, host, port, db: 0, label: `${first.label.split('//')[0]}//${shownHost}:${port}` };
      if (first.tls && !isIP(host)) ep.tls = { ...first.tls, servername: host };
      subs.push(new Subscriber(ep, topic, (f) => this.frame(f), (dropped) => this.recount(0, dropped), () => this.closed));
    }
    const covered = [...masters].every((m) => subs.some((s) => s.subscribed && s.key === m));
    for (let i = subs.length - 1; i >= 0; i--) {
      const sub = subs[i]!;
      if (masters.has(sub.key) || (sub.subscribed && !covered)) continue;
      subs.splice(i, 1);
      // A subscribed one reports its drop from its 'close' event: frames in flight to it are lost.
      sub.conn.disconnect();
    }
    this.recount(0, false);
  }
}
