/**
 * Grace periods of dropped seats. Every worker with a peer in the call watches a dropped seat
 * (not only the worker the peer dropped from), so the others get `peer-left` (timeout) even when
 * that worker shuts down or dies within the grace. Freeing is a compare-and-set on the seat's
 * detached data, so exactly one watcher frees it and tells the others, and a resume cancels it.
 */
import type { ChannelLayer, RosterEntry } from '../layers/index.js';
import { names, readSeat, type SeatData, type Seats } from './seats.js';

/** The logging the watch needs. */
interface Log {
  warn(obj: object, msg?: string): void;
}

/** Timers that free dropped seats when their grace passes. */
export class SeatWatch {
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly layer: ChannelLayer,
    private readonly seats: Seats,
    private readonly graceMs: number,
    private readonly log: Log,
  ) {}

  /** Frees the seat `graceMs` after it was detached, unless its data has changed by then (it was resumed). */
  watch(callId: string, peerId: string, detachedData: string): void {
    const key = `${callId} ${peerId} ${detachedData}`;
    const detachedAt = readSeat(detachedData)?.d;
    if (!detachedAt || this.timers.has(key)) return;
    const timer = setTimeout(() => {
      this.timers.delete(key);
      void this.expire(callId, peerId, detachedData);
    }, Math.max(0, detachedAt + this.graceMs - Date.now()));
    timer.unref();
    this.timers.set(key, timer);
  }

  /** Seats being watched (for tests and metrics). */
  get size(): number {
    return this.timers.size;
  }

  /**
   * A worker died without detaching its peers (SIGKILL, out of memory): in the calls this worker
   * has peers in, marks the seats that worker held as detached now, and watches them.
   */
  async workerDied(deadControlPrefix: string, callIds: Iterable<string>, now = Date.now()): Promise<number> {
    let detached = 0;
    for (const callId of callIds) detached += await this.detachWhere(callId, (seat) => seat.c.startsWith(deadControlPrefix), now);
    return detached;
  }

  /**
   * Someone found the call full, or left others behind: detaches the seats whose holder's worker is no longer connected
   * (it died without shutting down, maybe on another instance), so their grace starts now. Costs
   * one liveness check per holder worker, only on this rare path: idle calls cost nothing.
   */
  async reapDead(callId: string, known?: RosterEntry[], now = Date.now()): Promise<number> {
    const alive = new Map<string, Promise<boolean>>();
    const isAlive = (control: string): Promise<boolean> => {
      const owner = control.slice(0, control.indexOf('!') + 1);
      let answer = alive.get(owner);
      if (!answer) alive.set(owner, (answer = this.layer.channelOwnerAlive(control).catch(() => true)));
      return answer;
    };
    const dead = new Set<string>();
    for (const entry of known ?? (await this.seats.list(callId))) {
      const seat = readSeat(entry.data);
      if (seat && seat.d === 0 && !(await isAlive(seat.c))) dead.add(seat.c);
    }
    return dead.size === 0 ? 0 : this.detachWhere(callId, (seat) => dead.has(seat.c), now);
  }

  /** Detaches the attached seats of a call that `which` picks, watches them, and tells the other peers. */
  private async detachWhere(callId: string, which: (seat: SeatData) => boolean, now: number): Promise<number> {
    let detached = 0;
    const entries = await this.seats.list(callId);
    for (const entry of entries) {
      const seat = readSeat(entry.data);
      if (!seat || seat.d !== 0 || !which(seat)) continue;
      const data = await this.seats.detach(callId, entry.member, entry.data, now);
      if (data === undefined) continue;
      detached += 1;
      this.watch(callId, entry.member, data);
      for (const other of entries) {
        if (other.member !== entry.member) await this.tell(callId, other.member, { type: 'peer.detached', peerId: entry.member, data });
      }
    }
    return detached;
  }

  /** Stops every timer (shutdown). */
  clear(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private async expire(callId: string, peerId: string, detachedData: string): Promise<void> {
    try {
      const remaining = await this.seats.leave(callId, peerId, detachedData);
      if (!remaining) return; // resumed, freed by another watcher, or the call ended
      // A last note to the freed inbox: if its holder died without letting go, this send clears
      // the layer's holder marker, so the inbox's state expires like any other.
      await this.tell(callId, peerId, { type: 'seat.freed' });
      for (const e of remaining) await this.tell(callId, e.member, { type: 'peer.left', peerId, reason: 'timeout' });
    } catch (err) {
      this.log.warn({ err, callId }, 'could not free a seat whose grace passed');
    }
  }

  private async tell(callId: string, peerId: string, message: { type: string; [k: string]: string }): Promise<void> {
    await this.layer.send(names.inbox(callId, peerId), message).catch((err: unknown) => this.log.warn({ err, callId, peerId }, 'could not notify a peer'));
  }
}
