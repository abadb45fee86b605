/**
 * One call, one worker. With WEB_CONCURRENCY > 1 the primary accepts every TCP connection
 * itself, reads the request line, and hands the socket to a worker: every connection to
 * `/ws/call/<id>` of one call goes to the same worker (WORKER_ROUTING=call, the default), other
 * requests to each worker in turn (and every request, with WORKER_ROUTING=round-robin).
 * Both peers of a call then share a worker, and the Redis layer hands their signals over
 * in-process (no Redis command, no pub/sub hop); Redis still carries what crosses workers or
 * instances (a resume that lands elsewhere, a call split across instances behind a load
 * balancer). The primary sees only the first bytes of each connection: after the hand-over the
 * worker's own HTTP server reads the socket.
 *
 * node:cluster's own balancing hands a connection to a worker before any byte is read, so it
 * cannot route by path; this is how sticky-session routers (Socket.IO's among them) do it.
 */
import net from 'node:net';
import type { Worker } from 'node:cluster';
import { hostOf } from './layers/redis-keys.js';
import type { Logger } from './logger.js';

/** The IPC message type a worker receives a connection by (the socket is its handle). */
export const CONNECTION_MESSAGE = 'callsig:connection';

/** Bytes the primary reads at most looking for the end of the request line. */
const HEAD_LIMIT = 8192;
/** Connections held while no worker serves; more are closed. */
const MAX_WAITING = 4096;
/** How long the primary waits for a request line before handing the connection on anyway (ms). */
const HEAD_TIMEOUT_MS = 10_000;

/** What a worker gets with a handed-over socket: the bytes the primary read from it, as latin1. */
export interface ConnectionMessage {
  type: typeof CONNECTION_MESSAGE;
  head: string;
}

/** The call id of a request for `/ws/call/<id>`, read from the request line in `head`; else undefined. */
export function callIdOf(head: Buffer): string | undefined {
  const end = head.indexOf(10);
  const line = head.toString('latin1', 0, end === -1 ? head.length : end);
  return /^[A-Z]+ \/ws\/call\/([^/?#\s]+)/.exec(line)?.[1];
}

/**
 * The primary's listener: reads each connection's request line and hands it to a worker.
 *
 * Workers sit in numbered slots, one per WEB_CONCURRENCY; a call belongs to a slot (a hash of
 * its id) and goes to the worker there. A worker that dies leaves its slot to its replacement,
 * so the calls of the workers that live on stay where they are; until the replacement serves,
 * that slot's calls go to the next slot's worker.
 */
export class CallRouter {
  readonly server: net.Server;
  /** The worker of each slot, once it serves. */
  private readonly ready: Array<Worker | undefined>;
  /** The slot of each worker forked and not yet exited. */
  private readonly slots = new Map<Worker, number>();
  /** Connections that came before any worker was ready. */
  private waiting: Array<[net.Socket, Buffer]> = [];
  private turn = 0;

  constructor(size: number, private readonly routing: 'call' | 'round-robin', private readonly logger: Logger) {
    this.ready = Array.from({ length: size }, () => undefined);
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    // Accepting can fail (EMFILE: out of file descriptors); the primary must not die of it.
    this.server.on('error', (err) => this.logger.error({ err }, 'accepting a connection failed'));
  }

  /** Listens; resolves with the port (the one asked for, or the one the system gave for 0). */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  /** A worker was forked: it takes the first slot without one. */
  forked(worker: Worker): void {
    const taken = new Set(this.slots.values());
    let slot = 0;
    while (taken.has(slot)) slot++;
    this.slots.set(worker, slot);
  }

  /** A worker serves: route to it, and hand it whatever waited for one. */
  serving(worker: Worker): void {
    const slot = this.slots.get(worker);
    if (slot === undefined || slot >= this.ready.length) return;
    this.ready[slot] = worker;
    const waiting = this.waiting;
    this.waiting = [];
    for (const [socket, head] of waiting) this.route(socket, head);
  }

  /** A worker exited: its slot waits for the replacement. */
  exited(worker: Worker): void {
    const slot = this.slots.get(worker);
    this.slots.delete(worker);
    if (slot !== undefined && this.ready[slot] === worker) this.ready[slot] = undefined;
  }

  /** The worker for a connection: its call's slot, or the next serving one; undefined if none serves. */
  private pick(callId: string | undefined): Worker | undefined {
    const n = this.ready.length;
    // A call's slot: the bucket the Redis layer would put the id in, among n hosts.
    const start = this.routing === 'call' && callId !== undefined ? hostOf(callId, n) : this.turn++ % n;
    for (let i = 0; i < n; i++) {
      const worker = this.ready[(start + i) % n];
      if (worker?.isConnected()) return worker;
    }
    return undefined;
  }

  /** Stops accepting; the workers keep the connections they were handed. */
  close(): void {
    this.server.close();
    for (const [socket] of this.waiting) socket.destroy();
    this.waiting = [];
  }

  private accept(socket: net.Socket): void {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', finish);
      socket.pause();
      this.route(socket, Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (chunk.includes(10) || size >= HEAD_LIMIT) finish();
    };
    // Stays on until the hand-over: an error on a socket nobody listens to would end the primary.
    const onError = (): void => {
      done = true;
      clearTimeout(timer);
      socket.destroy();
    };
    // A connection that says nothing goes on anyway: the worker's HTTP server times it out.
    const timer = setTimeout(finish, HEAD_TIMEOUT_MS);
    socket.on('data', onData);
    socket.once('end', finish);
    socket.on('error', onError);
  }

  private route(socket: net.Socket, head: Buffer): void {
    if (socket.destroyed) return;
    const worker = this.pick(callIdOf(head));
    if (worker === undefined) {
      // No worker serves yet (start-up, or every one died at once): hold on, within reason.
      if (this.waiting.length >= MAX_WAITING) socket.destroy();
      else this.waiting.push([socket, head]);
      return;
    }
    const message: ConnectionMessage = { type: CONNECTION_MESSAGE, head: head.toString('latin1') };
    // Node tracks a socket its net.Server accepted across the hand-over: the worker then keeps a
    // 'close' listener on every socket (about 270 bytes per idle connection), only so that this
    // server's close() can wait for the workers' connections. Nothing here waits for that, so the
    // socket goes as a plain one; destroying it once sent (its handle is the worker's by then)
    // takes it off this server's connection count.
    (socket as { server?: unknown }).server = null;
    worker.send(message, socket, { keepOpen: false }, (err: Error | null) => {
      socket.destroy();
      if (err) this.logger.warn({ err, worker: worker.id }, 'could not hand a connection to a worker; closing it');
    });
  }
}

/** In a worker: takes a socket the primary handed over, as if its own server had accepted it. */
export function takeConnection(server: net.Server, socket: net.Socket, message: ConnectionMessage): void {
  server.emit('connection', socket);
  // The bytes the primary read first; the HTTP server reads the rest from the socket.
  if (message.head.length > 0) socket.emit('data', Buffer.from(message.head, 'latin1'));
  socket.resume();
}
