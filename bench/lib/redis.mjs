// Starting a throwaway redis-server on a free loopback port, and reading its counters with a
// one-shot RESP request (no client library, so the bench's own commands are only INFO).
import { spawn } from 'node:child_process';
import { createConnection, createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A free TCP port on 127.0.0.1 (bind to 0, read, release). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Sends one inline command and resolves with the reply's text. */
export function redisCommand(port, command) {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`redis ${command}: timeout`)); }, 5000);
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf[0] === '$') {
        const nl = buf.indexOf('\r\n');
        const len = Number(buf.slice(1, nl));
        if (len < 0 || Buffer.byteLength(buf) >= nl + 2 + len + 2) {
          clearTimeout(timer);
          sock.end();
          resolve(len < 0 ? '' : buf.slice(nl + 2, nl + 2 + len));
        }
      } else if (buf.endsWith('\r\n')) {
        clearTimeout(timer);
        sock.end();
        resolve(buf.trim());
      }
    });
    sock.write(`${command}\r\n`);
  });
}

/** Calls per command from INFO commandstats, without the bench's own INFO. */
export async function commandStats(port) {
  const text = await redisCommand(port, 'INFO commandstats');
  const out = {};
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) if (m[1] !== 'info') out[m[1]] = Number(m[2]);
  return out;
}

/** The difference of two commandStats snapshots: {total, byCommand}. */
export function statsDiff(before, after) {
  const byCommand = {};
  let total = 0;
  for (const [cmd, n] of Object.entries(after)) {
    const d = n - (before[cmd] ?? 0);
    if (d > 0) { byCommand[cmd] = d; total += d; }
  }
  return { total, byCommand };
}

/** Starts redis-server with no persistence; resolves {port, pid, stop()}. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'bench-redis-'));
  const child = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning',
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.once('error', () => {});
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await redisCommand(port, 'PING')) === '+PONG') break;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start on ${port}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    pid: child.pid,
    url: `redis://127.0.0.1:${port}`,
    kill() { child.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); },
    async stop() {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Watches every command with MONITOR until `stop()`; resolves counts split into the commands
 * clients sent (round trips) and those Lua scripts ran. Costly for Redis: use on a small flow only.
 */
export function monitor(port) {
  const sock = createConnection({ host: '127.0.0.1', port });
  const counts = { client: 0, script: 0, byCommand: {} };
  let rest = '';
  let ok;
  const started = new Promise((resolve, reject) => { ok = resolve; sock.once('error', reject); });
  sock.on('data', (d) => {
    const lines = (rest + d).split('\r\n');
    rest = lines.pop();
    for (const line of lines) {
      if (line === '+OK') { ok(); continue; }
      const m = /^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"/.exec(line);
      if (!m) continue;
      const cmd = m[2].toLowerCase();
      const from = m[1] === 'lua' ? 'script' : 'client';
      counts[from]++;
      const c = (counts.byCommand[cmd] ??= { client: 0, script: 0 });
      c[from]++;
    }
  });
  sock.write('MONITOR\r\n');
  return {
    started,
    async stop() {
      await new Promise((r) => setTimeout(r, 100));
      sock.destroy();
      return counts;
    },
  };
}
