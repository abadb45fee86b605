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
 * receives are withdrawn as soon as the connection is known to be over (before the groups are
 * left and `disconnect` runs), so nothing more is taken off the layer for a consumer that can
 * no longer deliver it: a stable channel keeps it for the next connection.
 *
 * Memory and speed: a runner is what an idle connection costs beside its socket, so it keeps
 * little: one Source per channel, which is both the layer's sink for it (`receiveInto`: no
 * promise, no AbortSignal) and the queued job of the message it took (nothing allocated per
 * message), jobs queued unwrapped, `done` built only when asked for, and the consumer's logger
 * built only when something is logged.
 */
import { requireValidChannelName, type ChannelLayer, type Message, type MessageSink } from '../layers/index.js';
import { defineFlags } from '../layers/flags.js';
import { bindRuntime, handlerTable, type Consumer, type ConsumerClassLike, type ConsumerRuntime } from './consumer.js';
import { DenyConnection, StopConsumer } from './errors.js';
import { RESOLVED } from './internal.js';
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
  /**
   * Called once the consumer has finished, as `done` resolves. A binding passes one function for
   * all its runners: cheaper per connection than a `done.then(...)`.
   */
  onDone?(runner: Runner<Consumer>): void;
}

const NO_HOOKS: ConsumerHooks = Object.freeze({});
/** The empty job list every idle runner shares (never changed: replaced by a list of its own). */
const NO_JOBS = Object.freeze([]) as unknown as Array<Job | undefined>;

/** What a runner keeps of its options beside the connection's own parts: the same for every runner of a binding. */
interface RunnerSettings {
  readonly layer: ChannelLayer;
  readonly logger: Logger;
  readonly hooks: ConsumerHooks;
  readonly maxBufferedBytes: number;
  readonly onDone: ((runner: Runner<Consumer>) => void) | undefined;
}

/**
 * The settings of the runner made last, reused while the next runner's options match: a
 * binding passes the same ones for every connection, so its runners share one object instead
 * of keeping five fields each.
 */
let lastSettings: RunnerSettings | undefined;

function settingsOf(opts: RunnerOptions): RunnerSettings {
  const logger = opts.logger ?? consoleLogger;
  const hooks = opts.hooks ?? NO_HOOKS;
  const maxBufferedBytes = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  const last = lastSettings;
  if (last && last.layer === opts.layer && last.logger === logger && last.hooks === hooks && last.maxBufferedBytes === maxBufferedBytes && last.onDone === opts.onDone) return last;
  return (lastSettings = Object.freeze({ layer: opts.layer, logger, hooks, maxBufferedBytes, onDone: opts.onDone }));
}

/**
 * The runner's yes/no states, bits of `Runner.flags` (see defineFlags). A subclass defines its
 * own from `RUNNER_FREE_BIT` up.
 */
const RUNNER_FLAGS = { draining: 1, drainQueued: 2, paused: 4, receiving: 8, finishing: 16, over: 32, stopped: 64 } as const;
/** The first bit of `Runner.flags` a subclass may use. */
export const RUNNER_FREE_BIT = 128;

const SOURCE_FLAGS = { pending: 1, active: 2 } as const;

/**
 * A channel the consumer receives from (its own, and any it `listen`s to), and the layer's sink
 * for it: the layer hands it one message at a time, and it waits in the queue as the job that
 * dispatches that message. So an idle channel costs this object and nothing per message.
 */
class Source implements MessageSink {
  /** The source's yes/no states: `pending` and `active` (see defineFlags). */
  private flags = SOURCE_FLAGS.active;
  /** The message taken, waiting for its turn in the queue. */
  message: Message | undefined;
  /** The runner's next source (its sources are a list: no array kept per connection). */
  next: Source | undefined;
  constructor(readonly runner: Runner<Consumer>, readonly channel: string) {}

  static {
    defineFlags(Source.prototype, SOURCE_FLAGS);
  }

