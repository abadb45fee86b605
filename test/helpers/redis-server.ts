/**
 * Real redis-server processes for tests (never a mock), and command counting.
 *
 *   import { hasRedisServer, startRedisServer, countCommands } from '../helpers/redis-server.js';
 *
 *   describe.skipIf(!hasRedisServer())('...', () => {
 *     let redis: RedisServer;
 *     beforeAll(async () => { redis = await startRedisServer(); });   // { tls: true } for rediss://
 *     afterAll(() => redis.stop());
 *     it('...', async () => {
 *       const counter = await countCommands(redis);
 *       // ... work against redis.url ...
 *       const counts = await counter.stop();     // counts.wire: commands clients sent
 *     });
 *   });
 *
 * - `startRedisServer({ tls?, args? })` spawns `redis-server` on a free 127.0.0.1 port, without
 *   persistence (`--save '' --appendonly no`). With `tls: true` it makes a throwaway CA and
 *   server certificate with the `openssl` CLI and listens only on `--tls-port`; `url` is then
 *   `rediss://127.0.0.1:<port>` and `tlsCa` the CA's PEM (pass it as the layer's `tls.ca`).
 *   `stop()` ends it (SIGTERM; nothing is saved), `start()` starts it again on the same port,
 *   `restart()` does both: a Redis restart that loses every key.
 * - `hasRedisServer()` says whether redis-server is on PATH; when it is not, this module warns
 *   once, loudly, so a skipped suite is never mistaken for a passing one.
 * - `countCommands(server | url)` starts counting (MONITOR) and `stop()` returns what clients
 *   sent: `wire` (commands on the wire, one per EVALSHA however much its script does), `lua`
 *   (commands run inside scripts), and both by command name. `commandStats(server | url)` reads
 *   INFO commandstats (calls per command, script internals included).
 *
 * Servers still running when the test process exits are killed, and their directories removed.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';

/** A running (or stopped) redis-server. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>`, or `rediss://...` with TLS. */
  readonly url: string;
  readonly port: number;
  /** With TLS: the PEM of the CA that signed the server's certificate. */
  readonly tlsCa?: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** Stops the server (SIGTERM, or the signal given) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port (with no data). */
  start(): Promise<void>;
  /** stop() then start(). */
  restart(): Promise<void>;
}

/** Options for `startRedisServer`. */
export interface RedisServerOptions {
  /** Serve TLS only (`rediss://`), with a throwaway CA. Needs the openssl CLI. */
  tls?: boolean;
  /** Extra redis-server arguments, e.g. ['--maxmemory', '10mb']. */
  args?: string[];
}

function onPath(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let available: boolean | undefined;
let warned = false;

/** True when redis-server is on PATH. When it is not, warns (once) that Redis suites are skipped. */
export function hasRedisServer(): boolean {
  available ??= onPath('redis-server');
  if (!available && !warned) {
    warned = true;
    console.warn('\n*** SKIPPING Redis test suites: redis-server is not on PATH (apt-get install redis-server). ***\n');
  }
  return available;
}

/** True when the openssl CLI is on PATH (needed for TLS servers). */
export function hasOpenssl(): boolean {
  return onPath('openssl');
}

const running = new Set<ChildProcess>();
const directories = new Set<string>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
  for (const dir of directories) rmSync(dir, { recursive: true, force: true });
});

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Makes a CA and a server certificate for 127.0.0.1/localhost in `dir`. */
function makeCertificates(dir: string): { ca: string; cert: string; key: string } {
  const file = (name: string): string => path.join(dir, name);
  const openssl = (...args: string[]): void => {
    execFileSync('openssl', args, { stdio: 'pipe' });
  };
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=callsig test CA',
    '-keyout', file('ca.key'), '-out', file('ca.crt'));
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', file('server.key'), '-out', file('server.csr'));
  writeFileSync(file('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', file('server.csr'), '-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-days', '2', '-extfile', file('ext.cnf'), '-out', file('server.crt'));
  return { ca: file('ca.crt'), cert: file('server.crt'), key: file('server.key') };
}

