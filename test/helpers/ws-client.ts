/**
 * A small WebSocket test client over `ws`: every message the server sends is queued (parsed as
 * JSON) from the moment the socket exists, so none is missed between `open` and a test's first
 * `next()`. Refused upgrades are read with `expectHttpRefusal`.
 */
import WebSocket from 'ws';

/** A message received from the server: parsed JSON, or a marker for a frame that was not JSON text. */
export type Received = Record<string, unknown> & { type?: unknown };

/** How a socket closed. */
export interface Closed {
  code: number;
  reason: string;
}

/** Options for `connect` and `expectHttpRefusal`. */
export interface ConnectOptions {
  /** The Origin header to send (none by default, like a non-browser client). */
  origin?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Answer the server's ping frames (default true, as browsers do). */
  autoPong?: boolean;
  /** How long to wait for the upgrade (default 5 s). */
  timeoutMs?: number;
}

/** What to wait for: a message type, or a predicate. */
export type Match = string | ((m: Received) => boolean);

/** A connected test client. */
export interface TestClient {
  readonly ws: WebSocket;
  /** Messages received and not yet taken by `next`, oldest first. */
  readonly queue: Received[];
  /** Every message received so far, in order (taken or not). */
  readonly log: Received[];
  /** How many WebSocket ping frames the server has sent. */
  readonly pings: number;
  /** Resolves with the close code and reason once the socket has closed. */
  readonly closed: Promise<Closed>;
  /** True once the socket has closed. */
  readonly isClosed: boolean;
  /**
   * Takes the first queued message that matches (any message when no match is given), waiting up
   * to `timeoutMs`. Messages that do not match stay queued. Rejects on timeout, or as soon as the
   * socket closes with no matching message queued.
   */
  next(match?: Match, timeoutMs?: number): Promise<Received>;
  /** Asserts that nothing is queued and nothing arrives for `ms`. */
  nothing(ms?: number): Promise<void>;
  /** Waits `ms` and takes everything that arrived (queued before or during). */
  collect(ms: number): Promise<Received[]>;
  /** Sends an object as JSON text, or a string as is. */
  send(message: object | string): void;
  /** Sends raw data (a Buffer is sent as a binary frame). */
  sendRaw(data: string | Buffer | Uint8Array, opts?: { binary?: boolean }): void;
  /** Closes cleanly (close frame) and waits for the close. */
  close(code?: number, reason?: string): Promise<Closed>;
  /** Drops the TCP connection without a close frame, as a lost network would. */
  terminate(): void;
}

/** An HTTP answer to an upgrade request that the server refused. */
export interface HttpRefusal {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  body: unknown;
}

/** The ws:// form of an http:// URL (ws:// URLs pass through). */
export function toWsUrl(url: string): string {
  return url.replace(/^http(s?):\/\//, 'ws$1://');
}

function describe(m: Received): string {
  return JSON.stringify(m).slice(0, 300);
}

function matcher(match: Match | undefined): (m: Received) => boolean {
  if (match === undefined) return () => true;
  if (typeof match === 'string') return (m) => m.type === match;
  return match;
}

function socketFor(url: string, opts: ConnectOptions): WebSocket {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.origin !== undefined) headers.Origin = opts.origin;
  return new WebSocket(toWsUrl(url), { headers, autoPong: opts.autoPong ?? true, handshakeTimeout: opts.timeoutMs ?? 5000 });
}

