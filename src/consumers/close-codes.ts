/**
 * WebSocket close codes, checked at the edge: a server may send only these (RFC 6455 §7.4), and
 * never 1005, 1006 or 1015, which mark the absence of a close frame.
 */

/** The close codes this package sends itself, by name. */
export const CloseCode = {
  /** Normal closure. */
  NORMAL: 1000,
  /** The server is going away (not used for restarts: see SERVICE_RESTART). */
  GOING_AWAY: 1001,
  /** No close frame arrived (reported, never sent). */
  ABNORMAL: 1006,
  /** A policy refused the connection (the default for `DenyConnection`). */
  POLICY_VIOLATION: 1008,
  /** A frame was over `maxPayload`. */
  MESSAGE_TOO_BIG: 1009,
  /** A handler failed. */
  INTERNAL_ERROR: 1011,
  /** The server is restarting (`shutdown`'s default). */
  SERVICE_RESTART: 1012,
  /** The peer did not read what it was sent (over `maxBufferedBytes`). */
  TRY_AGAIN_LATER: 1013,
} as const;

/** The largest close reason, in UTF-8 bytes (a control frame carries at most 125 bytes, 2 of them the code). */
export const MAX_CLOSE_REASON_BYTES = 123;

/** True when a server may send `code`: 1000, 1001, 1008, 1009, 1011-1014, or 3000-4999. */
export function isValidCloseCode(code: unknown): code is number {
  if (typeof code !== 'number' || !Number.isInteger(code)) return false;
  return code === 1000 || code === 1001 || code === 1008 || code === 1009 || (code >= 1011 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/** Throws a RangeError unless `code` and `reason` may be sent in a close frame. */
export function requireValidClose(code: unknown, reason: string): asserts code is number {
  if (!isValidCloseCode(code)) {
    throw new RangeError(`Close code ${String(code)} may not be sent; use 1000, 1001, 1008, 1009, 1011-1014 or 3000-4999`);
  }
  if (typeof reason !== 'string') throw new TypeError(`A close reason must be a string, got ${typeof reason}`);
  const bytes = Buffer.byteLength(reason);
  if (bytes > MAX_CLOSE_REASON_BYTES) {
    throw new RangeError(`A close reason is at most ${MAX_CLOSE_REASON_BYTES} bytes of UTF-8; this one is ${bytes}`);
  }
}

/** Cuts `reason` to at most MAX_CLOSE_REASON_BYTES bytes without splitting a character. */
export function truncateCloseReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason;
  let out = '';
  for (const ch of reason) {
    if (Buffer.byteLength(out + ch) > MAX_CLOSE_REASON_BYTES) break;
    out += ch;
  }
  return out;
}
