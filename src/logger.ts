import { pino, type Logger } from 'pino';

/** Field paths that never reach a log line. */
const REDACT = ['password', 'redisUrl', 'url', 'token', 'resumeToken', 'secret', 'authorization', '*.password', '*.token', '*.authorization', 'headers.authorization', 'headers.cookie'];

/** A structured JSON logger (one line per event) that redacts secrets. */
export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, ...base }, redact: { paths: REDACT, censor: '[redacted]' } });
}

export type { Logger };
