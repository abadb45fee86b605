import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** A call id: 1 to 64 of `A-Z a-z 0-9 _ -`. */
export const CALL_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** True when `id` is a valid call id. */
export function isCallId(id: unknown): id is string {
  return typeof id === 'string' && CALL_ID.test(id);
}

/** A fresh unguessable id of `bytes` random bytes (default 16 = 128 bits), URL-safe. */
export function randomId(bytes = 16): string {
  return randomBytes(bytes).toString('base64url');
}

/** A short, stable digest of a secret, for storing instead of the secret. */
export function digest(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url').slice(0, 32);
}

/** Constant-time string comparison. */
export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** A resume token is `<peerId>.<secret>`: the peer it resumes, and a single-use secret. */
export function makeResumeToken(peerId: string): { token: string; hash: string } {
  const secret = randomId(24);
  return { token: `${peerId}.${secret}`, hash: digest(secret) };
}

/** Splits a resume token; undefined when it is not of the right form. */
export function parseResumeToken(token: string): { peerId: string; secretHash: string } | undefined {
  const m = /^([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{16,128})$/.exec(token);
  return m ? { peerId: m[1]!, secretHash: digest(m[2]!) } : undefined;
}
