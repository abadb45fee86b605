import { createHmac } from 'node:crypto';
import { safeEqual } from './ids.js';

/**
 * Access tokens: `base64url(JSON {c: callId, e: expiry unix seconds}).base64url(HMAC-SHA256)`.
 * Your own backend mints them with `signAccessToken` (or `POST /api/calls` with the admin token)
 * and hands them to the people allowed into a call.
 */
export function signAccessToken(secret: string, callId: string, ttlSeconds: number, now = Date.now()): string {
  const body = Buffer.from(JSON.stringify({ c: callId, e: Math.floor(now / 1000) + ttlSeconds })).toString('base64url');
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** Why a token was refused, or undefined when it admits `callId`. */
export function checkAccessToken(secret: string, token: string | undefined, callId: string, now = Date.now()): string | undefined {
  if (!token) return 'an access token is required for this call';
  const [body, mac, extra] = token.split('.');
  if (!body || !mac || extra !== undefined) return 'the access token is malformed';
  if (!safeEqual(mac, createHmac('sha256', secret).update(body).digest('base64url'))) return 'the access token signature is not valid';
  let claims: { c?: unknown; e?: unknown };
  try {
    claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as { c?: unknown; e?: unknown };
  } catch {
    return 'the access token is malformed';
  }
  if (claims.c !== callId) return 'the access token is for another call';
  if (typeof claims.e !== 'number' || claims.e * 1000 <= now) return 'the access token has expired';
  return undefined;
}
