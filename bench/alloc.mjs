// Where the server allocates per relayed signal: an investigation tool beside `npm run bench`
// (like heap.mjs). It runs the built server in this process on 127.0.0.1 (InMemory, or the Redis
// layer with one worker when REDIS_URL is set: then a signal takes the whole Redis path), joins two
// peers to one call, relays N ICE candidates from one to the other, and samples every allocation
// meanwhile with V8's sampling heap profiler, counting objects that the collector has already
// freed too. The load's own client side (ws in this process) is in the figure; it is the same
// before and after a server change, so compare runs of this script, not against other tools.
//
//   npm run build && node bench/alloc.mjs [signals=30000]
//   REDIS_URL=redis://127.0.0.1:6379/15 node bench/alloc.mjs   (the Redis layer; use a spare db)
//   SURVIVORS=1 node bench/alloc.mjs   (only what outlived a young-generation collection: what
//                                       gets promoted, and so makes the full collections come)
//
// Prints the sampled bytes allocated per signal and the top allocating functions (TOP=40 for more
// than 20).
import WebSocket from 'ws';
import { startServer } from '../dist/server.js';
import { sampleAllocations } from './lib/profile.mjs';

const N = Number(process.argv[2] ?? 30_000);
const TOP = Number(process.env.TOP ?? 20);
const CANDIDATE = JSON.stringify({
  type: 'candidate',
  candidate: { candidate: 'candidate:842163049 1 udp 1677729535 192.168.1.10 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag abcd network-cost 999', sdpMid: '0', sdpMLineIndex: 0 },
});

const REDIS_URL = process.env.REDIS_URL;
const server = await startServer({ env: { RATE_LIMIT: '0', MAX_CONNECTIONS_PER_IP: '0', ...(REDIS_URL ? { REDIS_URL } : {}) } });
const url = `ws://127.0.0.1:${server.port}/ws/call/alloc-${Date.now()}-probe`;
const open = () => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.once('open', () => resolve(ws));
  ws.once('error', reject);
});
const a = await open();
const b = await open();
await new Promise((r) => setTimeout(r, 300)); // welcome and peer-joined

/** Relays `n` candidates from a to b and resolves once b has them all. */
async function relay(n) {
  let got = 0;
  b.removeAllListeners('message');
  const done = new Promise((resolve) => b.on('message', () => { if (++got === n) resolve(); }));
  for (let i = 0; i < n; i++) {
    a.send(CANDIDATE);
    if (i % 50 === 49) await new Promise((r) => setImmediate(r)); // at most 50 in flight
  }
  await done;
}

await relay(5_000); // warm-up: optimized code, settled heap
const { total, sites } = await sampleAllocations(() => relay(N), { survivorsOnly: Boolean(process.env.SURVIVORS) });
console.log(`${N} signals: ${(total / N).toFixed(0)} bytes ${process.env.SURVIVORS ? 'that outlived a young-generation collection' : 'allocated'} per signal (sampled; server and this process's clients)`);
for (const [site, bytes] of sites.slice(0, TOP)) console.log(`${(bytes / N).toFixed(0).padStart(8)}  ${site}`);
a.close();
b.close();
await server.close(2000);
process.exit(0);
