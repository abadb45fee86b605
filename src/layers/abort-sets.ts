/**
 * The pending receives of each AbortSignal, with one 'abort' listener per signal. A caller may
 * `receive` in a loop with one signal, and adding and removing a listener for every receive cost
 * more than the rest of a delivery. The base layer keeps one of these for `receive`'s promise
 * sinks (`receiveInto` takes no signal); it holds signals weakly, so a signal nobody uses any more
 * takes its set with it.
 */
export class AbortSets<W extends { onAbort(reason: unknown): void }> {
  private readonly sets = new WeakMap<AbortSignal, Set<W>>();

  /** The set of `signal`'s pending receives; a receive adds itself, and deletes itself when it settles. */
  of(signal: AbortSignal): Set<W> {
    let waiters = this.sets.get(signal);
    if (!waiters) {
      const set = (waiters = new Set());
      this.sets.set(signal, set);
      signal.addEventListener('abort', () => {
        for (const waiter of [...set]) waiter.onAbort(signal.reason);
        set.clear();
      }, { once: true });
    }
    return waiters;
  }
}
