/**
 * Looking inside a running server process through the V8 inspector (`node --inspect=127.0.0.1:0`):
 * a full garbage collection, heap and RSS figures, and the process's active handles (timers,
 * sockets) — without changing a line of the server.
 */
import WebSocket from 'ws';
import type { ServerProcess } from './processes.js';
import { waitFor } from './processes.js';

/** What the process holds at one moment, after a full GC. */
export interface Snapshot {
  heapUsed: number;
  /** The part of heapUsed that is compiled code (V8's code space): what the JIT adds as it goes (NaN before Node 20.16). */
  codeUsed: number;
  rss: number;
  external: number;
  arrayBuffers: number;
  /** process.getActiveResourcesInfo(), counted by type (Timeout, TCPSocketWrap, ...), Immediates aside. */
  resources: Record<string, number>;
}

/** A Chrome DevTools Protocol session with a server process. */
export class Inspector {
  private id = 0;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      if (msg.id === undefined) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(msg.error.message));
      else p.resolve(msg.result);
    });
  }

  /** Attaches to a process started with `--inspect=127.0.0.1:0` (reads the address it printed). */
  static async attach(proc: ServerProcess): Promise<Inspector> {
    const url = await waitFor(
      () => proc.output().map((l) => /Debugger listening on (ws:\/\/\S+)/.exec(l)?.[1]).find(Boolean),
      'the "Debugger listening" line',
      5000,
    );
    const ws = new WebSocket(url, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new Inspector(ws);
  }

  /** Sends one CDP command. */
  call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = ++this.id;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`inspector ${method}: no answer within 20 s`));
      }, 20_000);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluates an expression in the server's main context and returns its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const r = (await this.call('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true })) as {
      result: { value?: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (r.exceptionDetails) throw new Error(`evaluate(${expression}): ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value as T;
  }

  /** Two full GCs (the second collects what finalizers of the first freed), then the figures. */
  async snapshot(): Promise<Snapshot> {
    await this.call('HeapProfiler.collectGarbage');
    await new Promise((r) => setTimeout(r, 100));
    await this.call('HeapProfiler.collectGarbage');
    return this.evaluate<Snapshot>(`(() => {
      const m = process.memoryUsage();
      const resources = {};
      // An Immediate lasts one turn of the loop (a stream or the logger finishing a write as the
      // snapshot is taken); it cannot pile up, so it is not counted.
      for (const t of process.getActiveResourcesInfo()) if (t !== 'Immediate') resources[t] = (resources[t] || 0) + 1;
      // process.getBuiltinModule is Node 20.16+ (engines allows 20.11): the figure is only logged.
      const v8 = process.getBuiltinModule ? process.getBuiltinModule('v8') : undefined;
      const code = v8 ? v8.getHeapSpaceStatistics().find((s) => s.space_name === 'code_space') : undefined;
      return { heapUsed: m.heapUsed, codeUsed: code ? code.space_used_size : NaN, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers, resources };
    })()`);
  }

  close(): void {
    this.ws.close();
  }
}
