/**
 * The call app: one CallConsumer per WebSocket, relaying signals between the peers of a call
 * through the channel layer, so peers on different workers reach each other.
 *
 * Each connection has a process-specific control channel (the consumer's `channelName`, which
 * its seat records, for call-wide notices and hand-overs) and each seat an inbox channel
 * (`call.<callId>.<peerId>`) that outlives connections: signals to a peer whose socket dropped
 * wait there, in order, until it resumes on any worker or the grace period ends.
 */
import { JsonWebsocketConsumer, RESOLVED, queryParam, type Scope } from '../consumers/index.js';
import type { ChannelLayer, Message, RosterEntry } from '../layers/index.js';
import { defineFlags } from '../layers/flags.js';
import type { Config } from '../config.js';
import { iceServersFor } from './ice.js';
import { isCallId } from './ids.js';
import type { SignalingMetrics } from './metrics.js';
import { ERRORS, errorMessage, parseClientMessage, type ErrorCode } from './protocol.js';
import { RateLimit } from './rate-limit.js';
import type { SeatWatch } from './grace.js';
import { names, Seats, type Seat } from './seats.js';
import { checkAccessToken } from './tokens.js';

/** What the call consumers of one server share. */
export interface CallDeps {
  config: Readonly<Config>;
  metrics: SignalingMetrics;
  seats: Seats;
  /** Grace periods of dropped seats in calls this worker has peers in. */
  watch: SeatWatch;
  /** The message rate each connection is held to (config's rateLimit and rateBurst). */
  rateLimit: RateLimit;
  /** Open connections per client address on this worker. */
  perAddress: Map<string, number>;
  /** Calls with peers on this worker, and how many. */
  localCalls: Map<string, number>;
}

/** Strikes (messages refused by the rate limit) after which a peer is disconnected with 4429. */
const RATE_STRIKES = 20;
/** How long a resuming connection waits for the seat's previous holder to let go (ms). */
const HANDOVER_TIMEOUT = 1500;
/**
 * The call's other peers: the one peer id itself when there is one (a call of two), else an array
 * of exactly their number. A one-element array would cost 56 bytes per idle connection.
 */
type Peers = string | readonly string[];
/** The empty peer list and roster every connection starts with or lets go to (never changed: replaced). */
const NO_PEERS: readonly string[] = Object.freeze([]);
const hasPeer = (peers: Peers, peerId: string): boolean => (typeof peers === 'string' ? peers === peerId : peers.includes(peerId));
const peerList = (peers: Peers): readonly string[] => (typeof peers === 'string' ? [peers] : peers);
/** `list` as Peers: its one id, or a copy of exactly its size. */
const asPeers = (list: readonly string[]): Peers => (list.length === 1 ? list[0]! : list.length === 0 ? NO_PEERS : list.slice());

/** CallConsumer's yes/no states, bits of its `callFlags`. */
const CALL_FLAGS = { resumed: 1, answeredTooLarge: 2, listening: 4, counted: 8, resumeRefused: 16 } as const;

type PrecheckResult = void | { status: number; body?: unknown; headers?: Record<string, string> };

/** True when a WebSocket from `origin` may connect to a server reached as `host`. */
export function originAllowed(config: Pick<Config, 'allowedOrigins'>, origin: string | null, host: string | null): boolean {
  if (!origin) return true; // not a browser: Origin is a browser's protection against cross-site use
  if (config.allowedOrigins.includes('*')) return true;
  if (config.allowedOrigins.length > 0) return config.allowedOrigins.includes(origin);
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}

/**
 * The text to relay for a signal: the object with `from` set. When the client sent no `from`,
 * that is its own frame with `,"from":"…"` put before the closing brace (the frame parsed as this
 * object, so its last non-blank character is that brace), which spares re-serializing kilobytes
 * of SDP for every signal. Otherwise the object is serialized again with the server's `from`.
 */
export function withFrom(signal: Record<string, unknown>, frame: string | undefined, from: string): string {
  if (frame === undefined || Object.hasOwn(signal, 'from')) {
    signal.from = from;
    return JSON.stringify(signal);
  }
  const close = frame.lastIndexOf('}');
  return `${frame.slice(0, close)},"from":${JSON.stringify(from)}}`;
}

const refuse = (status: number, code: string, message: string): PrecheckResult => ({ status, body: { type: 'error', code, message } });

/**
 * The call consumer. Subclassed per server by `createCallConsumer` with that server's `deps`.
 */