  /** A receive is pending on the layer. */
  declare pending: boolean;
  /** The channel is still read (false once stopped). */
  declare active: boolean;

  deliver(message: Message): void {
    this.pending = false;
    this.message = message;
    queueJob(this.runner, this);
  }

  fail(err: unknown): void {
    this.pending = false;
    queueJob(this.runner, () => Promise.reject(err));
  }
}

/**
 * A queued job, kept unwrapped: a client frame as itself, a layer message as its Source, a task
 * as its function, and the finish as its close code.
 */
type Job = Frame | Source | (() => Promise<void>) | number;

/**
 * Queues a job from a layer callback and drains in a microtask: a layer calls its sinks from
 * inside a send (InMemory) or its socket handler (Redis), where running a handler would re-enter
 * the layer mid-operation. Set in Runner's static block (the queue is private to it).
 */
let queueJob: (runner: Runner<Consumer>, job: Job) => void;

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
export abstract class Runner<C extends Consumer> implements ConsumerRuntime {
  /** The consumer instance (one per connection). */
  readonly consumer: C;
  private readonly settings: RunnerSettings;

  /** Queued jobs from `head` on; NO_JOBS while none are (an idle connection keeps no list). */
  private jobs: Array<Job | undefined> = NO_JOBS;
  private head = 0;
  private queuedFrames = 0;
  /** The runner's yes/no state, one bit each (see the accessors below): one field, not seven. */
  protected flags: number = RUNNER_FLAGS.receiving;
  /** The channels read, newest first (a list through `Source.next`). */
  private sources: Source | undefined;
  private joinedGroups: string[] | undefined;
  /** `done` and its resolver, made when first asked for. */
  private doneSignal: { promise: Promise<void>; resolve: () => void } | undefined;

  static {
    defineFlags(Runner.prototype, RUNNER_FLAGS);
    const scheduled: Array<Runner<Consumer>> = [];
    const drainScheduled = (): void => {
      for (let i = 0; i < scheduled.length; i++) {
        const runner = scheduled[i]!;
        runner.drainQueued = false;
        if (!runner.draining) runner.drain();
      }
      scheduled.length = 0;
    };
    queueJob = (runner, job) => {
      runner.addJob(job);
      if (runner.draining || runner.drainQueued) return;
      runner.drainQueued = true;
      // A reaction to a settled promise, not queueMicrotask: Node wraps each of those in an
      // AsyncResource and a bound function, made anew for every message a layer hands over.
      if (scheduled.push(runner) === 1) void RESOLVED.then(drainScheduled);
    };
  }

  /** The queue is being drained. */
  private declare draining: boolean;
  /** A drain is scheduled for the next microtask. */
  private declare drainQueued: boolean;
  /** Client frames are paused (backpressure). */
  private declare paused: boolean;
  /** Layer receives may still be armed. */
  private declare receiving: boolean;
  /** `finish` has started. */
  private declare finishing: boolean;
  /** `finish` is over: `done` resolves at once. */
  private declare over: boolean;
  /** Set once a handler failed or the connection ended: later frames and messages are not handled. */
  protected declare stopped: boolean;

  /** The logger the consumer's `log` derives from. */
  get logger(): Logger {
    return this.settings.logger;
  }

  protected get layer(): ChannelLayer {
    return this.settings.layer;
  }

  protected get hooks(): ConsumerHooks {
    return this.settings.hooks;
  }

  protected get maxBufferedBytes(): number {
    return this.settings.maxBufferedBytes;
  }

  constructor(Class: ConsumerClassLike & (new () => C), opts: RunnerOptions) {
    handlerTable(Class); // a misdeclared class fails here, before any connection work
    this.settings = settingsOf(opts);
    const consumer = new Class();
    consumer.scope = opts.scope;
    consumer.channelLayer = opts.layer;
    bindRuntime(consumer, this);
    this.consumer = consumer;
  }

