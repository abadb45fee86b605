/**
 * Real server processes for the reliability and security suites: `node dist/main.js` with an
 * environment, its port read from the "listening" log line, and every process it started
 * killed at the end of the file even when a test fails half-way.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { distIsStale } from '../../helpers/build.js';
import { childPids, spawnProcess, waitForListening } from '../../helpers/server-process.js';

/** Children of a pid (cluster workers), from /proc. */
export { childPids };

/** The repository root. */
export const ROOT = path.resolve(import.meta.dirname, '..', '..', '..');
/** The built entry point every process suite runs. */
export const MAIN = path.join(ROOT, 'dist', 'main.js');

/** True when `name` is an executable on PATH. */
export function haveBinary(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}


/**
 * Makes sure dist/ is built from the current src/ (runs `tsc -p tsconfig.build.json` when it is
 * missing or older, as `npm run build` would); answers why the process suites cannot run, or
 * undefined when they can.
 */
export function buildProblem(): string | undefined {
  if (!distIsStale()) return undefined;
  process.stderr.write('[reliability] dist/ is missing or older than src/: running tsc -p tsconfig.build.json\n');
  const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, encoding: 'utf8' });
  if (!existsSync(MAIN)) return `building dist/ failed (run \`npm run build\`):\n${r.stdout}${r.stderr}`;
  if (distIsStale()) return `dist/ is still older than src/ after a build (run \`npm run build\`):\n${r.stdout}${r.stderr}`;
  return undefined;
}

/** Waits `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a truthy value; rejects after `timeoutMs` with `what`. */
export async function waitFor<T>(probe: () => T | Promise<T>, what: string, timeoutMs = 10_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${String(lastErr)})` : ''}`);
    }
    await sleep(everyMs);
  }
}

/** A running `node dist/main.js`. */
export interface ServerProcess {
  readonly label: string;
  readonly pid: number;
  readonly port: number;
  /** http://127.0.0.1:port */
  readonly url: string;
  readonly child: ChildProcess;
  /** Resolves with how the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True while the process runs. */
  readonly alive: boolean;
  /** ws://127.0.0.1:port/ws/call/<callId>[?query] */
  wsUrl(callId: string, query?: Record<string, string>): string;
  /** Every line it printed (stdout and stderr), oldest first. */
  output(): string[];
  /** Sends a signal to the process (and, for SIGKILL, its cluster workers). */
  kill(signal?: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<ServerProcess>();

/** VmRSS of one process in bytes (0 when it is gone). */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Options for `spawnServer`. */
export interface SpawnOptions {
  /** Environment on top of a quiet, loopback-only base (PORT=0, HOST=127.0.0.1, LOG_LEVEL=info: the "listening" line is info). */
  env?: Record<string, string>;
  /** Extra node flags (e.g. --inspect=127.0.0.1:0). */
  nodeArgs?: string[];
  /** Shown in errors. */
  label?: string;
  /** How many "listening" lines to wait for (one per cluster worker). Default 1. */
  workers?: number;
}

/**
 * Starts `node dist/main.js` and resolves once it logged "listening" with its port. The port is
 * chosen by the OS (PORT=0) unless `env.PORT` says otherwise.
 */
export async function spawnServer(opts: SpawnOptions = {}): Promise<ServerProcess> {
  const label = opts.label ?? 'server';
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    NODE_ENV: 'production',
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    ...opts.env,
  };
  const p = spawnProcess({ command: process.execPath, args: [...(opts.nodeArgs ?? []), MAIN], cwd: ROOT, env, maxLines: 2000 });
  const port = await waitForListening(p, {
    workers: opts.workers ?? 1,
    what: `${label}:`,
    describe: () => `  ${p.lines.slice(-20).join('\n  ')}`,
  });
  const pid = p.child.pid!;
  const proc: ServerProcess = {
    label,
    pid,
    port,
    url: `http://127.0.0.1:${port}`,
    child: p.child,
    exited: p.exited,
    get alive() {
      return p.alive;
    },
    wsUrl(callId, query) {
      const q = query ? `?${new URLSearchParams(query).toString()}` : '';
      return `ws://127.0.0.1:${port}/ws/call/${callId}${q}`;
    },
    output: () => p.lines.slice(),
    kill(signal = 'SIGTERM') {
      if (signal === 'SIGKILL') p.forceKill();
      else p.signal(signal);
    },
    async stop(graceMs = 5000) {
      if (!p.alive) return;
      // workers the primary leaves behind are killed too
      const kids = childPids(pid);
      await p.stop('SIGTERM', graceMs);
      for (const k of kids) {
        try {
          process.kill(k, 'SIGKILL');
        } catch {
          // gone
        }
      }
      running.delete(proc);
    },
  };
  running.add(proc);
  return proc;
}

/** Stops every server process this file started (for afterAll). */
export async function stopAllServers(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop(3000)));
  running.clear();
}
