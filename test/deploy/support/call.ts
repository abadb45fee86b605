/**
 * A 1-to-1 call as two browsers would place it, over real sockets: create the call over HTTP,
 * join it from two servers (or one), and relay the simple-peer signal shapes of protocol.md.
 */
import { expect } from 'vitest';
import { connect, type Received, type TestClient } from '../../helpers/ws-client.js';

/** One peer: its socket and what its welcome said. */
export interface CallPeer {
  c: TestClient;
  id: string;
  resumeToken: string;
  welcome: Received;
}

/** simple-peer's signal shapes (protocol.md). */
export const OFFER = { type: 'offer', sdp: 'v=0\r\no=- 46117314 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n' };
export const ANSWER = { type: 'answer', sdp: 'v=0\r\no=- 11293862 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n' };

/** A candidate signal whose candidate line carries a sequence number `n` (and who sent it). */
export function candidate(n: number, tag = 'x'): Record<string, unknown> {
  return { type: 'candidate', candidate: { candidate: `candidate:${n} 1 udp 2122260223 192.0.2.${(n % 250) + 1} ${20000 + n} typ host ufrag ${tag}`, sdpMid: '0', sdpMLineIndex: 0 } };
}

/** The sequence number of a `candidate()` signal, or undefined. */
export function seqOf(m: Received): number | undefined {
  const line = (m.candidate as { candidate?: string } | undefined)?.candidate;
  const match = m.type === 'candidate' && line ? /^candidate:(\d+) /.exec(line) : null;
  return match ? Number(match[1]) : undefined;
}

/** POST /api/calls on a server: the new call's id (and the link it gives). */
export async function createCall(base: string): Promise<{ callId: string; url: string }> {
  const res = await fetch(`${base}/api/calls`, { method: 'POST', signal: AbortSignal.timeout(5000) });
  expect(res.status).toBe(201);
  const body = (await res.json()) as { callId: string; url: string };
  expect(body.callId).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
  expect(body.url).toBe(`${base}/c/${body.callId}`);
  return body;
}

/** The WebSocket URL of a call on a server. */
export function callSocketUrl(base: string, callId: string, query: Record<string, string> = {}): string {
  const qs = new URLSearchParams(query).toString();
  return `${base.replace(/^http/, 'ws')}/ws/call/${callId}${qs ? `?${qs}` : ''}`;
}

/** Joins a call and asserts the first message is `welcome`. Sends the page's own Origin, as a browser on the call page would. */
export async function joinCall(base: string, callId: string, query: Record<string, string> = {}, timeoutMs = 5000): Promise<CallPeer> {
  const c = await connect(callSocketUrl(base, callId, query), { origin: base, timeoutMs });
  const welcome = await c.next(undefined, timeoutMs);
  expect(welcome.type, `first message: ${JSON.stringify(welcome)}`).toBe('welcome');
  expect(welcome.callId).toBe(callId);
  return { c, id: welcome.peerId as string, resumeToken: welcome.resumeToken as string, welcome };
}

/**
 * Two peers in a new call: `a` joins through `baseA`, then `b` through `baseB`. Checks the
 * welcomes (b sees a in `peers`, exactly one is polite) and a's peer-joined.
 */
export async function twoPeers(baseA: string, baseB: string): Promise<{ callId: string; a: CallPeer; b: CallPeer }> {
  const { callId } = await createCall(baseA);
  const a = await joinCall(baseA, callId);
  expect(a.welcome.peers).toEqual([]);
  expect(a.welcome.resumed).toBe(false);
  const b = await joinCall(baseB, callId);
  expect(b.welcome.peers).toEqual([a.id]);
  expect(b.id).not.toBe(a.id);
  expect([a.welcome.polite, b.welcome.polite].filter(Boolean)).toHaveLength(1);
  expect(await a.c.next('peer-joined', 5000)).toEqual({ type: 'peer-joined', peerId: b.id });
  return { callId, a, b };
}

/** Sends `signal` from one peer and expects the other to get it unchanged, with `from` set by the server. */
export async function relay(from: CallPeer, to: CallPeer, signal: Record<string, unknown>, timeoutMs = 5000): Promise<void> {
  from.c.send({ ...signal, from: 'forged-by-client' });
  const got = await to.c.next((m) => m.type === signal.type, timeoutMs);
  expect(got).toEqual({ ...signal, from: from.id });
}

/** Takes `count` candidate() signals from a peer's queue, in arrival order, and returns their sequence numbers. */
export async function takeCandidates(p: CallPeer, count: number, timeoutMs: number): Promise<number[]> {
  const out: number[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < count) {
    const m = await p.c.next((x) => seqOf(x) !== undefined, Math.max(1, deadline - Date.now()));
    out.push(seqOf(m)!);
  }
  return out;
}

/**
 * The whole call of a simple-peer 1-to-1: b (the newcomer) offers, a answers, `candidates`
 * candidates each way (in order, exactly once, `from` set), then a hangs up: b gets peer-left
 * with reason hangup and a's socket closes with 1000.
 */
export async function fullCall(a: CallPeer, b: CallPeer, candidates = 10): Promise<void> {
  await relay(b, a, OFFER);
  await relay(a, b, ANSWER);
  for (let i = 0; i < candidates; i++) {
    a.c.send(candidate(i, 'a'));
    b.c.send(candidate(i, 'b'));
  }
  const seq = Array.from({ length: candidates }, (_, i) => i);
  expect(await takeCandidates(b, candidates, 10_000)).toEqual(seq);
  expect(await takeCandidates(a, candidates, 10_000)).toEqual(seq);
  expect(b.c.log.filter((m) => m.type === 'candidate').every((m) => m.from === a.id)).toBe(true);
  a.c.send({ type: 'bye' });
  expect(await b.c.next('peer-left', 5000)).toEqual({ type: 'peer-left', peerId: a.id, reason: 'hangup' });
  expect((await a.c.closed).code).toBe(1000);
  await b.c.nothing(200);
}
