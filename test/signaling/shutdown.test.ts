/**
 * protocol.md, the `server-restart` row of "Errors": a server that shuts down with live calls
 * tells every peer to resume elsewhere and closes with 1012.
 */
import { describe, expect, it } from 'vitest';
import { connect } from '../helpers/ws-client.js';
import { callUrl, expectError, join, newCallId, pair, serve } from './harness.js';

describe('a server shutting down with live calls', () => {
  it('sends every peer of every call server-restart, then closes each socket with 1012', async () => {
    const s = await serve();
    const first = await pair(s);
    const second = await pair(s);
    const solo = await join(s, newCallId());
    const peers = [first.a, first.b, second.a, second.b, solo];
    const closing = s.close();
    for (const p of peers) {
      await expectError(p.c, 'server-restart', 5000);
      expect((await p.c.closed).code).toBe(1012);
    }
    await closing;
    for (const p of peers) expect(p.c.queue.filter((m) => m.type !== 'error')).toEqual([]);
  });

  it('accepts no new connections once closed', async () => {
    const s = await serve();
    const { a } = await pair(s);
    await s.close();
    await a.c.closed;
    await expect(connect(callUrl(s, newCallId()))).rejects.toThrow();
  });
});
