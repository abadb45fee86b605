// Loaded into a server process (and, through execArgv, into its cluster workers) with
// `node --import bench/lib/hop-trace.mjs …` by bench/hops.mjs, never by the server itself. It
// stamps each bench signal as it passes the points below, with the process's monotonic clock
// (CLOCK_MONOTONIC, shared by every process on the machine), and writes the stamps to
// $HOP_TRACE_DIR/<pid>.bin when the process exits. A bench signal carries the load generator's
// send time (bench/lib/signals.mjs), which names it at every point.
//
//   1 a WebSocket frame arrived (ws emits 'message')
//   2 the Redis layer was asked to send it (RedisChannelLayer storeSend)
//   3 it arrived from Redis pub/sub (RedisChannelLayer onMessages)
//   5 the time Redis ran the send script (the message's sequence number is Redis's TIME in µs,
//     taken on the real-time clock; turned into this process's monotonic µs)
//   4 it was written to a WebSocket (ws send)
// and every garbage collection's start and length (µs), to $HOP_TRACE_DIR/<pid>.gc.bin.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { WebSocket } from 'ws';

const DIR = process.env.HOP_TRACE_DIR;
const MAX = 3 * 1_000_000;
const stamps = new Float64Array(MAX);
let n = 0;
const TS = /(?:o=- |candidate:)(\d{6,})/;
const monoMicros = () => Number(process.hrtime.bigint() / 1000n);
/** Monotonic µs minus performance.now() µs (performance.now() and GC entries count from the time origin). */
const monoMinusPerf = monoMicros() - Math.round(performance.now() * 1000);
/** Real-time µs minus monotonic µs (the time origin is real time). */
const realMinusMono = Math.round(performance.timeOrigin * 1000) - monoMinusPerf;

function stamp(point, data, at = monoMicros()) {
  if (n >= MAX) return;
  let text;
  if (typeof data === 'string') text = data.slice(0, 800);
  else if (data instanceof Uint8Array) text = Buffer.from(data.buffer, data.byteOffset, Math.min(data.byteLength, 800)).toString('latin1');
  else return;
  const m = TS.exec(text);
  if (!m) return;
  stamps[n++] = point;
  stamps[n++] = Number(m[1]);
  stamps[n++] = at;
}

const emit = WebSocket.prototype.emit;
WebSocket.prototype.emit = function (event, data, ...rest) {
  if (event === 'message') stamp(1, data);
  return emit.call(this, event, data, ...rest);
};
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data, ...rest) {
  stamp(4, data);
  return send.call(this, data, ...rest);
};

// The same module the server imports (one module record per URL), so its class is patched.
const { RedisChannelLayer } = await import(new URL('../../dist/layers/redis.js', import.meta.url).href);
for (const method of ['storeSend', 'onMessages']) {
  if (typeof RedisChannelLayer.prototype[method] !== 'function') throw new Error(`hop-trace: RedisChannelLayer has no ${method} to stamp; update bench/lib/hop-trace.mjs`);
}
const storeSend = RedisChannelLayer.prototype.storeSend;
RedisChannelLayer.prototype.storeSend = function (channel, bytes, ...rest) {
  stamp(2, bytes);
  return storeSend.call(this, channel, bytes, ...rest);
};
const onMessages = RedisChannelLayer.prototype.onMessages;
RedisChannelLayer.prototype.onMessages = function (frame) {
  const arrived = monoMicros();
  stamp(3, frame, arrived);
  // `M<k>\n<channel>\n<seq>\n…`: the first target's sequence number.
  const lines = frame.toString('latin1', 0, 400).split('\n', 3);
  const seq = Number(lines[2]);
  if (Number.isFinite(seq)) stamp(5, frame, seq - realMinusMono);
  return onMessages.call(this, frame);
};

/** [start µs (monotonic), duration µs, kind] per collection. */
const gcs = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push(Math.round(e.startTime * 1000) + monoMinusPerf, Math.round(e.duration * 1000), e.detail?.kind ?? 0);
}).observe({ entryTypes: ['gc'] });

if (DIR) {
  process.on('exit', () => {
    if (n) writeFileSync(join(DIR, `${process.pid}.bin`), stamps.subarray(0, n));
    if (gcs.length) writeFileSync(join(DIR, `${process.pid}.gc.bin`), new Float64Array(gcs));
  });
}