export class CallConsumer extends JsonWebsocketConsumer {
    /** The server's shared parts (set on the subclass `createCallConsumer` makes). */
    static deps: CallDeps;
    static override handles = ['signal.relay', 'peer.joined', 'peer.left', 'peer.reconnected', 'call.ended', 'seat.taken', 'seat.released', 'peer.detached'] as const;

    /** Refusals that need no socket: call id form, origin, access token, connections per address. */
    static override async precheck(scope: Scope, layer: ChannelLayer): Promise<PrecheckResult> {
      const { deps } = this;
      const { config, metrics } = deps;
      const callId = scope.params.callId;
      if (!isCallId(callId)) {
        metrics.errors.inc({ code: 'invalid-call-id' });
        return refuse(400, 'invalid-call-id', 'A call id is 1 to 64 letters, digits, "_" or "-".');
      }
      if (!originAllowed(config, scope.headers.get('origin'), scope.headers.get('host'))) {
        metrics.errors.inc({ code: 'unauthorized' });
        return refuse(403, 'unauthorized', 'WebSocket connections from this origin are not allowed.');
      }
      if (config.accessTokenSecret) {
        const why = checkAccessToken(config.accessTokenSecret, queryParam(scope, 'token') ?? undefined, callId);
        if (why) {
          metrics.errors.inc({ code: 'unauthorized' });
          return refuse(401, 'unauthorized', `Refused: ${why}.`);
        }
      }
      if (!layer.isHealthy()) {
        metrics.errors.inc({ code: 'server-restart' });
        return { status: 503, body: { type: 'error', code: 'server-restart', message: 'The server cannot reach its storage just now; try again in a moment.' }, headers: { 'Retry-After': '2' } };
      }
      const open = deps.perAddress.get(scope.client.address) ?? 0;
      if (config.maxConnectionsPerIp > 0 && open >= config.maxConnectionsPerIp) {
        metrics.errors.inc({ code: 'rate-limited' });
        return refuse(429, 'rate-limited', `Too many connections from one address (limit ${config.maxConnectionsPerIp}).`);
      }
    }

    private get deps(): CallDeps {
      return (this.constructor as typeof CallConsumer).deps;
    }

    private get config(): Readonly<Config> {
      return this.deps.config;
    }

    private get metrics(): SignalingMetrics {
      return this.deps.metrics;
    }

    private get seats(): Seats {
      return this.deps.seats;
    }

    private callId = '';
    /**
     * The seat as joining or resuming gave it, until the welcome has been composed: after that
     * the connection keeps only its peer id and data (an idle peer keeps no Seat object).
     */
    private seat: Seat | undefined;
    /** This connection's peer id, once it holds a seat ('' while it holds none). */
    private peerId = '';
    /** The seat's data as this connection last wrote it (for compare-and-set). */
    private seatData = '';
    /** Why this connection no longer holds its seat: it hung up, the call ended, or another connection took the seat. */
    private gone: 'left' | 'ended' | 'superseded' | undefined;
    /**
     * The call's other peers. A few at most (`maxPeers`), kept for the connection's life: one id,
     * or an array replaced on each change (exactly its size; iterating an old one stays safe), not a Set.
     */
    private peers: Peers = NO_PEERS;
    /** This connection's time in the shared rate limit (see RateLimit). */
    private rateTime = 0;
    private strikes = 0;
    /** The text frame being handled, while `receive` runs (`relay` passes it on as it came). */
    private frameText: string | undefined;
    /** `inboxOf`'s last peer and its inbox. */
    private lastPeer = '';
    private lastInbox = '';
    /** The yes/no states below, one bit each (see defineFlags). */
    private callFlags = 0;

    static {
      defineFlags(CallConsumer.prototype, CALL_FLAGS, 'callFlags');
    }

    /** This connection took its seat back with a resume token. */
    private declare resumed: boolean;
    /** A too-large message was answered (so the 1009 close that may follow is not counted twice). */
    private declare answeredTooLarge: boolean;
    /** The seat's inbox is being read. */
    private declare listening: boolean;
    /** The connection is counted in perAddress, localCalls and the metrics. */
    private declare counted: boolean;
    /** The resume token was refused (a connection without a seat was otherwise refused for a full call). */
    private declare resumeRefused: boolean;

    /** Takes the seat (joining, or resuming with a token) before the socket is accepted. */
    protected override async resolveChannelName(): Promise<string> {
      const control = await this.channelLayer.newChannel('conn');
      this.callId = this.scope.params.callId!;
      this.count(+1);
      const token = queryParam(this.scope, 'resume');
      if (token !== null) {
        const result = await this.seats.resume(this.callId, token, control);
        if (!result) {
          this.resumeRefused = true;
          return control;
        }
        this.hold(result.seat);
        this.resumed = true;
        this.metrics.resumes.inc();
        if (result.previous.d === 0 && result.previous.c !== control) await this.takeOver(result.previous.c, control);
      } else {
        const seat = await this.seats.join(this.callId, control);
        if (seat) this.hold(seat);
        else {
          // A seat may be held by a worker that died without letting go: start its grace now.
          await this.deps.watch.reapDead(this.callId).catch((err: unknown) => this.log.warn({ err }, 'could not check the seats of a full call'));
        }
      }
      return control;
    }

