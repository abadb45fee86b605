/** The logger consumers write to: the subset of pino they use, so a pino logger fits as is. */
export interface Logger {
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
  /** A logger that adds `bindings` to every line (pino's `child`); optional. */
  child?(bindings: Record<string, unknown>): Logger;
}

function toConsole(write: (...args: unknown[]) => void): (obj: object | string, msg?: string) => void {
  return (obj, msg) => (typeof obj === 'string' ? write(obj) : msg === undefined ? write(obj) : write(msg, obj));
}

/** The logger used when none is given: warnings and errors go to the console (never silently dropped); debug and info do not. */
export const consoleLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: toConsole(console.warn),
  error: toConsole(console.error),
};

/** One line a `RecordingLogger` kept. */
export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: object | string;
  msg: string | undefined;
  bindings: Record<string, unknown>;
}

/** A logger that keeps every line in memory, for tests and the communicator. */
export class RecordingLogger implements Logger {
  constructor(readonly entries: LogEntry[] = [], private readonly bindings: Record<string, unknown> = {}) {}

  debug(obj: object | string, msg?: string): void { this.entries.push({ level: 'debug', obj, msg, bindings: this.bindings }); }
  info(obj: object | string, msg?: string): void { this.entries.push({ level: 'info', obj, msg, bindings: this.bindings }); }
  warn(obj: object | string, msg?: string): void { this.entries.push({ level: 'warn', obj, msg, bindings: this.bindings }); }
  error(obj: object | string, msg?: string): void { this.entries.push({ level: 'error', obj, msg, bindings: this.bindings }); }

  child(bindings: Record<string, unknown>): RecordingLogger {
    return new RecordingLogger(this.entries, { ...this.bindings, ...bindings });
  }

  /** The entries at `level` (all levels when omitted). */
  at(level?: LogEntry['level']): LogEntry[] {
    return level ? this.entries.filter((e) => e.level === level) : [...this.entries];
  }
}
