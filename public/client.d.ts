/** Types for client.js (CallClient), for apps and tests written in TypeScript. See client.js for the docs. */

/** Structural stand-ins for the DOM types, so this file also typechecks without the DOM lib. */
export interface MediaStreamLike {
  getTracks(): Array<{ kind: string; enabled: boolean; stop(): void }>;
}
export interface RTCIceServerLike {
  urls: string | string[];
  username?: string;
  credential?: string;
}
export interface RTCPeerConnectionLike {
  readonly connectionState: string;
  getStats(): Promise<Map<string, any>>;
}
type ListenerOptions = boolean | { once?: boolean; capture?: boolean; passive?: boolean; signal?: AbortSignal };

/** A call state, as `client.state` and the page's `data-call-state`. */
export type CallState = 'idle' | 'waiting' | 'connecting' | 'connected' | 'reconnecting' | 'ended' | 'full' | 'error';

/** The states a call can be in. */
export declare const CALL_STATES: readonly CallState[];

/** A call id: 1 to 64 of `A-Z a-z 0-9 _ -`. */
export declare const CALL_ID: RegExp;

/** This page's own origin as a WebSocket base URL. */
export declare function sameOriginServer(): string;

/** Reconnect backoff settings. */
export interface Backoff {
  /** First delay ceiling in ms (default 500). */
  baseMs: number;
  /** Largest delay ceiling in ms (default 15000). */
  maxMs: number;
}

/** Delay before reconnect attempt `attempt` (0-based): exponential, capped, half of it random. */
export declare function backoffDelay(attempt: number, backoff: Backoff, random?: () => number): number;

/** A simple-peer constructor (window.SimplePeer from /vendor/simplepeer.min.js). */
export type SimplePeerConstructor = new (opts: Record<string, unknown>) => {
  signal(data: unknown): void;
  destroy(err?: Error): void;
  on(event: string, listener: (...args: any[]) => void): unknown;
};

/** Options of `new CallClient(...)`. */
export interface CallClientOptions {
  callId: string;
  stream?: MediaStreamLike | null;
  servers?: string[];
  token?: string;
  SimplePeer?: SimplePeerConstructor;
  peerOptions?: Record<string, unknown>;
  backoff?: Partial<Backoff>;
  connectTimeoutMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  resumeWindowMs?: number;
  /** The WebSocket constructor (default globalThis.WebSocket). */
  WebSocket?: unknown;
}

/** The `detail` of each event CallClient dispatches. */
export interface CallClientEvents {
  statechange: { state: CallState; previous: CallState; reason: string };
  welcome: { peerId: string; resumed: boolean; peers: string[]; server: string; polite: boolean; maxPeers: number };
  peerjoined: { peerId: string };
  peerreconnected: { peerId: string };
  peerleft: { peerId: string; reason: string };
  remotestream: { peerId: string; stream: MediaStreamLike };
  remotestreamended: { peerId: string };
  peerstate: { peerId: string; state: 'connecting' | 'connected' | 'interrupted' | 'failed' };
  retry: { attempt: number; delayMs: number; server: string; afterDrop: boolean };
  servererror: { code: string; message: string };
  log: { message: string };
}

/** Joins one call and keeps the person in it through drops and restarts. */
export declare class CallClient extends EventTarget {
  constructor(options: CallClientOptions);
  readonly callId: string;
  readonly servers: string[];
  stream: MediaStreamLike | null;
  /** The server-assigned id of this peer ('' before the first welcome). */
  readonly peerId: string;
  readonly resumeToken: string;
  readonly iceServers: RTCIceServerLike[];
  readonly polite: boolean;
  readonly maxPeers: number;
  readonly state: CallState;
  readonly reason: string;
  readonly peers: string[];
  readonly server: string;
  readonly retryAt: number;
  readonly mediaConnected: boolean;
  peerConnections(): Map<string, RTCPeerConnectionLike>;
  join(): void;
  hangUp(): void;
  reconnectNow(): void;
  addEventListener<K extends keyof CallClientEvents>(type: K, listener: (event: CustomEvent<CallClientEvents[K]>) => void, options?: ListenerOptions): void;
  addEventListener(type: string, listener: (event: Event) => void, options?: ListenerOptions): void;
}