    private hold(seat: Seat): void {
      this.seat = seat;
      this.peerId = seat.peerId;
      this.seatData = seat.data;
    }

    /** Tells the connection still holding our seat (a half-open socket, maybe on another worker) to let go, and waits for it briefly. */
    private async takeOver(previous: string, control: string): Promise<void> {
      // Its worker died (SIGKILL, crash): nobody to wait for, the inbox is free.
      if (!(await this.channelLayer.channelOwnerAlive(previous).catch(() => true))) return;
      await this.channelLayer.send(previous, { type: 'seat.taken', peerId: this.peerId, by: control });
      try {
        await this.channelLayer.receive(control, { signal: AbortSignal.timeout(HANDOVER_TIMEOUT) });
      } catch {
        // The previous holder is gone (its worker died): nothing holds the inbox.
      }
    }

    override async connect(): Promise<void> {
      await this.accept();
      if (!this.seat) {
        if (this.resumeRefused) return this.refuse('unauthorized', 'This resume token is not valid for this call (used already, expired, or from another call).');
        return this.refuse('call-full', `This call already has ${this.config.maxPeers} people in it.`);
      }
      const seat = this.seat;
      this.seat = undefined; // the roster as it was at joining, and the token: an idle connection keeps neither
      const others = seat.entries.filter((e) => e.member !== seat.peerId);
      const resumeToken = seat.resumeToken;
      for (const e of others) this.addPeer(e.member);
      await this.sendJson({
        type: 'welcome',
        peerId: seat.peerId,
        resumeToken,
        callId: this.callId,
        peers: others.map((e) => e.member),
        polite: seat.polite,
        iceServers: iceServersFor(this.config, seat.peerId).iceServers,
        maxPeers: this.config.maxPeers,
        resumed: this.resumed,
        resumeGrace: this.config.resumeGrace,
      });
      this.startInbox();
      await this.tellPeers({ type: this.resumed ? 'peer.reconnected' : 'peer.joined', peerId: seat.peerId });
    }

    override receive(frame: { text?: string; bytes?: Uint8Array }): Promise<void> {
      // Not an async function: every client message passes here (see JsonWebsocketConsumer.receive).
      const size = frame.text !== undefined ? (frame.text.length * 3 > this.config.maxMessageBytes ? Buffer.byteLength(frame.text) : frame.text.length) : (frame.bytes?.length ?? 0);
      if (size > this.config.maxMessageBytes) {
        this.answeredTooLarge = true;
        return this.refuse('too-large', `A message may be at most ${this.config.maxMessageBytes} bytes; this one was ${size}.`);
      }
      if (!this.peerId || this.gone) return RESOLVED;
      const rateTime = this.deps.rateLimit.pass(this.rateTime);
      if (rateTime === undefined) {
        this.strikes += 1;
        if (this.strikes >= RATE_STRIKES) return this.refuse('rate-limited', `Too many messages: the limit is ${this.config.rateLimit} a second.`);
        if (this.strikes <= 3) return this.error('rate-limited', `Message dropped: the limit is ${this.config.rateLimit} messages a second.`);
        return RESOLVED;
      }
      this.rateTime = rateTime;
      this.strikes = 0;
      // Read by `relay` before its first await: a handler's body runs at once up to there.
      this.frameText = frame.text;
      try {
        return super.receive(frame);
      } finally {
        this.frameText = undefined;
      }
    }

    protected override async decodeError(): Promise<void> {
      await this.error('bad-message', 'A message must be a JSON object (text frame) with a "type".');
    }

    override receiveJson(content: unknown): Promise<void> {
      const parsed = parseClientMessage(content);
      if (!parsed.ok) return this.error('bad-message', parsed.reason);
      const message = parsed.message;
      switch (message.type) {
        case 'ping':
          return this.sendJson({ type: 'pong' });
        case 'bye':
          return this.hangUp();
        default:
          return this.relay(message as Record<string, unknown> & { type: string; to?: string });
      }
    }

