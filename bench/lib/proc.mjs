// Reading a server's CPU time and memory from /proc, summed over its process tree (the cluster
// primary and its workers count together).
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** A /proc `stat` file (of a process, or of one thread under /proc/<pid>/task), or null once it is gone. */
function readStat(path) {
  try {
    const s = readFileSync(path, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' '); // fields from #3 (state) on
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), userTicks: Number(f[11]) }; // utime + stime
  } catch {
    return null;
  }
}

function stat(pid) {
  return readStat(`/proc/${pid}/stat`);
}

/** `pid` and all its live descendants. */
export function tree(pid) {
  const children = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = stat(name);
    if (!s) continue;
    if (!children.has(s.ppid)) children.set(s.ppid, []);
    children.get(s.ppid).push(Number(name));
  }
  const out = [];
  const walk = (p) => { out.push(p); for (const c of children.get(p) ?? []) walk(c); };
  walk(pid);
  return out;
}

/** CPU seconds (user + system) used so far by the tree of `pid`. */
export function cpuSeconds(pid) {
  return cpuSplit(pid).total;
}

/** CPU seconds used so far by the tree of `pid`: in all, and in user space (the rest is the kernel's, for the process). */
export function cpuSplit(pid) {
  let ticks = 0;
  let user = 0;
  for (const p of tree(pid)) {
    const s = stat(p);
    ticks += s?.ticks ?? 0;
    user += s?.userTicks ?? 0;
  }
  return { total: ticks / TICKS_PER_S, user: user / TICKS_PER_S };
}

/**
 * Every thread of `pids`, keyed pid/tid: {pid, main (the process's own first thread), user and
 * sys (clock ticks), vol and invol (voluntary and involuntary context switches)}.
 */
export function threadStats(pids) {
  const out = new Map();
  for (const pid of pids) {
    let tids = [];
    try { tids = readdirSync(`/proc/${pid}/task`); } catch { continue; }
    for (const tid of tids) {
      const s = readStat(`/proc/${pid}/task/${tid}/stat`);
      let status = '';
      try { status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'); } catch { /* thread gone */ }
      const vol = /\nvoluntary_ctxt_switches:\s+(\d+)/.exec(status);
      const invol = /\nnonvoluntary_ctxt_switches:\s+(\d+)/.exec(status);
      if (!s || !vol || !invol) continue;
      out.set(`${pid}/${tid}`, {
        pid, main: String(pid) === tid, user: s.userTicks, sys: s.ticks - s.userTicks, vol: Number(vol[1]), invol: Number(invol[1]),
      });
    }
  }
  return out;
}

/** VmRSS in KiB of one process. */
export function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** VmRSS in KiB summed over the tree of `pid`. */
export function treeRssKiB(pid) {
  return tree(pid).reduce((sum, p) => sum + rssKiB(p), 0);
}

/** A meter of the tree's CPU over an interval: call the result to get % of one core. */
export function cpuMeter(pid) {
  const c0 = cpuSeconds(pid);
  const t0 = process.hrtime.bigint();
  return () => {
    const cpu = cpuSeconds(pid) - c0;
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    return { cpuS: Math.round(cpu * 100) / 100, wallS: Math.round(wall * 100) / 100, cpuPct: Math.round((cpu / wall) * 1000) / 10 };
  };
}

/** The soft and hard open-file limits of this process. */
export function openFileLimits() {
  const m = /Max open files\s+(\S+)\s+(\S+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
  const n = (v) => (v === 'unlimited' ? Infinity : Number(v));
  return m ? { soft: n(m[1]), hard: n(m[2]) } : { soft: Infinity, hard: Infinity };
}

/** CPU model, core count and kernel for the report. */
export function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  return { model, TICKS_PER_S };
}

/**
 * Busy CPU seconds of the whole machine (all cores), from /proc/stat: `tasks` (user, nice,
 * system, steal) and `irq` (irq + softirq: mostly loopback TCP, the bench's own traffic, which
 * the kernel accounts to no process).
 */
export function machineBusySeconds() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already inside user)
  return { tasks: (f[0] + f[1] + f[2] + f[7]) / TICKS_PER_S, irq: (f[5] + f[6]) / TICKS_PER_S };
}

/**
 * A meter of CPU over an interval, as % of one core: the server tree, Redis, the load
 * generator, interrupts (mostly the bench's loopback traffic), and every other process on the
 * machine ("other": the reason a figure may be off).
 */
export function phaseMeter({ server, redis, loadgen }) {
  const t0 = process.hrtime.bigint();
  const snap = () => {
    const s = cpuSplit(server);
    const u = process.cpuUsage();
    const m = machineBusySeconds();
    return {
      server: s.total, serverUser: s.user, redis: redis ? cpuSeconds(redis) : 0, loadgen: loadgen ? cpuSeconds(loadgen) : 0,
      self: (u.user + u.system) / 1e6, machine: m.tasks, irq: m.irq,
    };
  };
  const a = snap();
  return () => {
    const b = snap();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const pct = (s) => Math.round((s / wall) * 1000) / 10;
    const d = (k) => b[k] - a[k];
    return {
      wallS: Math.round(wall * 100) / 100,
      serverCpuS: Math.round(d('server') * 100) / 100,
      serverUserCpuS: Math.round(d('serverUser') * 100) / 100,
      serverCpuPct: pct(d('server')),
      ...(redis ? { redisCpuPct: pct(d('redis')) } : {}),
      loadgenCpuPct: pct(d('loadgen')),
      irqCpuPct: pct(d('irq')),
      otherCpuPct: pct(Math.max(0, d('machine') - d('server') - d('redis') - d('loadgen') - d('self'))),
    };
  };
}
