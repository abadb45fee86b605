/**
 * CallClient: a small, framework-free ES module that joins a call on a callsig server
 * (signaling protocol v1) and runs the WebRTC media with simple-peer. No build step.
 *
 *   <script src="/vendor/simplepeer.min.js"></script>   <!-- sets window.SimplePeer -->
 *   <script type="module">
 *     import { CallClient } from '/client.js';
 *     const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
 *     const client = new CallClient({ callId: 'abc123', stream });
 *     client.addEventListener('statechange', (e) => console.log(e.detail.state, e.detail.reason));
 *     client.addEventListener('remotestream', (e) => { video.srcObject = e.detail.stream; });
 *     client.join();
 *     // later: client.hangUp();
 *   </script>
 *
 * Options (only `callId` is required):
 *   callId       the call to join (1-64 of A-Z a-z 0-9 _ -).
 *   stream       the local MediaStream to send, or null to receive only. Mute by toggling its
 *                tracks' `enabled`; the client never renegotiates.
 *   servers      WebSocket base URLs of the same deployment, e.g. ['wss://a.example', 'wss://b.example'].
 *                The client connects to `${server}/ws/call/${callId}` and, each time a connection
 *                fails or drops, moves on to the next one and resumes its seat there with its resume
 *                token. Default: this page's own origin. Every entry must reach the same calls (one
 *                deployment sharing a channel layer) and accept this page's Origin (ALLOWED_ORIGINS).
 *   token        access token, sent as `?token=` where the server requires one.
 *   SimplePeer   the simple-peer constructor (default: globalThis.SimplePeer).
 *   peerOptions  extra simple-peer options (e.g. { trickle: false }).
 *   backoff      { baseMs: 500, maxMs: 15000 }: reconnect delays double from baseMs up to maxMs, with jitter.
 *   connectTimeoutMs  give up on a connection attempt that has no `welcome` after this long (10000).
 *   pingIntervalMs    send {"type":"ping"} this often (15000); a socket silent for pongTimeoutMs
 *                     (10000) after a ping is treated as dropped, since a dead network may never close it.
 *   resumeWindowMs    how long to keep trying to resume the old seat (35000, a little over the server's
 *                     default 30 s grace) before joining the call afresh.
 *
 * State (`client.state`, and `statechange` events with { state, previous, reason }):
 *   idle          not joined yet
 *   connecting    joining the call (reason 'joining', or 'retrying' while the server cannot be reached),
 *                 or someone is here and the media is being set up (reason 'negotiating')
 *   waiting       alone in the call
 *   connected     media flows with at least one other person
 *   reconnecting  after having joined: the link to the server dropped and the seat is being resumed
 *                 (reason 'signaling'; media between browsers keeps flowing meanwhile), or the media
 *                 to someone failed and is being rebuilt (reason 'media')
 *   ended         hung up (reason 'hangup') or the call was ended by the server (reason 'call-ended')
 *   full          the call already has its maximum number of people (error call-full, close 4409)
 *   error         reason 'invalid-call-id' (HTTP 400 / close 4400), 'unauthorized' (4401/4403),
 *                 'no-webrtc' or 'no-simple-peer'
 *
 * Other events (CustomEvent, data in `detail`): welcome { peerId, resumed, peers, server, polite, maxPeers },
 * peerjoined / peerreconnected { peerId }, peerleft { peerId, reason }, remotestream { peerId, stream },
 * remotestreamended { peerId }, peerstate { peerId, state: 'connecting'|'connected'|'interrupted'|'failed' },
 * retry { attempt, delayMs, server, afterDrop }, servererror { code, message } (errors that leave the
 * connection open, e.g. unknown-peer), log { message } (one line per notable event, for consoles).
 *
 * How the media is set up: the newcomer (whoever found someone already in the call) creates the
 * simple-peer initiator and makes the offer; the other side answers. Roles stay fixed for the pair,
 * also across resumes. simple-peer cannot restart ICE, so when a pair's media fails the initiator
 * builds a new Peer and offers again inside the same call; the other side builds a new Peer when
 * that offer arrives. Signals are sent exactly as simple-peer emits them, addressed with `to`, plus
 * one extra field the server passes through: `session`, an id the initiator picks for each Peer
 * pair, so a late signal from a replaced pair is dropped instead of breaking the new one. Signals
 * without `session` (other clients) are given to the current pair.
 */