    /**
     * Relays a signal to one peer (`to`) or every other peer, with `from` set by the server. Not
     * an async function: a signal to one known peer that the layer takes at once (InMemory) is
     * relayed without a suspended frame or an await.
     */
    private relay(signal: Record<string, unknown> & { to?: string }): Promise<void> {
      const to = signal.to;
      const frameText = this.frameText; // now: `receive` clears it once this returns
      if (to !== undefined && !hasPeer(this.peers, to)) return this.relayToNewPeer(signal, frameText, to);
      const text = withFrom(signal, frameText, this.peerId);
      if (to !== undefined) return this.relayTo(to, text);
      const peers = this.peers;
      return typeof peers === 'string' ? this.relayTo(peers, text) : this.relayToAll(peers, text);
    }

    /** A `to` this connection does not know (yet): the roster may have it. */
    private async relayToNewPeer(signal: Record<string, unknown>, frameText: string | undefined, to: string): Promise<void> {
      await this.refreshPeers();
      if (!hasPeer(this.peers, to)) return this.error('unknown-peer', `There is no peer "${to.slice(0, 64)}" in this call.`);
      await this.relayTo(to, withFrom(signal, frameText, this.peerId));
    }

    private async relayToAll(peers: readonly string[], text: string): Promise<void> {
      for (const peerId of peers) await this.relayTo(peerId, text);
    }

    /** Hands one signal to a peer's inbox; RESOLVED when the layer took it at once. */
    private relayTo(peerId: string, text: string): Promise<void> {
      const started = performance.now();
      let sending: Promise<void>;
      try {
        sending = this.channelLayer.send(this.inboxOf(peerId), { type: 'signal.relay', text });
      } catch (err) {
        sending = Promise.reject(err);
      }
      if (sending === RESOLVED) {
        this.relayed(started);
        return RESOLVED;
      }
      return sending.then(() => this.relayed(started), (err: unknown) => this.relayFailed(err, peerId, started));
    }

    /**
     * A peer's inbox channel, the last one kept: in a call of two it is always the same, and the
     * same string object lets the layer's lookups reuse its hash (a name built per signal costs
     * hashing it anew at every one of them).
     */
    private inboxOf(peerId: string): string {
      if (peerId !== this.lastPeer) {
        this.lastPeer = peerId;
        this.lastInbox = names.inbox(this.callId, peerId);
      }
      return this.lastInbox;
    }

    private relayed(started: number): void {
      this.metrics.signals.inc();
      this.metrics.layerLatency.observe((performance.now() - started) / 1000);
    }

    private async relayFailed(err: unknown, peerId: string, started: number): Promise<void> {
      this.metrics.layerLatency.observe((performance.now() - started) / 1000);
      if ((err as { code?: string }).code === 'channel-full') {
        await this.error('peer-unavailable', `Peer "${peerId}" is not reading its messages; this one was dropped.`);
      } else {
        // The layer could not take it (storage unreachable beyond its retries): say so, keep the socket.
        this.log.warn({ err, peerId }, 'a signal could not be handed to the channel layer');
        await this.error('unavailable', 'The server could not pass this message on just now; send it again.');
      }
    }

    /** `bye`: frees the seat, tells the others, closes with 1000. */
    private async hangUp(): Promise<void> {
      this.gone = 'left';
      const remaining = await this.seats.leave(this.callId, this.peerId, this.seatData);
      if (remaining) await this.tellPeers({ type: 'peer.left', peerId: this.peerId, reason: 'hangup' }, remaining);
      await this.close(1000, 'bye');
      // Whoever stays may be held by a worker that died unseen (another instance): check once,
      // so a call nobody will come back to is still cleaned up after the grace.
      if (remaining && remaining.length > 0) {
        await this.deps.watch.reapDead(this.callId, remaining).catch((err: unknown) => this.log.warn({ err }, 'could not check the seats left behind'));
      }
    }

    // Handlers for channel layer messages (declared in `handles`).

    signalRelay(message: Message): Promise<void> {
      return this.send({ text: message.text as string });
    }

    async peerJoined(message: Message): Promise<void> {
      const peerId = message.peerId as string;
      if (peerId === this.peerId) return;
      this.addPeer(peerId);
      await this.sendJson({ type: 'peer-joined', peerId });
    }

    async peerReconnected(message: Message): Promise<void> {
      const peerId = message.peerId as string;
      if (peerId === this.peerId) return;
      this.addPeer(peerId);
      await this.sendJson({ type: 'peer-reconnected', peerId });
    }

    async peerLeft(message: Message): Promise<void> {
      const peerId = message.peerId as string;
      if (peerId === this.peerId) return;
      this.peers = asPeers(peerList(this.peers).filter((p) => p !== peerId));
      await this.sendJson({ type: 'peer-left', peerId, reason: message.reason as string });
    }

