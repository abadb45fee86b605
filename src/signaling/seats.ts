/**
 * Seats in calls, kept in the channel layer's rosters so every worker sees the same call. A
 * seat's data records its resume-token digest, when it was detached (0 while a socket holds it),
 * a generation that every resume bumps, and the control channel of the connection holding it.
 */
import { ChannelFull, type ChannelLayer, type Message, type RosterEntry } from '../layers/index.js';
import { makeResumeToken, parseResumeToken, randomId, safeEqual } from './ids.js';

/** What a seat records. */
export interface SeatData {
  /** Digest of the current resume token's secret. */
  t: string;
  /** When the seat was detached (ms), 0 while a connection holds it. */
  d: number;
  /** Generation: bumped by every resume. */
  g: number;
  /** Control channel of the connection that holds (or last held) the seat. */
  c: string;
  /** 1 when this peer is the polite one (W3C perfect negotiation), set once when it joins. */
  p: 0 | 1;
}

/** A seat as this connection holds it. */
export interface Seat {
  callId: string;
  peerId: string;
  /** The token the welcome gives the client (the consumer lets the Seat go once it has composed the welcome). */
  resumeToken: string;
  /** The seat's data as last written by this connection (for compare-and-set). */
  data: string;
  /** The call's seats after joining, oldest first. */
  entries: RosterEntry[];
  /** Whether this peer is the polite one. */
  polite: boolean;
}

/** The roster of a call; the inbox channel of a peer. */
export const names = {
  roster: (callId: string) => `call.${callId}`,
  inbox: (callId: string, peerId: string) => `call.${callId}.${peerId}`,
};

/** Decodes seat data; undefined when it is not ours. */
export function readSeat(data: string): SeatData | undefined {
  try {
    const s = JSON.parse(data) as SeatData;
    return typeof s.t === 'string' && typeof s.d === 'number' && typeof s.g === 'number' && typeof s.c === 'string' && (s.p === 0 || s.p === 1) ? s : undefined;
  } catch {
    return undefined;
  }
}

const write = (s: SeatData): string => JSON.stringify({ t: s.t, d: s.d, g: s.g, c: s.c, p: s.p });

/** Seat operations over a channel layer's rosters. */
export class Seats {
  constructor(private readonly layer: ChannelLayer, private readonly opts: { maxPeers: number; ttl: number }) {}

  /**
   * Takes a new seat, unless the call is full. A newcomer is impolite unless an older peer is
   * impolite already: then it becomes the polite one (one more write), so of any two peers in a
   * 1-to-1 call exactly one is polite, however peers come and go. Older seats never change.
   */
  async join(callId: string, control: string): Promise<Seat | undefined> {
    const peerId = randomId(16);
    const { token, hash } = makeResumeToken(peerId);
    const roster = names.roster(callId);
    let data = write({ t: hash, d: 0, g: 0, c: control, p: 0 });
    const result = await this.layer.rosterJoin(roster, peerId, data, { limit: this.opts.maxPeers, ttl: this.opts.ttl });
    if (!result.joined) return undefined;
    const mine = result.entries.findIndex((e) => e.member === peerId);
    let entries = result.entries;
    if (result.entries.slice(0, mine).some((e) => readSeat(e.data)?.p === 0)) {
      const polite = write({ t: hash, d: 0, g: 0, c: control, p: 1 });
      if (await this.layer.rosterUpdate(roster, peerId, polite, { ifData: data })) {
        data = polite;
        entries = entries.map((e) => (e.member === peerId ? { ...e, data } : e));
      }
    }
    return { callId, peerId, resumeToken: token, data, entries, polite: readSeat(data)!.p === 1 };
  }

  /**
   * Takes a seat back with its resume token (single use: a new token replaces it). Also answers
   * the previous holder's data, so a holder that is still attached can be told to let go.
   */
  async resume(callId: string, token: string, control: string): Promise<{ seat: Seat; previous: SeatData } | undefined> {
    const parsed = parseResumeToken(token);
    if (!parsed) return undefined;
    const roster = names.roster(callId);
    const entries = await this.layer.rosterList(roster);
    const entry = entries.find((e) => e.member === parsed.peerId);
    const previous = entry && readSeat(entry.data);
    if (!entry || !previous || !safeEqual(previous.t, parsed.secretHash)) return undefined;
    const next = makeResumeToken(parsed.peerId);
    const data = write({ t: next.hash, d: 0, g: previous.g + 1, c: control, p: previous.p });
    if (!(await this.layer.rosterUpdate(roster, parsed.peerId, data, { ifData: entry.data, ttl: this.opts.ttl }))) return undefined;
    const updated = entries.map((e) => (e.member === parsed.peerId ? { ...e, data } : e));
    return { seat: { callId, peerId: parsed.peerId, resumeToken: next.token, data, entries: updated, polite: previous.p === 1 }, previous };
  }

  /**
   * Marks a held seat detached (its socket dropped), if its data is still `data`; the new data,
   * or undefined if the seat moved on.
   */
  async detach(callId: string, peerId: string, data: string, now = Date.now()): Promise<string | undefined> {
    const s = readSeat(data);
    if (!s) return undefined;
    const detached = write({ ...s, d: now });
    return (await this.layer.rosterUpdate(names.roster(callId), peerId, detached, { ifData: data })) ? detached : undefined;
  }

  /** Frees a seat if its data is still `data`; the remaining seats, or null when it had moved on. */
  leave(callId: string, peerId: string, data: string): Promise<RosterEntry[] | null> {
    return this.layer.rosterLeave(names.roster(callId), peerId, { ifData: data });
  }

  /** The call's seats, oldest first. */
  list(callId: string): Promise<RosterEntry[]> {
    return this.layer.rosterList(names.roster(callId));
  }

  /**
   * Ends a call: frees every seat, and sends `notice` to the control channel of each connection
   * that held one (a seat records it), so every worker's peers hear of it. A detached seat has no
   * connection to tell. As a group send does, a full channel is skipped, and every send is tried
   * before another failure is thrown. Answers the seats the call had.
   */
  async end(callId: string, notice?: Message): Promise<RosterEntry[]> {
    const entries = await this.layer.rosterDelete(names.roster(callId));
    if (notice) {
      const sends = await Promise.allSettled(
        entries.map((e) => {
          const seat = readSeat(e.data);
          return seat && seat.d === 0 ? this.layer.send(seat.c, notice) : undefined;
        }),
      );
      for (const sent of sends) if (sent.status === 'rejected' && !(sent.reason instanceof ChannelFull)) throw sent.reason;
    }
    return entries;
  }
}