/** Opens a WebSocket and resolves once it is open; rejects (with the HTTP status) when the upgrade is refused. */
export function connect(url: string, opts: ConnectOptions = {}): Promise<TestClient> {
  const ws = socketFor(url, opts);
  const queue: Received[] = [];
  const log: Received[] = [];
  const waiters = new Set<() => void>();
  let pings = 0;
  let closedWith: Closed | undefined;
  const wake = () => {
    for (const w of [...waiters]) w();
  };

  // The message listener is attached before 'open', so the server's first message is never missed.
  ws.on('message', (data, isBinary) => {
    let m: Received;
    if (isBinary) {
      m = { __binary: true, bytes: (data as Buffer).length };
    } else {
      const text = data.toString();
      try {
        const parsed: unknown = JSON.parse(text);
        m = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Received) : { __notObject: true, text };
      } catch {
        m = { __notJson: true, text };
      }
    }
    queue.push(m);
    log.push(m);
    wake();
  });
  ws.on('ping', () => {
    pings += 1;
  });
  const closed = new Promise<Closed>((resolve) => {
    ws.on('close', (code, reason) => {
      closedWith = { code, reason: reason.toString() };
      resolve(closedWith);
      wake();
    });
  });

  const client: TestClient = {
    ws,
    queue,
    log,
    get pings() {
      return pings;
    },
    closed,
    get isClosed() {
      return closedWith !== undefined;
    },
    next(match, timeoutMs = 3000) {
      const test = matcher(match);
      return new Promise<Received>((resolve, reject) => {
        const check = (): boolean => {
          const i = queue.findIndex(test);
          if (i >= 0) {
            const [m] = queue.splice(i, 1);
            done();
            resolve(m!);
            return true;
          }
          if (closedWith) {
            done();
            reject(
              new Error(
                `socket closed (${closedWith.code} ${closedWith.reason}) before a message matching ${String(match ?? 'any')} arrived; queued: [${queue.map(describe).join(', ')}]`,
              ),
            );
            return true;
          }
          return false;
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no message matching ${String(match ?? 'any')} within ${timeoutMs} ms; queued: [${queue.map(describe).join(', ')}]`));
        }, timeoutMs);
        const waiter = () => void check();
        const done = () => {
          clearTimeout(timer);
          waiters.delete(waiter);
        };
        if (!check()) waiters.add(waiter);
      });
    },
    async nothing(ms = 300) {
      const before = queue.length;
      if (before > 0) throw new Error(`expected no message, but these were queued: [${queue.map(describe).join(', ')}]`);
      await new Promise((r) => setTimeout(r, ms));
      if (queue.length > 0) throw new Error(`expected no message for ${ms} ms, but got: [${queue.map(describe).join(', ')}]`);
    },
    async collect(ms) {
      await new Promise((r) => setTimeout(r, ms));
      return queue.splice(0, queue.length);
    },
    send(message) {
      ws.send(typeof message === 'string' ? message : JSON.stringify(message));
    },
    sendRaw(data, o = {}) {
      ws.send(data, { binary: o.binary ?? typeof data !== 'string' });
    },
    async close(code = 1000, reason = '') {
      if (!closedWith) ws.close(code, reason);
      return closed;
    },
    terminate() {
      ws.terminate();
    },
  };

  return new Promise<TestClient>((resolve, reject) => {
    // After 'open' a late error (a reset) only closes the socket; `closed` reports it.
    ws.on('error', reject);
    ws.on('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        reject(Object.assign(new Error(`upgrade refused with HTTP ${res.statusCode}: ${text.slice(0, 300)}`), { status: res.statusCode, text }));
        req.destroy();
      });
    });
    ws.on('open', () => resolve(client));
  });
}

/** Opens a WebSocket expecting the server to refuse the upgrade; resolves with the HTTP answer, rejects if the upgrade succeeds. */
export function expectHttpRefusal(url: string, opts: ConnectOptions = {}): Promise<HttpRefusal> {
  const ws = socketFor(url, opts);
  return new Promise<HttpRefusal>((resolve, reject) => {
    ws.on('error', (err) => reject(new Error(`expected an HTTP refusal, got a socket error: ${err.message}`)));
    ws.on('message', () => {});
    ws.on('open', () => {
      reject(new Error(`expected the upgrade to be refused, but the WebSocket to ${url} opened`));
      ws.terminate();
    });
    ws.on('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
        req.destroy();
      });
    });
  });
}
