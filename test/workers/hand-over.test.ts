/**
 * The primary's hand-over of a connection to a worker (src/sticky.ts), with a real forked
 * process as the worker: the socket arrives as a plain one, so the worker keeps no per-socket
 * bookkeeping for the primary (Node's tracking adds a 'close' listener, about 270 bytes per idle
 * connection), and the primary keeps nothing of it once handed over.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { Worker } from 'node:cluster';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { CallRouter } from '../../src/sticky.js';
import { ensureBuilt } from '../helpers/build.js';

const WORKER = fileURLToPath(new URL('./support/hand-over-worker.mjs', import.meta.url));

interface Report { closeListeners: number; head: string }

describe('handing a connection to a worker', () => {
  let child: ChildProcess;
  let router: CallRouter;
  let port: number;
  const reports: Report[] = [];

  beforeAll(async () => {
    ensureBuilt('hand-over tests');
    child = fork(WORKER, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve) => child.once('message', () => resolve()));
    child.on('message', (m: Report) => reports.push(m));
    // What CallRouter uses of a cluster worker.
    const worker = { id: 1, send: child.send.bind(child), isConnected: () => child.connected } as unknown as Worker;
    router = new CallRouter(1, 'call', createLogger('silent'));
    router.forked(worker);
    router.serving(worker);
    port = await router.listen(0, '127.0.0.1');
  });

  afterAll(() => {
    router?.close();
    child?.kill();
  });

  it('hands the socket over untracked, working, and lets go of it', async () => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setEncoding('latin1');
    let got = '';
    socket.on('data', (d: string) => (got += d));
    const line = 'GET /ws/call/hand-over HTTP/1.1\r\n';
    socket.write(line);
    await expect.poll(() => got, { timeout: 5000 }).toBe(`echo:${line}`);
    expect(reports).toEqual([{ closeListeners: 0, head: line }]);
    // The worker's socket carries on after the hand-over.
    socket.write('more');
    await expect.poll(() => got, { timeout: 5000 }).toBe(`echo:${line}echo:more`);
    // The primary counts no connection of its own for it (Node's tracking would count it here too).
    const held = await new Promise<number>((resolve, reject) => router.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
    expect(held).toBe(0);
    socket.destroy();
  });
});
