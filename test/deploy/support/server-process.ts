/**
 * The call server as a real process, the way Render runs it: a command in a shell, env vars in,
 * JSON log lines out. A process is ready when it logs its "listening" line with the port (PORT=0
 * picks a free one), and it is stopped by signalling its whole process group.
 */
import type { ChildProcess } from 'node:child_process';
import { parseLogLine, spawnProcess, waitForListening, type Exit, type LogLine, type SpawnedProcess } from '../../helpers/server-process.js';

/** A log line as pino writes it, or the raw text when a line is not JSON. */
export type { LogLine };

/** How a process ended. */
export type { Exit };

/** A server process that has logged "listening". */
export interface ServerProcess {
  /** The port from the "listening" line. */
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  child: ChildProcess;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /** The log lines so far, parsed. */
  lines(): LogLine[];
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  /** Sends `signal` (default SIGTERM) to the process group and waits for the exit (SIGKILL after `graceMs`). */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<Exit>;
}

/** Options for `startServerProcess`. */
export interface StartProcessOptions {
  /** Working directory (the checkout whose dist/ runs). */
  cwd: string;
  /**
   * The command, run by `bash -c` as Render runs a startCommand (default `node dist/main.js`).
   * bash replaces itself with a simple command, so signals and the exit status are the server's.
   */
  command?: string;
  /** Variables on top of PATH and HOME; nothing else of the test runner's environment leaks in. */
  env?: Record<string, string>;
  /** How long to wait for "listening" (default 20 s). */
  readyTimeoutMs?: number;
}

/** The minimal environment a process gets: what a shell needs, then `env`. */
export function baseEnv(env: Record<string, string> = {}): Record<string, string> {
  const keep = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'SYSTEMROOT', 'CALLSIG_DEBUG_CLUSTER'];
  const out: Record<string, string> = {};
  for (const k of keep) if (process.env[k] !== undefined) out[k] = process.env[k]!;
  return { ...out, ...env };
}

/** Parses newline-separated JSON log text; non-JSON lines come back as `{ text }`. */
export function parseLines(text: string): LogLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => parseLogLine(l) ?? { text: l });
}

/** `command` in `bash -c`, in a process group of its own so a signal reaches whatever it started. */
function spawnBash(command: string, cwd: string, env: Record<string, string> | undefined): SpawnedProcess {
  return spawnProcess({ command: 'bash', args: ['-c', command], cwd, env: baseEnv(env), group: true });
}

/** Starts a server process and resolves once it has logged "listening" with a port; rejects with its output if it exits first. */
export async function startServerProcess(opts: StartProcessOptions): Promise<ServerProcess> {
  const command = opts.command ?? 'node dist/main.js';
  const p = spawnBash(command, opts.cwd, opts.env);
  const port = await waitForListening(p, { timeoutMs: opts.readyTimeoutMs ?? 20_000, what: `\`${command}\``, describe: () => `Output:\n${p.output()}` });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    child: p.child,
    output: p.output,
    lines: () => parseLines(p.output()),
    exited: p.exited,
    stop: (signal = 'SIGTERM', graceMs = 25_000) => p.stop(signal, graceMs),
  };
}

/** Runs a command to completion in `bash -c`; resolves with its exit code and output. */
export async function runCommand(command: string, cwd: string, env: Record<string, string>, timeoutMs = 300_000): Promise<{ code: number | null; output: string }> {
  const p = spawnBash(command, cwd, env);
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    p.forceKill();
  }, timeoutMs);
  const { code } = await p.exited;
  clearTimeout(timer);
  return { code, output: p.output() + (killed ? `\n[killed after ${timeoutMs} ms]` : '') };
}

/** A TCP port that was free a moment ago. */
export { freePort } from '../../helpers/redis-server.js';

/** Polls `check` every `everyMs` until it returns a value other than undefined, or fails after `timeoutMs` with `what`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** GET /healthz: the status code and the parsed body. */
export async function healthz(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(3000) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}
