/**
 * What the protocol conformance tests share: a server started from env, fresh call ids, joining
 * a call and reading its welcome, and the five signal shapes simple-peer emits.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, expect } from 'vitest';
import { startServer } from '../../src/server.js';
import { connect, type ConnectOptions, type Received, type TestClient } from '../helpers/ws-client.js';

/** The admin bearer token every test server is started with. */
export const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';

/** A running server as the tests see it. */
export type Server = Awaited<ReturnType<typeof startServer>>;

/** Starts a server on 127.0.0.1 and a free port, with ADMIN_TOKEN set and `env` on top. */
export function serve(env: Record<string, string> = {}): Promise<Server> {
  return startServer({ env: { ADMIN_TOKEN, ...env } });
}

/** A fresh call id of 128 random bits. */
export function newCallId(): string {
  return randomBytes(16).toString('base64url');
}

/** The WebSocket URL of a call on a server (or base URL), with optional query parameters. */
export function callUrl(base: Server | string, callId: string, query: Record<string, string> = {}): string {
  const root = typeof base === 'string' ? base : base.url;
  const qs = new URLSearchParams(query).toString();
  return `${root.replace(/^http/, 'ws')}/ws/call/${callId}${qs ? `?${qs}` : ''}`;
}

/** Clients opened by the current test; dropped after it so tests stay independent. */
const opened = new Set<TestClient>();
afterEach(() => {
  for (const c of opened) c.terminate();
  opened.clear();
});

/** Opens a socket (tracked for clean-up) without reading anything. */
export async function open(url: string, opts?: ConnectOptions): Promise<TestClient> {
  const c = await connect(url, opts);
  opened.add(c);
  return c;
}

/** The welcome message, as the spec names its fields. */
export interface Welcome extends Received {
  type: 'welcome';
  peerId: string;
  resumeToken: string;
  callId: string;
  peers: string[];
  polite: boolean;
  iceServers: Array<{ urls: string | string[]; username?: string; credential?: string }>;
  maxPeers: number;
  resumed: boolean;
}

/** A peer in a call: its socket and its welcome. */
export interface Peer {
  c: TestClient;
  welcome: Welcome;
  id: string;
}

/** Joins a call and asserts that the server's first message is `welcome`. */
export async function join(base: Server | string, callId: string, query: Record<string, string> = {}, opts?: ConnectOptions): Promise<Peer> {
  const c = await open(callUrl(base, callId, query), opts);
  const first = await c.next(undefined, 5000);
  expect(first.type, `first message was ${JSON.stringify(first)}`).toBe('welcome');
  const welcome = first as Welcome;
  return { c, welcome, id: welcome.peerId };
}

/** Two peers in a fresh call; the first has already read the second's peer-joined. */
export async function pair(base: Server | string, callId = newCallId()): Promise<{ a: Peer; b: Peer; callId: string }> {
  const a = await join(base, callId);
  const b = await join(base, callId);
  expect(await a.c.next('peer-joined')).toEqual({ type: 'peer-joined', peerId: b.id });
  return { a, b, callId };
}

/** Expects an error message with `code` (and a human-readable sentence) as the next matching message. */
export async function expectError(c: TestClient, code: string, timeoutMs = 3000): Promise<Received> {
  const m = await c.next('error', timeoutMs);
  expect(m.code, `error was ${JSON.stringify(m)}`).toBe(code);
  expect(typeof m.message, 'an error carries a human-readable message').toBe('string');
  expect((m.message as string).length).toBeGreaterThan(0);
  return m;
}

/** Asserts the socket is still open and served: a ping gets a pong. */
export async function expectAlive(c: TestClient): Promise<void> {
  c.send({ type: 'ping' });
  expect(await c.next('pong')).toEqual({ type: 'pong' });
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The five signal shapes simple-peer's `signal` event emits (also the W3C shapes). */
export const SHAPES = {
  offer: {
    type: 'offer',
    sdp: 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n',
  },
  answer: {
    type: 'answer',
    sdp: 'v=0\r\no=- 1129386215436432907 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n',
  },
  candidate: {
    type: 'candidate',
    candidate: { candidate: 'candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag sN2k network-cost 999', sdpMid: '0', sdpMLineIndex: 0 },
  },
  renegotiate: { type: 'renegotiate', renegotiate: true },
  transceiverRequest: { type: 'transceiverRequest', transceiverRequest: { kind: 'video', init: {} } },
} as const;

/** A candidate signal carrying a sequence number in its candidate line. */
export function seqSignal(n: number): Record<string, unknown> {
  return { type: 'candidate', candidate: { candidate: `candidate:${n} 1 udp 2122260223 192.168.1.2 ${10000 + (n % 50000)} typ host`, sdpMid: '0', sdpMLineIndex: 0 } };
}

/** The sequence number of a `seqSignal`, or undefined for anything else. */
export function seqOf(m: Received): number | undefined {
  if (m.type !== 'candidate') return undefined;
  const line = (m.candidate as { candidate?: string } | undefined)?.candidate;
  const match = line && /^candidate:(\d+) /.exec(line);
  return match ? Number(match[1]) : undefined;
}

/** Reads `count` sequenced signals from `c` and returns their numbers in arrival order. */
export async function readSeqs(c: TestClient, count: number, timeoutMs = 5000): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const m = await c.next((x) => seqOf(x) !== undefined, timeoutMs);
    out.push(seqOf(m)!);
  }
  return out;
}

/** [from, from+1, …, to-1]. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/** fetch against a server's base URL. */
export function http(base: Server | string, path: string, init?: RequestInit): Promise<Response> {
  const root = typeof base === 'string' ? base : base.url;
  return fetch(`${root}${path}`, init);
}
