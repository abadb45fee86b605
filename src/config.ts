/**
 * Configuration: read from the environment once, validated, typed and frozen. A bad value stops
 * start-up with one sentence naming the variable. Secrets never appear in `describeConfig`.
 */

/** The server's configuration. */
export interface Config {
  /** Port to listen on (Render sets PORT; default 10000). 0 picks a free port. */
  port: number;
  /** Address to bind (default 0.0.0.0, which Render requires). */
  host: string;
  /** Redis URL; unset means the InMemory layer. */
  redisUrl: string | undefined;
  /** Redis Cluster seed URLs (comma-separated REDIS_CLUSTER_URLS); overrides REDIS_URL. */
  redisClusterUrls: string[];
  /** Peers per call (default 2: 1-to-1). */
  maxPeers: number;
  /** Seconds a dropped peer keeps its seat (default 30). */
  resumeGrace: number;
  /** Origins allowed to open WebSockets; empty = same origin only. */
  allowedOrigins: string[];
  /** Secret for access tokens; when set, `token` is required on connect. */
  accessTokenSecret: string | undefined;
  /** STUN URLs handed to clients (default Google's public STUN; empty string = none). */
  stunUrls: string[];
  /** TURN URLs handed to clients with REST API credentials. */
  turnUrls: string[];
  /** The TURN server's static-auth-secret (coturn use-auth-secret). */
  turnSecret: string | undefined;
  /** Lifetime of TURN credentials in seconds (default 86400). */
  turnTtl: number;
  /** Bearer token for the admin API (DELETE /api/calls/:id); unset disables it. */
  adminToken: string | undefined;
  /** Largest client frame in bytes (default 65536). */
  maxMessageBytes: number;
  /** Messages per second a peer may send, sustained (default 50; 0 = no limit). */
  rateLimit: number;
  /** Messages a peer may send in a burst above the rate (default 100). */
  rateBurst: number;
  /** WebSocket connections one client address may hold (default 20; 0 = no limit). */
  maxConnectionsPerIp: number;
  /** Seconds between WebSocket pings; a peer that misses one is dropped (default 15). */
  pingInterval: number;
  /** pino log level (default info). */
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** Worker processes (default 1). More than 1 needs REDIS_URL. */
  webConcurrency: number;
  /**
   * How the primary deals connections to WEB_CONCURRENCY workers (WORKER_ROUTING): `call` (the
   * default) sends every connection of one call to the same worker, so its signals never touch
   * Redis; `round-robin` deals them in turn, whatever call they are for.
   */
  workerRouting: 'call' | 'round-robin';
  /**
   * glibc malloc arenas in each WEB_CONCURRENCY worker (MALLOC_ARENA_MAX, default 2; glibc's own
   * default is 8 per core). The primary hands it to the workers it forks; a single process keeps
   * what it was started with.
   */
  workerMallocArenaMax: number;
  /** Public base URL for links (default: taken from each request). */
  publicUrl: string | undefined;
  /** Trust X-Forwarded-For for the client address (default true: Render's proxy sets it). */
  trustProxy: boolean;
}

