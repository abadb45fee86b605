// Starting a server under test as a child process, finding its port, and stopping it and
// every process it started.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { tree } from './proc.mjs';

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

/** Loopback ports on which the tree of `pid` listens, from /proc/net/tcp{,6}. */
function listeningPorts(pid, except = new Set()) {
  const inodes = new Set();
  for (const p of tree(pid)) {
    try {
      for (const fd of readdirSync(`/proc/${p}/fd`)) {
        const m = /^socket:\[(\d+)\]$/.exec(safeReadlink(`/proc/${p}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      }
    } catch { /* process gone */ }
  }
  const ports = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = readFileSync(file, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] !== '0A' || !inodes.has(f[9])) continue;
      const port = parseInt(f[1].split(':')[1], 16);
      if (!except.has(port)) ports.add(port);
    }
  }
  return [...ports];
}

function safeReadlink(p) {
  try { return readlinkSync(p); } catch { return ''; }
}

/**
 * Spawns `argv` with `env`, resolves {pid, port, stop(), output(), collectGarbage()} once it logs
 * a JSON line with "listening" and "port" (or, failing that, once /proc shows it listening on one
 * port). With `inspect`, node (and each cluster worker, which inherits the flag) runs with its
 * inspector on a loopback port of its own, so `collectGarbage()` can run a full collection in
 * every process of the tree: memory is then read with the heap in the same state on every server.
 */
export function startServer({ argv, env, cwd, label, fileLimit, inspect = false }) {
  if (inspect) argv = [argv[0], '--inspect=127.0.0.1:0', ...argv.slice(1)];
  const [cmd, ...args] = fileLimit
    ? ['/bin/sh', '-c', `ulimit -n ${fileLimit} && exec "$0" "$@"`, ...argv]
    : argv;
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  /** Inspector addresses the tree printed ("Debugger listening on ws://..."), and their ports. */
  const inspectors = [];
  const inspectorPorts = new Set();
  const watchInspector = (l) => {
    const m = /Debugger listening on (ws:\/\/[^\s]+)/.exec(l);
    if (!m) return;
    inspectors.push(m[1]);
    inspectorPorts.add(Number(new URL(m[1]).port));
  };
  let onLine = () => {};
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream.on('data', (d) => {
      const parts = (rest + d).split('\n');
      rest = parts.pop();
      for (const l of parts) { lines.push(l); if (lines.length > 200) lines.shift(); watchInspector(l); onLine(l); }
    });
  }
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.once('error', (err) => lines.push(`spawn error: ${err.message}`));

  const stop = async (signal = 'SIGTERM') => {
    const pids = tree(child.pid);
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const done = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), STOP_TIMEOUT_MS))]);
    for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* already gone */ } }
    return done;
  };

  /** Synchronous last resort for an interrupted run. */
  const kill = () => { for (const p of tree(child.pid)) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } } };

  const ready = new Promise((resolve, reject) => {
    const fail = (why) => { clearInterval(poll); clearTimeout(timer); reject(new Error(`${label}: ${why}\n  ${lines.slice(-15).join('\n  ')}`)); };
    const found = (port) => { clearInterval(poll); clearTimeout(timer); onLine = () => {}; resolve(port); };
    onLine = (l) => {
      if (!/listening/i.test(l)) return;
      try {
        const port = JSON.parse(l).port;
        if (Number.isInteger(port) && port > 0) found(port);
      } catch { /* not JSON */ }
    };
    const t0 = Date.now();
    let probing = false;
    const poll = setInterval(() => {
      if (Date.now() - t0 < 300 || probing) return; // LOG_LEVEL=warn hides an info-level "listening" line
      const ports = listeningPorts(child.pid, inspectorPorts);
      if (ports.length !== 1) return;
      if (!inspect) return found(ports[0]);
      // A worker's inspector can be listening before the line that names it has been read: the
      // one port seen may be that inspector (once it was, and every request got HTTP 400). The
      // inspector answers /json/version with its "Browser"; the server does not.
      probing = true;
      isInspector(ports[0]).then((yes) => {
        probing = false;
        if (yes) inspectorPorts.add(ports[0]);
        else found(ports[0]);
      });
    }, 250);
    const timer = setTimeout(() => fail(`no "listening" line with a port within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    exited.then(({ code, signal }) => fail(`exited (${code ?? signal}) before listening`));
  });

  return ready.then(
    (port) => ({ pid: child.pid, port, stop, kill, output: () => lines.slice(), exited,
      collectGarbage: () => collectGarbage(inspectors, child.pid), uninspected: () => uninspected(inspectors, child.pid) }),
    async (err) => { await stop('SIGKILL'); throw err; },
  );
}

/** How many processes of the tree of `pid` run without an inspector (`urls` are the ones that have one). */
function uninspected(urls, pid) {
  return Math.max(0, tree(pid).length - urls.length);
}

/** Whether `port` is a node inspector's (its /json/version names the "Browser"). */
async function isInspector(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/json/version`, { signal: AbortSignal.timeout(2000) });
    const body = await res.json().catch(() => null);
    return typeof body?.Browser === 'string' && body.Browser.startsWith('node.js');
  } catch {
    return false;
  }
}

/**
 * Runs a full garbage collection in every process of the tree of `pid` (HeapProfiler.collectGarbage),
 * in parallel. Throws if a process has no inspector: a cluster worker's inspector port is the
 * primary's plus its id, and when something else holds that port the worker runs without one.
 * Its heap would go uncollected, and the memory read after it would be wrong without a word.
 */
async function collectGarbage(urls, pid) {
  if (urls.length === 0) throw new Error('collectGarbage: the server was not started with inspect');
  const missing = uninspected(urls, pid);
  if (missing > 0) throw new Error(`collectGarbage: ${missing} of the server's processes have no inspector (its port was taken?)`);
  const { default: WebSocket } = await import('ws');
  await Promise.all(urls.map((url) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`collectGarbage: no answer from ${url}`)); }, 30_000);
    ws.once('error', (err) => { clearTimeout(timer); reject(err); });
    ws.once('open', () => ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' })));
    ws.on('message', (data) => {
      if (JSON.parse(String(data)).id !== 1) return;
      clearTimeout(timer);
      ws.close();
      resolve();
    });
  })));
}
