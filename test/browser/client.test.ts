/**
 * CallClient (public/client.js) against a scripted server and a scripted simple-peer, in Node:
 * the decisions the browser tests cannot force on cue (a refused resume, a stale signal, a
 * silent network, the order of kept signals), each checked message by message.
 */
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CallClient, backoffDelay, type CallClientOptions } from '../../public/client.js';

type Json = Record<string, unknown>;

/** A WebSocket whose server side the test plays. */
class FakeSocket {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Json[] = [];
  closedWith: number | undefined;
  onmessage: ((ev: { data: string }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: (() => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string): void {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(data) as Json);
  }
  close(code?: number): void {
    this.closedWith = code;
    this.readyState = 3;
  }
  /** The server accepts and says `msg`. */
  accept(msg: Json): this {
    this.readyState = 1;
    return this.say(msg);
  }
  say(msg: Json): this {
    this.onmessage?.({ data: JSON.stringify(msg) });
    return this;
  }
  /** The connection ends with `code` (1006: it just died). */
  drop(code = 1006, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  signals(): Json[] {
    return this.sent.filter((m) => m.type !== 'ping' && m.type !== 'bye');
  }
}

/** A simple-peer stand-in: records what it is given, emits what the test says. */
class FakePeer extends EventEmitter {
  static all: FakePeer[] = [];
  given: Json[] = [];
  destroyed = false;
  constructor(readonly opts: Json) {
    super();
    FakePeer.all.push(this);
  }
  signal(data: Json): void {
    this.given.push(data);
  }
  destroy(): void {
    this.destroyed = true;
    queueMicrotask(() => this.emit('close'));
  }
  /** The connection failed by itself (simple-peer destroys itself and emits close). */
  fail(): void {
    this.emit('error', Object.assign(new Error('Ice connection failed.'), { code: 'ERR_ICE_CONNECTION_FAILURE' }));
    this.emit('close');
  }
}

const welcome = (over: Json = {}): Json => ({
  type: 'welcome', peerId: 'me', resumeToken: 'token-1', callId: 'abc', peers: [], polite: false,
  iceServers: [{ urls: 'stun:stun.example.test' }], maxPeers: 2, resumed: false, ...over,
});

const lastSocket = () => FakeSocket.all.at(-1)!;
const lastPeer = () => FakePeer.all.at(-1)!;

function newClient(over: Partial<CallClientOptions> = {}): CallClient {
  const client = new CallClient({
    callId: 'abc',
    servers: ['ws://one.test', 'ws://two.test'],
    stream: null,
    SimplePeer: FakePeer,
    WebSocket: FakeSocket,
    ...over,
  });
  client.join();
  return client;
}

/** A client that joined second (so it offers) and whose media is up. */
function connectedNewcomer(over: Partial<CallClientOptions> = {}) {
  const client = newClient(over);
  const ws = lastSocket().accept(welcome({ peers: ['them'], polite: true }));
  const peer = lastPeer();
  peer.emit('connect');
  return { client, ws, peer };
}

describe('CallClient', () => {
  beforeEach(() => {
    FakeSocket.all = [];
    FakePeer.all = [];
    (globalThis as { RTCPeerConnection?: unknown }).RTCPeerConnection = class {};
  });
  afterEach(() => {
    vi.useRealTimers();
    delete (globalThis as { RTCPeerConnection?: unknown }).RTCPeerConnection;
  });

  it('the newcomer makes the offer with the iceServers from welcome, and signals name their receiver and pair', () => {
    const client = newClient();
    expect(lastSocket().url).toBe('ws://one.test/ws/call/abc');
    expect(client.state).toBe('connecting');
    const ws = lastSocket().accept(welcome({ peers: ['them'] }));
    const peer = lastPeer();
    expect(peer.opts.initiator).toBe(true);
    expect(peer.opts.config).toEqual({ iceServers: [{ urls: 'stun:stun.example.test' }] });
    expect(client.state).toBe('connecting');

    peer.emit('signal', { type: 'offer', sdp: 'v=0 offer' });
    const sent = ws.signals()[0]!;
    expect(sent).toMatchObject({ type: 'offer', sdp: 'v=0 offer', to: 'them' });
    expect(typeof sent.session).toBe('string');

    ws.say({ type: 'answer', sdp: 'v=0 answer', from: 'them', session: sent.session });
    expect(peer.given).toEqual([{ type: 'answer', sdp: 'v=0 answer' }]);
    peer.emit('connect');
    expect(client.state).toBe('connected');
  });

  it('the first in the call waits, answers, and starts a new pair when an offer for a new pair arrives', () => {
    const client = newClient();
    const ws = lastSocket().accept(welcome());
    expect(client.state).toBe('waiting');
    ws.say({ type: 'peer-joined', peerId: 'them' });
    const first = lastPeer();
    expect(first.opts.initiator).toBe(false);
    expect(client.state).toBe('connecting');

    ws.say({ type: 'offer', sdp: 'offer 1', from: 'them', session: 's1' });
    first.emit('signal', { type: 'answer', sdp: 'answer 1' });
    expect(ws.signals().at(-1)).toEqual({ type: 'answer', sdp: 'answer 1', to: 'them', session: 's1' });
    first.emit('connect');
    expect(client.state).toBe('connected');

    ws.say({ type: 'candidate', candidate: { candidate: 'candidate:old' }, from: 'them', session: 's0' });
    expect(first.given).toHaveLength(1); // a signal from an older pair is dropped

    ws.say({ type: 'offer', sdp: 'offer 2', from: 'them', session: 's2' });
    const second = lastPeer();
    expect(second).not.toBe(first);
    expect(first.destroyed).toBe(true);
    expect(second.given).toEqual([{ type: 'offer', sdp: 'offer 2' }]);
    expect(client.state).toBe('reconnecting');
    second.emit('connect');
    expect(client.state).toBe('connected');
  });

  it('when the media fails, the side that offered builds a new pair and offers again', () => {
    vi.useFakeTimers();
    const { client, ws, peer } = connectedNewcomer();
    peer.emit('signal', { type: 'offer', sdp: 'offer 1' });
    const firstSession = ws.signals()[0]!.session;
    peer.fail();
    expect(client.state).toBe('reconnecting');
    expect(client.reason).toBe('media');
    vi.advanceTimersByTime(1000);
    const rebuilt = lastPeer();
    expect(rebuilt).not.toBe(peer);
    expect(rebuilt.opts.initiator).toBe(true);
    rebuilt.emit('signal', { type: 'offer', sdp: 'offer 2' });
    const offer = ws.signals().at(-1)!;
    expect(offer).toMatchObject({ type: 'offer', sdp: 'offer 2', to: 'them' });
    expect(offer.session).not.toBe(firstSession);
    ws.say({ type: 'answer', sdp: 'late answer 1', from: 'them', session: firstSession });
    expect(rebuilt.given).toEqual([]);
  });

  it('a dropped connection resumes the seat with its token on the next server, then sends the signals kept meanwhile', () => {
    vi.useFakeTimers();
    const { client, ws, peer } = connectedNewcomer();
    ws.drop(1006);
    expect(client.state).toBe('reconnecting');
    expect(client.reason).toBe('signaling');
    expect(client.mediaConnected).toBe(true);
    peer.emit('signal', { type: 'candidate', candidate: { candidate: 'candidate:kept', sdpMid: '0', sdpMLineIndex: 0 } });

    vi.advanceTimersByTime(500); // attempt 0 waits 250-500 ms
    const next = lastSocket();
    expect(next).not.toBe(ws);
    expect(next.url).toBe('ws://two.test/ws/call/abc?resume=token-1');
    next.accept(welcome({ peers: ['them'], resumed: true, resumeToken: 'token-2' }));
    expect(next.signals()).toEqual([
      expect.objectContaining({ type: 'candidate', candidate: { candidate: 'candidate:kept', sdpMid: '0', sdpMLineIndex: 0 }, to: 'them' }),
    ]);
    expect(client.state).toBe('connected');
    expect(FakePeer.all).toHaveLength(1);
    expect(peer.destroyed).toBe(false);
    expect(client.resumeToken).toBe('token-2');
  });

  it('a resume the server refuses (4401) joins afresh, keeping the old media until a new pair is up', () => {
    vi.useFakeTimers();
    const { client, ws } = connectedNewcomer();
    ws.drop(1012, 'server restart');
    vi.advanceTimersByTime(500);
    const refused = lastSocket();
    expect(refused.url).toContain('resume=token-1');
    refused.accept({ type: 'error', code: 'unauthorized', message: 'This resume token is not valid.' });
    refused.drop(4401);
    vi.advanceTimersByTime(0);
    const fresh = lastSocket();
    expect(fresh).not.toBe(refused);
    expect(fresh.url).toBe('ws://one.test/ws/call/abc');
    fresh.accept(welcome({ peerId: 'me-again', resumeToken: 'token-3', peers: [] }));
    // The old pair's media still flows, so the person stays in their call until a new pair is up.
    const oldPeer = lastPeer();
    expect(client.state).toBe('connected');
    expect(client.peerId).toBe('me-again');
    expect(oldPeer.destroyed).toBe(false);

    fresh.say({ type: 'peer-joined', peerId: 'them-again' });
    const newPeer = lastPeer();
    expect(newPeer.opts.initiator).toBe(false);
    fresh.say({ type: 'offer', sdp: 'offer', from: 'them-again', session: 'n1' });
    newPeer.emit('connect');
    expect(oldPeer.destroyed).toBe(true);
    expect(client.peers).toEqual(['them-again']);
    expect(client.state).toBe('connected');
  });

  it('a full call, an invalid call id, and the end of the call are final, with no reconnecting', () => {
    vi.useFakeTimers();
    const full = newClient();
    lastSocket().accept({ type: 'error', code: 'call-full', message: 'This call already has 2 people in it.' }).drop(4409);
    const invalid = newClient();
    lastSocket().drop(4400);
    const ended = newClient();
    lastSocket().accept(welcome()).say({ type: 'call-ended', reason: 'ended by the server' });
    const sockets = FakeSocket.all.length;
    vi.advanceTimersByTime(60_000);
    expect([full.state, invalid.state, ended.state]).toEqual(['full', 'error', 'ended']);
    expect([full.reason, invalid.reason, ended.reason]).toEqual(['call-full', 'invalid-call-id', 'call-ended']);
    expect(FakeSocket.all).toHaveLength(sockets);
  });

  it('hanging up says bye, closes the media and ends the call', () => {
    const { client, ws, peer } = connectedNewcomer();
    client.hangUp();
    expect(ws.sent.at(-1)).toEqual({ type: 'bye' });
    expect(peer.destroyed).toBe(true);
    expect(client.state).toBe('ended');
    expect(client.reason).toBe('hangup');
  });

  it('a server that stops answering pings is given up on, and the seat resumed', () => {
    vi.useFakeTimers();
    const { client, ws } = connectedNewcomer();
    vi.advanceTimersByTime(15_000);
    expect(ws.sent.at(-1)).toEqual({ type: 'ping' });
    vi.advanceTimersByTime(10_000);
    expect(ws.closedWith).toBe(4000);
    expect(client.state).toBe('reconnecting');
    vi.advanceTimersByTime(500);
    expect(lastSocket().url).toContain('resume=token-1');
  });

  it('the person who left is removed, and the one who stays is waiting again', () => {
    const { client, ws, peer } = connectedNewcomer();
    const left: unknown[] = [];
    client.addEventListener('peerleft', (e) => left.push(e.detail));
    ws.say({ type: 'peer-left', peerId: 'them', reason: 'hangup' });
    expect(left).toEqual([{ peerId: 'them', reason: 'hangup' }]);
    expect(peer.destroyed).toBe(true);
    expect(client.state).toBe('waiting');
  });

  it('reconnect delays double up to a cap, each with jitter', () => {
    const backoff = { baseMs: 500, maxMs: 15_000 };
    const low = [0, 1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, backoff, () => 0));
    const high = [0, 1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, backoff, () => 1));
    expect(high).toEqual([500, 1000, 2000, 4000, 8000, 15_000, 15_000]);
    expect(low).toEqual(high.map((d) => d / 2));
  });
});