/** The states a call can be in, as `client.state` and the page's `data-call-state`. */
export const CALL_STATES = Object.freeze(['idle', 'waiting', 'connecting', 'connected', 'reconnecting', 'ended', 'full', 'error']);

/** A call id: 1 to 64 of `A-Z a-z 0-9 _ -` (protocol.md). */
export const CALL_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** The signal types the server relays between peers. */
const SIGNAL_TYPES = new Set(['offer', 'answer', 'pranswer', 'rollback', 'candidate', 'renegotiate', 'transceiverRequest']);

/** Signals kept while the server cannot be reached; beyond this the oldest are dropped. */
const MAX_QUEUED_SIGNALS = 1000;

const DEFAULTS = Object.freeze({
  backoff: Object.freeze({ baseMs: 500, maxMs: 15_000 }),
  connectTimeoutMs: 10_000,
  pingIntervalMs: 15_000,
  pongTimeoutMs: 10_000,
  resumeWindowMs: 35_000,
});

/** This page's own origin as a WebSocket base URL. */
export function sameOriginServer() {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}`;
}

const randomId = () => {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
};

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped, with "equal jitter"
 * (half fixed, half random) so a server restart is not met by every client at the same instant.
 */
export function backoffDelay(attempt, { baseMs, maxMs }, random = Math.random) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** One other person in the call: the simple-peer pair to them, rebuilt when its media fails. */
class PeerLink {
  constructor(remoteId, initiator) {
    /** The other peer's server-assigned id. */
    this.remoteId = remoteId;
    /** True when this side makes the offers (it joined after the other); fixed for the pair. */
    this.initiator = initiator;
    /** The current simple-peer instance, or null between a failure and the rebuild. */
    this.peer = null;
    /** The id of the current Peer pair, chosen by the initiator. */
    this.session = '';
    /** 'connecting' | 'connected' | 'interrupted' | 'failed' */
    this.state = 'connecting';
    /** True once media has flowed on any pair: a later failure is a reconnection. */
    this.everConnected = false;
    /** Consecutive rebuilds without reaching 'connected' (spaces the rebuilds out). */
    this.rebuilds = 0;
    this.rebuildTimer = null;
    /** The remote MediaStream of the current pair. */
    this.stream = null;
    /** True once the current (answering) Peer has been given an offer. */
    this.offered = false;
  }
}

/** Joins one call and keeps the person in it through drops and restarts. See the header. */
export class CallClient extends EventTarget {
  constructor(options) {
    super();
    if (!options || typeof options.callId !== 'string') throw new TypeError('CallClient needs { callId }.');
    this.callId = options.callId;
    this.stream = options.stream ?? null;
    this.servers = (options.servers && options.servers.length ? [...options.servers] : [sameOriginServer()]).map((s) => s.replace(/\/+$/, ''));
    this.token = options.token;
    this.SimplePeer = options.SimplePeer ?? globalThis.SimplePeer;
    this.peerOptions = options.peerOptions ?? {};
    this.backoff = { ...DEFAULTS.backoff, ...options.backoff };
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
    this.pingIntervalMs = options.pingIntervalMs ?? DEFAULTS.pingIntervalMs;
    this.pongTimeoutMs = options.pongTimeoutMs ?? DEFAULTS.pongTimeoutMs;
    this.resumeWindowMs = options.resumeWindowMs ?? DEFAULTS.resumeWindowMs;
    /** False when the caller set resumeWindowMs itself: then the server's resumeGrace does not override it. */
    this._resumeWindowFromServer = options.resumeWindowMs === undefined;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;

    /** 'idle' | 'joining' | 'in-call' | 'away' (seat held, socket lost) | 'ended' | 'full' | 'error' */
    this._phase = 'idle';
    this._state = 'idle';
    this._reason = '';
    this.peerId = '';
    this.resumeToken = '';
    this.iceServers = [];
    this.polite = false;
    this.maxPeers = 2;
    /** @type {Map<string, PeerLink>} */
    this._links = new Map();
    /** Links from a seat we lost, kept while their media still flows (see _onWelcome). */
    this._orphans = new Set();
    this._ws = null;
    this._serverIndex = 0;
    this._attempt = 0;
    this._droppedAt = 0;
    this._retryTimer = null;
    this._retryAt = 0;
    this._connectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    /** Signals waiting for the seat to be resumed. */
    this._outbox = [];
    /** True once the current socket has had its welcome. */
    this._welcomed = false;
    /** The error code the server sent just before closing (its close code says the same). */
    this._pendingRefusal = undefined;
    this._onOnline = () => { if (this._retryTimer) this.reconnectNow(); };
  }

  /** The call state: one of CALL_STATES. */
  get state() {
    return this._state;
  }

  /** Why the call is in its state (e.g. 'signaling' or 'media' when reconnecting). */
  get reason() {
    return this._reason;
  }

  /** The ids of the other people in the call. */
  get peers() {
    return [...this._links.keys()];
  }

  /** The WebSocket base URL in use (or being tried). */
  get server() {
    return this.servers[this._serverIndex];
  }

  /** When the next reconnect attempt is due (ms since epoch), or 0. */
  get retryAt() {
    return this._retryTimer ? this._retryAt : 0;
  }

  /** True when media flows to at least one person (including from a seat we lost). */
  get mediaConnected() {
    for (const link of this._allLinks()) if (link.state === 'connected') return true;
    return false;
  }

  /** The RTCPeerConnections in use, by remote peer id (for getStats). */
  peerConnections() {
    const out = new Map();
    for (const link of this._links.values()) if (link.peer && link.peer._pc) out.set(link.remoteId, link.peer._pc);
    return out;
  }

  /** Joins the call. */
  join() {
    if (this._phase !== 'idle') return;
    if (!CALL_ID.test(this.callId)) return this._finish('error', 'invalid-call-id');
    if (typeof this.SimplePeer !== 'function') return this._finish('error', 'no-simple-peer');
    if (typeof globalThis.RTCPeerConnection !== 'function') return this._finish('error', 'no-webrtc');
    globalThis.addEventListener?.('online', this._onOnline);
    this._phase = 'joining';
    this._updateState('joining');
    this._connect();
  }

  /** Hangs up: tells the others (`bye`), closes everything. The client cannot be reused. */
  hangUp() {
    if (this._isFinished()) return;
    const ws = this._ws;
    if (ws && ws.readyState === 1 && this.peerId) {
      ws.send(JSON.stringify({ type: 'bye' }));
      this._detachSocket(ws, false); // the server closes it with 1000 once the others are told
      setTimeout(() => ws.readyState === 1 && ws.close(1000, 'bye'), 3000);
    } else if (ws) {
      this._detachSocket(ws, true);
    }
    this._finish('ended', 'hangup');
  }

  /** Skips the wait before the next reconnect attempt. */
  reconnectNow() {
    if (!this._retryTimer) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._connect();
  }

  // Signaling connection ------------------------------------------------------------------------

  _connect() {
    this._retryTimer = null;
    if (this._isFinished()) return;
    if (this.resumeToken && this._droppedAt && Date.now() - this._droppedAt > this.resumeWindowMs) {
      this._log(`gave up resuming the old seat after ${Math.round((Date.now() - this._droppedAt) / 1000)} s; joining afresh`);
      this.resumeToken = '';
    }
    const url = new URL(`${this.server}/ws/call/${encodeURIComponent(this.callId)}`);
    if (this.resumeToken) url.searchParams.set('resume', this.resumeToken);
    if (this.token) url.searchParams.set('token', this.token);
    let ws;
    try {
      ws = new this.WebSocket(url.href);
    } catch (err) {
      this._log(`cannot open ${this.server}: ${err.message}`);
      return this._scheduleReconnect();
    }
    this._ws = ws;
    this._welcomed = false;
    ws.onmessage = (ev) => this._onFrame(ws, ev.data);
    ws.onclose = (ev) => this._onClose(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // a close event always follows
    this._connectTimer = setTimeout(() => {
      this._log(`no answer from ${this.server} in ${this.connectTimeoutMs} ms`);
      this._detachSocket(ws, true);
      this._scheduleReconnect();
    }, this.connectTimeoutMs);
  }

  _onFrame(ws, data) {
    if (ws !== this._ws) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return this._log('ignored a frame that is not JSON');
    }
    if (!msg || typeof msg.type !== 'string') return;
    clearTimeout(this._pongTimer); // anything from the server shows the connection is alive
    this._pongTimer = null;
    switch (msg.type) {
      case 'welcome': return this._onWelcome(msg);
      case 'peer-joined': return this._onPeerJoined(msg.peerId);
      case 'peer-reconnected': return this._onPeerReconnected(msg.peerId);
      case 'peer-left': return this._onPeerLeft(msg.peerId, msg.reason);
      case 'call-ended': return this._finish('ended', 'call-ended');
      case 'error': return this._onServerError(msg);
      case 'pong': return undefined;
      default:
        if (SIGNAL_TYPES.has(msg.type)) return this._onSignal(msg);
        return this._log(`ignored an unknown message type "${msg.type}"`);
    }
  }

  _onWelcome(msg) {
    clearTimeout(this._connectTimer);
    const wasInCall = Boolean(this.peerId);
    this._welcomed = true;
    this._attempt = 0;
    this._droppedAt = 0;
    this.resumeToken = msg.resumeToken;
    this.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
    this.polite = Boolean(msg.polite);
    this.maxPeers = msg.maxPeers ?? this.maxPeers;
    const peers = Array.isArray(msg.peers) ? msg.peers : [];
    if (msg.resumed && msg.peerId === this.peerId) {
      // Same seat: keep every pair. Anyone gone meanwhile has left; anyone new joined after us
      // (so they make the offer, which waits for us in the inbox and follows this welcome).
      for (const id of [...this._links.keys()]) if (!peers.includes(id)) this._removeLink(id, 'left');
      for (const id of peers) if (!this._links.has(id)) this._addLink(id, false);
      this._flushOutbox();
    } else {
      // A fresh seat. Pairs from a lost seat whose media still flows stay up as orphans until a
      // new pair connects (so a server that lost its memory does not cut a working call).
      for (const id of [...this._links.keys()]) {
        const link = this._links.get(id);
        this._links.delete(id);
        if (link.state === 'connected') this._orphans.add(link);
        else this._destroyLink(link);
      }
      this._outbox = [];
      this.peerId = msg.peerId;
      for (const id of peers) this._addLink(id, true); // we are the newcomer: we offer
    }
    // The server says how long it keeps a dropped seat; try to resume a little longer than that.
    if (typeof msg.resumeGrace === 'number' && msg.resumeGrace > 0 && this._resumeWindowFromServer !== false) {
      this.resumeWindowMs = msg.resumeGrace * 1000 + 5_000;
    }
    this._phase = 'in-call';
    this._log(`${msg.resumed ? 'resumed seat' : 'joined'} as ${msg.peerId} on ${this.server} (${peers.length} other${peers.length === 1 ? '' : 's'} here${wasInCall && !msg.resumed ? ', after losing the old seat' : ''})`);
    this._emit('welcome', { peerId: msg.peerId, resumed: Boolean(msg.resumed), peers, server: this.server, polite: this.polite, maxPeers: this.maxPeers });
    this._startPing();
    this._updateState();
  }

  _onServerError(msg) {
    const code = String(msg.code);
    this._log(`server says ${code}: ${msg.message ?? ''}`);
    if (code === 'call-full') this._pendingRefusal = 'call-full';
    else if (code === 'invalid-call-id') this._pendingRefusal = 'invalid-call-id';
    else if (code === 'unauthorized') this._pendingRefusal = 'unauthorized';
    else if (code !== 'server-restart' && code !== 'rate-limited' && code !== 'too-large') this._emit('servererror', { code, message: msg.message });
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    const refusal = this._pendingRefusal;
    this._pendingRefusal = undefined;
    this._detachSocket(ws, false);
    if (this._isFinished()) return;
    this._log(`connection to ${this.server} closed (${code}${reason ? ` ${reason}` : ''})`);
    if (code === 4400 || refusal === 'invalid-call-id') return this._finish('error', 'invalid-call-id');
    if (code === 4409 || refusal === 'call-full') {
      // Rejoining after a lost seat can meet the old seat still held for its grace period: wait it out.
      if (this.peerId && Date.now() - this._droppedAt < 2 * this.resumeWindowMs) return this._scheduleReconnect();
      return this._finish('full', 'call-full');
    }
    if (code === 4401 || code === 4403 || refusal === 'unauthorized') {
      if (this.resumeToken) {
        this._log('the server no longer holds our seat; joining afresh');
        this.resumeToken = '';
        return this._scheduleReconnect(true);
      }
      return this._finish('error', 'unauthorized');
    }
    this._scheduleReconnect();
  }

  /** Waits (exponential backoff with jitter), then tries the next server in the list. */
  _scheduleReconnect(immediately = false) {
    if (this._isFinished() || this._retryTimer) return;
    const afterDrop = Boolean(this.peerId);
    if (afterDrop && !this._droppedAt) this._droppedAt = Date.now();
    if (this._phase === 'in-call') this._phase = 'away';
    this._serverIndex = (this._serverIndex + 1) % this.servers.length;
    const delayMs = immediately ? 0 : backoffDelay(this._attempt, this.backoff);
    this._attempt += 1;
    this._retryAt = Date.now() + delayMs;
    this._retryTimer = setTimeout(() => this._connect(), delayMs);
    this._emit('retry', { attempt: this._attempt, delayMs, server: this.server, afterDrop });
    this._updateState(afterDrop ? undefined : 'retrying');
  }

  /** Stops listening to a socket (closing it when asked) and forgets it. */
  _detachSocket(ws, close) {
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    if (close) {
      try {
        ws.close(4000, 'client gave up on this connection');
      } catch {
        // already closing
      }
    }
    if (ws === this._ws) {
      this._ws = null;
      clearTimeout(this._connectTimer);
      this._stopPing();
    }
  }

  /** Browsers cannot send ping frames: app-level pings find a network that died without a close. */
  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      const ws = this._ws;
      if (!ws || ws.readyState !== 1) return;
      ws.send('{"type":"ping"}');
      if (!this._pongTimer) {
        this._pongTimer = setTimeout(() => {
          this._log(`no answer from ${this.server} for ${this.pongTimeoutMs} ms; reconnecting`);
          this._detachSocket(ws, true);
          this._scheduleReconnect();
        }, this.pongTimeoutMs);
      }
    }, this.pingIntervalMs);
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
  }

  /** Sends a signal now, or keeps it until the seat is resumed. */
  _sendSignal(link, signal) {
    const message = { ...signal, to: link.remoteId, session: link.session };
    const ws = this._ws;
    if (ws && ws.readyState === 1 && this._welcomed) {
      ws.send(JSON.stringify(message));
      return;
    }
    this._outbox.push(message);
    if (this._outbox.length > MAX_QUEUED_SIGNALS) this._outbox.shift();
  }

  /** After a resume: sends the kept signals that still belong to a live pair. */
  _flushOutbox() {
    const queued = this._outbox;
    this._outbox = [];
    for (const message of queued) {
      const link = this._links.get(message.to);
      if (!link || link.session !== message.session) continue;
      this._ws.send(JSON.stringify(message));
    }
  }

  // People in the call ---------------------------------------------------------------------------

  _onPeerJoined(peerId) {
    if (!peerId || peerId === this.peerId) return;
    this._log(`${peerId} joined`);
    if (this._links.has(peerId)) this._removeLink(peerId, 'replaced');
    this._addLink(peerId, false); // they are the newcomer: they offer
    this._emit('peerjoined', { peerId });
    this._updateState();
  }

  _onPeerReconnected(peerId) {
    this._log(`${peerId} reconnected to the server`);
    const link = this._links.get(peerId);
    if (!link) this._addLink(peerId, false);
    else if (link.initiator && !link.peer && !link.rebuildTimer) this._rebuild(link, 0);
    this._emit('peerreconnected', { peerId });
  }

  _onPeerLeft(peerId, reason) {
    if (!this._links.has(peerId)) return;
    this._log(`${peerId} left (${reason})`);
    this._removeLink(peerId, reason);
    this._emit('peerleft', { peerId, reason });
    this._updateState();
  }

  _addLink(peerId, initiator) {
    const link = new PeerLink(peerId, initiator);
    this._links.set(peerId, link);
    if (initiator) this._startPeer(link, randomId());
    else this._startPeer(link, ''); // waits for the offer (whose session it then takes)
    return link;
  }

  _removeLink(peerId, reason) {
    const link = this._links.get(peerId);
    if (!link) return;
    this._links.delete(peerId);
    this._destroyLink(link);
    this._log(`closed the media to ${peerId} (${reason})`);
  }

  _destroyLink(link) {
    clearTimeout(link.rebuildTimer);
    link.rebuildTimer = null;
    const peer = link.peer;
    link.peer = null;
    link.state = 'failed';
    if (peer) peer.destroy();
    if (link.stream) {
      link.stream = null;
      this._emit('remotestreamended', { peerId: link.remoteId });
    }
  }

  _allLinks() {
    return [...this._links.values(), ...this._orphans];
  }

  // Media (simple-peer) ----------------------------------------------------------------------------

  _startPeer(link, session) {
    const peer = new this.SimplePeer({
      initiator: link.initiator,
      config: { iceServers: this.iceServers }, // the server's list, never simple-peer's defaults
      stream: this.stream ?? undefined,
      // Ask for both kinds even when sending neither, so the answerer's tracks fit the first offer
      // and no renegotiation (which this client never does) is needed.
      offerOptions: { offerToReceiveAudio: true, offerToReceiveVideo: true },
      ...this.peerOptions,
    });
    link.peer = peer;
    link.session = session;
    link.offered = false;
    this._setLinkState(link, 'connecting');
    peer.on('signal', (signal) => {
      if (link.peer === peer) this._sendSignal(link, signal);
    });
    peer.on('stream', (stream) => {
      if (link.peer !== peer) return;
      link.stream = stream;
      this._emit('remotestream', { peerId: link.remoteId, stream });
    });
    peer.on('connect', () => {
      if (link.peer !== peer) return;
      link.everConnected = true;
      link.rebuilds = 0;
      this._setLinkState(link, 'connected');
      this._log(`media connected with ${link.remoteId}`);
      this._dropOrphans();
    });
    peer.on('iceStateChange', (ice) => {
      if (link.peer !== peer) return;
      if (ice === 'disconnected' && link.state === 'connected') this._setLinkState(link, 'interrupted');
      else if ((ice === 'connected' || ice === 'completed') && link.state === 'interrupted') this._setLinkState(link, 'connected');
    });
    peer.on('error', (err) => {
      if (link.peer === peer) this._log(`media to ${link.remoteId} failed: ${err.code ?? err.message}`);
    });
    peer.on('close', () => {
      if (link.peer === peer) this._onPeerClosed(link);
    });
  }

  /** A pair closed by itself (ICE or connection failure): the initiator rebuilds, the other side waits for its offer. */
  _onPeerClosed(link) {
    link.peer = null;
    if (link.stream) {
      link.stream = null;
      this._emit('remotestreamended', { peerId: link.remoteId });
    }
    if (this._orphans.delete(link)) return this._updateState();
    this._setLinkState(link, 'failed');
    if (this._isFinished() || this._links.get(link.remoteId) !== link) return;
    if (link.initiator) this._rebuild(link, Math.min(10_000, 1000 * 2 ** link.rebuilds));
    else this._log(`waiting for ${link.remoteId} to offer again`);
  }

  _rebuild(link, delayMs) {
    clearTimeout(link.rebuildTimer);
    link.rebuildTimer = setTimeout(() => {
      link.rebuildTimer = null;
      if (this._isFinished() || this._links.get(link.remoteId) !== link || link.peer) return;
      link.rebuilds += 1;
      this._log(`offering again to ${link.remoteId}`);
      this._startPeer(link, randomId());
    }, delayMs);
  }

  _onSignal(msg) {
    const from = msg.from;
    let link = this._links.get(from);
    if (!link) {
      if (msg.type !== 'offer') return this._log(`dropped a ${msg.type} from ${from}, who is not in the call`);
      link = this._addLink(from, false);
    }
    const { from: _from, to: _to, session, ...signal } = msg;
    const current = session === undefined || session === link.session;
    if (link.initiator) {
      if (!current) return; // from a pair we replaced
      if (!link.peer) {
        // The other side wants media while our pair is down: rebuild now rather than later.
        if (signal.type === 'renegotiate' && !link.rebuildTimer) this._rebuild(link, 0);
        return;
      }
    } else if (signal.type === 'offer' && link.peer && !link.offered && link.session === '') {
      link.session = session ?? ''; // the first offer to a fresh Peer names its pair
    } else if (signal.type === 'offer' && (!current || !link.peer)) {
      // A new pair from the initiator (after a failure on either side): start ours afresh.
      if (link.peer) {
        const old = link.peer;
        link.peer = null;
        old.destroy();
      }
      this._startPeer(link, session ?? '');
    } else if (!current || !link.peer) {
      return;
    }
    if (signal.type === 'offer') link.offered = true;
    try {
      link.peer.signal(signal);
    } catch (err) {
      this._log(`could not apply a ${signal.type} from ${from}: ${err.message}`);
    }
  }

  _setLinkState(link, state) {
    if (link.state === state) return;
    link.state = state;
    this._emit('peerstate', { peerId: link.remoteId, state });
    this._updateState();
  }

  _dropOrphans() {
    for (const orphan of this._orphans) {
      this._orphans.delete(orphan);
      this._destroyLink(orphan);
    }
  }

  // State ------------------------------------------------------------------------------------------

  _isFinished() {
    return this._phase === 'ended' || this._phase === 'full' || this._phase === 'error';
  }

  _finish(state, reason) {
    if (this._isFinished()) return;
    this._phase = state;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this._ws) this._detachSocket(this._ws, state !== 'ended' || reason !== 'hangup');
    for (const link of this._allLinks()) this._destroyLink(link);
    this._links.clear();
    this._orphans.clear();
    globalThis.removeEventListener?.('online', this._onOnline);
    this._log(`call ${state} (${reason})`);
    this._setState(state, reason);
  }

  /** Works out the call state from the phase and the pairs. */
  _updateState(hint) {
    if (this._isFinished()) return;
    const links = [...this._links.values()];
    let state;
    let reason;
    if (this._phase === 'idle') [state, reason] = ['idle', ''];
    else if (this._phase === 'joining') [state, reason] = ['connecting', hint ?? (this._retryTimer ? 'retrying' : 'joining')];
    else if (this._phase === 'away') [state, reason] = ['reconnecting', 'signaling'];
    else if (links.some((l) => l.state === 'connected')) [state, reason] = ['connected', 'media'];
    else if (this._orphans.size > 0) [state, reason] = ['connected', 'old-seat']; // media from a lost seat still flows
    else if (links.length === 0) [state, reason] = ['waiting', 'alone'];
    else if (links.some((l) => l.everConnected)) [state, reason] = ['reconnecting', 'media'];
    else [state, reason] = ['connecting', 'negotiating'];
    this._setState(state, reason);
  }

  _setState(state, reason) {
    if (state === this._state && reason === this._reason) return;
    const previous = this._state;
    this._state = state;
    this._reason = reason;
    this._emit('statechange', { state, previous, reason });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _log(message) {
    this._emit('log', { message });
  }
}
