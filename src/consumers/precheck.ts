import type { ChannelLayer } from '../layers/index.js';
import type { Logger } from './logger.js';
import type { Scope } from './scope.js';
import type { PrecheckRefusal } from './websocket.js';

/** A consumer class that may have a precheck. */
export interface PrecheckClass {
  readonly name: string;
  precheck?(scope: Scope, layer: ChannelLayer): Promise<void | PrecheckRefusal>;
}

/**
 * Runs a class's precheck: undefined lets the request through; a refusal carries its status.
 * A precheck that throws, or answers a status that is not an error (400-599), refuses with 500
 * and logs why: a broken precheck never lets a request through.
 */
export async function runPrecheck(Class: PrecheckClass, scope: Scope, layer: ChannelLayer, log: Logger): Promise<PrecheckRefusal | undefined> {
  if (typeof Class.precheck !== 'function') return undefined;
  let answer: void | PrecheckRefusal;
  try {
    answer = await Class.precheck(scope, layer);
  } catch (err) {
    log.error({ err, consumer: Class.name, path: scope.path }, 'precheck failed; refusing the request with 500');
    return { status: 500 };
  }
  if (answer === undefined || answer === null) return undefined;
  const status = (answer as { status?: unknown }).status;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599) {
    log.error({ consumer: Class.name, status }, 'precheck answered a status that is not an HTTP error (400-599); refusing with 500');
    return { status: 500 };
  }
  return answer;
}
