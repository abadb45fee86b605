/**
 * V8 tuning for a process that relays signals. One setting, applied by `main` before a server
 * starts; node's own command-line flags win over it.
 *
 * Allocation-site pretenuring is off. V8 watches each array literal (and, with pretenuring on,
 * each object literal), and once most of what one literal made has outlived a young-generation
 * collection while the young generation was at its largest, its optimized code allocates that
 * literal in the old generation (V8 takes the decision back only if few of those survive a full
 * collection). ws's receiver makes a new, empty `_fragments` array for every message a socket
 * reads; it lives until that socket's next message. With a thousand sockets each sending every
 * half second, those arrays outlive collections, the young generation grows to its largest, and
 * V8 pretenures that literal. From then on, every old-generation `_fragments` array takes the
 * next message's buffers and dies. The young collector reads old objects as roots whether they
 * are alive or not, so it copies those buffers, and what they hold, and promotes them.
 *
 * Measured on the 500-call latency workload (`--trace-gc-nvp`, 2026-12-04), each
 * young-generation collection:
 * - with pretenuring: copied 0.4 to 1.0 MB and promoted as much, and paused 3.5 to 5 ms;
 * - without it: copied 36 KB, like the bare ws relay's 32 KB, and paused 1.2 to 2 ms.
 * What a connection keeps is now copied by the young collector (up to twice) before it reaches
 * the old generation, instead of being allocated there; in the bench that cost did not show (call
 * set-up CPU and memory per idle connection were within their usual spread). One workload, one
 * machine: docs/performance.md, "Young-generation collections".
 */
import { setFlagsFromString } from 'node:v8';

/** The V8 flag this module sets. */
export const PRETENURING_FLAG = '--no-allocation-site-pretenuring';

/**
 * Whether node's command line already says something about pretenuring, in any form V8 reads:
 * one or two dashes, `-` or `_` between the words, `no`, `no-` or `no_` before them.
 */
export function pretenuringChosen(execArgv: readonly string[]): boolean {
  return execArgv.some((arg) => /^--?(no[-_]?)?allocation[-_]site[-_]pretenuring(=|$)/.test(arg));
}

/** Turns V8's allocation-site pretenuring off unless node's command line chose; whether it did. */
export function tuneHeap(execArgv: readonly string[] = process.execArgv): boolean {
  if (pretenuringChosen(execArgv)) return false;
  setFlagsFromString(PRETENURING_FLAG);
  return true;
}
