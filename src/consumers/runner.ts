/**
 * Drives one consumer instance: resolves its channel, joins its groups, and feeds it socket
 * events and layer messages through one FIFO queue, one handler at a time, in arrival order.
 *
 * Subclass contract: `begin()` runs the first handler (connect or handle); `end(err)` ends the
 * connection after a handler failed; `callDisconnect(code)` calls the consumer's disconnect.
 * A subclass enqueues `finish` once its connection is over; `finish` leaves the groups, calls
 * disconnect and resolves `done`. Nothing a handler does can reject out of a runner: every
 * error is logged, reported to `hooks.onError` and ends only this connection.
 *
 * Each channel (the consumer's own, and any it `listen`s to) is read one message at a time: its
 * next `receive` is armed only after the previous message was dispatched, so a slow consumer
 * leaves its messages on the layer (where capacity applies) instead of in memory. Pending
 * receives are aborted as soon as the connection is known to be over (before the groups are
 * left and `disconnect` runs), so nothing more is taken off the layer for a consumer that can
 * no longer deliver it: a stable channel keeps it for the next connection.
 */
import { requireValidChannelName, type ChannelLayer, type Message } from '../layers/index.js';
import { bindRuntime, handlerTable, type Consumer, type ConsumerClassLike } from './consumer.js';
import { DenyConnection, StopConsumer } from './errors.js';
import { consoleLogger, type Logger } from './logger.js';
import { DEFAULT_MAX_BUFFERED_BYTES, FRAME_QUEUE_HIGH_WATER, FRAME_QUEUE_LOW_WATER } from './options.js';
import type { Scope } from './scope.js';
import type { Frame, WebsocketConsumer } from './websocket.js';

/** Callbacks a binding passes to observe consumers; each is called defensively (a throw or rejection is logged). */
export interface ConsumerHooks {
  /** A WebSocket consumer accepted and its socket is open. */
  onOpen?(consumer: WebsocketConsumer): unknown;
  /** A WebSocket consumer that had opened has finished (`disconnect` has run), with the close code. */
  onClose?(consumer: WebsocketConsumer, code: number): unknown;
  /** A handler of `consumer` failed (its connection is being closed). */
  onError?(err: unknown, consumer: Consumer): unknown;
}

/** What every runner needs. */
export interface RunnerOptions {
  /** The connection's scope. */
  scope: Scope;
  /** The channel layer. */
  layer: ChannelLayer;
  /** Where the consumer logs (default: warnings and errors to the console). */
  logger?: Logger;
  /** Unread bytes over which the peer is shed (default DEFAULT_MAX_BUFFERED_BYTES, 1 MiB). */
  maxBufferedBytes?: number;
  /** Observers. */
  hooks?: ConsumerHooks;
}

/** A channel the consumer receives from: its own, and any it `listen`s to. */
interface Source {
  channel: string;
  abort: AbortController;
  /** The receive in flight, if any (settles without rejecting). */
  pending: Promise<void> | undefined;
  active: boolean;
}

type Job =
  | { kind: 'frame'; frame: Frame }
  | { kind: 'message'; message: Message; source: Source }
  | { kind: 'task'; run: () => Promise<void> }
  | { kind: 'finish'; code: number };

/** Calls a user hook; a throw or a rejection is logged, never propagated. */
export function callHook(log: Logger, name: string, hook: ((...args: never[]) => unknown) | undefined, ...args: unknown[]): void {
  if (!hook) return;
  try {
    const result = (hook as (...a: unknown[]) => unknown)(...args);
    if (typeof (result as PromiseLike<unknown> | undefined)?.then === 'function') {
      Promise.resolve(result).catch((err: unknown) => log.error({ err, hook: name }, `The ${name} hook failed`));
    }
  } catch (err) {
    log.error({ err, hook: name }, `The ${name} hook failed`);
  }
}

