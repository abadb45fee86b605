/**
 * The one way tests run a real process such as `node dist/main.js`: spawned with an env, what it
 * prints collected as lines, its JSON "listening" lines read for the port, stopped with a signal
 * and SIGKILLed after a grace period, and SIGKILLed anyway when the test process exits so a
 * failed test leaves nothing running. The suites' own helpers are thin wrappers around this.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** A log line as pino writes it. */
export type LogLine = Record<string, unknown> & { msg?: string };

/** How a process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Options for `spawnProcess`. */
export interface SpawnOptions {
  /** The executable and its arguments. */
  command: string;
  args?: string[];
  cwd: string;
  /** The whole environment: nothing of the test runner's leaks in unless it is here. */
  env: Record<string, string>;
  /**
   * Run in a process group of its own and signal the whole group (a `bash -c` wrapper and all
   * it started). Otherwise signals go to the process alone, as a supervisor would send them: a
   * cluster primary passes SIGTERM on to its workers itself, which is what tests check.
   */
  group?: boolean;
  /** Keep only the last `maxLines` lines (default: all). */
  maxLines?: number;
}

/** A spawned process. */
export interface SpawnedProcess {
  child: ChildProcess;
  /** Its non-empty stdout and stderr lines, oldest first (a live array). */
  lines: string[];
  /** The lines as one string. */
  output(): string;
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  /** True until it has exited. */
  readonly alive: boolean;
  /** Calls `f` with each line from now on; returns the unsubscribe. */
  onLine(f: (line: string) => void): () => void;
  /** Sends `signal` to the process, or to its group (`group`); nothing once it has exited. */
  signal(signal: NodeJS.Signals): void;
  /** SIGKILL to its group, or to the process and its children (cluster workers) when it has none. */
  forceKill(): void;
  /** Sends `signal`, then `forceKill()` after `graceMs`; resolves with how it ended. */
  stop(signal: NodeJS.Signals, graceMs: number): Promise<Exit>;
}

/** Processes spawned here and not yet exited: SIGKILLed when the test process exits. */
const live = new Set<SpawnedProcess>();
process.once('exit', () => {
  for (const p of live) p.forceKill();
});

/** Children of `pid` (cluster workers), from /proc. */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

/** Whether `ss` (iproute2) is here: `serverPidOf` needs it. */
export const hasSs = (() => {
  try {
    execFileSync('ss', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** The pid of the process on this machine holding the server end (port `serverPort`) of a client's TCP connection. */
export function serverPidOf(ws: object, serverPort: number): number {
  const local = (ws as { _socket: { localPort: number } })._socket.localPort;
  const out = execFileSync('ss', ['-tnpH', 'state', 'established', `( sport = :${serverPort} and dport = :${local} )`], { encoding: 'utf8' });
  const pid = /pid=(\d+)/.exec(out)?.[1];
  if (!pid) throw new Error(`no server process found for client port ${local}: ${out}`);
  return Number(pid);
}

/** Sends `signal` to `pid` (a group when negative), ignoring a process that is already gone. */
function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone
  }
}

/** Starts a process and returns at once; see `waitForListening` for a server's port. */
export function spawnProcess(opts: SpawnOptions): SpawnedProcess {
  const child = spawn(opts.command, opts.args ?? [], { cwd: opts.cwd, env: opts.env, detached: opts.group === true, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const listeners = new Set<(line: string) => void>();
  const add = (line: string) => {
    if (line.length === 0) return;
    lines.push(line);
    if (opts.maxLines !== undefined && lines.length > opts.maxLines) lines.shift();
    for (const f of listeners) f(line);
  };
  for (const stream of [child.stdout!, child.stderr!]) {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop() ?? '';
      for (const l of parts) add(l);
    });
    stream.on('end', () => {
      add(rest);
      rest = '';
    });
  }
  child.once('error', (err) => add(`spawn error: ${err.message}`));
  const alive = () => child.exitCode === null && child.signalCode === null;
  const exited = new Promise<Exit>((resolve) =>
    child.once('exit', (code, signal) => {
      live.delete(p);
      resolve({ code, signal });
    }),
  );
  const signal = (sig: NodeJS.Signals) => {
    if (child.pid === undefined || !alive()) return;
    kill(opts.group ? -child.pid : child.pid, sig);
  };
  const p: SpawnedProcess = {
    child,
    lines,
    output: () => lines.join('\n'),
    exited,
    get alive() {
      return alive();
    },
    onLine(f) {
      listeners.add(f);
      return () => listeners.delete(f);
    },
    signal,
    forceKill() {
      if (child.pid === undefined || !alive()) return;
      if (opts.group) return kill(-child.pid, 'SIGKILL');
      const kids = childPids(child.pid);
      kill(child.pid, 'SIGKILL');
      for (const k of kids) kill(k, 'SIGKILL');
    },
    async stop(sig, graceMs) {
      signal(sig);
      const timer = setTimeout(() => p.forceKill(), graceMs);
      const exit = await exited;
      clearTimeout(timer);
      return exit;
    },
  };
  if (child.pid !== undefined) live.add(p);
  return p;
}

/** Parses one line: the JSON object, or undefined when it is not one. */
export function parseLogLine(line: string): LogLine | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return v !== null && typeof v === 'object' ? (v as LogLine) : undefined;
  } catch {
    return undefined;
  }
}

/** The JSON lines whose `msg` contains "listening" (one per server, or per cluster worker). */
export function listeningLines(lines: readonly string[]): LogLine[] {
  return lines.flatMap((l) => {
    const o = l.includes('listening') ? parseLogLine(l) : undefined;
    return o && typeof o.msg === 'string' && o.msg.includes('listening') ? [o] : [];
  });
}

/** Options for `waitForListening`. */
export interface ListeningOptions {
  /** How many "listening" lines to wait for (one per cluster worker). Default 1. */
  workers?: number;
  /** Default 20 s. */
  timeoutMs?: number;
  /** Names the process in errors. */
  what: string;
  /** The output shown in errors (default: every line). */
  describe?: () => string;
}

/**
 * Resolves with the port of the first "listening" line once `workers` of them are logged; rejects
 * when the process exits first, or SIGKILLs it and rejects after `timeoutMs`.
 */
export function waitForListening(p: SpawnedProcess, opts: ListeningOptions): Promise<number> {
  const workers = opts.workers ?? 1;
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const describe = opts.describe ?? p.output;
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    let unsubscribe = () => {};
    const timer = setTimeout(() => {
      p.forceKill();
      fail(`did not log ${workers} "listening" line(s) within ${timeoutMs} ms`);
    }, timeoutMs);
    const settle = () => {
      settled = true;
      clearTimeout(timer);
      unsubscribe();
    };
    const fail = (why: string) => {
      if (settled) return;
      settle();
      reject(new Error(`${opts.what} ${why}:\n${describe()}`));
    };
    const check = () => {
      if (settled) return;
      const seen = listeningLines(p.lines);
      if (seen.length < workers) return;
      settle();
      const port = Number(seen[0]!.port);
      if (Number.isInteger(port) && port > 0) resolve(port);
      else reject(new Error(`${opts.what}: no port in the "listening" line: ${JSON.stringify(seen[0])}`));
    };
    unsubscribe = p.onLine((line) => {
      if (line.includes('listening')) check();
    });
    check();
    void p.exited.then((exit) => {
      // a line read just before the exit still counts
      check();
      fail(`exited (${exit.code ?? exit.signal}) before listening`);
    });
  });
}
