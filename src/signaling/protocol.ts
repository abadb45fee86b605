/**
 * Protocol v1 (shared/protocol.md): what clients may send, the error codes, and the close code
 * each error ends a connection with, in one table.
 */
import { z } from 'zod';

/** Error codes and, where the error ends the connection, the close code. */
export const ERRORS = {
  'bad-message': { close: undefined },
  'unknown-peer': { close: undefined },
  'peer-unavailable': { close: undefined },
  unavailable: { close: undefined },
  'too-large': { close: 1009 },
  'rate-limited': { close: 4429 },
  'call-full': { close: 4409 },
  'invalid-call-id': { close: 4400 },
  unauthorized: { close: 4401 },
  forbidden: { close: 4403 },
  'server-restart': { close: 1012 },
} as const;

/** A protocol error code. */
export type ErrorCode = keyof typeof ERRORS;

/** The error message a client receives. */
export function errorMessage(code: ErrorCode, message: string): { type: 'error'; code: string; message: string } {
  return { type: 'error', code: code === 'forbidden' ? 'unauthorized' : code, message };
}

const peerId = z.string().min(1).max(64);
const to = { to: peerId.optional() };

const candidateInit = z.looseObject({
  candidate: z.string().max(4096),
  sdpMid: z.string().max(256).nullable().optional(),
  sdpMLineIndex: z.number().int().min(0).max(65535).nullable().optional(),
  usernameFragment: z.string().max(256).nullable().optional(),
});

/** The schema of each message a client may send: the signals (the shapes simple-peer and the W3C API emit), `bye` and `ping`. */
const SCHEMAS = {
  offer: z.looseObject({ type: z.literal('offer'), sdp: z.string(), ...to }),
  answer: z.looseObject({ type: z.literal('answer'), sdp: z.string(), ...to }),
  pranswer: z.looseObject({ type: z.literal('pranswer'), sdp: z.string(), ...to }),
  rollback: z.looseObject({ type: z.literal('rollback'), ...to }),
  candidate: z.looseObject({ type: z.literal('candidate'), candidate: z.union([candidateInit, z.null()]), ...to }),
  renegotiate: z.looseObject({ type: z.literal('renegotiate'), renegotiate: z.boolean(), ...to }),
  transceiverRequest: z.looseObject({
    type: z.literal('transceiverRequest'),
    transceiverRequest: z.looseObject({ kind: z.string().max(64), init: z.record(z.string(), z.unknown()).optional() }),
    ...to,
  }),
  bye: z.looseObject({ type: z.literal('bye') }),
  ping: z.looseObject({ type: z.literal('ping') }),
} as const;

/** A validated client message. */
export type ClientMessage = z.infer<(typeof SCHEMAS)[keyof typeof SCHEMAS]>;

/** The types a client may send. */
export const CLIENT_TYPES: ReadonlySet<string> = new Set(Object.keys(SCHEMAS));

/** How deeply a client message may nest (signals are shallow; deeper input is refused, never walked further). */
export const MAX_DEPTH = 32;

/**
 * True when `value` nests no deeper than `max` levels. Recursive, but never deeper than `max`
 * calls (hostile input cannot overflow the stack), and without the worklist an iterative walk
 * allocates for every message.
 */
function shallow(value: unknown, max: number): boolean {
  if (typeof value !== 'object' || value === null) return true;
  if (max <= 0) return false;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (!shallow(value[i], max - 1)) return false;
    return true;
  }
  for (const key in value) {
    if (Object.hasOwn(value, key) && !shallow((value as Record<string, unknown>)[key], max - 1)) return false;
  }
  return true;
}

const isOptionalPeerId = (v: unknown): boolean => v === undefined || (typeof v === 'string' && v.length >= 1 && v.length <= 64);
const isOptionalText = (v: unknown, max: number): boolean => v === undefined || v === null || (typeof v === 'string' && v.length <= max);
const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The common signals checked by hand: true only for a message its schema accepts (anything else
 * goes to the schema, which also words the error). An offer, answer or candidate skips zod's
 * walk and copy; `test/unit/signaling-parts.test.ts` holds the two to agreeing.
 */
export function quickAccepts(message: Record<string, unknown>): boolean {
  if (!isOptionalPeerId(message.to)) return false;
  switch (message.type) {
    case 'offer': case 'answer': case 'pranswer':
      return typeof message.sdp === 'string';
    case 'candidate': {
      const c = message.candidate;
      if (c === null) return true;
      if (!isPlainObject(c) || typeof c.candidate !== 'string' || c.candidate.length > 4096) return false;
      const index = c.sdpMLineIndex;
      return isOptionalText(c.sdpMid, 256) && isOptionalText(c.usernameFragment, 256)
        && (index === undefined || index === null || (Number.isInteger(index) && (index as number) >= 0 && (index as number) <= 65535));
    }
    default:
      return false;
  }
}

/** What the message's schema says (the slow path, exported for the test that holds `quickAccepts` to it). */
export function schemaAccepts(message: Record<string, unknown>): boolean {
  const schema = SCHEMAS[message.type as keyof typeof SCHEMAS];
  return schema !== undefined && schema.safeParse(message).success;
}

/** Parses a client frame's JSON; a sentence saying what is wrong when it is not a valid message. */
export function parseClientMessage(content: unknown): { ok: true; message: ClientMessage } | { ok: false; reason: string } {
  if (typeof content !== 'object' || content === null || Array.isArray(content)) {
    return { ok: false, reason: 'A message must be a JSON object with a "type".' };
  }
  const type = (content as { type?: unknown }).type;
  if (typeof type !== 'string') return { ok: false, reason: 'A message must have a string "type".' };
  if (!CLIENT_TYPES.has(type)) return { ok: false, reason: `Unknown message type "${type.slice(0, 64)}".` };
  if (!shallow(content, MAX_DEPTH)) return { ok: false, reason: `A message may nest at most ${MAX_DEPTH} levels deep.` };
  if (quickAccepts(content as Record<string, unknown>)) return { ok: true, message: content as ClientMessage };
  const parsed = SCHEMAS[type as keyof typeof SCHEMAS].safeParse(content);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? `"${issue.path.join('.')}"` : 'the message';
    return { ok: false, reason: `Bad "${type}" message: ${where} is not valid (${issue?.message ?? 'invalid'}).` };
  }
  // The client's own object, not zod's copy: the copy loses keys such as "__proto__" (assigned, not
  // defined), and protocol.md passes a signal through untouched. The schemas transform nothing.
  return { ok: true, message: content as ClientMessage };
}