/** The queue, the layer receive and the lifecycle every consumer shares. */
export abstract class Runner<C extends Consumer> {
  /** The consumer instance (one per connection). */
  readonly consumer: C;
  /** Resolves when the consumer has finished: groups left and `disconnect` run. Never rejects. */
  readonly done: Promise<void>;
  protected readonly layer: ChannelLayer;
  protected readonly hooks: ConsumerHooks;
  protected readonly maxBufferedBytes: number;
  /** Set once a handler failed or the connection ended: later frames and messages are not handled. */
  protected stopped = false;

  private readonly jobs: Array<Job | undefined> = [];
  private head = 0;
  private draining = false;
  private queuedFrames = 0;
  private paused = false;
  private readonly sources: Source[] = [];
  private receiving = true;
  private joinedGroups: string[] = [];
  private finished = false;
  private resolveDone!: () => void;

  constructor(Class: ConsumerClassLike & (new () => C), opts: RunnerOptions) {
    handlerTable(Class); // a misdeclared class fails here, before any connection work
    this.layer = opts.layer;
    this.hooks = opts.hooks ?? {};
    this.maxBufferedBytes = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.done = new Promise<void>((resolve) => (this.resolveDone = resolve));
    const consumer = new Class();
    consumer.scope = opts.scope;
    consumer.channelLayer = opts.layer;
    bindRuntime(consumer, { logger: opts.logger ?? consoleLogger, listen: (channel) => this.listen(channel) });
    this.consumer = consumer;
  }

  /** This connection's logger. */
  get log(): Logger {
    return this.consumer.log;
  }

  /** Starts the consumer: channel, groups, receive, then its first handler, as the first job. */
  start(): void {
    this.enqueue({ kind: 'task', run: () => this.setup() });
  }

  /** Runs `run` as a handler of this consumer, in turn with the others (skipped once the consumer stopped). */
  protected enqueueTask(run: () => Promise<void>): void {
    this.enqueue({ kind: 'task', run });
  }

  /** Queues a client frame. */
  protected enqueueFrame(frame: Frame): void {
    this.queuedFrames++;
    this.enqueue({ kind: 'frame', frame });
    if (!this.paused && this.queuedFrames >= FRAME_QUEUE_HIGH_WATER) {
      this.paused = true;
      this.pauseFrames();
    }
  }

  /** Queues the end of the consumer: groups left, then disconnect. */
  protected enqueueFinish(code: number): void {
    this.stopReceiving();
    this.enqueue({ kind: 'finish', code });
  }

  /** Aborts every pending layer receive; the layer keeps every message not yet taken. */
  protected stopReceiving(): void {
    if (!this.receiving) return;
    this.receiving = false;
    for (const source of this.sources) {
      source.active = false;
      source.abort.abort();
    }
  }

  /** Runs the first handler (connect, handle). */
  protected abstract begin(): Promise<void>;
  /** Ends the connection after `err` stopped the consumer (a failure, StopConsumer or DenyConnection). */
  protected abstract end(err: unknown): Promise<void>;
  /** Calls the consumer's disconnect. */
  protected abstract callDisconnect(code: number): Promise<void>;
  /** Handles one client frame. */
  protected async handleFrame(_frame: Frame): Promise<void> {}
  /** Stops reading client frames (backpressure). */
  protected pauseFrames(): void {}
  /** Resumes reading client frames. */
  protected resumeFrames(): void {}
  /** Called after `finish`, before `done` resolves. */
  protected afterFinish(_code: number): void {}

  private async setup(): Promise<void> {
    const consumer = this.consumer;
    consumer.channelName = await consumer['resolveChannelName']();
    for (const group of consumer.groups()) {
      await this.layer.groupAdd(group, consumer.channelName);
      this.joinedGroups.push(group);
    }
    this.listen(consumer.channelName);
    await this.begin();
  }

