import { createHmac } from 'node:crypto';

/** One entry of RTCConfiguration.iceServers. */
export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

/** What ICE servers to hand out. */
export interface IceConfig {
  stunUrls: string[];
  turnUrls: string[];
  turnSecret: string | undefined;
  turnTtl: number;
}

/**
 * TURN REST API credentials, as coturn's `use-auth-secret` checks them: username
 * `<expiry unix seconds>:<id>`, credential `base64(HMAC-SHA1(secret, username))`.
 */
export function turnCredentials(secret: string, id: string, ttlSeconds: number, now = Date.now()): { username: string; credential: string } {
  const username = `${Math.floor(now / 1000) + ttlSeconds}:${id}`;
  return { username, credential: createHmac('sha1', secret).update(username).digest('base64') };
}

/** The iceServers list for a peer (`id` names it in TURN usernames) and the credentials' lifetime. */
export function iceServersFor(config: IceConfig, id: string, now = Date.now()): { iceServers: IceServer[]; ttl: number } {
  const iceServers: IceServer[] = [];
  if (config.stunUrls.length > 0) iceServers.push({ urls: config.stunUrls });
  if (config.turnUrls.length > 0 && config.turnSecret) {
    iceServers.push({ urls: config.turnUrls, ...turnCredentials(config.turnSecret, id, config.turnTtl, now) });
  }
  return { iceServers, ttl: config.turnTtl };
}