  /** Resolves when the consumer has finished: groups left and `disconnect` run. Never rejects. */
  get done(): Promise<void> {
    if (!this.doneSignal) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.doneSignal = { promise, resolve };
      if (this.over) resolve();
    }
    return this.doneSignal.promise;
  }

  /** This connection's logger (built on first use). */
  get log(): Logger {
    return this.consumer.log;
  }

  /** Starts the consumer: channel, groups, receive, then its first handler, as the first job. */
  start(): void {
    this.enqueue(() => this.setup());
  }

  /**
   * Starts receiving from `channel` (what the consumer's `listen` calls); the returned stop
   * resolves once its pending receive has ended.
   */
  listen(channel: string): () => Promise<void> {
    requireValidChannelName(channel);
    if (!this.receiving) return async () => {};
    const source = new Source(this as unknown as Runner<Consumer>, channel);
    source.next = this.sources;
    this.sources = source;
    this.arm(source);
    return () => this.stopSource(source);
  }

  /** Stops every source of `channel` (what the consumer's `unlisten` calls). */
  async unlisten(channel: string): Promise<void> {
    for (let source = this.sources; source; source = source.next) if (source.channel === channel) await this.stopSource(source);
  }

  /** Runs `run` as a handler of this consumer, in turn with the others (skipped once the consumer stopped). */
  protected enqueueTask(run: () => Promise<void>): void {
    this.enqueue(run);
  }

  /** Queues a client frame. */
  protected enqueueFrame(frame: Frame): void {
    this.queuedFrames++;
    this.enqueue(frame);
    if (!this.paused && this.queuedFrames >= FRAME_QUEUE_HIGH_WATER) {
      this.paused = true;
      this.pauseFrames();
    }
  }

  /** Queues the end of the consumer: groups left, then disconnect. */
  protected enqueueFinish(code: number): void {
    this.stopReceiving();
    this.enqueue(code);
  }

  /** Aborts every pending layer receive; the layer keeps every message not yet taken. */
  protected stopReceiving(): void {
    if (!this.receiving) return;
    this.receiving = false;
    for (let source = this.sources; source; source = source.next) this.cancel(source);
  }

  /** Runs the first handler (connect, handle). */
  protected abstract begin(): Promise<void>;
  /** Ends the connection after `err` stopped the consumer (a failure, StopConsumer or DenyConnection). */
  protected abstract end(err: unknown): Promise<void>;
  /** Calls the consumer's disconnect. */
  protected abstract callDisconnect(code: number): Promise<void>;
  /** Handles one client frame (a promise while it runs; nothing when it had nothing to do). */
  protected handleFrame(_frame: Frame): Promise<void> | undefined {
    return undefined;
  }
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
      this.joinedGroups = this.joinedGroups ? this.joinedGroups.concat(group) : [group];
    }
    this.listen(consumer.channelName);
    await this.begin();
  }

  /** Stops one channel: its pending receive is withdrawn, taking nothing. */
  private async stopSource(source: Source): Promise<void> {
    if (this.sources === source) this.sources = source.next;
    else for (let s = this.sources; s; s = s.next) if (s.next === source) s.next = source.next;
    this.cancel(source);
  }

  private cancel(source: Source): void {
    source.active = false;
    if (!source.pending) return;
    source.pending = false;
    try {
      this.layer.cancelReceive(source.channel, source);
    } catch (err) {
      this.log.warn({ err, channel: source.channel }, 'Withdrawing a receive failed');
    }
  }

  /** Receives the next message of `source`; it is armed again once that message was dispatched. */
  private arm(source: Source): void {
    if (!source.active || source.pending) return;
    source.pending = true;
    try {
      this.layer.receiveInto(source.channel, source); // may deliver at once
    } catch (err) {
      source.pending = false;
      this.enqueue(() => Promise.reject(err));
    }
  }

  private addJob(job: Job): void {
    if (this.jobs === NO_JOBS) this.jobs = [job];
    else this.jobs.push(job);
  }

  private enqueue(job: Job): void {
    this.addJob(job);
    if (!this.draining) this.drain();
  }

  /**
   * Runs the queued jobs in order, one at a time. Each job runs inline, and the next one follows
   * at once when it finished at once (a handler that returned RESOLVED, or nothing); at the first
   * that did not, the rest wait for it (`drainAfter`). So a message that is handled without
   * waiting (a relayed signal on InMemory, a signal sent on to a socket) costs no promise or
   * suspended frame here. Never throws.
   */
  private drain(): void {
    this.draining = true;
    try {
      // `this.jobs` is read anew at each turn: a drained queue's list is dropped (compactJobs).
      while (this.head < this.jobs.length) {
        const jobs = this.jobs;
        const job = jobs[this.head]!;
        jobs[this.head++] = undefined;
        const pending = this.run(job);
        if (pending) {
          void this.drainAfter(pending);
          return;
        }
        this.compactJobs();
      }
    } catch (err) {
      this.log.error({ err }, 'Consumer queue failed');
    }
    this.draining = false;
  }

  /** Goes on draining once the job that did not finish at once has (`pending` never rejects). */
  private async drainAfter(pending: Promise<void>): Promise<void> {
    try {
      await pending;
    } catch (err) {
      this.log.error({ err }, 'Consumer queue failed');
    }
    this.compactJobs();
    this.drain();
  }

  /** Starts one job: nothing when it finished at once, else a promise of its end that never rejects. */
  private run(job: Job): Promise<void> | undefined {
    if (typeof job === 'number') return this.finish(job);
    if (!this.admit(job)) return undefined;
    let running: Promise<void> | undefined;
    try {
      if (typeof job === 'function') running = job();
      else if (job instanceof Source) {
        const message = job.message!;
        job.message = undefined;
        try {
          running = this.consumer.dispatch(message);
        } finally {
          // The channel's next receive is armed once this message was dispatched.
          if (running === RESOLVED) this.arm(job);
          else if (running !== undefined) running = running.finally(() => this.arm(job));
          else this.arm(job); // dispatch threw
        }
      } else {
        running = this.handleFrame(job);
      }
    } catch (err) {
      return this.fail(err);
    }
    if (running === undefined || running === RESOLVED) return undefined;
    return running.catch((err: unknown) => this.fail(err));
  }

  /** Drops the queue's storage once drained (an idle connection keeps none), or its run-through head. */
  private compactJobs(): void {
    const jobs = this.jobs;
    if (this.head === jobs.length) {
      this.jobs = NO_JOBS;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= jobs.length) {
      jobs.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Takes a job off the queue's books; false when the consumer has stopped and it is not to run. */
  private admit(job: Frame | Source | (() => Promise<void>)): boolean {
    if (typeof job !== 'function' && !(job instanceof Source)) {
      this.queuedFrames--;
      if (this.paused && this.queuedFrames <= FRAME_QUEUE_LOW_WATER) {
        this.paused = false;
        this.resumeFrames();
      }
    }
    if (!this.stopped) return true;
    if (job instanceof Source) {
      this.log.warn({ type: job.message!.type }, 'A layer message reached a consumer that has stopped; it was not dispatched');
      job.message = undefined;
    }
    return false;
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
    if (this.finishing) return;
    this.finishing = true;
    this.stopped = true;
    this.stopReceiving();
    for (const group of this.joinedGroups ?? []) {
      try {
        await this.layer.groupDiscard(group, this.consumer.channelName);
      } catch (err) {
        this.log.warn({ err, group }, 'Leaving a group failed');
      }
    }
    this.joinedGroups = undefined;
    try {
      await this.callDisconnect(code);
    } catch (err) {
      this.log.error({ err }, 'disconnect() failed');
      callHook(this.log, 'onError', this.hooks.onError, err, this.consumer);
    }
    this.afterFinish(code);
    this.over = true;
    this.doneSignal?.resolve();
    this.settings.onDone?.(this as unknown as Runner<Consumer>);
  }
}
