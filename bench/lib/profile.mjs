// Summarising a V8 .cpuprofile: where the samples fall, by function (self and inclusive) and
// by package, as % of the non-idle samples.
import { readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

function where(cf, root) {
  let url = cf.url || '';
  if (url.startsWith('file://')) url = url.slice(7);
  if (root && url.startsWith(root)) url = url.slice(root.length + 1);
  return url;
}

/** The package or area a source file belongs to. */
function area(url, name) {
  if (!url) return name.startsWith('(') ? name : '(native/builtin)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 13).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return 'node:internal';
  const m = /^(dist|src|bench)\/([^/]+)/.exec(url);
  if (m) return m[2].endsWith('.js') ? `${m[1]}/${m[2]}` : `${m[1]}/${m[2]}/`;
  return url;
}

/**
 * {totalMs, busyMs, self, inclusive, areas, longTasks} of one profile file; with `windows`
 * ([startUs, endUs] on the monotonic clock), only the samples inside them count.
 */
export function summarize(file, root, windows = []) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  if (windows.length) {
    // Keep the samples inside the windows; a gap becomes an idle sample so stretches stay apart.
    const idle = prof.nodes.find((n) => n.callFrame.functionName === '(idle)')?.id;
    const samples = [];
    const deltas = [];
    let t = prof.startTime;
    let gap = false;
    for (let i = 0; i < prof.samples.length; i++) {
      t += prof.timeDeltas[i] ?? 0;
      const inside = windows.some(([a, b]) => t >= a && t <= b);
      if (inside) {
        if (gap && idle !== undefined) { samples.push(idle); deltas.push(0); }
        samples.push(prof.samples[i]);
        deltas.push(prof.timeDeltas[i] ?? 0);
        gap = false;
      } else gap = true;
    }
    prof.samples = samples;
    prof.timeDeltas = deltas;
    prof.windowed = true;
  }
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (n) => {
    const cf = n.callFrame;
    const url = where(cf, root);
    return `${cf.functionName || '(anonymous)'} ${url ? `${url}:${cf.lineNumber + 1}` : ''}`.trim();
  };
  const stacks = new Map(); // node id -> unique function keys on its stack
  const stackOf = (id) => {
    let s = stacks.get(id);
    if (s) return s;
    const set = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) set.add(key(byId.get(cur)));
    s = [...set];
    stacks.set(id, s);
    return s;
  };
  const self = new Map();
  const incl = new Map();
  const areas = new Map();
  let total = 0;
  let idle = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = (prof.timeDeltas[i] ?? 0) / 1000;
    const node = byId.get(prof.samples[i]);
    total += dt;
    const name = node.callFrame.functionName;
    if (name === '(idle)') { idle += dt; continue; }
    const k = key(node);
    self.set(k, (self.get(k) ?? 0) + dt);
    const a = area(where(node.callFrame, root), name);
    areas.set(a, (areas.get(a) ?? 0) + dt);
    for (const f of stackOf(node.id)) incl.set(f, (incl.get(f) ?? 0) + dt);
  }
  const busy = total - idle;
  const rank = (m, n) => [...m.entries()].sort((x, y) => y[1] - x[1]).slice(0, n)
    .map(([name, ms]) => ({ name, ms: Math.round(ms), pct: Math.round((ms / busy) * 1000) / 10 }));
  incl.delete('(root)');
  return {
    windowed: Boolean(prof.windowed), totalMs: Math.round(total), busyMs: Math.round(busy), self: rank(self, 30), inclusive: rank(incl, 40), areas: rank(areas, 20),
    longTasks: longTasks(prof, byId, key, stackOf),
  };
}

/**
 * The longest stretches without an idle sample (the event loop busy, so every message waiting
 * behind them is late: the tail of the latency), each with what ran most in it.
 */
function longTasks(prof, byId, key, stackOf, n = 8) {
  const tasks = [];
  let cur = null;
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = (prof.timeDeltas[i] ?? 0) / 1000;
    const node = byId.get(prof.samples[i]);
    if (node.callFrame.functionName === '(idle)') {
      if (cur) { tasks.push(cur); cur = null; }
      continue;
    }
    cur ??= { ms: 0, self: new Map(), roots: new Map() };
    cur.ms += dt;
    const k = key(node);
    cur.self.set(k, (cur.self.get(k) ?? 0) + dt);
    const stack = stackOf(node.id);
    const root = stack[stack.length - 2] ?? k; // the frame under (root)
    cur.roots.set(root, (cur.roots.get(root) ?? 0) + dt);
  }
  if (cur) tasks.push(cur);
  const top = (m, k) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, k).map(([f, ms]) => `${f} ${Math.round(ms)} ms`);
  const count = (min) => tasks.filter((t) => t.ms >= min).length;
  return {
    over5ms: count(5), over10ms: count(10), over50ms: count(50),
    longest: tasks.sort((a, b) => b.ms - a.ms).slice(0, n).map((t) => ({ ms: Math.round(t.ms * 10) / 10, entry: top(t.roots, 2), self: top(t.self, 3) })),
  };
}

/** The summary as text for the terminal and a results file. */
export function formatSummary(title, s) {
  const rows = (list) => list.map((r) => `  ${String(r.pct).padStart(5)} %  ${String(r.ms).padStart(6)} ms  ${r.name}`).join('\n');
  return [
    `${title}: ${s.busyMs} ms busy of ${s.totalMs} ms sampled${s.windowed ? ' inside the measurement windows' : ''} (percentages are of busy samples)`,
    'By package/area (self time):', rows(s.areas),
    'Top functions, self time:', rows(s.self),
    'Top functions, inclusive time (on the stack):', rows(s.inclusive),
    `Event loop busy without a break: ${s.longTasks.over5ms} stretches >= 5 ms, ${s.longTasks.over10ms} >= 10 ms, ${s.longTasks.over50ms} >= 50 ms; the longest:`,
    ...s.longTasks.longest.map((t) => `  ${String(t.ms).padStart(7)} ms  entered via ${t.entry.join(', ')}; most self time: ${t.self.join(', ')}`),
  ].join('\n');
}

/**
 * Runs `run()` under V8's sampling heap profiler, in this process, and resolves the bytes it
 * allocated by function: `{ total, sites }`, sites as [site, bytes] pairs, largest first. Objects
 * the collector freed count too, unless `survivorsOnly` (then only what outlived a
 * young-generation collection: what gets promoted, and so makes the full collections come).
 */
export async function sampleAllocations(run, { intervalBytes = 512, survivorsOnly = false } = {}) {
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.enable');
  await session.post('HeapProfiler.startSampling', { samplingInterval: intervalBytes, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: !survivorsOnly });
  await run();
  const { profile } = await session.post('HeapProfiler.stopSampling');
  session.disconnect();
  const bySite = new Map();
  let total = 0;
  (function walk(node) {
    const f = node.callFrame;
    const site = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(dist|bench)\//, '$1/')}:${f.lineNumber + 1}`;
    if (node.selfSize) {
      total += node.selfSize;
      bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child);
  })(profile.head);
  return { total, sites: [...bySite].sort((x, y) => y[1] - x[1]) };
}
