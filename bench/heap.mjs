// Where the memory of an idle connection goes: V8 heap snapshots of each server before and
// after N idle peers, diffed by object type and constructor, per peer. An investigation tool
// beside `npm run bench` (which reports RSS only); snapshots pause the server for seconds.
//
//   node bench/heap.mjs [--only=ws,memory] [--peers=5000] [--keep=DIR]
//
// Prints, per server: RSS and V8 heap growth per peer, and the top constructors by bytes per peer.
// Writes bench/results/heap.txt. Snapshots go to a temporary directory and are deleted.
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { tree, treeRssKiB } from './lib/proc.mjs';
import { ALL_SERVERS, startLoadgen, startTarget } from './lib/targets.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const ONLY = args.find((a) => a.startsWith('--only='))?.slice(7).split(',') ?? ['ws', 'ws-json', 'peerjs', 'memory'];
const PEERS = Number(args.find((a) => a.startsWith('--peers='))?.slice(8) ?? 5000);
const TOP = 40;
/** Where to keep the 'after' snapshot for a closer look (by default it is deleted). */
const KEEP = args.find((a) => a.startsWith('--keep='))?.slice(7);

/** Signals every process of the tree to write a snapshot; resolves the new files once complete. */
async function snapshot(pid, dir) {
  const before = new Set(readdirSync(dir));
  const pids = tree(pid);
  for (const p of pids) process.kill(p, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  let last = '';
  let stable = 0;
  while (Date.now() < deadline) {
    await sleep(500);
    const fresh = readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    const sizes = fresh.map((f) => `${f}:${statSync(join(dir, f)).size}`).join(',');
    const complete = fresh.length >= pids.length && fresh.every((f) => endsJson(join(dir, f)));
    stable = complete && sizes === last ? stable + 1 : 0;
    last = sizes;
    if (stable >= 2) return fresh.map((f) => join(dir, f));
  }
  throw new Error('heap snapshot not written within 120 s');
}

/** Whether a snapshot file has its closing `]}` yet (V8 writes it in chunks). */
function endsJson(file) {
  const { size } = statSync(file);
  if (size < 2) return false;
  const buf = Buffer.alloc(Math.min(16, size));
  const fd = openSync(file, 'r');
  try { readSync(fd, buf, 0, buf.length, size - buf.length); } finally { closeSync(fd); }
  return /\]\}\s*$/.test(buf.toString());
}

/**
 * For the given "type name" keys, what holds them: counts of (retainer "type name" . edge) over
 * the snapshot, so a per-peer object can be traced to the structure that keeps it.
 */
function retainers(snap, keys) {
  const { node_fields: nf, node_types: [types], edge_fields: ef, edge_types: [etypes] } = snap.snapshot.meta;
  const [ti, ni, ei] = ['type', 'name', 'edge_count'].map((f) => nf.indexOf(f));
  const [eti, eni, eto] = ['type', 'name_or_index', 'to_node'].map((f) => ef.indexOf(f));
  const { nodes, edges, strings } = snap;
  const keyOf = (i) => {
    const type = types[nodes[i + ti]];
    const name = /string|number|code|bigint/.test(type) ? '' : strings[nodes[i + ni]].slice(0, 60);
    return `${type}${name ? ` ${name}` : ''}`;
  };
  const wanted = new Set(keys);
  const out = new Map(keys.map((k) => [k, new Map()]));
  let e = 0;
  for (let i = 0; i < nodes.length; i += nf.length) {
    const from = keyOf(i);
    for (let k = 0; k < nodes[i + ei]; k++, e += ef.length) {
      const etype = etypes[edges[e + eti]];
      if (etype === 'weak' || etype === 'shortcut') continue;
      const to = edges[e + eto];
      const toKey = keyOf(to);
      if (!wanted.has(toKey)) continue;
      const ename = etype === 'element' || etype === 'hidden' ? `[${etype}]` : String(strings[edges[e + eni]] ?? edges[e + eni]);
      const m = out.get(toKey);
      const r = `${from} .${ename}`;
      m.set(r, (m.get(r) ?? 0) + 1);
    }
  }
  return out;
}

