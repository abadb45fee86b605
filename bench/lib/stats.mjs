// Latency samples (ms) in a growable Float64Array, summarised by nearest-rank percentiles.

/** The nearest-rank `p`th percentile (0-100) of ascending `sorted`; undefined when empty. */
export function percentile(sorted, p) {
  const n = sorted.length;
  return n === 0 ? undefined : sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))];
}

/** Collects samples without allocating per sample. */
export class Samples {
  constructor(initial = 1 << 16) {
    this.buf = new Float64Array(initial);
    this.n = 0;
  }
  add(v) {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = v;
  }
  /** {n, p50, p90, p99, max, mean} in ms, rounded to µs; nulls when empty. */
  summary() {
    const n = this.n;
    if (n === 0) return { n: 0, p50: null, p90: null, p99: null, max: null, mean: null };
    const s = this.buf.slice(0, n).sort();
    const at = (p) => percentile(s, p);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += s[i];
    const r = (v) => Math.round(v * 1000) / 1000;
    return { n, p50: r(at(50)), p90: r(at(90)), p99: r(at(99)), max: r(s[n - 1]), mean: r(sum / n) };
  }
}
