/**
 * The base of every consumer: one instance per connection, a channel on the layer, and layer
 * messages dispatched by `type` to the handlers the class declares in `handles`.
 *
 * Subclass contract: list every layer message type the class accepts in `static handles`, and
 * give each a method named by `handlerName` (`signal.relay` → `signalRelay(message)`). Nothing
 * else is ever dispatched: a type not listed, a malformed type, or a listed type naming a
 * built-in method (`close`, `send`, `disconnect`...) ends that one consumer with a logged error.
 */
import type { ChannelLayer, Message } from '../layers/index.js';
import { DispatchError } from './errors.js';
import { consoleLogger, type Logger } from './logger.js';
import { logBindings, RESOLVED } from './internal.js';
import type { Scope } from './scope.js';

/** A well-formed message type: words of letters and digits joined by `.` or `_`. */
const MESSAGE_TYPE = /^[A-Za-z0-9]+(?:[._][A-Za-z0-9]+)*$/;

/** The handler method for a message type: `.` and `_` start a new capitalised word (`a.b_c` → `aBC`). */
export function handlerName(type: string): string {
  return type.replace(/[._]([A-Za-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Throws a DispatchError unless `type` is a string a handler may be named after. */
function requireWellFormedType(type: unknown, where: string): asserts type is string {
  if (typeof type !== 'string') {
    throw new DispatchError('no-type', `${where} has no string "type" (got ${type === undefined ? 'none' : typeof type})`);
  }
  const shown = JSON.stringify(type.length > 80 ? `${type.slice(0, 80)}…` : type);
  if (type.startsWith('_') || type.startsWith('.')) {
    throw new DispatchError('malformed-type', `Malformed type ${shown} in ${where} (leading underscore or dot)`, type);
  }
  if (!MESSAGE_TYPE.test(type)) {
    throw new DispatchError('malformed-type', `Malformed type ${shown} in ${where}: use letters and digits joined by "." or "_"`, type);
  }
}

/** Method names of the framework's own classes: never reachable by dispatch, even when listed. */
const reservedNames = new Set<string>(Object.getOwnPropertyNames(Object.prototype));

/** Marks every method of a framework prototype as unreachable by dispatch. */
export function reserveMethods(prototype: object): void {
  for (const name of Object.getOwnPropertyNames(prototype)) reservedNames.add(name);
}

/** A consumer class as the runners and `handlerTable` see it. */
export interface ConsumerClassLike {
  readonly name: string;
  readonly handles: readonly string[];
  readonly prototype: object;
}

const tables = new WeakMap<object, ReadonlyMap<string, string>>();

/**
 * The dispatch table of a consumer class: message type → method name, built once per class.
 * Throws a DispatchError naming the problem when `handles` is not a list of well-formed types,
 * each with its own handler method.
 */
export function handlerTable(Class: ConsumerClassLike): ReadonlyMap<string, string> {
  let table = tables.get(Class);
  if (table) return table;
  const handles: unknown = Class.handles;
  if (!Array.isArray(handles)) {
    throw new DispatchError('no-handler', `${Class.name}.handles must be an array of message types`);
  }
  const built = new Map<string, string>();
  for (const type of handles) {
    requireWellFormedType(type, `${Class.name}.handles`);
    const method = handlerName(type);
    if (reservedNames.has(method)) {
      throw new DispatchError('reserved-handler', `${Class.name}.handles lists "${type}", which would call the built-in ${method}(); give the message a type of its own`, type);
    }
    if (typeof (Class.prototype as Record<string, unknown>)[method] !== 'function') {
      throw new DispatchError('no-handler', `${Class.name}.handles lists "${type}" but ${Class.name} has no ${method}() method`, type);
    }
    built.set(type, method);
  }
  table = built;
  tables.set(Class, table);
  return table;
}

/** What every consumer calls on the runner driving it. */
export interface ConsumerRuntime {
  /** The logger `log` derives from. */
  logger: Logger;
  /** Adds a channel to receive from; resolves the returned stop once its pending receive has ended. */
  listen(channel: string): () => Promise<void>;
  /** Stops receiving from `channel` (every `listen` of it); resolves once its pending receive has ended. */
  unlisten(channel: string): Promise<void>;
}

let setRuntime: (consumer: Consumer, runtime: ConsumerRuntime) => void;

/** Connects a consumer to the runner driving it (the runner calls it). */
export function bindRuntime(consumer: Consumer, runtime: ConsumerRuntime): void {
  setRuntime(consumer, runtime);
}

/** The base of every consumer. */
export abstract class Consumer {
  /** The only layer message types this class accepts, e.g. `['signal.relay']` → `signalRelay(message)`. */
  static handles: readonly string[] = [];

  /** The connection this instance serves. */
  scope!: Scope;
  /** The channel layer the consumer receives on. */
  channelLayer!: ChannelLayer;
  /** This consumer's channel on the layer (resolved before `groups()` are joined). */
  channelName!: string;

  #runtime: ConsumerRuntime | undefined;
  #log: Logger | undefined;

  static {
    setRuntime = (consumer, runtime) => {
      consumer.#runtime = runtime;
      consumer.#log = undefined;
    };
  }

  /** This connection's logger (a child of the binding's, bound to the consumer and its channel). */
  get log(): Logger {
    if (this.#log) return this.#log;
    const base = this.#runtime?.logger ?? consoleLogger;
    const bindings = logBindings(this.constructor.name, this.scope?.path ?? '', this.channelName);
    this.#log = base.child ? base.child(bindings) : base;
    return this.#log;
  }

  set log(logger: Logger) {
    this.#log = logger;
  }

  /** Groups joined before `connect()` and left before `disconnect()` (default none). */
  groups(): string[] {
    return [];
  }

  /** The channel to receive on (default a new process-specific channel); override to use a stable name. */
  protected resolveChannelName(): Promise<string> {
    return this.channelLayer.newChannel();
  }

  /**
   * Also receives layer messages from `channel` (beside `channelName`), through the same queue
   * and `handles` as every other message. Returns `stop`, which resolves once the pending
   * receive has ended (the layer keeps every message not yet taken). Every channel stops by
   * itself as soon as the connection is over, before `disconnect()`.
   */
  protected listen(channel: string): () => Promise<void> {
    if (!this.#runtime) throw new Error('listen() is available once the consumer runs (from connect() or handle() on)');
    return this.#runtime.listen(channel);
  }

  /**
   * Stops receiving from a channel `listen` added, as its `stop` does: for a consumer that would
   * rather not keep `stop` (a closure) for the connection's life.
   */
  protected unlisten(channel: string): Promise<void> {
    if (!this.#runtime) return Promise.resolve();
    return this.#runtime.unlisten(channel);
  }

  /**
   * Calls the handler for a layer message (`signal.relay` → `signalRelay(message)`). Throws a
   * DispatchError for a message without a string type, a malformed type, or a type this class
   * does not list in `handles`; the runner logs it and ends this consumer.
   */
  dispatch(message: Message): Promise<void> {
    // Not an async function: every layer message passes here, and a handler that finished at
    // once (it returned RESOLVED, or no promise) is answered with RESOLVED, without a new promise.
    try {
      const Class = this.constructor as unknown as ConsumerClassLike;
      const type: unknown = (message as { type?: unknown } | null)?.type;
      // Every type in the table is well formed: check the form only of one that is not (to say why).
      const method = typeof type === 'string' ? handlerTable(Class).get(type) : undefined;
      if (method === undefined) {
        requireWellFormedType(type, 'layer message');
        throw new DispatchError('not-handled', `${Class.name} does not handle "${type}": it is not in ${Class.name}.handles ${JSON.stringify(Class.handles)}`, type);
      }
      const result = (this as unknown as Record<string, (m: Message) => unknown>)[method]!(message);
      if (result === RESOLVED || typeof (result as PromiseLike<unknown> | undefined)?.then !== 'function') return RESOLVED;
      return Promise.resolve(result) as Promise<void>; // a native promise as itself
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

reserveMethods(Consumer.prototype);
