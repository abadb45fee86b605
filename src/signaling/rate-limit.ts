/**
 * A per-sender message rate: `rate` messages a second, with bursts of up to `burst`. It is a
 * token bucket kept as one number per sender (GCRA, the generic cell rate algorithm): the time
 * at which the sender's bucket would be full again. The limit itself is shared by every sender,
 * so a connection keeps only that number. A rate of 0 turns the limit off.
 */
export class RateLimit {
  /** Milliseconds one message uses up. */
  private readonly interval: number;
  /** How far ahead of now a sender's time may run: the burst, less the message being sent. */
  private readonly tolerance: number;

  constructor(rate: number, burst: number) {
    this.interval = rate > 0 ? 1000 / rate : 0;
    this.tolerance = (Math.max(1, burst) - 1) * this.interval;
  }

  /**
   * Whether a message from a sender whose time is `time` (0 for a new sender) may pass at `now`
   * (ms, as `performance.now()` counts): the sender's next time when it may, else undefined.
   */
  pass(time: number, now = performance.now()): number | undefined {
    if (this.interval === 0) return time;
    const from = time > now ? time : now;
    return from - now > this.tolerance ? undefined : from + this.interval;
  }
}