/** A configuration error: the message is one sentence naming the variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function raw(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const v = raw(env, name);
  if (v === undefined) return fallback;
  if (!/^\d+$/.test(v)) throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${v}".`);
  const n = Number(v);
  if (n < min || n > max) throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got ${n}.`);
  return n;
}

function list(env: Env, name: string): string[] {
  return (env[name] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

function redisUrl(name: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${name} must be a redis:// or rediss:// URL, and it could not be parsed.`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigError(`${name} must start with redis:// or rediss://, got ${url.protocol}//.`);
  }
  return value;
}

function urls(env: Env, name: string, schemes: string[]): string[] {
  const out = list(env, name);
  for (const u of out) {
    if (!schemes.some((s) => u.startsWith(`${s}:`))) {
      throw new ConfigError(`${name} entries must start with ${schemes.map((s) => `${s}:`).join(' or ')}, got "${u}".`);
    }
  }
  return out;
}

function origins(env: Env): string[] {
  return list(env, 'ALLOWED_ORIGINS').map((o) => {
    if (o === '*') return o;
    try {
      const u = new URL(o);
      if (u.origin === 'null') throw new Error();
      return u.origin;
    } catch {
      throw new ConfigError(`ALLOWED_ORIGINS entries must be origins like https://example.com (or *), got "${o}".`);
    }
  });
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const ROUTINGS = ['call', 'round-robin'] as const;

/** Reads and validates the configuration from `env`. */
export function loadConfig(env: Env = process.env): Readonly<Config> {
  const redis = raw(env, 'REDIS_URL');
  const cluster = list(env, 'REDIS_CLUSTER_URLS').map((u) => redisUrl('REDIS_CLUSTER_URLS', u));
  const logLevel = (raw(env, 'LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LEVELS.join(', ')}, got "${logLevel}".`);
  }
  const turnUrls = urls(env, 'TURN_URLS', ['turn', 'turns']);
  const turnSecret = raw(env, 'TURN_SECRET');
  if (turnUrls.length > 0 && !turnSecret) throw new ConfigError('TURN_SECRET must be set when TURN_URLS is set (clients need credentials for TURN).');
  const secret = raw(env, 'ACCESS_TOKEN_SECRET');
  if (secret !== undefined && secret.length < 16) throw new ConfigError('ACCESS_TOKEN_SECRET must be at least 16 characters long.');
  const admin = raw(env, 'ADMIN_TOKEN');
  if (admin !== undefined && admin.length < 16) throw new ConfigError('ADMIN_TOKEN must be at least 16 characters long.');
  const publicUrl = raw(env, 'PUBLIC_URL');
  if (publicUrl !== undefined && !/^https?:\/\/[^/]+/.test(publicUrl)) throw new ConfigError(`PUBLIC_URL must be an http(s) URL, got "${publicUrl}".`);
  const webConcurrency = int(env, 'WEB_CONCURRENCY', 1, 1, 64);
  const workerRouting = (raw(env, 'WORKER_ROUTING') ?? 'call').toLowerCase();
  if (!(ROUTINGS as readonly string[]).includes(workerRouting)) {
    throw new ConfigError(`WORKER_ROUTING must be one of ${ROUTINGS.join(', ')}, got "${workerRouting}".`);
  }
  const config: Config = {
    port: int(env, 'PORT', 10_000, 0, 65_535),
    host: raw(env, 'HOST') ?? '0.0.0.0',
    redisUrl: redis === undefined ? undefined : redisUrl('REDIS_URL', redis),
    redisClusterUrls: cluster,
    maxPeers: int(env, 'MAX_PEERS', 2, 2, 16),
    resumeGrace: int(env, 'RESUME_GRACE', 30, 1, 3600),
    allowedOrigins: origins(env),
    accessTokenSecret: secret,
    stunUrls: env.STUN_URLS === undefined ? ['stun:stun.l.google.com:19302'] : urls(env, 'STUN_URLS', ['stun', 'stuns']),
    turnUrls,
    turnSecret,
    turnTtl: int(env, 'TURN_TTL', 86_400, 60, 7 * 86_400),
    adminToken: admin,
    maxMessageBytes: int(env, 'MAX_MESSAGE_BYTES', 65_536, 1024, 16 * 1024 * 1024),
    rateLimit: int(env, 'RATE_LIMIT', 50, 0, 1_000_000),
    rateBurst: int(env, 'RATE_BURST', 100, 1, 1_000_000),
    maxConnectionsPerIp: int(env, 'MAX_CONNECTIONS_PER_IP', 20, 0, 1_000_000),
    pingInterval: int(env, 'PING_INTERVAL', 15, 1, 3600),
    logLevel: logLevel as Config['logLevel'],
    webConcurrency,
    workerRouting: workerRouting as Config['workerRouting'],
    workerMallocArenaMax: int(env, 'MALLOC_ARENA_MAX', 2, 1, 1024),
    publicUrl: publicUrl?.replace(/\/+$/, ''),
    trustProxy: (raw(env, 'TRUST_PROXY') ?? 'true') !== 'false',
  };
  if (webConcurrency > 1 && !config.redisUrl && config.redisClusterUrls.length === 0) {
    throw new ConfigError(
      `WEB_CONCURRENCY is ${webConcurrency} but REDIS_URL is not set: the InMemory channel layer cannot span processes, so peers on different workers could never reach each other; set REDIS_URL or use WEB_CONCURRENCY=1.`,
    );
  }
  return Object.freeze(config);
}

/** The configuration as safe to log: secrets and passwords replaced. */
export function describeConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    redisUrl: config.redisUrl && redactUrl(config.redisUrl),
    redisClusterUrls: config.redisClusterUrls.map(redactUrl),
    accessTokenSecret: config.accessTokenSecret ? '[set]' : undefined,
    turnSecret: config.turnSecret ? '[set]' : undefined,
    adminToken: config.adminToken ? '[set]' : undefined,
  };
}

/** A URL with its password (and user) replaced by `***`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '[unparseable url]';
  }
}
