/**
 * The call server as a real process, the way Render runs it: a command in a shell, env vars in,
 * JSON log lines out. A process is ready when it logs its "listening" line with the port (PORT=0
 * picks a free one), and it is stopped by signalling its whole process group.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/** A log line as pino writes it, or the raw text when a line is not JSON. */
export type LogLine = Record<string, unknown> & { msg?: string };

/** How a process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

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

/** Processes started by this module and not yet exited, killed when the test process exits. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) killGroup(c, 'SIGKILL');
});

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
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
    .map((l) => {
      try {
        const v: unknown = JSON.parse(l);
        return v !== null && typeof v === 'object' ? (v as LogLine) : { text: l };
      } catch {
        return { text: l };
      }
    });
}

/** Starts a server process and resolves once it has logged "listening" with a port; rejects with its output if it exits first. */
export function startServerProcess(opts: StartProcessOptions): Promise<ServerProcess> {
  const command = opts.command ?? 'node dist/main.js';
  const child = spawn('bash', ['-c', command], { cwd: opts.cwd, env: baseEnv(opts.env), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<Exit>((resolve) => {
    child.on('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  const timeoutMs = opts.readyTimeoutMs ?? 20_000;

  return new Promise<ServerProcess>((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      const ready = parseLines(out).find((l) => typeof l.msg === 'string' && l.msg.includes('listening') && typeof l.port === 'number');
      if (ready) {
        clearInterval(poll);
        const port = ready.port as number;
        resolve({
          port,
          url: `http://127.0.0.1:${port}`,
          child,
          output: () => out,
          lines: () => parseLines(out),
          exited,
          async stop(signal = 'SIGTERM', graceMs = 25_000) {
            killGroup(child, signal);
            const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
            const exit = await exited;
            clearTimeout(timer);
            return exit;
          },
        });
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(poll);
        killGroup(child, 'SIGKILL');
        reject(new Error(`\`${command}\` did not log "listening" within ${timeoutMs} ms. Output:\n${out}`));
      }
    }, 50);
    void exited.then((exit) => {
      clearInterval(poll);
      reject(new Error(`\`${command}\` exited (${JSON.stringify(exit)}) before logging "listening". Output:\n${out}`));
    });
  });
}

/** Runs a command to completion in `bash -c`; resolves with its exit code and output. */
export function runCommand(command: string, cwd: string, env: Record<string, string>, timeoutMs = 300_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', command], { cwd, env: baseEnv(env), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      output += `\n[killed after ${timeoutMs} ms]`;
      killGroup(child, 'SIGKILL');
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, output });
    });
  });
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