    async callEnded(message: Message): Promise<void> {
      if (!this.peerId) return;
      this.gone = 'ended';
      await this.sendJson({ type: 'call-ended', reason: (message.reason as string) ?? 'ended' });
      await this.close(1000, 'call ended');
    }

    /** Another connection resumed our seat: stop reading the inbox, say so, and close. */
    async seatTaken(message: Message): Promise<void> {
      if (message.peerId !== this.peerId) return;
      this.gone = 'superseded';
      await this.stopInbox();
      await this.channelLayer.send(message.by as string, { type: 'seat.released' });
      await this.close(1000, 'resumed elsewhere');
    }

    /** A late answer to a hand-over that already timed out: nothing left to do. */
    async seatReleased(): Promise<void> {}

    override async serverShutdown(code: number): Promise<void> {
      if (this.peerId && !this.gone) await this.error('server-restart', 'The server is restarting; reconnect with your resume token.').catch(() => {});
      await this.close(code, 'server restart');
    }

    override async disconnect(code: number): Promise<void> {
      // A frame past the socket's hard limit is cut by ws (1009) before receive() sees it: count it too.
      if (code === 1009 && !this.answeredTooLarge) this.metrics.errors.inc({ code: 'too-large' });
      await this.stopInbox();
      this.count(-1);
      const peerId = this.peerId;
      if (!peerId || this.gone) return;
      const detached = await this.seats.detach(this.callId, peerId, this.seatData);
      if (detached === undefined) return; // the seat was resumed by another connection
      this.deps.watch.watch(this.callId, peerId, detached);
      await this.tellPeers({ type: 'peer.detached', peerId, data: detached });
    }

    /** Another peer's connection dropped: watch its grace here too, in case its worker goes away. */
    async peerDetached(message: Message): Promise<void> {
      if (message.peerId === this.peerId) return;
      this.deps.watch.watch(this.callId, message.peerId as string, message.data as string);
    }

    /** Sends a notice to every other peer's inbox (in order with their signals). */
    private async tellPeers(message: Message, entries?: RosterEntry[]): Promise<void> {
      const targets = entries ? entries.map((e) => e.member) : peerList(this.peers);
      for (const peerId of targets) {
        if (peerId === this.peerId) continue;
        await this.channelLayer.send(names.inbox(this.callId, peerId), message).catch((err: unknown) => {
          this.log.warn({ err, peerId }, 'could not notify a peer');
        });
      }
    }

    private addPeer(peerId: string): void {
      if (!hasPeer(this.peers, peerId)) this.peers = asPeers(peerList(this.peers).concat(peerId));
    }

    private async refreshPeers(): Promise<void> {
      const entries = await this.seats.list(this.callId);
      this.peers = asPeers(entries.map((e) => e.member).filter((p) => p !== this.peerId));
    }

    /** Reads the seat's inbox, through the consumer's queue, for as long as this connection holds the seat. */
    private startInbox(): void {
      this.listen(names.inbox(this.callId, this.peerId));
      this.listening = true;
    }

    /** Stops reading the inbox; resolves once the pending receive has given up (the layer keeps what was not delivered). */
    private async stopInbox(): Promise<void> {
      if (!this.listening) return;
      this.listening = false;
      await this.unlisten(names.inbox(this.callId, this.peerId));
    }

    private async error(code: ErrorCode, message: string): Promise<void> {
      this.metrics.errors.inc({ code: code === 'forbidden' ? 'unauthorized' : code });
      await this.sendJson(errorMessage(code, message));
    }

    /** Answers an error and closes with its close code. */
    private async refuse(code: ErrorCode, message: string): Promise<void> {
      await this.error(code, message);
      await this.close(ERRORS[code].close ?? 1008, code);
    }

    private count(delta: 1 | -1): void {
      if ((delta === 1) === this.counted) return;
      this.counted = delta === 1;
      const address = this.scope.client.address;
      const n = (this.deps.perAddress.get(address) ?? 0) + delta;
      if (n > 0) this.deps.perAddress.set(address, n);
      else this.deps.perAddress.delete(address);
      this.metrics.connections.inc(delta);
      const calls = (this.deps.localCalls.get(this.callId) ?? 0) + delta;
      if (calls > 0) this.deps.localCalls.set(this.callId, calls);
      else this.deps.localCalls.delete(this.callId);
      this.metrics.calls.set(this.deps.localCalls.size);
    }
}

/** Builds the CallConsumer class bound to a server's shared parts. */
export function createCallConsumer(deps: CallDeps): typeof CallConsumer {
  return class extends CallConsumer {
    static override deps = deps;
  };
}