/** Self bytes and counts by "type name" over all nodes of the given snapshot files. */
function tally(files, keepLast = false) {
  const out = new Map();
  let total = 0;
  let last = null;
  for (const file of files) {
    const snap = JSON.parse(readFileSync(file, 'utf8'));
    if (keepLast) last = snap;
    const { node_fields: fields, node_types: [types] } = snap.snapshot.meta;
    const [ti, ni, si] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
    const { nodes, strings } = snap;
    for (let i = 0; i < nodes.length; i += fields.length) {
      const type = types[nodes[i + ti]];
      const size = nodes[i + si];
      const name = /string|number|code|bigint/.test(type) ? '' : strings[nodes[i + ni]].slice(0, 60);
      const key = `${type}${name ? ` ${name}` : ''}`;
      const e = out.get(key) ?? { bytes: 0, count: 0 };
      e.bytes += size;
      e.count += 1;
      out.set(key, e);
      total += size;
    }
  }
  return { byKey: out, total, snap: last };
}

async function one(def, lg, log) {
  const dir = mkdtempSync(join(tmpdir(), 'bench-heap-'));
  let target = null;
  try {
    target = await startTarget(ROOT, def, lg, { nodeArgs: ['--heapsnapshot-signal=SIGUSR2'], env: { PORT: '0' }, cwd: dir });
    const { srv } = target;
    await lg.call('idleOpen', { peers: 20 });
    await lg.call('idleRelease', {});
    await sleep(1000);
    const rss0 = treeRssKiB(srv.pid);
    const h0 = tally(await snapshot(srv.pid, dir));
    for (const f of readdirSync(dir)) if (f.endsWith('.heapsnapshot')) rmSync(join(dir, f));
    const opened = await lg.call('idleOpen', { peers: PEERS }, 180_000);
    await sleep(3000);
    const rss1 = treeRssKiB(srv.pid);
    const after = await snapshot(srv.pid, dir);
    const h1 = tally(after, true);
    if (KEEP) for (const [i, f] of after.entries()) writeFileSync(join(KEEP, `${def.id}-${i}.heapsnapshot`), readFileSync(f));
    await lg.call('idleRelease', {}, 120_000);
    const n = opened.peers;
    const rows = [];
    for (const [key, e] of h1.byKey) {
      const b = h0.byKey.get(key) ?? { bytes: 0, count: 0 };
      const d = e.bytes - b.bytes;
      if (d > 0) rows.push({ key, bytesPerPeer: d / n, countPerPeer: (e.count - b.count) / n });
    }
    rows.sort((x, y) => y.bytesPerPeer - x.bytesPerPeer);
    const lines = [
      `${def.label}: ${n} idle peers; RSS +${((rss1 - rss0) / n).toFixed(2)} KiB/peer (inflated by the first snapshot; use npm run bench for RSS); V8 heap (self sizes, incl. ArrayBuffer backing stores where V8 reports them) +${((h1.total - h0.total) / 1024 / n).toFixed(2)} KiB/peer`,
      '  bytes/peer  objects/peer  type and constructor',
      ...rows.slice(0, TOP).map((r) => `  ${r.bytesPerPeer.toFixed(0).padStart(10)}  ${r.countPerPeer.toFixed(2).padStart(12)}  ${r.key}`),
    ];
    // What holds the per-peer objects that are not plain data: the top classes by bytes.
    const traced = rows.slice(0, 80).filter((r) => r.countPerPeer >= 0.9 && /^object [A-Z_]/.test(r.key) && !/ (Object|Array|Map)$/.test(r.key)).slice(0, 24);
    const held = retainers(h1.snap, traced.map((r) => r.key));
    lines.push('  held by (retainer . edge: count per peer), for the per-peer classes:');
    for (const r of traced) {
      const top = [...held.get(r.key).entries()].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([k, c]) => `${k} ${(c / n).toFixed(2)}`);
      lines.push(`    ${r.key}: ${top.join('; ')}`);
    }
    log(lines.join('\n'));
    return lines.join('\n');
  } finally {
    await target?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const lg = startLoadgen(ROOT, null);
  await lg.ready;
  const texts = [];
  try {
    for (const def of ALL_SERVERS.filter((s) => ONLY.includes(s.id))) {
      try {
        texts.push(await one(def, lg, (s) => console.log(s)));
      } catch (err) {
        console.log(`${def.label}: ${err.message}`);
      }
    }
  } finally {
    lg.stop();
  }
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', 'heap.txt'), `${new Date().toISOString()}\n${texts.join('\n\n')}\n`);
  console.log('wrote bench/results/heap.txt');
}

main().catch((err) => { console.error(err); process.exit(1); });
