/**
 * The Redis layer through Redis Cluster failovers (three masters with a replica each): a master
 * handed over by CLUSTER FAILOVER, a master SIGKILLed, a master stopped with SIGTERM. One
 * instance receives on a channel (normal or process-specific) whose keys live on the master
 * that goes; another sends to it before, during and after. Every message must arrive once, in order, within
 * the resume grace, without the holder sending a command to those slots itself, and once the
 * cluster has settled the layer must be idle again (no Redis commands).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisChannelLayer, type Message } from '../../src/layers/index.js';
import { hasRedisCluster, startRedisCluster, type ClusterNode, type RedisCluster } from '../helpers/redis-cluster.js';
import { commandStats, hasRedisServer } from '../helpers/redis-server.js';
import { sleep, uid } from './conformance.js';

/** How long a failover may delay a message (the call server's default resume grace). */
const GRACE_MS = 30_000;

/** Receives on a channel in a loop, as a consumer does, keeping what arrives. */
function collect(layer: RedisChannelLayer, channel: string): { got: number[]; stop(): void } {
  const got: number[] = [];
  const ac = new AbortController();
  void (async () => {
    while (!ac.signal.aborted) {
      try {
        const m: Message = await layer.receive(channel, { signal: ac.signal });
        got.push(m.n as number);
      } catch {
        return;
      }
    }
  })();
  return { got, stop: () => ac.abort() };
}

async function until(what: string, check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

type Kind = 'normal' | 'specific';

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

describe.skipIf(!hasRedisServer() || !hasRedisCluster)('Redis Cluster failover', () => {
  let cluster: RedisCluster;
  const prefix = `fo${uid()}`;
  let holder: RedisChannelLayer;
  let sender: RedisChannelLayer;

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicas: 1, nodeTimeoutMs: 2000 });
    const make = () => new RedisChannelLayer({ clusterHosts: cluster.urls.slice(0, 3), prefix, expiry: 60 });
    holder = make();
    sender = make();
  }, 60_000);

  afterAll(async () => {
    await holder?.close();
    await sender?.close();
    await cluster?.stop();
  });

  /** A master that has a live replica, and a channel of `kind` (held by `holder`) whose keys it serves. */
  async function channelOnAMasterWithAReplica(kind: Kind): Promise<{ master: ClusterNode; replica: ClusterNode; channel: string; stateKey: string }> {
    for (const v of await cluster.view()) {
      if (!v.flags.includes('master') || v.slots.length === 0 || v.flags.some((f) => f.startsWith('fail'))) continue;
      const master = cluster.nodes.find((n) => n.id === v.id && n.alive);
      const replica = master && (await cluster.replicaOf(master));
      if (!master || !replica) continue;
      for (let i = 0; i < 200; i++) {
        // A process-specific channel's keys are tagged with its name up to the "!".
        const channel = kind === 'normal' ? `ch${i}.${uid()}` : await holder.newChannel(`sp${i}${uid()}`);
        const stateKey = `${prefix}:s:{${kind === 'normal' ? channel : channel.slice(0, channel.indexOf('!') + 1)}}`;
        if ((await cluster.masterOf(await cluster.keySlot(stateKey))).port === master.port) return { master, replica, channel, stateKey };
      }
    }
    throw new Error('no master with a live replica left');
  }

  /**
   * `holder` receives on a channel whose keys live on a master; `sender` sends 0..4, the master
   * is taken away by `takeAway` while 5..9 are sent one by one, and 10..14 are sent once the
   * cluster is healthy: the channel must get 0..14 once, in order, within the grace. Nothing
   * else uses that master meanwhile, so nothing but the layer's own handling of the failover
   * can make the holder notice it.
   */
  async function throughFailover(kind: Kind, takeAway: (master: ClusterNode, replica: ClusterNode) => Promise<void>): Promise<void> {
    const { master, replica, channel, stateKey } = await channelOnAMasterWithAReplica(kind);
    const inbox = collect(holder, channel);
    try {
      for (const n of range(0, 5)) await sender.send(channel, { type: 'm', n });
      await until('0..4', () => inbox.got.length === 5, 5000);

      const started = Date.now();
      const sending = (async () => {
        for (const n of range(5, 10)) await sender.send(channel, { type: 'm', n });
      })();
      await takeAway(master, replica);
      await cluster.waitUntilHealthy(GRACE_MS);
      expect((await cluster.masterOf(await cluster.keySlot(stateKey))).port, 'the replica serves the channel now').toBe(replica.port);
      await sending;
      for (const n of range(10, 15)) await sender.send(channel, { type: 'm', n });

      const left = () => Math.max(0, GRACE_MS - (Date.now() - started));
      await until('0..14', () => inbox.got.length >= 15, left()).catch((err: Error) => {
        throw new Error(`${err.message} on ${kind} channel ${channel}: got ${JSON.stringify(inbox.got)}`);
      });
      await sleep(500);
      expect(inbox.got, `${kind} channel ${channel}`).toEqual(range(0, 15));
      await until('both instances to report healthy', () => holder.isHealthy() && sender.isHealthy(), 10_000);
    } finally {
      inbox.stop();
    }
  }

  it('a manual failover (CLUSTER FAILOVER) of the master holding a normal channel: nothing is stranded in Redis', async () => {
    await throughFailover('normal', (_master, replica) => cluster.failover(replica));
  }, 60_000);

  it('a manual failover of the master holding a process-specific channel: the same', async () => {
    await throughFailover('specific', (_master, replica) => cluster.failover(replica));
  }, 60_000);

  it('a master SIGKILLed while a normal channel on it receives: sends during detection and election arrive once, in order', async () => {
    await throughFailover('normal', (master) => cluster.kill(master, 'SIGKILL'));
  }, 60_000);

  it('a master stopped (SIGTERM) while a process-specific channel on it receives: the same', async () => {
    await throughFailover('specific', (master) => cluster.kill(master, 'SIGTERM'));
  }, 60_000);

  it('once the cluster has settled, the layer is idle again: no Redis commands while nothing happens', async () => {
    await until('both instances to report healthy', () => holder.isHealthy() && sender.isHealthy(), 10_000);
    // Let the channels' holds and lingers run out, then count for a few seconds.
    await sleep(7000);
    const live = cluster.nodes.filter((n) => n.alive);
    // Not ours: INFO is this probe; REPLCONF and PING are replication's own traffic.
    const ours = (stats: Record<string, number>) => Object.entries(stats).filter(([cmd]) => !['info', 'replconf', 'ping'].includes(cmd));
    const before = await Promise.all(live.map((n) => commandStats(n.url)));
    await sleep(3000);
    const after = await Promise.all(live.map((n) => commandStats(n.url)));
    const changed = live.flatMap((n, i) => ours(after[i]!).filter(([cmd, calls]) => calls !== (before[i]![cmd] ?? 0)).map(([cmd, calls]) => `${n.port} ${cmd} +${calls - (before[i]![cmd] ?? 0)}`));
    expect(changed, 'commands run while idle').toEqual([]);
  }, 30_000);
});
