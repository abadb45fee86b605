/**
 * Real server processes for the multi-worker conformance tests: `node dist/main.js` with an
 * env, its JSON log lines captured, its port read from the "listening" line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { ensureBuilt as buildIfStale } from '../helpers/build.js';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAIN = path.join(ROOT, 'dist', 'main.js');

/** Builds dist/ when it is missing or older than src/. */
export const ensureBuilt = (): void => buildIfStale('signaling conformance');

/** A running `node dist/main.js`. */
export interface MainProcess {
  proc: ChildProcess;
  /** The port from the first "listening" line. */
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  /** Every line written to stdout and stderr so far. */
  lines: string[];
  /** stdout and stderr so far, as one string. */
  output(): string;
  /** Resolves when the process exits. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True once it has exited. */
  readonly hasExited: boolean;
  /** Lines that parse as JSON and have `msg` containing "listening". */
  listening(): Array<Record<string, unknown>>;
}

const running = new Set<ChildProcess>();

/** Kills (SIGKILL) every process this module started that is still running. */
export function killAll(): void {
  for (const p of running) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  running.clear();
}

/** Spawns `node dist/main.js` with `env` (on 127.0.0.1 and a free port unless given) and returns at once. */
export function spawnMain(env: Record<string, string>): Omit<MainProcess, 'port' | 'url'> {
  const proc = spawn(process.execPath, [MAIN], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  const lines: string[] = [];
  let exitedFlag = false;
  for (const stream of [proc.stdout!, proc.stderr!]) {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop() ?? '';
      lines.push(...parts.filter((l) => l.length > 0));
    });
    stream.on('end', () => {
      if (rest) lines.push(rest);
      rest = '';
    });
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      exitedFlag = true;
      running.delete(proc);
      // let the pipes drain before answering
      setTimeout(() => resolve({ code, signal }), 50);
    });
  });
  const listening = () =>
    lines.flatMap((l) => {
      try {
        const o = JSON.parse(l) as Record<string, unknown>;
        return typeof o.msg === 'string' && o.msg.includes('listening') ? [o] : [];
      } catch {
        return [];
      }
    });
  return {
    proc,
    lines,
    output: () => lines.join('\n'),
    exited,
    get hasExited() {
      return exitedFlag;
    },
    listening,
  };
}

/** Starts `node dist/main.js` and waits until `workers` "listening" lines are logged. */
export async function startMain(env: Record<string, string>, workers = 1, timeoutMs = 20_000): Promise<MainProcess> {
  const p = spawnMain(env);
  const end = Date.now() + timeoutMs;
  while (p.listening().length < workers) {
    if (p.hasExited) throw new Error(`node dist/main.js exited before listening:\n${p.output()}`);
    if (Date.now() > end) {
      p.proc.kill('SIGKILL');
      throw new Error(`node dist/main.js did not log ${workers} "listening" line(s) within ${timeoutMs} ms:\n${p.output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const port = Number(p.listening()[0]!.port);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`no port in the "listening" line: ${JSON.stringify(p.listening()[0])}`);
  return Object.assign(p, { port, url: `http://127.0.0.1:${port}` }) as MainProcess;
}

/** Waits for the process to exit, or rejects after `ms`. */
export function exitWithin(p: Pick<MainProcess, 'exited' | 'output'>, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return Promise.race([
    p.exited,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the process did not exit within ${ms} ms:\n${p.output().slice(-3000)}`)), ms)),
  ]);
}
