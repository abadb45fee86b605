/**
 * Real server processes for the multi-worker conformance tests: `node dist/main.js` with an
 * env, its JSON log lines captured, its port read from the "listening" line.
 */
import type { ChildProcess } from 'node:child_process';
import { ensureBuilt as buildIfStale, MAIN, ROOT } from '../helpers/build.js';
import { listeningLines, spawnProcess, waitForListening, type Exit, type SpawnedProcess } from '../helpers/server-process.js';

/** The repository root. */
export { ROOT };

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
  exited: Promise<Exit>;
  /** True once it has exited. */
  readonly hasExited: boolean;
  /** Lines that parse as JSON and have `msg` containing "listening". */
  listening(): Array<Record<string, unknown>>;
}

const running = new Set<SpawnedProcess>();

/** Kills (SIGKILL) every process this module started that is still running. */
export function killAll(): void {
  for (const p of running) p.forceKill();
  running.clear();
}

function spawn(env: Record<string, string>): SpawnedProcess {
  const p = spawnProcess({
    command: process.execPath,
    args: [MAIN],
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
  });
  running.add(p);
  void p.exited.then(() => running.delete(p));
  return p;
}

function view(p: SpawnedProcess): Omit<MainProcess, 'port' | 'url'> {
  return {
    proc: p.child,
    lines: p.lines,
    output: p.output,
    // let the pipes drain before answering
    exited: p.exited.then((exit) => new Promise<Exit>((resolve) => setTimeout(() => resolve(exit), 50))),
    get hasExited() {
      return !p.alive;
    },
    listening: () => listeningLines(p.lines),
  };
}

/** Spawns `node dist/main.js` with `env` (on 127.0.0.1 and a free port unless given) and returns at once. */
export function spawnMain(env: Record<string, string>): Omit<MainProcess, 'port' | 'url'> {
  return view(spawn(env));
}

/** Starts `node dist/main.js` and waits until `workers` "listening" lines are logged. */
export async function startMain(env: Record<string, string>, workers = 1, timeoutMs = 20_000): Promise<MainProcess> {
  const p = spawn(env);
  const port = await waitForListening(p, { workers, timeoutMs, what: 'node dist/main.js' });
  return Object.assign(view(p), { port, url: `http://127.0.0.1:${port}` });
}

/** Waits for the process to exit, or rejects after `ms`. */
export function exitWithin(p: Pick<MainProcess, 'exited' | 'output'>, ms: number): Promise<Exit> {
  return Promise.race([
    p.exited,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the process did not exit within ${ms} ms:\n${p.output().slice(-3000)}`)), ms)),
  ]);
}