  /** Starts receiving from `channel`; the returned stop resolves once its pending receive has ended. */
  private listen(channel: string): () => Promise<void> {
    requireValidChannelName(channel);
    const source: Source = { channel, abort: new AbortController(), pending: undefined, active: this.receiving };
    if (!source.active) return async () => {};
    this.sources.push(source);
    this.arm(source);
    return async () => {
      source.active = false;
      source.abort.abort();
      await source.pending;
      const i = this.sources.indexOf(source);
      if (i !== -1) this.sources.splice(i, 1);
    };
  }

  /** Receives the next message of `source`; it is armed again once that message was dispatched. */
  private arm(source: Source): void {
    if (!source.active) return;
    source.pending = this.layer.receive(source.channel, { signal: source.abort.signal }).then(
      (message) => {
        // Even if the receive was stopped meanwhile, the message was taken: it is dispatched in turn.
        source.pending = undefined;
        this.enqueue({ kind: 'message', message, source });
      },
      (err: unknown) => {
        source.pending = undefined;
        if (source.abort.signal.aborted) return;
        this.enqueueTask(() => Promise.reject(err));
      },
    );
  }

  private enqueue(job: Job): void {
    this.jobs.push(job);
    if (!this.draining) {
      this.drain().catch((err: unknown) => this.log.error({ err }, 'Consumer queue failed'));
    }
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.head < this.jobs.length) {
        const job = this.jobs[this.head]!;
        this.jobs[this.head++] = undefined;
        await this.run(job);
        if (this.head === this.jobs.length) {
          // Drained: an idle connection keeps no queue storage.
          this.jobs.length = 0;
          this.head = 0;
        } else if (this.head >= 1024 && this.head * 2 >= this.jobs.length) {
          this.jobs.splice(0, this.head);
          this.head = 0;
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private async run(job: Job): Promise<void> {
    if (job.kind === 'finish') return this.finish(job.code);
    if (job.kind === 'frame') {
      this.queuedFrames--;
      if (this.paused && this.queuedFrames <= FRAME_QUEUE_LOW_WATER) {
        this.paused = false;
        this.resumeFrames();
      }
    }
    if (this.stopped) {
      if (job.kind === 'message') this.log.warn({ type: job.message.type }, 'A layer message reached a consumer that has stopped; it was not dispatched');
      return;
    }
    try {
      if (job.kind === 'frame') await this.handleFrame(job.frame);
      else if (job.kind === 'task') await job.run();
      else {
        try {
          await this.consumer.dispatch(job.message);
        } finally {
          this.arm(job.source);
        }
      }
    } catch (err) {
      await this.fail(err);
    }
  }

  /** Stops the consumer after `err`: logs it (unless it is a clean stop) and ends the connection. */
  protected async fail(err: unknown): Promise<void> {
    this.stopped = true;
    this.stopReceiving();
    if (err instanceof StopConsumer) this.log.debug('Consumer stopped');
    else if (err instanceof DenyConnection) this.log.info({ reason: err.message }, 'Connection denied');
    else {
      this.log.error({ err }, 'A consumer handler failed; closing this connection');
      callHook(this.log, 'onError', this.hooks.onError, err, this.consumer);
    }
    try {
      await this.end(err);
    } catch (endErr) {
      this.log.error({ err: endErr }, 'Ending the connection failed');
    }
  }

  private async finish(code: number): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.stopped = true;
    this.stopReceiving();
    for (const group of this.joinedGroups) {
      try {
        await this.layer.groupDiscard(group, this.consumer.channelName);
      } catch (err) {
        this.log.warn({ err, group }, 'Leaving a group failed');
      }
    }
    this.joinedGroups = [];
    try {
      await this.callDisconnect(code);
    } catch (err) {
      this.log.error({ err }, 'disconnect() failed');
      callHook(this.log, 'onError', this.hooks.onError, err, this.consumer);
    }
    this.afterFinish(code);
    this.resolveDone();
  }
}