/** Starts a redis-server on a free loopback port; see the module comment. */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  if (!hasRedisServer()) throw new Error('redis-server is not on PATH');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'callsig-redis-'));
  directories.add(dir);
  let port = await freePort();
  const certs = options.tls ? makeCertificates(dir) : undefined;
  const argsFor = (port: number): string[] => [
    '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no',
    ...(certs
      ? ['--port', '0', '--tls-port', String(port), '--tls-cert-file', certs.cert, '--tls-key-file', certs.key,
          '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'no']
      : ['--port', String(port)]),
    ...(options.args ?? []),
  ];
  let args = argsFor(port);
  let child: ChildProcess | undefined;

  const start = async (): Promise<void> => {
    if (child) return;
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    running.add(proc);
    proc.once('exit', () => {
      running.delete(proc);
      if (child === proc) child = undefined;
    });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => fail(new Error(`redis-server did not start within 10 s:\n${out}`)), 10_000);
      const onData = (chunk: Buffer): void => {
        out += chunk.toString();
        if (out.includes('Ready to accept connections')) done();
      };
      const onExit = (code: number | null): void => fail(new Error(`redis-server exited (${code}) while starting:\n${out}`));
      const cleanup = (): void => {
        clearTimeout(timer);
        proc.stdout!.off('data', onData);
        proc.off('exit', onExit);
        proc.stdout!.resume();
        proc.stderr!.resume();
      };
      const done = (): void => {
        cleanup();
        resolve();
      };
      const fail = (err: Error): void => {
        cleanup();
        proc.kill('SIGKILL');
        reject(err);
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
      });
      proc.once('exit', onExit);
    });
  };

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    const proc = child;
    if (!proc) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    await exited;
  };

  // The port was free a moment ago; another test's process (or a client's outgoing connection)
  // may take it first. Then the first start only, never a restart, moves to a fresh port.
  for (let attempt = 1; ; attempt++) {
    try {
      await start();
      break;
    } catch (err) {
      if (attempt === 3 || !/Address already in use/i.test((err as Error).message)) throw err;
      port = await freePort();
      args = argsFor(port);
    }
  }
  return {
    url: `${certs ? 'rediss' : 'redis'}://127.0.0.1:${port}`,
    port,
    tlsCa: certs ? readFileSync(certs.ca, 'utf8') : undefined,
    get running() {
      return child !== undefined;
    },
    stop,
    start,
    async restart() {
      await stop();
      await start();
    },
  };
}

/** An ioredis client for a server (trusting its CA when it has one). For tests only. */
export function connect(server: RedisServer | string): Redis {
  const url = typeof server === 'string' ? server : server.url;
  const ca = typeof server === 'string' ? undefined : server.tlsCa;
  return new Redis(url, { ...(ca ? { tls: { ca } } : {}), maxRetriesPerRequest: 2, enableReadyCheck: false, disableClientInfo: true });
}

/** INFO commandstats: calls per command (script internals included), e.g. { evalsha: 3, publish: 3 }. */
export async function commandStats(server: RedisServer | string): Promise<Record<string, number>> {
  const client = connect(server);
  try {
    const info = await client.info('commandstats');
    const out: Record<string, number> = {};
    for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
    return out;
  } finally {
    client.disconnect();
  }
}

/** What `countCommands` counted. */
export interface CommandCounts {
  /** Commands clients sent (a script call counts once). */
  wire: number;
  /** Commands scripts ran inside Redis. */
  lua: number;
  /** Wire commands by name (lower case). */
  wireByCommand: Record<string, number>;
  /** Script-internal commands by name. */
  luaByCommand: Record<string, number>;
}

/** A running count; `stop()` returns the counts once every command sent before it is in. */
export interface CommandCounter {
  stop(): Promise<CommandCounts>;
  /** The counts so far (without waiting). */
  peek(): CommandCounts;
}

/** Starts counting the commands a server receives (with MONITOR); see CommandCounts. */
export async function countCommands(server: RedisServer | string): Promise<CommandCounter> {
  const client = connect(server);
  const monitor = await client.monitor();
  const marker = `callsig-count-marker-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const counts: CommandCounts = { wire: 0, lua: 0, wireByCommand: {}, luaByCommand: {} };
  let sawMarker: (() => void) | undefined;
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    const name = String(args[0] ?? '').toLowerCase();
    if (name === 'echo' && args[1] === marker) {
      sawMarker?.();
      return;
    }
    if (source === 'lua') {
      counts.lua++;
      counts.luaByCommand[name] = (counts.luaByCommand[name] ?? 0) + 1;
    } else {
      counts.wire++;
      counts.wireByCommand[name] = (counts.wireByCommand[name] ?? 0) + 1;
    }
  });
  client.disconnect();
  const snapshot = (): CommandCounts => structuredClone(counts);
  return {
    peek: snapshot,
    async stop() {
      // A marker sent after everything else: once MONITOR shows it, all earlier commands are counted.
      const seen = new Promise<void>((resolve) => {
        sawMarker = resolve;
      });
      const probe = connect(server);
      try {
        await probe.echo(marker);
        await Promise.race([seen, new Promise((_, reject) => setTimeout(() => reject(new Error('MONITOR never showed the marker')), 5000))]);
      } finally {
        probe.disconnect();
        monitor.disconnect();
      }
      return snapshot();
    },
  };
}
