/**
 * V8 tuning for a process that relays signals. One setting, applied by `main` before a server
 * starts; node's own command-line flags win over it.
 *
 * Allocation-site pretenuring is off. V8 watches each object and array literal, and once
 * most of what one literal made has outlived a young-generation collection while the young
 * generation was at its largest, it makes that literal allocate in the old generation from then
 * on, for the life of the process. ws's receiver makes a new, empty `_fragments` array for
 * every message a socket reads; it lives until that socket's next message. With a thousand
 * sockets each sending every half second, those arrays outlive collections, the young
 * generation grows to its largest, and V8 pretenures that literal for good. From then on, every
 * old-generation `_fragments` array takes the next message's buffers and dies. The young
 * collector reads old objects as roots whether they are alive or not, so it copies those
 * buffers, and what they hold, and promotes them.
 *
 * Measured on the 500-call latency workload (`--trace-gc-nvp`, 2026-12-04), each
 * young-generation collection:
 * - with pretenuring: copied 0.4 to 1.0 MB and promoted as much, and paused 3.5 to 5 ms;
 * - without it: copied 36 KB, like the bare ws relay's 32 KB, and paused 1.2 to 2 ms.
 * A server's connections live long, so little is lost: what one connection keeps is copied once
 * more before it reaches the old generation.
 */
import { setFlagsFromString } from 'node:v8';

/** The V8 flag this module sets, and the name node's command line would give it. */
export const PRETENURING_FLAG = '--no-allocation-site-pretenuring';

/**
 * Turns V8's allocation-site pretenuring off, unless node was started with a flag of its own
 * about it (`--allocation-site-pretenuring` or `--no-allocation-site-pretenuring`).
 * Returns whether it set the flag.
 */
export function tuneHeap(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((arg) => /^--(no-)?allocation[-_]site[-_]pretenuring(=|$)/.test(arg))) return false;
  setFlagsFromString(PRETENURING_FLAG);
  return true;
}
