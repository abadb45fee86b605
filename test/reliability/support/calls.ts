/**
 * Calls made of test clients (test/helpers/ws-client.ts): two peers joining, numbered signals
 * whose loss, duplication and reordering can be counted, and a bystander call that keeps
 * relaying in the background while a test does harm elsewhere.
 */
import { randomBytes } from 'node:crypto';
import { connect, type ConnectOptions, type Received, type TestClient } from '../../helpers/ws-client.js';

/** A fresh valid call id (prefix + 128 random bits). */
export function newCallId(prefix = 't'): string {
  return `${prefix}-${randomBytes(16).toString('base64url')}`;
}

/** One peer of a call, with what its welcome said. */
export interface Seated {
  client: TestClient;
  peerId: string;
  resumeToken: string;
  welcome: Received;
}

/** Opens a socket to `url` and waits for `welcome`. */
export async function join(url: string, opts: ConnectOptions = {}, timeoutMs = 5000): Promise<Seated> {
  const client = await connect(url, opts);
  const welcome = await client.next('welcome', timeoutMs);
  return { client, peerId: String(welcome.peerId), resumeToken: String(welcome.resumeToken), welcome };
}

/** Two peers in one call: `a` joins at `urlA`, `b` at `urlB`; resolves once `a` has seen `b` join. */
export async function twoPeers(urlA: string, urlB = urlA, opts: ConnectOptions = {}): Promise<{ a: Seated; b: Seated }> {
  const a = await join(urlA, opts);
  const b = await join(urlB, opts);
  const joined = await a.client.next('peer-joined', 5000);
  if (joined.peerId !== b.peerId) throw new Error(`a saw ${String(joined.peerId)} join, expected ${b.peerId}`);
  return { a, b };
}

/** A numbered ICE candidate signal, in the W3C shape, with `seq` and `sentAt` riding along untouched. */
export function candidate(seq: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'candidate',
    candidate: { candidate: `candidate:${seq} 1 udp 2122260223 192.0.2.1 ${10_000 + (seq % 50_000)} typ host`, sdpMid: '0', sdpMLineIndex: 0 },
    seq,
    sentAt: Date.now(),
    ...extra,
  };
}

/** True for a relayed signal carrying a numeric `seq`. */
export const isNumbered = (m: Received): boolean => typeof m.seq === 'number' && typeof m.from === 'string';

/** What a receiver got of a numbered sequence. */
export interface SequenceReport {
  expected: number;
  received: number;
  missing: number[];
  duplicated: number[];
  /** Positions where a seq arrived after a larger one. */
  reordered: number;
}

/** Checks `got` (seqs in arrival order) against 0..expected-1 (or the given `sent` list). */
export function checkSequence(got: number[], expected: number | number[]): SequenceReport {
  const sent = typeof expected === 'number' ? Array.from({ length: expected }, (_, i) => i) : expected;
  const counts = new Map<number, number>();
  for (const s of got) counts.set(s, (counts.get(s) ?? 0) + 1);
  let reordered = 0;
  for (let i = 1; i < got.length; i++) if (got[i]! < got[i - 1]!) reordered += 1;
  return {
    expected: sent.length,
    received: got.length,
    missing: sent.filter((s) => !counts.has(s)),
    duplicated: [...counts].filter(([, n]) => n > 1).map(([s]) => s),
    reordered,
  };
}

/** The seqs of numbered signals from `from` in a client's log (taken or not), in arrival order. */
export function seqsFrom(client: TestClient, from: string): number[] {
  return client.log.filter((m) => isNumbered(m) && m.from === from).map((m) => m.seq as number);
}

/** A two-peer call on the side that relays numbered signals both ways every `everyMs` until stopped. */
export class Bystander {
  private timer: NodeJS.Timeout | undefined;
  private seqA = 0;
  private seqB = 0;
  maxLatencyMs = 0;
  private readonly latencies: number[] = [];
  /** Log positions after the call was set up: anything later that is not a numbered signal is unexpected. */
  private readonly from: [number, number];

  private constructor(readonly a: Seated, readonly b: Seated) {
    this.from = [a.client.log.length, b.client.log.length];
    for (const [me, other] of [
      [a, b],
      [b, a],
    ] as const) {
      me.client.ws.on('message', (data: Buffer) => {
        try {
          const m = JSON.parse(data.toString()) as Received;
          if (typeof m.seq === 'number' && m.from === other.peerId && typeof m.sentAt === 'number') {
            const l = Date.now() - m.sentAt;
            this.latencies.push(l);
            if (l > this.maxLatencyMs) this.maxLatencyMs = l;
          }
        } catch {
          // counted as unexpected by report()
        }
      });
    }
  }

  /** Joins a fresh call at `urlA`/`urlB` and starts relaying. */
  static async start(urlA: string, urlB = urlA, everyMs = 25, opts: ConnectOptions = {}): Promise<Bystander> {
    const { a, b } = await twoPeers(urlA, urlB, opts);
    const s = new Bystander(a, b);
    s.timer = setInterval(() => s.tick(), everyMs);
    return s;
  }

  private tick(): void {
    if (this.a.client.isClosed || this.b.client.isClosed) return;
    this.a.client.send(candidate(this.seqA++));
    this.b.client.send(candidate(this.seqB++));
  }

  /** Signals sent so far, both ways. */
  get sent(): number {
    return this.seqA + this.seqB;
  }

  /** Signals received so far, both ways. */
  received(): number {
    return seqsFrom(this.b.client, this.a.peerId).length + seqsFrom(this.a.client, this.b.peerId).length;
  }

  /** Waits until `n` more signals have arrived both ways (proves the call relays now). */
  async relaysNow(timeoutMs = 5000): Promise<void> {
    const start = this.received();
    const deadline = Date.now() + timeoutMs;
    while (this.received() < start + 4) {
      if (Date.now() > deadline) throw new Error(`the bystander call stopped relaying: ${this.received() - start} signals in ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops sending, waits for the last signals, and reports both directions and anything unexpected. */
  async stop(settleMs = 1500): Promise<{ aToB: SequenceReport; bToA: SequenceReport; unexpected: Received[]; closed: boolean; maxLatencyMs: number; p99LatencyMs: number }> {
    clearInterval(this.timer);
    const deadline = Date.now() + settleMs;
    while (Date.now() < deadline && this.received() < this.sent) await new Promise((r) => setTimeout(r, 20));
    const unexpected = [...this.a.client.log.slice(this.from[0]), ...this.b.client.log.slice(this.from[1])].filter((m) => !isNumbered(m));
    const sorted = [...this.latencies].sort((x, y) => x - y);
    const report = {
      aToB: checkSequence(seqsFrom(this.b.client, this.a.peerId), this.seqA),
      bToA: checkSequence(seqsFrom(this.a.client, this.b.peerId), this.seqB),
      unexpected,
      closed: this.a.client.isClosed || this.b.client.isClosed,
      maxLatencyMs: this.maxLatencyMs,
      p99LatencyMs: sorted[Math.max(0, Math.ceil(sorted.length * 0.99) - 1)] ?? 0,
    };
    this.a.client.terminate();
    this.b.client.terminate();
    return report;
  }
}
