/**
 * The Redis transport beneath the Redis layer: connections, scripts, the wake-topic
 * subscription, SCAN+UNLINK. The only file that imports ioredis.
 *
 * Per host: one command connection (scripts run as EVALSHA through `defineCommand`) and one
 * subscriber connection, subscribed to this layer instance's wake topic only. Both reconnect for
 * ever with backoff; the subscriber re-subscribes itself and then reports `subscribed`, so the
 * layer knows when it may claim channels again. On Redis Cluster, one command client (ioredis
 * Cluster, routing each script by its first key's slot) and one subscriber per master: PUBLISH
 * in a cluster counts only the publishing node's subscribers, so we listen on every node.
 */
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
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
  subscribed = false;

  constructor(ep: RedisEndpoint, topic: string, onFrame: (frame: Buffer) => void, onChange: () => void, isClosed: () => boolean) {
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
          onChange();
        },
        () => {
          // The connection dropped mid-subscribe: 'ready' comes again and we retry.
        },
      );
    });
    this.conn.on('close', () => {
      if (!this.subscribed) return;
      this.subscribed = false;
      onChange();
    });
  }
}

type ScriptCall = (...args: Array<string | Buffer | number>) => Promise<unknown>;
type Arg = string | Buffer | number;

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

/** The connections of one layer instance. */
export class RedisTransport {
  /** How many shards keys are spread over (hosts; 1 on a cluster, which shards by slot itself). */
  readonly shards: number;
  readonly clustered: boolean;
  private readonly commands: Array<Redis | Cluster>;
  private readonly subscribers: Subscriber[][];
  private readonly shardSubscribed: boolean[];
  private closed = false;
  /** Cluster only: re-reads the masters and fixes the subscriber set. */
  private resync: (() => void) | undefined;
  /** Cluster only: the masters as ioredis sees them now (host:port). */
  private masters: (() => string[]) | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;

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
      watch(cluster, `cluster ${config.endpoints.map((ep) => ep.label).join(', ')}`, isClosed);
      this.commands = [cluster];
      this.subscribers = [[]];
      cluster.on('ready', () => this.syncClusterSubscribers(cluster, first, config.topic));
      // Masters come and go (failover promotes a replica): keep one subscriber per current master.
      for (const event of ['+node', '-node', 'refresh']) {
        cluster.on(event, () => {
          if (cluster.status === 'ready' || event === '-node') this.syncClusterSubscribers(cluster, first, config.topic);
        });
      }
      // ioredis re-reads the cluster's slots only when a command fails, so after a failover it can
      // keep a dead master in its list (and us a dead subscriber) for good. While a master lacks a
      // live subscriber, and only then (never while healthy and idle), refresh the slots every
      // second and look again, until every master has one.
      this.masters = () => cluster.nodes('master').map((n) => `${n.options.host}:${n.options.port}`);
      this.resync = () => {
        const refresh = (cluster as unknown as { refreshSlotsCache?(cb: () => void): void }).refreshSlotsCache;
        if (refresh) refresh.call(cluster, () => this.syncClusterSubscribers(cluster, first, config.topic));
        else this.syncClusterSubscribers(cluster, first, config.topic);
      };
    } else {
      this.commands = config.endpoints.map((ep) => {
        const conn = new Redis(connectionOptions(ep));
        watch(conn, ep.label, isClosed);
        return conn;
      });
      this.subscribers = config.endpoints.map((ep, shard) => [
        new Subscriber(ep, config.topic, (f) => this.frame(f), () => this.recount(shard), isClosed),
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

  /** True while every command connection is ready and every shard subscribed. */
  isHealthy(): boolean {
    return !this.closed && this.commands.every((c) => c.status === 'ready') && this.shardSubscribed.every(Boolean);
  }

  /** Runs a script on a shard (on a cluster: on the node of the first key's slot). Replies keep strings as Buffers. */
  run(shard: number, script: ScriptName, keys: readonly string[], args: readonly Arg[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('The Redis transport is closed'));
    const conn = this.commands[shard]!;
    const call = (conn as unknown as Record<string, ScriptCall>)[`${script}Buffer`]!;
    return call.call(conn, keys.length, ...keys, ...args);
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
    const all: Array<Redis | Cluster> = [...this.commands, ...this.subscribers.flat().map((s) => s.conn)];
    await Promise.all(all.map((conn) => quit(conn)));
  }

  private frame(frame: Buffer): void {
    if (!this.closed) this.events.message(frame);
  }

  private recount(shard: number): void {
    if (this.closed) return;
    const subs = this.subscribers[shard]!;
    // On a cluster, subscribed means: every current master has a live subscriber (a promoted
    // replica we have not subscribed to yet would take publishes we never see).
    const masters = this.masters?.();
    const now = masters
      ? masters.length > 0 && masters.every((m) => subs.some((s) => s.subscribed && `${s.conn.options.host}:${s.conn.options.port}` === m))
      : subs.length > 0 && subs.every((s) => s.subscribed);
    if (this.resync) {
      if (!now && !this.resyncTimer) {
        this.resyncTimer = setInterval(() => this.resync?.(), 1000);
        this.resyncTimer.unref();
      } else if (now && this.resyncTimer) {
        clearInterval(this.resyncTimer);
        this.resyncTimer = undefined;
      }
    }
    if (now === this.shardSubscribed[shard]) return;
    this.shardSubscribed[shard] = now;
    if (now) this.events.subscribed(shard);
    else this.events.lost(shard);
  }

  /** Keeps one subscriber per cluster master: adds the new ones, drops those that are no longer masters. */
  private syncClusterSubscribers(cluster: Cluster, first: RedisEndpoint, topic: string): void {
    if (this.closed) return;
    const subs = this.subscribers[0]!;
    const masters = new Set(cluster.nodes('master').map((n) => `${n.options.host}:${n.options.port}`));
    if (masters.size === 0) return; // between two views of the cluster: keep what we have
    let added = false;
    for (let i = subs.length - 1; i >= 0; i--) {
      const sub = subs[i]!;
      if (masters.has(`${sub.conn.options.host}:${sub.conn.options.port}`)) continue;
      subs.splice(i, 1);
      sub.conn.disconnect();
      added = true; // the set changed: recount below
    }
    const have = new Set(subs.map((s) => `${s.conn.options.host}:${s.conn.options.port}`));
    for (const node of cluster.nodes('master')) {
      const { host, port } = node.options;
      if (!host || !port || have.has(`${host}:${port}`)) continue;
      const ep: RedisEndpoint = { ...first, host, port, db: 0, label: `${first.label.split('//')[0]}//${host}:${port}` };
      if (first.tls && !isIP(host)) ep.tls = { ...first.tls, servername: host };
      subs.push(new Subscriber(ep, topic, (f) => this.frame(f), () => this.recount(0), () => this.closed));
      added = true;
    }
    this.recount(0);
  }
}
