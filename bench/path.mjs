// What the consumer path itself costs per relayed signal, without sockets: an investigation tool
// beside `npm run bench` (like alloc.mjs and heap.mjs). Two CallConsumers of one call on the
// InMemory layer, each behind the consumers' in-process test transport (WebsocketCommunicator);
// one sends ICE candidates, the other receives them, 20 in flight. Everything between a client
// frame and the frame the other peer gets runs: the runner, JSON decoding, validation, the
// relay, the layer, the metrics; ws, the TCP stack and the event loop's I/O do not. So the
// figure is the path with hot caches: set it against the server CPU per signal that
// `npm run bench` prints, which adds the sockets and the cold caches of real traffic. The test
// transport's own work is in the figure (it is the same before and after a server change).
//
//   npm run build && node bench/path.mjs [signals=300000]
//
// Prints µs per signal (three rounds, after a warm-up) and the bytes allocated per signal by
// function, from V8's sampling heap profiler.
import { loadConfig } from '../dist/config.js';
import { createChannelLayer } from '../dist/layers/index.js';
import { layerOptionsFor } from '../dist/server.js';
import { createLogger } from '../dist/logger.js';
import { createCallConsumer, Seats, SeatWatch, RateLimit, SignalingMetrics } from '../dist/signaling/index.js';
import { WebsocketCommunicator } from '../dist/consumers/testing.js';
import { sampleAllocations } from './lib/profile.mjs';

const N = Number(process.argv[2] ?? 300_000);
const IN_FLIGHT = 20;
const TOP = 15;
const CANDIDATE = JSON.stringify({
  type: 'candidate',
  candidate: { candidate: 'candidate:842163049 1 udp 1677729535 192.168.1.10 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag abcd network-cost 999', sdpMid: '0', sdpMLineIndex: 0 },
});

const config = loadConfig({ PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', RATE_LIMIT: '0', MAX_CONNECTIONS_PER_IP: '0' });
const layer = createChannelLayer(layerOptionsFor(config));
const logger = createLogger('silent');
const seats = new Seats(layer, { maxPeers: config.maxPeers, ttl: 86_400 });
const Consumer = createCallConsumer({
  config, metrics: new SignalingMetrics(), seats, watch: new SeatWatch(layer, seats, config.resumeGrace * 1000, logger),
  rateLimit: new RateLimit(config.rateLimit, config.rateBurst), perAddress: new Map(), localCalls: new Map(),
});
const peer = () => new WebsocketCommunicator(Consumer, {
  layer, logger, path: '/ws/call/bench-path-call', params: { callId: 'bench-path-call' },
  headers: { origin: 'http://127.0.0.1:8080', host: '127.0.0.1:8080' },
});
const a = peer();
const b = peer();
for (const p of [a, b]) {
  const r = await p.connect();
  if (!r.accepted) throw new Error(`a peer was refused: ${JSON.stringify(r)}`);
}
await a.receiveJson(); // welcome
await b.receiveJson(); // welcome
await a.receiveJson(); // peer-joined

/** Relays `n` candidates from a to b, IN_FLIGHT at a time; checks the last one arrived whole. */
async function relay(n) {
  let last;
  for (let i = 0; i < n; i += IN_FLIGHT) {
    for (let k = 0; k < IN_FLIGHT; k++) a.sendText(CANDIDATE);
    for (let k = 0; k < IN_FLIGHT; k++) last = await b.receiveOutput();
  }
  const got = JSON.parse(last.text);
  if (got.type !== 'candidate' || got.candidate.sdpMid !== '0' || typeof got.from !== 'string') throw new Error(`relayed wrongly: ${last.text}`);
}

await relay(50_000); // warm-up: optimized code
for (let round = 1; round <= 3; round++) {
  const t0 = performance.now();
  await relay(N);
  console.log(`round ${round}: ${(((performance.now() - t0) / N) * 1000).toFixed(2)} µs per signal`);
}

const M = 100_000;
const { total, sites } = await sampleAllocations(() => relay(M), { intervalBytes: 128 });
console.log(`${(total / M).toFixed(0)} bytes allocated per signal (sampled; the test transport and this script included)`);
for (const [site, bytes] of sites.slice(0, TOP)) console.log(`${(bytes / M).toFixed(0).padStart(8)}  ${site}`);
await layer.close();
process.exit(0);
